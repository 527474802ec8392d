"""Tests of mldht.lookup: the iterative lookup, driven over a simulated in-memory network."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mldht.compact import NodeInfo
from mldht.ids import NodeId, common_prefix_bits, distance
from mldht.engine.lookup import ALPHA, K, RESEND_RANK, SOFT_TIMEOUT, CandidateState, Lookup

HARD_TIMEOUT = 4.0


# --- a deterministic simulated network ---------------------------------------------------------


@dataclass
class SimNode:
    info: NodeInfo
    known: list[NodeInfo] = field(default_factory=list)
    latency: float = 0.1
    fails: bool = False
    """Never answers (the driver reports a hard timeout)."""
    peers: list[tuple[str, int]] = field(default_factory=list)
    """What it answers to get_peers with, as `values`."""

    def closest_known(self, target: bytes, count: int = K) -> list[NodeInfo]:
        return sorted(self.known, key=lambda node: distance(node.id, target))[:count]


class Network:
    """`size` nodes; each knows its 8 closest, a few per prefix length, and a few random ones."""

    def __init__(self, size: int = 200, seed: int = 0, per_level: int = 3, random_links: int = 5,
                 fail_fraction: float = 0.0, slow_fraction: float = 0.0) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.nodes: dict[tuple[str, int], SimNode] = {}
        infos = [NodeInfo(NodeId.random(rng), f"10.{n // 256}.{n % 256}.1", 6881) for n in range(size)]
        for info in infos:
            latency = rng.uniform(0.02, 0.5)
            if rng.random() < slow_fraction:
                latency = rng.uniform(SOFT_TIMEOUT * 1.2, HARD_TIMEOUT * 0.9)
            self.nodes[info.address] = SimNode(info, latency=latency,
                                               fails=rng.random() < fail_fraction)
        for sim in self.nodes.values():
            others = [info for info in infos if info != sim.info]
            known = {info.address: info for info in sorted(
                others, key=lambda info: distance(info.id, sim.info.id))[:8]}
            by_level: dict[int, list[NodeInfo]] = {}
            for info in others:
                by_level.setdefault(common_prefix_bits(info.id, sim.info.id), []).append(info)
            for level_nodes in by_level.values():
                for info in rng.sample(level_nodes, min(per_level, len(level_nodes))):
                    known[info.address] = info
            for info in rng.sample(others, random_links):
                known[info.address] = info
            sim.known = list(known.values())

    @property
    def infos(self) -> list[NodeInfo]:
        return [sim.info for sim in self.nodes.values()]

    def true_closest(self, target: bytes, count: int = K, live_only: bool = True) -> list[bytes]:
        candidates = [sim.info for sim in self.nodes.values() if not (live_only and sim.fails)]
        return [info.id for info in sorted(candidates, key=lambda info: distance(info.id, target))[:count]]


@dataclass
class RunResult:
    lookup: Lookup
    queried: list[tuple[str, int]]
    max_in_flight: int
    peers_reported: list[tuple[str, int]]
    end_time: float
    steps: int


def drive(lookup: Lookup, network: Network, start: float = 0.0, max_steps: int = 10_000) -> RunResult:
    """Run `lookup` against `network` with a fake clock until it is done."""
    now = start
    events: list[tuple[float, int, str, tuple[str, int]]] = []  # (time, seq, kind, address)
    seq = 0
    queried: list[tuple[str, int]] = []
    sent_at: dict[tuple[str, int], float] = {}
    answered_or_failed: set[tuple[str, int]] = set()
    peers_reported: list[tuple[str, int]] = []
    max_in_flight = 0
    steps = 0
    while True:
        steps += 1
        assert steps < max_steps, "lookup did not terminate"
        for query in lookup.next_queries(now):
            address = query.address if isinstance(query, NodeInfo) else query
            assert address not in sent_at, f"{address} queried twice"
            assert address in network.nodes
            sent_at[address] = now
            queried.append(address)
            sim = network.nodes[address]
            if sim.fails:
                heapq.heappush(events, (now + HARD_TIMEOUT, seq, "fail", address))
            else:
                heapq.heappush(events, (now + sim.latency, seq, "reply", address))
            seq += 1
        # Queries holding a slot: sent less than soft_timeout ago and not yet answered.
        holding = [a for a, t in sent_at.items()
                   if a not in answered_or_failed and now < t + lookup.soft_timeout]
        in_flight_states = sum(1 for c in lookup._candidates.values()
                               if c.state is CandidateState.IN_FLIGHT)
        assert in_flight_states == len(holding)
        assert len(holding) <= lookup.alpha
        max_in_flight = max(max_in_flight, len(holding))
        if lookup.done:
            break
        deadline = lookup.next_deadline()
        next_event = events[0][0] if events else None
        choices = [t for t in (deadline, next_event) if t is not None]
        assert choices, "lookup is stuck: not done, nothing pending, nothing to send"
        now = max(now, min(choices))
        while events and events[0][0] <= now:
            _, _, kind, address = heapq.heappop(events)
            answered_or_failed.add(address)
            if kind == "fail":
                lookup.on_failure(address, now)
                continue
            sim = network.nodes[address]
            fresh = lookup.on_reply(address, sim.info.id, now, nodes=sim.closest_known(lookup.target),
                                    token=b"tok" + bytes(address[0], "ascii"), values=sim.peers)
            peers_reported.extend(fresh)
    assert lookup.next_queries(now) == []
    return RunResult(lookup, queried, max_in_flight, peers_reported, now, steps)


def start_lookup(network: Network, target: bytes, seed: int = 0, **kwargs) -> Lookup:
    rng = random.Random(seed)
    seeds = rng.sample(network.infos, 8)
    return Lookup(NodeId(target), seeds, 0.0, **kwargs)


# --- the lookup finds the k closest nodes ---------------------------------------------------------


@pytest.mark.parametrize("network_seed", [0, 1, 2])
def test_finds_the_true_k_closest(network_seed):
    network = Network(seed=network_seed)
    rng = random.Random(100 + network_seed)
    for trial in range(15):
        target = NodeId.random(rng)
        result = drive(start_lookup(network, target, seed=trial), network)
        found = [c.node_id for c in result.lookup.closest_answered()]
        assert found == network.true_closest(target)
        assert result.max_in_flight <= ALPHA
        # It did not have to ask the whole network.
        assert len(result.queried) < len(network.nodes) / 2


def test_finds_a_node_by_its_own_id():
    network = Network(seed=5)
    wanted = network.infos[17]
    result = drive(start_lookup(network, wanted.id), network)
    assert result.lookup.closest_answered(1)[0].node_id == wanted.id
    assert result.lookup.closest_answered(1)[0].info == wanted


NETWORK = Network(seed=11)


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=8),
       st.integers(min_value=1, max_value=12))
@settings(max_examples=25, deadline=None, derandomize=True)
def test_finds_closest_for_any_target_alpha_and_k(seed, alpha, k):
    network = NETWORK
    target = NodeId.random(random.Random(seed))
    lookup = start_lookup(network, target, seed=seed, alpha=alpha, k=k)
    result = drive(lookup, network)
    assert [c.node_id for c in lookup.closest_answered()] == network.true_closest(target, count=k)
    assert result.max_in_flight <= alpha
    assert lookup.pending >= 0


def test_failed_nodes_are_skipped():
    network = Network(seed=3, fail_fraction=0.2)
    rng = random.Random(9)
    total_failed = 0
    for trial in range(10):
        target = NodeId.random(rng)
        result = drive(start_lookup(network, target, seed=trial), network)
        lookup = result.lookup
        found = [c.node_id for c in lookup.closest_answered()]
        assert found == network.true_closest(target, live_only=True)
        failed = [c for c in lookup._candidates.values() if c.state is CandidateState.FAILED]
        total_failed += len(failed)
        assert all(network.nodes[c.address].fails for c in failed)
        # Dead nodes closer than the k-th live one were asked, waited for, and skipped.
        by_id = {c.node_id: c for c in lookup._candidates.values()}
        for node_id in network.true_closest(target, live_only=False):
            if node_id not in found:
                assert by_id[node_id].state is CandidateState.FAILED
        assert lookup.stats.failed == len(failed)
        assert lookup.stats.answered == sum(1 for c in lookup._candidates.values()
                                            if c.state is CandidateState.ANSWERED)
    assert total_failed > 0, "the test network should make some queries fail"


def test_slow_nodes_soft_timeout_and_still_count():
    network = Network(seed=4, slow_fraction=0.3)
    rng = random.Random(10)
    for trial in range(10):
        target = NodeId.random(rng)
        result = drive(start_lookup(network, target, seed=trial), network)
        assert [c.node_id for c in result.lookup.closest_answered()] == network.true_closest(target)
        assert result.max_in_flight <= ALPHA


# --- the slot mechanics, step by step ---------------------------------------------------------


def _line(n: int, target: NodeId) -> list[NodeInfo]:
    """n nodes at distances 1..n from target."""
    base = int.from_bytes(target, "big")
    return [NodeInfo(NodeId((base ^ d).to_bytes(20, "big")), f"10.0.0.{d}", 1000 + d)
            for d in range(1, n + 1)]


def test_at_most_alpha_in_flight_and_closest_first():
    target = NodeId(bytes(20))
    seeds = _line(20, target)
    lookup = Lookup(target, list(reversed(seeds)), 0.0, alpha=3, k=8)
    first = lookup.next_queries(0.0)
    assert first == seeds[:3]  # the closest first
    assert lookup.next_queries(0.1) == []  # no slot free
    assert lookup.pending == 3
    lookup.on_reply(seeds[0].address, seeds[0].id, 0.2)
    assert lookup.next_queries(0.2) == [seeds[3]]
    lookup.on_failure(seeds[1].address, 0.3)
    assert lookup.next_queries(0.3) == [seeds[4]]
    assert lookup.next_queries(0.3) == []


def test_soft_timeout_opens_slots():
    target = NodeId(bytes(20))
    seeds = _line(20, target)
    lookup = Lookup(target, seeds, 0.0, alpha=3, k=8, soft_timeout=1.0)
    assert lookup.next_queries(0.0) == seeds[:3]
    assert lookup.next_deadline() == 1.0
    assert lookup.next_queries(0.999) == []
    # Past the soft timeout the three stop holding slots, without any answer.
    assert lookup.next_queries(1.0) == seeds[3:6]
    assert lookup.next_deadline() == 2.0
    states = [lookup._candidates[s.address].state for s in seeds[:6]]
    assert states == [CandidateState.SLOW] * 3 + [CandidateState.IN_FLIGHT] * 3
    assert lookup.pending == 6
    # A slow node may still answer, and is used.
    lookup.on_reply(seeds[0].address, seeds[0].id, 1.5, token=b"t")
    assert lookup._candidates[seeds[0].address].state is CandidateState.ANSWERED
    assert lookup.next_queries(1.5) == []  # the slow answer did not free an in-flight slot
    assert lookup.next_queries(2.0) == seeds[6:9]


def test_not_done_while_a_closer_slow_query_is_pending():
    target = NodeId(bytes(20))
    seeds = _line(3, target)
    lookup = Lookup(target, seeds, 0.0, alpha=3, k=2, soft_timeout=1.0)
    assert lookup.next_queries(0.0) == seeds
    lookup.on_reply(seeds[1].address, seeds[1].id, 0.1)
    lookup.on_reply(seeds[2].address, seeds[2].id, 0.1)
    assert not lookup.done  # the closest one has not answered yet
    lookup.next_queries(5.0)  # slow now
    assert not lookup.done
    lookup.on_failure(seeds[0].address, 5.0)
    assert lookup.done
    assert [c.info for c in lookup.closest_answered()] == seeds[1:]


def test_done_once_k_closest_answered_even_with_farther_pending():
    target = NodeId(bytes(20))
    seeds = _line(10, target)
    lookup = Lookup(target, seeds, 0.0, alpha=5, k=3)
    assert lookup.next_queries(0.0) == seeds[:5]
    for info in seeds[:3]:
        lookup.on_reply(info.address, info.id, 0.1)
    assert lookup.done
    assert lookup.next_queries(0.2) == []
    assert lookup.pending == 2


def test_failed_nodes_are_never_requeried_nor_returned():
    target = NodeId(bytes(20))
    seeds = _line(6, target)
    lookup = Lookup(target, seeds, 0.0, alpha=2, k=2)
    assert lookup.next_queries(0.0) == seeds[:2]
    lookup.on_failure(seeds[0].address, 1.0)
    lookup.on_failure(seeds[1].address, 1.0)
    # Learning about them again does not bring them back.
    lookup.add_nodes(seeds[:2])
    assert lookup.next_queries(1.0) == seeds[2:4]
    lookup.on_reply(seeds[2].address, seeds[2].id, 1.1, nodes=seeds[:2])
    lookup.on_reply(seeds[3].address, seeds[3].id, 1.1)
    assert lookup.done
    assert [c.info for c in lookup.closest_answered()] == seeds[2:4]
    # Late answers from failed nodes are ignored.
    assert lookup.on_reply(seeds[0].address, seeds[0].id, 2.0, values=[("1.1.1.1", 1)]) == []
    assert lookup._candidates[seeds[0].address].state is CandidateState.FAILED
    assert lookup.stats.failed == 2 and lookup.stats.answered == 2


def test_terminates_when_everything_failed_or_nothing_to_ask():
    target = NodeId(bytes(20))
    empty = Lookup(target, [], 0.0)
    assert empty.done and empty.next_queries(0.0) == [] and empty.next_deadline() is None
    seeds = _line(4, target)
    lookup = Lookup(target, seeds, 0.0, alpha=8, k=8)
    assert lookup.next_queries(0.0) == seeds
    assert not lookup.done
    for info in seeds:
        lookup.on_failure(info.address, 1.0)
    assert lookup.done
    assert lookup.closest_answered() == []
    assert lookup.next_queries(2.0) == []


def test_replies_from_unknown_addresses_and_duplicates_are_ignored():
    target = NodeId(bytes(20))
    seeds = _line(2, target)
    lookup = Lookup(target, seeds, 0.0, alpha=2, k=2)
    lookup.next_queries(0.0)
    assert lookup.on_reply(("10.9.9.9", 1), NodeId(b"\x01" * 20), 0.1, values=[("1.2.3.4", 5)]) == []
    assert lookup.on_reply(seeds[0].address, seeds[0].id, 0.1, values=[("1.2.3.4", 5)]) == [("1.2.3.4", 5)]
    assert lookup.on_reply(seeds[0].address, seeds[0].id, 0.2, values=[("5.6.7.8", 5)]) == []
    assert lookup.stats.answered == 1
    assert lookup.stats.peers == {("1.2.3.4", 5)}


def test_nodes_with_port_zero_are_not_queried():
    target = NodeId(bytes(20))
    good, zero = _line(2, target)
    zero = NodeInfo(zero.id, zero.ip, 0)
    lookup = Lookup(target, [good, zero], 0.0)
    assert lookup.next_queries(0.0) == [good]


def test_bootstrap_addresses_are_queried_last_and_ranked_by_their_answer():
    network = Network(seed=6)
    target = NodeId.random(random.Random(1))
    entry_points = [info.address for info in network.infos[:3]]
    first = Lookup(target, [], 0.0, bootstrap=entry_points).next_queries(0.0)
    assert first == entry_points  # bare addresses: the ids are unknown
    lookup = Lookup(target, [], 0.0, bootstrap=entry_points)
    result = drive(lookup, network)
    assert result.queried[:3] == entry_points
    assert [c.node_id for c in lookup.closest_answered()] == network.true_closest(target)
    for address in entry_points:
        candidate = lookup._candidates.get(address)
        if candidate is not None:
            # Ranked by the id it answered with.
            assert candidate.node_id == network.nodes[address].info.id
            assert candidate.distance == distance(candidate.node_id, target)
    assert result.max_in_flight <= ALPHA


def test_seeds_beat_bootstrap_addresses():
    target = NodeId(bytes(20))
    seeds = _line(2, target)
    lookup = Lookup(target, seeds, 0.0, bootstrap=[("192.0.2.1", 6881)], alpha=3)
    assert lookup.next_queries(0.0) == seeds + [("192.0.2.1", 6881)]


def test_max_candidates_bounds_tracking():
    target = NodeId(bytes(20))
    many = _line(100, target)
    lookup = Lookup(target, many[:10], 0.0, alpha=2, k=2, max_candidates=20)
    sent = lookup.next_queries(0.0)
    lookup.on_reply(sent[0].address, sent[0].id, 0.1, nodes=many[10:])
    lookup.next_queries(0.1)
    assert len(lookup._candidates) <= 20 + 2
    # The closest ones are kept.
    assert all(info.address in lookup._candidates for info in many[:10])


# --- get_peers values ---------------------------------------------------------------------------


def test_get_peers_values_are_reported_once():
    network = Network(seed=8)
    target = NodeId.random(random.Random(2))
    closest = network.true_closest(target, count=12)
    by_id = {sim.info.id: sim for sim in network.nodes.values()}
    swarm = [(f"172.16.0.{n}", 6000 + n) for n in range(30)]
    rng = random.Random(3)
    for node_id in closest:
        # Overlapping subsets, and one duplicate inside a single reply.
        values = rng.sample(swarm, 10)
        by_id[node_id].peers = values + values[:1]
    result = drive(start_lookup(network, target), network)
    reported = result.peers_reported
    assert len(reported) == len(set(reported)), "a peer was reported twice"
    expected = set()
    for c in result.lookup.closest_answered(count=len(network.nodes)):
        expected.update(network.nodes[c.address].peers)
    assert set(reported) == expected == result.lookup.stats.peers
    assert expected  # the test is not vacuous
    # Answers with a token are available for the announce phase.
    with_token = result.lookup.closest_answered(with_token=True)
    assert [c.node_id for c in with_token] == network.true_closest(target)
    assert all(c.token.startswith(b"tok") for c in with_token)


def test_values_duplicated_within_one_reply_are_reported_once():
    target = NodeId(bytes(20))
    seeds = _line(2, target)
    lookup = Lookup(target, seeds, 0.0)
    lookup.next_queries(0.0)
    peer = ("1.2.3.4", 6881)
    fresh = lookup.on_reply(seeds[0].address, seeds[0].id, 0.1, values=[peer, peer, ("5.6.7.8", 1)])
    assert fresh == [peer, ("5.6.7.8", 1)]
    assert lookup.on_reply(seeds[1].address, seeds[1].id, 0.1, values=[peer]) == []


def test_closest_answered_with_token_filter():
    target = NodeId(bytes(20))
    seeds = _line(3, target)
    lookup = Lookup(target, seeds, 0.0, k=3)
    lookup.next_queries(0.0)
    lookup.on_reply(seeds[0].address, seeds[0].id, 0.1, token=None)
    lookup.on_reply(seeds[1].address, seeds[1].id, 0.1, token=b"x")
    lookup.on_reply(seeds[2].address, seeds[2].id, 0.1, token=b"y")
    assert [c.info for c in lookup.closest_answered()] == seeds
    assert [c.info for c in lookup.closest_answered(with_token=True)] == seeds[1:]
    assert [c.token for c in lookup.closest_answered(2, with_token=True)] == [b"x", b"y"]
    assert len(lookup.closest_answered(1)) == 1


def test_reply_from_a_candidate_never_queried_is_ignored():
    target = NodeId(bytes(20))
    seeds = [NodeInfo(NodeId(bytes([i]) + bytes(19)), f"127.0.0.{i}", 6881) for i in range(1, 4)]
    lookup = Lookup(target, seeds, 0.0, k=2, alpha=1)
    asked = lookup.next_queries(0.0)
    assert len(asked) == 1
    never_asked = next(seed for seed in seeds if seed != asked[0])
    assert lookup.on_reply(never_asked.address, never_asked.id, 0.1, values=[("127.0.0.9", 1)]) == []
    assert lookup.stats.answered == 0
    assert lookup.closest_answered(0) == []


def test_hops_count_referrals_from_the_seeds():
    target = NodeId(bytes(20))
    seed = NodeInfo(NodeId(b"\x80" + bytes(19)), "10.0.0.1", 6881)
    learned = NodeInfo(NodeId(b"\x40" + bytes(19)), "10.0.0.2", 6881)
    deeper = NodeInfo(NodeId(b"\x20" + bytes(19)), "10.0.0.3", 6881)
    lookup = Lookup(target, [seed], 0.0, k=8, alpha=1)
    assert lookup.next_queries(0.0) == [seed]
    lookup.on_reply(seed.address, seed.id, 0.1, nodes=[learned])
    assert lookup.next_queries(0.1) == [learned]
    lookup.on_reply(learned.address, learned.id, 0.2, nodes=[deeper, seed])
    assert lookup.next_queries(0.2) == [deeper]
    lookup.on_reply(deeper.address, deeper.id, 0.3, values=[("10.9.9.9", 1)])
    assert [c.hop for c in lookup.closest_answered()] == [2, 1, 0]  # nearest first
    assert lookup.stats.max_hop == 2
    assert lookup.stats.first_peer_hop == 2


def test_hop_of_an_unqueried_candidate_drops_when_a_nearer_referrer_names_it():
    target = NodeId(bytes(20))
    near, far = (NodeInfo(NodeId(bytes([b]) + bytes(19)), f"10.0.0.{b}", 6881) for b in (0x10, 0x80))
    lookup = Lookup(target, [far], 0.0, k=8, alpha=1)
    lookup.next_queries(0.0)
    lookup.on_reply(far.address, far.id, 0.1, nodes=[near])  # near: hop 1
    lookup.add_nodes([near])  # the routing table knows it too: hop 0
    lookup.next_queries(0.1)
    lookup.on_reply(near.address, near.id, 0.2)
    assert lookup.closest_answered()[0].hop == 0


def test_without_waiting_for_slow_nodes_a_lookup_ends_at_the_full_soft_timeout():
    target = NodeId(bytes(20))
    seeds = _line(3, target)
    lookup = Lookup(target, seeds, 0.0, alpha=3, k=2, soft_timeout=1.0, wait_for_slow=False)
    assert lookup.next_queries(0.0) == seeds
    lookup.on_reply(seeds[1].address, seeds[1].id, 0.1)
    lookup.on_reply(seeds[2].address, seeds[2].id, 0.1)
    assert not lookup.done and lookup.next_deadline() == 1.0
    lookup.next_queries(1.0)  # the closest is abandoned: the two that answered are the result
    assert lookup._candidates[seeds[0].address].state is CandidateState.ABANDONED
    assert lookup.done and [c.info for c in lookup.closest_answered()] == seeds[1:]
    # A late answer is still taken.
    lookup.on_reply(seeds[0].address, seeds[0].id, 1.2)
    assert [c.info for c in lookup.closest_answered()] == seeds[:2]


def test_adaptive_soft_timeout_follows_the_round_trips():
    target = NodeId(bytes(20))
    seeds = _line(12, target)
    lookup = Lookup(target, seeds, 0.0, alpha=4, k=8, soft_timeout=1.0, adaptive_timeout=True)
    first = lookup.next_queries(0.0)
    assert lookup.soft_timeout == 1.0
    for seed in first[:3]:  # three answers after 0.1 s: 3 x 0.1 s from now on
        lookup.on_reply(seed.address, seed.id, 0.1)
    assert abs(lookup.soft_timeout - 0.3) < 1e-9
    # Never under the floor, never over the configured value.
    for seed in lookup.next_queries(0.1):
        lookup.on_reply(seed.address, seed.id, 0.101)
    assert lookup.soft_timeout >= 0.25
    slow = Lookup(target, seeds, 0.0, alpha=4, k=8, soft_timeout=1.0, adaptive_timeout=True)
    for seed in slow.next_queries(0.0)[:3]:
        slow.on_reply(seed.address, seed.id, 2.0)
    assert slow.soft_timeout == 1.0
    # NodeConfig.soft_timeout_round_trips sets the multiple.
    patient = Lookup(target, seeds, 0.0, alpha=4, k=8, soft_timeout=1.0, adaptive_timeout=True,
                     round_trip_factor=5.0)
    for seed in patient.next_queries(0.0)[:3]:
        patient.on_reply(seed.address, seed.id, 0.1)
    assert abs(patient.soft_timeout - 0.5) < 1e-9


def test_only_a_silent_query_to_one_of_the_closest_few_is_resent():
    target = NodeId(bytes(20))
    seeds = _line(10, target)
    assert RESEND_RANK == 3
    lookup = Lookup(target, seeds, 0.0, alpha=6, k=8)
    assert lookup.next_queries(0.0) == seeds[:6]
    lookup.on_reply(seeds[0].address, seeds[0].id, 0.1)
    lookup.on_failure(seeds[1].address, 0.2)
    assert lookup.claim_resend(seeds[2].address)      # 2nd closest not known to have failed
    assert lookup.claim_resend(seeds[3].address)      # 3rd
    assert not lookup.claim_resend(seeds[4].address)  # 4th: its answer changes nothing
    assert not lookup.claim_resend(seeds[0].address)  # answered already
    assert not lookup.claim_resend(seeds[1].address)  # failed
    assert not lookup.claim_resend(("10.9.9.9", 1))   # never queried
    assert lookup.stats.resent == 2


# --- aggressive lookups (libtorrent's aggressive_lookups) ----------------------------------


def _node_at(target: NodeId, shared_bits: int, tag: int) -> NodeInfo:
    """A node whose id shares exactly `shared_bits` leading bits with `target`."""
    flipped = int.from_bytes(target, "big") ^ (1 << (159 - shared_bits)) ^ tag
    return NodeInfo(NodeId(flipped.to_bytes(20, "big")), f"10.9.{shared_bits}.{tag}", 6881)


@pytest.mark.parametrize("aggressive", [False, True])
def test_an_overtaken_query_holds_a_slot_only_without_aggressive_lookups(aggressive):
    target = NodeId(bytes(range(20)))
    far = [_node_at(target, 2, tag) for tag in range(1, ALPHA + 1)]
    lookup = Lookup(target, far, 0.0, alpha=ALPHA, aggressive=aggressive)
    assert len(lookup.next_queries(0.0)) == ALPHA  # every slot taken by a far node
    near = [_node_at(target, 40, tag) for tag in range(1, 4)]
    lookup.on_reply(far[0].address, far[0].id, 0.1, nodes=near)
    asked = lookup.next_queries(0.1)
    if aggressive:
        # the 3 closer ones are asked at once: the 4 far queries still out were overtaken
        assert [node.address for node in asked] == [node.address for node in near]
    else:
        assert [node.address for node in asked] == [near[0].address]  # the one free slot
    # Either way, the slots at the top of the list bound what is in flight there.
    lookup.on_reply(near[0].address, near[0].id, 0.2)
    assert all(node.address not in {f.address for f in far} for node in lookup.next_queries(0.2))


def test_a_lookup_short_of_k_answers_waits_for_an_abandoned_query():
    """A cold start's only router, its reply late (or lost once and resent): abandoned after
    the soft timeout, but with nobody else to ask the lookup waits for it to answer or fail."""
    target = NodeId(bytes(20))
    router = ("10.1.1.1", 6881)
    lookup = Lookup(target, [], 0.0, bootstrap=[router], wait_for_slow=False)
    assert lookup.next_queries(0.0) == [router]
    lookup.next_queries(SOFT_TIMEOUT + 0.1)  # past the soft timeout, then abandoned
    assert lookup._candidates[router].state is CandidateState.ABANDONED
    assert not lookup.done
    nodes = [_node_at(target, 10, tag) for tag in range(1, 4)]
    lookup.on_reply(router, NodeId(b"\x77" * 20), 2.0, nodes=nodes)
    assert {n.address for n in lookup.next_queries(2.0)} == {n.address for n in nodes}
    for node in nodes:
        lookup.on_failure(node.address, 6.0)
    assert lookup.done  # nothing left awaited: over, with the router as its one answer


# --- ids implausibly close to the target (eclipsing Sybils) ---------------------------------

def _near(target: bytes, shared: int, salt: int) -> NodeId:
    """An id sharing exactly `shared` leading bits with `target`."""
    key = int.from_bytes(target, "big")
    flip = 1 << (159 - shared)
    noise = random.Random(salt).getrandbits(159 - shared) if shared < 159 else 0
    return NodeId((((key ^ flip) >> (159 - shared) << (159 - shared)) | noise).to_bytes(20, "big"))


def test_a_lookup_never_queries_ids_implausibly_close_to_its_target():
    target = NodeId(random.Random(1).randbytes(20))
    honest = [NodeInfo(_near(target, 12 + i, i), f"203.0.113.{i + 1}", 6881) for i in range(4)]
    close = [NodeInfo(_near(target, 37 + i, 50 + i), f"198.51.100.{i + 1}", 6881) for i in range(4)]
    itself = NodeInfo(target, "192.0.2.9", 6881)
    lookup = Lookup(target, honest + close + [itself], 0.0, max_shared_bits=36)
    assert common_prefix_bits(close[0].id, target) == 37
    assert lookup.stats.implausible == 4
    asked = {node.address for node in lookup.next_queries(0.0)}
    assert asked == {node.address for node in honest} | {itself.address}  # the target itself may be asked
    believing = Lookup(target, honest + close, 0.0)
    assert {n.address for n in believing.next_queries(0.0)} >= {n.address for n in close}


def test_an_answer_from_an_id_implausibly_close_counts_as_a_failure_and_is_dropped():
    target = NodeId(random.Random(2).randbytes(20))
    home = NodeInfo(_near(target, 3, 1), "203.0.113.7", 6881)  # how our table knows it
    lookup = Lookup(target, [home], 0.0, max_shared_bits=36)
    assert lookup.next_queries(0.0) == [home]
    listed = [NodeInfo(_near(target, 10, 9), "203.0.113.8", 6881)]
    peers = lookup.on_reply(home.address, _near(target, 128, 2), 0.1, nodes=listed,
                            token=b"t", values=[("192.0.2.1", 1)])
    assert peers == [] and lookup.stats.implausible == 1 and lookup.stats.answered == 0
    assert lookup.next_queries(0.2) == []  # its nodes were dropped with it
    assert lookup.done and lookup.stats.failed == 1


def test_a_peerless_get_peers_lookup_waits_for_more_of_the_closest_then_k_once_a_peer_came():
    target = NodeId(random.Random(3).randbytes(20))
    nodes = [NodeInfo(_near(target, 4 + i, i), f"203.0.113.{i + 1}", 6881) for i in range(20)]
    for peer_found in (False, True):
        lookup = Lookup(target, nodes, 0.0, alpha=20, widen_until_values=16)
        for node in sorted(lookup.next_queries(0.0), key=lambda n: distance(n.id, target))[:8]:
            values = [("192.0.2.1", 1)] if peer_found and node.address == nodes[-1].address else []
            lookup.on_reply(node.address, node.id, 0.1, values=values)
        # The 8 closest answered: with a peer the lookup is done, without it waits for 16.
        assert lookup.done is peer_found


@pytest.mark.parametrize("aggressive", [False, True])
def test_a_peerless_lookup_widens_only_once_its_k_closest_answered(aggressive):
    """Not from the start: while the closest node is still out, 8 answers below it are
    enough, and nothing farther is asked; once it answers without a peer, the lookup goes
    on to the 16 closest."""
    target = NodeId(random.Random(4).randbytes(20))
    nodes = [NodeInfo(_near(target, 4 + i, i), f"203.0.113.{i + 1}", 6881) for i in range(12)]
    lookup = Lookup(target, nodes, 0.0, alpha=9, widen_until_values=16, aggressive=aggressive)
    asked = lookup.next_queries(0.0)
    assert {node.address for node in asked} == {node.address for node in nodes[3:]}
    for node in nodes[3:11]:
        lookup.on_reply(node.address, node.id, 0.1)  # no peer; nodes[11], the closest, is out
    assert lookup.next_queries(0.2) == [] and not lookup.done
    lookup.on_reply(nodes[11].address, nodes[11].id, 0.3)
    assert not lookup.done  # the 8 closest answered without a peer: it widened
    assert {node.address for node in lookup.next_queries(0.3)} == \
        {node.address for node in nodes[:3]}
