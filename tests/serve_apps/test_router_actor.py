"""The router actor's own logic, run in-process (the Serve tests run it as a real actor)."""

from __future__ import annotations

from config import load_config
from serve_apps.router_actor import RouterActor, _deployment_up


async def test_router_actor_logic_in_process():
    cfg = load_config()
    actor = RouterActor()
    assert await actor.configure(cfg.model_dump(mode="json"), cfg.digest(), "easel") is True
    # Same digest: live state is kept (a second ingress replica must not reset drains).
    await actor.update({"drain": ["lambda-sim"]})
    assert await actor.configure(cfg.model_dump(mode="json"), cfg.digest(), "easel") is False
    got = await actor.choose("flux2-schnell", [])
    assert got == {"provider": "runpod-sim"}
    assert await actor.choose("flux2-schnell", ["runpod-sim"]) == {"unavailable": 1.0}
    assert (await actor.update({"policy": "nope"}))["error"][0] == 422
    assert (await actor.update({"drain": ["x"], "model": "nope"}))["error"][0] == 404
    actor._probe_task.cancel()


def test_deployment_is_down_only_after_losing_its_replicas():
    prev: dict[str, int] = {}
    lost: set[str] = set()

    def up(running: int, wanted: int) -> bool:
        return _deployment_up("d", (running, wanted), prev, lost)

    assert up(0, 1)  # starting: requests may queue for it
    assert up(1, 1)
    assert not up(0, 1)  # its node died; a replacement is pending
    assert not up(0, 1)
    assert up(1, 1)  # replaced
    assert up(0, 0)  # scaled to zero: a request must reach it to scale it up
    assert up(0, 1)  # scaling up from zero
