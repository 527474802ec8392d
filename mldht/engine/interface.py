"""The engine as its parts see it: the one interface through which operations, upkeep,
traversals, the store phase and the status snapshot reach the engine.

`core.Engine` imports its parts and satisfies `EngineParts`; the parts import this module,
never `core`, and use nothing of the engine that is not declared here (tests/test_layers.py
holds both rules). A part's line can so tell what of the engine it may touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # types only: this module imports nothing of the engine at run time
    from ..bep44 import ItemStore
    from ..compact import Address, NodeInfo
    from ..config import NodeConfig
    from ..peerstore import PeerStore
    from .estimate import SizeEstimate, SizeEstimator
    from .events import Event
    from .family import Family
    from .results import NodeStats
    from .specs import TraversalSpec
    from .timers import Timers
    from .transactions import Transaction, Transactions


class TrackedOperation(Protocol):
    """An operation as the engine keeps it while it runs."""

    handle: int
    done: bool

    def describe(self, now: float) -> dict:
        """What the operation is doing, JSON-ready (for the status snapshot)."""
        ...


class Pinger(Protocol):
    """What checks that nodes are alive before they enter a routing table."""

    def ping(self, node: "NodeInfo", now: float) -> None:
        """Ping `node`; it enters (or stays in) the table if it answers."""
        ...


class EngineParts(Protocol):
    """What the engine's parts may use of it."""

    config: "NodeConfig"
    """The node's configuration (read only)."""
    rng: object
    """The engine's random source (`random.Random` interface): ids, jitter."""
    read_only: bool
    """BEP 43: the node answers no query, and says so in its own."""
    started: float
    """When the engine was made (its clock)."""
    stats: "NodeStats"
    """The node's counters."""
    timers: "Timers"
    """Where parts set their timers (`at`, `after`, cancel by handle)."""
    families: "list[Family]"
    """One per address family: id, routing table, address, routers, saved nodes."""
    estimator: "SizeEstimator"
    """The DHT size estimate, fed by the closest nodes of lookups."""
    verifier: Pinger
    """Pings nodes before they enter a table (one per IP at a time, bounded)."""
    router_answers: "dict[Address, float]"
    """The routers that answered, and when (for the join's report)."""
    peer_store: "PeerStore"
    """Peers announced to this node."""
    item_store: "ItemStore"
    """BEP 44 items stored on this node."""
    transactions: "Transactions"
    """Queries in flight (for the status snapshot)."""
    observing: bool
    """Whether anyone listens for observation events (make none otherwise)."""

    def emit(self, event: "Event") -> None:
        """Queue an operation's event for the driver."""
        ...

    def observe(self, event: "Event") -> None:
        """Queue an observation event (only while `observing`)."""
        ...

    def next_handle(self) -> int:
        """A new operation handle."""
        ...

    def register(self, operation: TrackedOperation) -> None:
        """Count `operation` among those in flight."""
        ...

    def forget(self, operation: TrackedOperation) -> None:
        """`operation` has ended."""
        ...

    def operations(self) -> list[TrackedOperation]:
        """Operations in flight, oldest first."""
        ...

    def submit(self, tx: "Transaction", now: float) -> None:
        """Send an operation's query (through the outbound budget)."""
        ...

    def cancel_transaction(self, tx: "Transaction", now: float) -> None:
        """Give up on a query: its reply, if one comes, is ignored."""
        ...

    def acceptable(self, node_id: bytes, ip: str) -> bool:
        """Whether a node may be asked or kept: not blocklisted, and with BEP 42
        enforcement, an id that matches its IP."""
        ...

    def family_of(self, ip: str) -> "Family":
        """The family that serves `ip`."""
        ...

    def lookup_seeds(self, family: "Family",
                     target: bytes) -> "tuple[list[NodeInfo], list[Address]]":
        """Where a lookup towards `target` starts: nodes, and router addresses."""
        ...

    def believed_shared_bits(self) -> int | None:
        """How many leading bits an id may share with a lookup's target and still be
        believed (None: every id is)."""
        ...

    def estimated_size(self, now: float | None = None) -> "SizeEstimate":
        """The DHT's size estimate."""
        ...

    def start_internal_lookup(self, spec: "TraversalSpec", family: "Family", now: float,
                              timeout: float = 30.0) -> TrackedOperation:
        """Run a lookup for the engine itself (refresh, rejoin, fill); returns it."""
        ...
