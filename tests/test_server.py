"""Tests of mldht.server: the sans-I/O QueryHandler answering incoming KRPC queries."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mldht.compact import NodeInfo
from mldht.ids import InfoHash, NodeId, distance
from mldht.krpc import (
    METHOD_UNKNOWN, PROTOCOL_ERROR, AnnouncePeer, Error, FindNode, GetPeers, Ping, Response,
    UnknownQuery, decode_message, encode_message,
)
from mldht.peerstore import PeerStore
from mldht.routing import RoutingTable
from mldht.server import MAX_PEERS_PER_REPLY, MAX_REPLY_BYTES, QueryHandler
from mldht.tokens import TokenManager

OWN = NodeId(b"\x55" * 20)
QUERIER = NodeId(b"\x66" * 20)
HASH = InfoHash(b"\x11" * 20)
OTHER_HASH = InfoHash(b"\x12" * 20)
SRC4 = ("198.51.100.7", 40000)
SRC6 = ("2001:db8:ffff::7", 40001)
VERSION = b"ML\x00\x01"


class DualStackHandler:
    """The two query handlers of a dual-stack node (one per socket): queries go to the one of
    their source's family, which answers `want` for the other family from its sibling."""

    def __init__(self, v4: QueryHandler, v6: QueryHandler) -> None:
        self.v4, self.v6 = v4, v6
        v4.sibling_table = lambda: v6.table
        v6.sibling_table = lambda: v4.table

    def handle(self, query, source, now):
        return (self.v6 if ":" in source[0] else self.v4).handle(query, source, now)


class Setup:
    def __init__(self, seed: int = 0, v4: int = 20, v6: int = 12, unverified: int = 5) -> None:
        rng = random.Random(seed)
        self.table = RoutingTable(OWN)
        self.table6 = RoutingTable(OWN)
        self.tokens = TokenManager(0.0, random.Random(seed + 1))
        self.peers = PeerStore()
        self.handler = DualStackHandler(
            QueryHandler(OWN, self.table, self.tokens, self.peers, random.Random(seed + 2),
                         version=VERSION),
            QueryHandler(OWN, self.table6, self.tokens, self.peers, random.Random(seed + 3),
                         version=VERSION))
        self.v4 = [NodeInfo(NodeId.random(rng), f"10.0.0.{n + 1}", 6881) for n in range(v4)]
        self.v6 = [NodeInfo(NodeId.random(rng), f"2001:db8::{n + 1:x}", 6881) for n in range(v6)]
        self.unverified = [NodeInfo(NodeId.random(rng), f"10.1.0.{n + 1}", 6881)
                           for n in range(unverified)]
        for info in self.v4:
            self.table.heard_from(info, 0.0, responded=True)
        for info in self.v6:
            self.table6.heard_from(info, 0.0, responded=True)
        for info in self.unverified:
            self.table.heard_from(info, 0.0, responded=False)

    def closest(self, target: bytes, family: list[NodeInfo], count: int = 8) -> list[NodeInfo]:
        in_table = {entry.address for table in (self.table, self.table6) for entry in table}
        present = [info for info in family if info.address in in_table]
        return sorted(present, key=lambda info: distance(info.id, target))[:count]


def round_trip(reply):
    """The reply as the requester sees it (and a check that it encodes, small enough)."""
    data = encode_message(reply)
    assert len(data) <= MAX_REPLY_BYTES
    return decode_message(data)


def get_peers(tid=b"gp", info_hash=HASH, want=()):
    return GetPeers(transaction_id=tid, sender_id=QUERIER, info_hash=info_hash, want=want)


def announce(token, port=6881, implied_port=False, info_hash=HASH):
    return AnnouncePeer(transaction_id=b"an", sender_id=QUERIER, info_hash=info_hash, token=token,
                        port=port, implied_port=implied_port)


# --- ping and find_node --------------------------------------------------------------------------


def test_ping():
    s = Setup()
    reply = s.handler.handle(Ping(transaction_id=b"p1", sender_id=QUERIER), SRC4, 1.0)
    assert isinstance(reply, Response)
    assert reply.transaction_id == b"p1"
    assert reply.sender_id == OWN
    assert reply.version == VERSION
    assert reply.requester == SRC4  # BEP 42: tell the querier its address
    assert reply.nodes is None and reply.nodes6 is None and reply.values is None
    assert reply.token is None
    assert round_trip(reply) == reply


def test_find_node_returns_the_8_closest_ipv4_nodes_by_default():
    s = Setup()
    target = NodeId.random(random.Random(9))
    reply = s.handler.handle(FindNode(transaction_id=b"f", sender_id=QUERIER, target=target), SRC4, 1.0)
    assert isinstance(reply, Response)
    assert reply.nodes == s.closest(target, s.v4)
    assert len(reply.nodes) == 8
    assert reply.nodes6 is None
    assert reply.token is None and reply.values is None
    assert round_trip(reply) == reply


def test_find_node_from_ipv6_source_returns_nodes6_by_default():
    s = Setup()
    target = NodeId.random(random.Random(9))
    reply = s.handler.handle(FindNode(transaction_id=b"f", sender_id=QUERIER, target=target), SRC6, 1.0)
    assert reply.nodes is None
    assert reply.nodes6 == s.closest(target, s.v6)
    assert all(node.is_ipv6 for node in reply.nodes6)


@pytest.mark.parametrize("want, has_nodes, has_nodes6", [
    ((b"n4",), True, False),
    ((b"n6",), False, True),
    ((b"n4", b"n6"), True, True),
    ((b"n6", b"n4", b"xx"), True, True),
    ((b"xx",), True, False),  # nothing known asked for: the source's family
])
def test_find_node_want(want, has_nodes, has_nodes6):
    s = Setup()
    target = NodeId.random(random.Random(4))
    query = FindNode(transaction_id=b"f", sender_id=QUERIER, target=target, want=want)
    reply = s.handler.handle(query, SRC4, 1.0)
    assert (reply.nodes is not None) == has_nodes
    assert (reply.nodes6 is not None) == has_nodes6
    if has_nodes:
        assert reply.nodes == s.closest(target, s.v4)
    if has_nodes6:
        assert reply.nodes6 == s.closest(target, s.v6)
    assert round_trip(reply) == reply


def test_find_node_exact_target_comes_first():
    s = Setup()
    wanted = s.v4[5]
    reply = s.handler.handle(FindNode(transaction_id=b"f", sender_id=QUERIER, target=wanted.id), SRC4, 1.0)
    assert reply.nodes[0] == wanted


def test_find_node_lists_only_verified_nodes_and_not_the_requester():
    s = Setup(v4=3, v6=0, unverified=5)
    requester = s.v4[0]
    reply = s.handler.handle(FindNode(transaction_id=b"f", sender_id=requester.id, target=requester.id),
                             requester.address, 1.0)
    assert sorted(reply.nodes, key=str) == sorted(s.v4[1:], key=str)


def test_find_node_with_an_empty_table():
    s = Setup(v4=0, v6=0, unverified=0)
    reply = s.handler.handle(FindNode(transaction_id=b"f", sender_id=QUERIER, target=QUERIER), SRC4, 1.0)
    assert reply.nodes == []
    assert round_trip(reply).nodes == []


# --- get_peers ------------------------------------------------------------------------------------


def test_get_peers_without_peers_returns_token_and_nodes():
    s = Setup()
    reply = s.handler.handle(get_peers(), SRC4, 10.0)
    assert isinstance(reply, Response)
    assert reply.transaction_id == b"gp"
    assert reply.values is None
    assert reply.nodes == s.closest(HASH, s.v4)
    assert reply.token
    assert s.tokens.is_valid(reply.token, SRC4[0], HASH, 11.0)
    assert not s.tokens.is_valid(reply.token, SRC6[0], HASH, 11.0)
    assert not s.tokens.is_valid(reply.token, SRC4[0], OTHER_HASH, 11.0)
    assert round_trip(reply) == reply


def test_get_peers_returns_stored_values():
    s = Setup()
    stored = {(f"203.0.113.{n}", 5000 + n) for n in range(1, 11)}
    for address in stored:
        s.peers.announce(HASH, address, 0.0)
    reply = s.handler.handle(get_peers(), SRC4, 5.0)
    assert reply.token and set(reply.values) == stored and len(reply.values) == 10
    assert reply.nodes == s.closest(HASH, s.v4)  # nodes as well: harmless, helps the lookup
    decoded = round_trip(reply)
    assert set(decoded.values) == stored
    # Another infohash has no values.
    assert s.handler.handle(get_peers(info_hash=OTHER_HASH), SRC4, 5.0).values is None


def test_get_peers_values_follow_the_requester_family():
    s = Setup()
    v4 = {(f"203.0.113.{n}", 5000) for n in range(1, 6)}
    v6 = {(f"2001:db8:1::{n}", 5000) for n in range(1, 6)}
    for address in v4 | v6:
        s.peers.announce(HASH, address, 0.0)
    assert set(s.handler.handle(get_peers(), SRC4, 1.0).values) == v4
    assert set(s.handler.handle(get_peers(), SRC6, 1.0).values) == v6


def test_get_peers_expired_peers_are_not_returned():
    s = Setup()
    s.peers.announce(HASH, ("203.0.113.1", 1), 0.0)
    assert s.handler.handle(get_peers(), SRC4, 60.0).values == [("203.0.113.1", 1)]
    assert s.handler.handle(get_peers(), SRC4, 31 * 60.0).values is None


@pytest.mark.parametrize("source, make_peer", [
    (SRC4, lambda n: (f"10.{n // 256}.{n % 256}.9", 1 + n)),
    (SRC6, lambda n: (f"2001:db8:2::{n:x}", 1 + n)),
])
@pytest.mark.parametrize("want", [(), (b"n4", b"n6")])
def test_get_peers_reply_fits_1400_bytes_with_500_peers(source, make_peer, want):
    s = Setup(v4=40, v6=40)
    stored = {make_peer(n) for n in range(500)}
    for address in sorted(stored):
        s.peers.announce(HASH, address, 0.0)
    query = get_peers(tid=b"t" * 16, want=want)
    reply = s.handler.handle(query, source, 1.0)
    data = encode_message(reply)
    assert len(data) <= MAX_REPLY_BYTES
    assert 0 < len(reply.values) <= MAX_PEERS_PER_REPLY
    assert len(set(reply.values)) == len(reply.values)
    assert set(reply.values) <= stored
    decoded = decode_message(data)
    assert decoded.values == reply.values and decoded.token == reply.token
    # It uses the room it has: at least as many peers as fit in half a datagram.
    per_peer = 21 if ":" in source[0] else 8
    assert len(reply.values) >= min(MAX_PEERS_PER_REPLY, (MAX_REPLY_BYTES // 2) // per_peer)


@given(st.integers(min_value=0, max_value=600), st.booleans(), st.booleans(),
       st.sampled_from([(), (b"n4",), (b"n6",), (b"n4", b"n6")]),
       st.binary(max_size=64), st.integers(min_value=0, max_value=2**32))
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_get_peers_reply_always_fits(peer_count, ipv6_source, ipv6_peers, want, tid, seed):
    s = Setup(seed=seed % 5, v4=12, v6=12, unverified=0)
    for n in range(peer_count):
        address = (f"2001:db8:3::{n:x}", n + 1) if ipv6_peers else (f"10.9.{n // 256}.{n % 256}", n + 1)
        s.peers.announce(HASH, address, 0.0)
    source = SRC6 if ipv6_source else SRC4
    reply = s.handler.handle(get_peers(tid=tid, want=want), source, 1.0)
    data = encode_message(reply)
    assert len(data) <= MAX_REPLY_BYTES
    decoded = decode_message(data)
    assert decoded.token == reply.token
    if peer_count and ipv6_source == ipv6_peers:
        assert decoded.values
    else:
        assert decoded.values is None


# --- announce_peer -------------------------------------------------------------------------------


def _token(s: Setup, source=SRC4, info_hash=HASH, now=0.0) -> bytes:
    reply = s.handler.handle(get_peers(info_hash=info_hash), source, now)
    return reply.token


def test_announce_with_valid_token_stores_the_explicit_port():
    s = Setup()
    token = _token(s, now=10.0)
    reply = s.handler.handle(announce(token, port=51413), SRC4, 20.0)
    assert isinstance(reply, Response)
    assert reply.transaction_id == b"an" and reply.sender_id == OWN
    assert s.peers.get(HASH, 21.0, 100, random.Random(0)) == [(SRC4[0], 51413)]
    # And it is handed out to the next get_peers.
    assert s.handler.handle(get_peers(), ("192.0.2.99", 1), 22.0).values == [(SRC4[0], 51413)]


def test_announce_with_implied_port_uses_the_source_port():
    s = Setup()
    token = _token(s)
    reply = s.handler.handle(announce(token, port=51413, implied_port=True), SRC4, 1.0)
    assert isinstance(reply, Response)
    assert s.peers.get(HASH, 2.0, 100, random.Random(0)) == [SRC4]
    reply = s.handler.handle(announce(token, port=None, implied_port=True), SRC4, 3.0)
    assert isinstance(reply, Response)
    assert s.peers.get(HASH, 4.0, 100, random.Random(0)) == [SRC4]


def test_announce_from_ipv6():
    s = Setup()
    token = _token(s, source=SRC6)
    assert isinstance(s.handler.handle(announce(token, port=7000), SRC6, 1.0), Response)
    assert s.peers.get(HASH, 2.0, 100, random.Random(0), ipv6=True) == [(SRC6[0], 7000)]


def _assert_rejected(s: Setup, reply) -> None:
    assert isinstance(reply, Error)
    assert reply.code == PROTOCOL_ERROR == 203
    assert reply.transaction_id == b"an"
    assert "token" in reply.message
    assert len(s.peers) == 0 and s.peers.peer_count() == 0
    assert round_trip(reply) == reply


@pytest.mark.parametrize("garbage", [b"x", b"\x00" * 8, b"aoeusnth", b"\xff" * 20])
def test_announce_with_bad_token_is_rejected(garbage):
    s = Setup()
    _token(s)
    _assert_rejected(s, s.handler.handle(announce(garbage), SRC4, 1.0))


def test_announce_with_a_token_issued_to_another_ip_is_rejected():
    s = Setup()
    token = _token(s, source=("192.0.2.1", 6881))
    _assert_rejected(s, s.handler.handle(announce(token), SRC4, 1.0))
    # Same IP, other port: accepted (tokens are bound to the IP only).
    assert isinstance(s.handler.handle(announce(token), ("192.0.2.1", 9999), 1.0), Response)


def test_announce_with_a_token_for_another_infohash_is_rejected():
    s = Setup()
    token = _token(s, info_hash=OTHER_HASH)
    _assert_rejected(s, s.handler.handle(announce(token), SRC4, 1.0))


def test_announce_with_an_expired_token_is_rejected():
    s = Setup()
    token = _token(s, now=0.0)
    _assert_rejected(s, s.handler.handle(announce(token), SRC4, 10 * 60.0 + 1))


def test_announce_with_a_token_from_another_node_is_rejected():
    s = Setup(seed=0)
    other = Setup(seed=10)
    token = _token(other)
    _assert_rejected(s, s.handler.handle(announce(token), SRC4, 1.0))


def test_announce_token_still_valid_after_five_minutes():
    s = Setup()
    token = _token(s, now=0.0)
    assert isinstance(s.handler.handle(announce(token), SRC4, 5 * 60.0 + 30), Response)
    assert s.peers.peer_count() == 1


# --- unknown methods ------------------------------------------------------------------------------


def test_unknown_method_is_error_204():
    s = Setup()
    query = UnknownQuery(transaction_id=b"u", sender_id=QUERIER, name=b"vote")
    reply = s.handler.handle(query, SRC4, 1.0)
    assert isinstance(reply, Error)
    assert reply.code == METHOD_UNKNOWN == 204
    assert reply.transaction_id == b"u"
    assert "vote" in reply.message
    assert round_trip(reply) == reply


def test_unknown_method_with_target_is_answered_like_find_node():
    s = Setup()
    target = NodeId.random(random.Random(5))
    query = UnknownQuery(transaction_id=b"u", sender_id=QUERIER, name=b"sample_infohashes",
                         target=target)
    reply = s.handler.handle(query, SRC4, 1.0)
    assert isinstance(reply, Response)
    assert reply.nodes == s.closest(target, s.v4)
    assert reply.token is None


def test_unknown_method_with_info_hash_is_answered_like_get_peers():
    s = Setup()
    s.peers.announce(HASH, ("203.0.113.5", 5), 0.0)
    query = UnknownQuery(transaction_id=b"u", sender_id=QUERIER, name=b"get_peers2", info_hash=HASH,
                         target=NodeId(b"\x00" * 20))
    reply = s.handler.handle(query, SRC4, 1.0)
    assert isinstance(reply, Response)
    assert reply.token and s.tokens.is_valid(reply.token, SRC4[0], HASH, 1.0)
    assert reply.nodes == s.closest(HASH, s.v4)
    assert reply.values == [("203.0.113.5", 5)]


def test_decoded_unknown_queries_are_handled():
    s = Setup()
    data = (b"d1:ad2:id20:" + bytes(QUERIER) + b"6:target20:" + bytes(OWN) + b"e1:q3:foo1:t2:xx1:y1:qe")
    reply = s.handler.handle(decode_message(data), SRC4, 1.0)
    assert isinstance(reply, Response) and reply.nodes
    data = b"d1:ad2:id20:" + bytes(QUERIER) + b"e1:q3:foo1:t2:xx1:y1:qe"
    reply = s.handler.handle(decode_message(data), SRC4, 1.0)
    assert isinstance(reply, Error) and reply.code == 204


def test_want_of_a_family_without_a_table_falls_back_to_the_source_family():
    s = Setup()
    alone = QueryHandler(OWN, s.table, s.tokens, s.peers, random.Random(1))  # no sibling
    target = NodeId.random(random.Random(4))
    reply = alone.handle(FindNode(transaction_id=b"f", sender_id=QUERIER, target=target,
                                  want=(b"n6",)), SRC4, 1.0)
    assert reply.nodes6 is None and reply.nodes == s.closest(target, s.v4)
    both = alone.handle(FindNode(transaction_id=b"f", sender_id=QUERIER, target=target,
                                 want=(b"n4", b"n6")), SRC4, 1.0)
    assert both.nodes6 is None and both.nodes == reply.nodes
