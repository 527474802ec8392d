"""Keeping the node in the network and its data in the DHT: joining (bootstrap), the
periodic upkeep (store expiry, pings of questionable nodes, bucket refresh, rejoining a
table run dry), the checks of nodes that queried us, and republishing (keep_announced,
keep_item).
"""

from __future__ import annotations

import itertools
import random as _random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..compact import Address, NodeInfo, format_address
from ..ids import random_id_in_bucket
from ..krpc import Ping
from .events import Renewed
from .operations import AnnounceOperation, LookupOperation, Operation, PutOperation
from .transactions import Transaction, TransactionOwner
from .traversal import FindNodeSpec

if TYPE_CHECKING:
    from ..bep44 import Item
    from .family import Family
    from .interface import EngineParts

VERIFY_INTERVAL = 30.0
"""Seconds between two verification pings of one IP."""
MAX_VERIFY_PINGS = 64
"""Bound on concurrent pings that verify nodes (queriers and questionable entries)."""
MAX_VERIFY_MEMORY = 16_384
EXPIRY_INTERVAL = 60.0
REFRESH_BATCH = 4
"""Bucket refreshes of a bootstrap run at once: gentle on a small network."""
FILL_MIN_GAIN = 2
"""A fill lookup that brought its bucket fewer nodes than this is the last of its period."""
JOIN_RETRY_DELAYS = (0.5, 1.0)
"""A router that has just met us may know few verified nodes yet: when the table stays
under k after a join lookup, ask again after these delays (twice at most)."""


class Verifier(TransactionOwner):
    """Pings that check a node is alive: a querier that never answered us, a questionable
    entry, a full bucket's oldest. The answer itself does the work (every response goes
    through the routing table); this only bounds how many run and how often per IP."""

    def __init__(self, engine: "EngineParts") -> None:
        self.engine = engine
        self.verifying: set[Address] = set()
        self._verified_at: dict[str, float] = {}

    def may_verify_querier(self, ip: str, now: float) -> bool:
        """At most one verification ping per IP per VERIFY_INTERVAL: a sender that keeps
        changing its id must not make us ping it for every query (bounded memory)."""
        verified_at = self._verified_at
        last = verified_at.get(ip)
        if last is not None and now - last < VERIFY_INTERVAL:
            return False
        verified_at.pop(ip, None)
        verified_at[ip] = now
        # Oldest first: what is older than the interval no longer holds anyone back.
        for old_ip, at in list(itertools.islice(verified_at.items(), 8)):
            if now - at < VERIFY_INTERVAL and len(verified_at) <= MAX_VERIFY_MEMORY:
                break
            del verified_at[old_ip]
        return True

    def ping(self, node: NodeInfo, now: float) -> None:
        address = node.address
        if address in self.verifying:
            return
        family = self.engine.family_of(node.ip)
        self.verifying.add(address)
        self.engine.submit(Transaction(address, Ping(transaction_id=b"",
                                                     sender_id=family.identity.node_id),
                                       self, self.engine.config.query_timeout), now)

    def on_response(self, tx, response, now) -> None:
        self.verifying.discard(tx.address)

    def on_failure(self, tx, error, now) -> None:
        self.verifying.discard(tx.address)

    @property
    def busy(self) -> bool:
        return len(self.verifying) >= MAX_VERIFY_PINGS


@dataclass(slots=True)
class JoinResult:
    """What a bootstrap did."""

    table_size: int
    """Nodes in the routing tables (both families) at the end."""
    answered: int
    """Responses received while joining."""
    tried: list[Address] = field(default_factory=list)
    """Router and saved-node addresses it started from."""
    routers_answered: list[Address] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"table_size": self.table_size, "answered": self.answered,
                "tried": [format_address(a) for a in self.tried],
                "routers_answered": [format_address(a) for a in self.routers_answered]}


class _FamilyJoin(TransactionOwner):
    """The steps of a join on one family: check the saved nodes, look up our own id (again
    while the table stays under k), then refresh the buckets still sparse."""

    def __init__(self, join: "JoinOperation", family: "Family") -> None:
        self.join = join
        self.engine = join.engine
        self.family = family
        self.pending_pings: set[Transaction] = set()
        self.attempt = 0
        self.refreshes: list[bytes] = []
        self.running: set[Operation] = set()
        self.finished = False
        self.timer = None

    def start(self, now: float) -> None:
        saved, self.family.saved_nodes = self.family.saved_nodes, []
        for node in saved:
            tx = Transaction(node.address, Ping(transaction_id=b"",
                                                sender_id=self.family.identity.node_id),
                             self, self.engine.config.query_timeout)
            self.pending_pings.add(tx)
            self.join.tried.append(node.address)
        for tx in list(self.pending_pings):
            self.engine.submit(tx, now)
        if not self.pending_pings:
            self._look_up_own_id(now)

    def on_response(self, tx, response, now) -> None:
        self._ping_done(tx, now)

    def on_failure(self, tx, error, now) -> None:
        self._ping_done(tx, now)

    def _ping_done(self, tx: Transaction, now: float) -> None:
        self.pending_pings.discard(tx)
        if not self.pending_pings and not self.finished and self.attempt == 0:
            self._look_up_own_id(now)

    def _look_up_own_id(self, now: float) -> None:
        self.attempt += 1
        self._run(FindNodeSpec(self.family.identity.node_id), now, self._own_id_done)

    def _run(self, spec, now: float, then: Callable) -> None:
        engine = self.engine
        timeout = max(self.join.deadline - now, 0.1)
        operation = LookupOperation(engine, engine.next_handle(), now, spec, timeout,
                                    families=[self.family], parent=then)
        self.running.add(operation)
        engine.register(operation)
        operation.start(now)

    def _own_id_done(self, operation: Operation, result, error, now: float) -> None:
        self.running.discard(operation)
        if self.finished:
            return
        config = self.engine.config
        delays = JOIN_RETRY_DELAYS
        if (self.attempt <= len(delays) and len(self.family.table) < config.k
                and self.join.deadline - now > delays[self.attempt - 1]):
            self.timer = self.engine.timers.at(now + delays[self.attempt - 1], self._retry)
            return
        self._refresh_sparse(now)

    def _retry(self, now: float) -> None:
        self.timer = None
        if not self.finished:
            self._look_up_own_id(now)

    def _refresh_sparse(self, now: float) -> None:
        family = self.family
        family.last_join = now
        table = family.table
        rng = self.engine.rng
        self.refreshes = [random_id_in_bucket(family.identity.node_id, index, rng)
                          for index in range(len(table.buckets) - 1)
                          if len(table.buckets[index].nodes) < self.engine.config.k]
        self._next_refreshes(now)

    def _next_refreshes(self, now: float) -> None:
        while self.refreshes and len(self.running) < REFRESH_BATCH and not self.finished:
            self._run(FindNodeSpec(self.refreshes.pop(0)), now, self._refresh_done)
        if not self.refreshes and not self.running:
            self.finish(now)

    def _refresh_done(self, operation: Operation, result, error, now: float) -> None:
        self.running.discard(operation)
        if not self.finished:
            self._next_refreshes(now)

    def finish(self, now: float) -> None:
        if self.finished:
            return
        self.finished = True
        self.join.family_done(now)

    def cancel(self, now: float) -> None:
        self.finished = True
        self.engine.timers.cancel(self.timer)
        for tx in list(self.pending_pings):
            self.engine.cancel_transaction(tx, now)
        for operation in list(self.running):
            operation.cancel(now)


class JoinOperation(Operation):
    """Bootstrap: each family joins on its own (see `_FamilyJoin`); the result is a
    `JoinResult`."""

    kind = "bootstrap"

    def __init__(self, engine: "EngineParts", handle: int, now: float, timeout: float,
                 **kwargs) -> None:
        super().__init__(engine, handle, now, **kwargs)
        self.deadline = now + timeout
        self.tried: list[Address] = []
        self.parts: list[_FamilyJoin] = []
        self._timer = None
        self._responses_before = engine.stats.responses_received

    def start(self, now: float) -> None:
        engine = self.engine
        for family in engine.families:
            self.tried += family.routers
        self.parts = [_FamilyJoin(self, family) for family in engine.families]
        self._timer = engine.timers.at(self.deadline + 1.0, self._overdue)
        for part in self.parts:
            part.start(now)

    def _overdue(self, now: float) -> None:
        self._timer = None
        for part in self.parts:
            if not part.finished:
                part.cancel(now)
        self.family_done(now)

    def family_done(self, now: float) -> None:
        if self.done or not all(part.finished for part in self.parts):
            return
        engine = self.engine
        engine.timers.cancel(self._timer)
        routers = {address for family in engine.families for address in family.routers}
        self.succeed(JoinResult(
            table_size=sum(len(family.table) for family in engine.families),
            answered=engine.stats.responses_received - self._responses_before,
            tried=list(dict.fromkeys(self.tried)),
            routers_answered=[a for a in routers if a in engine.router_answers]), now)

    def _stop(self, now: float) -> None:
        self.engine.timers.cancel(self._timer)
        for part in self.parts:
            part.cancel(now)

    def describe(self, now: float) -> dict:
        return {**super().describe(now), "families": [p.family.name for p in self.parts]}


class Upkeep:
    """The periodic chores, every `maintenance_interval` seconds."""

    def __init__(self, engine: "EngineParts", now: float) -> None:
        self.engine = engine
        self.last_expiry = now
        self.timer = engine.timers.at(now + engine.config.maintenance_interval, self.tick)

    def tick(self, now: float) -> None:
        engine = self.engine
        config = engine.config
        self.timer = engine.timers.at(now + config.maintenance_interval, self.tick)
        if now - self.last_expiry >= EXPIRY_INTERVAL:
            engine.peer_store.expire(now)
            engine.item_store.expire(now)
            self.last_expiry = now
        for family in engine.families:
            table = family.table
            if engine.read_only and not len(table):
                continue
            for node in table.questionable(now, limit=8):
                engine.verifier.ping(node, now)
            if (len(table) < config.k and not engine.read_only
                    and now - family.last_join >= family.sparse_backoff):
                # Too few nodes to be useful: join again, backing off up to the refresh period.
                family.last_join = now
                family.sparse_backoff = min(family.sparse_backoff * 2, config.bucket_refresh)
                engine.start_internal_lookup(FindNodeSpec(family.identity.node_id), family, now)
            stale = table.stale_buckets(now, config.bucket_refresh)
            if stale and len(table):
                index = stale[0]
                table.touch_bucket(index, now)
                target = random_id_in_bucket(family.identity.node_id, index, engine.rng)
                engine.start_internal_lookup(FindNodeSpec(target), family, now)
            if len(table) >= config.k and not engine.read_only:
                self._fill(family, now)

    def _fill(self, family: "Family", now: float) -> None:
        """An extended bucket (capacity above k) under its capacity gets a find_node into
        its range, one at a time per family, while the last one brought it at least
        FILL_MIN_GAIN nodes (and at most capacity / k of them per refresh period). The join
        refreshes only buckets under k, so a young node's farthest bucket held some 30 of
        its 128 places and filled over hours from its own lookups; full, half of all
        lookups start about a hop closer to their target."""
        running = family.filling
        if running is not None and not running.done:
            return
        family.filling = None
        engine, config, table = self.engine, self.engine.config, family.table
        if now - family.fill_epoch >= config.bucket_refresh:
            family.fill_memory.clear()
            family.fill_epoch = now
        for index, bucket in enumerate(table.buckets[:-1]):
            count = len(bucket.nodes)
            if bucket.capacity <= config.k or count >= bucket.capacity:
                continue
            last = family.fill_memory.get(index)
            if last is not None and (count - last[0] < FILL_MIN_GAIN
                                     or last[1] >= bucket.capacity // config.k):
                continue
            family.fill_memory[index] = (count, 1 if last is None else last[1] + 1)
            table.touch_bucket(index, now)
            target = random_id_in_bucket(family.identity.node_id, index, engine.rng)
            family.filling = engine.start_internal_lookup(FindNodeSpec(target), family, now)
            return

    def stop(self) -> None:
        self.engine.timers.cancel(self.timer)


class KeepAlive(Operation):
    """Publishes again and again until cancelled: every `interval` seconds (give or take
    `jitter` of it), a fresh operation made by `make_round(now, parent)`; each round's
    result comes as a `Renewed` event on this handle."""

    def __init__(self, engine: "EngineParts", handle: int, now: float, kind: str,
                 make_round: Callable[[float, Callable], Operation], interval: float,
                 jitter: float, rng: _random.Random) -> None:
        super().__init__(engine, handle, now)
        self.kind = kind
        self.make_round = make_round
        self.interval = interval
        self.jitter = jitter
        self.rng = rng
        self.round: Operation | None = None
        self.timer = None
        self.rounds = 0
        self.next_at: float | None = None

    def start(self, now: float) -> None:
        self._begin(now)

    def _begin(self, now: float) -> None:
        self.timer = None
        if self.done:
            return
        self.round = self.make_round(now, self._round_done)
        self.engine.register(self.round)
        self.round.start(now)

    def _round_done(self, operation: Operation, result: Any, error: BaseException | None,
                    now: float) -> None:
        self.round = None
        self.rounds += 1
        if self.done:
            return
        self.engine.emit(Renewed(self.handle, result if error is None else error))
        spread = self.interval * self.jitter
        self.next_at = now + self.interval + self.rng.uniform(-spread, spread)
        self.timer = self.engine.timers.at(self.next_at, self._begin)

    def _stop(self, now: float) -> None:
        self.engine.timers.cancel(self.timer)
        if self.round is not None:
            self.round.cancel(now)

    def describe(self, now: float) -> dict:
        return {**super().describe(now), "rounds": self.rounds,
                "next_in": None if self.next_at is None else round(self.next_at - now, 1)}


def announce_round(engine: "EngineParts", info_hash: bytes, port: int | None, implied_port: bool,
                   seed: bool, timeout: float):
    def make(now: float, parent: Callable) -> Operation:
        return AnnounceOperation(engine, engine.next_handle(), now, info_hash, port,
                                 implied_port, seed, timeout, parent=parent)
    return make


def put_round(engine: "EngineParts", item: "Item", timeout: float):
    def make(now: float, parent: Callable) -> Operation:
        return PutOperation(engine, engine.next_handle(), now, item.target, item.salt,
                            lambda current: item, None, timeout, parent=parent)
    return make
