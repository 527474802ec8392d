"""Tests of mldht.engine.silences and of the engine asking lately silent addresses last."""

from __future__ import annotations

from mldht.engine.silences import Silences


def test_a_silence_is_remembered_for_its_memory_then_forgotten():
    silences = Silences(memory=10.0)
    address = ("10.0.0.1", 6881)
    assert not silences.suspected(address, 0.0)
    silences.note(address, 1.0)
    assert silences.suspected(address, 10.9)
    assert not silences.suspected(address, 11.0)
    assert len(silences) == 0  # an expired entry is dropped when read


def test_an_answer_clears_a_silence():
    silences = Silences()
    address = ("10.0.0.1", 6881)
    silences.note(address, 0.0)
    silences.forget(address)
    assert not silences.suspected(address, 1.0)
    silences.forget(("10.0.0.2", 1))  # forgetting an unknown address is no error


def test_the_memory_is_bounded_and_forgets_the_oldest_silence_first():
    silences = Silences(capacity=3)
    addresses = [(f"10.0.0.{n}", 6881) for n in range(5)]
    for n, address in enumerate(addresses):
        silences.note(address, float(n))
    silences.note(addresses[2], 9.0)  # silent again: now the newest
    silences.note(("10.0.1.1", 1), 10.0)
    assert len(silences) == 3
    assert [silences.suspected(a, 11.0) for a in addresses] == [False, False, True, False, True]


# --- in the engine --------------------------------------------------------------------------

import random  # noqa: E402

from enginenet import build_network  # noqa: E402
from mldht import NodeConfig, NodeId  # noqa: E402
from mldht.ids import distance  # noqa: E402


def _closest_live(engines, net, target, asker):
    live = [e for e in engines if e is not asker and net.address_of(e) not in net.down]
    return sorted((e.families[0].identity.node_id for e in live),
                  key=lambda node_id: int.from_bytes(node_id, "big") ^ int.from_bytes(target, "big"))


def _queried(net, asker, since):
    return [sent.destination for sent in net.queries_from(asker) if sent.at >= since]


def test_a_second_lookup_asks_what_went_silent_in_the_first_only_last():
    net, engines = build_network(60, seed=21)
    asker = engines[7]
    rng = random.Random(3)
    target = NodeId(rng.randbytes(20))
    # A third of the nodes closest to the target fall silent after the join.
    by_distance = sorted(engines[1:], key=lambda e: int.from_bytes(e.families[0].identity.node_id, "big")
                         ^ int.from_bytes(target, "big"))
    silent = {net.address_of(e) for e in by_distance[:30:3] if e is not asker}
    net.down |= silent
    first_at = net.now
    first = net.wait(asker, net.start(asker, lambda e, now: e.start_find_node(target, now)))
    asked_first = set(_queried(net, asker, first_at)) & silent
    assert asked_first, "the first lookup met no silent node: the test proves nothing"
    assert all(asker.silences.suspected(address, net.now) for address in asked_first)
    second_at = net.now
    second = net.wait(asker, net.start(asker, lambda e, now: e.start_find_node(target, now)))
    asked_second = set(_queried(net, asker, second_at)) & silent
    assert not asked_second & asked_first  # others were left to ask
    assert first.passed_over == 0 and second.passed_over > 0
    # Asking the silent ones last loses no live node: each of the 8 closest found is at
    # least as close as the first lookup's, and all are live.
    live = set(_closest_live(engines, net, target, asker))
    assert len(second.closest) == 8 and {node.id for node in second.closest} <= live
    assert all(distance(a.id, target) <= distance(b.id, target)
               for a, b in zip(second.closest, first.closest))
    assert second.elapsed < first.elapsed  # no slot waits out a silent node's soft timeout
    # One comes back and answers: no longer suspected.
    back = sorted(asked_first)[0]
    net.down.discard(back)
    net.wait(asker, net.start(asker, lambda e, now: e.start_ping(back, now)))
    assert not asker.silences.suspected(back, net.now)


def test_without_the_setting_nothing_is_remembered():
    net, engines = build_network(30, seed=22, config=NodeConfig(lookups_ask_silent_last=False))
    asker = engines[4]
    net.down |= {net.address_of(e) for e in engines[10:20]}
    target = NodeId(random.Random(5).randbytes(20))
    net.wait(asker, net.start(asker, lambda e, now: e.start_find_node(target, now)))
    assert asker.suspected is None and len(asker.silences) == 0
