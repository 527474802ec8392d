"""Interoperability with libtorrent-rasterbar (PyPI `libtorrent`), on loopback.

libtorrent runs with its default DHT settings (rate limits, one node per /24, node-id
checks off only where BEP 42 cannot hold on loopback), except that its public bootstrap
routers, local service discovery, UPnP and NAT-PMP are switched off: they would send
packets beyond loopback, which its C++ sockets do outside our Python network guard.
Each node gets its own 127.N.0.1 address because libtorrent keeps one node per /24.
"""

from __future__ import annotations

import asyncio
import sys
import time

import libtorrent as lt  # installed by the test extra: a missing libtorrent must fail CI
import pytest
import pytest_asyncio

from netguard import guarded_env
from mldht import DHTNode, InfoHash, NodeConfig

pytestmark = [pytest.mark.network, pytest.mark.asyncio(loop_scope="module")]

LIBTORRENT_IP = "127.10.0.1"
CONFIG = NodeConfig(query_timeout=2.0)


def libtorrent_session() -> "lt.session":
    return lt.session({
        "enable_dht": True,
        "dht_bootstrap_nodes": "",  # never the public routers
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": f"{LIBTORRENT_IP}:0",
        "dht_enforce_node_id": False,  # BEP 42 ids cannot be derived for 127/8 addresses
        "alert_mask": (lt.alert.category_t.dht_notification | lt.alert.category_t.status_notification
                       | lt.alert.category_t.dht_operation_notification),
    })


async def wait_for_alert(session, kind, accept, timeout: float):
    """Poll libtorrent's alerts (bounded by `timeout`) until one of `kind` passes `accept`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for alert in session.pop_alerts():
            if isinstance(alert, kind) and accept(alert):
                return alert
        await asyncio.sleep(0.05)
    raise AssertionError(f"no matching {kind.__name__} within {timeout} s")


class Mixed:
    def __init__(self, session, nodes: list[DHTNode]) -> None:
        self.session = session
        self.nodes = nodes


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mixed():
    """Three mldht nodes (127.11-13.0.1) and one libtorrent session joined through the first."""
    nodes = [DHTNode(f"127.{11 + i}.0.1:0", bootstrap=[], config=CONFIG) for i in range(3)]
    session = None
    try:
        for node in nodes:
            await node.start()
        entry = nodes[0].address
        for node in nodes[1:]:
            await node.ping(entry)
            await node.bootstrap(timeout=3)
        session = libtorrent_session()
        session.add_dht_node(entry)
        # libtorrent joins by itself; wait (bounded) until it has queried the entry node.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not nodes[0].stats.queries_received.get("find_node"):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        yield Mixed(session, nodes)
    finally:
        if session is not None:
            session.pause()
            del session
        for node in nodes:
            await node.close()


def libtorrent_entry(mixed: Mixed):
    """libtorrent as the mldht entry node sees it (its address and its node id)."""
    for entry in mixed.nodes[0].routing_table:
        if entry.ip == LIBTORRENT_IP:
            return entry
    raise AssertionError("libtorrent is not in the entry node's routing table")


async def libtorrent_announce(mixed: Mixed, info_hash: InfoHash, port: int) -> None:
    """Announce through libtorrent and wait (bounded) until an mldht node has stored it."""
    mixed.session.dht_announce(lt.sha1_hash(bytes(info_hash)), port, 0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(info_hash in n.peer_store for n in mixed.nodes):
        await asyncio.sleep(0.1)


async def test_libtorrent_keeps_the_mldht_entry_node_in_its_table(mixed: Mixed):
    # dht_live_nodes wants the id of libtorrent's own DHT node: mldht learnt it on the wire.
    mixed.session.dht_live_nodes(lt.sha1_hash(bytes(libtorrent_entry(mixed).id)))
    alert = await wait_for_alert(mixed.session, lt.dht_live_nodes_alert, lambda a: True, 10)
    endpoints = {(str(node["endpoint"][0]), node["endpoint"][1]) for node in alert.nodes}
    assert mixed.nodes[0].address in endpoints, alert.nodes


async def test_mldht_verified_libtorrent(mixed: Mixed):
    entry = libtorrent_entry(mixed)
    assert entry.last_response is not None  # it answered our verification ping


async def test_peer_announced_by_libtorrent_is_found_by_mldht(mixed: Mixed):
    info_hash = InfoHash(b"\x11" * 20)
    await libtorrent_announce(mixed, info_hash, 6999)
    seeker = mixed.nodes[2]
    peers = await seeker.get_peers(info_hash, timeout=10).collect()
    assert (LIBTORRENT_IP, 6999) in peers


async def test_peer_announced_by_libtorrent_is_found_by_the_cli(mixed: Mixed):
    info_hash = InfoHash(b"\x22" * 20)
    await libtorrent_announce(mixed, info_hash, 7001)
    entry = "%s:%d" % mixed.nodes[1].address
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mldht.cli", "get-peers", info_hash.hex(), "--bootstrap", entry,
        "--bind", "127.20.0.1:0", "--timeout", "10", env=guarded_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr
    assert f"{LIBTORRENT_IP}:7001" in stdout.decode().split()


async def test_peer_announced_by_mldht_is_found_by_libtorrent(mixed: Mixed):
    info_hash = InfoHash(b"\x33" * 20)
    result = await mixed.nodes[1].announce(info_hash, 7777, timeout=10)
    assert result.announced_to
    mixed.session.dht_get_peers(lt.sha1_hash(bytes(info_hash)))
    alert = await wait_for_alert(
        mixed.session, lt.dht_get_peers_reply_alert,
        lambda a: str(a.info_hash) == info_hash.hex()
        and any(peer[1] == 7777 for peer in a.peers()), 30)
    assert ("127.12.0.1", 7777) in [(str(ip), port) for ip, port in alert.peers()]
