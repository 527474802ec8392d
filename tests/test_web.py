"""The status API (`mldht.web`) with aiohttp's test client, against nodes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer, unused_port
from prometheus_client.parser import text_string_to_metric_families

from mldht import Node
from mldht.clients import describe_version
from mldht.web import WebSettings, node_app

INFO_HASH = bytes(range(20))


async def joined_nodes(count: int) -> list[Node]:
    """`count` nodes on loopback that know each other (each pinged the first, and back);
    one IP each, since a routing table keeps one node per IP."""
    nodes = [Node((f"127.0.7.{10 + index}", 0), bootstrap=[]) for index in range(count)]
    for node in nodes:
        await node.start()
    for node in nodes[1:]:
        await node.ping(nodes[0].address)
        await nodes[0].ping(node.address)
    return nodes


@pytest.fixture
async def network():
    nodes = await joined_nodes(6)
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def client_for(node: Node, **settings) -> TestClient:
    port = unused_port()
    web_settings = WebSettings(host="127.0.0.1", port=port, **settings)
    client = TestClient(TestServer(node_app(node, web_settings, history_interval=0.2),
                                   host="127.0.0.1", port=port))
    await client.start_server()
    return client


@pytest.fixture
async def api(network):
    client = await client_for(network[0], lookup_rate=100.0, lookup_burst=100)
    try:
        yield client
    finally:
        await client.close()


async def test_status_names_the_node_and_counts_its_traffic(api, network):
    response = await api.get("/api/status")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    status = await response.json()
    ipv4 = status["families"]["ipv4"]
    assert ipv4["node_id"] == network[0].node_id.hex()
    assert ipv4["address"] == f"127.0.7.10:{network[0].address[1]}"
    assert ipv4["table"]["nodes"] == 5
    assert status["counters"]["queries_received"]["ping"] >= 5
    assert status["counters"]["queries_sent_by_method"]["ping"] >= 5


async def test_table_lists_every_entry_with_its_client(api, network):
    table = (await (await api.get("/api/table")).json())["ipv4"]
    entries = [entry for bucket in table["buckets"] for entry in bucket["nodes"]]
    assert sorted(entry["id"] for entry in entries) == sorted(n.node_id.hex() for n in network[1:])
    for entry in entries:
        assert entry["state"] == "good"
        assert bytes.fromhex(entry["v"])[:2] == b"ML"
        assert entry["client"].startswith("mldht (Python)")
        assert entry["last_seen_ago"] >= 0
        assert entry["address"].startswith("127.0.7.")


async def test_stored_peers_of_an_infohash(api, network):
    await network[3].announce(INFO_HASH, 4321)
    stored = [node for node in network if node.stored_peers(INFO_HASH)]
    assert stored, "the announce reached no node"
    client = await client_for(stored[0])
    try:
        body = await (await client.get(f"/api/peers/{INFO_HASH.hex()}")).json()
    finally:
        await client.close()
    assert body["count"] == 1
    assert body["peers"][0]["address"] == "127.0.7.13:4321"
    assert body["peers"][0]["seed"] is False
    empty = await (await api.get(f"/api/peers/{'ab' * 20}")).json()
    assert empty == {"infohash": "ab" * 20, "count": 0, "peers": []}


@pytest.mark.parametrize("path", ["/api/peers/zz", f"/api/peers/{'g' * 40}",
                                  f"/api/get-peers/{'0' * 39}", f"/api/get-peers/{'x' * 40}"])
async def test_a_bad_infohash_is_a_json_400(api, path):
    response = await api.get(path)
    assert response.status == 400
    body = await response.json()
    assert "40 hex digits" in body["error"] and body["status"] == 400


async def test_unknown_paths_and_methods_get_json_errors(api):
    response = await api.get("/no/such/page")
    assert response.status == 404
    assert (await response.json())["status"] == 404
    response = await api.post("/api/status")
    assert response.status == 405
    assert "GET only" in (await response.json())["error"]
    response = await api.get("/static/../../etc/passwd")
    assert response.status == 404


async def read_ndjson(response) -> list[dict]:
    lines = []
    async for raw in response.content:
        if raw.strip():
            lines.append(json.loads(raw))
    return lines


async def test_get_peers_streams_peers_then_the_summary(api, network):
    await network[2].announce(INFO_HASH, 5555)
    response = await api.get(f"/api/get-peers/{INFO_HASH.hex()}?timeout=5")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    lines = await read_ndjson(response)
    assert {"peer": "127.0.7.12:5555"} in lines
    assert "summary" in lines[-1]
    summary = lines[-1]["summary"]
    assert summary["target"] == INFO_HASH.hex() and summary["peers"] == 1
    assert summary["answered"] >= 1


@pytest.mark.parametrize("query", ["timeout=0", "timeout=-1", "timeout=61", "timeout=soon"])
async def test_get_peers_timeout_is_checked(api, query):
    response = await api.get(f"/api/get-peers/{INFO_HASH.hex()}?{query}")
    assert response.status == 400
    assert "timeout" in (await response.json())["error"]


async def test_lookups_are_rate_limited_per_client(network):
    client = await client_for(network[0], lookup_rate=0.01, lookup_burst=2)
    try:
        statuses = []
        for _ in range(4):
            response = await client.get(f"/api/get-peers/{INFO_HASH.hex()}?timeout=2")
            statuses.append(response.status)
            await response.read()
        assert statuses[:2] == [200, 200]
        assert statuses[2:] == [429, 429]
        assert response.headers["Retry-After"] == "1"
    finally:
        await client.close()


@pytest.fixture
def silent_node():
    """A UDP socket that reads nothing and never answers: queries to it stay in flight."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()
    finally:
        sock.close()


async def test_lookups_in_flight_are_listed_with_progress(silent_node):
    node = Node(("127.0.0.1", 0), bootstrap=[f"127.0.0.1:{silent_node[1]}"])
    await node.start()
    client = await client_for(node, max_streams_per_client=1)
    try:
        stream = asyncio.create_task(client.get(f"/api/get-peers/{INFO_HASH.hex()}?timeout=3"))
        lookups = []
        for _ in range(50):
            await asyncio.sleep(0.05)
            lookups = (await (await client.get("/api/lookups")).json())["lookups"]
            if any(lookup["kind"] == "get_peers" for lookup in lookups):
                break
        lookup = next(lookup for lookup in lookups if lookup["kind"] == "get_peers")
        assert lookup["target"] == INFO_HASH.hex()
        assert {"queried", "answered", "peers", "elapsed"} <= set(lookup)
        # A second stream from the same client is refused while the first runs.
        second = await client.get(f"/api/get-peers/{INFO_HASH.hex()}?timeout=1")
        assert second.status == 429
        assert "streams" in (await second.json())["error"]
        response = await stream
        lines = await read_ndjson(response)
        assert "summary" in lines[-1] or "error" in lines[-1]
    finally:
        await client.close()
        await node.close()


async def test_events_stream_as_server_sent_events(api, network):
    response = await api.get("/api/events?kinds=query_received")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    await network[1].ping(network[0].address)
    events = []
    async with asyncio.timeout(5):
        kind = None
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                break
    response.close()
    kind, data = events[0]
    assert kind == "query_received" and data["method"] == "ping"
    assert data["sender_id"] == network[1].node_id.hex()


async def test_events_reject_unknown_kinds(api):
    response = await api.get("/api/events?kinds=query_received,bogus")
    assert response.status == 400
    assert "bogus" in (await response.json())["error"]


async def test_history_samples_the_counters(api, network):
    await asyncio.sleep(0.5)
    history = await (await api.get("/api/history")).json()
    assert history["interval"] == 0.2
    assert len(history["samples"]) >= 2
    assert history["samples"][-1]["queries_received"]["ping"] >= 5


async def test_metrics_in_prometheus_text_format(api, network):
    await network[0].find_node(network[3].node_id, timeout=5)
    await asyncio.sleep(1.1)  # the metrics text is rebuilt at most once a second
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in
                text_string_to_metric_families(await response.text())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families.values() for s in family.samples}
    assert samples[("mldht_queries_received_total", (("method", "ping"),))] >= 5
    assert samples[("mldht_queries_sent_total", (("method", "find_node"),))] >= 1
    assert samples[("mldht_table_nodes", (("family", "ipv4"), ("state", "good")))] == 5
    assert samples[("mldht_datagrams_received_total", ())] >= 10
    assert ("mldht_timeouts_total", ()) in samples
    assert ("mldht_rate_limited_total", ()) in samples
    assert samples[("mldht_stored_infohashes", ())] == 0
    assert samples[("mldht_lookups_in_flight", ())] == 0
    assert families["mldht_lookup_duration_seconds"].type == "histogram"
    assert samples[("mldht_lookup_duration_seconds_count", (("kind", "find_node"),))] == 1


async def test_the_page_and_its_files_are_served_from_the_package(api):
    page = await api.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "<html" in html.lower()
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    assert "Content-Security-Policy" in page.headers
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        response = await api.get(f"/static/{name}")
        assert response.status == 200 and response.content_type == kind
        assert "https://" not in await response.text()
    assert (await api.get("/static/secret.py")).status == 404


def test_describe_version_names_common_clients():
    assert str(describe_version(b"LT\x02\x00")) == "libtorrent 2.0"
    assert str(describe_version(b"UT\x03\x05")) == "µTorrent 3.5"
    assert describe_version(b"ZZ\x00\x01").name is None
    assert describe_version(b"\x00\x01").code is None
    assert describe_version(None) is None
    assert describe_version(b"ml").version is None


def test_serve_with_http_serves_the_page_beside_the_node(tmp_path):
    """`mldht serve --http 127.0.0.1:0`: the log names the page's URL, the API answers with
    the node's id, and SIGINT stops both (exit 0)."""
    import re
    import signal
    import urllib.request

    from netguard import guarded_env
    from test_serve import BOOTSTRAP_IP, SERVER_IP, start_server

    server = start_server(tmp_path, SERVER_IP, BOOTSTRAP_IP, guarded_env(),
                          extra=("--http", "127.0.0.1:0"))
    try:
        url = None
        for _ in range(100):
            found = re.search(r"status page on (http://\S+)", server.log.read_text())
            if found:
                url = found.group(1)
                break
            time.sleep(0.05)
        assert url, server.log.read_text()
        with urllib.request.urlopen(url + "api/status", timeout=5) as response:
            status = json.load(response)
        serving = re.search(r"serving as ([0-9a-f]{40})", server.log.read_text()).group(1)
        assert status["families"]["ipv4"]["node_id"] == serving
        assert status["counters"]["queries_received"]["ping"] >= 1  # start_server's ping
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"<html" in response.read().lower()
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()


async def test_a_tool_serves_its_progress_through_the_same_module():
    from mldht.web import progress_app
    counter = {"visited": 0}

    def snapshot() -> dict:
        counter["visited"] += 1
        return {"visited": counter["visited"], "queue": {"ipv4": 3, "ipv6": 0}}
    port = unused_port()
    settings = WebSettings(host="127.0.0.1", port=port, snapshot_max_age=0.0)
    client = TestClient(TestServer(progress_app(snapshot, settings, title="crawl"),
                                   host="127.0.0.1", port=port))
    await client.start_server()
    try:
        first = await (await client.get("/api/progress")).json()
        second = await (await client.get("/api/progress")).json()
        assert first == {"title": "crawl", "progress": {"visited": 1,
                                                       "queue": {"ipv4": 3, "ipv6": 0}}}
        assert second["progress"]["visited"] == 2
        page = await client.get("/")
        assert page.status == 200 and "progress.js" in await page.text()
        assert (await client.get("/static/progress.js")).status == 200
        # The same rules as the node's page: a foreign Host is refused.
        assert (await client.get("/api/progress", headers={"Host": "evil.example"})).status == 421
    finally:
        await client.close()


async def test_history_since_returns_only_newer_samples(api):
    await asyncio.sleep(0.5)
    full = await (await api.get("/api/history")).json()
    last = full["samples"][-2]["t"]
    newer = await (await api.get(f"/api/history?since={last}")).json()
    assert [s["t"] for s in newer["samples"]] == [s["t"] for s in full["samples"]
                                                  if s["t"] > last][:len(newer["samples"])]
    assert 1 <= len(newer["samples"]) < len(full["samples"])
    assert (await api.get("/api/history?since=yesterday")).status == 400


async def test_clients_that_leave_end_their_streams_quietly(caplog):
    """A closed tab (SSE) or an abandoned lookup: the handler is cancelled, the lookup stops
    at once (its resend after the soft timeout never leaves), nothing is logged as an error."""
    import aiohttp
    from mldht.web import start_server

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    node = Node(("127.0.0.1", 0), bootstrap=[f"127.0.0.1:{silent.getsockname()[1]}"])
    await node.start()
    settings = WebSettings(host="127.0.0.1", port=0)
    runner = await start_server(node_app(node, settings), settings)
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{settings.port}"
            events = await session.get(base + "/api/events")
            lookup = await session.get(f"{base}/api/get-peers/{INFO_HASH.hex()}?timeout=20")
            for _ in range(50):
                if node.status()["lookups"]:
                    break
                await asyncio.sleep(0.02)
            assert node.status()["lookups"], "the lookup never started"
            events.close()
            lookup.close()
            await asyncio.sleep(2.0)  # past the soft timeout, when a live lookup resends
        queries = []
        with contextlib.suppress(BlockingIOError):
            while True:
                queries.append(silent.recv(2048))
        get_peers = [q for q in queries if b"9:get_peers" in q]
        assert len(get_peers) == 1, get_peers  # sent once, never resent: it was cancelled
        assert node.status()["lookups"] == []
    finally:
        await runner.cleanup()
        await node.close()
        silent.close()
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], [r.getMessage() for r in errors]


async def test_serve_progress_for_a_tool_on_loopback_only():
    import aiohttp
    from mldht.web import serve_progress
    with pytest.raises(ValueError, match="token is required"):
        await serve_progress("0.0.0.0:0", dict)
    with pytest.raises(ValueError):
        await serve_progress("not an address", dict)
    runner, url = await serve_progress("127.0.0.1:0", lambda: {"done": 3}, title="batch")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "api/progress") as response:
                assert await response.json() == {"title": "batch", "progress": {"done": 3}}
    finally:
        await runner.cleanup()
