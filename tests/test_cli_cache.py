"""One-shot commands look up at once (no join first) and keep a node cache between runs.

Against the 30 in-process nodes of `dhtnet` (127.0.0.10 ... 127.0.0.39); each command is a
child process with its own XDG_CACHE_HOME (the autouse `own_cache_folder` fixture)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from pathlib import Path

import pytest

import dhtnet
from dhtnet import DhtNetwork, run_cli
from mldht import InfoHash, JoinFailed, Node, NodeId

pytestmark = [pytest.mark.network, pytest.mark.asyncio(loop_scope="module")]
net = dhtnet.net


@pytest.fixture
def silent_port():
    """Bound (no ICMP error comes back) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.206", 0))
    try:
        yield sock.getsockname()
    finally:
        sock.close()


async def announced(net: DhtNetwork, seed: int, port: int) -> InfoHash:
    info_hash = InfoHash(random.Random(seed).getrandbits(160).to_bytes(20, "big"))
    result = await net.nodes[5].announce(info_hash, port, timeout=10)
    assert result.announced_to
    return info_hash


def cache_nodes(path: Path) -> list[dict]:
    document = json.loads(path.read_text())
    assert document["format"] == 1
    return document["nodes"]


async def test_the_cache_alone_is_enough_to_find_peers_next_time(net, tmp_path, silent_port):
    info_hash = await announced(net, 300, 7300)
    cache = tmp_path / "nodes.json"
    first = await run_cli("get-peers", info_hash.hex(), "--bootstrap", net.bootstrap_spec,
                          "--cache", str(cache), "--bind", "127.0.0.200:0", "--timeout", "10")
    assert first.returncode == 0, first
    saved = cache_nodes(cache)
    assert saved and {node["ip"] for node in saved} <= {n.address[0] for n in net.nodes}
    dead = f"{silent_port[0]}:{silent_port[1]}"
    # The bootstrap node never answers now: only the cache can lead to the peer...
    second = await run_cli("get-peers", info_hash.hex(), "--bootstrap", dead,
                           "--cache", str(cache), "--bind", "127.0.0.200:0", "--timeout", "10")
    assert second.returncode == 0, second
    assert second.stdout.splitlines() == ["127.0.0.15:7300"]
    # ...and without it the same command cannot reach the DHT.
    third = await run_cli("get-peers", info_hash.hex(), "--bootstrap", dead, "--no-cache",
                          "--bind", "127.0.0.200:0", "--timeout", "3")
    assert third.returncode == 3, third
    assert third.stderr.splitlines() == [
        f"mldht: error: could not join the DHT: no answer from {dead}"]


async def test_default_cache_lives_in_the_user_cache_folder_one_file_per_bootstrap_set(
        net, silent_port):
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "mldht"
    result = await run_cli("find-node", "ab" * 20, "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    files = sorted(folder.glob("nodes*.json"))
    assert len(files) == 1 and files[0].name.startswith("nodes-"), files
    assert cache_nodes(files[0])
    both = f"{net.bootstrap_spec},{silent_port[0]}:{silent_port[1]}"
    result = await run_cli("find-node", "ab" * 20, "--bootstrap", both,
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    assert len(list(folder.glob("nodes*.json"))) == 2


async def test_no_cache_writes_nothing(net):
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "mldht"
    result = await run_cli("find-node", "ab" * 20, "--bootstrap", net.bootstrap_spec,
                           "--no-cache", "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    assert not folder.exists() or not list(folder.iterdir())


@pytest.mark.parametrize("content, why", [
    ("{not json", "not JSON"),
    ('{"format": 7, "nodes": []}', "not an mldht state file"),
    ('["a list"]', "not a JSON object"),
])
async def test_a_damaged_or_foreign_cache_is_set_aside_with_one_warning(net, tmp_path, content,
                                                                        why):
    cache = tmp_path / "nodes.json"
    cache.write_text(content)
    result = await run_cli("find-node", "ab" * 20, "--bootstrap", net.bootstrap_spec,
                           "--cache", str(cache), "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and why in warnings[0], result.stderr
    aside = list(tmp_path.glob("nodes.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == content
    assert cache_nodes(cache), "a new cache replaces the damaged one"


async def test_a_cache_path_that_cannot_be_used_is_a_warning_not_an_error(net, tmp_path):
    result = await run_cli("find-node", "ab" * 20, "--bootstrap", net.bootstrap_spec,
                           "--cache", str(tmp_path), "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "no node cache" in warnings[0] and "directory" in warnings[0]


async def test_two_commands_at_once_leave_a_whole_cache(net, tmp_path):
    cache = tmp_path / "nodes.json"
    results = await asyncio.gather(*(
        run_cli("find-node", f"{i:02x}" * 20, "--bootstrap", net.bootstrap_spec,
                "--cache", str(cache), "--bind", f"127.0.0.{200 + i}:0", "--timeout", "10")
        for i in range(4)))
    assert all(result.returncode == 0 for result in results), results
    assert cache_nodes(cache)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*damaged*"))


# --- the library: lookups on a node that has not joined ---------------------------------


async def test_get_peers_on_a_started_node_needs_no_bootstrap_call(net):
    info_hash = await announced(net, 301, 7301)
    async with Node(("127.0.0.201", 0), bootstrap=[net.bootstrap_spec], read_only=True) as node:
        lookup = node.get_peers(info_hash, timeout=10)
        peers = [peer async for peer in lookup]
        assert peers == [("127.0.0.15", 7301)]
        node.check_reached(lookup.summary)


async def test_saved_nodes_seed_lookups_and_the_silent_ones_are_not_saved_again(
        net, tmp_path, silent_port):
    info_hash = await announced(net, 302, 7302)
    state = tmp_path / "state.json"
    live = [{"id": n.node_id.hex(), "ip": n.address[0], "port": n.address[1]}
            for n in net.nodes[:12]]
    # The silent one has the infohash as its id: the closest candidate, asked first.
    silent = {"id": info_hash.hex(), "ip": silent_port[0], "port": silent_port[1]}
    state.write_text(json.dumps({"format": 1, "node_id": "11" * 20, "nodes": [silent] + live}))
    node = Node(("127.0.0.202", 0), bootstrap=[], read_only=True, state_file=str(state))
    async with node:
        lookup = node.get_peers(info_hash, timeout=10)
        assert [peer async for peer in lookup] == [("127.0.0.15", 7302)]
    kept = json.loads(state.read_text())
    assert kept["node_id"] == "11" * 20
    addresses = {(n["ip"], n["port"]) for n in kept["nodes"]}
    assert (silent["ip"], silent["port"]) not in addresses
    assert {(n["ip"], n["port"]) for n in live} <= addresses, "not asked, still kept"


async def test_check_reached_tells_an_unreachable_dht_from_an_empty_answer(silent_port):
    dead = f"{silent_port[0]}:{silent_port[1]}"
    async with Node(("127.0.0.203", 0), bootstrap=[dead], read_only=True) as node:
        summary = await node.find_node_lookup(NodeId(b"\x01" * 20), timeout=4)
        assert summary.answered == 0
        with pytest.raises(JoinFailed, match=f"could not join the DHT: no answer from {dead}"):
            node.check_reached(summary)
