"""The status page and JSON API of a running `Node`, on the public API only (`node.status()`,
`node.table()`, `node.stored_peers()`, `node.get_peers()`, `node.events()`).

Routes (all GET):

- `/`: the page (served from the package: no CDN, works offline);
- `/api`: this list;
- `/api/status`: `node.status()`;
- `/api/table`: `node.table()`, every routing entry by family and bucket;
- `/api/lookups`: lookups in flight, with their progress;
- `/api/history`: counters sampled every `history_interval` seconds over the last minutes
  (the page's traffic chart);
- `/api/peers/{infohash}`: the peers this node stores for an infohash;
- `/api/get-peers/{infohash}?timeout=S&scrape=1`: runs a lookup and streams NDJSON, one
  `{"peer": "ip:port"}` line per peer as it arrives, then `{"summary": {...}}` (or
  `{"error": "..."}`); rate-limited per client, bounded in time and in concurrent streams;
- `/api/events?kinds=a,b`: the event stream as server-sent events (`event: <kind>`);
- `/metrics`: Prometheus text exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import MldhtError
from ..ratelimit import PerIpLimiter
from .app import (
    HttpJsonError, WebSettings, client_key, closing_event, create_app,
    json_response, stream_slot,
)
from .metrics import NodeMetrics

if TYPE_CHECKING:
    from ..node import Node

EVENT_KINDS = frozenset({
    "query_received", "response_received", "error_received", "query_timed_out", "node_added",
    "node_removed", "lookup_progress", "lookup_finished", "external_ip_changed",
    "node_id_changed"})
LOOKUP_KINDS = frozenset({"get_peers", "find_node", "get", "announce", "put", "bootstrap",
                          "traversal"})
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css",
                "favicon.svg": "image/svg+xml"}
HEARTBEAT_SECONDS = 15.0
API_ROUTES = ["/api/status", "/api/table", "/api/lookups", "/api/history",
              "/api/peers/{infohash}", "/api/get-peers/{infohash}?timeout=S&scrape=1",
              "/api/events?kinds=KIND,...", "/metrics"]


def read_static(name: str) -> bytes:
    """A file of the page, from the installed package."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def static_response(name: str, files: dict[str, str]) -> web.Response:
    """One of the page's files, by name, among those `files` lists (name -> type): no
    path from a request ever reaches the file system."""
    if name not in files:
        raise HttpJsonError(404, f"no file {name!r}")
    return web.Response(body=read_static(name), content_type=files[name])


def parse_infohash_path(text: str) -> bytes:
    if len(text) != 40:
        raise HttpJsonError(400, f"an infohash is 40 hex digits, not {len(text)} characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise HttpJsonError(400, "an infohash is 40 hex digits (0-9, a-f)") from None


class Snapshot:
    """A value rebuilt at most once per `max_age` seconds, however many ask for it."""

    def __init__(self, build, max_age: float) -> None:
        self.build = build
        self.max_age = max_age
        self.value: Any = None
        self.built = -float("inf")

    def get(self) -> Any:
        now = time.monotonic()
        if now - self.built >= self.max_age:
            self.value = self.build()
            self.built = now
        return self.value


class TrafficHistory:
    """The node's counters every `interval` seconds, the last `length` samples (bounded)."""

    def __init__(self, node: "Node", interval: float, length: int) -> None:
        self.node = node
        self.interval = interval
        self.samples: deque[dict] = deque(maxlen=length)

    def sample(self) -> None:
        counters = self.node.stats.as_dict()
        self.samples.append({
            "t": round(time.time(), 3),
            "datagrams_received": counters["datagrams_received"],
            "datagrams_sent": counters["datagrams_sent"],
            "bytes_received": counters["bytes_received"],
            "bytes_sent": counters["bytes_sent"],
            "queries_received": counters["queries_received"],
            "queries_sent": counters["queries_sent_by_method"],
            "timeouts": counters["timeouts"],
        })

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def as_dict(self, since: float | None = None) -> dict:
        samples = self.samples if since is None else [s for s in self.samples if s["t"] > since]
        return {"interval": self.interval, "samples": list(samples)}


class NodeWeb:
    """The routes of one node, added to an app made by `create_app`."""

    def __init__(self, node: "Node", settings: WebSettings, *, history_interval: float = 2.0,
                 history_length: int = 300, title: str = "mldht") -> None:
        self.node = node
        self.settings = settings
        self.title = title
        self.status = Snapshot(node.status, settings.snapshot_max_age)
        self.metrics = NodeMetrics(self.status.get)
        self.metrics_text = Snapshot(self.metrics.exposition, settings.snapshot_max_age)
        self.history = TrafficHistory(node, history_interval, history_length)
        self.lookup_limiter = PerIpLimiter(settings.lookup_rate, settings.lookup_burst,
                                           max_ips=4096)
        self._tasks: list[asyncio.Task] = []
        self._remove_observer = None

    def add_to(self, app: web.Application) -> None:
        add = app.router.add_get
        add("/", self.page)
        add("/static/{name}", self.static)
        add("/api", self.index)
        add("/api/status", self.api_status)
        add("/api/table", self.api_table)
        add("/api/lookups", self.api_lookups)
        add("/api/history", self.api_history)
        add("/api/peers/{infohash}", self.api_peers)
        add("/api/get-peers/{infohash}", self.api_get_peers)
        add("/api/events", self.api_events)
        add("/metrics", self.api_metrics)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    async def _start(self, app: web.Application) -> None:
        self._tasks.append(asyncio.create_task(self.history.run(), name="mldht-web-history"))
        self._remove_observer = self.node.add_observer(self._observe)

    async def _stop(self, app: web.Application) -> None:
        if self._remove_observer is not None:
            self._remove_observer()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _observe(self, event) -> None:
        if event.kind == "lookup_finished":
            kind = event.lookup if event.lookup in LOOKUP_KINDS else "other"
            self.metrics.observe_lookup(kind, event.summary.elapsed)

    # --- routes -----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=read_static("index.html"), content_type="text/html",
                            charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        return static_response(request.match_info["name"], STATIC_FILES)

    async def index(self, request: web.Request) -> web.Response:
        return json_response({"title": self.title, "routes": API_ROUTES})

    async def api_status(self, request: web.Request) -> web.Response:
        return json_response(self.status.get())

    async def api_table(self, request: web.Request) -> web.Response:
        return json_response(self.node.table())

    async def api_lookups(self, request: web.Request) -> web.Response:
        return json_response({"lookups": self.node.status()["lookups"]})

    async def api_history(self, request: web.Request) -> web.Response:
        since = request.query.get("since")
        if since is not None:
            try:
                since_time = float(since)
            except ValueError:
                raise HttpJsonError(400, f"since is a time in seconds, not {since!r}") from None
            return json_response(self.history.as_dict(since_time))
        return json_response(self.history.as_dict())

    async def api_peers(self, request: web.Request) -> web.Response:
        info_hash = parse_infohash_path(request.match_info["infohash"])
        peers = self.node.stored_peers(info_hash)
        return json_response({"infohash": info_hash.hex(), "count": len(peers), "peers": peers})

    async def api_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics_text.get(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def _lookup_timeout(self, request: web.Request) -> float:
        text = request.query.get("timeout")
        limit = self.settings.max_lookup_timeout
        if text is None:
            return min(30.0, limit)
        try:
            timeout = float(text)
        except ValueError:
            raise HttpJsonError(400, f"timeout must be a number of seconds, not {text!r}") from None
        if not 0 < timeout <= limit:
            raise HttpJsonError(400, f"timeout must be more than 0 and at most {limit:g} s")
        return timeout

    async def api_get_peers(self, request: web.Request) -> web.StreamResponse:
        info_hash = parse_infohash_path(request.match_info["infohash"])
        timeout = self._lookup_timeout(request)
        scrape = request.query.get("scrape", "0") not in ("0", "", "false")
        if not self.lookup_limiter.allow(client_key(request), time.monotonic()):
            raise HttpJsonError(429, f"at most {self.settings.lookup_rate:g} lookups a second "
                                     f"per client", **{"Retry-After": "1"})
        async with stream_slot(request):
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                                   "X-Accel-Buffering": "no"})
            await response.prepare(request)
            lookup = self.node.get_peers(info_hash, timeout, scrape=scrape)
            try:  # a client that leaves (ConnectionResetError) ends the lookup quietly
                async with asyncio.timeout(timeout + 5.0):  # the lookup's own, plus slack
                    async for ip, port in lookup:
                        host = f"[{ip}]" if ":" in ip else ip
                        await response.write(_line({"peer": f"{host}:{port}"}))
                summary = lookup.summary.as_dict() if lookup.summary else None
                await response.write(_line({"summary": summary}))
                await response.write_eof()
            except (MldhtError, TimeoutError) as error:
                with contextlib.suppress(ConnectionResetError):
                    await response.write(_line({"error": str(error) or type(error).__name__}))
                    await response.write_eof()
            except ConnectionResetError:
                pass
            finally:
                with contextlib.suppress(Exception):
                    await lookup.aclose()
            return response

    async def api_events(self, request: web.Request) -> web.StreamResponse:
        kinds_text = request.query.get("kinds")
        kinds = None
        if kinds_text:
            kinds = {kind for kind in kinds_text.split(",") if kind}
            unknown = kinds - EVENT_KINDS
            if unknown:
                raise HttpJsonError(400, f"unknown event kinds: {', '.join(sorted(unknown))}; "
                                         f"known: {', '.join(sorted(EVENT_KINDS))}")
        closing = closing_event(request)
        async with stream_slot(request):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                   "X-Accel-Buffering": "no"})
            await response.prepare(request)
            await response.write(b"retry: 5000\n\n")
            async with self.node.events(max_queue=500, kinds=kinds) as stream:
                with contextlib.suppress(ConnectionResetError):  # the client left
                    await self._forward_events(stream, response, closing)
            return response

    @staticmethod
    async def _forward_events(stream, response: web.StreamResponse,
                              closing: asyncio.Event) -> None:
        """Events as SSE until the server closes; a comment line every 15 s keeps proxies
        from closing an idle stream; `event: dropped` says the client fell behind."""
        reported_drops = 0
        idle = 0.0
        while not closing.is_set():
            try:
                event = await stream.get(timeout=1.0)
            except TimeoutError:
                idle += 1.0
                if idle >= HEARTBEAT_SECONDS:
                    idle = 0.0
                    await response.write(b": keepalive\n\n")
                continue
            idle = 0.0
            if stream.dropped != reported_drops:
                reported_drops = stream.dropped
                await response.write(_sse("dropped", {"dropped": reported_drops}))
            await response.write(_sse(event.kind, event.as_dict()))


def _line(data: dict) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def _sse(kind: str, data: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def node_app(node: "Node", settings: WebSettings, **options) -> web.Application:
    """The status page and API of `node` as an aiohttp application (serve it with
    `start_server`, or add more routes first)."""
    app = create_app(settings)
    NodeWeb(node, settings, **options).add_to(app)
    return app
