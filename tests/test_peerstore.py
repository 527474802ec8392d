"""Tests of mldht.peerstore: announced peers with expiry, caps and random sampling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mldht.peerstore import MAX_INFOHASHES, MAX_PEERS_PER_INFOHASH, PEER_LIFETIME, PeerStore

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

H1, H2, H3 = (bytes([n]) * 20 for n in (1, 2, 3))


def peer(n: int) -> tuple[str, int]:
    return (f"10.0.{n // 256}.{n % 256}", 6881 + n % 7)


def peer6(n: int) -> tuple[str, int]:
    return (f"2001:db8::{n:x}", 6881)


def everything(store: PeerStore, info_hash: bytes, now: float, ipv6=None) -> set:
    return set(store.get(info_hash, now, 10**6, random.Random(0), ipv6=ipv6))


def test_defaults():
    assert PEER_LIFETIME == 30 * 60
    store = PeerStore()
    assert (store.max_infohashes, store.max_peers) == (MAX_INFOHASHES, MAX_PEERS_PER_INFOHASH)


def test_announce_and_get():
    store = PeerStore()
    assert len(store) == 0 and H1 not in store
    store.announce(H1, peer(1), 0.0)
    store.announce(H1, peer(2), 0.0)
    store.announce(H2, peer(1), 0.0)
    assert len(store) == 2 and H1 in store and H3 not in store
    assert store.peer_count() == 3
    assert sorted(store.info_hashes()) == [H1, H2]
    assert everything(store, H1, 1.0) == {peer(1), peer(2)}
    assert everything(store, H2, 1.0) == {peer(1)}
    assert everything(store, H3, 1.0) == set()
    # Announcing twice does not duplicate.
    store.announce(H1, peer(1), 2.0)
    assert store.peer_count() == 3
    assert sorted(store.get(H1, 3.0, 10, random.Random(0))) == sorted([peer(1), peer(2)])


def test_expiry_30_minutes_after_last_announce():
    store = PeerStore()
    store.announce(H1, peer(1), 0.0)
    store.announce(H1, peer(2), 100.0)
    assert everything(store, H1, PEER_LIFETIME - 1) == {peer(1), peer(2)}
    assert everything(store, H1, PEER_LIFETIME) == {peer(2)}
    assert everything(store, H1, PEER_LIFETIME + 99) == {peer(2)}
    assert everything(store, H1, PEER_LIFETIME + 100) == set()
    assert H1 not in store and len(store) == 0  # empty swarms are dropped


def test_reannounce_refreshes():
    store = PeerStore()
    store.announce(H1, peer(1), 0.0)
    store.announce(H1, peer(2), 10.0)
    store.announce(H1, peer(1), 1000.0)  # refreshed: now the newest
    assert everything(store, H1, PEER_LIFETIME + 20) == {peer(1)}
    assert everything(store, H1, PEER_LIFETIME + 999) == {peer(1)}
    assert everything(store, H1, PEER_LIFETIME + 1000) == set()


def test_expire_counts_and_drops_empty_swarms():
    store = PeerStore()
    store.announce(H1, peer(1), 0.0)
    store.announce(H1, peer(2), 50.0)
    store.announce(H2, peer(3), 10.0)
    store.announce(H3, peer(4), 500.0)
    assert store.expire(PEER_LIFETIME - 1) == 0
    assert store.expire(PEER_LIFETIME + 20) == 2
    assert sorted(store.info_hashes()) == [H1, H3]
    assert store.peer_count() == 2
    assert store.expire(PEER_LIFETIME + 1000) == 2
    assert len(store) == 0 and store.peer_count() == 0


def test_custom_lifetime():
    store = PeerStore(lifetime=10.0)
    store.announce(H1, peer(1), 0.0)
    assert everything(store, H1, 9.9) == {peer(1)}
    assert everything(store, H1, 10.0) == set()


def test_cap_on_peers_per_infohash_drops_the_oldest_announce():
    store = PeerStore(max_peers=3)
    for n in range(3):
        store.announce(H1, peer(n), float(n))
    store.announce(H1, peer(0), 5.0)  # refresh: peer 1 is now the oldest
    store.announce(H1, peer(9), 6.0)
    assert everything(store, H1, 7.0) == {peer(0), peer(2), peer(9)}
    for n in range(10, 20):
        store.announce(H1, peer(n), 10.0 + n)
    assert everything(store, H1, 30.0) == {peer(17), peer(18), peer(19)}
    assert store.peer_count() == 3


def test_cap_on_infohashes_drops_the_smallest_swarm():
    store = PeerStore(max_infohashes=2)
    store.announce(H1, peer(1), 0.0)
    store.announce(H1, peer(2), 0.0)
    store.announce(H2, peer(3), 0.0)
    store.announce(H3, peer(4), 1.0)
    assert len(store) == 2
    assert H2 not in store  # the swarm with the fewest peers made room
    assert everything(store, H1, 2.0) == {peer(1), peer(2)}
    assert everything(store, H3, 2.0) == {peer(4)}
    # Existing infohashes still accept peers when the store is full.
    store.announce(H1, peer(5), 3.0)
    assert len(store) == 2 and store.peer_count() == 4


def test_cap_on_infohashes_prefers_dropping_expired_swarms():
    store = PeerStore(max_infohashes=2)
    store.announce(H1, peer(1), 0.0)                 # will expire
    for n in range(2, 6):
        store.announce(H2, peer(n), 1000.0)
    store.announce(H3, peer(9), PEER_LIFETIME + 10)  # H1 has expired: it goes, not H2
    assert sorted(store.info_hashes()) == [H2, H3]
    assert store.peer_count() == 5


def test_get_returns_random_subsets_within_limit():
    store = PeerStore()
    stored = {peer(n) for n in range(50)}
    for n in range(50):
        store.announce(H1, peer(n), 0.0)
    rng = random.Random(42)
    subsets = set()
    for _ in range(30):
        result = store.get(H1, 1.0, 8, rng)
        assert len(result) == 8
        assert len(set(result)) == 8  # no duplicates
        assert set(result) <= stored
        subsets.add(frozenset(result))
    assert len(subsets) > 20  # random, not always the same 8
    assert store.get(H1, 1.0, 0, rng) == []
    assert store.get(H1, 1.0, -5, rng) == []
    assert set(store.get(H1, 1.0, 50, rng)) == stored
    assert set(store.get(H1, 1.0, 500, rng)) == stored
    # A seeded generator gives reproducible samples.
    assert store.get(H1, 1.0, 8, random.Random(5)) == store.get(H1, 1.0, 8, random.Random(5))


def test_get_respects_the_family_filter():
    store = PeerStore()
    v4 = {peer(n) for n in range(30)}
    v6 = {peer6(n) for n in range(30)}
    for address in sorted(v4 | v6):
        store.announce(H1, address, 0.0)
    rng = random.Random(1)
    assert everything(store, H1, 1.0) == v4 | v6
    assert everything(store, H1, 1.0, ipv6=False) == v4
    assert everything(store, H1, 1.0, ipv6=True) == v6
    for _ in range(20):
        assert set(store.get(H1, 1.0, 10, rng, ipv6=True)) <= v6
        assert len(store.get(H1, 1.0, 10, rng, ipv6=True)) == 10
        assert set(store.get(H1, 1.0, 10, rng, ipv6=False)) <= v4
        assert len(store.get(H1, 1.0, 10, rng, ipv6=None)) == 10
    only4 = PeerStore()
    only4.announce(H1, peer(1), 0.0)
    assert only4.get(H1, 1.0, 10, rng, ipv6=True) == []


@pytest.mark.parametrize("max_infohashes, max_peers", [(1, 1), (2, 3), (4, 2)])
def test_caps_hold_under_load(max_infohashes, max_peers):
    store = PeerStore(max_infohashes=max_infohashes, max_peers=max_peers)
    rng = random.Random(7)
    for step in range(500):
        store.announce(bytes([rng.randrange(10)]) * 20, peer(rng.randrange(40)), float(step))
        assert len(store) <= max_infohashes
        for info_hash in store.info_hashes():
            assert len(everything(store, info_hash, float(step))) <= max_peers


announces = st.lists(
    st.tuples(st.integers(min_value=0, max_value=4),          # infohash
              st.integers(min_value=0, max_value=15),         # peer (some IPv6)
              st.floats(min_value=0, max_value=PEER_LIFETIME / 2)),  # time gap
    max_size=80)


@given(announces, st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=6))
@SETTINGS
def test_store_agrees_with_a_model(ops, max_infohashes, max_peers):
    store = PeerStore(max_infohashes=max_infohashes, max_peers=max_peers)
    model: dict[bytes, dict[tuple[str, int], float]] = {}
    now = 0.0
    for info_n, peer_n, gap in ops:
        now += gap
        info_hash = bytes([info_n]) * 20
        address = peer6(peer_n) if peer_n % 3 == 0 else peer(peer_n)
        store.announce(info_hash, address, now)
        model.setdefault(info_hash, {})[address] = now
        assert len(store) <= max_infohashes
        assert store.peer_count() <= max_infohashes * max_peers
        # The peer just announced is always there.
        assert address in everything(store, info_hash, now)
        for stored_hash in store.info_hashes():
            got = everything(store, stored_hash, now)
            assert len(got) <= max_peers
            # Everything returned was announced to that infohash less than the lifetime ago.
            for address_got in got:
                assert now - model[stored_hash][address_got] < PEER_LIFETIME


@given(announces)
@SETTINGS
def test_without_caps_store_equals_live_model(ops):
    store = PeerStore(max_infohashes=100, max_peers=100)
    model: dict[bytes, dict[tuple[str, int], float]] = {}
    now = 0.0
    for info_n, peer_n, gap in ops:
        now += gap
        info_hash = bytes([info_n]) * 20
        address = peer6(peer_n) if peer_n % 3 == 0 else peer(peer_n)
        store.announce(info_hash, address, now)
        model.setdefault(info_hash, {})[address] = now
        for known, peers in model.items():
            live = {a for a, when in peers.items() if now - when < PEER_LIFETIME}
            assert everything(store, known, now) == live
            assert everything(store, known, now, ipv6=True) == {a for a in live if ":" in a[0]}
            assert everything(store, known, now, ipv6=False) == {a for a in live if ":" not in a[0]}


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 9), st.booleans(), st.integers(0, 400),
                          st.sampled_from([None, False, True]), st.integers(1, 6)),
                max_size=60))
def test_listing_by_family_follows_announces_evictions_and_expiry(operations):
    """Each family's peers, as listed (whole or sampled), are always those of a plain model:
    the swarm's cached listing and its IPv6 count must follow every change."""
    store = PeerStore(max_peers=6, lifetime=1000.0)
    model: dict[tuple[str, int], float] = {}  # oldest announce first
    now = 0.0
    for number, is_v6, step, family, limit in operations:
        now += step
        address = peer6(number) if is_v6 else peer(number)
        model = {p: at for p, at in model.items() if now - at < 1000.0}
        model.pop(address, None)
        if len(model) >= 6:
            del model[next(iter(model))]
        model[address] = now
        store.announce(H1, address, now)
        expected = {p for p in model if family is None or (":" in p[0]) == family}
        assert everything(store, H1, now, family) == expected
        sampled = store.get(H1, now, limit, random.Random(number), ipv6=family)
        assert len(sampled) == min(limit, len(expected)) and set(sampled) <= expected
        packed = store.get_packed(H1, now, limit, random.Random(number), bool(family))
        assert len(packed) == min(limit, len({p for p in model if (":" in p[0]) == bool(family)}))
