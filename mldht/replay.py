"""Captured KRPC traffic: decode it, check it against BEP 5, and replay its queries to a node.

`analyze()` decodes every datagram of a capture, pairs each query with the reply that has its
transaction id (between the same two addresses), and checks that each reply fits the method
it answers and that mldht re-encodes the content canonically. `replay()` sends every captured
query again to a target node and compares the target's reply with the captured one: the
reply kind, the error code, and which keys the reply carries. Values such as ids and tokens
naturally differ between nodes and are not compared.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import bencodepy

from .compact import Address, format_address
from .errors import KrpcDecodeError
from .krpc import (
    METHOD_UNKNOWN, PROTOCOL_ERROR, AnnouncePeer, Error, FindNode, Get, GetPeers, Put, Query,
    Response, UnknownQuery, decode_message, encode_message,
)
from .bep44 import CAS_MISMATCH, INVALID_SIGNATURE, SALT_TOO_BIG, SEQ_TOO_LOW, VALUE_TOO_BIG
from .capture import Datagram

_bencode = bencodepy.Bencode(encoding=None)
KNOWN_ERROR_CODES = (201, 202, 203, 204)
PUT_ERROR_CODES = (PROTOCOL_ERROR, VALUE_TOO_BIG, INVALID_SIGNATURE, SALT_TOO_BIG, CAS_MISMATCH,
                   SEQ_TOO_LOW)
"""The answers BEP 44 allows to a refused put (203 for a bad token or a malformed value)."""
REPLY_WINDOW = 60.0
"""A reply more than this many seconds after its query is not paired with it."""


@dataclass(slots=True)
class CapturedMessage:
    """One datagram of a capture and what mldht's decoder made of it."""

    index: int
    datagram: Datagram
    message: Query | Response | Error | None
    problem: str | None = None
    """Why the datagram did not decode, when it did not."""
    transaction_id: bytes | None = None
    declared_query: bool = False
    """`y` = `q`, even when the rest of the query is malformed."""

    @property
    def method(self) -> str:
        if isinstance(self.message, UnknownQuery):
            return self.message.name.decode("ascii", "replace")
        if isinstance(self.message, Query):
            return self.message.method.decode()
        return "malformed" if self.declared_query else "?"


@dataclass(slots=True)
class Exchange:
    """A captured query and the reply it got in the capture (if any)."""

    query: CapturedMessage
    reply: CapturedMessage | None


@dataclass(slots=True)
class CaptureAnalysis:
    messages: list[CapturedMessage]
    exchanges: list[Exchange]
    undecodable: list[CapturedMessage]
    """Datagrams that are not valid KRPC (malformed queries included)."""
    reply_problems: list[tuple[Exchange, str]]
    encoding_problems: list[tuple[CapturedMessage, str]]
    unpaired_replies: int
    clients: Counter = field(default_factory=Counter)
    """`v` values seen, per sending address family of messages."""

    def counts(self) -> dict[str, int]:
        kinds = Counter(type(m.message).__name__ if m.message else "undecodable" for m in self.messages)
        return dict(sorted(kinds.items()))

    def methods(self) -> dict[str, int]:
        return dict(sorted(Counter(e.query.method for e in self.exchanges).items()))


def _peek(payload: bytes) -> tuple[bytes | None, bool]:
    """The transaction id and whether `y` is `q`, read leniently from a raw datagram."""
    try:
        raw = _bencode.decode(payload)
    except Exception:
        return None, False
    if not isinstance(raw, dict):
        return None, False
    tid = raw.get(b"t")
    return (tid if isinstance(tid, bytes) else None), raw.get(b"y") == b"q"


def decode_datagram(index: int, datagram: Datagram) -> CapturedMessage:
    tid, declared_query = _peek(datagram.payload)
    try:
        message = decode_message(datagram.payload)
    except KrpcDecodeError as exc:
        return CapturedMessage(index, datagram, None, str(exc), tid, declared_query)
    return CapturedMessage(index, datagram, message, None, message.transaction_id,
                           isinstance(message, Query))


def describe(message: Response | Error | None) -> str:
    """A reply's shape: `r{id,nodes,token}` or `e203`; `-` for no reply."""
    if message is None:
        return "-"
    if isinstance(message, Error):
        return f"e{message.code}"
    keys = ["id"]
    for name in ("nodes", "nodes6", "values", "token"):
        if getattr(message, name) is not None:
            keys.append(name)
    keys += sorted(key.decode("ascii", "replace") for key in message.extra)
    return "r{" + ",".join(keys) + "}"


def reply_problem(query: CapturedMessage, reply: Response | Error | None,
                  foreign_token: bool = False) -> str | None:
    """What is wrong with `reply` as the answer to `query` under BEP 5, or None.

    `foreign_token`: the query's announce or put token was issued by another node, so the
    only right answer is error 203.
    """
    if reply is None:
        return "no reply"
    message = query.message
    if message is None:  # a malformed query deserves a protocol error
        if isinstance(reply, Error) and reply.code == PROTOCOL_ERROR:
            return None
        return f"malformed query answered with {describe(reply)}, not e203"
    if isinstance(reply, Error):
        if isinstance(message, Put) and reply.code in PUT_ERROR_CODES:
            return None
        if reply.code not in KNOWN_ERROR_CODES:
            return f"error code {reply.code} is not one of BEP 5's {KNOWN_ERROR_CODES}"
        if isinstance(message, AnnouncePeer) and reply.code == PROTOCOL_ERROR:
            return None  # bad token
        if isinstance(message, UnknownQuery) and reply.code in (PROTOCOL_ERROR, METHOD_UNKNOWN):
            return None
        return f"{query.method} answered with error {reply.code} ({reply.message})"
    if isinstance(message, AnnouncePeer) and foreign_token:
        return "announce_peer with another node's token was accepted"
    if isinstance(message, Put) and foreign_token:
        return "put with another node's token was accepted"
    if isinstance(message, Get):
        if reply.token is None:
            return "get reply without a token"
        if b"v" not in reply.extra and reply.nodes is None and reply.nodes6 is None:
            return "get reply without v or nodes"
    if isinstance(message, FindNode) and reply.nodes is None and reply.nodes6 is None:
        return "find_node reply without nodes or nodes6"
    if isinstance(message, GetPeers):
        if reply.token is None:
            return "get_peers reply without a token"
        if reply.values is None and reply.nodes is None and reply.nodes6 is None:
            return "get_peers reply without values or nodes"
    return None


def encoding_problem(captured: CapturedMessage) -> str | None:
    """Whether mldht's encoding of a decoded message is canonical bencode and keeps its content.

    Keys that mldht does not model (such as BEP 33's `scrape` or BEP 44 arguments) are left
    out of the comparison; every other key must come out with the same value.
    """
    message = captured.message
    if message is None:
        return None
    encoded = encode_message(message)
    reparsed = _bencode.decode(encoded)
    if _bencode.encode(reparsed) != encoded:
        return "mldht's encoding is not canonical bencode"
    if decode_message(encoded) != message:
        return "decode(encode(message)) differs from the message"
    original = _bencode.decode(captured.datagram.payload)
    for key, value in reparsed.items():
        if key in (b"a", b"r"):
            for inner, inner_value in value.items():
                if original[key].get(inner) != inner_value:
                    return f"'{key.decode()}.{inner.decode()}' changed when re-encoded"
        elif original.get(key) != value:
            return f"'{key.decode()}' changed when re-encoded"
    return None


def analyze(datagrams: Iterable[Datagram]) -> CaptureAnalysis:
    """Decode a capture's datagrams, pair queries with replies and check both."""
    messages = [decode_datagram(i, d) for i, d in enumerate(datagrams)]
    waiting: dict[tuple[Address, Address, bytes], CapturedMessage] = {}
    exchanges: list[Exchange] = []
    by_query: dict[int, Exchange] = {}
    unpaired = 0
    clients: Counter = Counter()
    for captured in messages:
        if captured.message is not None and captured.message.version is not None:
            clients[captured.message.version[:2].decode("latin-1")] += 1
        if captured.transaction_id is None:
            continue
        d = captured.datagram
        if captured.declared_query:
            waiting[(d.source, d.destination, captured.transaction_id)] = captured
            exchange = Exchange(captured, None)
            exchanges.append(exchange)
            by_query[captured.index] = exchange
            continue
        query = waiting.pop((d.destination, d.source, captured.transaction_id), None)
        if query is None or d.time - query.datagram.time > REPLY_WINDOW:
            unpaired += 1
            continue
        by_query[query.index].reply = captured
    reply_problems = []
    for exchange in exchanges:
        reply = exchange.reply
        if reply is None:
            continue
        if reply.message is None or isinstance(reply.message, Query):
            reply_problems.append((exchange, f"reply does not decode: {reply.problem}"))
            continue
        problem = reply_problem(exchange.query, reply.message)  # type: ignore[arg-type]
        if problem is not None:
            reply_problems.append((exchange, problem))
    encoding = [(m, p) for m in messages if (p := encoding_problem(m)) is not None]
    undecodable = [m for m in messages if m.message is None]
    return CaptureAnalysis(messages, exchanges, undecodable, reply_problems, encoding, unpaired,
                           clients)


# --- replay -----------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayResult:
    exchange: Exchange
    reply: Response | Error | None
    problem: str | None
    """What is wrong with the target's reply under BEP 5 (None when it is right)."""
    difference: str | None
    """How the target's reply differs from the captured one (None when they have one shape)."""


def _with_transaction_id(payload: bytes, transaction_id: bytes) -> bytes | None:
    """The datagram with its `t` replaced (None when it is not a bencoded dictionary)."""
    try:
        raw = _bencode.decode(payload)
    except Exception:
        return None
    if not isinstance(raw, dict):
        return None
    raw[b"t"] = transaction_id
    return _bencode.encode(raw)


class _ReplaySocket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future] = {}
        self.any_reply: asyncio.Future | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        tid, is_query = _peek(data)
        if is_query:
            return  # the target verifying us: we are not a node
        future = self.waiting.pop(tid, None) if tid is not None else None
        if future is None and self.any_reply is not None:
            future, self.any_reply = self.any_reply, None
        if future is not None and not future.done():
            future.set_result(data)


async def replay(exchanges: list[Exchange], target: Address, *, bind: Address | None = None,
                 timeout: float = 2.0, rate: float = 100.0, limit: int = 10_000) -> list[ReplayResult]:
    """Send every captured query (at most `limit`, at most `rate` per second) to `target`.

    Each query is sent as captured except for a fresh transaction id; one that is not even a
    bencoded dictionary is sent byte for byte, alone, and the next datagram from the target
    is taken as its reply. Every wait is bounded by `timeout`.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    if bind is None:
        bind = ("::1" if family == socket.AF_INET6 else "127.0.0.1", 0) \
            if target[0] in ("127.0.0.1", "::1") else ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
    transport, protocol = await loop.create_datagram_endpoint(_ReplaySocket, local_addr=bind,
                                                              family=family)
    results: list[ReplayResult] = []
    try:
        interval = 1.0 / rate if rate > 0 else 0.0
        for exchange in exchanges[:limit]:
            started = time.monotonic()
            tid = os.urandom(4)
            payload = _with_transaction_id(exchange.query.datagram.payload, tid)
            future = loop.create_future()
            if payload is None:
                payload = exchange.query.datagram.payload
                protocol.any_reply = future
            else:
                protocol.waiting[tid] = future
            transport.sendto(payload, target)
            try:
                data = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                data = None
            finally:
                protocol.waiting.pop(tid, None)
                protocol.any_reply = None
            results.append(_judge(exchange, data))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        transport.close()
    return results


def _judge(exchange: Exchange, data: bytes | None) -> ReplayResult:
    reply: Response | Error | None = None
    problem: str | None
    if data is None:
        problem = "no reply"
    else:
        try:
            decoded = decode_message(data)
        except KrpcDecodeError as exc:
            return ReplayResult(exchange, None, f"reply does not decode: {exc}", "undecodable")
        if isinstance(decoded, Query):
            return ReplayResult(exchange, None, "answered with a query", "query")
        reply = decoded
        problem = reply_problem(exchange.query, reply, foreign_token=True)
    captured = exchange.reply.message if exchange.reply else None
    captured_shape = describe(captured if not isinstance(captured, Query) else None)
    shape = describe(reply)
    difference = None
    if exchange.reply is not None and shape != captured_shape:
        difference = f"captured {captured_shape}, target {shape}"
    return ReplayResult(exchange, reply, problem, difference)


def exchange_label(exchange: Exchange) -> str:
    query = exchange.query
    client = ""
    if query.message is not None and query.message.version:
        client = " v=" + query.message.version[:2].decode("latin-1", "replace")
    return (f"#{query.index} {query.method} {format_address(query.datagram.source)}"
            f" -> {format_address(query.datagram.destination)}{client}")
