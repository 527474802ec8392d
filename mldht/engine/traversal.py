"""Traversal: one iterative algorithm, specialised by what it asks and what it keeps.

As libtorrent's `traversal_algorithm`: the `Lookup` state machine picks whom to ask;
`TraversalRun` drives it on one address family through the engine's transactions; a
`TraversalSpec` says which query to send and what to do with each answer. The
specialisations here are find_node, get_peers (with BEP 33 scrape) and BEP 44 get; an
application subclasses `TraversalSpec` for its own (`Engine.start_traversal`).

A `LookupOperation` runs one `TraversalRun` per family the engine has, on one shared spec,
and merges their summaries once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from ..bep33 import ScrapeMerger
from ..bep44 import Item, bencode as bencode_value
from ..compact import Address, NodeInfo, is_contactable
from ..errors import MldhtError, QueryNotSent
from ..ids import NodeId
from ..krpc import FindNode, Get, GetPeers, Query, Response
from .lookup import Lookup
from .results import LookupSummary
from .transactions import Transaction, TransactionOwner

if TYPE_CHECKING:
    from .core import Engine, Family


class TraversalSpec:
    """What one traversal asks, and what it keeps of the answers.

    Subclass it for a traversal of your own: `query(sender_id)` builds the query sent to
    each node (the engine sets the transaction id, `ro` and `v`); `on_response` sees every
    answer (with the peers in it not seen before, for get_peers-like queries); `stop()`
    ends the traversal early; `result(summary)` is what the operation returns. One spec is
    shared by the runs of both families of a dual-stack engine.
    """

    kind = "traversal"
    lookup_k: int | None = None
    """How many closest nodes must have answered before the traversal ends (None: k)."""

    def __init__(self, target: bytes) -> None:
        self.target = NodeId(target)

    def query(self, sender_id: NodeId) -> Query:
        raise NotImplementedError

    def on_response(self, address: Address, response: Response, fresh_peers: list[Address],
                    now: float) -> None:
        pass

    def stop(self) -> bool:
        return False

    def result(self, summary: LookupSummary) -> Any:
        return summary


class FindNodeSpec(TraversalSpec):
    """find_node towards `target`: the result is the `LookupSummary` (its `closest`)."""

    kind = "find_node"

    def query(self, sender_id: NodeId) -> Query:
        return FindNode(transaction_id=b"", sender_id=sender_id, target=self.target)


class GetPeersSpec(TraversalSpec):
    """get_peers for an infohash; with `scrape`, unites the BEP 33 filters of the replies."""

    kind = "get_peers"

    def __init__(self, target: bytes, scrape: bool = False) -> None:
        super().__init__(target)
        self.merger = ScrapeMerger() if scrape else None

    def query(self, sender_id: NodeId) -> Query:
        return GetPeers(transaction_id=b"", sender_id=sender_id, info_hash=self.target,
                        scrape=self.merger is not None)

    def on_response(self, address, response, fresh_peers, now) -> None:
        if self.merger is not None:
            self.merger.add(response.extra)

    def result(self, summary: LookupSummary) -> LookupSummary:
        if self.merger is not None:
            summary.scrape = self.merger.estimate()
        return summary


def item_in(response: Response, salt: bytes) -> Item | None:
    """The BEP 44 item a `get` reply carries (still to be verified); None when its fields
    are malformed."""
    extra = response.extra
    try:
        encoded = bencode_value(extra[b"v"])
    except Exception:  # a value that cannot be encoded back: not an item
        return None
    public_key, signature, seq = extra.get(b"k"), extra.get(b"sig"), extra.get(b"seq")
    if public_key is None and signature is None:
        return Item(value=extra[b"v"], encoded=encoded)
    if not (isinstance(public_key, bytes) and isinstance(signature, bytes)
            and isinstance(seq, int)):
        return None
    return Item(value=extra[b"v"], encoded=encoded, public_key=public_key, salt=salt, seq=seq,
                signature=signature)


class GetItemSpec(TraversalSpec):
    """BEP 44 get: every item returned is verified against the target before it counts."""

    kind = "get"

    def __init__(self, target: bytes, salt: bytes = b"", stop_at_immutable: bool = True) -> None:
        super().__init__(target)
        self.salt = salt
        self.stop_at_immutable = stop_at_immutable
        self.found: dict[Address, Item] = {}
        self.invalid = 0

    def query(self, sender_id: NodeId) -> Query:
        return Get(transaction_id=b"", sender_id=sender_id, target=self.target)

    def on_response(self, address, response, fresh_peers, now) -> None:
        if b"v" not in response.extra:
            return  # no item here: just nodes
        item = item_in(response, self.salt)
        if item is not None and item.is_valid_for(self.target):
            self.found[address] = item
        else:
            self.invalid += 1

    def stop(self) -> bool:
        return self.stop_at_immutable and any(not i.is_mutable for i in self.found.values())

    def latest(self) -> Item | None:
        """An immutable item if one was found, else the mutable one with the highest seq."""
        items = list(self.found.values())
        for item in items:
            if not item.is_mutable:
                return item
        return max(items, key=lambda item: item.seq, default=None)


def _ignore_done(run: "TraversalRun", now: float) -> None:
    pass


class TraversalRun(TransactionOwner):
    """One traversal on one address family, driven through the engine's transactions."""

    def __init__(self, engine: "Engine", family: "Family", spec: TraversalSpec, now: float,
                 deadline: float, on_answer: Callable[["TraversalRun", list[Address], float], None],
                 on_done: Callable[["TraversalRun", float], None]) -> None:
        config = engine.config
        self.engine = engine
        self.family = family
        self.spec = spec
        self.deadline = deadline
        self._on_answer = on_answer
        self._on_done = on_done
        target = spec.target
        seeds, bootstrap = engine.lookup_seeds(family, target)
        self.lookup = Lookup(target, seeds, now, bootstrap=bootstrap, k=spec.lookup_k or config.k,
                             alpha=config.alpha, soft_timeout=config.soft_timeout,
                             adaptive_timeout=config.adaptive_soft_timeout,
                             wait_for_slow=config.lookup_waits_for_slow,
                             aggressive=config.aggressive_lookups,
                             max_shared_bits=engine.believed_shared_bits(),
                             widen_until_values=(config.widen_peerless_lookups
                                                 if spec.kind == "get_peers" else None))
        self.resends = config.lookup_resends
        self.query_timeout = config.query_timeout
        self.transactions: dict[Address, Transaction] = {}
        self.first_peer_at: float | None = None
        self.finished = False
        self.summary: LookupSummary | None = None
        self._soft_timer = None
        self._deadline_timer = None

    def start(self, now: float) -> None:
        self._deadline_timer = self.engine.timers.at(self.deadline, self._expire)
        self._step(now)

    def _expire(self, now: float) -> None:
        self._deadline_timer = None
        self.finish(now)

    def _step(self, now: float) -> None:
        if self.finished:
            return
        lookup = self.lookup
        if lookup.done or self.spec.stop() or now >= self.deadline:
            self.finish(now)
            return
        engine = self.engine
        for chosen in lookup.next_queries(now, assume_sent=False):
            address = chosen.address if isinstance(chosen, NodeInfo) else chosen
            tx = Transaction(address, self.spec.query(self.family.identity.node_id), self,
                             self.query_timeout,
                             lookup.soft_timeout if self.resends else None)
            self.transactions[address] = tx
            engine.submit(tx, now)
            if self.finished:  # a synchronous failure ended it
                return
        if lookup.done or lookup.pending == 0:
            self.finish(now)
            return
        self._arm(lookup.next_deadline())

    def _arm(self, when: float | None) -> None:
        if when is None or when == math.inf:
            return
        timer = self._soft_timer
        if timer is not None and not timer.cancelled and timer.when <= when:
            return
        self.engine.timers.cancel(timer)
        self._soft_timer = self.engine.timers.at(when, self._on_soft_timer)

    def _on_soft_timer(self, now: float) -> None:
        self._soft_timer = None
        self._step(now)

    # --- transaction callbacks ----------------------------------------------------------

    def on_sent(self, tx: Transaction, now: float) -> None:
        self.lookup.on_sent(tx.address, now)
        if not self.finished:
            self._arm(now + self.lookup.soft_timeout)

    def claim_resend(self, tx: Transaction) -> bool:
        return not self.finished and self.lookup.claim_resend(tx.address)

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        address = tx.address
        self.transactions.pop(address, None)
        if self.finished:
            return
        engine = self.engine
        lookup = self.lookup
        if not engine.acceptable(response.sender_id, address[0]):
            # An id it may not have (BEP 42, enforced) would rank it, and what it lists,
            # wherever it likes: a Sybil's way to the front of a lookup.
            lookup.on_failure(address, now)
            self._step(now)
            return
        family = self.family
        own_id = family.identity.node_id
        own_address = family.address
        listed = response.nodes6 if family.ipv6 else response.nodes
        nodes = [node for node in listed or []
                 if node.id != own_id and node.address != own_address
                 and is_contactable(node.address, address) and engine.acceptable(node.id, node.ip)]
        fresh = lookup.on_reply(address, response.sender_id, now, nodes, response.token,
                                response.values or [])
        if fresh and self.first_peer_at is None:
            self.first_peer_at = now
        self.spec.on_response(address, response, fresh, now)
        self._on_answer(self, fresh, now)
        self._step(now)

    def on_failure(self, tx: Transaction, error: MldhtError, now: float) -> None:
        self.transactions.pop(tx.address, None)
        if self.finished:
            return
        self.lookup.on_failure(tx.address, now, sent=not isinstance(error, QueryNotSent))
        self._step(now)

    # --- the end ----------------------------------------------------------------------------

    def cancel(self, now: float) -> None:
        """Stop without telling the owner (its operation was cancelled)."""
        self._on_done = _ignore_done
        self.finish(now)

    def finish(self, now: float) -> None:
        if self.finished:
            return
        self.finished = True
        engine = self.engine
        engine.timers.cancel(self._soft_timer)
        engine.timers.cancel(self._deadline_timer)
        lookup = self.lookup
        for address in lookup.unsent():
            lookup.on_failure(address, now, sent=False)
        for tx in list(self.transactions.values()):
            engine.cancel_transaction(tx, now)
        self.transactions.clear()
        self.summary = self._summary(now)
        engine.estimator.record([c.distance for c in lookup.closest_answered()], now)
        self._on_done(self, now)

    def _summary(self, now: float) -> LookupSummary:
        lookup = self.lookup
        closest = lookup.closest_answered()
        stats = lookup.stats
        in_flight = lookup.in_flight_count()
        return LookupSummary(
            target=lookup.target, elapsed=now - lookup.started,
            time_to_first_peer=None if self.first_peer_at is None
            else self.first_peer_at - lookup.started,
            queried=stats.queried, answered=stats.answered,
            timed_out=stats.queried - stats.answered - in_flight, in_flight=in_flight,
            peers=len(stats.peers),
            closest=[candidate.info for candidate in closest],
            hops=closest[0].hop if closest else None, max_hop=stats.max_hop,
            first_peer_hop=stats.first_peer_hop, resent=stats.resent)

    def progress(self) -> tuple[int, int, int]:
        stats = self.lookup.stats
        return stats.queried, stats.answered, len(stats.peers)
