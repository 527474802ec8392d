"""Sybil nodes: one attacker behind many addresses, trying to eclipse every lookup target.

Each Sybil answers pings with a fixed "home" id (a BEP 42 id for its IP, so it passes into
routing tables like an honest node). To any query with a target (find_node, get_peers, get,
sample_infohashes) it answers as a node sitting right next to the target: its own id and the
k ids it lists all share the target's first 16 bytes, and every listed address is another
Sybil. A lookup that meets one Sybil is thus led to a closed set of attacker addresses that
all look closer than any honest node, return no peers and swallow announces.

The ids a Sybil claims near a target are a function of (target, address), so the id under
which a Sybil is listed is the id it answers with when queried.
"""

from __future__ import annotations

import random as _random
from typing import Sequence

from ..bep42 import secure_node_id
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


class SybilSwarm:
    """The attacker: Sybil endpoints at `addresses` on `network`, sharing one address book."""

    def __init__(self, network: VirtualNetwork, addresses: Sequence[Address], rng: _random.Random,
                 k: int = 8) -> None:
        self.network = network
        self.addresses = list(addresses)
        self.k = k
        self._salt = rng.getrandbits(64)
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
        spread = mix64(self._salt ^ mix64((_ip_int(address[0]) << 16) | address[1]))
        suffix = (spread ^ int.from_bytes(target[-SPOOFED_SUFFIX_BYTES:], "big")) & (
            (1 << (8 * SPOOFED_SUFFIX_BYTES)) - 1)
        if suffix == int.from_bytes(target[-SPOOFED_SUFFIX_BYTES:], "big"):
            suffix ^= 1  # never the target itself
        return NodeId(bytes(target[:ID_LENGTH - SPOOFED_SUFFIX_BYTES])
                      + suffix.to_bytes(SPOOFED_SUFFIX_BYTES, "big"))

    def _listed(self, target: bytes, me: Address) -> list[NodeInfo]:
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
            reply = Response(transaction_id=message.transaction_id,
                             sender_id=self.claimed_id(target, me), requester=source,
                             nodes=self._listed(target, me),
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
