"""BEP 32 on ::1 and 127/8: one `Node` on both families, `want`, IPv6 peers, and the CLI
over both."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

import pytest

from dhtnet import free_udp_port, run_cli
from mldht import InfoHash, InvalidInput, Node, NodeId, NodeInfo
from mldht.krpc import FindNode, GetPeers
from netguard import guarded_env

pytestmark = pytest.mark.network


def spec(address) -> str:
    ip, port = address
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@pytest.fixture
async def pair():
    """B serves both families; A joins it through one address of each."""
    b = Node(["127.0.0.171:0", "[::1]:0"], bootstrap=[])
    await b.start()
    a = Node(["127.0.0.170:0", "[::1]:0"], bootstrap=[spec(x) for x in b.addresses])
    await a.start()
    try:
        assert await a.bootstrap(timeout=5) >= 2
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_each_family_has_its_own_socket_and_table(pair):
    a, b = pair
    assert a.address_of("ipv4")[0] == "127.0.0.170" and a.address_of("ipv6")[0] == "::1"
    assert [e.address for e in a.routing_table_of("ipv4")] == [b.address_of("ipv4")]
    assert [e.address for e in a.routing_table_of("ipv6")] == [b.address_of("ipv6")]
    assert a.node_ids["ipv4"] != a.node_ids["ipv6"]  # one id per address (BEP 42 ties them)


async def test_want_asks_for_the_other_family(pair):
    a, b = pair
    for family in ("ipv4", "ipv6"):  # B has verified A on both families by now
        await b.ping(a.address_of(family))
    reply = await a.query(b.address_of("ipv4"), FindNode(
        transaction_id=b"", sender_id=a.node_ids["ipv4"], target=NodeId(b"\x00" * 20),
        want=(b"n4", b"n6")))
    assert [n.address for n in reply.nodes] == []  # the requester itself is left out
    assert [n.address for n in reply.nodes6] == [a.address_of("ipv6")]
    reply6 = await a.query(b.address_of("ipv6"), FindNode(
        transaction_id=b"", sender_id=a.node_ids["ipv6"], target=NodeId(b"\x00" * 20)))
    assert reply6.nodes is None and reply6.nodes6 is not None  # the source's family by default


async def test_peers_of_both_families_are_stored_once_and_served_with_18_byte_values(pair):
    a, b = pair
    info_hash = InfoHash(b"\x42" * 20)
    result = await a.announce(info_hash, 7000, timeout=5)
    assert {n.ip for n in result.announced_to} == {"127.0.0.171", "::1"}
    assert len(b.peer_store) == 1  # one store for both sockets
    reply = await a.query(b.address_of("ipv6"), GetPeers(
        transaction_id=b"", sender_id=a.node_ids["ipv6"], info_hash=info_hash))
    assert reply.values == [("::1", 7000)]  # IPv6 requester: IPv6 (18-byte) peers
    lookup = a.get_peers(info_hash, timeout=5)
    peers = await lookup.collect()
    assert sorted(peers) == [("127.0.0.170", 7000), ("::1", 7000)]
    assert lookup.summary.peers == 2 and lookup.summary.answered >= 2


async def test_get_peers_cli_uses_both_families(pair):
    a, b = pair
    info_hash = InfoHash(b"\x43" * 20)
    await a.announce(info_hash, 7001, timeout=5)
    result = await run_cli("get-peers", info_hash.hex(), "--json", "--timeout", "5",
                           "--bootstrap", ",".join(spec(x) for x in b.addresses))
    assert result.returncode == 0, result.stderr
    peers = {(p["ip"], p["port"]) for p in map(json.loads, result.stdout.splitlines())
             if p["type"] == "peer"}
    assert peers == {("127.0.0.170", 7001), ("::1", 7001)}


async def test_put_get_find_node_and_get_peers_cli_use_both_families(pair, tmp_path):
    """Every lookup command with one IPv4 and one IPv6 bootstrap address runs on both
    families and merges them: put stores on nodes of both, get finds what was put,
    find-node lists nodes of both."""
    a, b = pair
    for family in ("ipv4", "ipv6"):  # B knows A on both families: four nodes to find
        await b.ping(a.address_of(family))
    bootstrap = ",".join(spec(x) for x in b.addresses)
    both = {"127.0.0.170", "127.0.0.171", "::1"}

    def ips_of(nodes: list[str]) -> set[str]:  # NodeInfo strings: ID@IP:PORT, ID@[IP]:PORT
        return {node.split("@", 1)[1].rsplit(":", 1)[0].strip("[]") for node in nodes}

    async def cli(*args: str) -> dict | list:
        result = await run_cli(*args, "--json", "--timeout", "5", "--bootstrap", bootstrap)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        return lines[0] if len(lines) == 1 else lines

    put = await cli("put", "dual-stack value")
    assert ips_of(put["stored_on"]) == both, put
    got = await cli("get", put["target"])
    assert got["found"] and got["value"] == "dual-stack value", got  # ends at the first copy

    key = tmp_path / "key.hex"
    put = await cli("put", "mutable value", "--key", str(key), "--salt", "s1")
    assert ips_of(put["stored_on"]) == both and put["seq"] == 1, put  # 1 for a new item
    got = await cli("get", put["public_key"], "--salt", "s1")
    assert got["found"] and got["value"] == "mutable value" and got["seq"] == 1, got
    assert got["copies"] >= 2, got  # a mutable get asks every family's closest nodes
    assert got["target"] == put["target"]

    found = await cli("find-node", "00" * 20)
    assert {node["ip"] for node in found} == both, found
    addresses = {(node["ip"], node["port"]) for node in found}
    assert {a.address_of("ipv4"), b.address_of("ipv4")} <= addresses, found
    # A and B share ::1: the command's table keeps one node per IP, and (mldht.compact.
    # is_contactable: ipaddress calls ::1 reserved) a ::1 node listed in a reply is not
    # queried. So at least one of the two IPv6 nodes, not necessarily both.
    assert addresses & {a.address_of("ipv6"), b.address_of("ipv6")}, found

    info_hash = InfoHash(b"\x44" * 20)
    announced = await cli("announce", info_hash.hex(), "--port", "7002")
    assert ips_of(announced["announced_to"]) == both, announced
    lines = await cli("get-peers", info_hash.hex())
    peers = {(p["ip"], p["port"]) for p in lines if p["type"] == "peer"}
    assert {ip for ip, _ in peers} >= {"::1"} and len(peers) == 2, lines


async def test_serve_with_two_binds_rejects_two_of_one_family():
    with pytest.raises(InvalidInput, match="one per address family"):
        Node(["127.0.0.1:0", "127.0.0.2:0"])
    result = await run_cli("get-peers", "aa" * 20, "--bind", "127.0.0.1:0", "--bind",
                           "127.0.0.2:0", "--bootstrap", "127.0.0.1:9")
    assert result.returncode == 2 and "one per address family" in result.stderr


async def test_serve_listens_on_both_families():
    port4 = free_udp_port("127.0.0.172")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        port6 = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mldht", "serve", "--bind", f"127.0.0.172:{port4}",
        "--bind", f"[::1]:{port6}", "--bootstrap", "127.0.0.1:9", env=guarded_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with Node(("127.0.0.173", 0), bootstrap=[]) as v4, \
                Node(("::1", 0), bootstrap=[]) as v6:
            ids = []
            for node, address in ((v4, ("127.0.0.172", port4)), (v6, ("::1", port6))):
                for _ in range(50):  # up to ~5 s for serve to start
                    try:
                        ids.append(await node.ping(address, timeout=0.1))
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
            assert len(ids) == 2 and ids[0] != ids[1]
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr
    assert stderr.decode().count("serving as") == 2


def test_merge_summaries_keeps_hops_first_peer_and_resends_and_sorts_closest():
    from mldht.engine import LookupSummary, merge_summaries

    target = NodeId(b"\x01" * 20)
    near4 = NodeInfo(NodeId(b"\x01" * 19 + b"\x03"), "127.0.0.1", 1)
    far4 = NodeInfo(NodeId(b"\x81" + b"\x01" * 19), "127.0.0.2", 1)
    mid6 = NodeInfo(NodeId(b"\x01" * 10 + b"\xff" * 10), "::1", 1)
    v4 = LookupSummary(target=target, elapsed=2.0, time_to_first_peer=0.9, queried=10,
                       answered=8, timed_out=2, peers=3, closest=[near4, far4], hops=2,
                       max_hop=3, first_peer_hop=2, resent=1)
    v6 = LookupSummary(target=target, elapsed=1.5, time_to_first_peer=0.4, queried=6,
                       answered=6, timed_out=0, peers=1, closest=[mid6], hops=1, max_hop=2,
                       first_peer_hop=1, resent=2)
    merged = merge_summaries([v4, v6])
    assert (merged.elapsed, merged.time_to_first_peer, merged.queried, merged.resent) == (2.0, 0.4, 16, 3)
    assert (merged.hops, merged.max_hop, merged.first_peer_hop) == (1, 3, 1)
    assert merged.closest == [near4, mid6, far4]  # one list, nearest first
