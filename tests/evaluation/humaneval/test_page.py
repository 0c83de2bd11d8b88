"""The rating page: its HTTP API, and a real headless Chromium voting by keyboard and by click."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evaluation.humaneval.page import RatingServer
from evaluation.humaneval.pairs import make_pairs
from tests._chromium import ARGS as CHROMIUM_ARGS
from tests._chromium import CHROMIUM, chromium_missing
from tests.evaluation._fixtures import eval_config, make_run


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RatingServer]:
    run = make_run(tmp_path / "run", per_cell=3)
    make_pairs(run, eval_config(), n_per_pair=4)
    srv = RatingServer(run).start()
    yield srv
    srv.stop()


def test_api_serves_pairs_images_and_records_votes(server: RatingServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"ok": True}
        assert "Which image fits the prompt better?" in c.get("/").text
        nxt = c.get("/api/next", params={"rater": "alice"}).json()
        pair = nxt["pair"]
        assert nxt["progress"] == {"done": 0, "total": 12}
        assert set(pair) == {"pair_id", "prompt", "left", "right"}  # no model, no job id
        img = c.get(pair["left"])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.content.startswith(b"\x89PNG")

        vote = {"pair_id": pair["pair_id"], "rater": "alice", "choice": "left"}
        r = c.post("/api/vote", json=vote)
        assert r.status_code == 200 and r.json()["progress"]["done"] == 1
        assert r.json()["pair"]["pair_id"] != pair["pair_id"]
        dup = c.post("/api/vote", json=vote)
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "duplicate_vote"

        bad = [
            ({"pair_id": "nope", "rater": "alice", "choice": "left"}, 404),
            ({"pair_id": pair["pair_id"], "rater": "bob", "choice": "up"}, 400),
            ({"pair_id": pair["pair_id"], "rater": "bob smith", "choice": "left"}, 400),
            ({"rater": "bob"}, 400),
        ]
        for body, status in bad:
            r = c.post("/api/vote", json=body)
            assert r.status_code == status and "error" in r.json(), body
        assert c.post("/api/vote", content=b"{not json").status_code == 400
        assert c.get("/api/next", params={"rater": ""}).status_code == 400
        assert c.get(f"/api/image/{pair['pair_id']}/middle").status_code == 404
        assert c.get("/api/image/..%2F..%2Fconfig.yaml/left").status_code == 404
    votes = server.store.votes()
    assert list(votes["rater"]) == ["alice"] and list(votes["choice"]) == ["left"]


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_browser_records_a_vote_by_keyboard_and_by_click(server: RatingServer) -> None:
    from playwright.sync_api import sync_playwright

    pair_id = "document.getElementById('main').dataset.pairId"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/?rater=carol")
            page.wait_for_function(f"{pair_id} !== ''")
            first = page.get_attribute("#main", "data-pair-id")
            page.wait_for_function("document.getElementById('left').complete")
            assert page.inner_text("#progress") == "0 / 12"

            page.keyboard.press("ArrowLeft")
            page.wait_for_function(f"{pair_id} !== '{first}' && {pair_id} !== ''")
            second = page.get_attribute("#main", "data-pair-id")
            assert page.inner_text("#progress") == "1 / 12"

            page.click("#vote-right")
            page.wait_for_function(f"{pair_id} !== '{second}'")
            page.wait_for_function("document.getElementById('progress').textContent === '2 / 12'")

            page.keyboard.press("t")
            page.wait_for_function("document.getElementById('progress').textContent === '3 / 12'")
        finally:
            browser.close()
    votes = server.store.votes()
    assert list(votes["rater"]) == ["carol"] * 3
    assert list(votes["choice"]) == ["left", "right", "tie"]
    assert list(votes["pair_id"][:2]) == [first, second]
