"""Operations the engine runs for its driver, each started by a `start_*` call of the engine
and ended by one `OperationDone` or `OperationFailed` event carrying its handle.

Composite operations are phases in sequence: announce is a get_peers traversal, then the
store phase; a put is a BEP 44 get traversal, then the store phase. An operation the
engine starts for itself (a refresh, a rejoin, the lookups of a bootstrap) is the same
object with a `parent` callback instead of events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..bep51 import Sample
from ..compact import Address, format_address
from ..errors import InvalidInput, MldhtError
from ..ids import NodeId
from ..krpc import AnnouncePeer, Put, Query, Response
from .events import LookupFinished, LookupProgress, OperationDone, OperationFailed, PeersFound
from .lookup import Candidate
from .results import AnnounceResult, ItemResult, LookupSummary, PutResult, merge_summaries
from .store import StorePhase
from .transactions import Transaction, TransactionOwner
from .traversal import GetItemSpec, GetPeersSpec, TraversalRun, TraversalSpec

if TYPE_CHECKING:
    from ..bep44 import Item
    from .family import Family
    from .interface import EngineParts


class Operation:
    """Base of every operation: a handle, a start time, and one end."""

    kind = "operation"

    def __init__(self, engine: "EngineParts", handle: int, now: float,
                 parent: Callable[["Operation", Any, BaseException | None, float], None] | None = None) -> None:
        self.engine = engine
        self.handle = handle
        self.started = now
        self.parent = parent
        self.done = False
        self.purpose = "internal" if parent is not None else "user"

    def start(self, now: float) -> None:
        raise NotImplementedError

    def cancel(self, now: float) -> None:
        """Stop without an event (the driver asked, or the node closes)."""
        if not self.done:
            self.done = True
            self._stop(now)
            self.engine.forget(self)

    def _stop(self, now: float) -> None:
        pass

    def succeed(self, result: Any, now: float) -> None:
        if self.done:
            return
        self.done = True
        self.engine.forget(self)
        if self.parent is not None:
            self.parent(self, result, None, now)
        else:
            self.engine.emit(OperationDone(self.handle, result))

    def fail(self, error: BaseException, now: float) -> None:
        if self.done:
            return
        self.done = True
        self._stop(now)
        self.engine.forget(self)
        if self.parent is not None:
            self.parent(self, None, error, now)
        else:
            self.engine.emit(OperationFailed(self.handle, error))  # type: ignore[arg-type]

    def describe(self, now: float) -> dict:
        return {"handle": self.handle, "kind": self.kind, "purpose": self.purpose,
                "elapsed": round(now - self.started, 3)}


class QueryOperation(Operation, TransactionOwner):
    """One query to one address; the result is the `Response` (or what `convert` makes of
    it)."""

    kind = "query"

    def __init__(self, engine: "EngineParts", handle: int, now: float, address: Address,
                 query: Query, timeout: float,
                 convert: Callable[[Response], Any] | None = None, **kwargs) -> None:
        super().__init__(engine, handle, now, **kwargs)
        self.kind = query.method.decode("ascii", "replace") or "query"
        self.tx = Transaction(address, query, self, timeout)
        self.convert = convert

    def start(self, now: float) -> None:
        self.engine.submit(self.tx, now)

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        try:
            result = response if self.convert is None else self.convert(response)
        except (MldhtError, ValueError) as exc:
            self.fail(exc, now)
            return
        self.succeed(result, now)

    def on_failure(self, tx: Transaction, error: MldhtError, now: float) -> None:
        self.fail(error, now)

    def _stop(self, now: float) -> None:
        self.engine.cancel_transaction(self.tx, now)

    def describe(self, now: float) -> dict:
        return {**super().describe(now), "address": format_address(self.tx.address)}


def ping_result(response: Response) -> NodeId:
    return response.sender_id


def sample_result(response: Response) -> Sample:
    return Sample.from_response(response)


class LookupOperation(Operation):
    """A traversal on every family the engine has (or those given), merged once. Peers of
    get_peers-like traversals are reported as they come (`PeersFound`), each once."""

    def __init__(self, engine: "EngineParts", handle: int, now: float, spec: TraversalSpec,
                 timeout: float, families: list["Family"] | None = None, **kwargs) -> None:
        super().__init__(engine, handle, now, **kwargs)
        self.spec = spec
        self.kind = spec.kind
        self.timeout = timeout
        self.families = families
        self.runs: list[TraversalRun] = []
        self.seen: set[Address] = set()
        self._starting = False
        self.summary: LookupSummary | None = None

    def start(self, now: float) -> None:
        families = self.families if self.families is not None else self.engine.families
        deadline = now + self.timeout
        self.runs = [TraversalRun(self.engine, family, self.spec, now, deadline,
                                  self._on_answer, self._on_run_done) for family in families]
        self._starting = True
        for run in self.runs:
            run.start(now)
        self._starting = False
        self._on_run_done(None, now)

    def _on_answer(self, run: TraversalRun, fresh: list[Address], now: float) -> None:
        engine = self.engine
        if fresh:
            new = [peer for peer in fresh if peer not in self.seen]
            if new:
                self.seen.update(new)
                if self.parent is None:
                    engine.emit(PeersFound(self.handle, new))
        if engine.observing:
            queried, answered, _ = self.progress()
            engine.observe(LookupProgress(now, self.handle, self.kind, self.spec.target,
                                           queried, answered, len(self.seen)))
        if self.spec.stop():
            for other in self.runs:
                if other is not run:
                    other.finish(now)

    def progress(self) -> tuple[int, int, int]:
        queried = answered = 0
        for run in self.runs:
            q, a, _ = run.progress()
            queried += q
            answered += a
        return queried, answered, len(self.seen)

    def _on_run_done(self, run: TraversalRun | None, now: float) -> None:
        if self._starting or self.done or not all(r.finished for r in self.runs):
            return
        summaries = [r.summary for r in self.runs if r.summary is not None]
        if not summaries:
            self.fail(MldhtError("no address family to look up on"), now)
            return
        summary = merge_summaries(summaries)
        if len(summaries) > 1:
            summary.peers = len(self.seen)
        self.summary = summary
        if self.engine.observing:
            self.engine.observe(LookupFinished(now, self.handle, self.kind, summary))
        self.completed(summary, now)

    def completed(self, summary: LookupSummary, now: float) -> None:
        """All traversals ended: the result (subclasses go on to a store phase)."""
        try:
            result = self.spec.result(summary)
        except (MldhtError, ValueError) as exc:
            self.fail(exc, now)
            return
        self.succeed(result, now)

    def _stop(self, now: float) -> None:
        for run in self.runs:
            run.cancel(now)

    def describe(self, now: float) -> dict:
        queried, answered, peers = self.progress()
        return {**super().describe(now), "target": self.spec.target.hex(),
                "queried": queried, "answered": answered, "peers": peers,
                "families": [run.family.name for run in self.runs]}


class ItemLookupSpec(GetItemSpec):
    """A BEP 44 get whose result is an `ItemResult`."""

    def result(self, summary: LookupSummary) -> ItemResult:
        best = self.latest()
        copies = sum(1 for item in self.found.values() if item == best)
        return ItemResult(best, summary, copies, self.invalid)


class StoringOperation(LookupOperation):
    """A traversal, then the store phase to the `NodeConfig.store_nodes` closest nodes that
    gave a token (the traversal runs until that many closest have answered)."""

    def start(self, now: float) -> None:
        self.spec.lookup_k = max(self.engine.config.k, self.engine.config.store_nodes)
        super().start(now)

    def completed(self, summary: LookupSummary, now: float) -> None:
        engine = self.engine
        targets: list[Candidate] = []
        for run in self.runs:
            targets += [candidate for candidate in
                        run.lookup.closest_answered(self.spec.lookup_k, with_token=True)
                        if engine.acceptable(candidate.node_id, candidate.address[0])]
        try:
            make_query = self.store_query(summary)
            targets = self.store_targets(targets)
        except (MldhtError, ValueError) as exc:
            self.fail(exc, now)
            return
        self.phase = StorePhase(engine, targets, make_query, self.started + self.timeout,
                                lambda phase, now: self.stored(summary, phase, now))
        self.phase.start(now)

    def store_query(self, summary: LookupSummary) -> Callable[[Candidate], Query]:
        raise NotImplementedError

    def store_targets(self, targets: list[Candidate]) -> list[Candidate]:
        """The nodes the store phase asks, from the closest that gave a token."""
        return targets

    def stored(self, summary: LookupSummary, phase: StorePhase, now: float) -> None:
        raise NotImplementedError

    def _stop(self, now: float) -> None:
        super()._stop(now)
        phase = getattr(self, "phase", None)
        if phase is not None:
            phase.cancel(now)


class AnnounceOperation(StoringOperation):
    """get_peers towards the infohash, then announce_peer to the k closest with a token."""

    kind = "announce"

    def __init__(self, engine: "EngineParts", handle: int, now: float, info_hash: bytes,
                 port: int | None, implied_port: bool, seed: bool, timeout: float,
                 **kwargs) -> None:
        super().__init__(engine, handle, now, GetPeersSpec(info_hash), timeout, **kwargs)
        self.kind = "announce"
        self.port = port
        self.implied_port = implied_port
        self.seed = seed

    def store_query(self, summary: LookupSummary) -> Callable[[Candidate], Query]:
        engine = self.engine

        def make(candidate: Candidate) -> Query:
            family = engine.family_of(candidate.address[0])
            # With implied_port, `port` still carries our UDP port: aria2 ignores implied_port.
            port = self.port if self.port is not None else (family.address or ("", 0))[1]
            return AnnouncePeer(transaction_id=b"", sender_id=family.identity.node_id,
                                info_hash=self.spec.target, token=candidate.token or b"",
                                port=port, implied_port=self.implied_port, seed=self.seed)
        return make

    def stored(self, summary: LookupSummary, phase: StorePhase, now: float) -> None:
        result = phase.result
        self.succeed(AnnounceResult(summary=summary, announced_to=result.accepted,
                                    failed=result.asked - len(result.accepted)), now)


class PutOperation(StoringOperation):
    """BEP 44: a get traversal (to learn the current seq and collect tokens), then the put.
    `make(current)` builds the item to put from the item found (None when none was)."""

    kind = "put"

    def __init__(self, engine: "EngineParts", handle: int, now: float, target: bytes, salt: bytes,
                 make: Callable[["Item | None"], "Item"], cas: int | None, timeout: float,
                 **kwargs) -> None:
        super().__init__(engine, handle, now, GetItemSpec(target, salt, stop_at_immutable=False),
                         timeout, **kwargs)
        self.kind = "put"
        self.make = make
        self.cas = cas
        self.item: "Item | None" = None

    def store_query(self, summary: LookupSummary) -> Callable[[Candidate], Query]:
        spec = self.spec
        assert isinstance(spec, GetItemSpec)
        item = self.item = self.make(spec.latest())
        problem = item.problem()
        if problem is not None:
            raise InvalidInput(f"cannot put this item: {problem[1]}")
        engine = self.engine

        def make(candidate: Candidate) -> Query:
            family = engine.family_of(candidate.address[0])
            return Put(transaction_id=b"", sender_id=family.identity.node_id,
                       token=candidate.token or b"", value=item.value, encoded_value=item.encoded,
                       public_key=item.public_key, signature=item.signature,
                       seq=item.seq if item.is_mutable else None, salt=item.salt,
                       cas=self.cas if item.is_mutable else None)
        return make

    def store_targets(self, targets: list[Candidate]) -> list[Candidate]:
        # A cas that is not the newest seq found is refused (301) by the nodes holding that
        # seq; sent to nodes holding nothing (or an older seq), it would be stored there
        # and, with its higher seq, shadow the newest value for readers who reach them. So
        # it goes only to the holders of the newest seq, whose 301 tells the writer to re-read.
        spec = self.spec
        assert isinstance(spec, GetItemSpec)
        latest = spec.latest()
        if self.cas is None or latest is None or not latest.is_mutable or latest.seq == self.cas:
            return targets
        holders = {address for address, item in spec.found.items() if item.seq == latest.seq}
        return [candidate for candidate in targets if candidate.address in holders]

    def stored(self, summary: LookupSummary, phase: StorePhase, now: float) -> None:
        result = phase.result
        assert self.item is not None
        self.succeed(PutResult(item=self.item, summary=summary, stored_on=result.accepted,
                               asked=result.asked, errors=result.errors,
                               timed_out=result.timed_out), now)
