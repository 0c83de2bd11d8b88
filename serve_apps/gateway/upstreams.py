"""Sending one attempt to one upstream: a provider cluster's endpoint, or a closed model's vendor.

Both kinds answer an `Attempt` (a record, never an exception, for anything the upstream or the
network did): the image with its metadata, or the outcome (`serve_apps.api.outcomes`), status,
code and message of the failure. Every exception is classified: what the request itself cannot
be sent as (text an HTTP client cannot encode, an argument a vendor client refuses) is the
client's error and never counts against the upstream; connection errors, timeouts and broken
answers are the upstream's fault. Messages that reach clients say what happened in our words:
never exception text (it can name internal addresses) nor a vendor's error body (vendors echo
parts of keys and internal detail); the full text goes to the log at debug level only.

Provider models are called at their own routes (`serve_apps.api.paths`) over one
pooled keep-alive `aiohttp` session per gateway process;
vendors through the real OpenAI-images and queue clients (`serve_apps.vendors`), each with its
own pooled connections and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field

import aiohttp

from config import ModelConfig
from serve_apps.api.errors import safe_text
from serve_apps.api.outcomes import OUTCOME_HEADER, Outcome, outcome_of_status
from serve_apps.api.paths import model_generate_url
from serve_apps.api.responses import ImageMeta
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.vendors.clients import VendorError, make_client

__all__ = ["Attempt", "ProviderUpstream", "VendorUpstream", "approximate_tokens"]

_log = logging.getLogger(__name__)
_WORDS = re.compile(r"\w+|[^\w\s]")


def approximate_tokens(prompt: str) -> int:
    """Tokens of a prompt for a closed model, whose tokenizer is the vendor's secret.

    Words and punctuation marks, counted separately: a lower bound on any BPE tokenizer's
    count, so easel never refuses a prompt the vendor would take (the vendor's own 400 passes
    through for one it refuses).
    """
    return len(_WORDS.findall(prompt))


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended: an image (`outcome == "ok"`) or why not."""

    outcome: Outcome
    status: int = 200
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    png: bytes = field(default=b"", repr=False)
    meta: ImageMeta | None = None


def _error_body(data: bytes, status: int) -> tuple[str, str]:
    """(code, message) of a provider app's error answer (its own words, in the API's shape);
    anything else (a proxy's page, a load balancer's) is not echoed."""
    try:
        err = json.loads(data).get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or "error")
            return safe_text(code, 64), safe_text(str(err.get("message") or ""), 500)
    except (ValueError, AttributeError):
        pass
    return "upstream_error", f"the provider answered HTTP {status} without an error body"


def _unsendable(exc: BaseException) -> Attempt:
    """The request could not be encoded for the wire: the client's to fix, nobody's outage."""
    return Attempt(
        "client_error",
        422,
        "invalid_request",
        "the request holds text that cannot be sent on (not encodable as UTF-8 or in an HTTP "
        f"header: {type(exc).__name__}); send ASCII ids and valid Unicode text",
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class ProviderUpstream:
    """One model of a provider cluster: its own route, `<endpoint>/models/<model>/v1/generate`
    (the model deployment behind Serve's proxy, no provider ingress between them), over the
    gateway process's pooled session."""

    def __init__(self, endpoint: str, model: str, session: aiohttp.ClientSession) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._url = model_generate_url(self.endpoint, model)
        self._session = session

    async def send(self, resolved: ResolvedRequest, timeout_s: float) -> Attempt:
        """One POST; the image or the failure's outcome. Never raises but CancelledError."""
        headers = {"Accept": "image/png", "X-Request-Id": resolved.request_id}
        try:
            async with self._session.post(
                self._url,
                json=resolved.wire_body(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                data = await resp.read()
                if resp.status == 200:
                    return Attempt(
                        "ok", png=data, meta=ImageMeta.from_headers(resp.headers, resolved, 1)
                    )
                code, message = _error_body(data, resp.status)
                return Attempt(
                    outcome_of_status(resp.status, resp.headers.get(OUTCOME_HEADER)),
                    resp.status,
                    code,
                    message,
                    _retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            _log.debug("%s: cannot connect: %r", self.endpoint, exc)
            return Attempt("connect", 503, "upstream_unreachable", "cannot connect to the provider")
        except TimeoutError:
            return Attempt("timeout", 504, "upstream_timeout", f"no answer within {timeout_s:.3g}s")
        except aiohttp.ClientError as exc:  # the connection broke mid-request
            _log.debug("%s: broken answer: %r", self.endpoint, exc)
            return Attempt(
                "error",
                502,
                "upstream_broken",
                f"the provider's answer broke off ({type(exc).__name__})",
            )
        except UnicodeError as exc:
            return _unsendable(exc)


class VendorUpstream:
    """A closed model's vendor API, called with the real client of its protocol."""

    def __init__(self, model: ModelConfig, base_url: str | None = None) -> None:
        self.model = model
        self.client = make_client(model, base_url)

    async def send(self, resolved: ResolvedRequest, timeout_s: float) -> Attempt:
        """One vendor call (with the client's own retries); never raises but CancelledError."""
        n_tokens = approximate_tokens(resolved.prompt)
        if n_tokens > self.model.max_prompt_tokens:
            return Attempt(
                "client_error",
                422,
                "prompt_too_long",
                f"prompt: about {n_tokens} tokens for model {self.model.name!r}, above its "
                f"limit of {self.model.max_prompt_tokens} (prompts are never truncated)",
            )
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                img = await self.client.generate(
                    prompt=resolved.prompt,
                    width=resolved.width,
                    height=resolved.height,
                    seed=resolved.seed,
                    request_id=resolved.request_id,
                    negative_prompt=resolved.negative_prompt,
                    reference_images=resolved.references,
                )
        except VendorError as exc:
            return _vendor_attempt(exc)
        except (UnicodeError, ValueError) as exc:  # the client refused the arguments themselves
            return _unsendable(exc)
        except TimeoutError:
            return Attempt(
                "timeout", 504, "upstream_timeout", f"vendor: no answer within {timeout_s:.3g}s"
            )
        wall_ms = (time.perf_counter() - t0) * 1000
        vendor_ms = float(img.vendor_ms or wall_ms)
        meta = ImageMeta(
            request_id=resolved.request_id,
            model=resolved.model,
            provider="",  # filled in by the caller, who knows which upstream this is
            replica=f"vendor:{img.vendor_request_id or '-'}",
            queue_ms=max(0.0, wall_ms - vendor_ms) + float(img.vendor_queue_ms or 0.0),
            inference_ms=vendor_ms - float(img.vendor_queue_ms or 0.0),
            batch_size=1,
            cold_start=False,
            seed=resolved.seed,
            width=resolved.width,
            height=resolved.height,
            steps=resolved.steps,
        )
        return Attempt("ok", png=img.png, meta=meta)

    async def aclose(self) -> None:
        await self.client.aclose()


def _vendor_attempt(exc: VendorError) -> Attempt:
    """A `VendorError` as an attempt: the vendor's fault fails over, the request's does not.

    Keeps the client's status and code (`upstream_timeout` 504, `upstream_unavailable` 503,
    `upstream_rejected` 400/502); a vendor that kept answering 429 is overload (`shed`).
    """
    status = int(exc.status)
    code = exc.code or "upstream_error"
    # The vendor's own words (its error body) stay in the log; the client gets ours.
    _log.debug("vendor error: %s", exc.message)
    said = f"HTTP {exc.vendor_status}" if exc.vendor_status else "no answer"
    message = f"vendor: {code} ({said}, after {exc.attempts} attempt(s))"
    retry = exc.retry_after
    if exc.vendor_status == 429:
        return Attempt("shed", 503, code, message, retry or 1.0)
    if status == 504:
        return Attempt("timeout", 504, code, message)
    if status >= 500:  # unavailable, or it refused *us* (a bad key): another provider may work
        return Attempt("error", status, code, message, retry)
    # It refused this request's content: the caller's to fix, no other provider will differ.
    message = (
        f"vendor: refused this request (HTTP {exc.vendor_status}); check the prompt and "
        "inputs against the model's limits in GET /v1/models"
    )
    return Attempt("client_error", status, code, message)
