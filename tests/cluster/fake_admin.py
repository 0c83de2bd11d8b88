"""A tiny fake of the serving app's admin routing route, over real HTTP, for client tests.

Only the contract the cluster tools rely on: `GET/PUT /v1/admin/routing` with the admin key,
the view's shape, and the `{"error": {"code", "message"}}` error body. Tests script the state.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests._util import free_port, wait_for

KEY = "test-admin-key"
_ROW = {"weight": 1.0, "drained": False, "healthy": True, "outstanding": 0, "p95_ms": None,
        "requests": 0, "errors": 0}  # fmt: skip


class FakeAdmin:
    """Serves a scripted routing view; records every PUT body."""

    def __init__(
        self,
        providers: list[str],
        models: tuple[str, ...] = ("sdxl-turbo",),
        log: list[tuple[str, Any]] | None = None,
    ) -> None:
        self.policy = "weighted"
        self.log = log  # when given, every PUT body is appended as ("admin", body)
        self.rows: dict[tuple[str, str], dict[str, Any]] = {
            (m, p): dict(_ROW, model=m, provider=p) for m in models for p in providers
        }
        self.puts: list[dict[str, Any]] = []
        self.app = self._build()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def set(self, provider: str, model: str | None = None, **fields: Any) -> None:
        """Change every model row of `provider` (or only `model`'s)."""
        for (m, p), row in self.rows.items():
            if p == provider and model in (None, m):
                row.update(fields)

    def view(self) -> dict[str, Any]:
        return {"policy": self.policy, "providers": [dict(r) for r in self.rows.values()]}

    def _build(self) -> FastAPI:
        app = FastAPI()

        def denied(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") != f"Bearer {KEY}":
                return JSONResponse(
                    {"error": {"code": "unauthorized", "message": "invalid admin key"}}, 401
                )
            return None

        @app.get("/v1/admin/routing")
        async def get_routing(request: Request) -> Any:
            return denied(request) or self.view()

        @app.put("/v1/admin/routing")
        async def put_routing(request: Request) -> Any:
            if (resp := denied(request)) is not None:
                return resp
            body = await request.json()
            self.puts.append(body)
            if self.log is not None:
                self.log.append(("admin", body))
            known = {p for _, p in self.rows}
            named = (
                set(body.get("weights", {}))
                | set(body.get("drain", []))
                | set(body.get("undrain", []))
            )
            if named - known:
                message = f"unknown providers {sorted(named - known)}"
                return JSONResponse({"error": {"code": "not_found", "message": message}}, 404)
            self.policy = body.get("policy", self.policy)
            for (m, p), row in self.rows.items():
                if body.get("model") not in (None, m):
                    continue
                if p in body.get("weights", {}):
                    row["weight"] = body["weights"][p]
                if p in body.get("drain", []):
                    row["drained"] = True
                if p in body.get("undrain", []):
                    row["drained"] = False
            return self.view()

        return app

    def __enter__(self) -> FakeAdmin:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
