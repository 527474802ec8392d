"""The peers announced to this node, per infohash, with expiry and hard caps."""

from __future__ import annotations

import random as _random
from collections import OrderedDict
from dataclasses import dataclass

from .compact import Address, pack_address

PEER_LIFETIME = 30 * 60.0
MAX_INFOHASHES = 2000
MAX_PEERS_PER_INFOHASH = 500


class _Swarm(OrderedDict):
    """One infohash's peers, oldest announce first. `ipv6` counts the IPv6 ones, so that a
    swarm of one family (on a single-stack node, every swarm) needs no filter; `listed` is
    its items as a list, kept between changes: listing an OrderedDict of 500 peers takes
    25 µs, and a popular swarm is asked for far more often than it is announced to."""

    ipv6 = 0
    listed: list | None = None


def _is_ipv6(peer: Address) -> bool:
    return ":" in peer[0]


@dataclass(slots=True)
class StoredPeer:
    announced: float
    seed: bool = False
    packed: bytes = b""
    """Its compact peer info, packed once: a popular swarm is listed in reply after reply."""


class PeerStore:
    """Announced peers: expire `lifetime` seconds after their last announce.

    Bounded by `max_infohashes` (when full, the infohash with the fewest peers makes room)
    and `max_peers` per infohash (when full, the peer announced longest ago makes room).
    """

    def __init__(self, max_infohashes: int = MAX_INFOHASHES, max_peers: int = MAX_PEERS_PER_INFOHASH,
                 lifetime: float = PEER_LIFETIME) -> None:
        self.max_infohashes = max_infohashes
        self.max_peers = max_peers
        self.lifetime = lifetime
        self._swarms: dict[bytes, _Swarm] = {}

    def __len__(self) -> int:
        """How many infohashes have peers."""
        return len(self._swarms)

    def __contains__(self, info_hash: bytes) -> bool:
        return info_hash in self._swarms

    def peer_count(self) -> int:
        return sum(len(swarm) for swarm in self._swarms.values())

    def info_hashes(self) -> list[bytes]:
        return list(self._swarms)

    def announce(self, info_hash: bytes, peer: Address, now: float, seed: bool = False) -> None:
        """Store or refresh `peer` for `info_hash`."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self.max_infohashes:
                self.expire(now)
            if len(self._swarms) >= self.max_infohashes:
                smallest = min(self._swarms, key=lambda key: len(self._swarms[key]))
                del self._swarms[smallest]
            swarm = self._swarms[info_hash] = _Swarm()
        swarm.listed = None
        if peer in swarm:
            swarm.move_to_end(peer)
        else:
            if len(swarm) >= self.max_peers:
                swarm.ipv6 -= _is_ipv6(swarm.popitem(last=False)[0])
            swarm.ipv6 += _is_ipv6(peer)
        swarm[peer] = StoredPeer(now, seed, pack_address(peer))

    def _live(self, info_hash: bytes, now: float) -> _Swarm | None:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return None
        # Oldest announces come first, so expired peers are a prefix.
        while swarm:
            peer, stored = next(iter(swarm.items()))
            if now - stored.announced < self.lifetime:
                break
            swarm.popitem(last=False)
            swarm.ipv6 -= _is_ipv6(peer)
            swarm.listed = None
        if not swarm:
            del self._swarms[info_hash]
            return None
        return swarm

    def get(self, info_hash: bytes, now: float, limit: int, rng: _random.Random,
            ipv6: bool | None = None, noseed: bool = False) -> list[Address]:
        """Up to `limit` live peers for `info_hash`, chosen at random.

        `ipv6` True or False restricts the result to that family; None returns both.
        `noseed` (BEP 33): non-seeds first, seeds only to fill the rest.
        """
        return [peer for peer, _ in self._choose(info_hash, now, limit, rng, ipv6, noseed)]

    def get_packed(self, info_hash: bytes, now: float, limit: int, rng: _random.Random,
                   ipv6: bool) -> list[bytes]:
        """`get(info_hash, now, limit, rng, ipv6)` as compact peer info (the same choice
        for the same `rng` state), ready for a `values` reply."""
        return [stored.packed for _, stored in self._choose(info_hash, now, limit, rng, ipv6)]

    def _choose(self, info_hash: bytes, now: float, limit: int, rng: _random.Random,
                ipv6: bool | None, noseed: bool = False) -> list[tuple[Address, StoredPeer]]:
        swarm = self._live(info_hash, now)
        if swarm is None or limit <= 0:
            return []
        if swarm.listed is None:
            swarm.listed = list(swarm.items())
        if ipv6 is None or swarm.ipv6 == (len(swarm) if ipv6 else 0):
            peers = swarm.listed
        else:
            peers = [item for item in swarm.listed if _is_ipv6(item[0]) == ipv6]
        if len(peers) <= limit and not noseed:
            return peers
        if noseed:
            leechers = [item for item in peers if not item[1].seed]
            seeds = [item for item in peers if item[1].seed]
            chosen = rng.sample(leechers, min(limit, len(leechers)))
            return chosen + rng.sample(seeds, min(limit - len(chosen), len(seeds)))
        return rng.sample(peers, limit)

    def stored(self, info_hash: bytes, now: float) -> list[tuple[Address, StoredPeer]]:
        """Every live peer of `info_hash` with what is stored of it, oldest announce first."""
        swarm = self._live(info_hash, now)
        return [] if swarm is None else list(swarm.items())

    def swarm_ips(self, info_hash: bytes, now: float) -> tuple[list[str], list[str]]:
        """The IPs of the live seeds and of the other peers (for BEP 33 scrape filters)."""
        swarm = self._live(info_hash, now)
        if swarm is None:
            return [], []
        return ([peer[0] for peer, stored in swarm.items() if stored.seed],
                [peer[0] for peer, stored in swarm.items() if not stored.seed])

    def expire(self, now: float) -> int:
        """Drop every expired peer; returns how many were dropped."""
        before = self.peer_count()
        for info_hash in list(self._swarms):
            self._live(info_hash, now)
        return before - self.peer_count()
