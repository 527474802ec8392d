"""BEP 42, the DHT security extension: node ids tied to the node's external IP.

Sans-I/O: `secure_node_id` takes its randomness from the caller, and `ExternalIpVoter`
counts the `ip` keys of replies as votes without touching a socket. CRC32C comes from the
`crc32c` package (a maintained C implementation) rather than being written again here.
"""

from __future__ import annotations

import functools
import ipaddress
import random as _random
from collections import OrderedDict

from crc32c import crc32c

from .compact import ipv4_text, pack_ip
from .ids import ID_LENGTH, NodeId

IPV4_MASK = bytes([0x03, 0x0F, 0x3F, 0xFF])
IPV6_MASK = bytes([0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF])
PREFIX_BITS = 21

_EXEMPT_V4 = tuple(ipaddress.ip_network(net) for net in
                   ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                    "127.0.0.0/8"))
# The BEP lists IPv4 ranges only; the IPv6 counterparts of "cannot be verified" are the
# loopback, link-local and unique-local ranges (libtorrent exempts these too).
_EXEMPT_V6 = tuple(ipaddress.ip_network(net) for net in ("::1/128", "fe80::/10", "fc00::/7"))


def _packed(ip: str) -> bytes:
    """The address as bytes (inet_pton for the common forms: a crawl sees millions of
    addresses, more than any cache of `ipaddress` objects holds)."""
    packed = pack_ip(ip)
    return packed if packed is not None else ipaddress.ip_address(ip).packed


def _masked(ip: str, r: int) -> bytes:
    packed = _packed(ip)
    if len(packed) == 4:
        masked = bytearray(a & b for a, b in zip(packed, IPV4_MASK))
    else:
        masked = bytearray(a & b for a, b in zip(packed[:8], IPV6_MASK))
    masked[0] |= (r & 0x07) << 5
    return bytes(masked)


def crc_for(ip: str, r: int) -> int:
    """The CRC32C whose first 21 bits a node id for `ip` with random value `r` must carry."""
    return crc32c(_masked(ip, r))


def secure_node_id(ip: str, rng: _random.Random) -> NodeId:
    """A node id that BEP 42 ties to the external address `ip`."""
    last = rng.randrange(256)
    crc = crc_for(ip, last & 0x07)
    raw = bytearray(rng.randbytes(ID_LENGTH))
    raw[0] = (crc >> 24) & 0xFF
    raw[1] = (crc >> 16) & 0xFF
    raw[2] = ((crc >> 8) & 0xF8) | (raw[2] & 0x07)
    raw[-1] = last
    return NodeId(bytes(raw))


_EXEMPT_V4_RANGES = tuple((int(net.network_address), int(net.broadcast_address))
                          for net in _EXEMPT_V4)
_EXEMPT_V4_FIRST_BYTES = frozenset(first for low, high in _EXEMPT_V4_RANGES
                                   for first in range(low >> 24, (high >> 24) + 1))
"""First bytes of the exempt ranges: any other address is not exempt, at one set lookup."""


def is_exempt(ip: str) -> bool:
    """Local addresses cannot be verified: any id goes for them."""
    packed = pack_ip(ip) if ":" not in ip else None
    if packed is None:
        return _is_exempt_slow(ip)
    if packed[0] not in _EXEMPT_V4_FIRST_BYTES:
        return False
    value = int.from_bytes(packed, "big")
    return any(low <= value <= high for low, high in _EXEMPT_V4_RANGES)


@functools.lru_cache(maxsize=16_384)  # parsing the address is most of the cost
def _is_exempt_slow(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    networks = _EXEMPT_V4 if address.version == 4 else _EXEMPT_V6
    return any(address in network for network in networks)


def is_secure_id(node_id: bytes, ip: str) -> bool:
    """Whether `node_id` matches `ip` under BEP 42 (exempt addresses always match)."""
    if is_exempt(ip):
        return True
    try:
        crc = crc_for(ip, node_id[-1] & 0x07)
    except ValueError:
        return False
    prefix = int.from_bytes(node_id[:3], "big") >> 3
    return prefix == crc >> (32 - PREFIX_BITS)


def _voter_group(ip: str) -> str:
    """Voters in one /24 (IPv4) or /48 (IPv6) count once: a Sybil on one subnet is one vote."""
    packed = pack_ip(ip) if ":" not in ip else None
    if packed is not None:  # one call per reply to our own queries: no parsing for IPv4
        return ipv4_text(packed[:3] + b"\0")
    return _voter_group_slow(ip)


@functools.lru_cache(maxsize=4096)
def _voter_group_slow(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


@functools.lru_cache(maxsize=1024)
def _votable(reported_ip: str) -> str | None:
    """The canonical form of a reported IP, or None when it cannot be ours."""
    try:
        reported = ipaddress.ip_address(reported_ip)
    except ValueError:
        return None
    if reported.is_unspecified or reported.is_multicast:
        return None
    return str(reported)


class ExternalIpVoter:
    """Learns our external IP from the `ip` key of replies, by agreement of several nodes.

    Each voter (a node that answered one of our queries) has one current vote, and voters of
    one subnet count once. An IP becomes the external IP once `min_votes` subnets agree on
    it and it leads every other candidate; never on the word of one node. Bounded: the
    `max_voters` most recent voters are remembered.
    """

    def __init__(self, min_votes: int = 3, max_voters: int = 256) -> None:
        self.min_votes = min_votes
        self.max_voters = max_voters
        self._votes: OrderedDict[str, str] = OrderedDict()
        """Voter subnet -> the IP it reported, oldest first."""
        self._counts: dict[str, int] = {}
        """Reported IP -> how many subnets report it (kept in step with _votes)."""
        self.external_ip: str | None = None

    def vote(self, voter_ip: str, reported_ip: str) -> str | None:
        """Record that `voter_ip` saw us as `reported_ip`; returns the external IP when this
        vote changed it (None otherwise)."""
        ip = _votable(reported_ip)
        if ip is None:
            return None
        try:
            group = _voter_group(voter_ip)
        except ValueError:
            return None
        previous = self._votes.pop(group, None)
        if previous == ip:  # the same vote again: only its recency changes
            self._votes[group] = ip
            return None
        if previous is not None:
            self._uncount(previous)
        self._votes[group] = ip
        self._counts[ip] = self._counts.get(ip, 0) + 1
        while len(self._votes) > self.max_voters:
            _, forgotten = self._votes.popitem(last=False)
            self._uncount(forgotten)
        leader, votes = max(self._counts.items(), key=lambda item: item[1])
        runner_up = max((v for ip, v in self._counts.items() if ip != leader), default=0)
        if votes >= self.min_votes and votes > runner_up and leader != self.external_ip:
            self.external_ip = leader
            return leader
        return None

    def _uncount(self, ip: str) -> None:
        left = self._counts[ip] - 1
        if left:
            self._counts[ip] = left
        else:
            del self._counts[ip]

    def tally(self) -> dict[str, int]:
        """Votes per reported IP."""
        return dict(self._counts)
