"""The quick path for plain ping, find_node and get_peers (`QueryHandler.quick_reply`) must
give byte for byte the reply of the full path (`encode_message(handle(decode_message(...)))`),
and must leave every other query to the full path."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mldht.compact import NodeInfo
from mldht.errors import KrpcDecodeError
from mldht.ids import NodeId
from mldht.krpc import decode_datagram, decode_message, encode_bencode, encode_message
from mldht.peerstore import PeerStore
from mldht.routing import RoutingTable
from mldht.server import QueryHandler
from mldht.tokens import TokenManager

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SWARM_IPV4 = bytes([1]) * 20   # more IPv4 peers than fit one reply
SWARM_IPV6 = bytes([2]) * 20   # more IPv6 peers than fit one reply
SWARM_SMALL = bytes([3]) * 20  # a few peers of both families
SOURCES = [("198.51.100.7", 40000), ("10.0.0.3", 6881), ("2001:db8::7", 40001)]


def _handler(version: bytes | None) -> QueryHandler:
    rng = random.Random(5)
    own = NodeId(rng.randbytes(20))
    peers = PeerStore()
    for n in range(300):
        peers.announce(SWARM_IPV4, (f"10.1.{n // 250}.{n % 250 + 1}", 6881), 0.0, seed=n % 2 == 0)
        peers.announce(SWARM_IPV6, (f"2001:db8:1::{n + 1:x}", 6881), 0.0)
    for n in range(3):
        peers.announce(SWARM_SMALL, (f"10.2.0.{n + 1}", 7000 + n), 0.0)
        peers.announce(SWARM_SMALL, (f"2001:db8:2::{n + 1:x}", 7000 + n), 0.0)
    table = RoutingTable(own)
    for n in range(400):  # some answered us, some only queried us, some failed
        info = NodeInfo(NodeId(rng.randbytes(20)), f"10.3.{n // 250}.{n % 250 + 1}", 6881)
        table.heard_from(info, 0.0, responded=n % 4 != 0)
        if n % 7 == 0:
            table.on_timeout(info.address, 1.0)
            table.on_timeout(info.address, 2.0)
    # The querier SOURCES[1] is in the table: it must not be listed back to itself.
    table.heard_from(NodeInfo(NodeId(rng.randbytes(20)), *SOURCES[1]), 0.0, responded=True)
    return QueryHandler(own, table, TokenManager(0.0, random.Random(9)), peers,
                        random.Random(1), version=version)


HANDLERS = {None: _handler(None), b"ML\x00\x07": _handler(b"ML\x00\x07")}

ids = st.binary(min_size=20, max_size=20)
targets = st.one_of(ids, st.sampled_from([SWARM_IPV4, SWARM_IPV6, SWARM_SMALL]))
plain_arguments = st.one_of(
    st.fixed_dictionaries({b"id": ids}).map(lambda a: (b"ping", a)),
    st.fixed_dictionaries({b"id": ids, b"target": targets}).map(lambda a: (b"find_node", a)),
    st.fixed_dictionaries({b"id": ids, b"info_hash": targets}).map(lambda a: (b"get_peers", a)),
)
odd_values = st.one_of(st.integers(-2, 3), st.binary(max_size=24),
                       st.lists(st.binary(max_size=3), max_size=2))


@st.composite
def queries(draw) -> bytes:
    method, arguments = draw(plain_arguments)
    message = {b"t": draw(st.binary(max_size=66)), b"y": b"q", b"q": method, b"a": arguments}
    if draw(st.booleans()):
        message[b"v"] = draw(st.one_of(st.binary(max_size=6), st.integers(0, 2)))
    if draw(st.booleans()):
        message[b"ro"] = draw(st.integers(-1, 2))
    if draw(st.integers(0, 3)) == 0:  # not plain: an extra argument, or a field of a bad type
        key = draw(st.sampled_from([b"want", b"scrape", b"noseed", b"id", b"target",
                                    b"info_hash", b"zz"]))
        arguments[key] = draw(odd_values)
    if draw(st.integers(0, 5)) == 0:
        message[draw(st.sampled_from([b"t", b"a", b"q"]))] = draw(odd_values)
    return encode_bencode(message)


@SETTINGS
@given(datagram=queries(), source=st.sampled_from(SOURCES),
       version=st.sampled_from(sorted(HANDLERS, key=lambda v: v or b"")),
       now=st.floats(0.0, 2000.0))
def test_quick_reply_is_the_full_reply_byte_for_byte(datagram, source, version, now):
    handler = HANDLERS[version]
    handler.rng.seed(now)  # the same random choice of peers on both paths
    quick = handler.quick_reply(decode_datagram(datagram), source, now)
    try:
        query = decode_message(datagram)
    except KrpcDecodeError:
        assert quick is None  # malformed: the full path answers 203
        return
    if quick is None:
        return
    handler.rng.seed(now)
    full = encode_message(handler.handle(query, source, now))
    assert quick == full


def test_plain_queries_do_take_the_quick_path():
    handler = HANDLERS[b"ML\x00\x07"]
    replies = []
    for method, arguments in [(b"ping", {}), (b"find_node", {b"target": b"\x00" * 20}),
                              (b"get_peers", {b"info_hash": b"\x00" * 20}),
                              (b"get_peers", {b"info_hash": SWARM_SMALL}),
                              (b"get_peers", {b"info_hash": SWARM_IPV4})]:
        message = {b"t": b"aa", b"y": b"q", b"q": method, b"a": {b"id": b"\x01" * 20, **arguments}}
        reply = handler.quick_reply(message, SOURCES[0], 10.0)
        assert reply is not None
        replies.append(decode_message(reply))
    assert replies[1].nodes and len(replies[1].nodes) == 8
    assert replies[2].token and replies[2].values is None
    assert len(replies[3].values) == 3
    assert 50 < len(replies[4].values) <= 100
    for arguments in [{b"want": [b"n4"]}, {b"scrape": 1}, {b"noseed": 1}]:
        message = {b"t": b"aa", b"y": b"q", b"q": b"get_peers",
                   b"a": {b"id": b"\x01" * 20, b"info_hash": SWARM_SMALL, **arguments}}
        assert handler.quick_reply(message, SOURCES[0], 10.0) is None
