"""mldht: a BitTorrent Mainline DHT (BEP 5) node, as an asyncio library and a command line."""

from .compact import Address, NodeInfo, format_address, parse_host_port
from .config import DEFAULT_BOOTSTRAP, NodeConfig
from .errors import InvalidInput, KrpcDecodeError, MldhtError, QueryTimeout, RemoteError, TransportClosed
from .ids import InfoHash, NodeId, parse_infohash
from .bep44 import Item, ItemStore, KeyPair
from .node import (
    AnnounceResult, DHTNode, ItemResult, LookupSummary, NodeStats, PeerLookup, PutResult,
)

__all__ = [
    "Address", "AnnounceResult", "DEFAULT_BOOTSTRAP", "DHTNode", "InfoHash", "InvalidInput", "Item",
    "ItemResult", "ItemStore", "KeyPair", "KrpcDecodeError", "LookupSummary", "MldhtError", "NodeConfig", "NodeId", "NodeInfo",
    "NodeStats", "PeerLookup", "PutResult", "QueryTimeout", "RemoteError", "TransportClosed", "format_address",
    "parse_host_port", "parse_infohash",
]
__version__ = "0.1.0"
