"""Every error FastAPI or Starlette raises leaves in the API's JSON shape."""

from __future__ import annotations

import pickle

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serve_apps.api.errors import ApiError, install_error_handlers


class _Body(BaseModel):
    n: int


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/typed")
    async def typed(body: _Body) -> dict:
        return {"n": body.n}

    @app.get("/busy")
    async def busy() -> dict:
        raise ApiError(503, "full", code="overloaded", retry_after=0.2)

    @app.get("/bug")
    async def bug() -> dict:
        raise RuntimeError("secret detail")

    return TestClient(app, raise_server_exceptions=False)


def test_shapes():
    c = _client()
    r = c.post("/typed", json={"n": "x"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"
    assert "n:" in r.json()["error"]["message"]
    r = c.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no route GET /nope"
    assert c.delete("/busy").json()["error"]["code"] == "method_not_allowed"
    r = c.get("/busy")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    r = c.get("/bug")
    assert r.status_code == 500 and "secret" not in r.text


def test_api_error_pickles():
    e = pickle.loads(pickle.dumps(ApiError(429, "slow down", retry_after=2.5)))
    assert (e.status, e.code, e.message, e.retry_after) == (429, "rate_limited", "slow down", 2.5)
