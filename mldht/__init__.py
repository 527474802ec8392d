"""mldht: a BitTorrent Mainline DHT (BEP 5) node, as an asyncio library and a command line.

`Node` is the asyncio node (one or both address families); `mldht.engine.Engine` is the
sans-I/O engine under it, for simulators and other event loops.
"""

from .compact import Address, NodeInfo, format_address, parse_host_port
from .config import DEFAULT_BOOTSTRAP, NodeConfig
from .errors import (
    InvalidInput, JoinFailed, KrpcDecodeError, MldhtError, QueryNotSent, QueryTimeout,
    RemoteError, TransportClosed,
)
from .ids import InfoHash, NodeId, random_id_with_prefix
from .magnet import parse_infohash
from .bep44 import Item, ItemStore, KeyPair
from .engine import (
    AnnounceResult, Engine, ItemResult, JoinResult, LookupSummary, NodeStats, PeerLookupResult,
    PutResult, SizeEstimate, TraversalSpec,
)
from .node import DHTNode, EventStream, Keeper, Node, PeerLookup

__all__ = [
    "Address", "AnnounceResult", "DEFAULT_BOOTSTRAP", "DHTNode", "Engine", "EventStream",
    "InfoHash", "InvalidInput", "Item", "ItemResult", "ItemStore", "JoinFailed", "JoinResult",
    "Keeper", "KeyPair", "KrpcDecodeError", "LookupSummary", "MldhtError", "Node", "NodeConfig",
    "NodeId", "NodeInfo", "NodeStats", "PeerLookup", "PeerLookupResult", "PutResult",
    "QueryNotSent", "QueryTimeout", "RemoteError", "SizeEstimate", "TransportClosed",
    "TraversalSpec", "format_address", "parse_host_port", "parse_infohash",
    "random_id_with_prefix",
]
__version__ = "0.1.0"
