"""The `mldht` command line against thirty in-process nodes on 127.0.0.10 ... 127.0.0.39.

Each command runs as a child process (under the network guard) while the event loop keeps
the in-process network answering. Every invocation binds a 127.0.0.x address and gets an
explicit loopback --bootstrap.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket

import pytest

import dhtnet
from dhtnet import DhtNetwork, free_udp_port, run_cli
from mldht import InfoHash, NodeConfig, NodeId

pytestmark = [pytest.mark.network, pytest.mark.asyncio(loop_scope="module")]
net = dhtnet.net  # the module's 30-node network (a fixture)

SUMMARY = re.compile(r"(\d+) distinct peers? in [\d.]+ s \((?:no peer|first after [\d.]+ s)\); "
                     r"nodes queried (\d+), answered (\d+), no answer (\d+)"
                     r"(?: \(\d+ still in flight at the end\))?$")
NODE_LINE = re.compile(r"([0-9a-f]{40}) (127\.0\.0\.\d+):(\d+)$")




@pytest.fixture
def silent_port():
    """A loopback UDP address that is bound (so no ICMP error comes back) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.205", 0))
    try:
        yield f"127.0.0.205:{sock.getsockname()[1]}"
    finally:
        sock.close()


def new_info_hash(seed: int) -> InfoHash:
    return InfoHash(random.Random(seed).getrandbits(160).to_bytes(20, "big"))


async def announced(net: DhtNetwork, seed: int, port: int, by: int = 3) -> InfoHash:
    info_hash = new_info_hash(seed)
    result = await net.nodes[by].announce(info_hash, port, timeout=10)
    assert result.announced_to
    return info_hash


# --- get-peers ---------------------------------------------------------------------------


async def test_get_peers_finds_a_peer_announced_by_the_library(net: DhtNetwork):
    info_hash = await announced(net, 100, 7001)
    result = await run_cli("get-peers", info_hash.hex(), "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    print(f"\nmldht get-peers took {result.elapsed:.2f} s (wall clock, process start to exit)")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == ["127.0.0.13:7001"], result
    summary_lines = [line for line in result.stderr.splitlines() if SUMMARY.search(line)]
    assert len(summary_lines) == 1, result.stderr
    peers, queried, answered, timed_out = map(int, SUMMARY.search(summary_lines[0]).groups())
    assert peers == 1 and answered > 0 and queried >= answered
    assert timed_out == 0
    assert result.elapsed < 20


async def test_get_peers_json(net: DhtNetwork):
    info_hash = await announced(net, 101, 7002)
    result = await run_cli("get-peers", info_hash.hex(), "--json", "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"type": "peer", "ip": "127.0.0.13", "port": 7002}
    assert len(lines) == 2
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert summary["target"] == info_hash.hex()
    assert summary["peers"] == 1
    assert summary["answered"] > 0 and summary["queried"] >= summary["answered"]
    assert summary["timed_out"] == 0
    assert summary["time_to_first_peer"] is not None
    assert 0 <= summary["time_to_first_peer"] <= summary["elapsed"]


async def test_get_peers_without_peers_exits_1(net: DhtNetwork):
    result = await run_cli("get-peers", new_info_hash(102).hex(), "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 1, result
    assert result.stdout == ""
    match = SUMMARY.search(result.stderr.strip().splitlines()[-1])
    assert match and match.group(1) == "0" and int(match.group(3)) > 0, result.stderr


async def test_get_peers_with_a_magnet_link(net: DhtNetwork):
    info_hash = await announced(net, 103, 7003)
    magnet = f"magnet:?xt=urn:btih:{info_hash.hex().upper()}&dn=some+name&tr=udp%3A%2F%2F127.0.0.1%3A1"
    result = await run_cli("get-peers", magnet, "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == ["127.0.0.13:7003"]


@pytest.mark.parametrize("infohash", ["xyz", "0" * 39, "0" * 41, "g" * 40, "magnet:?dn=no+hash"])
async def test_bad_infohash_exits_2_with_one_line(net: DhtNetwork, infohash):
    result = await run_cli("get-peers", infohash, "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.200:0", "--timeout", "5")
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("mldht: error:"), result.stderr


@pytest.mark.parametrize("bootstrap", ["127.0.0.10", "127.0.0.10:", "127.0.0.10:port",
                                       "127.0.0.10:70000", "127.0.0.10:0", "::1:6881"])
async def test_bad_bootstrap_exits_2(net: DhtNetwork, bootstrap):
    result = await run_cli("get-peers", new_info_hash(104).hex(), "--bootstrap", bootstrap,
                           "--bind", "127.0.0.200:0", "--timeout", "5")
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "error" in result.stderr


# --- announce ----------------------------------------------------------------------------


async def test_announce_with_port(net: DhtNetwork):
    info_hash = new_info_hash(105)
    result = await run_cli("announce", info_hash.hex(), "--port", "5555",
                           "--bootstrap", net.bootstrap_spec, "--bind", "127.0.0.201:0",
                           "--timeout", "10")
    assert result.returncode == 0, result
    accepted = [line for line in result.stdout.splitlines() if line.startswith("announced to ")]
    assert 8 <= len(accepted) <= NodeConfig().store_nodes, result.stdout
    peers = await net.nodes[8].get_peers(info_hash, timeout=10).collect()
    assert peers == [("127.0.0.201", 5555)], peers


async def test_announce_with_implied_port(net: DhtNetwork):
    info_hash = new_info_hash(106)
    port = free_udp_port("127.0.0.202")
    result = await run_cli("announce", info_hash.hex(), "--implied-port",
                           "--bootstrap", net.bootstrap_spec, "--bind", f"127.0.0.202:{port}",
                           "--timeout", "10", "--json")
    assert result.returncode == 0, result
    report = json.loads(result.stdout)
    assert 8 <= len(report["announced_to"]) <= NodeConfig().store_nodes, report
    assert report["failed"] == 0, report
    peers = await net.nodes[9].get_peers(info_hash, timeout=10).collect()
    assert peers == [("127.0.0.202", port)], peers


async def test_announce_bad_port_exits_2(net: DhtNetwork):
    result = await run_cli("announce", new_info_hash(107).hex(), "--port", "70000",
                           "--bootstrap", net.bootstrap_spec, "--bind", "127.0.0.201:0")
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1, result.stderr


# --- ping --------------------------------------------------------------------------------


async def test_ping_prints_the_node_id(net: DhtNetwork):
    result = await run_cli("ping", net.bootstrap_spec, "--bind", "127.0.0.203:0", "--timeout", "5")
    assert result.returncode == 0, result
    fields = result.stdout.split()
    assert fields[0] == net.first.node_id.hex()
    assert fields[1] == net.bootstrap_spec

    result = await run_cli("ping", net.bootstrap_spec, "--bind", "127.0.0.203:0", "--json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["id"] == net.first.node_id.hex()


async def test_ping_of_a_silent_port_exits_1(silent_port):
    result = await run_cli("ping", silent_port, "--bind", "127.0.0.203:0", "--timeout", "1",
                           timeout=15)
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.strip(), "no message on stderr"
    assert result.elapsed < 10


# --- find-node ---------------------------------------------------------------------------


async def test_find_node_prints_the_closest_nodes(net: DhtNetwork):
    target = NodeId(random.Random(108).getrandbits(160).to_bytes(20, "big"))
    result = await run_cli("find-node", target.hex(), "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.204:0", "--timeout", "10")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    matches = [NODE_LINE.match(line) for line in lines]
    assert all(matches), lines
    addresses = {node.node_id.hex(): node.address for node in net.nodes}
    for match in matches:
        assert addresses[match.group(1)] == (match.group(2), int(match.group(3)))
    # A read-only lookup from outside the network: the true 8 closest of all 30, nearest first.
    assert [match.group(1) for match in matches] == [i.hex() for i in net.true_closest(target, 8)]


async def test_find_node_bad_id_exits_2(net: DhtNetwork):
    result = await run_cli("find-node", "abc", "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.204:0")
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1, result.stderr


# --- several bootstrap nodes -------------------------------------------------------------


async def test_comma_separated_bootstrap_list(net: DhtNetwork, silent_port):
    # The first entry never answers: the second must be used.
    info_hash = await announced(net, 109, 7004, by=5)
    result = await run_cli("get-peers", info_hash.hex(),
                           "--bootstrap", f"{silent_port}, {net.bootstrap_spec}",
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == ["127.0.0.15:7004"]


async def test_repeated_bootstrap_flags(net: DhtNetwork, silent_port):
    info_hash = await announced(net, 110, 7005, by=6)
    other = net.nodes[21].address
    result = await run_cli("get-peers", info_hash.hex(), "--bootstrap", silent_port,
                           "--bootstrap", f"{other[0]}:{other[1]}",
                           "--bind", "127.0.0.200:0", "--timeout", "10")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == ["127.0.0.16:7005"]


LOOKUPS = {
    "get-peers": ["get-peers", "aa" * 20],
    "announce": ["announce", "aa" * 20, "--port", "6881"],
    "put": ["put", "hello"],
    "get": ["get", "bb" * 20],
    "find-node": ["find-node", "cc" * 20],
}


@pytest.mark.parametrize("command", sorted(LOOKUPS))
async def test_only_silent_bootstrap_exits_3_with_one_line(silent_port, command):
    """Nobody answered the join: exit 3 and the join failure as the one line on stderr."""
    result = await run_cli(*LOOKUPS[command], "--bootstrap", silent_port,
                           "--bind", "127.0.0.200:0", "--timeout", "2", timeout=20)
    assert result.returncode == 3, result
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"mldht: error: could not join the DHT: no answer from {silent_port}"], result.stderr
    assert result.elapsed < 15


async def test_closed_port_bootstrap_exits_3():
    result = await run_cli("get-peers", "aa" * 20, "--bootstrap", "127.0.0.1:9",
                           "--bind", "127.0.0.200:0", "--timeout", "2", timeout=20)
    assert result.returncode == 3, result
    assert result.stderr.splitlines() == [
        "mldht: error: could not join the DHT: no answer from 127.0.0.1:9"], result.stderr


def _unresolvable(calls: list):
    async def getaddrinfo(host, port, *args, **kwargs):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return getaddrinfo


@pytest.mark.parametrize("bootstrap", [["--bootstrap", "router.invalid:6881,dht.invalid:25401"],
                                       []])
async def test_unresolvable_routers_warn_once_each_and_exit_3(monkeypatch, capsys, caplog,
                                                             bootstrap):
    """In process, the loop's getaddrinfo failing as DNS would (no name is really resolved):
    one warning per router name, then the join failure as one line and exit 3. Without
    --bootstrap the default routers are the names."""
    from mldht import DEFAULT_BOOTSTRAP, parse_host_port
    from mldht.cli import EXIT_JOIN_FAILED, build_parser, run_command

    calls: list = []
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", _unresolvable(calls))
    args = build_parser().parse_args(["find-node", "cc" * 20, *bootstrap,
                                      "--bind", "127.0.0.200:0", "--timeout", "2"])
    with caplog.at_level("WARNING", logger="mldht"):
        code = await run_command(args)
    assert code == EXIT_JOIN_FAILED == 3
    names = (["router.invalid", "dht.invalid"] if bootstrap
             else [parse_host_port(spec)[0] for spec in DEFAULT_BOOTSTRAP])
    assert calls == names  # each name asked once, nothing else
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sorted(warnings) == sorted(f"cannot resolve bootstrap router {name}: Name or service "
                                      "not known" for name in names), warnings
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mldht: error: could not join the DHT: "), err
    for name in names:
        assert f"cannot resolve {name}: Name or service not known" in err[0]


@pytest.mark.parametrize("bootstrap", ["", " ", ",", "127.0.0.1:9,", ",127.0.0.1:9",
                                       "127.0.0.1:9,,127.0.0.1:8", "127.0.0.1:9, ,127.0.0.1:8"])
async def test_empty_bootstrap_entries_exit_2(bootstrap):
    result = await run_cli("get-peers", "aa" * 20, "--bootstrap", bootstrap,
                           "--bind", "127.0.0.200:0", "--timeout", "2")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"mldht: error: --bootstrap {bootstrap!r}: empty entry (give HOST:PORT, several "
        "separated by commas)"], result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command, timeout", [
    *((["get-peers", "aa" * 20, "--bootstrap", "127.0.0.1:9"], value)
      for value in ("0", "-1", "-0.5", "nan", "inf", "soon", "")),
    (["find-node", "cc" * 20, "--bootstrap", "127.0.0.1:9"], "0"),
    (["put", "x", "--bootstrap", "127.0.0.1:9"], "-2"),
    (["ping", "127.0.0.1:9"], "0"),
])
async def test_timeout_must_be_a_positive_number(command, timeout):
    result = await run_cli(*command, "--timeout", timeout)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"mldht: error: argument --timeout: {timeout!r} is not a positive number of seconds"], \
        result.stderr


async def test_command_line_nodes_stay_out_of_routing_tables(net: DhtNetwork):
    """The one-shot commands run read-only nodes (BEP 43): nobody may route to them."""
    result = await run_cli("find-node", NodeId(bytes(20)).hex(), "--bootstrap", net.bootstrap_spec,
                           "--bind", "127.0.0.206:0", "--timeout", "10")
    assert result.returncode == 0, result
    network_ips = {node.address[0] for node in net.nodes}
    for node in net.nodes:
        strangers = [entry.ip for entry in node.routing_table if entry.ip not in network_ips]
        assert strangers == [], (node.address, strangers)


async def test_blocklist_option_reads_the_file_and_reports_bad_lines(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("10.0.0.0/8\nnot-a-range\n")
    process = await run_cli("get-peers", "aa" * 20, "--bootstrap", "127.0.0.1:9",
                            "--blocklist", str(bad))
    assert process.returncode == 2
    assert process.stderr.strip() == f"mldht: error: {bad}:2: not an IP range: 'not-a-range'"


async def test_blocklisted_bootstrap_node_is_never_contacted(net: DhtNetwork, tmp_path):
    blocklist = tmp_path / "block.txt"
    entry_ip = net.first.address[0]
    blocklist.write_text(f"{entry_ip}/32\n")
    from mldht.engine import QueryReceived

    seen = []  # the CLI sends from 127.0.0.1; the network's nodes are 127.0.0.10 and up
    remove = net.first.add_observer(lambda event: isinstance(event, QueryReceived)
                                    and event.source[0] == "127.0.0.1" and seen.append(event))
    try:
        result = await run_cli("get-peers", "aa" * 20, "--bootstrap", net.bootstrap_spec,
                               "--blocklist", str(blocklist), "--timeout", "3", "--json")
    finally:
        remove()
    # Nothing reachable: the DHT could not be joined, and the one line says why.
    assert result.returncode == 3, result.stderr
    assert "every bootstrap node is on the blocklist" in result.stderr, result.stderr
    assert result.stdout == "" and seen == []
