"""The sans-I/O engine of a DHT node (see `core.Engine`): no sockets, no clock, no event
loop; the asyncio `mldht.Node` and the simulator (`mldht.sim`) drive it."""

from .core import Engine, Family
from .estimate import SizeEstimate, SizeEstimator
from .events import (
    ErrorReceived, Event, ExternalIpChanged, LookupFinished, LookupProgress, NodeAdded,
    NodeIdChanged, NodeRemoved, OperationDone, OperationFailed, PeersFound, QueryReceived,
    QueryTimedOut, Renewed, ResponseReceived,
)
from .results import (
    AnnounceResult, ItemResult, LookupSummary, NodeStats, PeerLookupResult, PutResult,
    StoreResult, merge_summaries,
)
from .specs import FindNodeSpec, GetItemSpec, GetPeersSpec, TraversalSpec
from .upkeep import JoinResult

__all__ = [
    "AnnounceResult", "Engine", "ErrorReceived", "Event", "ExternalIpChanged", "Family",
    "FindNodeSpec", "GetItemSpec", "GetPeersSpec", "ItemResult", "JoinResult",
    "LookupFinished", "LookupProgress", "LookupSummary", "NodeAdded", "NodeIdChanged",
    "NodeRemoved", "NodeStats", "OperationDone", "OperationFailed", "PeerLookupResult",
    "PeersFound", "PutResult", "QueryReceived", "QueryTimedOut", "Renewed",
    "ResponseReceived", "SizeEstimate", "SizeEstimator", "StoreResult", "TraversalSpec",
    "merge_summaries",
]
