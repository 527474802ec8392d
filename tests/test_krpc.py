"""Tests of mldht.krpc: typed KRPC messages, canonical encoding and strict decoding."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alarm import time_limit
from mldht.compact import NodeInfo
from mldht.errors import KrpcDecodeError
from mldht.ids import InfoHash, NodeId
from mldht.krpc import (
    GENERIC_ERROR, MAX_TRANSACTION_ID_LENGTH, METHOD_UNKNOWN, PROTOCOL_ERROR, AnnouncePeer, Error,
    FindNode, GetPeers, Message, Ping, Query, Response, UnknownQuery, decode_message,
    encode_message,
)

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FUZZ_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow])

KNOWN_METHODS = {b"ping", b"find_node", b"get_peers", b"announce_peer"}
ID_A = b"abcdefghij0123456789"
ID_M = b"mnopqrstuvwxyz123456"


# --- an independent, strict bencode codec (does not share code with the module) ------------


def bencode(value) -> bytes:
    """Canonical bencode: dictionary keys sorted as raw byte strings."""
    if isinstance(value, bool):
        raise TypeError("no booleans in bencode")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(key) + bencode(value[key]) for key in sorted(value)) + b"e"
    raise TypeError(type(value).__name__)


class NotCanonical(Exception):
    pass


def strict_bdecode(data: bytes):
    """Decode, insisting on canonical form (sorted unique keys, no leading zeros)."""

    def parse(pos: int):
        head = data[pos:pos + 1]
        if head == b"i":
            end = data.index(b"e", pos)
            text = data[pos + 1:end]
            if text != str(int(text)).encode():
                raise NotCanonical(f"non-canonical integer {text!r}")
            return int(text), end + 1
        if head.isdigit():
            colon = data.index(b":", pos)
            text = data[pos:colon]
            if not text.isdigit() or text != str(int(text)).encode():
                raise NotCanonical(f"non-canonical length {text!r}")
            end = colon + 1 + int(text)
            if end > len(data):
                raise NotCanonical("truncated string")
            return data[colon + 1:end], end
        if head == b"l":
            pos += 1
            items = []
            while data[pos:pos + 1] != b"e":
                item, pos = parse(pos)
                items.append(item)
            return items, pos + 1
        if head == b"d":
            pos += 1
            result = {}
            previous = None
            while data[pos:pos + 1] != b"e":
                key, pos = parse(pos)
                if not isinstance(key, bytes):
                    raise NotCanonical("non-string key")
                if previous is not None and key <= previous:
                    raise NotCanonical(f"key {key!r} not after {previous!r}")
                previous = key
                result[key], pos = parse(pos)
            return result, pos + 1
        raise NotCanonical(f"bad byte at {pos}")

    value, end = parse(0)
    if end != len(data):
        raise NotCanonical("trailing data")
    return value


def assert_canonical(data: bytes) -> dict:
    decoded = strict_bdecode(data)
    assert bencode(decoded) == data
    return decoded


# --- strategies -------------------------------------------------------------------------------

node_ids = st.binary(min_size=20, max_size=20).map(NodeId)
info_hashes = st.binary(min_size=20, max_size=20).map(InfoHash)
transaction_ids = st.binary(max_size=MAX_TRANSACTION_ID_LENGTH)
versions = st.none() | st.binary(max_size=6)
ports = st.integers(min_value=0, max_value=0xFFFF)
ipv4_text = st.binary(min_size=4, max_size=4).map(lambda raw: socket.inet_ntop(socket.AF_INET, raw))
# The text form that unpacking produces (inet_ntop), so that decoded NodeInfos compare equal.
ipv6_text = st.binary(min_size=16, max_size=16).map(lambda raw: socket.inet_ntop(socket.AF_INET6, raw))
addresses = st.tuples(ipv4_text | ipv6_text, ports)
nodes4 = st.builds(NodeInfo, node_ids, ipv4_text, ports)
nodes6 = st.builds(NodeInfo, node_ids, ipv6_text, ports)
wants = st.lists(st.sampled_from([b"n4", b"n6"]) | st.binary(max_size=3), max_size=3).map(tuple)

bencode_values = st.recursive(
    st.integers(min_value=-2**70, max_value=2**70) | st.binary(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.binary(max_size=8), children, max_size=4),
    max_leaves=12,
)


def extra_dicts(reserved):
    return st.dictionaries(st.binary(max_size=10).filter(lambda key: key not in reserved),
                           bencode_values, max_size=3)


common = dict(transaction_id=transaction_ids, version=versions, sender_id=node_ids,
              read_only=st.booleans())

pings = st.builds(Ping, **common)
find_nodes = st.builds(FindNode, target=node_ids, want=wants, **common)
get_peers_queries = st.builds(GetPeers, info_hash=info_hashes, want=wants, **common)
port_choices = (st.tuples(st.integers(min_value=1, max_value=0xFFFF), st.booleans())
                | st.just((None, True)))
announces = st.builds(
    lambda port_implied, **kwargs: AnnouncePeer(port=port_implied[0], implied_port=port_implied[1],
                                                **kwargs),
    port_choices, info_hash=info_hashes, token=st.binary(min_size=1, max_size=20), **common)
unknown_queries = st.builds(
    UnknownQuery,
    name=st.binary(max_size=16).filter(lambda name: name not in KNOWN_METHODS),
    target=st.none() | node_ids,
    info_hash=st.none() | info_hashes,
    raw_arguments=extra_dicts({b"id", b"target", b"info_hash"}),
    **common,
)
responses = st.builds(
    Response,
    transaction_id=transaction_ids, version=versions, sender_id=node_ids,
    nodes=st.none() | st.lists(nodes4, max_size=8),
    nodes6=st.none() | st.lists(nodes6, max_size=8),
    values=st.none() | st.lists(addresses, max_size=10),
    token=st.none() | st.binary(max_size=20),
    requester=st.none() | addresses,
    extra=extra_dicts({b"id", b"nodes", b"nodes6", b"values", b"token"}),
)
errors = st.builds(Error, transaction_id=transaction_ids, version=versions,
                   code=st.integers(min_value=-2**40, max_value=2**40), message=st.text(max_size=40))
queries = pings | find_nodes | get_peers_queries | announces | unknown_queries
messages = queries | responses | errors


# --- round trips ------------------------------------------------------------------------------


@given(pings | find_nodes | get_peers_queries | announces | responses | errors)
@SETTINGS
def test_round_trip(message):
    data = encode_message(message)
    decoded = decode_message(data)
    assert type(decoded) is type(message)
    assert decoded == message
    assert encode_message(decoded) == data


@given(unknown_queries)
@SETTINGS
def test_unknown_query_round_trip(message):
    data = encode_message(message)
    decoded = decode_message(data)
    assert type(decoded) is UnknownQuery
    assert decoded.name == message.name
    assert decoded.sender_id == message.sender_id
    assert decoded.target == message.target
    assert decoded.info_hash == message.info_hash
    assert decoded.transaction_id == message.transaction_id
    assert decoded.version == message.version
    assert decoded.read_only == message.read_only
    for key, value in message.raw_arguments.items():
        assert decoded.raw_arguments[key] == value
    assert encode_message(decoded) == data


@given(messages)
@SETTINGS
def test_encoding_is_canonical_and_well_formed(message):
    data = encode_message(message)
    decoded = assert_canonical(data)
    assert decoded[b"t"] == message.transaction_id
    if message.version is None:
        assert b"v" not in decoded
    else:
        assert decoded[b"v"] == message.version
    if isinstance(message, Query):
        assert decoded[b"y"] == b"q"
        assert decoded[b"a"][b"id"] == message.sender_id
        assert (b"ro" in decoded) == message.read_only
        expected_name = message.name if isinstance(message, UnknownQuery) else message.method
        assert decoded[b"q"] == expected_name
    elif isinstance(message, Response):
        assert decoded[b"y"] == b"r"
        assert decoded[b"r"][b"id"] == message.sender_id
        assert (b"ip" in decoded) == (message.requester is not None)
        if message.nodes is not None:
            assert len(decoded[b"r"][b"nodes"]) == 26 * len(message.nodes)
        if message.nodes6 is not None:
            assert len(decoded[b"r"][b"nodes6"]) == 38 * len(message.nodes6)
        if message.values is not None:
            assert [len(v) for v in decoded[b"r"][b"values"]] == [
                18 if ":" in ip else 6 for ip, _ in message.values]
    else:
        assert decoded[b"y"] == b"e"
        assert decoded[b"e"] == [message.code, message.message.encode()]


def test_canonical_key_order_is_raw_bytes():
    # Uppercase sorts before lowercase, and "nodes" before "nodes6" before "token" before "values".
    message = Response(transaction_id=b"t", sender_id=NodeId(ID_A), nodes=[], nodes6=[],
                       values=[], token=b"x", extra={b"Z": 1, b"\xff": 2, b"a": 3})
    data = encode_message(message)
    assert data == (b"d1:rd1:Zi1e1:ai3e2:id20:" + ID_A + b"5:nodes0:6:nodes60:5:token1:x"
                    b"6:valuesle1:\xffi2ee1:t1:t1:y1:re")
    assert_canonical(data)


# --- BEP 5 examples ---------------------------------------------------------------------------


def test_bep5_ping_query_byte_exact():
    expected = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    message = Ping(transaction_id=b"aa", sender_id=NodeId(ID_A))
    assert encode_message(message) == expected
    decoded = decode_message(expected)
    assert decoded == message
    assert type(decoded.sender_id) is NodeId


def test_bep5_ping_response_byte_exact():
    expected = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"
    message = Response(transaction_id=b"aa", sender_id=NodeId(ID_M))
    assert encode_message(message) == expected
    decoded = decode_message(expected)
    assert decoded == message
    assert decoded.nodes is None and decoded.values is None and decoded.token is None


def test_bep5_find_node_query_byte_exact():
    expected = (b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e"
                b"1:q9:find_node1:t2:aa1:y1:qe")
    message = FindNode(transaction_id=b"aa", sender_id=NodeId(ID_A), target=NodeId(ID_M))
    assert encode_message(message) == expected
    assert decode_message(expected) == message


def test_bep5_get_peers_query_byte_exact():
    expected = (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e"
                b"1:q9:get_peers1:t2:aa1:y1:qe")
    message = GetPeers(transaction_id=b"aa", sender_id=NodeId(ID_A), info_hash=InfoHash(ID_M))
    assert encode_message(message) == expected
    decoded = decode_message(expected)
    assert decoded == message
    assert type(decoded.info_hash) is InfoHash


def test_bep5_get_peers_response_with_values():
    data = (b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee"
            b"1:t2:aa1:y1:re")
    decoded = decode_message(data)
    assert isinstance(decoded, Response)
    assert decoded.transaction_id == b"aa"
    assert decoded.sender_id == ID_A
    assert decoded.token == b"aoeusnth"
    assert decoded.values == [
        (".".join(str(c) for c in b"axje"), int.from_bytes(b".u", "big")),
        (".".join(str(c) for c in b"idht"), int.from_bytes(b"nm", "big")),
    ]
    assert decoded.values[0] == ("97.120.106.101", 11893)
    assert decoded.nodes is None
    assert encode_message(decoded) == data


@pytest.mark.parametrize("data", [
    b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re",
    b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re",
])
def test_bep5_nodes_examples_are_rejected_for_their_placeholder_length(data):
    # "def456..." is a 9-byte placeholder, not a multiple of 26.
    with pytest.raises(KrpcDecodeError, match="nodes") as info:
        decode_message(data)
    assert info.value.transaction_id == b"aa"
    assert info.value.is_query is False


def test_bep5_nodes_examples_with_real_nodes():
    node = NodeInfo(NodeId(ID_M), "1.2.3.4", 6881)
    message = Response(transaction_id=b"aa", sender_id=NodeId(ID_A), nodes=[node], token=b"aoeusnth")
    data = encode_message(message)
    assert data == (b"d1:rd2:id20:abcdefghij01234567895:nodes26:" + ID_M + b"\x01\x02\x03\x04\x1a\xe1"
                    b"5:token8:aoeusnthe1:t2:aa1:y1:re")
    assert decode_message(data).nodes == [node]


def test_bep5_announce_peer_query_byte_exact():
    expected = (b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
                b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe")
    message = AnnouncePeer(transaction_id=b"aa", sender_id=NodeId(ID_A), info_hash=InfoHash(ID_M),
                           token=b"aoeusnth", port=6881, implied_port=True)
    assert encode_message(message) == expected
    decoded = decode_message(expected)
    assert decoded == message
    assert decoded.implied_port is True and decoded.port == 6881


def test_bep5_announce_peer_without_implied_port():
    data = (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456"
            b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe")
    decoded = decode_message(data)
    assert isinstance(decoded, AnnouncePeer)
    assert decoded.implied_port is False and decoded.port == 6881
    assert encode_message(decoded) == data


def test_bep5_error_byte_exact():
    expected = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"
    message = Error(transaction_id=b"aa", code=GENERIC_ERROR, message="A Generic Error Ocurred")
    assert encode_message(message) == expected
    assert decode_message(expected) == message


def test_error_codes():
    assert (GENERIC_ERROR, PROTOCOL_ERROR, METHOD_UNKNOWN) == (201, 203, 204)


def test_optional_top_level_keys():
    data = bencode({b"t": b"x", b"y": b"q", b"q": b"ping", b"v": b"LT\x01\x02", b"ro": 1,
                    b"a": {b"id": ID_A}})
    decoded = decode_message(data)
    assert decoded.version == b"LT\x01\x02"
    assert decoded.read_only is True
    assert encode_message(decoded) == data


def test_error_with_code_only_and_invalid_utf8():
    decoded = decode_message(bencode({b"t": b"x", b"y": b"e", b"e": [202]}))
    assert decoded == Error(transaction_id=b"x", code=202, message="")
    decoded = decode_message(bencode({b"t": b"x", b"y": b"e", b"e": [201, b"bad \xff byte"]}))
    assert decoded.code == 201 and decoded.message == "bad \ufffd byte"


def test_announce_implied_port_with_bad_port_is_accepted():
    base = {b"id": ID_A, b"info_hash": ID_M, b"token": b"tok", b"implied_port": 1}
    for port in (0, 70000, b"6881", -1):
        data = bencode({b"t": b"x", b"y": b"q", b"q": b"announce_peer", b"a": {**base, b"port": port}})
        decoded = decode_message(data)
        assert decoded.implied_port is True and decoded.port is None
    data = bencode({b"t": b"x", b"y": b"q", b"q": b"announce_peer", b"a": base})
    assert decode_message(data).port is None


def test_unknown_query_keeps_target_and_info_hash():
    data = bencode({b"t": b"x", b"y": b"q", b"q": b"vote",
                    b"a": {b"id": ID_A, b"target": ID_M, b"info_hash": ID_M, b"extra": [1]}})
    decoded = decode_message(data)
    assert isinstance(decoded, UnknownQuery)
    assert decoded.name == b"vote"
    assert decoded.target == ID_M and type(decoded.target) is NodeId
    assert decoded.info_hash == ID_M and type(decoded.info_hash) is InfoHash
    assert decoded.raw_arguments[b"extra"] == [1]
    assert encode_message(decoded) == data


def test_unknown_query_encodes_target_and_info_hash_fields():
    message = UnknownQuery(transaction_id=b"x", sender_id=NodeId(ID_A), name=b"sample_infohashes",
                           target=NodeId(ID_M))
    decoded = strict_bdecode(encode_message(message))
    assert decoded[b"a"] == {b"id": ID_A, b"target": ID_M}


# --- unknown keys are ignored -----------------------------------------------------------------


def _query_dict(method=b"ping", **arguments):
    """A query dictionary; keyword arguments become (byte-string keyed) entries of `a`."""
    args = {b"id": ID_A, **{key.encode(): value for key, value in arguments.items()}}
    return {b"t": b"tx", b"y": b"q", b"q": method, b"a": args}


@pytest.mark.parametrize("method, arguments, cls", [
    (b"ping", {}, Ping),
    (b"find_node", {"target": ID_M}, FindNode),
    (b"get_peers", {"info_hash": ID_M}, GetPeers),
    (b"announce_peer", {"info_hash": ID_M, "token": b"tok", "port": 1}, AnnouncePeer),
])
def test_unknown_keys_are_ignored_in_queries(method, arguments, cls):
    plain = decode_message(bencode(_query_dict(method, **arguments)))
    assert type(plain) is cls
    noisy_dict = _query_dict(method, **arguments, zzz=[1, {b"a": b"b"}], AAA=5, future_flag=1)
    noisy_dict[b"foo"] = b"bar"
    noisy_dict[b"ip"] = b"\x00" * 6
    noisy = decode_message(bencode(noisy_dict))
    assert type(noisy) is cls
    assert noisy == plain


def test_unknown_keys_in_responses_are_kept_as_extra():
    body = {b"id": ID_A, b"samples": b"x" * 20, b"interval": 60, b"p": 1}
    decoded = decode_message(bencode({b"t": b"tx", b"y": b"r", b"r": body, b"zz": b"top"}))
    assert isinstance(decoded, Response)
    assert decoded.extra == {b"samples": b"x" * 20, b"interval": 60, b"p": 1}


def test_unknown_keys_are_ignored_in_errors():
    data = bencode({b"t": b"tx", b"y": b"e", b"e": [203, b"bad", b"more"], b"q": b"x"})
    assert decode_message(data) == Error(transaction_id=b"tx", code=203, message="bad")


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"",
    b"garbage",
    b"d1:t2:aa",                  # truncated
    b"d1:t2:aa1:y1:qeXX",         # trailing data
    b"d1:t10:aa1:y1:qe",          # string longer than the data
    b"di1ei2ee",                  # integer key
    b"i1e",
    b"le",
    b"l1:t2:aae",
    b"4:spam",
    b"d1:t2:aa1:y1:q",            # unterminated
    b"\x00" * 10,
    b"l" * 5000,                  # very deep nesting
    b"d1:ai1e-6:",                # negative key length (bencode.py loops forever on it)
    b"d1:ai1e-6:1:t2:aa1:y1:qe",
])
def test_not_bencoded_dict(data):
    with time_limit(2.0):
        with pytest.raises(KrpcDecodeError) as info:
            decode_message(data)
    assert info.value.transaction_id is None
    assert info.value.is_query is False


@pytest.mark.parametrize("message", [
    {b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}},                        # no t
    {b"t": 1, b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}},               # t not a string
    {b"t": [b"aa"], b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}},
    {b"t": b"x" * (MAX_TRANSACTION_ID_LENGTH + 1), b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}},
])
def test_bad_transaction_id(message):
    with pytest.raises(KrpcDecodeError) as info:
        decode_message(bencode(message))
    assert info.value.transaction_id is None


def test_longest_transaction_id_is_accepted():
    tid = b"x" * MAX_TRANSACTION_ID_LENGTH
    assert decode_message(bencode(_query_dict() | {b"t": tid})).transaction_id == tid
    assert decode_message(bencode(_query_dict() | {b"t": b""})).transaction_id == b""


BAD_QUERIES = [
    # (description, message dict, a word the error message must contain)
    ("no a", {b"t": b"tx", b"y": b"q", b"q": b"ping"}, "'a'"),
    ("a not dict", {b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": [ID_A]}, "'a'"),
    ("no q", {b"t": b"tx", b"y": b"q", b"a": {b"id": ID_A}}, "'q'"),
    ("q not str", {b"t": b"tx", b"y": b"q", b"q": 5, b"a": {b"id": ID_A}}, "'q'"),
    ("no id", {b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": {}}, "id"),
    ("short id", _query_dict() | {b"a": {b"id": ID_A[:19]}}, "id"),
    ("long id", _query_dict() | {b"a": {b"id": ID_A + b"x"}}, "id"),
    ("int id", _query_dict() | {b"a": {b"id": 12}}, "id"),
    ("list id", _query_dict() | {b"a": {b"id": [ID_A]}}, "id"),
    ("no id unknown method", _query_dict(b"whatever") | {b"a": {b"target": ID_M}}, "id"),
    ("bad ro", _query_dict() | {b"ro": 2}, "ro"),
    ("string ro", _query_dict() | {b"ro": b"1"}, "ro"),
    ("bad v", _query_dict() | {b"v": 1}, "'v'"),
    ("no target", _query_dict(b"find_node"), "target"),
    ("short target", _query_dict(b"find_node", target=b"x" * 19), "target"),
    ("int target", _query_dict(b"find_node", target=1), "target"),
    ("bad want", _query_dict(b"find_node", target=ID_M, want=b"n4"), "want"),
    ("bad want items", _query_dict(b"find_node", target=ID_M, want=[1]), "want"),
    ("no info_hash", _query_dict(b"get_peers"), "info_hash"),
    ("short info_hash", _query_dict(b"get_peers", info_hash=b"x"), "info_hash"),
    ("bad want gp", _query_dict(b"get_peers", info_hash=ID_M, want={b"n4": 1}), "want"),
    ("announce no info_hash", _query_dict(b"announce_peer", token=b"t", port=1), "info_hash"),
    ("announce no token", _query_dict(b"announce_peer", info_hash=ID_M, port=1), "token"),
    ("announce empty token", _query_dict(b"announce_peer", info_hash=ID_M, token=b"", port=1), "token"),
    ("announce int token", _query_dict(b"announce_peer", info_hash=ID_M, token=5, port=1), "token"),
    ("announce no port", _query_dict(b"announce_peer", info_hash=ID_M, token=b"t"), "port"),
    ("announce port 0", _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", port=0), "port"),
    ("announce port big", _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", port=65536), "port"),
    ("announce port negative", _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", port=-1), "port"),
    ("announce port str", _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", port=b"80"), "port"),
    ("announce implied_port 0 no port",
     _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", implied_port=0), "port"),
    ("announce implied_port 2",
     _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", port=1, implied_port=2), "implied_port"),
    ("announce implied_port str",
     _query_dict(b"announce_peer", info_hash=ID_M, token=b"t", port=1, implied_port=b"1"), "implied_port"),
    ("unknown bad target", _query_dict(b"vote", target=b"short"), "target"),
    ("unknown bad info_hash", _query_dict(b"vote", info_hash=7), "info_hash"),
]


@pytest.mark.parametrize("description, message, word", BAD_QUERIES,
                         ids=[case[0] for case in BAD_QUERIES])
def test_bad_query_keeps_transaction_id(description, message, word):
    with pytest.raises(KrpcDecodeError) as info:
        decode_message(bencode(message))
    assert info.value.transaction_id == b"tx"
    assert info.value.is_query is True
    assert word in str(info.value)


def _response_dict(**body):
    return {b"t": b"tx", b"y": b"r",
            b"r": {b"id": ID_A, **{key.encode(): value for key, value in body.items()}}}


@pytest.mark.parametrize("message", [
    {b"t": b"tx", b"a": {b"id": ID_A}},
    {b"t": b"tx", b"y": b"x", b"a": {b"id": ID_A}},
    {b"t": b"tx", b"y": 1},
    {b"t": b"tx", b"y": b"Q", b"q": b"ping", b"a": {b"id": ID_A}},
])
def test_missing_or_unknown_y_is_not_a_query(message):
    # Not answered (no 203): replying to it would amplify spoofed traffic; libtorrent drops it.
    with pytest.raises(KrpcDecodeError, match="'y'") as info:
        decode_message(bencode(message))
    assert info.value.transaction_id == b"tx"
    assert info.value.is_query is False


BAD_OTHERS = [
    ("no r", {b"t": b"tx", b"y": b"r"}, "'r'"),
    ("r list", {b"t": b"tx", b"y": b"r", b"r": []}, "'r'"),
    ("no r.id", {b"t": b"tx", b"y": b"r", b"r": {}}, "id"),
    ("bad r.id", _response_dict() | {b"r": {b"id": b"x"}}, "id"),
    ("nodes int", _response_dict(nodes=1), "nodes"),
    ("nodes length", _response_dict(nodes=b"x" * 27), "nodes"),
    ("nodes6 length", _response_dict(nodes6=b"x" * 26), "nodes6"),
    ("nodes6 list", _response_dict(nodes6=[b"x" * 38]), "nodes6"),
    ("values string", _response_dict(values=b"x" * 6), "values"),
    ("values entry length", _response_dict(values=[b"x" * 6, b"x" * 7]), "values"),
    ("values entry int", _response_dict(values=[6]), "values"),
    ("token int", _response_dict(token=1), "token"),
    ("ip length", _response_dict() | {b"ip": b"x" * 5}, "ip"),
    ("ip int", _response_dict() | {b"ip": 1}, "ip"),
    ("bad v", _response_dict() | {b"v": [b"x"]}, "'v'"),
    ("e missing", {b"t": b"tx", b"y": b"e"}, "'e'"),
    ("e empty", {b"t": b"tx", b"y": b"e", b"e": []}, "'e'"),
    ("e string", {b"t": b"tx", b"y": b"e", b"e": b"201"}, "'e'"),
    ("e code str", {b"t": b"tx", b"y": b"e", b"e": [b"201", b"x"]}, "'e'"),
    ("e message int", {b"t": b"tx", b"y": b"e", b"e": [201, 5]}, "message"),
]


@pytest.mark.parametrize("description, message, word", BAD_OTHERS,
                         ids=[case[0] for case in BAD_OTHERS])
def test_bad_response_or_error_keeps_transaction_id(description, message, word):
    with pytest.raises(KrpcDecodeError) as info:
        decode_message(bencode(message))
    assert info.value.transaction_id == b"tx"
    assert info.value.is_query is False
    assert word in str(info.value)


# --- fuzzing ----------------------------------------------------------------------------------


def _decode_only_krpc_errors(data: bytes):
    with time_limit(2.0):
        try:
            result = decode_message(data)
        except KrpcDecodeError as exc:
            assert exc.transaction_id is None or isinstance(exc.transaction_id, bytes)
            return None
    assert isinstance(result, (Query, Response, Error))
    assert isinstance(result, Message)
    # Whatever decodes can be encoded again, and decodes to the same thing.
    assert decode_message(encode_message(result)) == result
    return result


@given(st.binary(max_size=200))
@FUZZ_SETTINGS
def test_fuzz_arbitrary_bytes(data):
    _decode_only_krpc_errors(data)


@given(st.binary(max_size=30), st.binary(max_size=30))
@FUZZ_SETTINGS
def test_fuzz_bencode_looking_bytes(prefix, suffix):
    _decode_only_krpc_errors(b"d" + prefix + b"1:t2:aa1:y1:q" + suffix + b"e")


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "digit"]),
              st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255)),
    min_size=1, max_size=4)


@given(messages, mutations)
@FUZZ_SETTINGS
def test_fuzz_mutated_valid_messages(message, edits):
    data = bytearray(encode_message(message))
    for kind, position, byte in edits:
        if not data:
            break
        position %= len(data)
        if kind == "flip":
            data[position] ^= byte or 1
        elif kind == "insert":
            data.insert(position, byte)
        elif kind == "delete":
            del data[position]
        elif kind == "truncate":
            del data[position:]
        else:
            data[position:position] = b"-" + str(byte).encode()
    _decode_only_krpc_errors(bytes(data))


def _replace_at(value, path, replacement):
    """`value` with the item at `path` (a list of indices into dicts' / lists' items) replaced."""
    if not path or not isinstance(value, (dict, list)) or not value:
        return replacement
    index, rest = path[0], path[1:]
    if isinstance(value, dict):
        keys = sorted(value)
        key = keys[index % len(keys)]
        return {**value, key: _replace_at(value[key], rest, replacement)}
    copy = list(value)
    copy[index % len(copy)] = _replace_at(copy[index % len(copy)], rest, replacement)
    return copy


@given(messages, st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4),
       bencode_values)
@FUZZ_SETTINGS
def test_fuzz_structurally_mutated_messages(message, path, replacement):
    structure = strict_bdecode(encode_message(message))
    _decode_only_krpc_errors(bencode(_replace_at(structure, path, replacement)))


message_keys = st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e", b"v", b"ip", b"ro"])
argument_keys = st.sampled_from([b"id", b"target", b"info_hash", b"token", b"port", b"implied_port",
                                 b"want", b"nodes", b"nodes6", b"values"])
plausible = (bencode_values | st.sampled_from([b"q", b"r", b"e", b"ping", b"find_node", b"get_peers",
                                                b"announce_peer", 0, 1, 6881])
             | st.binary(min_size=20, max_size=20) | st.binary(min_size=6, max_size=6)
             | st.lists(st.binary(min_size=6, max_size=6), max_size=3))


@given(st.dictionaries(message_keys,
                       plausible | st.dictionaries(argument_keys, plausible, max_size=6),
                       max_size=7))
@FUZZ_SETTINGS
def test_fuzz_plausible_dictionaries(message):
    _decode_only_krpc_errors(bencode(message))


@given(st.dictionaries(argument_keys, plausible, max_size=7),
       st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"other"]))
@FUZZ_SETTINGS
def test_fuzz_query_arguments(arguments, method):
    data = bencode({b"t": b"tx", b"y": b"q", b"q": method, b"a": arguments})
    with time_limit(2.0):
        try:
            decode_message(data)
        except KrpcDecodeError as exc:
            # Any malformed query can still be answered with error 203.
            assert exc.transaction_id == b"tx"
            assert exc.is_query is True
