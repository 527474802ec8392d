"""KRPC messages (BEP 5, with the keys of BEP 32, 42 and 43) as typed objects.

`decode_message` turns a datagram into a `Query` subclass, a `Response` or an `Error`,
validating every key the DHT BEPs define and ignoring unknown ones; it raises
`KrpcDecodeError` (carrying the transaction id when there is one) on anything malformed.
`encode_message` produces canonical bencode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, ClassVar

from .bencoding import (  # noqa: F401 - the codec's names, also offered here as before
    bdecode as _bdecode, codec_backend, decode_bencode, encode_bencode, use_codec,
)
from .compact import (
    Address, CompactNodes, NodeInfo, pack_address, pack_nodes, unpack_address,
)
from .errors import KrpcDecodeError
from .ids import ID_LENGTH, InfoHash, NodeId

# KRPC error codes (BEP 5; BEP 44's are in bep44.py).
GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204

MAX_TRANSACTION_ID_LENGTH = 64
WANT_IPV4 = b"n4"
WANT_IPV6 = b"n6"

@dataclass(slots=True, kw_only=True)
class Message:
    """Fields common to every KRPC message."""

    transaction_id: bytes
    version: bytes | None = None
    """The `v` key: the sender's client and version, when it says."""


@dataclass(slots=True, kw_only=True)
class Query(Message):
    """A query (`y` = `q`); subclasses carry the arguments of each method."""

    method: ClassVar[bytes] = b""
    sender_id: NodeId
    read_only: bool = False
    """BEP 43 `ro` = 1: the sender does not answer queries and must not be routed to."""

    def arguments(self) -> dict[bytes, Any]:
        return {b"id": bytes(self.sender_id)}


@dataclass(slots=True, kw_only=True)
class Ping(Query):
    method: ClassVar[bytes] = b"ping"


def _want_list(want: tuple[bytes, ...]) -> dict[bytes, Any]:
    return {b"want": list(want)} if want else {}


@dataclass(slots=True, kw_only=True)
class FindNode(Query):
    method: ClassVar[bytes] = b"find_node"
    target: NodeId
    want: tuple[bytes, ...] = ()
    """BEP 32 `want`: which families of nodes to return (`n4`, `n6`)."""

    def arguments(self) -> dict[bytes, Any]:
        return {b"id": bytes(self.sender_id), b"target": bytes(self.target), **_want_list(self.want)}


@dataclass(slots=True, kw_only=True)
class GetPeers(Query):
    method: ClassVar[bytes] = b"get_peers"
    info_hash: InfoHash
    want: tuple[bytes, ...] = ()
    scrape: bool = False
    """BEP 33: ask for the BFsd / BFpe bloom filters of the swarm."""
    noseed: bool = False
    """BEP 33: prefer peers that are not seeds in `values`."""

    def arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"id": bytes(self.sender_id), b"info_hash": bytes(self.info_hash),
                                  **_want_list(self.want)}
        if self.scrape:
            args[b"scrape"] = 1
        if self.noseed:
            args[b"noseed"] = 1
        return args


@dataclass(slots=True, kw_only=True)
class AnnouncePeer(Query):
    method: ClassVar[bytes] = b"announce_peer"
    info_hash: InfoHash
    token: bytes
    port: int | None = None
    """The announced TCP port; ignored by the receiver when `implied_port` is set."""
    implied_port: bool = False
    """When set, the receiver uses the UDP source port of the query instead of `port`."""
    seed: bool = False
    """BEP 33: the announcing peer is a seed."""

    def arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"id": bytes(self.sender_id), b"info_hash": bytes(self.info_hash),
                                  b"token": self.token}
        if self.port is not None:
            args[b"port"] = self.port
        if self.implied_port:
            args[b"implied_port"] = 1
        if self.seed:
            args[b"seed"] = 1
        return args


@dataclass(slots=True, kw_only=True)
class SampleInfohashes(Query):
    """BEP 51: ask for a sample of the infohashes a node stores (and nodes near `target`)."""

    method: ClassVar[bytes] = b"sample_infohashes"
    target: NodeId
    want: tuple[bytes, ...] = ()

    def arguments(self) -> dict[bytes, Any]:
        return {b"id": bytes(self.sender_id), b"target": bytes(self.target), **_want_list(self.want)}


@dataclass(slots=True, kw_only=True)
class Get(Query):
    """BEP 44: ask for the item stored under `target` (and nodes near it, and a token)."""

    method: ClassVar[bytes] = b"get"
    target: NodeId
    seq: int | None = None
    """Only send a mutable item's value if its seq is greater than this."""
    want: tuple[bytes, ...] = ()

    def arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"id": bytes(self.sender_id), b"target": bytes(self.target),
                                  **_want_list(self.want)}
        if self.seq is not None:
            args[b"seq"] = self.seq
        return args


@dataclass(slots=True, kw_only=True)
class Put(Query):
    """BEP 44: store an item. Mutable when `public_key` is set (with `seq` and `signature`)."""

    method: ClassVar[bytes] = b"put"
    token: bytes
    value: Any
    encoded_value: bytes
    """`v` exactly as it was bencoded on the wire (it is canonical: otherwise 203)."""
    public_key: bytes | None = None
    signature: bytes | None = None
    seq: int | None = None
    salt: bytes = b""
    cas: int | None = None

    def arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"id": bytes(self.sender_id), b"token": self.token,
                                  b"v": self.value}
        if self.public_key is not None:
            args[b"k"] = self.public_key
            args[b"seq"] = self.seq
            args[b"sig"] = self.signature
            if self.salt:
                args[b"salt"] = self.salt
            if self.cas is not None:
                args[b"cas"] = self.cas
        return args


@dataclass(slots=True, kw_only=True)
class UnknownQuery(Query):
    """A query whose method this node does not implement.

    It is answered like find_node or get_peers when it carries `target` or `info_hash`
    (BEP 5's forward compatibility rule), and with error 204 otherwise.
    """

    name: bytes
    target: NodeId | None = None
    info_hash: InfoHash | None = None
    raw_arguments: dict[bytes, Any] = field(default_factory=dict)

    def arguments(self) -> dict[bytes, Any]:
        args = {**self.raw_arguments, b"id": bytes(self.sender_id)}
        if self.target is not None:
            args[b"target"] = bytes(self.target)
        if self.info_hash is not None:
            args[b"info_hash"] = bytes(self.info_hash)
        return args


@dataclass(slots=True, kw_only=True)
class Response(Message):
    """A reply (`y` = `r`). Which fields are set depends on the query it answers."""

    sender_id: NodeId
    nodes: Sequence[NodeInfo] | None = None
    """A list, or a decoded reply's `CompactNodes` (its `raw` bytes read as NodeInfo)."""
    nodes6: Sequence[NodeInfo] | None = None
    values: list[Address] | None = None
    token: bytes | None = None
    requester: Address | None = None
    """BEP 42 top-level `ip`: the address the sender saw our query come from."""
    extra: dict[bytes, Any] = field(default_factory=dict)
    """Keys of `r` this module does not interpret (kept for extensions)."""
    rtt: float | None = field(default=None, compare=False)
    """Seconds from our query leaving to this reply arriving, set by the engine for the
    replies it matched to its queries (not part of the message on the wire)."""


@dataclass(slots=True, kw_only=True)
class Error(Message):
    """An error reply (`y` = `e`) with its KRPC code and message."""

    code: int
    message: str


# --- encoding ---------------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    """Canonical bencode of a message (keys sorted by their raw bytes)."""
    out: dict[bytes, Any] = {b"t": message.transaction_id}
    if message.version is not None:
        out[b"v"] = message.version
    if isinstance(message, Query):
        out[b"y"] = b"q"
        out[b"q"] = message.name if isinstance(message, UnknownQuery) else message.method
        out[b"a"] = message.arguments()
        if message.read_only:
            out[b"ro"] = 1
    elif isinstance(message, Response):
        body: dict[bytes, Any] = dict(message.extra)
        body[b"id"] = bytes(message.sender_id)
        if message.nodes is not None:
            body[b"nodes"] = pack_nodes(message.nodes)
        if message.nodes6 is not None:
            body[b"nodes6"] = pack_nodes(message.nodes6)
        if message.values is not None:
            body[b"values"] = [pack_address(peer) for peer in message.values]
        if message.token is not None:
            body[b"token"] = message.token
        out[b"y"] = b"r"
        out[b"r"] = body
        if message.requester is not None:
            out[b"ip"] = pack_address(message.requester)
    elif isinstance(message, Error):
        out[b"y"] = b"e"
        out[b"e"] = [message.code, message.message.encode("utf-8", "replace")]
    else:
        raise TypeError(f"cannot encode {type(message).__name__}")
    return encode_bencode(out)


# --- decoding ---------------------------------------------------------------------------


class _Invalid(Exception):
    """Raised inside the decoder; turned into KrpcDecodeError with the transaction id."""


def _get_id(args: dict, key: bytes, where: str) -> bytes:
    value = args.get(key)
    if value is None:
        raise _Invalid(f"missing '{key.decode()}' in '{where}'")
    if not isinstance(value, bytes) or len(value) != ID_LENGTH:
        raise _Invalid(f"'{where}.{key.decode()}' must be a {ID_LENGTH}-byte string")
    return value


def _get_optional_id(args: dict, key: bytes, where: str) -> bytes | None:
    return _get_id(args, key, where) if key in args else None


def _get_flag(container: dict, key: bytes, where: str) -> bool:
    value = container.get(key, 0)
    if not isinstance(value, int) or value not in (0, 1):
        raise _Invalid(f"'{where}{key.decode()}' must be the integer 0 or 1")
    return value == 1


def _get_want(args: dict) -> tuple[bytes, ...]:
    want = args.get(b"want")
    if want is None:
        return ()
    if not isinstance(want, list) or not all(isinstance(item, bytes) for item in want):
        raise _Invalid("'a.want' must be a list of strings")
    return tuple(want)


def _skip_element(data: bytes, start: int) -> int:
    """The offset just past the bencoded element at `start` (in data already decoded once,
    so well formed); iterative, so nesting depth costs no stack."""
    depth = 0
    position = start
    while True:
        lead = data[position:position + 1]
        if lead in (b"l", b"d"):
            depth += 1
            position += 1
            continue
        if lead == b"e":
            depth -= 1
            position += 1
        elif lead == b"i":
            position = data.index(b"e", position) + 1
        else:
            colon = data.index(b":", position)
            position = colon + 1 + int(data[position:colon])
        if depth == 0:
            return position


def _dict_value_span(data: bytes, start: int, key: bytes) -> tuple[int, int] | None:
    """Where the value of `key` lies in the bencoded dictionary starting at `start`."""
    position = start + 1
    while data[position:position + 1] != b"e":
        key_end = _skip_element(data, position)
        name = data[data.index(b":", position) + 1:key_end]
        value_end = _skip_element(data, key_end)
        if name == key:
            return key_end, value_end
        position = value_end
    return None


def _raw_put_value(data: bytes) -> bytes | None:
    """The bytes of `a.v` in a put datagram, as sent (None if they cannot be located)."""
    try:
        args = _dict_value_span(data, 0, b"a")
        span = None if args is None else _dict_value_span(data, args[0], b"v")
    except (ValueError, IndexError):  # a form the scanner does not know: refuse the put
        return None
    return None if span is None else data[span[0]:span[1]]


def _get_int(args: dict, key: bytes, where: str, required: bool = False) -> int | None:
    value = args.get(key)
    if value is None:
        if required:
            raise _Invalid(f"missing '{where}.{key.decode()}'")
        return None
    if not isinstance(value, int):
        raise _Invalid(f"'{where}.{key.decode()}' must be an integer")
    return value


def _get_string(args: dict, key: bytes, where: str, length: int | None = None) -> bytes | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        size = "" if length is None else f" of {length} bytes"
        raise _Invalid(f"'{where}.{key.decode()}' must be a string{size}")
    return value


def _decode_put(args: dict, data: bytes, common: dict[str, Any]) -> Put:
    token = args.get(b"token")
    if not isinstance(token, bytes) or not token:
        raise _Invalid("missing or empty 'a.token'")
    if b"v" not in args:
        raise _Invalid("missing 'a.v'")
    value = args[b"v"]
    raw = _raw_put_value(data)
    # BEP 44: a value that is not canonical bencode (unsorted keys...) must be refused, and
    # the hash and signature are over the bytes as sent.
    if raw is None or encode_bencode(value) != raw:
        raise _Invalid("'a.v' is not canonical bencode")
    public_key = _get_string(args, b"k", "a", 32)
    if public_key is None:
        return Put(token=token, value=value, encoded_value=raw, **common)
    signature = _get_string(args, b"sig", "a", 64)
    if signature is None:
        raise _Invalid("missing 'a.sig' (a put with 'k' is a mutable put)")
    seq = _get_int(args, b"seq", "a", required=True)
    assert seq is not None
    if seq < 0:
        raise _Invalid("'a.seq' must not be negative")
    return Put(token=token, value=value, encoded_value=raw, public_key=public_key,
               signature=signature, seq=seq, salt=_get_string(args, b"salt", "a") or b"",
               cas=_get_int(args, b"cas", "a"), **common)


def _decode_query(message: dict, transaction_id: bytes, version: bytes | None,
                  data: bytes = b"") -> Query:
    method = message.get(b"q")
    if not isinstance(method, bytes):
        raise _Invalid("missing or non-string method name 'q'")
    args = message.get(b"a")
    if not isinstance(args, dict):
        raise _Invalid("missing or non-dictionary arguments 'a'")
    sender_id = NodeId(_get_id(args, b"id", "a"))
    read_only = _get_flag(message, b"ro", "")
    common: dict[str, Any] = dict(transaction_id=transaction_id, version=version, sender_id=sender_id,
                  read_only=read_only)
    if method == Ping.method:
        return Ping(**common)
    if method == FindNode.method:
        return FindNode(target=NodeId(_get_id(args, b"target", "a")), want=_get_want(args), **common)
    if method == GetPeers.method:
        return GetPeers(info_hash=InfoHash(_get_id(args, b"info_hash", "a")), want=_get_want(args),
                        scrape=_get_flag(args, b"scrape", "a."),
                        noseed=_get_flag(args, b"noseed", "a."), **common)
    if method == SampleInfohashes.method:
        return SampleInfohashes(target=NodeId(_get_id(args, b"target", "a")), want=_get_want(args),
                                **common)
    if method == Get.method:
        return Get(target=NodeId(_get_id(args, b"target", "a")), seq=_get_int(args, b"seq", "a"),
                   want=_get_want(args), **common)
    if method == Put.method:
        return _decode_put(args, data, common)
    if method == AnnouncePeer.method:
        announced = InfoHash(_get_id(args, b"info_hash", "a"))
        token = args.get(b"token")
        if not isinstance(token, bytes) or not token:
            raise _Invalid("missing or empty 'a.token'")
        implied_port = _get_flag(args, b"implied_port", "a.")
        port = args.get(b"port")
        if port is None and not implied_port:
            raise _Invalid("missing 'a.port' (and 'a.implied_port' is not 1)")
        if port is not None and (not isinstance(port, int) or not 1 <= port <= 0xFFFF):
            if not implied_port:
                raise _Invalid("'a.port' must be an integer from 1 to 65535")
            port = None  # ignored anyway: the UDP source port is used
        return AnnouncePeer(info_hash=announced, token=token, port=port, implied_port=implied_port,
                            seed=_get_flag(args, b"seed", "a."), **common)
    target = _get_optional_id(args, b"target", "a")
    info_hash = _get_optional_id(args, b"info_hash", "a")
    return UnknownQuery(name=method, target=NodeId(target) if target else None,
                        info_hash=InfoHash(info_hash) if info_hash else None,
                        raw_arguments=args, **common)


def _decode_values(values: Any) -> list[Address]:
    if not isinstance(values, list):
        raise _Invalid("'r.values' must be a list")
    peers = []
    for item in values:
        if not isinstance(item, bytes) or len(item) not in (6, 18):
            raise _Invalid("'r.values' entries must be 6- or 18-byte compact peer info")
        peers.append(unpack_address(item))
    return peers


def _decode_response(message: dict, transaction_id: bytes, version: bytes | None) -> Response:
    body = message.get(b"r")
    if not isinstance(body, dict):
        raise _Invalid("missing or non-dictionary reply 'r'")
    sender_id = NodeId(_get_id(body, b"id", "r"))
    nodes = nodes6 = values = None
    try:
        if b"nodes" in body:
            if not isinstance(body[b"nodes"], bytes):
                raise _Invalid("'r.nodes' must be a string")
            nodes = CompactNodes(body[b"nodes"])
        if b"nodes6" in body:
            if not isinstance(body[b"nodes6"], bytes):
                raise _Invalid("'r.nodes6' must be a string")
            nodes6 = CompactNodes(body[b"nodes6"], ipv6=True)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    if b"values" in body:
        values = _decode_values(body[b"values"])
    token = body.get(b"token")
    if token is not None and not isinstance(token, bytes):
        raise _Invalid("'r.token' must be a string")
    requester = None
    if b"ip" in message:
        ip = message[b"ip"]
        if not isinstance(ip, bytes) or len(ip) not in (6, 18):
            raise _Invalid("'ip' must be 6- or 18-byte compact address")
        requester = unpack_address(ip)
    extra = {key: value for key, value in body.items()
             if key not in (b"id", b"nodes", b"nodes6", b"values", b"token")}
    return Response(transaction_id=transaction_id, version=version, sender_id=sender_id,
                    nodes=nodes, nodes6=nodes6, values=values, token=token, requester=requester,
                    extra=extra)


def response_from_fields(fields: tuple) -> Response:
    """The `Response` of a reply the native codec read (`mldht._krpc.parse_reply`: its
    form is already checked), equal to what `interpret_message` makes of the same datagram
    (tests/test_native_krpc.py)."""
    (transaction_id, version, ip, sender_id, nodes, nodes6, token, values, samples, num,
     interval) = fields
    extra: dict[bytes, Any] = {}
    if interval is not None:
        extra[b"interval"] = interval
    if num is not None:
        extra[b"num"] = num
    if samples is not None:
        extra[b"samples"] = samples
    return Response(transaction_id=transaction_id, version=version,
                    sender_id=NodeId(sender_id),
                    nodes=None if nodes is None else CompactNodes(nodes),
                    nodes6=None if nodes6 is None else CompactNodes(nodes6, ipv6=True),
                    values=None if values is None else [unpack_address(item) for item in values],
                    token=token, requester=None if ip is None else unpack_address(ip),
                    extra=extra)


def _decode_error(message: dict, transaction_id: bytes, version: bytes | None) -> Error:
    body = message.get(b"e")
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise _Invalid("'e' must be a list [code, message]")
    text = body[1] if len(body) > 1 else b""
    if not isinstance(text, bytes):
        raise _Invalid("'e' message must be a string")
    return Error(transaction_id=transaction_id, version=version, code=body[0],
                 message=text.decode("utf-8", "replace"))


def decode_message(data: bytes) -> Query | Response | Error:
    """Decode and validate one datagram; raise `KrpcDecodeError` on anything malformed."""
    return interpret_message(decode_datagram(data), data)


def decode_datagram(data: bytes) -> Any:
    """The bencoded value of a datagram, not yet validated as KRPC (`interpret_message`
    does that); raises `KrpcDecodeError` when it is not bencode."""
    try:
        return _bdecode(data)
    except Exception as exc:  # bencodepy raises several types, RecursionError included
        raise KrpcDecodeError(f"not valid bencode: {exc}") from None


def interpret_message(message: Any, data: bytes) -> Query | Response | Error:
    """The KRPC message in `message`, the decoded value of the datagram `data` (a put's
    value is hashed as sent); raises `KrpcDecodeError` on anything malformed."""
    if not isinstance(message, dict):
        raise KrpcDecodeError("not a bencoded dictionary")
    transaction_id = message.get(b"t")
    if not isinstance(transaction_id, bytes) or len(transaction_id) > MAX_TRANSACTION_ID_LENGTH:
        raise KrpcDecodeError("missing or invalid transaction id 't'")
    kind = message.get(b"y")
    # Only a declared query earns a 203: answering a missing or unknown 'y' would make us an
    # amplifier for spoofed sources (libtorrent drops those too).
    is_query = kind == b"q"
    try:
        version = message.get(b"v")
        if version is not None and not isinstance(version, bytes):
            raise _Invalid("'v' must be a string")
        if kind == b"q":
            return _decode_query(message, transaction_id, version, data)
        if kind == b"r":
            return _decode_response(message, transaction_id, version)
        if kind == b"e":
            return _decode_error(message, transaction_id, version)
        raise _Invalid("'y' must be 'q', 'r' or 'e'")
    except _Invalid as exc:
        raise KrpcDecodeError(str(exc), transaction_id, is_query) from None
