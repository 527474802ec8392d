"""A live page of any application's progress (the crawler's sweep, the peer finder's batch),
on the same secured server as the node's status page.

The application gives a function that returns its numbers as a JSON-ready dict (nested
dicts become sections); the page polls `/api/progress` every second and shows each number
with its rate of change, so that "visited 12,345 (+210/s)" needs nothing more from the tool.
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from .app import WebSettings, create_app, json_response
from .node_api import Snapshot, read_static, static_response

PROGRESS_FILES = {"progress.js": "text/javascript", "style.css": "text/css",
                  "favicon.svg": "image/svg+xml"}


class ProgressWeb:
    """Routes: `/` (the page), `/api/progress` (`snapshot()`, rebuilt at most once per
    `settings.snapshot_max_age`), `/api` (the title and routes)."""

    def __init__(self, snapshot: Callable[[], dict], settings: WebSettings,
                 title: str = "progress") -> None:
        self.title = title
        self.snapshot = Snapshot(snapshot, settings.snapshot_max_age)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api", self.index)
        app.router.add_get("/api/progress", self.progress)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=read_static("progress.html"), content_type="text/html",
                            charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        return static_response(request.match_info["name"], PROGRESS_FILES)

    async def index(self, request: web.Request) -> web.Response:
        return json_response({"title": self.title, "routes": ["/api/progress"]})

    async def progress(self, request: web.Request) -> web.Response:
        return json_response({"title": self.title, "progress": self.snapshot.get()})


def progress_app(snapshot: Callable[[], dict], settings: WebSettings,
                 title: str = "progress") -> web.Application:
    """A live page of `snapshot()` as an aiohttp application (serve it with `start_server`;
    add routes first if the tool has more to show)."""
    app = create_app(settings)
    ProgressWeb(snapshot, settings, title).add_to(app)
    return app


async def serve_progress(address: str, snapshot: Callable[[], dict], title: str = "progress"):
    """Serve `progress_app(snapshot)` on `address` ("IP:PORT", loopback: a tool's live page
    carries no token). Returns `(runner, url)`; `await runner.cleanup()` stops it. Raises
    ValueError (one line) for a bad or non-loopback address."""
    from ..compact import parse_host_port
    from ..errors import InvalidInput
    from .app import start_server

    try:
        host, port = parse_host_port(address, allow_any_port=True)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None
    settings = WebSettings(host=host, port=port)
    settings.check_bind()
    runner = await start_server(progress_app(snapshot, settings, title), settings)
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{settings.port}/"
