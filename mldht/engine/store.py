"""The store phase, written once for announce_peer (BEP 5) and put (BEP 44): after a
traversal, send one store query to each of the k closest nodes that gave a token, and
count who accepted, who refused with which KRPC error, and who stayed silent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import MldhtError, QueryNotSent, RemoteError
from ..krpc import Query, Response
from .lookup import Candidate
from .results import StoreResult
from .transactions import Transaction, TransactionOwner

if TYPE_CHECKING:
    from .interface import EngineParts


class StorePhase(TransactionOwner):
    """Sends `make_query(candidate)` to every candidate; `on_done(self, now)` once all have
    answered or failed (each query has the hard timeout, capped by `deadline`)."""

    def __init__(self, engine: "EngineParts", targets: list[Candidate],
                 make_query: Callable[[Candidate], Query], deadline: float,
                 on_done: Callable[["StorePhase", float], None]) -> None:
        self.engine = engine
        self.targets = targets
        self.make_query = make_query
        self.deadline = deadline
        self._on_done = on_done
        self.result = StoreResult(asked=len(targets))
        self._open: set[Transaction] = set()
        self.finished = False

    def start(self, now: float) -> None:
        timeout = max(0.1, min(self.engine.config.query_timeout, self.deadline - now))
        transactions = [Transaction(candidate.address, self.make_query(candidate), self, timeout,
                                    tag=candidate) for candidate in self.targets]
        self._open.update(transactions)
        for tx in transactions:
            self.engine.submit(tx, now)
        self._check(now)

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        if tx in self._open:
            self._open.discard(tx)
            self.result.accepted.append(tx.tag.info)
            self._check(now)

    def on_failure(self, tx: Transaction, error: MldhtError, now: float) -> None:
        if tx not in self._open:
            return
        self._open.discard(tx)
        if isinstance(error, RemoteError):
            self.result.errors[error.code] = self.result.errors.get(error.code, 0) + 1
        elif not isinstance(error, QueryNotSent):
            self.result.timed_out += 1
        else:
            self.result.asked -= 1
        self._check(now)

    def _check(self, now: float) -> None:
        if not self._open and not self.finished:
            self.finished = True
            self._on_done(self, now)

    def cancel(self, now: float) -> None:
        self.finished = True
        for tx in list(self._open):
            self.engine.cancel_transaction(tx, now)
        self._open.clear()
