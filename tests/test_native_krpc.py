"""The native quick-path codec (native/krpc.c, `mldht._krpc`) against the Python path.

What it reads must be what Python's decoder and `QueryHandler.quick_reply` read; what a
node sends with it must be, byte for byte, what the same node sends without it: for
generated queries, for every datagram of the captures in fixtures/, and for tables that
change under it. Built here (gcc and Python's headers are in CI): the tests import it and
fail where it is missing.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mldht import _krpc  # type: ignore[attr-defined]  # built by pip install
from mldht import native
from mldht.capture import read_datagrams
from mldht.compact import NodeInfo, pack_address
from mldht.engine.core import Engine
from mldht.errors import KrpcDecodeError
from mldht.ids import NodeId
from mldht.krpc import (
    Response, decode_datagram, encode_bencode, interpret_message, response_from_fields,
)
from mldht.routing import RoutingTable

import benchtools
from test_quick_reply import HANDLERS, SOURCES, queries

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FIXTURES = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures")
                  .glob("*.pcap"))
TOP_LEVEL = {b"a", b"q", b"t", b"y", b"v", b"ro"}


def python_reading(datagram: bytes) -> tuple | None:
    """What the Python path reads of a plain query in canonical form, else None."""
    try:
        value = decode_datagram(datagram)
    except KrpcDecodeError:
        return None
    if type(value) is not dict or value.get(b"y") != b"q" or not set(value) <= TOP_LEVEL:
        return None
    if encode_bencode(value) != datagram:
        return None  # not canonical: the native reader leaves it to Python
    if HANDLERS[None].quick_reply(value, SOURCES[0], 0.0) is None:
        return None
    arguments = value[b"a"]
    return (value[b"q"], value[b"t"], arguments[b"id"],
            arguments.get(b"target") or arguments.get(b"info_hash"), value.get(b"v"),
            value.get(b"ro", 0))


@st.composite
def shuffled(draw) -> bytes:
    """A generated query, sometimes with its keys out of order or an extra key on top."""
    datagram = draw(queries())
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return b"d1:zi1e" + datagram[1:]  # an extra key, out of order too
    if choice == 1 and datagram.startswith(b"d1:a"):
        # The same dictionary with `a` last: valid bencode to Python, not canonical.
        value = decode_datagram(datagram)
        arguments = encode_bencode(value.pop(b"a"))
        return encode_bencode(value)[:-1] + b"1:a" + arguments + b"e"
    if choice == 2:
        return datagram + draw(st.sampled_from([b"e", b"x", b"0:"]))
    if choice == 3 and len(datagram) > 3:
        cut = draw(st.integers(1, len(datagram) - 1))
        return datagram[:cut]
    return datagram


@SETTINGS
@given(datagram=shuffled())
def test_the_native_reader_reads_what_python_reads(datagram):
    expected = python_reading(datagram)
    assert _krpc.parse_plain_query(datagram) == expected


def test_the_native_reader_takes_every_plain_form():
    for method, extra in [(b"ping", {}), (b"find_node", {b"target": b"T" * 20}),
                          (b"get_peers", {b"info_hash": b"H" * 20})]:
        for top in [{}, {b"v": b"LT\x01\x02"}, {b"ro": 1}, {b"ro": 0, b"v": b""}]:
            message = {b"t": b"\x00\x01", b"y": b"q", b"q": method,
                       b"a": {b"id": b"I" * 20, **extra}, **top}
            datagram = encode_bencode(message)
            assert _krpc.parse_plain_query(datagram) == python_reading(datagram) is not None
    for odd in [b"d1:ad2:id20:IIIIIIIIIIIIIIIIIIIIe1:q4:ping1:t1:x1:y1:re",  # a reply's y
                b"d1:ad2:id20:IIIIIIIIIIIIIIIIIIIIe1:q4:ping1:t01:x1:y1:qe",  # leading zero
                b"d1:ad2:id20:IIIIIIIIIIIIIIIIIIIIe1:q4:ping2:roi2e1:t1:x1:y1:qe",
                b"d1:ad2:id19:IIIIIIIIIIIIIIIIIIIe1:q4:ping1:t1:x1:y1:qe",
                b"d1:ad2:id20:IIIIIIIIIIIIIIIIIIII6:target20:TTTTTTTTTTTTTTTTTTTTe"
                b"1:q4:ping1:t1:x1:y1:qe",  # a ping with a target is not plain
                b"d1:ad2:id20:IIIIIIIIIIIIIIIIIIIIe1:q4:ping1:t65:" + b"x" * 65 + b"1:y1:qe"]:
        assert _krpc.parse_plain_query(odd) is None


def _compact_closest(table: RoutingTable, target: bytes, count: int, exclude) -> list[bytes]:
    return [info.compact for info in table.closest(target, count, verified_only=True,
                                                  exclude=exclude)]


@pytest.mark.parametrize("ipv6,extended", [(False, False), (True, True)])
def test_closest_compact_follows_every_change_of_the_table(ipv6, extended):
    """Nodes answer, query, time out, move port, change id and go; after each step the
    cached compact forms give what the entries give. (Seeded random walks rather than
    hypothesis: the mistakes this finds need two timeouts of one node between changes,
    which its short examples seldom make.)"""
    for seed in range(120):
        walk = random.Random(seed)
        steps = [(walk.randrange(6), walk.randrange(24), walk.randrange(4))
                 for _ in range(walk.randrange(1, 120))]
        _walk_the_table(steps, ipv6, extended)


def _walk_the_table(steps, ipv6: bool, extended: bool) -> None:
    rng = random.Random(len(steps))
    own = NodeId(rng.randbytes(20))
    table = RoutingTable(own, extended=extended, prefer_fast=True)
    assert table._krpc is not None
    ids = [NodeId(rng.randbytes(20)) for _ in range(60)]
    ips = [f"2001:db8::{n + 1:x}" if ipv6 else f"10.0.{n // 200}.{n % 200 + 1}"
           for n in range(60)]
    now = 0.0
    for action, which, detail in steps:
        now += 1.0
        info = NodeInfo(ids[which], ips[which], 6881)
        if action in (0, 1):
            table.heard_from(info, now, responded=action == 0, rtt=0.05 * (detail + 1))
        elif action == 2:
            table.on_timeout(info.address, now)
        elif action == 3:
            if table.id_changed(info.address, NodeId(rng.randbytes(20)), now):
                ids[which] = NodeId(rng.randbytes(20))
        elif action == 4:
            table.remove(info.address)
        else:
            table.heard_from(NodeInfo(ids[which], ips[which], 6881 + detail), now,
                             responded=True)  # a move to another port when detail > 0
        for target, exclude in [(rng.randbytes(20), None), (ids[which], info.address),
                                (rng.randbytes(20), (ips[which], 6881 + detail))]:
            for count in (8, 1, 64):  # 64: every listable entry
                assert table.closest_compact(target, count, exclude) == b"".join(
                    _compact_closest(table, target, count, exclude))


def _engines(seed: int) -> tuple[Engine, Engine]:
    """A node with the native codec and the same node without it: same ids, same secrets,
    same table (tools/bench/fuzz.py's twins), and one swarm stored."""
    made = benchtools.load("fuzz").twin_engines(seed)
    for engine in made:
        engine.peer_store.announce(b"\x03" * 20, ("10.9.0.1", 6881), 0.0)
    assert made[0]._parse_plain is not None and made[1]._parse_plain is None
    return made[0], made[1]


def _same_output(engines: tuple[Engine, Engine], datagram: bytes, source, now: float) -> None:
    sent = []
    for engine in engines:
        engine.receive_datagram(datagram, source, now)
        sent.append(engine.datagrams_to_send(now))
    assert sent[0] == sent[1]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(datagrams=st.lists(st.tuples(shuffled(), st.sampled_from(SOURCES + [
    ("10.5.0.7", 6881), ("2001:db8:5::8", 6881)])), min_size=1, max_size=12))
def test_a_node_sends_the_same_bytes_with_and_without_the_native_codec(datagrams):
    engines = _engines(3)
    for step, (datagram, source) in enumerate(datagrams):
        _same_output(engines, datagram, source, 10.0 + step)
    assert engines[0].stats.queries_received == engines[1].stats.queries_received
    assert [len(f.table) for f in engines[0].families] == \
        [len(f.table) for f in engines[1].families]


@pytest.mark.parametrize("capture", FIXTURES, ids=lambda path: path.stem)
def test_every_captured_datagram_gets_the_same_reply(capture):
    engines = _engines(4)
    datagrams = [d.payload for d in read_datagrams(capture) if d.payload]
    assert datagrams
    taken = 0
    for step, payload in enumerate(datagrams):
        taken += _krpc.parse_plain_query(payload) is not None
        _same_output(engines, payload, ("10.7.0.1" if step % 3 else "2001:db8:7::1",
                                        40000 + step % 50), 100.0 + step * 0.01)
    # Most captures hold plain queries of their client: the native reader took them.
    if capture.stem != "bep44":
        assert taken > 0


def test_the_environment_turns_the_native_codec_off(monkeypatch):
    monkeypatch.setenv(native.ENVIRONMENT_VARIABLE, "0")
    assert native.module("_krpc") is None and native.describe() == "pure Python"
    assert Engine(0.0)._parse_plain is None
    assert RoutingTable(NodeId(b"\x01" * 20))._krpc is None
    monkeypatch.setenv(native.ENVIRONMENT_VARIABLE, "1")
    assert native.module("_krpc") is _krpc
    assert "quick-path codec" in native.describe()


def test_closest_compact_refuses_what_it_cannot_read():
    with pytest.raises(ValueError):
        _krpc.closest_compact(b"x" * 25, 26, b"t" * 20, 8, b"")
    with pytest.raises(ValueError):
        _krpc.closest_compact(b"", 27, b"t" * 20, 8, b"")
    with pytest.raises(ValueError):
        _krpc.closest_compact(b"", 26, b"t" * 19, 8, b"")
    with pytest.raises(ValueError):
        _krpc.closest_compact(b"", 26, b"t" * 20, 65, b"")
    entries = [bytes([n]) * 20 + pack_address((f"10.0.0.{n}", 6881)) for n in range(1, 30)]
    blob = b"".join(entries)
    assert _krpc.closest_compact(blob, 26, b"\x00" * 20, 3, b"") == b"".join(entries[:3])
    assert _krpc.closest_compact(blob, 26, b"\x00" * 20, 2, entries[0][20:]) == \
        b"".join(entries[1:3])
    assert _krpc.closest_compact(blob, 26, b"\x00" * 20, 0, b"") == b""


# --- replies: the client side (a lookup's, a crawler's) ------------------------------------

compact_nodes = st.integers(0, 8).flatmap(lambda n: st.binary(min_size=26 * n, max_size=26 * n))
compact_nodes6 = st.integers(0, 3).flatmap(lambda n: st.binary(min_size=38 * n, max_size=38 * n))


@st.composite
def replies(draw) -> bytes:
    body = {b"id": draw(st.binary(min_size=20, max_size=20))}
    for key, values in [(b"nodes", compact_nodes), (b"nodes6", compact_nodes6),
                        (b"token", st.binary(max_size=20)),
                        (b"values", st.lists(st.sampled_from([b"\x0a\x00\x00\x01\x1a\xe1",
                                                              b"\x20\x01" + b"\x0d" * 14 + b"\x00\x50"]),
                                             max_size=5)),
                        (b"samples", st.binary(max_size=60)),
                        (b"num", st.integers(-5, 2**70)), (b"interval", st.integers(0, 21600))]:
        if draw(st.booleans()):
            body[key] = draw(values)
    message = {b"t": draw(st.binary(max_size=66)), b"y": b"r", b"r": body}
    if draw(st.booleans()):
        message[b"v"] = draw(st.binary(max_size=6))
    if draw(st.booleans()):
        message[b"ip"] = draw(st.sampled_from([b"\x7f\x00\x00\x01\x1a\xe1", b"\x00" * 18,
                                               b"\x01\x02\x03"]))
    choice = draw(st.integers(0, 7))
    if choice == 0:  # not plain: an odd field or a key of another kind of reply
        body[draw(st.sampled_from([b"nodes", b"id", b"values", b"p", b"v", b"num"]))] = \
            draw(st.one_of(st.integers(0, 3), st.binary(max_size=30), st.lists(st.binary(max_size=7), max_size=2)))
    elif choice == 1:
        message[draw(st.sampled_from([b"y", b"t", b"r", b"e"]))] = draw(st.one_of(
            st.integers(0, 3), st.binary(max_size=3)))
    datagram = encode_bencode(message)
    if choice == 2 and len(datagram) > 3:
        return datagram[:draw(st.integers(1, len(datagram) - 1))]
    if choice == 3:
        return datagram.replace(b"i0e", b"i00e", 1).replace(b"2:id", b"2:id", 1)
    return datagram


def python_response(datagram: bytes):
    try:
        return interpret_message(decode_datagram(datagram), datagram)
    except KrpcDecodeError:
        return None


@SETTINGS
@given(datagram=replies())
def test_the_native_reply_reader_gives_the_python_response(datagram):
    fields = _krpc.parse_reply(datagram)
    expected = python_response(datagram)
    if fields is None:
        # Refused: a reply of another form, or not a reply. What the Python path reads as
        # a plain reply in canonical form must not be refused.
        if isinstance(expected, Response) and encode_bencode(decode_datagram(datagram)) == \
                datagram and set(expected.extra) <= {b"samples", b"num", b"interval"} \
                and set(decode_datagram(datagram)) <= {b"ip", b"r", b"t", b"v", b"y"} \
                and all(type(expected.extra.get(k, 0)) is int and -10**18 < expected.extra.get(k, 0) < 10**18
                        for k in (b"num", b"interval")):
            pytest.fail(f"a plain reply was refused: {datagram!r}")
        return
    assert isinstance(expected, Response)
    assert response_from_fields(fields) == expected


@pytest.mark.parametrize("capture", FIXTURES, ids=lambda path: path.stem)
def test_every_captured_reply_reads_the_same(capture):
    read = 0
    for datagram in read_datagrams(capture):
        fields = _krpc.parse_reply(datagram.payload)
        if fields is not None:
            assert response_from_fields(fields) == python_response(datagram.payload)
            read += 1
    replies_there = sum(isinstance(python_response(d.payload), Response)
                        for d in read_datagrams(capture))
    assert read >= replies_there * 0.5  # most of a client's replies are plain ones


def test_a_lookup_gets_the_same_answers_with_and_without_the_native_reader():
    """Twin engines run the same find_node lookup against the same scripted replies: the
    same queries out, the same result."""
    engines = _engines(8)
    rng = random.Random(8)
    target = rng.randbytes(20)
    handles = [engine.start_find_node(target, 50.0) for engine in engines]
    assert handles[0] == handles[1]
    now = 50.0
    for _ in range(40):
        now += 0.05
        sent = [engine.datagrams_to_send(now) for engine in engines]
        assert sent[0] == sent[1]
        if not sent[0]:
            break
        for data, destination in sent[0]:
            nodes = b"".join(rng.randbytes(20) + bytes([10, 8, rng.randrange(256),
                                                        rng.randrange(1, 255), 0x1a, 0xe1])
                             for _ in range(rng.randrange(9)))
            reply = encode_bencode({b"t": decode_datagram(data)[b"t"], b"y": b"r",
                                    b"ip": b"\x7f\x00\x00\x01\x1a\xe1",
                                    b"r": {b"id": rng.randbytes(20), b"nodes": nodes}})
            for engine in engines:
                engine.receive_datagram(reply, destination, now + 0.01)
    events = [[repr(event) for event in iter(engine.next_event, None)] for engine in engines]
    assert events[0] == events[1] and events[0][0].startswith("OperationDone")
    assert engines[0].stats.responses_received == engines[1].stats.responses_received > 20


def test_the_native_reply_reader_reads_integers_as_python_does():
    def reply(num: bytes) -> bytes:
        return (b"d1:rd2:id20:" + b"I" * 20 + b"8:intervali21600e3:num" + num +
                b"7:samples0:e1:t2:aa1:y1:re")
    for num, value in [(b"i-3e", -3), (b"i0e", 0), (b"i" + b"9" * 18 + b"e", 10**18 - 1)]:
        fields = _krpc.parse_reply(reply(num))
        assert fields is not None and fields[9] == value and fields[10] == 21600
        assert response_from_fields(fields) == python_response(reply(num))
    for odd in [b"i-0e", b"i03e", b"i" + b"1" * 19 + b"e", b"ie", b"i-e", b"i1"]:
        assert _krpc.parse_reply(reply(odd)) is None
