"""Our own queries: transaction ids, matching replies by id and address, deadlines, the one
resend, and the queue in front of the outbound budget (sans-I/O).

An operation (a lookup, a ping, the store phase...) `submit`s a `Transaction` naming itself
as `owner`. The transaction waits in a queue, one per destination IP served round-robin,
until the `QueryBudget` and the bound on queries in flight let it go; only then is it
given an id, encoded and sent, and only then does its timeout start. So a query that waits
for the budget never times out for it, and never counts against the node it is for.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Callable

from ..compact import Address, format_address
from ..errors import MldhtError, QueryNotSent, QueryTimeout
from ..krpc import Query, Response, encode_message
from .budget import QueryBudget
from .timers import Timer, Timers

TRANSACTION_ID_LENGTH = 4

QUEUED = 0
SENT = 1
DONE = 2


def _later(now: float, wait: float) -> float:
    """When to look at the budget again, `wait` seconds from `now`, and never `now` itself:
    a refill can leave a bucket a hair under one token (1 - 1e-14), whose wait is below
    the clock's resolution; a timer at `now` would then run, refill nothing, and be set at
    `now` again, forever (`Timers.run_due` runs timers that callbacks set for `now`)."""
    return max(now + wait, math.nextafter(now, math.inf))


class TransactionOwner:
    """What sends queries: every callback gets the transaction and the time. The defaults
    do nothing; `claim_resend` decides whether a query unanswered at `resend_after` is
    sent once more."""

    def on_sent(self, tx: "Transaction", now: float) -> None:
        pass

    def on_response(self, tx: "Transaction", response: Response, now: float) -> None:
        pass

    def on_failure(self, tx: "Transaction", error: MldhtError, now: float) -> None:
        """`QueryTimeout`, `RemoteError` (a KRPC error or a malformed reply) or
        `QueryNotSent`."""

    def claim_resend(self, tx: "Transaction") -> bool:
        return False


@dataclass(slots=True, eq=False)
class Transaction:
    """One query to one address, from submission to its end."""

    address: Address
    query: Query
    owner: TransactionOwner
    timeout: float
    resend_after: float | None = None
    method: str = ""
    tid: bytes = b""
    data: bytes = b""
    state: int = QUEUED
    queued_at: float = 0.0
    sent_at: float | None = None
    resent: bool = False
    tag: object = None
    """Whatever the owner wants to find again on its callbacks."""
    timer: Timer | None = field(default=None, repr=False)
    resend_timer: Timer | None = field(default=None, repr=False)


class Transactions:
    """Every query of one engine between submission and its end (see the module docstring).

    `send(data, address)` puts a datagram on the way out; `expired(tx, now)` is told of
    every timeout before the owner is (the engine marks the node in its routing table).
    """

    def __init__(self, *, timers: Timers, budget: QueryBudget, rng, stats,
                 send: Callable[[bytes, Address], None],
                 expired: Callable[[Transaction, float], None],
                 max_pending: int = 4096, max_queued: int = 65_536) -> None:
        self.timers = timers
        self.budget = budget
        self.rng = rng
        self.stats = stats
        self._send_datagram = send
        self._expired = expired
        self.max_pending = max_pending
        self.max_queued = max_queued
        self.pending: dict[tuple[bytes, Address], Transaction] = {}
        self.waiting_on: dict[str, int] = {}
        """IP -> our transactions open with it (its replies bypass the inbound limit)."""
        self.in_flight: dict[str, int] = {}
        """Queries sent and not yet ended, by method."""
        self.queued = 0
        self._queues: dict[str, collections.deque[Transaction]] = {}
        self._ready: list[str] = []
        """IPs with queued queries that their per-IP budget lets go (a list: it is short,
        and a deque costs 600 bytes per engine)."""
        self._ip_timers: dict[str, Timer] = {}
        self._global_timer: Timer | None = None

    # --- submission and the queue -------------------------------------------------------

    def submit(self, tx: Transaction, now: float) -> None:
        """Queue `tx`; it leaves as soon as the budget allows (maybe before this returns)."""
        if not tx.method:
            tx.method = tx.query.method.decode("ascii", "replace") or "unknown"
        if self.queued >= self.max_queued:
            tx.state = DONE
            self.stats.queries_not_sent += 1
            tx.owner.on_failure(tx, QueryNotSent(
                f"query to {format_address(tx.address)} dropped: {self.queued} queries already "
                "wait for the outbound budget"), now)
            return
        tx.queued_at = now
        ip = tx.address[0]
        queue = self._queues.get(ip)
        if queue is None:
            queue = self._queues[ip] = collections.deque()
            if ip not in self._ip_timers:
                self._ready.append(ip)
        queue.append(tx)
        self.queued += 1
        self.drain(now)

    def drain(self, now: float) -> None:
        """Send what the budget and the bound on pending queries allow now."""
        ready = self._ready
        budget = self.budget
        while ready:
            if len(self.pending) >= self.max_pending:
                return  # resumed when a transaction ends
            wait = budget.global_delay(now)
            if wait > 0:
                if self._global_timer is None:
                    self._global_timer = self.timers.at(_later(now, wait),
                                                        self._global_refilled)
                return
            ip = ready.pop(0)
            queue = self._queues.get(ip)
            if not queue:
                continue
            wait = budget.ip_delay(ip, now)
            if wait > 0:
                if ip not in self._ip_timers:
                    self._ip_timers[ip] = self.timers.at(_later(now, wait), self._ip_refilled,
                                                         ip)
                continue
            tx = queue.popleft()
            self.queued -= 1
            if queue:
                ready.append(ip)
            else:
                del self._queues[ip]
            if tx.sent_at is None and now > tx.queued_at:
                self.stats.queries_delayed += 1
            self._send(tx, now)

    def _global_refilled(self, now: float) -> None:
        self._global_timer = None
        self.drain(now)

    def _ip_refilled(self, ip: str, now: float) -> None:
        self._ip_timers.pop(ip, None)
        if ip in self._queues:
            self._ready.append(ip)
        self.drain(now)

    def _new_transaction_id(self, address: Address) -> bytes:
        while True:
            tid = self.rng.getrandbits(8 * TRANSACTION_ID_LENGTH).to_bytes(
                TRANSACTION_ID_LENGTH, "big")
            if (tid, address) not in self.pending:
                return tid

    def _send(self, tx: Transaction, now: float) -> None:
        address = tx.address
        ip = address[0]
        tx.tid = tid = self._new_transaction_id(address)
        tx.query.transaction_id = tid
        tx.data = data = encode_message(tx.query)
        self.budget.charge(ip, now)
        self.pending[(tid, address)] = tx
        self.waiting_on[ip] = self.waiting_on.get(ip, 0) + 1
        method = tx.method
        self.in_flight[method] = self.in_flight.get(method, 0) + 1
        tx.state = SENT
        tx.sent_at = now
        tx.timer = self.timers.at(now + tx.timeout, self._expire, tx)
        if tx.resend_after is not None:
            tx.resend_timer = self.timers.at(now + tx.resend_after, self._maybe_resend, tx)
        stats = self.stats
        stats.queries_sent += 1
        by_method = stats.queries_sent_by_method
        by_method[method] = by_method.get(method, 0) + 1
        self._send_datagram(data, address)
        tx.owner.on_sent(tx, now)

    def _maybe_resend(self, tx: Transaction, now: float) -> None:
        tx.resend_timer = None
        if tx.state != SENT or not tx.owner.claim_resend(tx):
            return
        ip = tx.address[0]
        if self.budget.global_delay(now) > 0 or self.budget.ip_delay(ip, now) > 0:
            return  # a second datagram is a courtesy, never worth going over the budget
        self.budget.charge(ip, now)
        tx.resent = True
        self.stats.queries_resent += 1
        self._send_datagram(tx.data, tx.address)

    # --- ends -----------------------------------------------------------------------------

    def _finish(self, tx: Transaction) -> None:
        """Take a sent transaction out of the table (whatever ended it)."""
        tx.state = DONE
        self.pending.pop((tx.tid, tx.address), None)
        ip = tx.address[0]
        left = self.waiting_on.get(ip, 1) - 1
        if left:
            self.waiting_on[ip] = left
        else:
            self.waiting_on.pop(ip, None)
        self.in_flight[tx.method] -= 1
        self.timers.cancel(tx.timer)
        self.timers.cancel(tx.resend_timer)
        tx.timer = tx.resend_timer = None

    def match(self, tid: bytes, source: Address) -> Transaction | None:
        """The transaction a reply with id `tid` from `source` answers, taken out of the
        table; None when there is none (late, spoofed or duplicated)."""
        tx = self.pending.get((tid, source))
        if tx is None:
            return None
        self._finish(tx)
        return tx

    def _expire(self, tx: Transaction, now: float) -> None:
        tx.timer = None
        if tx.state != SENT:
            return
        self._finish(tx)
        self.stats.timeouts += 1
        self._expired(tx, now)
        tx.owner.on_failure(tx, QueryTimeout(
            f"{format_address(tx.address)} did not answer {tx.method} within "
            f"{tx.timeout:g} s"), now)
        self.drain(now)

    def cancel(self, tx: Transaction, now: float) -> None:
        """The owner no longer wants `tx`: forget it, queued or sent, without counting it
        against the node (no timeout is recorded). The owner is not called back."""
        if tx.state == QUEUED:
            queue = self._queues.get(tx.address[0])
            if queue is not None:
                try:
                    queue.remove(tx)
                except ValueError:
                    pass
                else:
                    self.queued -= 1
                    if not queue:
                        del self._queues[tx.address[0]]
            tx.state = DONE
        elif tx.state == SENT:
            self._finish(tx)
            self.stats.queries_abandoned += 1
            if self._ready:
                self.drain(now)

    def close(self, now: float) -> None:
        """Fail every queued and pending transaction with `QueryNotSent` / its owner told."""
        everything = [tx for queue in self._queues.values() for tx in queue]
        everything += list(self.pending.values())
        self._queues.clear()
        self._ready.clear()
        self.queued = 0
        for tx in everything:
            if tx.state == SENT:
                self._finish(tx)
            tx.state = DONE
            tx.owner.on_failure(tx, QueryNotSent("the node closed"), now)
