"""What the engine tells its driver, as plain objects taken from `Engine.next_event()`.

Two kinds:

- **operation events** (`PeersFound`, `OperationDone`, `OperationFailed`, `Renewed`) carry
  the results of operations the driver started, by handle. They are never dropped.
- **observations** (everything else) say what happens: queries received, answers,
  timeouts, nodes entering and leaving the routing table, lookup progress, changes of
  external IP and node id. The engine makes them only while `Engine.observing` is on, into
  a bounded buffer that counts what it drops (`NodeStats.events_dropped`); the quick reply
  path stays on either way.

Every event has `as_dict()` for JSON (the status page streams them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from ..compact import Address, CompactNodes, NodeInfo, format_address
from ..errors import MldhtError


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, NodeInfo):
        return {"id": value.id.hex(), "address": format_address(value.address)}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return format_address(value)
    if isinstance(value, (list, CompactNodes)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, BaseException):
        return str(value)
    # Results without an as_dict of their own (ItemResult, PutResult, Sample, Response):
    # their fields, with bencoded values' bytes keys as hex.
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key.hex() if isinstance(key, bytes) else str(key): _jsonable(item)
                for key, item in value.items()}
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


class Event:
    """Base class of every event."""

    __slots__ = ()
    kind = "event"

    def as_dict(self) -> dict:
        return {"kind": self.kind, **{f.name: _jsonable(getattr(self, f.name))
                                      for f in fields(self)}}  # type: ignore[arg-type]


# --- operation events ---------------------------------------------------------------------

@dataclass(slots=True)
class PeersFound(Event):
    """A get_peers lookup found peers it had not reported yet."""

    kind = "peers_found"
    handle: int
    peers: list[Address]


@dataclass(slots=True)
class OperationDone(Event):
    """An operation ended; `result` is its result object (see each `start_*`)."""

    kind = "operation_done"
    handle: int
    result: Any


@dataclass(slots=True)
class OperationFailed(Event):
    """An operation ended without a result."""

    kind = "operation_failed"
    handle: int
    error: MldhtError


@dataclass(slots=True)
class Renewed(Event):
    """A kept announce or item was published again (`keep_announced`, `keep_item`); the
    handle stays live until cancelled."""

    kind = "renewed"
    handle: int
    result: Any


OPERATION_EVENTS = (PeersFound, OperationDone, OperationFailed, Renewed)


# --- observations ---------------------------------------------------------------------------

@dataclass(slots=True)
class QueryReceived(Event):
    kind = "query_received"
    at: float
    method: str
    source: Address
    sender_id: bytes | None
    target: bytes | None
    """The `target` or `info_hash` argument, when the query has one."""
    read_only: bool
    version: bytes | None = None
    """The sender's `v` key (client and version), when it sent one."""
    arguments: dict | None = None
    """The query's decoded `a` dictionary (raw: bytes keys), for whoever needs more (an
    announce's port, token...). Not in `as_dict()`."""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "at": self.at, "method": self.method,
                "source": _jsonable(self.source), "sender_id": _jsonable(self.sender_id),
                "target": _jsonable(self.target), "read_only": self.read_only,
                "version": _jsonable(self.version)}


@dataclass(slots=True)
class ResponseReceived(Event):
    kind = "response_received"
    at: float
    method: str
    source: Address
    sender_id: bytes
    rtt: float
    version: bytes | None


@dataclass(slots=True)
class ErrorReceived(Event):
    kind = "error_received"
    at: float
    method: str
    source: Address
    code: int
    message: str


@dataclass(slots=True)
class QueryTimedOut(Event):
    kind = "query_timed_out"
    at: float
    method: str
    address: Address


@dataclass(slots=True)
class NodeAdded(Event):
    """A node entered a main bucket of the routing table."""

    kind = "node_added"
    at: float
    node: NodeInfo


@dataclass(slots=True)
class NodeRemoved(Event):
    """A node left a main bucket (failed, replaced, or changed id)."""

    kind = "node_removed"
    at: float
    node: NodeInfo


@dataclass(slots=True)
class LookupProgress(Event):
    kind = "lookup_progress"
    at: float
    handle: int
    lookup: str
    target: bytes
    queried: int
    answered: int
    peers: int


@dataclass(slots=True)
class LookupFinished(Event):
    kind = "lookup_finished"
    at: float
    handle: int
    lookup: str
    summary: Any


@dataclass(slots=True)
class ExternalIpChanged(Event):
    kind = "external_ip_changed"
    at: float
    ip: str
    voters: int


@dataclass(slots=True)
class NodeIdChanged(Event):
    kind = "node_id_changed"
    at: float
    old: bytes
    new: bytes
    reason: str
