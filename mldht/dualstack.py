"""A dual-stack node (BEP 32): an IPv4 and an IPv6 DHTNode working as one.

Each family keeps its own socket, node id (BEP 42 ties ids to addresses) and routing table;
they share one peer store, so a peer announced over either family is served over both, and
each answers BEP 32 `want` for the other family from its sibling's table. Lookups and
announces run on both families at once and their results are merged.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import socket
from typing import AsyncIterator, Sequence

from .bep33 import ScrapeMerger
from .blocklist import Blocklist
from .compact import Address, NodeInfo, parse_host_port
from .config import NodeConfig
from .ids import InfoHash, NodeId
from .node import AnnounceResult, DHTNode, LookupSummary, PeerLookup
from .bep44 import ItemStore
from .peerstore import PeerStore

log = logging.getLogger("mldht.dualstack")


def ipv6_available() -> bool:
    """Whether this host can open an IPv6 UDP socket at all."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


class DualStackNode:
    """Nodes on up to two sockets, at most one per address family.

    `binds`: `(ip, port)` pairs or `"ip:port"` strings, e.g. `["0.0.0.0:6881", "[::]:6881"]`.
    The other arguments are those of `DHTNode`, given to both; a `state_file` is kept per
    family (`FILE` for IPv4, `FILE.ipv6` for IPv6). A family whose socket cannot be opened
    when `start()` runs is left out with a warning, unless it is the only one.
    """

    def __init__(self, binds: Sequence[Address | str], *,
                 bootstrap: Sequence[str | Address] | None = None,
                 state_file: str | None = None, read_only: bool = False,
                 config: NodeConfig | None = None, rng: _random.Random | None = None,
                 blocklist: Blocklist | None = None) -> None:
        addresses = [parse_host_port(b, allow_any_port=True) if isinstance(b, str) else b
                     for b in binds]
        families = [":" in address[0] for address in addresses]
        if not addresses or len(addresses) > 2 or len(set(families)) != len(families):
            raise ValueError("give one or two bind addresses, at most one per address family")
        self.config = config or NodeConfig()
        self.peer_store = PeerStore(self.config.max_infohashes,
                                    self.config.max_peers_per_infohash, self.config.peer_lifetime)
        self.item_store = ItemStore(self.config.max_items, self.config.item_lifetime)
        """One BEP 44 store for both families, like the peer store."""
        self.nodes: list[DHTNode] = []
        for address, ipv6 in zip(addresses, families):
            self.nodes.append(DHTNode(
                address, bootstrap=bootstrap, read_only=read_only, config=self.config, rng=rng,
                blocklist=blocklist, peer_store=self.peer_store, item_store=self.item_store,
                state_file=f"{state_file}.ipv6" if state_file and ipv6 else state_file))
        if len(self.nodes) == 2:
            self.nodes[0].pair_with(self.nodes[1])

    @property
    def ipv4(self) -> DHTNode | None:
        return next((node for node in self.nodes if not node.is_ipv6), None)

    @property
    def ipv6(self) -> DHTNode | None:
        return next((node for node in self.nodes if node.is_ipv6), None)

    async def start(self) -> None:
        started = []
        for node in list(self.nodes):
            try:
                await node.start()
                started.append(node)
            except OSError as exc:
                if len(self.nodes) == 1:
                    raise
                log.warning("no %s socket (%s): going on with one family",
                            "IPv6" if node.is_ipv6 else "IPv4", exc)
        self.nodes = started
        if not self.nodes:
            raise OSError("no socket could be opened")

    async def close(self) -> None:
        await asyncio.gather(*(node.close() for node in self.nodes))

    async def __aenter__(self) -> "DualStackNode":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def addresses(self) -> list[Address]:
        return [node.address for node in self.nodes]

    async def bootstrap(self, timeout: float | None = None) -> int:
        """Bootstrap both families at once; returns the routing-table sizes added up."""
        sizes = await asyncio.gather(*(node.bootstrap(timeout) for node in self.nodes))
        return sum(sizes)

    def get_peers(self, info_hash: InfoHash | bytes, timeout: float = 30.0, *,
                  scrape: bool = False) -> "DualPeerLookup":
        """A get_peers lookup on every family at once: IPv4 and IPv6 peers, each once."""
        return DualPeerLookup([node.get_peers(info_hash, timeout, scrape=scrape)
                               for node in self.nodes])

    async def announce(self, info_hash: InfoHash | bytes, port: int | None = None, *,
                       implied_port: bool = False, seed: bool = False,
                       timeout: float = 30.0) -> AnnounceResult:
        """Announce on every family; the result lists the nodes of both that accepted."""
        results = await asyncio.gather(*(node.announce(info_hash, port, implied_port=implied_port,
                                                       seed=seed, timeout=timeout)
                                         for node in self.nodes))
        return AnnounceResult(summary=merge_summaries([r.summary for r in results]),
                              announced_to=[n for r in results for n in r.announced_to],
                              failed=sum(r.failed for r in results))

    async def find_node(self, target: NodeId | bytes, timeout: float = 30.0) -> list[NodeInfo]:
        """The k closest nodes of each family, merged by distance."""
        found = await asyncio.gather(*(node.find_node(target, timeout) for node in self.nodes))
        target = NodeId(target)
        return sorted((n for nodes in found for n in nodes), key=lambda n: n.id.distance(target))


def merge_summaries(summaries: list[LookupSummary]) -> LookupSummary:
    """One summary for lookups run side by side (one per address family)."""
    with_peer = [s for s in summaries if s.time_to_first_peer is not None]
    first = min(with_peer, key=lambda s: s.time_to_first_peer) if with_peer else None
    hops = [s.hops for s in summaries if s.hops is not None]
    return LookupSummary(
        target=summaries[0].target, elapsed=max(s.elapsed for s in summaries),
        time_to_first_peer=first.time_to_first_peer if first else None,
        queried=sum(s.queried for s in summaries), answered=sum(s.answered for s in summaries),
        timed_out=sum(s.timed_out for s in summaries), peers=sum(s.peers for s in summaries),
        closest=[n for s in summaries for n in s.closest], hops=min(hops) if hops else None,
        max_hop=max(s.max_hop for s in summaries),
        first_peer_hop=first.first_peer_hop if first else None,
        resent=sum(s.resent for s in summaries))


class DualPeerLookup:
    """Peers from several lookups, each distinct peer once, as soon as any lookup finds it.

    Used like `PeerLookup`: `async for (ip, port) in lookup`, then `lookup.summary`; or
    `await lookup.collect()`; `await lookup.aclose()` stops early.
    """

    def __init__(self, lookups: list[PeerLookup]) -> None:
        self._lookups = lookups
        self._queue: asyncio.Queue = asyncio.Queue()
        self._seen: set[Address] = set()
        self._tasks: list[asyncio.Task] = []
        self.summary: LookupSummary | None = None

    def __aiter__(self) -> AsyncIterator[Address]:
        return self._iterate()

    async def _pump(self, lookup: PeerLookup) -> None:
        try:
            async for peer in lookup:
                await self._queue.put(peer)
        finally:
            await self._queue.put(None)

    async def _iterate(self) -> AsyncIterator[Address]:
        self._tasks = [asyncio.create_task(self._pump(lookup)) for lookup in self._lookups]
        running = len(self._tasks)
        try:
            while running:
                peer = await self._queue.get()
                if peer is None:
                    running -= 1
                elif peer not in self._seen:
                    self._seen.add(peer)
                    yield peer
        finally:
            await self.aclose()
        summaries = [lookup.summary for lookup in self._lookups if lookup.summary is not None]
        if summaries:
            self.summary = merge_summaries(summaries)
            self.summary.peers = len(self._seen)
            mergers = [lookup._merger for lookup in self._lookups if lookup._merger is not None]
            if mergers:  # BEP 33 filters unite across families as across nodes
                union = ScrapeMerger()
                for merger in mergers:
                    union.seeds |= merger.seeds
                    union.peers |= merger.peers
                    union.filters += merger.filters
                self.summary.scrape = union.estimate()

    async def collect(self) -> list[Address]:
        return [peer async for peer in self]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lookup in self._lookups:
            await lookup.aclose()
