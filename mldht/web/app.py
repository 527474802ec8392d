"""The HTTP side, shared by every application on mldht: an aiohttp application with the
security rules built in, and the helpers its routes use.

- **Host check**: a request is served only if its `Host` names the address the server is
  bound to (an IP literal, `localhost` on a loopback bind, or a name given in
  `WebSettings.allowed_hosts`), so that a web page cannot reach the server through a name
  of its own pointed at 127.0.0.1 (DNS rebinding).
- **No CORS**: no `Access-Control-*` header is ever sent, and a request a browser marks as
  coming from another site (`Sec-Fetch-Site`, `Origin`) is refused.
- **Token**: with `WebSettings.token`, every route needs it, as `Authorization: Bearer
  TOKEN` or as the cookie the page sets after `/?token=TOKEN`; compared in constant time.
- **Limits**: GET and HEAD only, no request body, short request lines and headers, a
  bounded number of long-lived streams in all and per client, JSON errors everywhere.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web

log = logging.getLogger("mldht.web")

TOKEN_COOKIE = "mldht_token"
MAX_REQUEST_LINE = 4096
MAX_HEADER_FIELD = 4096
MAX_BODY = 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
}

SETTINGS_KEY: web.AppKey["WebSettings"] = web.AppKey("mldht_web_settings")
STREAMS_KEY: web.AppKey["StreamLimiter"] = web.AppKey("mldht_web_streams")
CLOSING_KEY: web.AppKey[asyncio.Event] = web.AppKey("mldht_web_closing")


def is_loopback_host(host: str) -> bool:
    """Whether `host` (an IP literal or `localhost`) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass
class WebSettings:
    """How the HTTP server is bound and what it allows.

    `token` is required by `check_bind` for any bind that is not loopback. `allowed_hosts`
    adds names a `Host` header may carry (a reverse proxy's name, say) to the bound address.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_streams: int = 64
    """Long-lived responses (event streams, lookups) open at once, all clients together."""
    max_streams_per_client: int = 4
    lookup_rate: float = 1.0
    """Lookups a client may start per second, sustained (`lookup_burst` at once)."""
    lookup_burst: int = 5
    max_lookup_timeout: float = 60.0
    snapshot_max_age: float = 1.0
    """How old a status snapshot or metrics text may be when served again: however many
    clients poll, the node builds at most one of each per this many seconds."""
    extra: dict[str, Any] = field(default_factory=dict)

    def check_bind(self) -> None:
        """Raise ValueError, with a message that says why, for a bind that is not loopback
        and has no token."""
        if not is_loopback_host(self.host) and not self.token:
            raise ValueError(f"--http {self.host}:{self.port} is not a loopback address: "
                             f"the status page and API would be open to the network, so a "
                             f"token is required (--http-token TOKEN or --http-token-file FILE)")

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        host, port = _split_host_header(header)
        if port is not None and port != self.port:
            return False
        host = host.lower()
        if host in (name.lower() for name in self.allowed_hosts):
            return True
        bound = self.host.strip("[]").lower()
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            # A name: only localhost, and only for a server that listens on loopback.
            return host == "localhost" and (is_loopback_host(bound) or is_wildcard_host(bound))
        if is_wildcard_host(bound):
            return True  # an IP literal cannot be rebound by DNS
        try:
            return address == ipaddress.ip_address(bound)
        except ValueError:  # bound to a name: "localhost" means its loopback addresses
            return bound == "localhost" and address.is_loopback

    def token_matches(self, given: str | None) -> bool:
        if self.token is None:
            return True
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8"))


def _split_host_header(header: str) -> tuple[str, int | None]:
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        host, rest = header[:end + 1], header[end + 1:]
        port_text = rest[1:] if rest.startswith(":") else None
    elif header.count(":") == 1:
        host, port_text = header.split(":")
    else:
        host, port_text = header, None
    if port_text is None:
        return host, None
    return host, int(port_text) if port_text.isdigit() else -1


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """A JSON error body: `{"error": message, "status": status}`."""
    response = json_response({"error": message, "status": status}, status)
    response.headers.update(headers)
    return response


class HttpJsonError(Exception):
    """Raised by a route to answer with a JSON error."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def client_key(request: web.Request) -> str:
    """The client's IP: what per-client limits count by."""
    return request.remote or "?"


class StreamLimiter:
    """At most `total` long-lived responses at once, `per_client` per client IP."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: dict[str, int] = {}

    @property
    def count(self) -> int:
        return sum(self.open.values())

    @asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        if self.count >= self.total:
            raise HttpJsonError(503, f"too many streams open ({self.total}); try again later",
                                **{"Retry-After": "5"})
        if self.open.get(client, 0) >= self.per_client:
            raise HttpJsonError(429, f"at most {self.per_client} streams at once per client",
                                **{"Retry-After": "5"})
        self.open[client] = self.open.get(client, 0) + 1
        try:
            yield
        finally:
            left = self.open[client] - 1
            if left:
                self.open[client] = left
            else:
                del self.open[client]


def _request_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return request.cookies.get(TOKEN_COOKIE)


def _cross_site(request: web.Request, settings: WebSettings) -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        _, _, authority = origin.partition("://")
        return not settings.host_allowed(authority)
    return False


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable]) -> Any:
    settings: WebSettings = request.app[SETTINGS_KEY]
    try:
        if not settings.host_allowed(request.headers.get("Host")):
            raise HttpJsonError(421, "Host header does not name this server")
        if _cross_site(request, settings):
            raise HttpJsonError(403, "cross-site requests are not allowed")
        if request.method not in ("GET", "HEAD"):
            raise HttpJsonError(405, f"method {request.method} not allowed (GET only)",
                                Allow="GET, HEAD")
        if request.content_length or request.body_exists:
            raise HttpJsonError(413, "requests carry no body here")
        if settings.token is not None:
            query_token = request.query.get("token") if request.path == "/" else None
            if query_token is not None:
                if not settings.token_matches(query_token):
                    raise HttpJsonError(401, "wrong token", **{"WWW-Authenticate": "Bearer"})
                # The page's own requests (EventSource cannot send headers) carry a cookie.
                response = web.Response(status=303, headers={"Location": "/"})
                response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True,
                                    samesite="Strict", path="/")
                return response
            if not settings.token_matches(_request_token(request)):
                raise HttpJsonError(401, "a bearer token is required",
                                    **{"WWW-Authenticate": "Bearer"})
        response = await handler(request)
    except HttpJsonError as error:
        response = json_error(error.status, error.message, **error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = json_error(error.status, error.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as error:  # a bug in a route: one line to the client, the trace logged
        log.exception("error serving %s", request.path)
        response = json_error(500, f"internal error: {type(error).__name__}")
    if isinstance(response, web.StreamResponse) and not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update({key: value for key, value in SECURITY_HEADERS.items()
                             if key not in response.headers})


def create_app(settings: WebSettings) -> web.Application:
    """An aiohttp application with the security rules of this module: add routes to it
    (`app.router.add_get`), then serve it with `start_server`."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[SETTINGS_KEY] = settings
    app[STREAMS_KEY] = StreamLimiter(settings.max_streams, settings.max_streams_per_client)
    app[CLOSING_KEY] = asyncio.Event()
    app.on_response_prepare.append(_security_headers)

    async def closing(app: web.Application) -> None:
        app[CLOSING_KEY].set()  # streams end, so that shutdown does not wait on them
    app.on_shutdown.append(closing)
    return app


@asynccontextmanager
async def stream_slot(request: web.Request) -> AsyncIterator[None]:
    """Hold one of the app's long-lived stream slots for this client (429/503 when none)."""
    async with request.app[STREAMS_KEY].slot(client_key(request)):
        yield


def closing_event(request: web.Request) -> asyncio.Event:
    """Set when the server shuts down: long-lived handlers end when they see it."""
    return request.app[CLOSING_KEY]


async def start_server(app: web.Application, settings: WebSettings) -> web.AppRunner:
    """Serve `app` on `settings.host`/`settings.port` (port 0: any free port, written back
    to `settings.port`). Returns the runner: `await runner.cleanup()` stops it."""
    settings.check_bind()
    # handler_cancellation: a client that disconnects cancels its handler, so that a
    # lookup nobody waits for stops at once instead of running to its timeout.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0,
                           handler_cancellation=True, max_line_size=MAX_REQUEST_LINE,
                           max_field_size=MAX_HEADER_FIELD, max_headers=64)
    await runner.setup()
    site = web.TCPSite(runner, settings.host.strip("[]"), settings.port, backlog=512)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    if settings.port == 0 and runner.addresses:
        settings.port = runner.addresses[0][1]
    return runner
