"""The rating web page: a small HTTP server over a run's pairs and its votes database.

Routes (JSON errors are `{"error": {"code", "message"}}`):
- `GET /` — the rating page (static HTML; keys ←/A left, →/L right, T/↓ tie).
- `GET /api/next?rater=ID` — the next pair this rater has not voted on, and their progress.
- `GET /api/image/<pair_id>/<left|right>` — an image of a pair (served by pair id and side only,
  so nothing in the page names a model or a job).
- `POST /api/vote` — `{"pair_id", "rater", "choice": "left"|"right"|"tie"}`; 409 when repeated.
- `GET /healthz`.
Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from evaluation.humaneval.fit import VOTES_FILE
from evaluation.humaneval.pairs import load_pairs
from evaluation.humaneval.store import RATER_PATTERN, DuplicateVote, VoteStore

__all__ = ["RatingServer"]

_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
_MAX_BODY = 4096


class RatingServer:
    """Serves the rating page for one run folder.

    Args:
        run_dir: run folder with `humaneval/pairs.parquet`.
        host: interface to bind (127.0.0.1 by default).
        port: TCP port; 0 picks a free one (see `url`).
    """

    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.run_dir = Path(run_dir).resolve()
        pairs = load_pairs(self.run_dir)
        self._order = list(pairs["pair_id"])
        self._pairs = {r["pair_id"]: r for r in pairs.to_dict("records")}
        self.store = VoteStore(self.run_dir / VOTES_FILE)
        self._html = (
            resources.files("evaluation.humaneval").joinpath("static/rate.html").read_bytes()
        )
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RatingServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    # --- behaviour behind the routes ---

    def next_pair(self, rater: str) -> dict[str, Any]:
        voted = self.store.voted_pairs(rater)
        total = len(self._order)
        # each rater starts at a different place, so early votes spread over all pairs
        start = int(hashlib.sha256(rater.encode()).hexdigest(), 16) % total if total else 0
        nxt = None
        for i in range(total):
            pid = self._order[(start + i) % total]
            if pid not in voted:
                nxt = pid
                break
        progress = {"done": len(voted & self._pairs.keys()), "total": total}
        if nxt is None:
            return {"pair": None, "progress": progress}
        return {
            "pair": {
                "pair_id": nxt,
                "prompt": self._pairs[nxt]["prompt"],
                "left": f"/api/image/{nxt}/left",
                "right": f"/api/image/{nxt}/right",
            },
            "progress": progress,
        }

    def image(self, pair_id: str, side: str) -> tuple[bytes, str] | None:
        pair = self._pairs.get(pair_id)
        if pair is None or side not in ("left", "right"):
            return None
        path = (self.run_dir / str(pair[f"{side}_image"])).resolve()
        if not path.is_relative_to(self.run_dir) or not path.is_file():
            return None
        return path.read_bytes(), _CONTENT_TYPES.get(
            path.suffix.lower(), "application/octet-stream"
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: votes are the log
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = [p for p in url.path.split("/") if p]
                if url.path in ("/", "/index.html"):
                    self._send(200, server._html, "text/html; charset=utf-8")
                elif url.path == "/healthz":
                    self._json(200, {"ok": True})
                elif url.path == "/api/next":
                    rater = parse_qs(url.query).get("rater", [""])[0]
                    if not RATER_PATTERN.match(rater):
                        self._error(400, "bad_rater", "rater must be 1-64 of [A-Za-z0-9_.@-]")
                        return
                    self._json(200, server.next_pair(rater))
                elif len(parts) == 4 and parts[:2] == ["api", "image"]:
                    got = server.image(parts[2], parts[3])
                    if got is None:
                        self._error(404, "not_found", "no such pair or side")
                    else:
                        self._send(200, got[0], got[1], cache="private, max-age=3600")
                else:
                    self._error(404, "not_found", f"no route {url.path}")

            def do_POST(self) -> None:
                if urlparse(self.path).path != "/api/vote":
                    self._error(404, "not_found", "no such route")
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 < length <= _MAX_BODY:
                    self._error(400, "bad_body", f"body must be 1-{_MAX_BODY} bytes of JSON")
                    return
                try:
                    body = json.loads(self.rfile.read(length))
                    pair_id, rater, choice = body["pair_id"], body["rater"], body["choice"]
                except (ValueError, KeyError, TypeError):
                    self._error(400, "bad_json", 'expected {"pair_id", "rater", "choice"}')
                    return
                if pair_id not in server._pairs:
                    self._error(404, "unknown_pair", f"no pair {pair_id!r}")
                    return
                try:
                    server.store.add(str(pair_id), str(rater), str(choice))
                except DuplicateVote as exc:
                    self._error(409, "duplicate_vote", str(exc))
                    return
                except ValueError as exc:
                    self._error(400, "bad_vote", str(exc))
                    return
                self._json(200, {"ok": True, **server.next_pair(str(rater))})

            def _json(self, status: int, obj: Any) -> None:
                self._send(status, json.dumps(obj).encode(), "application/json")

            def _error(self, status: int, code: str, message: str) -> None:
                self._json(status, {"error": {"code": code, "message": message}})

            def _send(self, status: int, data: bytes, ctype: str, cache: str = "no-store") -> None:
                self.send_response(HTTPStatus(status))
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", cache)
                self.end_headers()
                self.wfile.write(data)

        return Handler
