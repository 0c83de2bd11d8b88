"""The one JSON error shape of the HTTP API, and the handlers that make every error use it.

Every non-2xx answer is `{"error": {"code": str, "message": str}}`; 429 and 503 carry
`Retry-After`. Bad input is always 4xx: FastAPI's own 422 body and Starlette's 404/405 bodies are
rewritten into this shape, and only our own faults become 500. A provider app's errors also say
whose fault they were (`X-Easel-Outcome`, see `outcomes.py`), for the gateway.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_apps.api.outcomes import OUTCOME_HEADER, Outcome

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "error_docs",
    "error_outcome",
    "error_response",
    "install_error_handlers",
    "safe_text",
    "validation_message",
]

_log = logging.getLogger(__name__)

# Default machine-readable codes per status, for errors raised without an explicit code.
_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "upstream_timeout",
}


# What each status means, for the OpenAPI document (every route lists the ones it can answer).
_DESCRIPTIONS = {
    400: "Bad request: not JSON, not base64, a corrupt image",
    401: "Missing or unknown API key (or admin key)",
    403: "The key may not use this model, or admin routes are disabled",
    404: "Unknown model or route",
    405: "Method not allowed on this route",
    408: "The body took too long to arrive",
    413: "Body or image over its limit",
    415: "Content type (or image format) not accepted",
    422: "A field out of its range or not allowed for the model",
    429: "Tenant over its rate limit (Retry-After)",
    500: "The server's own fault",
    503: "Overloaded, or no healthy provider (Retry-After)",
    504: "No upstream answered within the request's deadline",
}
_MAX_MESSAGE = 2_000


class ErrorDetail(BaseModel):
    """What went wrong: a machine-readable code and a message that says what to fix."""

    code: str = Field(description="Machine-readable, e.g. 'invalid_request', 'overloaded'.")
    message: str = Field(description="What was wrong and what is allowed.")


class ErrorBody(BaseModel):
    """Every error answer of the API: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for `statuses`, each with the error body's schema."""
    return {
        status: {
            "model": ErrorBody,
            "description": _DESCRIPTIONS[status],
            **(
                {"headers": {"Retry-After": {"schema": {"type": "integer"}}}}
                if status in (429, 503)
                else {}
            ),
        }
        for status in statuses
    }


def safe_text(text: str, limit: int = _MAX_MESSAGE) -> str:
    """`text` that any JSON encoder and log can carry: lone surrogates escaped, length bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ApiError(Exception):
    """An HTTP error with the API's JSON shape.

    Args:
        status: HTTP status code.
        message: What was wrong and, for bad input, what is allowed.
        code: Machine-readable code; defaults to one per status.
        retry_after: Seconds, sent as `Retry-After` (rounded up, at least 1).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.retry_after = retry_after

    def to_response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return error_response(
            self.status, self.code, self.message, retry_after=self.retry_after, headers=headers
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields survive pickling across Ray processes.
        return (_rebuild_api_error, (self.status, self.message, self.code, self.retry_after))


def _rebuild_api_error(status: int, message: str, code: str, retry_after: float | None) -> ApiError:
    return ApiError(status, message, code=code, retry_after=retry_after)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSONResponse with the API's error shape (and `Retry-After` when given)."""
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": safe_text(message)}},
        headers=out,
    )


def validation_message(errors: list[dict[str, Any]], limit: int = 5) -> str:
    """One readable line from pydantic errors: 'field: what was wrong; ...'."""
    parts = []
    for err in errors[:limit]:
        loc = ".".join(ascii(p)[1:-1] if isinstance(p, str) else str(p)
                       for p in err.get("loc", ()) if p not in ("body",)) or "body"  # fmt: skip
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not in the API; check the spelling)"
        parts.append(f"{loc}: {msg}")
    if len(errors) > limit:
        parts.append(f"... and {len(errors) - limit} more")
    return "; ".join(parts)


def error_outcome(status: int, code: str) -> Outcome:
    """Whose fault an error answer of a provider app is, for the gateway that sent the request.

    Bad input is the client's; an overloaded queue is overload. An unknown model or route means
    the gateway's config and this provider disagree: this provider's fault, another may serve it.
    """
    if code in ("model_not_found", "not_found", "method_not_allowed"):
        return "error"
    if status < 500:
        return "client_error"
    if code == "overloaded":
        return "shed"
    return "timeout" if status == 504 else "error"


def install_error_handlers(app: FastAPI, *, with_outcome: bool = False) -> None:
    """Route every error FastAPI or Starlette can raise through the JSON error shape.

    Args:
        with_outcome: add `X-Easel-Outcome` to every error answer (provider apps).
    """

    def outcome(status: int, code: str) -> dict[str, str] | None:
        return {OUTCOME_HEADER: error_outcome(status, code)} if with_outcome else None

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.to_response(outcome(exc.status, exc.code))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(list(exc.errors()))
        return error_response(
            422, "invalid_request", message, headers=outcome(422, "invalid_request")
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _DEFAULT_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}"
        headers = {**(exc.headers or {}), **(outcome(exc.status_code, code) or {})}
        return error_response(exc.status_code, code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Our own fault: log it with the traceback, answer without leaking internals.
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "internal_error",
            f"internal error ({type(exc).__name__})",
            headers=outcome(500, "internal_error"),
        )
