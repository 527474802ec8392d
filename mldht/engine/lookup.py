"""The iterative Kademlia lookup as a sans-I/O state machine: which candidates to ask, in
what order, and when the lookup is over.

Every traversal (find_node, get_peers, BEP 44 get, an application's own) runs on this
class; `traversal.py` drives it. The driver asks `next_queries(now)` what to send, says
when each query really left with `on_sent` (it may wait for the outbound budget first, and
its soft timeout only starts then), reports each outcome with `on_reply` or `on_failure`
(hard timeout or error), wakes up at `next_deadline()` to let soft timeouts open new
slots, and stops when `done` is true.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

import math

from ..compact import Address, NodeInfo
from ..config import DEFAULT_ALPHA, DEFAULT_K
from ..ids import ID_BITS, NodeId, distance

ALPHA = DEFAULT_ALPHA
SOFT_TIMEOUT = 1.0
K = DEFAULT_K
MIN_SOFT_TIMEOUT = 0.25
"""The adaptive soft timeout never goes below this (seconds)."""
RTT_FACTOR = 3.0
"""An answer slower than this many times the lookup's median round trip is not waited for."""
RESEND_RANK = 3
"""Only the closest few candidates are asked twice (`claim_resend`): with 20 % dead nodes,
resending to all k closest cost 12 % more queries; to the closest 3, (see docs/performance.md)."""
UNKNOWN_DISTANCE = 1 << ID_BITS
"""Distance given to bootstrap addresses whose id is not known yet: queried last."""


class CandidateState(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    """Chosen and holding a slot: waiting for the budget (`sent_at` is inf) or sent."""
    SLOW = "slow"
    """Past the soft timeout: still awaited, but no longer holding a slot."""
    ABANDONED = "abandoned"
    """Past the full (unadapted) soft timeout, with `wait_for_slow` off: a late answer is
    still taken, but the lookup may end without it."""
    ANSWERED = "answered"
    FAILED = "failed"


_AWAITED = (CandidateState.IN_FLIGHT, CandidateState.SLOW, CandidateState.ABANDONED)


@dataclass(slots=True)
class Candidate:
    address: Address
    node_id: NodeId | None
    distance: int
    state: CandidateState = CandidateState.NEW
    sent_at: float = 0.0
    token: bytes | None = None
    hop: int = 0
    """How far from our own knowledge: 0 for seeds and bootstrap addresses, h + 1 for a
    node first learned from the reply of a hop-h node (lowered while still unqueried when
    a nearer referrer names it too)."""

    @property
    def info(self) -> NodeInfo:
        assert self.node_id is not None
        return NodeInfo(self.node_id, self.address[0], self.address[1])


@dataclass(slots=True)
class LookupStats:
    queried: int = 0
    resent: int = 0
    """Queries sent a second time (see `claim_resend`)."""
    answered: int = 0
    failed: int = 0
    peers: set[Address] = field(default_factory=set)
    max_hop: int = 0
    """The largest hop of any node that answered (0: only seeds answered)."""
    first_peer_hop: int | None = None
    """The hop of the node whose reply carried the first peer (None: no peer yet)."""
    implausible: int = 0
    """Nodes not believed: listed or answering with an id implausibly close to the target
    (see `Lookup`'s `max_shared_bits`)."""


class Lookup:
    """State of one iterative lookup towards `target`.

    `seeds` are the starting nodes (from the routing table) and `bootstrap` bare addresses
    whose ids are unknown. The lookup keeps `alpha` queries in flight among the closest
    unqueried candidates; a query past the soft timeout stops holding a slot; it ends when
    the `k` closest non-failed candidates have all answered, or when nothing is left to ask.
    At most `max_candidates` are tracked (the farthest unqueried ones are dropped).

    Two departures from libtorrent's traversal, both on by default and measured in the
    simulator (docs/performance.md): with `adaptive_timeout` the soft timeout follows the
    round trips seen in this lookup (RTT_FACTOR times their median, between
    MIN_SOFT_TIMEOUT and `soft_timeout`), and without `wait_for_slow` a query past its soft
    timeout no longer holds the end of the lookup: the closest nodes that did answer are the
    result, rather than waiting out the hard timeout of a node that is most likely gone.
    """

    def __init__(self, target: NodeId, seeds: Iterable[NodeInfo], now: float, *,
                 bootstrap: Iterable[Address] = (), k: int = K, alpha: int = ALPHA,
                 soft_timeout: float = SOFT_TIMEOUT, max_candidates: int = 128,
                 adaptive_timeout: bool = False, wait_for_slow: bool = True,
                 aggressive: bool = False, max_shared_bits: int | None = None,
                 widen_until_values: int | None = None,
                 round_trip_factor: float = RTT_FACTOR) -> None:
        self.target = target
        self.round_trip_factor = round_trip_factor
        """With `adaptive_timeout`, the soft timeout is this many times the median round trip."""
        self.widen_until_values = widen_until_values
        """When the k closest nodes have answered and none carried a peer, the lookup goes
        on until this many closest nodes have answered: where Sybils hold some of the
        closest places, the honest nodes that store the swarm are a little farther out.
        Once a peer came, k again."""
        self._widened = False
        """Whether the k closest answered without a peer, so that the lookup widened."""
        self.max_shared_bits = max_shared_bits
        """Ids sharing more leading bits than this with the target (the target itself
        excepted: it may be the node looked for) are not believed: such a node is never
        queried, and its answer counts as a failure, its nodes and values dropped. No honest
        node is that close but once in many thousand lookups; an eclipsing Sybil is."""
        self._believable = (None if max_shared_bits is None else
                            1 << (ID_BITS - max_shared_bits - 1))
        """Distances below this share more than `max_shared_bits` bits with the target."""
        self.aggressive = aggressive
        self.k = k
        self.alpha = alpha
        self.max_soft_timeout = soft_timeout
        self.soft_timeout = soft_timeout
        """The soft timeout in force (it moves when `adaptive_timeout` is on)."""
        self.adaptive_timeout = adaptive_timeout
        self.wait_for_slow = wait_for_slow
        self._round_trips: list[float] = []
        self.max_candidates = max(max_candidates, k + alpha)
        self.started = now
        self.stats = LookupStats()
        self._candidates: dict[Address, Candidate] = {}
        self._ordered: list[Candidate] = []
        self._dirty = False
        self.add_nodes(seeds)
        for address in bootstrap:
            if address not in self._candidates:
                self._insert(Candidate(address, None, UNKNOWN_DISTANCE))

    # --- candidates ---------------------------------------------------------------------

    def _insert(self, candidate: Candidate) -> None:
        self._candidates[candidate.address] = candidate
        self._ordered.append(candidate)
        self._dirty = True

    def _sorted(self) -> list[Candidate]:
        if self._dirty:
            self._ordered.sort(key=lambda candidate: candidate.distance)
            if len(self._ordered) > self.max_candidates:
                keep = self._ordered[:self.max_candidates]
                for dropped in self._ordered[self.max_candidates:]:
                    if dropped.state in _AWAITED:
                        keep.append(dropped)  # still awaited; keep to match the reply
                    else:
                        del self._candidates[dropped.address]
                self._ordered = keep
            self._dirty = False
        return self._ordered

    def add_nodes(self, nodes: Iterable[NodeInfo], hop: int = 0) -> None:
        """Learn about nodes (from the routing table, hop 0, or a `nodes` reply of a node at
        hop h, giving hop h + 1)."""
        checked = self._believable is not None
        for node in nodes:
            if node.port == 0:
                continue
            if checked and not self.believable(node.id):
                self.stats.implausible += 1
                continue
            known = self._candidates.get(node.address)
            if known is not None:
                if hop < known.hop and known.state is CandidateState.NEW:
                    known.hop = hop
                continue
            self._insert(Candidate(node.address, node.id, distance(node.id, self.target), hop=hop))

    def _wanted(self) -> int:
        """How many of the closest candidates must answer before the lookup ends."""
        if not self._widened or self.stats.peers:
            return self.k
        return max(self.k, self.widen_until_values or 0)

    def _widen_when_due(self) -> None:
        """Widen once the k closest have answered without a peer. Not from the start: a
        lookup that asks 16 where 8 will do (most swarms are on their 8 closest nodes)
        races for the 9th to 16th while it converges, about 4 queries a lookup."""
        if (not self._widened and self.widen_until_values is not None
                and self.widen_until_values > self.k and not self.stats.peers
                and self._done_at(self.k)):
            self._widened = True

    def believable(self, node_id: bytes) -> bool:
        """Whether an id is no closer to the target than `max_shared_bits` allows."""
        if self._believable is None:
            return True
        gap = distance(node_id, self.target)
        return gap >= self._believable or gap == 0

    # --- driving ------------------------------------------------------------------------

    def _expire_soft(self, now: float) -> None:
        for candidate in self._ordered:
            # Same expressions as next_deadline(): `now - sent_at >= soft_timeout` can be
            # false (float rounding) at the very deadline it reported.
            if (candidate.state is CandidateState.IN_FLIGHT
                    and now >= candidate.sent_at + self.soft_timeout):
                candidate.state = CandidateState.SLOW
            if (candidate.state is CandidateState.SLOW and not self.wait_for_slow
                    and now >= candidate.sent_at + self.max_soft_timeout):
                candidate.state = CandidateState.ABANDONED

    def next_queries(self, now: float, assume_sent: bool = True) -> list[NodeInfo | Address]:
        """The nodes to query now (each returned once); bare addresses for unknown ids.

        With `assume_sent` false their soft timeouts wait for `on_sent` (the driver's
        queries may wait for the outbound budget first); by default they start now."""
        self._expire_soft(now)
        if self.done:  # (which widens the lookup when that is due)
            return []
        ordered = self._sorted()
        if self.aggressive:  # only the in-flight queries met before the next one count
            slots = self.alpha
        else:
            slots = self.alpha - sum(1 for c in ordered if c.state is CandidateState.IN_FLIGHT)
        chosen: list[NodeInfo | Address] = []
        answered = 0
        wanted = self._wanted()
        for candidate in ordered:
            if slots <= 0 or answered >= wanted:
                break
            if candidate.state is CandidateState.ANSWERED:
                answered += 1
            elif candidate.state is CandidateState.IN_FLIGHT and self.aggressive:
                slots -= 1
            elif candidate.state is CandidateState.NEW:
                candidate.state = CandidateState.IN_FLIGHT
                candidate.sent_at = now if assume_sent else math.inf
                self.stats.queried += 1
                slots -= 1
                chosen.append(candidate.info if candidate.node_id is not None else candidate.address)
        return chosen

    def on_sent(self, address: Address, now: float) -> None:
        """The query to `address` left now: its soft timeout starts."""
        candidate = self._candidates.get(address)
        if candidate is not None and candidate.state is CandidateState.IN_FLIGHT:
            candidate.sent_at = now

    def next_deadline(self) -> float | None:
        """When the earliest in-flight query passes its soft timeout, or (without
        `wait_for_slow`) a slow one is abandoned; None when nothing sent is pending."""
        times = [c.sent_at + self.soft_timeout for c in self._ordered
                 if c.state is CandidateState.IN_FLIGHT and c.sent_at != math.inf]
        if not self.wait_for_slow:
            times += [c.sent_at + self.max_soft_timeout for c in self._ordered
                      if c.state is CandidateState.SLOW]
        return min(times) if times else None

    def on_reply(self, address: Address, node_id: NodeId, now: float,
                 nodes: Iterable[NodeInfo] = (), token: bytes | None = None,
                 values: Iterable[Address] = ()) -> list[Address]:
        """Record an answer from `address`; returns the peers in it not seen before."""
        candidate = self._candidates.get(address)
        if candidate is None or candidate.state not in _AWAITED:
            return []  # never asked, or already settled
        if self._believable is not None and not self.believable(node_id):
            # It was listed (or sits in our table) under a believable id and answers as a
            # node right next to the target: what an eclipsing Sybil does.
            candidate.state = CandidateState.FAILED
            self.stats.implausible += 1
            self.stats.failed += 1
            return []
        candidate.state = CandidateState.ANSWERED
        candidate.token = token
        if self.adaptive_timeout:
            self._learn_round_trip(now - candidate.sent_at)
        if candidate.node_id != node_id:
            # A bootstrap address, or a node whose id differs from what a referrer said:
            # rank it by the id it answers with.
            candidate.node_id = node_id
            candidate.distance = distance(node_id, self.target)
            self._dirty = True
        self.stats.answered += 1
        self.stats.max_hop = max(self.stats.max_hop, candidate.hop)
        self.add_nodes((node for node in nodes if node.id != node_id), candidate.hop + 1)
        fresh = []
        for peer in values:
            if peer not in self.stats.peers:  # also drops repeats within this reply
                self.stats.peers.add(peer)
                fresh.append(peer)
        if fresh and self.stats.first_peer_hop is None:
            self.stats.first_peer_hop = candidate.hop
        return fresh

    def _learn_round_trip(self, seconds: float) -> None:
        trips = self._round_trips
        trips.append(seconds)
        if len(trips) >= 3:  # a median of fewer says little
            median = sorted(trips)[len(trips) // 2]
            self.soft_timeout = min(self.max_soft_timeout,
                                    max(MIN_SOFT_TIMEOUT, self.round_trip_factor * median))

    def claim_resend(self, address: Address) -> bool:
        """The query to `address` is past its soft timeout: send it again? Yes (and counted
        in `stats.resent`) while the node is among the RESEND_RANK closest candidates not
        known to have failed, whose answers decide the result; a farther node's lost answer
        is not worth a datagram (a silent node is more often dead than unlucky)."""
        candidate = self._candidates.get(address)
        if candidate is None or candidate.state not in _AWAITED:
            return False
        rank = 0
        for other in self._sorted():
            if other is candidate:
                self.stats.resent += 1
                return True
            if other.state is not CandidateState.FAILED:
                rank += 1
                if rank >= RESEND_RANK:
                    return False
        return False

    def on_failure(self, address: Address, now: float, sent: bool = True) -> None:
        """The query to `address` timed out for good, or was answered with an error; with
        `sent` false it never left (it is then not counted as queried)."""
        candidate = self._candidates.get(address)
        if candidate is None or candidate.state in (CandidateState.ANSWERED, CandidateState.FAILED):
            return
        candidate.state = CandidateState.FAILED
        if sent:
            self.stats.failed += 1
        else:
            self.stats.queried -= 1

    def unsent(self) -> list[Address]:
        """Candidates chosen whose queries have not left yet (waiting for the budget)."""
        return [c.address for c in self._ordered
                if c.state is CandidateState.IN_FLIGHT and c.sent_at == math.inf]

    @property
    def done(self) -> bool:
        """True when the k closest live candidates have answered and none closer is pending;
        short of k answers, only once nothing is awaited any more (an abandoned query may
        still be the one answer a lookup gets: a cold start's only router, its reply lost
        once)."""
        self._widen_when_due()
        return self._done_at(self._wanted())

    def _done_at(self, wanted: int) -> bool:
        answered = 0
        abandoned = False
        for candidate in self._sorted():
            if candidate.state is CandidateState.FAILED:
                continue
            if candidate.state is CandidateState.ABANDONED:
                abandoned = True
                continue
            if candidate.state is not CandidateState.ANSWERED:
                return False
            answered += 1
            if answered >= wanted:
                return True
        return not abandoned

    def in_flight_count(self) -> int:
        """Queries sent and still within their soft timeout."""
        return sum(1 for c in self._ordered if c.state is CandidateState.IN_FLIGHT)

    @property
    def pending(self) -> int:
        return sum(1 for c in self._ordered if c.state in _AWAITED)

    def closest_answered(self, count: int | None = None, with_token: bool = False) -> list[Candidate]:
        """The closest candidates that answered (with a token, when asked)."""
        result = [c for c in self._sorted() if c.state is CandidateState.ANSWERED
                  and (not with_token or c.token)]
        return result[:self.k if count is None else count]
