"""mldht: a BitTorrent Mainline DHT (BEP 5) node, as an asyncio library and a command line."""

from .compact import Address, NodeInfo, format_address, parse_host_port
from .config import DEFAULT_BOOTSTRAP, NodeConfig
from .errors import InvalidInput, KrpcDecodeError, MldhtError, QueryTimeout, RemoteError, TransportClosed
from .ids import InfoHash, NodeId, parse_infohash
from .node import AnnounceResult, DHTNode, LookupSummary, NodeStats, PeerLookup

__all__ = [
    "Address", "AnnounceResult", "DEFAULT_BOOTSTRAP", "DHTNode", "InfoHash", "InvalidInput",
    "KrpcDecodeError", "LookupSummary", "MldhtError", "NodeConfig", "NodeId", "NodeInfo",
    "NodeStats", "PeerLookup", "QueryTimeout", "RemoteError", "TransportClosed", "format_address",
    "parse_host_port", "parse_infohash",
]
__version__ = "0.1.0"
