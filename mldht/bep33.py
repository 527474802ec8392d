"""BEP 33 DHT scrapes: the 256-byte bloom filters of seeds and peers, and the size estimate.

The filter is exactly the BEP's pseudocode (k = 2 bit positions from SHA-1 of the packed IP,
m = 2048 bits); the spec's test vector is a test.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from typing import Iterable

FILTER_BYTES = 256
M = FILTER_BYTES * 8
K = 2


class BloomFilter:
    """A BEP 33 bloom filter of IP addresses (ports are never inserted)."""

    __slots__ = ("bits",)

    def __init__(self, data: bytes | None = None) -> None:
        if data is not None and len(data) != FILTER_BYTES:
            raise ValueError(f"a BEP 33 filter is {FILTER_BYTES} bytes, not {len(data)}")
        self.bits = bytearray(data if data is not None else FILTER_BYTES)

    @classmethod
    def of(cls, ips: Iterable[str]) -> "BloomFilter":
        bloom = cls()
        for ip in ips:
            bloom.insert(ip)
        return bloom

    def insert(self, ip: str) -> None:
        digest = hashlib.sha1(ipaddress.ip_address(ip).packed).digest()
        for index in ((digest[0] | digest[1] << 8) % M, (digest[2] | digest[3] << 8) % M):
            self.bits[index // 8] |= 1 << (index % 8)

    def __contains__(self, ip: str) -> bool:
        digest = hashlib.sha1(ipaddress.ip_address(ip).packed).digest()
        return all(self.bits[i // 8] & (1 << (i % 8))
                   for i in ((digest[0] | digest[1] << 8) % M, (digest[2] | digest[3] << 8) % M))

    def __ior__(self, other: "BloomFilter") -> "BloomFilter":
        for i, byte in enumerate(other.bits):
            self.bits[i] |= byte
        return self

    def __bytes__(self) -> bytes:
        return bytes(self.bits)

    def estimate(self) -> float:
        """How many distinct IPs the filter (or a union of filters) holds (BEP 33's formula;
        it breaks down around 8000)."""
        zeros = sum(8 - bin(byte).count("1") for byte in self.bits)
        if zeros == M:
            return 0.0  # the formula's clamp would say 0.5 for an empty filter
        c = min(M - 1, zeros)
        return math.log(c / M) / (K * math.log(1 - 1 / M))


@dataclass(slots=True)
class ScrapeEstimate:
    """Seeds and peers of a swarm estimated from the merged filters of the nodes' replies."""

    seeds: float
    peers: float
    """Peers that are not seeds (BEP 33's BFpe)."""
    filters: int
    """How many nodes returned filters."""


class ScrapeMerger:
    """Collects the BFsd / BFpe filters of get_peers replies and unites them."""

    def __init__(self) -> None:
        self.seeds = BloomFilter()
        self.peers = BloomFilter()
        self.filters = 0

    def add(self, extra: dict) -> bool:
        """Merge the filters of one reply's `r` extras; False when it had none or bad ones."""
        seeds, peers = extra.get(b"BFsd"), extra.get(b"BFpe")
        if not isinstance(seeds, bytes) or not isinstance(peers, bytes):
            return False
        try:
            self.seeds |= BloomFilter(seeds)
            self.peers |= BloomFilter(peers)
        except ValueError:
            return False
        self.filters += 1
        return True

    def estimate(self) -> ScrapeEstimate:
        return ScrapeEstimate(round(self.seeds.estimate(), 1), round(self.peers.estimate(), 1),
                              self.filters)
