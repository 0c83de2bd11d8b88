"""How one attempt on one upstream ended, as the gateway and the providers both name it.

A provider says it on every error answer in the `X-Easel-Outcome` header, so the gateway never
has to guess from a status code whether the request or the provider was at fault:

- `ok`: an image.
- `client_error`: the request was wrong (e.g. a prompt over the model's token limit); the
  answer goes back to the client and the provider stays healthy.
- `shed`: the provider's queue was full (overload, not ill health); try another provider.
- `error`: the provider failed; counts towards unhealthy, fail over.
- `timeout`: no answer in time; counts towards unhealthy, fail over.
- `connect`: the provider could not be reached at all (refused, unreachable): unhealthy at once.
- `cancelled`: the client went away; nobody's fault, nothing counted but the attempt.
- `internal`: the gateway's own fault (a bug); never counts against a provider.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["OUTCOMES", "OUTCOME_HEADER", "PROVIDER_FAULTS", "Outcome", "outcome_of_status"]

Outcome = Literal[
    "ok", "client_error", "shed", "error", "timeout", "connect", "cancelled", "internal"
]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
OUTCOME_HEADER = "X-Easel-Outcome"
# Outcomes that are the upstream's fault: they count as its errors in health and availability.
PROVIDER_FAULTS = frozenset({"error", "timeout", "connect"})


def outcome_of_status(status: int, header: str | None) -> Outcome:
    """The outcome of an HTTP answer: the provider's own word when it gave one, else by status.

    Without the header (Serve's proxy answering for a dead replica, a load balancer in front),
    429/503 are overload, 408/504 a timeout, any other 5xx or unexpected 4xx the upstream's
    fault: a 4xx the gateway did not expect means the upstream disagrees with the gateway's
    config (e.g. it does not serve the model), which another provider may not.
    """
    if header in OUTCOMES:
        return header  # type: ignore[return-value]
    if status < 400:
        return "ok"
    if status in (429, 503):
        return "shed"
    if status in (408, 504):
        return "timeout"
    return "error"
