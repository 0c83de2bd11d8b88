"""Which requests of a collected batch share a forward pass (the pass itself runs in test_app)."""

from __future__ import annotations

from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.batcher import group_by_shape


def _req(i: int, side: int, steps: int = 4, guidance: float = 0.0) -> ResolvedRequest:
    return ResolvedRequest(f"r{i}", "m", "p", side, side, steps, guidance, i)


def test_groups_keep_arrival_order_and_split_by_shape_steps_and_guidance():
    reqs = [_req(0, 32), _req(1, 48), _req(2, 32), _req(3, 32, steps=2), _req(4, 32, guidance=2)]
    assert group_by_shape(reqs) == [[0, 2], [1], [3], [4]]
    assert group_by_shape([]) == []
