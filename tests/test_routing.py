"""Tests of mldht.routing: k-buckets, node states, replacement caches (sans-I/O, injected clock)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mldht.compact import NodeInfo
from mldht.ids import ID_BITS, NodeId, common_prefix_bits, distance, random_id_in_bucket
from mldht.routing import (
    BAD_AFTER_FAILURES, GOOD_INTERVAL, K, InsertOutcome, NodeState, RoutingEntry, RoutingTable,
)

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OWN = NodeId(bytes(20))


def far_id(n: int) -> NodeId:
    """Distinct ids sharing 0 prefix bits with OWN (first bit set)."""
    return NodeId(b"\x80" + n.to_bytes(19, "big"))


def node(node_id: bytes, n: int, port: int = 6881) -> NodeInfo:
    return NodeInfo(NodeId(node_id), f"10.0.{n // 256}.{n % 256}", port)


def check_invariants(table: RoutingTable) -> None:
    last = len(table.buckets) - 1
    assert 1 <= len(table.buckets) <= ID_BITS
    seen_ips: dict[str, RoutingEntry] = {}
    total = 0
    for index, bucket in enumerate(table.buckets):
        assert len(bucket.nodes) <= table.k
        assert len(bucket.replacements) <= table.replacement_size
        for entry in bucket.nodes + bucket.replacements:
            shared = common_prefix_bits(table.own_id, entry.id)
            if index < last:
                assert shared == index
            else:
                assert shared >= last
            assert entry.id != table.own_id
            assert 0 < entry.port <= 0xFFFF
        for entry in bucket.nodes:
            assert entry.ip not in seen_ips, "two entries for one IP"
            seen_ips[entry.ip] = entry
            assert table.bucket_index(entry.id) == index
            total += 1
        # The replacement cache holds each IP and each id at most once.
        assert len({entry.ip for entry in bucket.replacements}) == len(bucket.replacements)
        assert len({entry.id for entry in bucket.replacements}) == len(bucket.replacements)
    assert len(table) == total == len(list(table))
    assert table._by_ip.keys() == seen_ips.keys()
    assert table._keys == {entry.key for entry in seen_ips.values()}
    assert len(table._keys) == total  # one entry per id
    for ip, entry in seen_ips.items():
        assert table._by_ip[ip] is entry
        assert table.get(entry.address) is entry


# --- property tests ---------------------------------------------------------------------------

def _hear(port_strategy):
    return st.tuples(
        st.just("hear"),
        st.integers(min_value=0, max_value=12) | st.integers(min_value=0, max_value=ID_BITS),  # prefix
        st.integers(min_value=0, max_value=2**32),                                             # id seed
        st.integers(min_value=0, max_value=8) | st.integers(min_value=0, max_value=65535),      # IP
        port_strategy,
        st.booleans(),                                                                          # responded
    )


OPERATION_KINDS = {
    "hear": _hear(st.integers(min_value=1, max_value=0xFFFF)),
    "hear_bad_port": _hear(st.sampled_from([0, -1, 65536])),
    "timeout": st.tuples(st.just("timeout"), st.integers(min_value=0, max_value=1000)),
    "advance": st.tuples(st.just("advance"), st.floats(min_value=0, max_value=2 * GOOD_INTERVAL)),
    "remove": st.tuples(st.just("remove"), st.integers(min_value=0, max_value=1000)),
    "questionable": st.tuples(st.just("questionable"), st.integers(min_value=0, max_value=4)),
}
# Mostly insertions, so that tables get big and deep.
KIND_WEIGHTS = ["hear"] * 12 + ["timeout"] * 3 + ["advance"] * 2 + [
    "hear_bad_port", "remove", "questionable"]
operations = st.lists(st.sampled_from(KIND_WEIGHTS).flatmap(OPERATION_KINDS.__getitem__),
                      min_size=20, max_size=200)


def _entries(table):
    return sorted(table, key=lambda entry: entry.ip)


@given(st.binary(min_size=20, max_size=20), st.sampled_from([1, 2, 8]), st.sampled_from([1, 3, 8]),
       operations)
@SETTINGS
def test_invariants_under_random_operations(own_bytes, k, replacement_size, ops):
    own = NodeId(own_bytes)
    table = RoutingTable(own, k=k, replacement_size=replacement_size)
    now = 0.0
    for op in ops:
        previous_buckets = list(table.buckets)
        size_before = len(table)
        if op[0] == "hear":
            _, prefix, seed, ip, port, responded = op
            node_id = random_id_in_bucket(own, prefix, random.Random(seed))
            info = NodeInfo(node_id, f"10.0.{ip // 256}.{ip % 256}", port)
            owner_before = table._by_ip.get(info.ip)
            result = table.heard_from(info, now, responded)
            if node_id == own:
                assert result.outcome is InsertOutcome.REJECTED
            if not 0 < port <= 0xFFFF:
                assert result.outcome is InsertOutcome.REJECTED
            if owner_before is not None and owner_before.id != node_id:
                assert result.outcome is InsertOutcome.REJECTED
                assert table._by_ip[info.ip] is owner_before
            if result.outcome in (InsertOutcome.ADDED, InsertOutcome.UPDATED):
                entry = table.get(info.address)
                assert entry is not None and entry.id == node_id
                if responded:
                    assert entry.last_response == now and entry.failures == 0
                    assert entry.state(now) is NodeState.GOOD
            if result.outcome is InsertOutcome.ADDED:
                assert owner_before is None
                assert len(table) == size_before + (0 if result.reason else 1)
            elif result.outcome is InsertOutcome.REPLACEMENT:
                assert table.get(info.address) is None
                bucket = table.buckets[table.bucket_index(node_id)]
                # A full bucket, or a querier not yet verified (main buckets: answered only).
                assert len(bucket.nodes) == table.k or not responded
                assert len(table) == size_before
                for pinged in result.ping:
                    entry = table.get(pinged.address)
                    assert entry is not None and entry.ping_pending
                    assert entry.state(now) is NodeState.QUESTIONABLE
            else:
                assert len(table) == size_before
            if result.outcome is not InsertOutcome.REPLACEMENT:
                assert result.ping == ()
        elif op[0] == "timeout":
            entries = _entries(table)
            if entries:
                target = entries[op[1] % len(entries)]
                evicted = table.on_timeout(target.address, now)
                assert len(table) == size_before
                if evicted:
                    assert table.get(target.address) is None
                    assert target.failures >= BAD_AFTER_FAILURES
                else:
                    assert table.get(target.address) is target
            else:
                assert table.on_timeout(("10.0.0.1", 1), now) is False
        elif op[0] == "advance":
            now += op[1]
        elif op[0] == "remove":
            entries = _entries(table)
            if entries:
                target = entries[op[1] % len(entries)]
                table.remove(target.address)
                assert table.get(target.address) is None
                assert len(table) == size_before - 1
        else:
            for info in table.questionable(now, op[1]):
                entry = table.get(info.address)
                assert entry.ping_pending and entry.state(now) is NodeState.QUESTIONABLE
        # Buckets are never removed or re-ordered: only the last one ever splits, by appending.
        assert len(table.buckets) >= len(previous_buckets)
        assert all(a is b for a, b in zip(previous_buckets, table.buckets))
        check_invariants(table)
    event(f"buckets: {min(len(table.buckets), 10)}{'+' if len(table.buckets) >= 10 else ''}")
    event(f"nodes: {min(len(table) // 20 * 20, 60)}+")


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=ID_BITS - 1),
                          st.integers(min_value=0, max_value=2**32)), max_size=150),
       st.integers(min_value=0, max_value=ID_BITS - 1), st.integers(min_value=1, max_value=40))
@SETTINGS
def test_closest_is_sorted_by_xor_distance(inserts, target_prefix, count):
    # The bucket walk must give exactly what sorting the whole table gives, for targets in
    # every bucket (near our id as well as far from it) and any count.
    table = RoutingTable(OWN)
    for n, (prefix, seed) in enumerate(inserts):
        table.heard_from(node(random_id_in_bucket(OWN, prefix, random.Random(seed)), n), 0.0, True)
    check_invariants(table)
    target = random_id_in_bucket(OWN, target_prefix, random.Random(len(inserts)))
    closest = table.closest(target, count=count)
    everything = sorted(table, key=lambda entry: distance(entry.id, target))
    assert [info.id for info in closest] == [entry.id for entry in everything[:count]]


def test_splits_only_the_own_bucket():
    table = RoutingTable(OWN, k=2)
    rng = random.Random(3)
    # Far nodes fill bucket 0 and never split it once it is not the last one.
    for n in range(10):
        table.heard_from(node(random_id_in_bucket(OWN, 0, rng), n), 0.0, True)
    assert len(table.buckets) == 2
    assert len(table.buckets[0].nodes) == 2 and len(table.buckets[1].nodes) == 0
    # Nodes very close to us make the table grow deep.
    for n in range(10, 14):
        table.heard_from(node(random_id_in_bucket(OWN, 30, rng), n), 0.0, True)
    assert len(table.buckets) == 32
    assert len(table.buckets[30].nodes) == 2
    check_invariants(table)


def test_deepest_split_goes_down_to_160_buckets():
    table = RoutingTable(OWN, k=1)
    neighbour = bytes(19) + b"\x01"  # shares 159 bits with OWN: the only such id
    assert table.heard_from(node(neighbour, 1), 0.0, True).outcome is InsertOutcome.ADDED
    assert len(table.buckets) == 1
    result = table.heard_from(node(bytes(19) + b"\x02", 2), 0.0, True)  # shares 158 bits
    assert result.outcome is InsertOutcome.ADDED
    assert len(table.buckets) == ID_BITS
    assert [len(bucket.nodes) for bucket in table.buckets[-2:]] == [1, 1]
    check_invariants(table)
    same_bucket = table.heard_from(node(bytes(19) + b"\x03", 3), 0.0, True)
    assert same_bucket.outcome is InsertOutcome.REPLACEMENT
    assert len(table.buckets) == ID_BITS
    check_invariants(table)


# --- node states ------------------------------------------------------------------------------


def test_node_states_with_injected_clock():
    table = RoutingTable(OWN)
    responder = node(far_id(1), 1)
    querier = node(far_id(2), 2)
    assert table.heard_from(responder, 100.0, responded=True).outcome is InsertOutcome.ADDED
    # A querier that never answered us waits in the replacement cache, not in the bucket.
    assert table.heard_from(querier, 100.0, responded=False).outcome is InsertOutcome.REPLACEMENT
    assert table.get(querier.address) is None
    r = table.get(responder.address)
    assert r.state(100.0) is NodeState.GOOD
    assert r.state(100.0 + GOOD_INTERVAL - 0.001) is NodeState.GOOD
    assert r.state(100.0 + GOOD_INTERVAL) is NodeState.QUESTIONABLE
    # Having answered once, a recent query keeps it good.
    table.heard_from(responder, 2000.0, responded=False)
    assert r.state(2000.0) is NodeState.GOOD
    assert r.state(2000.0 + GOOD_INTERVAL - 1) is NodeState.GOOD
    assert r.state(2000.0 + GOOD_INTERVAL) is NodeState.QUESTIONABLE
    assert table.heard_from(querier, 3000.0, responded=True).outcome is InsertOutcome.ADDED
    q = table.get(querier.address)
    assert q.state(3000.0) is NodeState.GOOD
    table.heard_from(querier, 3000.0 + GOOD_INTERVAL, responded=False)  # it answered once
    assert q.state(3000.0 + GOOD_INTERVAL) is NodeState.GOOD
    assert table.counts(3000.0) == {"good": 1, "questionable": 1, "bad": 0, "replacements": 0}


def test_bad_after_two_failures_and_answer_resets():
    assert GOOD_INTERVAL == 15 * 60 and BAD_AFTER_FAILURES == 2
    table = RoutingTable(OWN)
    info = node(far_id(1), 1)
    table.heard_from(info, 0.0, True)
    entry = table.get(info.address)
    assert table.on_timeout(info.address, 1.0) is False
    assert entry.state(1.0) is NodeState.GOOD  # one failure is not enough
    assert table.on_timeout(info.address, 2.0) is False  # bad, but nothing to replace it with
    assert entry.state(2.0) is NodeState.BAD
    assert table.get(info.address) is entry
    assert table.closest(far_id(1)) == []  # bad nodes are never handed out
    assert table.counts(2.0)["bad"] == 1
    table.heard_from(info, 3.0, True)
    assert entry.failures == 0 and entry.state(3.0) is NodeState.GOOD
    assert table.closest(far_id(1)) == [info]


def test_timeout_for_unknown_address_or_wrong_port():
    table = RoutingTable(OWN)
    info = node(far_id(1), 1, port=1000)
    table.heard_from(info, 0.0, True)
    assert table.on_timeout(("10.9.9.9", 1000), 0.0) is False
    assert table.on_timeout((info.ip, 1001), 0.0) is False
    assert table.get(info.address).failures == 0


# --- full buckets and the replacement cache ----------------------------------------------------


def _full_far_bucket(now: float, responded: bool = True) -> tuple[RoutingTable, list[NodeInfo]]:
    """A table whose bucket 0 (not the last one) holds K far nodes."""
    table = RoutingTable(OWN)
    infos = [node(far_id(n), n) for n in range(K)]
    for offset, info in enumerate(infos):
        assert table.heard_from(info, now + offset, responded).outcome is InsertOutcome.ADDED
    # Make bucket 0 a non-last bucket by splitting once.
    close = node(random_id_in_bucket(OWN, 5, random.Random(0)), 200)
    table.heard_from(close, now, True)
    assert len(table.buckets) >= 2
    assert len(table.buckets[0].nodes) == K
    return table, infos


def test_bucket_of_good_nodes_puts_newcomer_in_replacement_cache():
    table, infos = _full_far_bucket(0.0)
    newcomer = node(far_id(100), 100)
    result = table.heard_from(newcomer, 10.0, True)
    assert result.outcome is InsertOutcome.REPLACEMENT
    assert result.ping == ()  # every node is good: nothing to ping
    assert table.get(newcomer.address) is None
    assert [entry.id for entry in table.buckets[0].replacements] == [newcomer.id]
    assert {entry.id for entry in table.buckets[0].nodes} == {info.id for info in infos}
    check_invariants(table)


def test_full_bucket_with_questionable_nodes_asks_for_pings_then_replaces():
    table, infos = _full_far_bucket(0.0)
    later = 1000.0  # 15 minutes after: every node of bucket 0 is questionable
    newcomer = node(far_id(100), 100)
    result = table.heard_from(newcomer, later, True)
    assert result.outcome is InsertOutcome.REPLACEMENT
    # The least recently seen questionable node is to be pinged (added at t=0).
    assert result.ping == (infos[0],)
    assert table.get(infos[0].address).ping_pending
    assert table.buckets[0].replacements[0].id == newcomer.id

    # A querier that never answered waits in the cache and asks for no ping.
    stranger = node(far_id(102), 102)
    waiting = table.heard_from(stranger, later + 1, False)
    assert waiting.outcome is InsertOutcome.REPLACEMENT and waiting.ping == ()
    # A second newcomer that answered asks for another ping (the first one is pending).
    second = node(far_id(101), 101)
    result2 = table.heard_from(second, later + 1, True)
    assert result2.outcome is InsertOutcome.REPLACEMENT
    assert result2.ping == (infos[1],)

    # The pinged node fails twice: it is replaced by the best replacement (one that answered).
    assert table.on_timeout(infos[0].address, later + 5) is False
    assert table.get(infos[0].address) is not None
    assert table.on_timeout(infos[0].address, later + 10) is True
    assert table.get(infos[0].address) is None
    promoted = table.get(second.address)  # the most recently seen one that answered
    assert promoted is not None and promoted.id == second.id
    assert promoted in table.buckets[0].nodes
    assert all(entry.id != second.id for entry in table.buckets[0].replacements)
    assert table.get(stranger.address) is None  # never verified: never promoted
    assert len(table.buckets[0].nodes) == K
    assert table.buckets[0].last_changed == later + 10

    # The other pinged node answers: it stays and is good again.
    table.heard_from(infos[1], later + 11, True)
    entry = table.get(infos[1].address)
    assert not entry.ping_pending and entry.state(later + 11) is NodeState.GOOD
    check_invariants(table)


def test_bad_node_is_replaced_directly_by_a_newcomer():
    table, infos = _full_far_bucket(0.0)
    for _ in range(BAD_AFTER_FAILURES):
        table.on_timeout(infos[3].address, 5.0)
    assert table.get(infos[3].address).state(5.0) is NodeState.BAD
    newcomer = node(far_id(100), 100)
    result = table.heard_from(newcomer, 6.0, True)
    assert result.outcome is InsertOutcome.ADDED
    assert table.get(infos[3].address) is None
    assert table.get(newcomer.address) is not None
    check_invariants(table)


def test_replacement_cache_is_bounded_and_prefers_responders():
    table = RoutingTable(OWN, k=K, replacement_size=3)
    for n in range(K):
        table.heard_from(node(far_id(n), n), 0.0, True)
    table.heard_from(node(random_id_in_bucket(OWN, 5, random.Random(0)), 200), 0.0, True)
    table.heard_from(node(far_id(100), 100), 1.0, True)    # answered us
    for n in range(101, 106):
        table.heard_from(node(far_id(n), n), 1.0 + n, False)  # only queried us
    replacements = table.buckets[0].replacements
    assert len(replacements) == 3
    ids = {entry.id for entry in replacements}
    assert far_id(100) in ids             # kept though oldest: it answered
    assert ids == {far_id(100), far_id(104), far_id(105)}
    check_invariants(table)


def test_replacement_cache_deduplicates():
    table, _ = _full_far_bucket(0.0)
    again = node(far_id(100), 100)
    table.heard_from(again, 1.0, False)
    table.heard_from(again, 2.0, True)
    assert len(table.buckets[0].replacements) == 1
    assert table.buckets[0].replacements[0].last_response == 2.0


def test_querier_that_answered_is_marked_verified_and_not_reverified():
    table, infos = _full_far_bucket(0.0)
    known = table.heard_from(infos[0], 5.0, False)  # a table node queries us
    assert known.outcome is InsertOutcome.UPDATED and known.verified
    waiting = node(far_id(100), 100)
    first = table.heard_from(waiting, 5.0, False)
    assert first.outcome is InsertOutcome.REPLACEMENT and not first.verified
    table.heard_from(waiting, 6.0, True)  # it answered our verification ping: bucket full
    again = table.heard_from(waiting, 7.0, False)
    assert again.outcome is InsertOutcome.REPLACEMENT and again.verified


def test_unverified_querier_is_refused_when_every_replacement_answered():
    table = RoutingTable(OWN, k=K, replacement_size=2)
    for n in range(K):
        table.heard_from(node(far_id(n), n), 0.0, True)
    table.heard_from(node(random_id_in_bucket(OWN, 5, random.Random(0)), 200), 0.0, True)
    for n in (100, 101):
        table.heard_from(node(far_id(n), n), 1.0, True)
    assert [entry.last_response for entry in table.buckets[0].replacements] == [1.0, 1.0]
    result = table.heard_from(node(far_id(102), 102), 2.0, False)
    assert result.outcome is InsertOutcome.REJECTED and not result.verified
    assert {entry.id for entry in table.buckets[0].replacements} == {far_id(100), far_id(101)}
    check_invariants(table)


def test_closest_compact_packs_what_closest_returns():
    rng = random.Random(3)
    table = RoutingTable(OWN)
    for n in range(300):
        table.heard_from(node(NodeId(rng.randbytes(20)), n), 0.0, responded=n % 3 != 0)
    for _ in range(50):
        target = rng.randbytes(20)
        exclude = ("10.0.0.4", 6881)
        expected = table.closest(target, K, verified_only=True, exclude=exclude)
        packed = table.closest_compact(target, K, exclude=exclude)
        assert packed == b"".join(info.id + bytes(map(int, info.ip.split("."))) +
                                  info.port.to_bytes(2, "big") for info in expected)


def test_port_change_refreshes_the_packed_node():
    table = RoutingTable(OWN)
    table.heard_from(node(far_id(1), 1, port=6881), 0.0, True)
    target = far_id(1)
    assert table.closest_compact(target).endswith((6881).to_bytes(2, "big"))
    table.heard_from(node(far_id(1), 1, port=7000), 1.0, True)  # its NAT remapped the port
    assert table.closest_compact(target).endswith((7000).to_bytes(2, "big"))
    assert table.closest(target)[0].port == 7000


# --- addresses --------------------------------------------------------------------------------


def test_same_id_new_port_updates():
    table = RoutingTable(OWN)
    first = node(far_id(1), 1, port=1000)
    assert table.heard_from(first, 0.0, True).outcome is InsertOutcome.ADDED
    moved = node(far_id(1), 1, port=2000)
    result = table.heard_from(moved, 5.0, False)
    assert result.outcome is InsertOutcome.UPDATED
    assert table.get(first.address) is None
    entry = table.get(moved.address)
    assert entry.port == 2000 and entry.last_query == 5.0 and entry.last_response == 0.0
    assert len(table) == 1
    assert table.closest(far_id(1)) == [moved]


def test_different_id_same_ip_is_rejected():
    table = RoutingTable(OWN)
    first = node(far_id(1), 1, port=1000)
    table.heard_from(first, 0.0, True)
    for port in (1000, 1001):
        impostor = NodeInfo(far_id(2), first.ip, port)
        result = table.heard_from(impostor, 1.0, True)
        assert result.outcome is InsertOutcome.REJECTED
        assert "IP" in result.reason
    assert len(table) == 1
    assert table.get(first.address).id == far_id(1)


def test_own_id_and_bad_ports_are_rejected():
    table = RoutingTable(OWN)
    assert table.heard_from(NodeInfo(OWN, "10.0.0.1", 1), 0.0, True).outcome is InsertOutcome.REJECTED
    for port in (0, -1, 65536):
        result = table.heard_from(NodeInfo(far_id(1), "10.0.0.1", port), 0.0, True)
        assert result.outcome is InsertOutcome.REJECTED
    assert len(table) == 0


def test_remove():
    table = RoutingTable(OWN)
    info = node(far_id(1), 1)
    table.heard_from(info, 0.0, True)
    table.remove((info.ip, info.port + 1))  # wrong port: nothing happens
    assert len(table) == 1
    table.remove(info.address)
    assert len(table) == 0 and table.get(info.address) is None
    # The IP is free again for another id.
    assert table.heard_from(NodeInfo(far_id(2), info.ip, 1), 1.0, True).outcome is InsertOutcome.ADDED


def test_closest_filters():
    table = RoutingTable(OWN)
    answered = [node(far_id(n), n) for n in range(3)]
    queried = [node(far_id(n), n) for n in range(3, 6)]
    for info in answered:
        table.heard_from(info, 0.0, True)
    for info in queried:
        table.heard_from(info, 0.0, False)
    target = far_id(0)
    assert table.closest(target, count=2) == answered[:2]
    # Queriers that never answered are not in the main buckets at all.
    assert table.closest(target, count=100) == answered
    assert table.closest(target, count=100, verified_only=True) == answered
    assert table.closest(target, count=100, exclude=answered[0].address)[0] == answered[1]
    assert table.closest(target, count=100, now=0.0, include_questionable=False) == answered
    assert table.closest(target, count=100, now=GOOD_INTERVAL, include_questionable=False) == []


def test_questionable_returns_least_recently_seen_once():
    table = RoutingTable(OWN)
    infos = [node(far_id(n), n) for n in range(4)]
    for offset, info in enumerate(infos):
        table.heard_from(info, float(offset), True)
    assert table.questionable(10.0, 10) == []  # all good
    later = GOOD_INTERVAL + 10
    assert table.questionable(later, 2) == infos[:2]
    assert table.questionable(later, 10) == infos[2:]  # the first two are pending
    assert table.questionable(later, 10) == []
    table.on_timeout(infos[0].address, later)  # clears pending
    assert table.questionable(later, 10) == [infos[0]]


# --- refresh ----------------------------------------------------------------------------------


def test_stale_buckets_after_15_minutes():
    table = RoutingTable(OWN)
    start = 5000.0
    info = node(far_id(1), 1)
    table.heard_from(info, start, True)
    assert table.stale_buckets(start) == []
    assert table.stale_buckets(start + GOOD_INTERVAL - 1) == []
    assert table.stale_buckets(start + GOOD_INTERVAL) == [0]
    # A query from a known node does not refresh the bucket; an answer does.
    table.heard_from(info, start + 100, False)
    assert table.stale_buckets(start + GOOD_INTERVAL) == [0]
    table.heard_from(info, start + 100, True)
    assert table.stale_buckets(start + GOOD_INTERVAL) == []
    assert table.stale_buckets(start + 100 + GOOD_INTERVAL) == [0]
    table.touch_bucket(0, start + 2000)
    assert table.stale_buckets(start + 2000 + GOOD_INTERVAL - 1) == []
    assert table.stale_buckets(start + 2000, idle=0.0) == [0]


def test_stale_buckets_per_bucket():
    table, _ = _full_far_bucket(0.0)
    count = len(table.buckets)
    assert table.stale_buckets(GOOD_INTERVAL + K) == list(range(count))
    table.touch_bucket(0, GOOD_INTERVAL)
    assert table.stale_buckets(GOOD_INTERVAL + K) == list(range(1, count))


@pytest.mark.parametrize("k", [1, 3, 8])
def test_many_random_nodes_fill_the_table_sensibly(k):
    rng = random.Random(k)
    own = NodeId.random(rng)
    table = RoutingTable(own, k=k)
    for n in range(2000):
        table.heard_from(NodeInfo(NodeId.random(rng), f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1),
                         0.0, rng.random() < 0.5)
    check_invariants(table)
    # With 2000 uniformly random ids, the far buckets are all full.
    assert all(len(bucket.nodes) == k for bucket in table.buckets[:5])
    assert len(table.buckets) > 5


def test_same_id_at_a_second_ip_is_rejected():
    own = NodeId(bytes(20))
    table = RoutingTable(own)
    other = NodeId(b"\x80" + bytes(19))
    assert table.heard_from(NodeInfo(other, "127.0.0.2", 6881), 0.0, True).outcome is InsertOutcome.ADDED
    result = table.heard_from(NodeInfo(other, "127.0.0.3", 6881), 0.0, True)
    assert result.outcome is InsertOutcome.REJECTED
    assert [entry.ip for entry in table] == ["127.0.0.2"]


# --- BEP 42 preferences and id changes -------------------------------------------------------

from mldht.bep42 import is_secure_id, secure_node_id  # noqa: E402


def _secure_node(ip: str, seed: int) -> NodeInfo:
    return NodeInfo(secure_node_id(ip, random.Random(seed)), ip, 6881)


def test_enforcing_table_rejects_ids_that_do_not_match_their_ip():
    table = RoutingTable(NodeId(bytes(20)), verify=is_secure_id, enforce=True)
    bad = NodeInfo(NodeId(b"\xff" * 20), "198.51.100.1", 6881)
    assert table.heard_from(bad, 0.0, responded=True).outcome is InsertOutcome.REJECTED
    good = _secure_node("198.51.100.2", 1)
    assert table.heard_from(good, 0.0, responded=True).outcome is InsertOutcome.ADDED
    local = NodeInfo(NodeId(b"\xfe" * 20), "192.168.1.5", 6881)  # exempt: any id
    assert table.heard_from(local, 0.0, responded=True).outcome is InsertOutcome.ADDED


def test_full_bucket_prefers_a_verified_node():
    own = NodeId(bytes(20))
    table = RoutingTable(own, k=2, verify=is_secure_id)
    # Two unverified nodes far from us (first bit 1) fill the far bucket once it exists.
    near = NodeInfo(NodeId(b"\x00\x01" + bytes(18)), "198.51.100.9", 1)
    table.heard_from(near, 0.0, responded=True)
    far = [NodeInfo(NodeId(bytes([0x80 | i]) + bytes(19)), f"198.51.100.{10 + i}", 1)
           for i in range(2)]
    for node in far:
        table.heard_from(node, 0.0, responded=True)
    while True:  # a verified id in the same far bucket
        candidate = _secure_node("203.0.113.7", random.randrange(1 << 30))
        if candidate.id[0] & 0x80:
            break
    result = table.heard_from(candidate, 1.0, responded=True)
    assert result.outcome is InsertOutcome.ADDED, result
    assert table.get(candidate.address) is not None
    assert sum(table.get(node.address) is not None for node in far) == 1
    plain = RoutingTable(own, k=2, verify=is_secure_id, prefer_verified=False)
    for node in (near, *far):
        plain.heard_from(node, 0.0, responded=True)
    assert plain.heard_from(candidate, 1.0, responded=True).outcome is InsertOutcome.REPLACEMENT


def test_a_node_that_changes_id_twice_is_distrusted():
    table = RoutingTable(NodeId(bytes(20)))
    address = ("198.51.100.5", 6881)
    first = NodeInfo(NodeId(b"\x11" * 20), *address)
    second = NodeInfo(NodeId(b"\x22" * 20), *address)
    third = NodeInfo(NodeId(b"\x33" * 20), *address)
    table.heard_from(first, 0.0, responded=True)
    assert table.id_changed(address, second.id, 10.0)  # a restart: believed
    assert table.get(address) is None
    assert table.heard_from(second, 10.0, responded=True).outcome is InsertOutcome.ADDED
    assert not table.id_changed(address, third.id, 20.0)  # again, soon: distrusted
    assert table.heard_from(third, 20.0, responded=True).outcome is InsertOutcome.REJECTED
    later = 20.0 + 15 * 60 + 1
    assert table.heard_from(third, later, responded=True).outcome is InsertOutcome.ADDED


def test_table_moves_to_a_new_own_id_with_its_nodes():
    table = RoutingTable(NodeId(bytes(20)))
    rng = random.Random(3)
    nodes = [NodeInfo(NodeId(rng.randbytes(20)), f"198.51.{i}.1", 6881) for i in range(40)]
    for node in nodes:
        table.heard_from(node, 5.0, responded=True)
    moved = table.with_own_id(NodeId(b"\xaa" * 20))
    assert moved.own_id == NodeId(b"\xaa" * 20)
    kept = {entry.address for entry in moved}
    assert len(kept) >= min(len(table), 8) and kept <= {node.address for node in nodes}
    assert all(entry.last_response == 5.0 for entry in moved)


def test_a_table_moved_to_a_new_own_id_keeps_its_rules():
    table = RoutingTable(NodeId(bytes(20)), extended=True, prefer_fast=True, fast_margin=2.0,
                         native_codec=False)
    moved = table.with_own_id(NodeId(b"\xaa" * 20))
    assert (moved.extended, moved.prefer_fast, moved.fast_margin, moved._krpc) == \
        (True, True, 2.0, None)


def test_an_entry_keeps_the_v_of_the_last_message_that_had_one():
    from mldht.compact import NodeInfo
    from mldht.ids import NodeId
    table = RoutingTable(NodeId(bytes(20)), verify=None)
    node = NodeInfo(NodeId(b"\x80" + bytes(19)), "10.0.0.1", 6881)
    table.heard_from(node, 1.0, responded=True, version=b"LT\x02\x00")
    assert table.get(node.address).version == b"LT\x02\x00"
    table.heard_from(node, 2.0, responded=False)  # a message without v keeps the last
    assert table.get(node.address).version == b"LT\x02\x00"
    table.heard_from(node, 3.0, responded=True, version=b"LT\x02\x01")
    assert table.get(node.address).version == b"LT\x02\x01"


def test_an_extended_table_holds_more_in_its_farthest_buckets_and_k_in_the_rest():
    from mldht.routing import EXTENDED_FACTORS, EXTENDED_MARGIN
    rng = random.Random(7)
    own = NodeId.random(rng)
    plain = RoutingTable(own)
    extended = RoutingTable(own, extended=True)
    for n in range(60000):
        node = NodeInfo(NodeId.random(rng), f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 6881)
        plain.heard_from(node, 0.0, responded=True)
        extended.heard_from(node, 0.0, responded=True)
    assert all(len(b.nodes) <= K for b in plain.buckets)
    depth = len(extended.buckets)
    assert depth - 1 - 3 >= EXTENDED_MARGIN  # deep enough for all four to be extended
    for index, bucket in enumerate(extended.buckets[:-1]):
        wanted = K * EXTENDED_FACTORS[index] if index < len(EXTENDED_FACTORS) else K
        assert bucket.capacity == wanted
        if index < 6:  # 60,000 random nodes fill these (bucket 3 alone is offered thousands)
            assert len(bucket.nodes) == wanted, index
    assert extended.buckets[-1].capacity == K
    assert len(extended) > len(plain) + sum(K * (f - 1) for f in EXTENDED_FACTORS) - K
    # Every lookup towards the far half starts closer: the closest of 128 rather than 8.
    targets = [NodeId.random(rng) for _ in range(200)]
    far = [t for t in targets if t[0] >> 7 != own[0] >> 7]

    def shared(table, target):
        best = table.closest(target, count=1)[0]
        return 160 - (int.from_bytes(best.id, "big") ^ int.from_bytes(target, "big")).bit_length()
    assert (sum(shared(extended, t) for t in far) / len(far)
            >= sum(shared(plain, t) for t in far) / len(far) + 3)


def test_an_extended_table_keeps_k_a_bucket_until_it_is_deep():
    """In a small network the farthest buckets stay at k: a join that let bucket 0 take
    128 nodes left most nodes of a 100-node network without any in their sibling buckets."""
    from mldht.routing import EXTENDED_MARGIN
    rng = random.Random(8)
    own = NodeId.random(rng)
    table = RoutingTable(own, extended=True)
    n = 0
    while len(table.buckets) < EXTENDED_MARGIN:
        node = NodeInfo(NodeId.random(rng), f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 6881)
        table.heard_from(node, 0.0, responded=True)
        n += 1
    assert all(bucket.capacity == K for bucket in table.buckets)
    while len(table.buckets) < EXTENDED_MARGIN + 1:
        node = NodeInfo(NodeId.random(rng), f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 6881)
        table.heard_from(node, 0.0, responded=True)
        n += 1
    assert table.buckets[0].capacity == 16 * K and table.buckets[1].capacity == K
    # The room it gained is filled from its replacement cache at once.
    assert len(table.buckets[0].nodes) == 2 * K and not table.buckets[0].replacements


@pytest.mark.parametrize("prefer_fast", [False, True])
def test_a_clearly_faster_node_takes_the_slowest_place_in_a_full_bucket(prefer_fast):
    """libtorrent's rule (`prefer_fast`): in a full bucket that cannot split, a node that
    answered clearly faster replaces the slowest good node of its sub-prefix, which waits in
    the replacement cache; jitter (under FAST_MARGIN) changes nothing."""
    from mldht.routing import FAST_MARGIN
    table = RoutingTable(NodeId(bytes(20)), k=2, verify=None, prefer_verified=False,
                         prefer_fast=prefer_fast)

    def far(tag: int) -> NodeInfo:  # the half of the keyspace away from our id
        return NodeInfo(NodeId(bytes([0x80 | tag]) + bytes(19)), f"10.7.0.{tag}", 6881)

    near = NodeInfo(NodeId(bytes([0x01]) + bytes(19)), "10.7.1.1", 6881)
    table.heard_from(far(1), 0.0, responded=True, rtt=0.400)
    table.heard_from(far(2), 0.0, responded=True, rtt=0.100)
    table.heard_from(near, 0.0, responded=True, rtt=0.100)  # splits: the far bucket is full
    assert {entry.info for entry in table.buckets[0].nodes} == {far(1), far(2)}
    # Not clearly faster than the slowest (0.4 s): waits in the replacement cache.
    result = table.heard_from(far(3), 1.0, responded=True, rtt=0.400 / FAST_MARGIN + 0.01)
    assert result.outcome is InsertOutcome.REPLACEMENT
    result = table.heard_from(far(4), 2.0, responded=True, rtt=0.050)
    in_bucket = {entry.info for entry in table.buckets[0].nodes}
    if prefer_fast:
        assert result.outcome is InsertOutcome.ADDED and in_bucket == {far(2), far(4)}
        assert far(1) in {entry.info for entry in table.buckets[0].replacements}
    else:
        assert result.outcome is InsertOutcome.REPLACEMENT and in_bucket == {far(1), far(2)}
    # An entry's round trip is smoothed over its answers.
    table.heard_from(far(2), 3.0, responded=True, rtt=0.500)
    entry = next(e for e in table.buckets[0].nodes if e.info == far(2))
    assert entry.rtt == pytest.approx(0.100 * 0.75 + 0.500 * 0.25)


@pytest.mark.parametrize("prefer_fast", [False, True])
def test_a_node_of_an_empty_sub_prefix_takes_a_place_in_a_full_bucket(prefer_fast):
    """libtorrent's rule (`prefer_fast`): a full bucket whose nodes crowd in some of its
    sub-prefixes (the log2(capacity) bits after its own) takes a node from an empty one,
    even a slow one, in place of the slowest node of a crowded sub-prefix; a node of an
    occupied sub-prefix must be clearly faster than that sub-prefix's slowest."""
    table = RoutingTable(NodeId(bytes(20)), k=4, verify=None, prefer_verified=False,
                         prefer_fast=prefer_fast)

    def far(slot: int, tag: int) -> NodeInfo:  # bucket 0; sub-prefix: the 2 bits after
        first = 0x80 | slot << 5 | tag
        return NodeInfo(NodeId(bytes([first]) + bytes(19)), f"10.8.{slot}.{tag}", 6881)

    rtts = {far(0, 1): 0.300, far(0, 2): 0.100, far(0, 3): 0.200, far(1, 1): 0.100}
    for node, rtt in rtts.items():
        table.heard_from(node, 0.0, responded=True, rtt=rtt)
    table.heard_from(NodeInfo(NodeId(bytes([0x01]) + bytes(19)), "10.8.9.9", 6881), 0.0,
                     responded=True, rtt=0.1)  # splits: bucket 0 is full and stays so
    assert {entry.info for entry in table.buckets[0].nodes} == set(rtts)
    # Sub-prefix 1 holds one node: a node there no faster does not displace it.
    result = table.heard_from(far(1, 2), 1.0, responded=True, rtt=0.100)
    assert result.outcome is InsertOutcome.REPLACEMENT
    # Sub-prefix 2 is empty: a slow node there takes the place of sub-prefix 0's slowest.
    result = table.heard_from(far(2, 1), 2.0, responded=True, rtt=0.900)
    in_bucket = {entry.info for entry in table.buckets[0].nodes}
    if prefer_fast:
        assert result.outcome is InsertOutcome.ADDED
        assert in_bucket == {far(0, 2), far(0, 3), far(1, 1), far(2, 1)}
        assert far(0, 1) in {entry.info for entry in table.buckets[0].replacements}
    else:
        assert result.outcome is InsertOutcome.REPLACEMENT and in_bucket == set(rtts)


@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_the_fast_margin_says_how_much_faster_a_newcomer_must_be(margin):
    """`fast_margin` 1: a newcomer faster at all takes the slowest place of its sub-prefix
    (libtorrent's rule); 2 (the default): it must answer twice as fast, and 50 ms sooner."""
    table = RoutingTable(NodeId(bytes(20)), k=2, verify=None, prefer_verified=False,
                         prefer_fast=True, fast_margin=margin)

    def far(tag: int) -> NodeInfo:  # bucket 0, sub-prefix 0 (the bit after the first)
        return NodeInfo(NodeId(bytes([0x80 | tag]) + bytes(19)), f"10.9.0.{tag}", 6881)

    table.heard_from(far(1), 0.0, responded=True, rtt=0.300)
    table.heard_from(far(2), 0.0, responded=True, rtt=0.100)
    table.heard_from(NodeInfo(NodeId(bytes([0x01]) + bytes(19)), "10.9.1.1", 6881), 0.0,
                     responded=True, rtt=0.1)  # splits: bucket 0 stays full
    result = table.heard_from(far(3), 1.0, responded=True, rtt=0.250)
    in_bucket = {entry.info for entry in table.buckets[0].nodes}
    if margin == 1.0:
        assert result.outcome is InsertOutcome.ADDED and in_bucket == {far(2), far(3)}
    else:
        assert result.outcome is InsertOutcome.REPLACEMENT and in_bucket == {far(1), far(2)}
    # As fast as the slowest is never enough.
    result = table.heard_from(far(4), 2.0, responded=True,
                              rtt=max(entry.rtt for entry in table.buckets[0].nodes))
    assert result.outcome is InsertOutcome.REPLACEMENT


class _AlwaysScanning(RoutingTable):
    """The table without `Bucket.good_until`: every scan for bad and questionable nodes."""

    def _all_good(self, bucket, now):
        return False


@pytest.mark.parametrize("extended", [False, True])
def test_skipping_the_scans_of_good_buckets_changes_no_decision(extended):
    """Seeded random walks of answers, queries, timeouts and long silences, on a table that
    skips the scans while `good_until` says every node is good and on one that always
    scans: the same outcomes, the same nodes, the same pings asked for; and whenever a
    bucket is said to be all good, every node in it is."""
    for seed in range(40):
        walk = random.Random(seed)
        own = NodeId(walk.randbytes(20))
        tables = [RoutingTable(own, extended=extended, prefer_fast=True),
                  _AlwaysScanning(own, extended=extended, prefer_fast=True)]
        ids = [NodeId(bytes([own[0] ^ (0x80 >> walk.randrange(3))]) + walk.randbytes(19))
               for _ in range(300)]
        now = 0.0
        for _ in range(600):
            now += walk.choice([0.5, 3.0, 60.0, 400.0, GOOD_INTERVAL])
            action = walk.randrange(4)
            which = walk.randrange(len(ids))
            if action >= 2:  # timeouts of nodes in the table, so that some turn bad
                held = [ids.index(e.id) for e in tables[0]]
                which = walk.choice(held) if held else which
            node = NodeInfo(ids[which], f"10.{which // 250}.{which % 250}.1", 6881)
            outcomes = []
            for table in tables:
                if action < 2:
                    outcome = table.heard_from(node, now, responded=action == 0,
                                               rtt=0.05 + (which % 7) / 10)
                else:
                    outcome = table.on_timeout(node.address, now)
                outcomes.append(outcome)
            assert outcomes[0] == outcomes[1]
            assert [(e.address, e.failures) for e in tables[0]] == \
                [(e.address, e.failures) for e in tables[1]]
            for bucket in tables[0].buckets:
                if tables[0]._all_good(bucket, now):
                    assert all(e.state(now) is NodeState.GOOD for e in bucket.nodes)
