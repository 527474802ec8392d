"""Compact node info (26 / 38 bytes) and compact peer info (6 / 18 bytes), BEP 5 and BEP 32."""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Iterable

from .errors import InvalidInput
from .ids import ID_LENGTH, NodeId

Address = tuple[str, int]
"""An (ip, port) pair with the IP as text, as asyncio and socket use it."""

PEER4_LENGTH = 6
PEER6_LENGTH = 18
NODE4_LENGTH = ID_LENGTH + PEER4_LENGTH
NODE6_LENGTH = ID_LENGTH + PEER6_LENGTH


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node as it is exchanged on the wire: its id and its UDP address."""

    id: NodeId
    ip: str
    port: int
    _key: int | None = field(default=None, init=False, repr=False, compare=False)
    _compact: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def address(self) -> Address:
        return (self.ip, self.port)

    @property
    def key(self) -> int:
        """The id as an integer (cached: every table holding this node shares it)."""
        key = self._key
        if key is None:
            key = int.from_bytes(self.id, "big")
            object.__setattr__(self, "_key", key)
        return key

    @property
    def compact(self) -> bytes:
        """Compact node info (26 or 38 bytes), cached like `key`."""
        packed = self._compact
        if packed is None:
            packed = self.id + pack_ip_port(self.ip, self.port)
            object.__setattr__(self, "_compact", packed)
        return packed

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.ip

    def __str__(self) -> str:
        return f"{self.id.hex()}@{format_address(self.address)}"


def format_address(address: Address) -> str:
    """`ip:port`, with brackets around IPv6 addresses."""
    ip, port = address[0], address[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def pack_address(address: Address) -> bytes:
    """Compact peer info: 4 or 16 address bytes then the port, big endian."""
    return pack_ip_port(address[0], address[1])


@functools.lru_cache(maxsize=16_384)
def pack_ip_port(ip: str, port: int) -> bytes:
    """`pack_address((ip, port))`, cached: the same table nodes and swarm peers go into
    reply after reply."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return socket.inet_pton(family, ip) + port.to_bytes(2, "big")


def pack_ip(ip: str) -> bytes | None:
    """The 4 or 16 bytes of an IP address in its usual text forms (None otherwise: a
    scoped IPv6 address, a host name): cheaper than `ipaddress` on paths run per packet."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except OSError:
        return None


def ipv4_text(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, packed)


def unpack_address(data: bytes) -> Address:
    """Inverse of `pack_address` for 6- or 18-byte strings."""
    if len(data) == PEER4_LENGTH:
        return (socket.inet_ntop(socket.AF_INET, data[:4]), int.from_bytes(data[4:], "big"))
    if len(data) == PEER6_LENGTH:
        return (socket.inet_ntop(socket.AF_INET6, data[:16]), int.from_bytes(data[16:], "big"))
    raise ValueError(f"compact peer info must be 6 or 18 bytes, got {len(data)}")


def pack_nodes(nodes: Iterable[NodeInfo]) -> bytes:
    """Concatenated compact node info; IPv4 and IPv6 nodes must not be mixed."""
    if isinstance(nodes, CompactNodes):
        return nodes.raw
    return b"".join(node.id + pack_ip_port(node.ip, node.port) for node in nodes)


def unpack_nodes(data: bytes, ipv6: bool = False) -> list[NodeInfo]:
    """Split a `nodes` (26-byte entries) or `nodes6` (38-byte entries) string."""
    size = NODE6_LENGTH if ipv6 else NODE4_LENGTH
    if len(data) % size:
        key = "nodes6" if ipv6 else "nodes"
        raise ValueError(f"{key} length {len(data)} is not a multiple of {size}")
    # Every id is a 20-byte slice: NodeId's checks would only repeat what the length did.
    new_id = bytes.__new__
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    ntop = socket.inet_ntop
    return [NodeInfo(new_id(NodeId, data[i:i + ID_LENGTH]),
                     ntop(family, data[i + ID_LENGTH:i + size - 2]),
                     int.from_bytes(data[i + size - 2:i + size], "big"))
            for i in range(0, len(data), size)]


class CompactNodes(Sequence):
    """The `nodes` (or `nodes6`) of a reply as they came on the wire, `raw`, read as a
    sequence of `NodeInfo` (decoded on first use: a crawler that reads `raw` itself, or
    a reply nobody looks at, never pays for the objects). Compares equal to a list of the
    same nodes; `+` with a list gives a list."""

    __slots__ = ("raw", "ipv6", "_decoded")

    def __init__(self, raw: bytes, ipv6: bool = False) -> None:
        size = NODE6_LENGTH if ipv6 else NODE4_LENGTH
        if len(raw) % size:
            key = "nodes6" if ipv6 else "nodes"
            raise ValueError(f"{key} length {len(raw)} is not a multiple of {size}")
        self.raw = bytes(raw)
        self.ipv6 = ipv6
        self._decoded: list[NodeInfo] | None = None

    @property
    def entry_size(self) -> int:
        return NODE6_LENGTH if self.ipv6 else NODE4_LENGTH

    def _nodes(self) -> list[NodeInfo]:
        if self._decoded is None:
            self._decoded = unpack_nodes(self.raw, self.ipv6)
        return self._decoded

    def __len__(self) -> int:
        return len(self.raw) // self.entry_size

    def __getitem__(self, index):
        return self._nodes()[index]

    def __iter__(self):
        return iter(self._nodes())

    def __eq__(self, other) -> bool:
        if isinstance(other, CompactNodes):
            return self.raw == other.raw and self.ipv6 == other.ipv6
        if isinstance(other, (list, tuple)):
            return self._nodes() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which do not hash

    def __add__(self, other) -> list[NodeInfo]:
        return self._nodes() + list(other)

    def __radd__(self, other) -> list[NodeInfo]:
        return list(other) + self._nodes()

    def __repr__(self) -> str:
        return repr(self._nodes())


def is_contactable(address: Address, referrer: Address) -> bool:
    """Whether a node address that `referrer` told us about may be queried.

    Never port 0, unspecified, multicast, link-local or reserved addresses (broadcast included); loopback only when
    the referrer is itself on loopback (a local test network). Otherwise any remote node
    could aim our queries at services on this host, which Transmission guards against too.
    """
    ip, port = address
    if not 0 < port <= 0xFFFF:
        return False
    kind = _contact_kind(ip)
    if kind == _LOOPBACK:
        return _contact_kind(referrer[0]) == _LOOPBACK
    return kind == _ORDINARY


_ORDINARY, _LOOPBACK, _NEVER = 0, 1, 2


@functools.lru_cache(maxsize=65_536)  # run on every node of every reply to our lookups
def _contact_kind(ip: str) -> int:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return _NEVER
    if parsed.is_loopback:  # first: Python counts ::1 as reserved (it lies in ::/8)
        return _LOOPBACK
    if parsed.is_unspecified or parsed.is_multicast or parsed.is_reserved or parsed.is_link_local:
        return _NEVER
    return _ORDINARY


def normalize_ip(ip: str) -> str:
    """The canonical text form of an IP address (IPv4-mapped IPv6 becomes IPv4).

    Run on the source of every datagram: an IPv4 address already in canonical form (what
    the socket gives) is recognised without parsing it with `ipaddress`, whose cache a
    crawl of millions of addresses would miss every time."""
    if ":" not in ip:
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, ip)) == ip:
                return ip
        except OSError:
            pass
    return _normalized(ip)


@functools.lru_cache(maxsize=16_384)
def _normalized(ip: str) -> str:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_host_port(text: str, default_port: int | None = None,
                    allow_any_port: bool = False) -> tuple[str, int]:
    """Parse `host:port`, `[v6]:port` or (with `default_port`) a bare host.

    The host may be a name; it is not resolved here. `allow_any_port` accepts port 0
    (for local addresses to bind: any free port).
    """
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidInput(f"{text!r}: unclosed '[' in IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise InvalidInput(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise InvalidInput(f"{text!r}: put IPv6 addresses in brackets, as [ADDRESS]:PORT")
    if not host:
        raise InvalidInput(f"{text!r}: missing host")
    if port_text is None:
        if default_port is None:
            raise InvalidInput(f"{text!r}: expected HOST:PORT")
        return host, default_port
    lowest = 0 if allow_any_port else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 0xFFFF:
        raise InvalidInput(f"{text!r}: port must be a number from {lowest} to 65535")
    return host, int(port_text)
