"""The status API's security rules: Host check (DNS rebinding), no cross-site requests and no
CORS, the token on a non-loopback bind, request limits, and a DHT node that an HTTP client
cannot stop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp.test_utils import TestClient, TestServer, unused_port

from mldht import Node
from mldht.cli import main
from mldht.web import WebSettings, node_app, start_server
from mldht.web import app as web_app

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
async def node():
    node = Node(("127.0.0.1", 0), bootstrap=[])
    await node.start()
    try:
        yield node
    finally:
        await node.close()


@contextlib.asynccontextmanager
async def served(node: Node, **options):
    port = unused_port()
    settings = WebSettings(host=options.pop("host", "127.0.0.1"), port=port, **options)
    client = TestClient(TestServer(node_app(node, settings), host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield client, port
    finally:
        await client.close()


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:{port}", True),
    ("localhost:{port}", True),
    ("127.0.0.1", True),  # no port: the default for the scheme, still this address
    ("evil.example:{port}", False),  # a name pointed at 127.0.0.1 by its owner
    ("127.0.0.1:{other}", False),
    ("127.0.0.2:{port}", False),
    ("[::1]:{port}", False),
    ("", False),
])
async def test_the_host_header_must_name_this_server(node, host, allowed):
    async with served(node) as (client, port):
        header = host.format(port=port, other=port + 1)
        response = await client.get("/api/status", headers={"Host": header})
        if allowed:
            assert response.status == 200
        else:
            assert response.status == 421
            assert (await response.json())["error"] == "Host header does not name this server"


async def test_an_allowed_host_name_is_accepted(node):
    async with served(node, allowed_hosts=("dht.example.org",)) as (client, port):
        ok = await client.get("/api/status", headers={"Host": f"dht.example.org:{port}"})
        assert ok.status == 200
        refused = await client.get("/api/status", headers={"Host": f"other.example.org:{port}"})
        assert refused.status == 421


def test_host_rules_for_wildcard_and_named_binds():
    wildcard = WebSettings(host="0.0.0.0", port=80, token=TOKEN)
    assert wildcard.host_allowed("192.0.2.7")  # any IP literal: DNS cannot rebind those
    assert wildcard.host_allowed("localhost:80")
    assert not wildcard.host_allowed("evil.example")
    named = WebSettings(host="localhost", port=8080)
    assert named.host_allowed("localhost:8080") and named.host_allowed("127.0.0.1:8080")
    assert not named.host_allowed("192.0.2.7:8080")


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "http://evil.example"},
])
async def test_cross_site_requests_are_refused(node, headers):
    async with served(node) as (client, _):
        response = await client.get("/api/get-peers/" + "00" * 20, headers=headers)
        assert response.status == 403
        assert "cross-site" in (await response.json())["error"]


async def test_same_origin_requests_pass_and_no_cors_header_is_sent(node):
    async with served(node) as (client, port):
        response = await client.get("/api/status", headers={
            "Sec-Fetch-Site": "same-origin", "Origin": f"http://127.0.0.1:{port}"})
        assert response.status == 200
        assert not [name for name in response.headers if name.lower().startswith("access-control")]
        preflight = await client.options("/api/status", headers={
            "Origin": f"http://127.0.0.1:{port}", "Access-Control-Request-Method": "GET"})
        assert preflight.status == 405
        assert not [name for name in preflight.headers
                    if name.lower().startswith("access-control")]


async def test_security_headers_on_every_response(node):
    async with served(node) as (client, _):
        for path in ["/", "/api/status", "/no/such/path"]:
            response = await client.get(path)
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_a_non_loopback_bind_needs_a_token():
    with pytest.raises(ValueError, match="token is required"):
        WebSettings(host="0.0.0.0", port=8080).check_bind()
    with pytest.raises(ValueError, match="not a loopback address"):
        WebSettings(host="192.0.2.1", port=8080).check_bind()
    WebSettings(host="0.0.0.0", port=8080, token=TOKEN).check_bind()
    WebSettings(host="::1", port=8080).check_bind()


def test_serve_exits_2_for_a_non_loopback_http_bind_without_token(capsys):
    # Refused before any socket opens (so nothing is bound or sent here).
    code = main(["serve", "--bind", "127.0.0.1:0", "--bootstrap", "127.0.0.1:1",
                 "--http", "0.0.0.0:8080"])
    assert code == 2
    error = capsys.readouterr().err
    assert "not a loopback address" in error and "--http-token" in error
    assert error.count("\n") == 1  # one line


@pytest.mark.parametrize("argv, message", [
    (["--http-token", "short"], "at least 16"),
    (["--http-token-file", "/nonexistent/token"], "--http-token-file"),
])
def test_serve_checks_the_token_options(capsys, argv, message):
    code = main(["serve", "--bind", "127.0.0.1:0", "--bootstrap", "127.0.0.1:1",
                 "--http", "127.0.0.1:0", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_token_options_need_http(capsys):
    code = main(["serve", "--bind", "127.0.0.1:0", "--http-token", TOKEN])
    assert code == 2
    assert "need --http" in capsys.readouterr().err


async def test_every_route_needs_the_token(node):
    async with served(node, token=TOKEN) as (client, _):
        for path in ["/", "/api/status", "/metrics", "/api/events", "/static/app.js"]:
            response = await client.get(path)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
            wrong = await client.get(path, headers={"Authorization": "Bearer " + "x" * 23})
            assert wrong.status == 401, path
        ok = await client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200


async def test_the_page_takes_the_token_once_and_keeps_it_in_a_strict_cookie(node):
    async with served(node, token=TOKEN) as (client, _):
        wrong = await client.get("/?token=nope", allow_redirects=False)
        assert wrong.status == 401
        login = await client.get(f"/?token={TOKEN}", allow_redirects=False)
        assert login.status == 303 and login.headers["Location"] == "/"
        cookie = login.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # The session's cookie jar now carries it: the page and the API answer.
        assert (await client.get("/")).status == 200
        assert (await client.get("/api/status")).status == 200


async def test_the_token_is_compared_in_constant_time(node, monkeypatch):
    calls = []
    original = web_app.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)
    monkeypatch.setattr(web_app.hmac, "compare_digest", spy)
    async with served(node, token=TOKEN) as (client, _):
        await client.get("/api/status", headers={"Authorization": "Bearer guess"})
    assert calls == [(b"guess", TOKEN.encode())]


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()


@pytest.fixture
async def real_server(node):
    settings = WebSettings(host="127.0.0.1", port=0)
    runner = await start_server(node_app(node, settings), settings)
    try:
        yield settings.port
    finally:
        await runner.cleanup()


async def test_oversized_and_malformed_requests_are_refused(real_server, node):
    port = real_server
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    long_line = b"GET /api/status?" + b"a" * 8000 + b" HTTP/1.1\r\n" + host + b"\r\n"
    assert (await raw_request(port, long_line)).split(b" ", 2)[1] in (b"400", b"414")
    big_header = b"GET /api/status HTTP/1.1\r\n" + host + b"X-Big: " + b"b" * 8000 + b"\r\n\r\n"
    assert (await raw_request(port, big_header)).split(b" ", 2)[1] in (b"400", b"431")
    many = b"GET /api/status HTTP/1.1\r\n" + host + b"".join(
        b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    assert (await raw_request(port, many)).split(b" ", 2)[1] in (b"400", b"431")
    body = (b"GET /api/status HTTP/1.1\r\n" + host + b"Content-Length: 10\r\n\r\n0123456789")
    reply = await raw_request(port, body)
    assert reply.split(b" ", 2)[1] == b"413"
    assert b'"requests carry no body here"' in reply
    garbage = await raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.") and garbage.split(b" ", 2)[1] == b"400"
    # After all that the server still serves, and the DHT node still answers.
    ok = await raw_request(port, b"GET /api/status HTTP/1.1\r\n" + host +
                           b"Connection: close\r\n\r\n")
    assert ok.split(b" ", 2)[1] == b"200"
    peer = Node(("127.0.0.2", 0), bootstrap=[])
    await peer.start()
    try:
        assert await peer.ping(node.address, timeout=2) == node.node_id
    finally:
        await peer.close()


async def test_streams_are_bounded_in_all(node):
    async with served(node, max_streams=2, max_streams_per_client=5) as (client, _):
        first = await client.get("/api/events")
        second = await client.get("/api/events")
        assert first.status == second.status == 200
        third = await client.get("/api/events")
        assert third.status == 503
        assert "too many streams" in (await third.json())["error"]
        first.close()
        second.close()


async def test_a_slow_http_client_does_not_slow_the_dht(real_server, node):
    """Connections that send half a request and stall hold no lock the node needs."""
    port = real_server
    stalled = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        stalled.append(writer)
    peer = Node(("127.0.0.3", 0), bootstrap=[])
    await peer.start()
    try:
        for _ in range(5):
            assert await peer.ping(node.address, timeout=2) == node.node_id
    finally:
        await peer.close()
        for writer in stalled:
            writer.close()
