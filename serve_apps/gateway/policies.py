"""Routing policies: which healthy upstream of a model gets the next request.

One interface (`Policy`): `select(candidates)` picks among the healthy, undrained upstreams the
routing table offers; `before(upstream)` and `after(upstream)` run around every attempt and keep
the in-flight counts the policies read (the dispatcher calls `after` in a `finally`, so a
cancelled request gives its count back too). Policies are registered by name (`POLICIES`,
`make_policy`) and hold no state of their own besides a seeded random source, so each is
testable without a server.

- `weighted`: random, in proportion to each upstream's weight (weight 0: never).
- `least_outstanding`: the lowest in-flight count per unit of capacity (a provider's running
  replicas × `max_ongoing_requests`, as its probe reports), so a provider with four replicas
  takes four times the requests of one with one.
- `cheapest_healthy`: the lowest price (a provider's GPU-hour for the model, or a closed model's
  price per image), then the lowest load.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from serve_apps.gateway.routing import UpstreamState

__all__ = [
    "POLICIES",
    "CheapestHealthy",
    "LeastOutstanding",
    "Policy",
    "Weighted",
    "make_policy",
]


class Policy(ABC):
    """Picks one upstream among candidates; keeps in-flight counts around each attempt."""

    name: ClassVar[str]

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    @abstractmethod
    def select(self, candidates: Sequence[UpstreamState]) -> UpstreamState:
        """One of `candidates` (never empty: the routing table asks only when there is one)."""

    def before(self, upstream: UpstreamState) -> None:
        """An attempt is about to be sent to `upstream`."""
        upstream.outstanding += 1

    def after(self, upstream: UpstreamState) -> None:
        """That attempt ended, however it ended (called from a `finally`)."""
        upstream.outstanding = max(0, upstream.outstanding - 1)

    def _least(self, candidates: Sequence[UpstreamState], *keys: str) -> UpstreamState:
        tie = {id(c): self._rng.random() for c in candidates}
        return min(candidates, key=lambda c: (*(getattr(c, k) for k in keys), tie[id(c)]))


class Weighted(Policy):
    name = "weighted"

    def select(self, candidates: Sequence[UpstreamState]) -> UpstreamState:
        if len(candidates) == 1:
            return candidates[0]
        return self._rng.choices(list(candidates), weights=[c.weight for c in candidates])[0]


class LeastOutstanding(Policy):
    name = "least_outstanding"

    def select(self, candidates: Sequence[UpstreamState]) -> UpstreamState:
        return candidates[0] if len(candidates) == 1 else self._least(candidates, "load")


class CheapestHealthy(Policy):
    name = "cheapest_healthy"

    def select(self, candidates: Sequence[UpstreamState]) -> UpstreamState:
        return candidates[0] if len(candidates) == 1 else self._least(candidates, "cost", "load")


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (Weighted, LeastOutstanding, CheapestHealthy)
}


def make_policy(name: str, seed: int = 0) -> Policy:
    """The policy registered as `name`; ValueError naming the allowed ones otherwise."""
    try:
        return POLICIES[name](seed)
    except KeyError:
        raise ValueError(f"policy: unknown {name!r} (allowed: {list(POLICIES)})") from None
