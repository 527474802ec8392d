"""What the engine keeps per address family (BEP 32): its id, routing table, query handler,
bound address, routers and the saved nodes of the last run."""

from __future__ import annotations

from ..compact import Address, NodeInfo
from ..ids import NodeId
from ..routing import RoutingTable
from ..server import QueryHandler
from .identity import Identity


class Family:
    """What the engine keeps per address family."""

    def __init__(self, name: str, identity: Identity, table: RoutingTable,
                 handler: QueryHandler) -> None:
        self.name = name
        self.ipv6 = name == "ipv6"
        self.identity = identity
        self.table = table
        self.handler = handler
        self.address: Address | None = None
        """Our bound address on this family (the driver sets it)."""
        self.routers: list[Address] = []
        """Addresses to start lookups from while the table holds fewer than k nodes."""
        self.saved_nodes: list[NodeInfo] = []
        """Saved nodes the next join pings (it takes them)."""
        self.saved_seeds: list[NodeInfo] = []
        """The same saved nodes, kept for lookups to start from while the table holds fewer
        than k nodes (a one-shot command looks up at once, without joining first)."""
        self.saved_addresses: set[Address] = set()
        self.saved_heard: dict[Address, bool] = {}
        """Saved nodes asked this run: whether they answered (those that did not are
        neither asked again by lookups nor saved again)."""
        self.last_join = -1e18
        self.sparse_backoff = 30.0
        self.filling = None
        """The lookup filling an extended bucket, while one runs (Upkeep._fill)."""
        self.fill_memory: dict[int, tuple[int, int]] = {}
        """Bucket index -> (its node count when its last fill began, fills so far), for the
        current bucket-refresh period (from `fill_epoch`)."""
        self.fill_epoch = -1e18

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    def saved_unanswered(self, address: Address) -> bool:
        return self.saved_heard.get(address) is False
