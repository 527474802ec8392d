"""Tunable parameters of a node, with defaults close to libtorrent's."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BOOTSTRAP: tuple[str, ...] = (
    # Routers found answering in 2026; router.bittorrent.com and router.utorrent.com have
    # been dead since 2024 and are deliberately absent.
    "dht.libtorrent.org:25401",
    "dht.transmissionbt.com:6881",
    "router.bt.ouinet.work:6881",
    "[router.silotis.us]:6881",  # IPv6 router (its name resolves to an IPv6 address)
)
"""Routers contacted when no `bootstrap` list is given. Their addresses never enter the table."""

DEFAULT_K = 8
"""Bucket size and the closest nodes a lookup settles on (BEP 5, libtorrent)."""
DEFAULT_ALPHA = 4
"""Queries in flight per lookup (libtorrent: 5; see NodeConfig.alpha)."""

CLIENT_VERSION = b"ML\x00\x01"
"""Our `v` key: two letters for the client (ML = mldht) and two version bytes."""


@dataclass(slots=True)
class NodeConfig:
    """Everything a node can be tuned with; times are in seconds."""

    k: int = DEFAULT_K
    """Bucket size and the number of closest nodes a lookup settles on."""
    alpha: int = DEFAULT_ALPHA
    """Queries in flight per lookup (libtorrent: 5). With the adaptive soft timeout, 4 sends
    fewer queries than libtorrent's traversal and still ends sooner (README, Performance)."""
    soft_timeout: float = 1.0
    """After this, a lookup query stops holding its slot and another node is asked (the
    most it can be when `adaptive_soft_timeout` shortens it)."""
    adaptive_soft_timeout: bool = True
    """Lookups shorten their soft timeout to 3 times the median round trip they have seen
    (at least 0.25 s). libtorrent's is fixed."""
    lookup_waits_for_slow: bool = False
    """Whether a lookup waits for the hard timeout of nodes past their soft timeout before it
    ends, as libtorrent does; by default the closest nodes that answered are enough."""
    lookup_resends: bool = True
    """A lookup query to one of the 3 closest candidates still unanswered at the soft
    timeout is sent once more (libtorrent does not): at 5 % loss and 20 % dead nodes,
    find_node finds the closest node 96 % of the time instead of 86.5 % (tools/simulate.py)."""
    query_timeout: float = 4.0
    """Hard timeout of one query: the node has failed to answer."""
    max_pending: int = 4096
    """Bound on queries in flight; more wait in the queue (never a timeout)."""
    query_rate: float = 250.0
    """Queries per second leaving the node, every operation together (0: no limit).
    Waiting for it is never a timeout and never counts against a node."""
    query_burst: float = 100.0
    """Queries that may leave at once before `query_rate` applies."""
    per_ip_query_rate: float = 3.0
    """Queries per second to any one IP (0: no limit). libtorrent bans for 5 minutes an IP
    that sends it 50 packets within 10 s: 10 + 10 x 3 = 40 at most from us."""
    per_ip_query_burst: float = 10.0
    max_queued_queries: int = 65_536
    """Queries waiting for the budget at most; beyond, a query fails with QueryNotSent."""
    max_events: int = 10_000
    """Observation events the engine buffers for its driver at most (the oldest go first,
    counted in NodeStats.events_dropped)."""
    max_infohashes: int = 2000
    max_peers_per_infohash: int = 500
    peer_lifetime: float = 30 * 60.0
    max_items: int = 1000
    """BEP 44 items stored for others at most (libtorrent: 700)."""
    item_lifetime: float = 2 * 60 * 60.0
    """A BEP 44 item not put again within this long is forgotten (the BEP's 2 hours)."""
    reannounce_interval: float = 15 * 60.0
    """`keep_announced` announces again this often: peers expire after `peer_lifetime`
    (30 minutes here and in libtorrent)."""
    item_republish_interval: float = 60 * 60.0
    """`keep_item` puts again this often (BEP 44: nodes keep an item 2 hours)."""
    republish_jitter: float = 0.1
    """Fraction of those intervals drawn at random either way, so that many keepers started
    together do not stay in step."""
    token_rotation: float = 5 * 60.0
    bucket_refresh: float = 15 * 60.0
    """Buckets unchanged for this long get a refresh lookup."""
    maintenance_interval: float = 5.0
    """How often the maintenance task wakes up."""
    save_interval: float = 5 * 60.0
    """How often the state file is rewritten (it is also written at shutdown)."""
    max_saved_nodes: int = 200
    bootstrap_timeout: float = 15.0
    version: bytes | None = CLIENT_VERSION
    enforce_node_id: bool = False
    """BEP 42: keep nodes whose id does not match their IP out of the routing table, out of
    lookups and never announce to them (libtorrent's default is off too)."""
    prefer_verified_node_ids: bool = True
    """BEP 42: in a full bucket, a node whose id matches its IP takes the place of one whose
    id does not (libtorrent's default)."""
    external_ip_votes: int = 3
    """Distinct subnets whose replies must agree on our external IP before we believe it."""
    inbound_rate: float = 5.0
    """Datagrams per second accepted from one IP that we are not waiting on (0: no limit);
    the excess is dropped unread. Near libtorrent's 5/s (dht_block_ratelimit)."""
    inbound_burst: float = 50.0
    """Datagrams one IP may send at once before `inbound_rate` applies (libtorrent bans an
    IP that sends 50 within 10 s; we only drop)."""
    max_limited_ips: int = 16_384
    """Bound on the per-IP limiter's memory: the least recently seen IPs are forgotten."""
    reply_bytes_per_second: float = 256 * 1024
    """Global limit on the bytes of replies we send (0: no limit): whatever arrives, the node
    never sends more than this in answers. Our own queries are not limited."""
    adopt_secure_id: bool = True
    """Move to a BEP 42 id once the external IP is known and our id does not match it
    (never when an explicit `node_id` was given)."""
