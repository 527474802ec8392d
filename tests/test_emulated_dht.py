"""The emulated DHT (tools/bench/emulated_dht.py): its network is deterministic and looks
like the real one (routing tables full near a node's id and sparse far from it, addresses
shared as configured, BEP 42 ids where clients make them, each client's BEP 51 behaviour,
libtorrent's per-IP ban), it answers over real UDP from the queried address, writes its
truth, and a real crawl of a small one finds what the truth says is there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netguard import guarded_env

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"
sys.path.insert(0, str(BENCH))

from emulated.model import (  # noqa: E402
    CLIENTS, EmulatedNetwork, EmulationConfig, bep42_prefix, crc32c_rows,
)
from emulated.server import EmulatorServer  # noqa: E402

from mldht.bep42 import crc_for  # noqa: E402
from mldht.krpc import decode_bencode, encode_bencode  # noqa: E402


@pytest.fixture(scope="module")
def network():
    return EmulatedNetwork(EmulationConfig(nodes=20_000, seed=3, sybil_share=0.05,
                                           sybil_ids=100))


def _query(method: bytes, **args) -> bytes:
    return encode_bencode({b"t": b"aa", b"y": b"q", b"q": method,
                           b"a": {b"id": b"\x01" * 20,
                                  **{key.encode(): value for key, value in args.items()}}})


def test_the_same_seed_builds_the_same_network():
    a = EmulatedNetwork(EmulationConfig(nodes=3000, seed=9))
    b = EmulatedNetwork(EmulationConfig(nodes=3000, seed=9))
    c = EmulatedNetwork(EmulationConfig(nodes=3000, seed=10))
    assert a.ids == b.ids and a.addresses == b.addresses and a.population == b.population
    assert a.ids != c.ids


def test_crc32c_and_bep42_ids_match_the_library(network):
    import crc32c
    rows = bytes(range(200))
    import numpy as np
    table = np.frombuffer(rows, dtype=np.uint8).reshape(40, 5)
    assert [int(x) for x in crc32c_rows(table)] == [crc32c.crc32c(bytes(r)) for r in table]
    assert int(bep42_prefix(np.array([0x7F010203], dtype=np.uint32), np.array([5]))[0]) == \
        crc_for("127.1.2.3", 5)
    loopback = EmulatedNetwork(EmulationConfig(nodes=20_000, seed=3, bep42_from="loopback"))
    for net, address in ((loopback, lambda ip: ip), (network, lambda ip: _public(net, ip))):
        secure = [r for r in range(0, net.population, 7) if net.secure[r]]
        assert len(secure) > 100
        for rank in secure[:300]:
            node_id = net.id_of(rank)
            ip, _ = net.address_of(rank)
            assert int.from_bytes(node_id[:3], "big") >> 3 == \
                crc_for(address(ip), node_id[-1] & 7) >> 11


def _public(network, ip: str) -> str:
    """The public address the emulator made a node's BEP 42 id for."""
    import ipaddress

    import numpy as np
    from emulated.model import public_ip
    value = int(public_ip(np.array([int(ipaddress.IPv4Address(ip))], dtype=np.uint32),
                          network._salt)[0])
    return str(ipaddress.IPv4Address(value))


def test_ids_spread_evenly_over_narrow_zones():
    """BEP 42 ids made for public addresses fill every 13-bit prefix about equally (made for
    127.x.y.z addresses they leave half of them without any): zone estimates rely on it."""
    import numpy as np
    for bep42_from, evenly in (("public", True), ("loopback", False)):
        net = EmulatedNetwork(EmulationConfig(nodes=400_000, seed=2, bep42_from=bep42_from))
        counts = np.bincount((net.keys >> np.uint64(64 - 13)).astype(np.int64),
                             minlength=1 << 13)
        spread = counts.std() / counts.mean() ** 0.5  # 1 for a Poisson scatter
        assert (spread < 1.5) == evenly, (bep42_from, spread)


def test_every_address_leads_back_to_its_node(network):
    seen = set()
    for rank in range(0, network.population, 3):
        ip, port = network.address_of(rank)
        a, b, c, d = (int(x) for x in ip.split("."))
        assert network.rank_at(a << 24 | b << 16 | c << 8 | d, port) == rank
        assert ip.startswith("127.") and not ip.startswith("127.0.")
        seen.add((ip, port))
    assert network.rank_at(0x7F000001, 20000) is None  # the crawler's range holds nobody
    # Shared IPs (NAT) and Sybil IPs hold several nodes on different ports.
    sybil_ip, _ = network.address_of(int(network.rank_of[0]))
    sybil_ports = {network.address_of(int(network.rank_of[slot]))[1]
                   for slot in range(network.sybil_ids)}
    assert len(sybil_ports) == network.sybil_ids and network.sybil_ips >= 1
    assert network.address_of(int(network.rank_of[network.sybil_ids - 1]))[0] == sybil_ip


def test_a_node_lists_what_its_own_table_holds(network):
    keys = [int(k) for k in network.keys]
    for rank in range(50, network.population, 997):
        own = keys[rank]
        # Next to its own id: its closest neighbours, which it knows completely.
        near = network.closest(rank, own, 0.0)
        assert len(near) == 8 and rank not in near and len(set(near)) == 8
        # Its deepest buckets (8 nodes or fewer each) are full: every node there is listed.
        around = [r for r in range(max(0, rank - 40), min(len(keys), rank + 40))
                  if network._listable(r) and r != rank]
        depth = max(64 - (keys[r] ^ own).bit_length() for r in around)
        deepest = [r for r in around if 64 - (keys[r] ^ own).bit_length() == depth]
        assert set(deepest) <= set(near)
        assert [keys[r] ^ own for r in near] == sorted(keys[r] ^ own for r in near)
        # A far target: 8 nodes of the target's subtree (its bucket there), sorted by
        # distance, none of them necessarily the closest to it.
        far = own ^ (1 << 63) ^ 12345
        listed = network.closest(rank, far, 0.0)
        assert len(listed) == 8
        assert all((keys[r] ^ far) >> 63 == 0 for r in listed)  # in the target's half
        assert [keys[r] ^ far for r in listed] == sorted(keys[r] ^ far for r in listed)


def test_each_client_answers_as_it_does_on_the_real_dht(network):
    behaviour = {c.code: c.bep51 for c in CLIENTS}
    seen = {}
    source = (bytes([127, 0, 0, 1]), 4000)
    for rank in range(network.population):
        flags = network.flags[rank]
        if flags & (1 | 2 | 4 | 16) or not network.online(rank):
            continue
        name = network.client_names()[network.client[rank]]
        if name in seen:
            continue
        reply, outcome, listed = network.answer(
            _query(b"sample_infohashes", target=b"\x00" * 20), source, rank, 0.0)
        seen[name] = outcome
        expected = behaviour[name]
        if expected == "drop":
            assert reply is None and outcome == "dropped"
        elif expected == "refuse":
            assert decode_bencode(reply)[b"e"][0] == 204
        else:
            body = decode_bencode(reply)[b"r"]
            assert len(body[b"nodes"]) == 8 * 26
            assert (b"samples" in body) == (expected == "answer")
            if expected == "answer":
                assert body[b"interval"] == 21600 and body[b"num"] >= 0
        if len(seen) == len(CLIENTS):
            break
    assert len(seen) == len(CLIENTS)
    # The reply names the querier's address (BEP 42) and comes with the client's `v`.
    rank = next(r for r in range(network.population) if not network.flags[r] & 23
                and network.online(r))
    reply, outcome, _ = network.answer(_query(b"find_node", target=b"\x05" * 20), source,
                                       rank, 0.0)
    message = decode_bencode(reply)
    assert outcome == "answered" and message[b"ip"] == bytes([127, 0, 0, 1]) + (4000).to_bytes(2, "big")
    assert message[b"r"][b"id"] == network.id_of(rank)
    # A Sybil answers find_node and ignores get_peers; a silent node ignores everything.
    sybil = int(network.rank_of[0])
    assert network.answer(_query(b"find_node", target=b"\x05" * 20), source, sybil, 0.0)[1] \
        == "answered"
    assert network.answer(_query(b"get_peers", info_hash=b"\x05" * 20), source, sybil,
                          0.0)[1] == "dropped"
    silent = next(r for r in range(network.population)
                  if network.flags[r] & 1 and network.online(r))
    assert network.answer(_query(b"ping"), source, silent, 0.0) == (None, "silent", [])
    assert network.answer(b"not bencode", source, rank, 0.0)[1] == "malformed"


def test_the_per_ip_limit_is_libtorrents_dos_blocker():
    server = EmulatorServer(EmulatedNetwork(EmulationConfig.plain(nodes=100)))
    host, source = 7, b"\x7f\x00\x00\x01"
    # 49 datagrams within 10 s pass, the 50th bans the source for 5 minutes.
    assert not any(server._limited(host, source, 1.0 + i * 0.1) for i in range(49))
    assert server._limited(host, source, 6.0)
    assert server._limited(host, source, 200.0)  # still banned
    assert not server._limited(host, source, 307.0)  # the ban ran out: a fresh window
    # A source that sends slowly is never banned; another host keeps its own count.
    assert not any(server._limited(host + 1, source, i * 0.5) for i in range(200))


def test_the_emulator_answers_over_udp_from_the_queried_address_and_writes_its_truth(tmp_path):
    truth = tmp_path / "truth.json"
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "emulated_dht.py"), "--nodes", "2000", "--seed", "5",
         "--duration", "60", "--truth", str(truth), "--truth-every", "1", "--stdin-stop",
         "--bind-port", "23000", "--loss", "0", "--rtt-median", "0.01"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=guarded_env())
    try:
        line = process.stdout.readline().decode()
        assert line.startswith("ready 127."), process.stderr.read().decode()
        network = EmulatedNetwork(EmulationConfig(nodes=2000, seed=5, base_port=23000,
                                                  loss=0.0, rtt_median=0.01))
        answering = [r for r in range(network.population)
                     if not network.flags[r] & (1 | 2 | 16) and network.online(r)][:20]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            for rank in answering:
                address = network.address_of(rank)
                sock.sendto(_query(b"find_node", target=b"\x07" * 20), address)
                reply, source = sock.recvfrom(2048)
                assert source == address  # from the very address queried (IP_PKTINFO)
                assert decode_bencode(reply)[b"r"][b"id"] == network.id_of(rank)
            # An impolite querier: 60 datagrams to one node within a second. libtorrent's
            # limit lets 49 through and drops the rest for 5 minutes (counted).
            rank = answering[0]
            address = network.address_of(rank)
            for _ in range(60):
                sock.sendto(_query(b"ping"), address)
            answered = 0
            sock.settimeout(1.0)
            try:
                while True:
                    sock.recvfrom(2048)
                    answered += 1
            except socket.timeout:
                pass
            assert answered == 49 - 1  # one ping of the 50 in the window came before
        deadline = time.monotonic() + 10
        while not truth.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)
        facts = json.loads(truth.read_text())
        for key in ("nodes", "reachable", "reachable_ever", "listed", "zones", "sources"):
            assert key in facts
        assert 0 < facts["reachable"] <= facts["nodes"] <= facts["population"]
        assert facts["listed"] >= facts["nodes"]
        assert facts["sources"]["127.0.0.1"]["received"] >= 80
        assert facts["sources"]["127.0.0.1"]["rate_limited"] == 60 - 48
        assert facts["counts"]["rate_limited"] == 60 - 48
        assert sum(facts["zones"]["received"]) >= 20 and len(facts["zones"]["nodes"]) == 256
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    assert process.returncode == 0


def test_a_crawl_of_a_small_emulated_dht_finds_what_the_truth_says(tmp_path):
    """tools/bench/crawl_emulated.py, small: the real crawler, over UDP, against 3,000
    emulated nodes with the real DHT's silence, loss, delays, churn, shared IPs and
    Sybils; its nodes compared with the truth rebuilt from the seed."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "crawl_emulated.py"), "--nodes", "3000", "--seed", "2",
         "--rate", "1500", "--concurrency", "300", "--limit", "240", "--json",
         "--emulator", "sybil_share=0.02", "--emulator", "sybil_ids=30",
         "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=guarded_env())
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert not facts["timed_out"]
    assert facts["found_of_reachable_throughout"] >= 97.0, facts
    assert facts["queries_per_node"] <= 1.6, facts
    assert facts["outside_the_network"] == 0
    # The Sybil IP's nodes were recorded, a few of them visited, the rest skipped.
    assert facts["outcomes"].get("skipped", 0) > 0
    assert facts["peak_rss_bytes"] > 0 and facts["database_bytes_per_node"] > 0


def test_a_node_never_lists_a_contact_past_its_eviction():
    """With churn, a bucket whose subtree is just over 8 nodes, some of them gone for
    good, holds fewer entries rather than a contact gone longer than `stale_minutes`."""
    import random
    network = EmulatedNetwork(EmulationConfig(nodes=20_000, seed=5))
    now = 100.0
    network.set_time(now)
    listed = network.listed_mask(now)
    rng = random.Random(1)
    keys = network.keys
    checked = 0
    for _ in range(2000):
        rank = rng.randrange(network.population)
        target = int(keys[rank]) ^ rng.getrandbits(rng.randrange(1, 64))
        for entry in network.closest(rank, target, now):
            checked += 1
            assert listed[entry], (rank, entry)
    assert checked > 10_000


def test_a_zone_estimate_of_a_small_emulated_dht_is_close_to_the_truth(tmp_path):
    """tools/bench/estimate_emulated.py, small: `crawler.py estimate` over UDP against
    20,000 emulated nodes (silence, loss, delays, churn, shared IPs, Sybils), its two
    estimates compared with the truth, and its records in the database."""
    import sqlite3
    result = subprocess.run(
        [sys.executable, str(BENCH / "estimate_emulated.py"), "--nodes", "20000",
         "--seeds", "4", "--zones", "8", "--rate", "2000", "--limit", "300", "--json",
         "--estimate-arg=--zone-nodes=300", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=guarded_env())
    assert result.returncode == 0, result.stderr
    run, = json.loads(result.stdout)["runs"]
    for name in ("reachable", "listed"):
        facts = run[name]
        # Within three standard errors (and 1 %): a 1-in-300 miss, not a flaky 1-in-20.
        assert abs(facts["value"] - facts["truth"]) <= \
            3 * facts["standard_error"] + 0.01 * facts["truth"], run
        assert facts["low"] < facts["value"] < facts["high"]
        assert facts["completeness"] > 0.97
    assert 4 <= run["bits"] <= 6 and run["zones"] == 8  # about 12,000 answer: 375 a zone
    # What the answering nodes run, per measurement: the emulator's client mix (libtorrent
    # and µTorrent 40 % each), and BEP 51 among the nodes asked (the crawler asks the
    # clients that may answer: libtorrent 2 and the8472's do, 32 % of all).
    shares = run["shares"]
    assert shares["answered"] > 1000
    top_two = sum(c["share"] for c in shares["clients"][:2])
    assert 0.7 <= top_two <= 0.9, shares
    assert sum(c["share"] for c in shares["clients"]) <= 1.0001
    assert 0.3 <= shares["bep51"] <= 0.8, shares
    assert shares["bep42"] == 1.0  # 127/8 is exempt from BEP 42: every id is valid there
    db = sqlite3.connect(tmp_path / "estimate-4-1.sqlite")
    assert db.execute("SELECT kind, status FROM crawls").fetchall() == [("estimate", "complete")]
    zones = db.execute("SELECT zone, bits, found, answered FROM zones").fetchall()
    assert len(zones) == 8 and all(bits == run["bits"] and found > answered > 0
                                   for _, bits, found, answered in zones)
    names = {row[0] for row in db.execute("SELECT name FROM estimates")}
    assert names == {"zones: nodes that answer", "zones: nodes listed"}
    assert db.execute("SELECT COUNT(*) FROM visits").fetchone()[0] > 1000


def test_the_bootstrap_node_answers_quickly():
    """The router a crawl joins through is never one of the slow tail (1 to 5 s away: a
    join gives up sooner), whatever the seed."""
    for seed in range(1, 9):
        network = EmulatedNetwork(EmulationConfig(nodes=20_000, seed=seed, rtt_tail=0.3))
        rank = network.bootstrap_rank
        assert network.round_trip(rank) <= 0.2 and not network.silent[rank]
        assert not network.gone[rank] and not network.sybil[rank]


def test_a_nodes_state_worked_out_alone_agrees_with_the_whole_networks():
    """What a query sees of one node (online, still listed) is what the truth's masks say
    of it, at any time, with churn and a daily swing."""
    import random
    network = EmulatedNetwork(EmulationConfig(nodes=20_000, seed=6, swing=0.28,
                                              swing_period=1800))
    rng = random.Random(2)
    for now in (0.0, 450.0, 1300.0, 5000.0):
        network.set_time(now)
        online, listed = network.online_mask(now), network.listed_mask(now)
        for rank in rng.sample(range(network.population), 3000):
            assert network.online(rank) == bool(online[rank]), (now, rank)
            assert network._listable(rank) == bool(listed[rank]), (now, rank)


def test_a_swarms_peers_are_on_its_8_closest_answering_nodes_only():
    from emulated.model import swarm_info_hash
    network = EmulatedNetwork(EmulationConfig(nodes=20_000, seed=4, swarms=3, swarm_peers=5,
                                              session_shape=0.0, availability=1.0))
    info_hash = swarm_info_hash(4, 1)
    holders, _values = network.swarms[info_hash]
    key = int.from_bytes(info_hash[:8], "big")
    answering = [r for r in range(network.population) if not network.flags[r] & (1 | 2 | 4 | 16)]
    assert sorted(holders) == sorted(sorted(answering, key=lambda r: network.keys[r] ^ key)[:8])
    nearest_other = min((r for r in answering if r not in holders),
                        key=lambda r: network.keys[r] ^ key)
    query = _query(b"get_peers", info_hash=info_hash)
    for rank in (*holders, nearest_other):
        reply, what, _ = network.answer(query, (bytes([127, 0, 0, 9]), 4000), rank, 0.0)
        assert what == "answered"
        body = decode_bencode(reply)[b"r"]
        assert b"token" in body and b"nodes" in body
        if rank in holders:
            assert len(body[b"values"]) == 5 and all(len(v) == 6 for v in body[b"values"])
        else:
            assert b"values" not in body
    other = _query(b"get_peers", info_hash=swarm_info_hash(4, 7))  # not one of the 3
    assert b"values" not in decode_bencode(network.answer(other, (bytes([127, 0, 0, 9]), 4000),
                                                          next(iter(holders)), 0.0)[0])[b"r"]
