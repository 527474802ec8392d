"""The simulator's adversaries (mldht.sim.sybil): what each Sybil strategy answers, and the
honest nodes without BEP 42 ids (`Scenario.legacy_ids`)."""

from __future__ import annotations

import random

import pytest

from mldht import NodeConfig
from mldht.bep42 import is_secure_id
from mldht.ids import NodeId
from mldht.krpc import decode_message
from mldht.sim import Scenario
from mldht.sim.clock import Scheduler
from mldht.sim.network import AddressPool, VirtualNetwork
from mldht.sim.scenario import Simulation
from mldht.sim.sybil import MADE_UP_PEERS, SybilSwarm


def swarm_of(strategy: str, count: int = 200, honest: int = 3000):
    scheduler = Scheduler()
    network = VirtualNetwork(scheduler, seed=1)
    pool = AddressPool(random.Random(2))
    addresses = [pool.draw() for _ in range(count)]
    swarm = SybilSwarm(network, addresses, random.Random(3), strategy=strategy, honest_nodes=honest)
    replies: list = []
    asker = pool.draw()
    network.attach(asker, lambda data, source: replies.append(decode_message(data)))
    return scheduler, network, swarm, asker, replies


def shared_bits(a: bytes, b: bytes) -> int:
    return 160 - (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_length()


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown Sybil strategy"):
        swarm_of("loud")
    with pytest.raises(ValueError, match="unknown Sybil strategy"):
        Scenario(sybil=0.1, sybil_strategy="loud").validate()


def test_eclipse_sybils_claim_ids_right_next_to_the_target():
    _, _, swarm, _, _ = swarm_of("eclipse")
    target = NodeId(random.Random(4).randbytes(20))
    listed = swarm._listed(target, swarm.addresses[0])
    assert len(listed) == 8 and all(shared_bits(node.id, target) >= 128 for node in listed)
    assert not all(is_secure_id(node.id, node.ip) for node in listed)


def test_plausible_sybils_claim_bep42_ids_no_closer_than_the_network_makes_believable():
    _, _, swarm, _, _ = swarm_of("plausible", count=2000, honest=3_000_000)
    rng = random.Random(5)
    depth = swarm.plausible_bits  # ceil(log2(3,000,000)) + 1 = 23
    assert depth == 23
    closest = []
    for _ in range(50):
        target = NodeId(rng.randbytes(20))
        listed = swarm._listed(target, swarm.addresses[0])
        assert len(listed) == 8
        assert all(is_secure_id(node.id, node.ip) for node in listed)
        # Each claims what it answers with when asked about this target.
        assert all(swarm.claimed_id(target, node.address) == node.id for node in listed)
        assert all(shared_bits(node.id, target) <= depth for node in listed)
        closest.append(max(shared_bits(node.id, target) for node in listed))
    # 2,000 IPs x 8 allowed prefixes: the best shares about log2(16,000) = 14 bits.
    assert 11 <= sum(closest) / len(closest) <= 17, closest


def test_poisoning_sybils_answer_get_peers_with_made_up_peers():
    _, _, swarm, _, _ = swarm_of("poison")
    target = random.Random(6).randbytes(20)
    from mldht.sim.sybil import made_up_peers
    peers = made_up_peers(target, swarm.addresses[0], 7)
    assert len(peers) == MADE_UP_PEERS and len(set(peers)) == MADE_UP_PEERS
    assert peers == made_up_peers(target, swarm.addresses[0], 7)  # deterministic


def test_a_poisoned_network_reports_the_made_up_share():
    # Without the defences (they drop every made-up peer: tests/test_bench_smoke.py).
    config = NodeConfig(max_believed_shared_bits=0, store_nodes=8, widen_peerless_lookups=8)
    scenario = Scenario(nodes=300, lookups=20, seed=3, sybil=0.1, sybil_strategy="poison",
                        lookup_kind="get_peers", bootstrap="seeded", settle=5.0, config=config)
    sim = Simulation(scenario)
    report = sim.run()
    lookups = report["lookups"]["get_peers"]
    assert lookups["peers_returned"] > 0 and 0 < lookups["made_up_peer_share"] <= 1
    assert sim.swarm is not None and sim.swarm.made_up_peers_sent > 0


def test_legacy_nodes_keep_ids_that_are_not_bep42_ids():
    scenario = Scenario(nodes=200, lookups=10, seed=4, legacy_ids=0.3, bootstrap="seeded",
                        settle=5.0, lookup_kind="find_node")
    sim = Simulation(scenario)
    sim.run()
    everyone = sim._everyone
    legacy = [m for m in everyone if m.info.address in sim.legacy_addresses]
    assert 0.2 * len(everyone) <= len(legacy) <= 0.4 * len(everyone)
    assert not any(is_secure_id(m.info.id, m.info.ip) for m in legacy)
    assert all(is_secure_id(m.info.id, m.info.ip) for m in everyone if m not in legacy)
    # They stay so: a legacy node never adopts a BEP 42 id.
    assert all(m.engine.families[0].identity.node_id == m.info.id for m in legacy)


def test_the_report_says_where_announces_and_puts_were_stored():
    """Eclipsing Sybils swallow every store made without the defences; with them, stores
    land on honest nodes, the closest ones among them."""
    before = NodeConfig(max_believed_shared_bits=0, store_nodes=8, widen_peerless_lookups=8)
    placed = {}
    for name, config in (("default", NodeConfig()), ("before", before)):
        scenario = Scenario(nodes=400, lookups=0, seed=6, sybil=0.2, sybil_strategy="eclipse",
                            swarms=6, items=6, bootstrap="seeded", settle=5.0, config=config)
        report = Simulation(scenario).run()
        placed[name] = report
        for kind in ("announces", "puts"):
            assert report[kind]["count"] == 6 and report[kind]["stored_on"]["count"] == 6
    for kind in ("announces", "puts"):
        default, undefended = placed["default"][kind], placed["before"][kind]
        assert default["sybil_share"] == 0.0 and default["missed_true_closest"] == 0.0
        assert default["true_closest_share"] >= 0.9
        assert undefended["sybil_share"] >= 0.75 and undefended["missed_true_closest"] >= 0.5
