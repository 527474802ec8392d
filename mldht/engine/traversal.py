"""Traversal: one iterative algorithm, specialised by what it asks and what it keeps.

As libtorrent's `traversal_algorithm`: the `Lookup` state machine picks whom to ask;
`TraversalRun` drives it on one address family through the engine's transactions; a
`TraversalSpec` (`specs.py`: find_node, get_peers with BEP 33 scrape, BEP 44 get, or an
application's own, `Engine.start_traversal`) says which query to send and what to do with
each answer.

A `LookupOperation` runs one `TraversalRun` per family the engine has, on one shared spec,
and merges their summaries once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from ..compact import Address, NodeInfo, is_contactable
from ..errors import MldhtError, QueryNotSent
from ..krpc import Response
from .lookup import Lookup
from .results import LookupSummary
from .specs import FindNodeSpec, GetItemSpec, GetPeersSpec, TraversalSpec, item_in  # noqa: F401
from .transactions import Transaction, TransactionOwner

if TYPE_CHECKING:
    from .family import Family
    from .interface import EngineParts


def _ignore_done(run: "TraversalRun", now: float) -> None:
    pass


class TraversalRun(TransactionOwner):
    """One traversal on one address family, driven through the engine's transactions."""

    def __init__(self, engine: "EngineParts", family: "Family", spec: TraversalSpec, now: float,
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
                             round_trip_factor=config.soft_timeout_round_trips,
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
