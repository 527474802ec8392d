"""Every node a crawl has found, in flat arrays: about 45 bytes a node, plus the index
from its address (about 100 bytes in a dict), so that 10 million nodes fit in 1.5 GB.

A node is its (IP, port): another id on the same address is an alias; another port on the
same IP is another node (carrier-grade NAT, several clients on one host). Each node has a
number, its row in the arrays, kept for the whole crawl (so that sweeps compare) and
written nowhere: the database holds addresses.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from array import array

NONE = 0xFFFFFFFF
"""No referrer (the crawler's own table, or a lookup)."""
FOUND, VISITED, ANSWERED, QUEUED, SKIPPED = 1, 2, 4, 8, 16
"""This sweep's flags of a node (SKIPPED: not asked, its IP had had its visits)."""
V6_MARK = 1 << 144
"""Set in the address key of an IPv6 node (an IPv4 key is below 2^48)."""
GROUPS = 32
"""The referrers are split into this many groups (by a hash of their IP): a node records
which groups listed it, for mark-recapture (two halves) and its bootstrap (the groups
resampled)."""


def address_key(ip: str, port: int) -> int:
    """The (IP, port) as one integer: 48 bits for IPv4; IPv6 above V6_MARK."""
    if ":" in ip:
        return V6_MARK | int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big") << 16 \
            | port
    return int.from_bytes(socket.inet_aton(ip), "big") << 16 | port


def key_address(key: int) -> tuple[str, int]:
    port = key & 0xFFFF
    if key & V6_MARK:
        packed = ((key ^ V6_MARK) >> 16).to_bytes(16, "big")
        return socket.inet_ntop(socket.AF_INET6, packed), port
    return socket.inet_ntoa((key >> 16).to_bytes(4, "big")), port


def group_of(ip_key: int) -> int:
    """The referrer group of an IP (a multiplicative hash of its key)."""
    return ((ip_key * 0x9E3779B97F4A7C15) >> 32) % GROUPS


# --- which listed addresses may be visited (the8472's sanitizing) -------------------------

_ORDINARY, _LOOPBACK, _PRIVATE, _NEVER = 0, 1, 2, 3


@functools.lru_cache(maxsize=65_536)
def _slow_kind(ip: str) -> int:
    """What Python's ipaddress says of an address (the8472's rules, as is_contactable)."""
    address = ipaddress.ip_address(ip)
    if address.is_loopback:
        return _LOOPBACK
    if address.is_unspecified or address.is_multicast or address.is_reserved or \
            address.is_link_local:
        return _NEVER
    return _ORDINARY if address.is_global else _PRIVATE


# First octets of the IPv4 /8s that hold a special range (RFC 6890); every other /8 is
# ordinary public unicast throughout, whatever Python's version says of the edges.
_SPECIAL_OCTETS = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203, *range(224, 256)})


def ipv4_kind(ip32: int) -> int:
    octet = ip32 >> 24
    if octet not in _SPECIAL_OCTETS:
        return _ORDINARY
    if octet == 127:
        return _LOOPBACK
    if octet == 10:
        return _PRIVATE
    return _slow_kind(socket.inet_ntoa(ip32.to_bytes(4, "big")))


def _kind(key: int) -> int:
    if key & V6_MARK:
        return _slow_kind(key_address(key)[0])
    return ipv4_kind(key >> 16)


def visitable(key: int, referrer_key: int | None) -> bool:
    """May a node a referrer listed be visited? Never port 0, an unspecified, multicast,
    reserved or link-local address; loopback only from loopback, a private (non-global)
    address only from a private one. `referrer_key` None: the crawler's own
    table, whose nodes answered it."""
    if referrer_key is None:
        return True
    if not key & 0xFFFF:
        return False
    kind = _kind(key)
    if kind == _ORDINARY:
        return True
    if kind == _NEVER:
        return False
    referrer = _kind(referrer_key)
    if kind == _LOOPBACK:
        return referrer == _LOOPBACK
    return referrer == _PRIVATE


# --- the table ---------------------------------------------------------------------------------

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


class AddressIndex:
    """Address key -> node number, as an open-addressing table of two flat arrays (a
    64-bit key, 0 for an empty slot, and a 32-bit number): about 20 bytes a node where a
    dict of Python ints takes about 100. IPv6 keys (above 64 bits) go to a dict; they are
    few. The slot is Fibonacci hashing of the key with its IP moved to the low bits (the
    key is IP << 16 | port: multiplied as it stands, addresses that differ only in their
    IP's last bits would pile up)."""

    LOAD = 0.6

    def __init__(self, bits: int = 10) -> None:
        self._bits = bits
        self._keys = array("Q", bytes(8 << bits))
        self._values = array("I", bytes(4 << bits))
        self._count = 0
        self._wide: dict[int, int] = {}

    def __len__(self) -> int:
        return self._count + len(self._wide)

    def get(self, key: int, default=None):
        if key > MASK64 or not key:
            return self._wide.get(key, default)
        keys = self._keys
        mask = (1 << self._bits) - 1
        slot = ((((key >> 16) ^ (key << 32)) * GOLDEN) & MASK64) >> (64 - self._bits)
        while True:
            found = keys[slot]
            if found == key:
                return self._values[slot]
            if not found:
                return default
            slot = (slot + 1) & mask

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: int, value: int) -> None:
        if key > MASK64:
            self._wide[key] = value
            return
        if not key:
            raise ValueError("address key 0 is not an address")
        if self._count + 1 > self.LOAD * (1 << self._bits):
            self._grow()
        if self._put(key, value):
            self._count += 1

    def _put(self, key: int, value: int) -> bool:
        keys = self._keys
        mask = (1 << self._bits) - 1
        slot = ((((key >> 16) ^ (key << 32)) * GOLDEN) & MASK64) >> (64 - self._bits)
        while True:
            found = keys[slot]
            if not found or found == key:
                keys[slot] = key
                self._values[slot] = value
                return not found
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        self._bits += 1
        self._keys = array("Q", bytes(8 << self._bits))
        self._values = array("I", bytes(4 << self._bits))
        put = self._put
        for key, value in zip(old_keys, old_values):
            if key:
                put(key, value)

    def memory(self) -> int:
        return 12 << self._bits


class NodeTable:
    """The nodes of a crawl (see the module's docstring). `flags`, `referrer` and `groups`
    are this sweep's (`new_sweep` clears them); the rest is the crawl's."""

    def __init__(self) -> None:
        self.index = AddressIndex()
        """Address key -> number."""
        self.ids = bytearray()
        self.addresses = array("Q")
        """The IPv4 address key of each node (0 for IPv6: see `v6`)."""
        self.v6: dict[int, int] = {}
        self.referrer = array("I")
        self.flags = bytearray()
        self.groups = array("I")
        self.answered_sweep = array("H")
        """The last sweep the node answered in (0: none)."""
        self.sample_after = array("I")
        """When (seconds since `epoch`) it may next be asked for samples (BEP 51
        `interval`); 0: any time."""
        self.sweep = 0

    def __len__(self) -> int:
        return len(self.addresses)

    def new_sweep(self, number: int) -> None:
        count = len(self)
        self.sweep = number
        self.flags = bytearray(count)
        self.groups = array("I", bytes(4 * count))

    def add(self, key: int, node_id: bytes) -> int:
        number = len(self.addresses)
        self.index[key] = number
        self.ids += node_id
        if key & V6_MARK:
            self.v6[number] = key
            self.addresses.append(0)
        else:
            self.addresses.append(key)
        self.referrer.append(NONE)
        self.flags.append(0)
        self.groups.append(0)
        self.answered_sweep.append(0)
        self.sample_after.append(0)
        return number

    def key(self, number: int) -> int:
        key = self.addresses[number]
        return key if key else self.v6[number]

    def address(self, number: int) -> tuple[str, int]:
        return key_address(self.key(number))

    def node_id(self, number: int) -> bytes:
        return bytes(self.ids[number * 20:number * 20 + 20])

    def set_id(self, number: int, node_id: bytes) -> None:
        self.ids[number * 20:number * 20 + 20] = node_id

    def ip_key(self, number: int) -> int:
        return self.key(number) >> 16

    def family(self, number: int) -> str:
        return "ipv4" if self.addresses[number] else "ipv6"

    def memory(self) -> int:
        """Bytes held by the arrays and the index."""
        return (self.index.memory() + len(self.ids) + self.addresses.buffer_info()[1] * 8
                + len(self.flags)
                + (self.referrer.buffer_info()[1] + self.groups.buffer_info()[1]
                   + self.sample_after.buffer_info()[1]) * 4
                + self.answered_sweep.buffer_info()[1] * 2)


__all__ = ["ANSWERED", "FOUND", "GROUPS", "NONE", "NodeTable", "QUEUED", "SKIPPED", "VISITED",
           "address_key", "group_of", "key_address", "visitable"]
