"""Sybil nodes: one attacker behind many addresses, trying to eclipse every lookup target.

Each Sybil answers pings with a fixed "home" id (a BEP 42 id for its IP, so it passes into
routing tables like an honest node). To any query with a target (find_node, get_peers, get,
sample_infohashes) it answers as a node sitting next to the target, lists the k Sybils that
claim to be closest (every listed address is another Sybil), returns no peers and swallows
announces and puts. How close a Sybil claims to be is the strategy (`STRATEGIES`):

- `eclipse`: its id and the ids it lists share the target's first 16 bytes, 2^128 times
  closer than any honest node of any realistic network, and not BEP 42 ids;
- `plausible`: every id is a BEP 42 id valid for the Sybil's own IP (one of the 8 prefixes
  its IP allows, the one nearest the target) and claims to share only as many bits with the
  target as the network's size makes plausible, one bit more than the closest honest node
  would; the attacker knows the network's size. Only the Sybils whose allowed prefixes
  happen to lie near the target can get close, as with a real attacker bound by BEP 42;
- `poison`: as `eclipse`, and its get_peers replies carry made-up peers (`values`) too.

The ids a Sybil claims near a target are a function of (target, address), so the id under
which a Sybil is listed is the id it answers with when queried.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random as _random
from typing import Sequence

from ..bep42 import crc_for, secure_node_id
from ..compact import NodeInfo
from ..errors import KrpcDecodeError
from ..ids import ID_LENGTH, NodeId
from ..krpc import (
    FindNode, Get, GetPeers, Query, Response, SampleInfohashes, decode_message, encode_message,
)
from .network import Address, VirtualNetwork, VirtualTransport, mix64

SPOOFED_SUFFIX_BYTES = 4
"""Bytes of a claimed id that differ from the target: 2^128 times closer than any honest
node of a network of any realistic size."""
STRATEGIES = ("eclipse", "plausible", "poison")
MADE_UP_PEERS = 8
"""Peers a poisoning Sybil puts in each get_peers reply (none of them exists)."""
PREFIX_BITS = 21
"""The bits of a BEP 42 id its IP decides (with one of 8 random values)."""


class SybilSwarm:
    """The attacker: Sybil endpoints at `addresses` on `network`, sharing one address book."""

    def __init__(self, network: VirtualNetwork, addresses: Sequence[Address], rng: _random.Random,
                 k: int = 8, strategy: str = "eclipse", honest_nodes: int = 1000) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown Sybil strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
        self.network = network
        self.addresses = list(addresses)
        self.k = k
        self.strategy = strategy
        self.plausible_bits = max(1, math.ceil(math.log2(max(2, honest_nodes)))) + 1
        """How many bits a `plausible` Sybil claims to share with a target: one more than
        the closest of `honest_nodes` random ids shares with it, about."""
        self._salt = rng.getrandbits(64)
        self.made_up_peers_sent = 0
        # BEP 42: each IP allows 8 prefixes of 21 bits; sorted, so that the prefixes
        # nearest a target (the longest common prefix) sit around its insertion point.
        self._prefixes: list[tuple[int, int, int]] = sorted(
            (crc_for(address[0], r) >> (32 - PREFIX_BITS), r, index)
            for index, address in enumerate(self.addresses) for r in range(8))
        self._prefix_keys = [prefix for prefix, _, _ in self._prefixes]
        self._plausible: dict[bytes, list[NodeInfo]] = {}
        """target -> the k+1 Sybils nearest it with their claimed ids (bounded: cleared
        when it grows past 4096 targets)."""
        self.home_ids: dict[Address, NodeId] = {
            address: secure_node_id(address[0], rng) for address in self.addresses}
        self._transports: dict[Address, VirtualTransport] = {}
        self.queries_answered = 0
        for address in self.addresses:
            self._transports[address] = network.attach(
                address, lambda data, source, me=address: self._received(me, data, source))

    def home_infos(self) -> list[NodeInfo]:
        """The Sybils as routing tables see them (their home ids)."""
        return [NodeInfo(self.home_ids[address], address[0], address[1])
                for address in self.addresses]

    def introduce(self, address: Address, honest: Sequence[Address]) -> None:
        """Have the Sybil at `address` query `honest` nodes once, as a joining node does; they
        ping it back to verify it and take it into their tables."""
        for target in honest:
            query = FindNode(transaction_id=b"sy", sender_id=self.home_ids[address],
                             target=self.home_ids[address])
            self._transports[address].send_batch([(encode_message(query), target)])

    def claimed_id(self, target: bytes, address: Address) -> NodeId:
        """The id the Sybil at `address` claims when `target` is looked up."""
        if self.strategy == "plausible":
            for node in self._plausible_near(target):
                if node.address == address:
                    return node.id
            return self.home_ids[address]  # asked for a target it is not near: its own id
        spread = mix64(self._salt ^ mix64((_ip_int(address[0]) << 16) | address[1]))
        suffix = (spread ^ int.from_bytes(target[-SPOOFED_SUFFIX_BYTES:], "big")) & (
            (1 << (8 * SPOOFED_SUFFIX_BYTES)) - 1)
        if suffix == int.from_bytes(target[-SPOOFED_SUFFIX_BYTES:], "big"):
            suffix ^= 1  # never the target itself
        return NodeId(bytes(target[:ID_LENGTH - SPOOFED_SUFFIX_BYTES])
                      + suffix.to_bytes(SPOOFED_SUFFIX_BYTES, "big"))

    def _plausible_id(self, target: bytes, prefix: int, r: int, address: Address) -> NodeId:
        """A BEP 42 id for `address` (`prefix` is what its IP allows with `r`): when the
        prefix is the target's own, sharing exactly `plausible_bits` bits with the target,
        else the prefix and random bits (as near as the IP allows)."""
        bits = 8 * ID_LENGTH
        free = bits - PREFIX_BITS
        key = int.from_bytes(target, "big")
        noise = int.from_bytes(hashlib.sha1(
            self._salt.to_bytes(8, "big") + target + address[0].encode()
            + address[1].to_bytes(2, "big")).digest(), "big")
        value = (prefix << free) | (noise & ((1 << free) - 1))
        depth = self.plausible_bits
        if depth > PREFIX_BITS and prefix == key >> free:
            keep = bits - depth
            differ = ((~key >> (keep - 1)) & 1) << (keep - 1)
            value = (key >> keep << keep) | differ | (noise & ((1 << (keep - 1)) - 1))
        raw = bytearray(value.to_bytes(ID_LENGTH, "big"))
        raw[-1] = (raw[-1] & 0xF8) | r  # the random value BEP 42 reads from the last byte
        return NodeId(bytes(raw))

    def _plausible_near(self, target: bytes) -> list[NodeInfo]:
        cached = self._plausible.get(target)
        if cached is not None:
            return cached
        wanted = int.from_bytes(target[:3], "big") >> (24 - PREFIX_BITS)
        middle = bisect.bisect_left(self._prefix_keys, wanted)
        window = self._prefixes[max(0, middle - 4 * self.k):middle + 4 * self.k]
        window.sort(key=lambda entry: entry[0] ^ wanted)
        chosen: list[NodeInfo] = []
        seen: set[int] = set()
        for prefix, r, index in window:
            if index in seen:
                continue
            seen.add(index)
            address = self.addresses[index]
            chosen.append(NodeInfo(self._plausible_id(target, prefix, r, address), *address))
            if len(chosen) > self.k:
                break
        if len(self._plausible) >= 4096:
            self._plausible.clear()
        self._plausible[target] = chosen
        return chosen

    def _listed(self, target: bytes, me: Address) -> list[NodeInfo]:
        if self.strategy == "plausible":
            return [node for node in self._plausible_near(target) if node.address != me][:self.k]
        start = mix64(int.from_bytes(target[:8], "big") ^ self._salt) % len(self.addresses)
        chosen: list[NodeInfo] = []
        for step in range(min(self.k + 1, len(self.addresses))):
            address = self.addresses[(start + step) % len(self.addresses)]
            if address != me and len(chosen) < self.k:
                chosen.append(NodeInfo(self.claimed_id(target, address), address[0], address[1]))
        return chosen

    def _received(self, me: Address, data: bytes, source: Address) -> None:
        try:
            message = decode_message(data)
        except KrpcDecodeError:
            return
        if not isinstance(message, Query):
            return  # replies to our introductions: nothing to do with them
        target = _target_of(message)
        if target is None:
            reply = Response(transaction_id=message.transaction_id,
                             sender_id=self.home_ids[me], requester=source)
        else:
            values = None
            if self.strategy == "poison" and isinstance(message, GetPeers):
                values = made_up_peers(target, me, self._salt)
                self.made_up_peers_sent += len(values)
            reply = Response(transaction_id=message.transaction_id,
                             sender_id=self.claimed_id(target, me), requester=source,
                             nodes=self._listed(target, me), values=values,
                             token=b"sybil" if isinstance(message, (GetPeers, Get)) else None)
        self.queries_answered += 1
        self._transports[me].send_batch([(encode_message(reply), source)])


def _target_of(query: Query) -> bytes | None:
    """The key a query looks for (None for ping, announce_peer, put and unknown methods)."""
    if isinstance(query, GetPeers):
        return query.info_hash
    if isinstance(query, (FindNode, Get, SampleInfohashes)):
        return query.target
    return None


def _ip_int(ip: str) -> int:
    value = 0
    for part in ip.split("."):
        value = value * 256 + int(part)
    return value


def made_up_peers(target: bytes, me: Address, salt: int) -> list[Address]:
    """Peers that do not exist, in public-looking ranges (TEST-NET-2/3 would be filtered)."""
    peers = []
    seed = mix64(salt ^ int.from_bytes(target[:8], "big") ^ (_ip_int(me[0]) << 16 | me[1]))
    for index in range(MADE_UP_PEERS):
        value = mix64(seed + index)
        peers.append((f"{11 + value % 100}.{(value >> 8) & 255}.{(value >> 16) & 255}."
                      f"{1 + (value >> 24) % 254}", 1024 + (value >> 32) % 60000))
    return peers
