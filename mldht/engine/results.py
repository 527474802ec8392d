"""What operations return and what the engine counts: plain data, JSON-ready via
`as_dict()`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bep33 import ScrapeEstimate
from ..bep44 import Item
from ..compact import Address, NodeInfo, format_address
from ..ids import NodeId


@dataclass(slots=True)
class NodeStats:
    """Counters of what a node has sent and received since it started (both families)."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    queries_received: dict[str, int] = field(default_factory=dict)
    """Queries received, by method (at most 64 method names are counted)."""
    queries_sent: int = 0
    queries_sent_by_method: dict[str, int] = field(default_factory=dict)
    queries_resent: int = 0
    """Lookup queries sent a second time after going unanswered past the soft timeout."""
    queries_delayed: int = 0
    """Queries that waited in the queue for the outbound budget before leaving."""
    queries_not_sent: int = 0
    """Queries dropped before they left (queue full, node closed)."""
    queries_abandoned: int = 0
    """Queries sent whose operation ended before the answer came (not timeouts)."""
    responses_received: int = 0
    errors_received: int = 0
    errors_received_by_code: dict[int, int] = field(default_factory=dict)
    errors_sent: int = 0
    errors_sent_by_code: dict[int, int] = field(default_factory=dict)
    malformed_received: int = 0
    unmatched_received: int = 0
    """Responses and errors with no pending transaction (late, spoofed or duplicated)."""
    timeouts: int = 0
    send_failures: int = 0
    """Datagrams the transport refused (an address it cannot reach, a closed socket)."""
    dropped_by_transport: int = 0
    """Datagrams dropped because the socket's send queue was full."""
    receive_path_failures: int = 0
    """Internal errors caught in the receive path (should stay 0)."""
    id_changes: int = 0
    """Moves to a new node id after our external IP became known (BEP 42)."""
    rate_limited: int = 0
    """Datagrams dropped unread because their IP exceeded the inbound rate."""
    blocked: int = 0
    """Datagrams dropped because their IP is on the blocklist."""
    replies_dropped: int = 0
    """Answers not sent because the global reply budget was spent."""
    events_dropped: int = 0
    """Observation events lost because the engine's event buffer was full."""

    def as_dict(self) -> dict:
        return {name: (dict(value) if isinstance(value, dict) else value)
                for name in self.__slots__ for value in (getattr(self, name),)}


@dataclass(slots=True)
class LookupSummary:
    """What a lookup did: in `PeerLookup.summary`, `find_node_lookup`, `announce`..."""

    target: NodeId
    elapsed: float
    time_to_first_peer: float | None
    queried: int
    """Nodes queried."""
    answered: int
    timed_out: int
    """Nodes queried that gave no answer: timed out, answered with an error, or silent past
    their soft timeout when the lookup ended (it does not wait for those)."""
    peers: int
    """Distinct peers found (get_peers only)."""
    closest: list[NodeInfo]
    """The closest nodes that answered, nearest first."""
    scrape: ScrapeEstimate | None = None
    """BEP 33 (get_peers with scrape=True): seeds and peers estimated from the nodes' filters."""
    hops: int | None = None
    """Hops to the closest node that answered: 0 when it came from our own routing table,
    h + 1 when it was learned from the reply of a node at hop h (None: nobody answered)."""
    max_hop: int = 0
    """The largest hop of any node that answered."""
    first_peer_hop: int | None = None
    """The hop of the node whose reply carried the first peer (get_peers only)."""
    resent: int = 0
    """Queries sent a second time after a silence (queried + resent: datagrams sent)."""
    in_flight: int = 0
    """Queries still within their soft timeout when the lookup ended (its closest nodes had
    answered): neither answered nor failed. queried = answered + timed_out + in_flight."""

    def as_dict(self) -> dict:
        return {
            "target": self.target.hex(), "elapsed": round(self.elapsed, 3),
            "time_to_first_peer": None if self.time_to_first_peer is None
            else round(self.time_to_first_peer, 3),
            "queried": self.queried, "answered": self.answered, "timed_out": self.timed_out,
            "in_flight": self.in_flight,
            "resent": self.resent, "peers": self.peers, "hops": self.hops,
            "closest": [{"id": node.id.hex(), "address": format_address(node.address)}
                        for node in self.closest],
            **({} if self.scrape is None else {"scrape": {
                "seeds": self.scrape.seeds, "peers": self.scrape.peers,
                "filters": self.scrape.filters}}),
        }


def merge_summaries(summaries: list[LookupSummary]) -> LookupSummary:
    """One summary for lookups towards one target run side by side (one per address
    family): counts added up, `closest` sorted by distance to the target."""
    if len(summaries) == 1:
        return summaries[0]
    target = summaries[0].target
    with_peer = [s for s in summaries if s.time_to_first_peer is not None]
    first = min(with_peer, key=lambda s: s.time_to_first_peer) if with_peer else None
    hops = [s.hops for s in summaries if s.hops is not None]
    closest = sorted((n for s in summaries for n in s.closest),
                     key=lambda node: node.id.distance(target))
    return LookupSummary(
        target=target, elapsed=max(s.elapsed for s in summaries),
        time_to_first_peer=first.time_to_first_peer if first else None,
        queried=sum(s.queried for s in summaries), answered=sum(s.answered for s in summaries),
        timed_out=sum(s.timed_out for s in summaries), peers=sum(s.peers for s in summaries),
        closest=closest, hops=min(hops) if hops else None,
        max_hop=max(s.max_hop for s in summaries),
        first_peer_hop=first.first_peer_hop if first else None,
        resent=sum(s.resent for s in summaries), in_flight=sum(s.in_flight for s in summaries))


@dataclass(slots=True)
class StoreResult:
    """What the store phase (announce_peer or put to the closest nodes) got."""

    accepted: list[NodeInfo] = field(default_factory=list)
    asked: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    """KRPC error code -> how many nodes refused with it."""
    timed_out: int = 0


@dataclass(slots=True)
class AnnounceResult:
    """Outcome of an announce."""

    summary: LookupSummary
    announced_to: list[NodeInfo]
    """Nodes that accepted the announce."""
    failed: int
    """Nodes that returned a token but did not accept the announce (error or timeout)."""

    def as_dict(self) -> dict:
        return {"announced_to": [format_address(n.address) for n in self.announced_to],
                "failed": self.failed, **self.summary.as_dict()}


@dataclass(slots=True)
class ItemResult:
    """Outcome of `get_item` (BEP 44)."""

    item: Item | None
    """The item found (for a mutable one, the highest seq seen); None when none was."""
    summary: LookupSummary
    copies: int
    """Nodes that returned this very item (same seq and value)."""
    invalid: int
    """Replies carrying an item that failed verification (wrong hash, key or signature)."""


@dataclass(slots=True)
class PutResult:
    """Outcome of `put_immutable` / `put_mutable` (BEP 44)."""

    item: Item
    """The item that was put (its `target` is where it lives)."""
    summary: LookupSummary
    stored_on: list[NodeInfo]
    """Nodes that accepted the put."""
    asked: int
    """How many of the k closest nodes (those that gave a token) the put was sent to."""
    errors: dict[int, int]
    """KRPC error code -> how many nodes refused with it (302: their seq is higher...)."""
    timed_out: int


@dataclass(slots=True)
class PeerLookupResult:
    """One infohash's lookup in a batch (`get_peers_many`): its peers and summary, or the
    error that ended it."""

    info_hash: NodeId
    peers: list[Address]
    summary: LookupSummary | None
    error: str | None = None

    def as_dict(self) -> dict:
        return {"infohash": self.info_hash.hex(),
                "peers": [format_address(peer) for peer in self.peers],
                "error": self.error,
                **({} if self.summary is None else {"summary": self.summary.as_dict()})}
