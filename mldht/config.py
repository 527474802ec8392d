"""Tunable parameters of a node, with defaults close to libtorrent's."""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

from .errors import InvalidInput

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
DEFAULT_ALPHA = 5
"""Queries in flight per lookup (libtorrent: 5; see NodeConfig.alpha)."""

CLIENT_VERSION = b"ML\x00\x01"
"""Our `v` key: two letters for the client (ML = mldht) and two version bytes."""


@dataclass(slots=True)
class NodeConfig:
    """Everything a node can be tuned with; times are in seconds."""

    k: int = DEFAULT_K
    """Bucket size and the number of closest nodes a lookup settles on."""
    alpha: int = DEFAULT_ALPHA
    """Queries in flight per lookup (libtorrent: 5). 5 rather than 4: the first peer of a
    swarm comes as soon as with libtorrent's traversal at every percentile (4 was 5 to 15 %
    later), for about 10 % more queries; the whole lookup still ends in well under half
    libtorrent's time (docs/performance.md)."""
    soft_timeout: float = 1.0
    """After this, a lookup query stops holding its slot and another node is asked (the
    most it can be when `adaptive_soft_timeout` shortens it)."""
    adaptive_soft_timeout: bool = True
    """Lookups shorten their soft timeout to 3 times the median round trip they have seen
    (at least 0.25 s). libtorrent's is fixed."""
    soft_timeout_round_trips: float = 3.0
    """With `adaptive_soft_timeout`, the soft timeout is this many times the median round
    trip a lookup has seen."""
    extended_routing_table: bool = True
    """libtorrent's `dht_extended_routing_table` (on by default there): the 4 farthest
    buckets hold 128, 64, 32 and 16 nodes instead of 8, so that a lookup towards the half
    of the keyspace farthest from our id (half of all lookups) starts from the closest of
    128 nodes rather than of 8 (a warm node's first peer on the emulated DHT of 100,000
    nodes: see docs/performance.md). A bucket grows only once 8 buckets are deeper than it
    (`routing.EXTENDED_MARGIN`): in a network of a hundred nodes, growing at once left
    most nodes' sibling buckets empty after a join."""
    max_believed_shared_bits: int = 36
    """A node claiming an id that shares more leading bits than this with a lookup's target
    (the target itself excepted) is not believed: the lookup never queries it and ignores
    its answer, nodes and peers alike. In a DHT of 2^26 nodes (three times the public one)
    the closest honest node shares about 26 bits with a target; 10 more happen once in
    about a thousand lookups, while an eclipsing Sybil claims a hundred. The engine raises
    it when its size estimate says the DHT is bigger; 0 believes every id. See
    docs/design.md, Hardening."""
    store_nodes: int = 16
    """Announces and puts go to this many of the closest nodes that gave a token (their
    lookup runs until that many closest have answered): more than k keeps a swarm findable
    where Sybils hold some of the closest places and swallow what they are sent (with
    `widen_peerless_lookups`: docs/design.md, Hardening). Costs the announce 8 more
    announce_peer queries and a few more get_peers; lookups find the first peer sooner."""
    widen_peerless_lookups: int = 16
    """A get_peers lookup whose k closest nodes have answered without a peer goes on until
    this many of the closest have answered (k again once a peer came): where Sybils hold
    some of the closest places, the honest nodes that store the swarm are a little farther
    out."""
    prefer_fast_nodes: bool = True
    """libtorrent's rule for a full routing-table bucket that cannot split: a node that
    answered takes a place when its sub-prefix (the log2(capacity) bits after the bucket's
    own) has none yet, or when it answered clearly faster than the slowest node of its
    sub-prefix (that one waits in the replacement cache): lookups start closer to their
    targets, from nodes that answer sooner. On the emulated DHT of 100,000 nodes (three
    networks), a warm node's first peer came at p50 0.23 s instead of 0.26 s and p90 0.45 s
    instead of 0.50 s (libtorrent 0.22 and 0.47 s), for 38.0 queries a lookup instead of
    39.3 (libtorrent 40.5): tools/bench/get_peers_emulated.py, docs/performance.md."""
    fast_node_margin: float = 1.0
    """With `prefer_fast_nodes`, a newcomer that answered faster than the slowest node of its
    sub-prefix takes that one's place (1, libtorrent's rule); above 1, it must be this many
    times faster, and 50 ms, so that a bucket churns less on jitter. On the emulated DHT of
    1,000,000 nodes, 1 gave a warm first peer at 0.28 / 0.53 s (p50 / p90), 2 at 0.32 /
    0.57 s (libtorrent 0.34 / 0.61 s): docs/performance.md."""
    aggressive_lookups: bool = True
    """libtorrent's `aggressive_lookups` (on by default there too): only queries to the
    candidates at the top of the list (closer than the next one to ask) hold the `alpha`
    slots; a query to a node that closer answers have since overtaken no longer holds one
    back. On the emulated DHT of 100,000 nodes, a warm node's first peer came at p50 0.27 s
    instead of 0.50 s (libtorrent 0.21 s) for 41.7 queries a lookup instead of 34.6
    (libtorrent 41.8): tools/bench/get_peers_emulated.py, docs/performance.md."""
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

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, object] | Iterable[str] = (),
                       base: "NodeConfig | None" = None) -> "NodeConfig":
        """`base` (default: the defaults) with `overrides` applied: a mapping of field names
        to values (text, or booleans and numbers as TOML gives them), or `NAME=VALUE`
        strings as given to --set. Raises InvalidInput naming the field for an unknown
        field or a value that does not fit it (see `parse_config_value`)."""
        if isinstance(overrides, Mapping):
            changes = {_field_name(name): config_value(name, value)
                       for name, value in overrides.items()}
        else:
            changes = dict(parse_override(item) for item in overrides)
        return replace(base if base is not None else cls(), **changes)


# --- setting fields from text: `--set NAME=VALUE`, a TOML file ---------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def config_field_names() -> list[str]:
    return [f.name for f in fields(NodeConfig)]


def _field_name(name: str) -> str:
    """`name` as a NodeConfig field (dashes allowed for underscores), or InvalidInput."""
    clean = str(name).strip().replace("-", "_")
    names = config_field_names()
    if clean not in names:
        close = difflib.get_close_matches(clean, names, n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise InvalidInput(f"unknown NodeConfig field {name!r}{hint}")
    return clean


def _kind(name: str) -> str:
    """"bool", "int", "float", or something text cannot set (`version`), from the field's
    annotation (a default such as 256 * 1024 may be an int in a float field)."""
    annotation = next(f.type for f in fields(NodeConfig) if f.name == name)
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")


_KIND_WORDS = {"bool": "a boolean (true or false)", "int": "a whole number",
               "float": "a number"}


def _checked(name: str, kind: str, value):
    if kind in ("int", "float") and (math.isnan(value) or value < 0):
        raise InvalidInput(f"{name} must be a number not below 0, not {value!r}")
    return float(value) if kind == "float" else value


def parse_config_value(name: str, text: str):
    """The value of NodeConfig field `name` written as `text`: a boolean (1/0, true/false,
    yes/no, on/off), a whole number or a number, by the field's type; numbers may not be
    negative. Raises InvalidInput naming the field for an unknown field or a value that does
    not fit it."""
    name = _field_name(name)
    kind = _kind(name)
    text = str(text).strip()
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
    elif kind in ("int", "float"):
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            pass
        else:
            return _checked(name, kind, value)
    else:
        raise InvalidInput(f"{name} cannot be set from text")
    raise InvalidInput(f"{name} is {_KIND_WORDS[kind]}, not {text!r}")


def config_value(name: str, value):
    """`value` (text, or a boolean or number as TOML gives it) checked and converted for
    field `name`."""
    name = _field_name(name)
    if isinstance(value, str):
        return parse_config_value(name, value)
    kind = _kind(name)
    if kind == "bool" and isinstance(value, bool):
        return value
    if not isinstance(value, bool) and (
            (kind == "int" and isinstance(value, int))
            or (kind == "float" and isinstance(value, (int, float)))):
        return _checked(name, kind, value)
    if kind not in _KIND_WORDS:
        raise InvalidInput(f"{name} cannot be set from a config file")
    raise InvalidInput(f"{name} is {_KIND_WORDS[kind]}, not {value!r}")


def parse_override(item: str) -> tuple[str, object]:
    """`NAME=VALUE` (as given to --set) as a field name and its converted value."""
    name, equals, text = str(item).partition("=")
    if not equals or not name.strip() or not text.strip():
        raise InvalidInput(f"expected NAME=VALUE with a NodeConfig field, not {item!r}")
    name = _field_name(name)
    return name, parse_config_value(name, text)


def load_config_file(path: str | os.PathLike) -> dict[str, object]:
    """The NodeConfig fields set in a TOML file: at the top level, or in a `[node]` table
    (not both). Raises InvalidInput naming the file and the field at fault."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise InvalidInput(f"config file {str(path)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    table = document
    if "node" in document:
        table = document["node"]
        if not isinstance(table, dict) or len(document) > 1:
            raise InvalidInput(f"config file {str(path)!r}: put the fields either at the top "
                               "level or in a [node] table, not both")
    overrides: dict[str, object] = {}
    for key, value in table.items():
        try:
            name = _field_name(key)
            overrides[name] = config_value(name, value)
        except InvalidInput as exc:
            raise InvalidInput(f"config file {str(path)!r}: {exc}") from None
    return overrides
