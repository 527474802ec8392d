"""The Kademlia routing table of BEP 5: k-buckets, node states and replacement caches.

Sans-I/O: every method that depends on time takes `now` (seconds, any monotonic origin).
The table never sends anything; when a full bucket holds questionable nodes it tells the
caller which ones to ping (`InsertResult.ping`), and the caller reports the outcome with
`on_response` or `on_timeout`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import native
from .compact import Address, NodeInfo, pack_address
from .config import DEFAULT_K
from .ids import ID_BITS, NodeId

K = DEFAULT_K
MAX_NATIVE_COUNT = 64
"""The native `closest_compact` lists at most this many nodes (a reply lists k)."""
EXTENDED_FACTORS = (16, 8, 4, 2)
"""An extended table's buckets 0 to 3 hold this many times k (libtorrent's bucket_limit)."""
EXTENDED_MARGIN = 8
"""...once at least this many buckets are deeper than them. In a network of a few hundred
nodes, where tables are 5 or 6 buckets deep, a join filling bucket 0 with 128 nodes left
the sibling buckets (1 and 2) of most nodes empty, so that nobody knew the nodes of the
quarter next to its own and lookups towards it stopped short; in the public DHT, 20
buckets deep, the farthest 4 are far from where a join splits."""
GOOD_INTERVAL = 15 * 60.0
GOOD_MARGIN = 1e-3
"""Seconds `Bucket.good_until` is kept short of the exact time (see `_all_good`)."""
"""A node is good while it answered us, or queried us after having answered once, this recently."""
BAD_AFTER_FAILURES = 2
"""Consecutive failed queries after which a node is bad (BEP 5: 'multiple queries in a row')."""
ID_CHANGE_WINDOW = 15 * 60.0
"""An IP whose node changes id twice within this many seconds is distrusted for as long."""
MAX_ID_CHANGES_TRACKED = 4096


def _good_until(entry: "RoutingEntry") -> float:
    """When a good entry stops being good if nothing is heard from it (see `state`)."""
    until = (entry.last_response if entry.last_response is not None else -math.inf) \
        + GOOD_INTERVAL
    if entry.last_response is not None and entry.last_query is not None:
        until = max(until, entry.last_query + GOOD_INTERVAL)
    return until


class NodeState(enum.Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


RTT_WEIGHT = 0.25
"""Weight of a new round trip in an entry's smoothed one."""
FAST_MARGIN = 1.0
"""With `prefer_fast`, by default, a newcomer faster at all than the slowest good node of its
sub-prefix in a full bucket takes its place, as libtorrent's does; a margin above 1 asks for
that many times faster, and 50 ms, so that entries churn less on jitter."""


def _slowness(entry: "RoutingEntry") -> float:
    """An entry's smoothed round trip; one never measured counts as the slowest."""
    return math.inf if entry.rtt is None else entry.rtt


class RoutingEntry:
    """A node in the table with what we know of its liveness (compared by identity).

    Kept small (96 bytes): a node's id, address, integer id and compact form live on its
    `NodeInfo`, shared with whoever told us of it (a reply, a simulator's population), and
    a table of a long-lived node holds some hundred of these."""

    __slots__ = ("info", "key", "last_response", "last_query", "failures", "ping_pending",
                 "secure_id", "version", "rtt")

    def __init__(self, info: NodeInfo, last_response: float | None = None,
                 last_query: float | None = None, secure_id: bool = True) -> None:
        self.info = info
        """The node as exchanged on the wire (id, ip, port)."""
        self.key = info.key
        """The id as an integer: XOR distances are computed on every find_node we answer."""
        self.last_response = last_response
        """When it last answered one of our queries (None: never)."""
        self.last_query = last_query
        """When it last sent us a valid query."""
        self.failures = 0
        """Queries in a row it has failed to answer."""
        self.ping_pending = False
        self.secure_id = secure_id
        """Its id matches its IP under BEP 42 (or its IP is exempt)."""
        self.version: bytes | None = None
        """The `v` key of the last message it sent us that had one (client and version)."""
        self.rtt: float | None = None
        """Its round trip to our queries, smoothed (seconds; None: not measured)."""

    @classmethod
    def of(cls, node: NodeInfo, now: float, responded: bool, secure: bool) -> "RoutingEntry":
        return cls(node, now if responded else None, None if responded else now, secure)

    def __repr__(self) -> str:
        return (f"RoutingEntry({self.info}, last_response={self.last_response}, "
                f"last_query={self.last_query}, failures={self.failures})")

    @property
    def id(self) -> NodeId:
        return self.info.id

    @property
    def ip(self) -> str:
        return self.info.ip

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def compact(self) -> bytes:
        """Compact node info (26 or 38 bytes), as it goes into `nodes` replies."""
        return self.info.compact

    def move_to_port(self, port: int) -> None:
        """The node now sends from `port` (a NAT remapped it)."""
        info = self.info
        if port != info.port:
            self.info = NodeInfo(info.id, info.ip, port)

    @property
    def address(self) -> Address:
        return self.info.address

    @property
    def last_seen(self) -> float:
        response, query = self.last_response, self.last_query
        if response is None:
            return query  # type: ignore[return-value]  # one of the two is always set
        return response if query is None or response > query else query

    def state(self, now: float) -> NodeState:
        if self.failures >= BAD_AFTER_FAILURES:
            return NodeState.BAD
        if self.last_response is not None:
            if now - self.last_response < GOOD_INTERVAL:
                return NodeState.GOOD
            if self.last_query is not None and now - self.last_query < GOOD_INTERVAL:
                return NodeState.GOOD
        return NodeState.QUESTIONABLE


@dataclass(slots=True)
class Bucket:
    """Nodes sharing a given number of leading bits with our id, plus a replacement cache."""

    nodes: list[RoutingEntry] = field(default_factory=list)
    replacements: list[RoutingEntry] = field(default_factory=list)
    last_changed: float = 0.0
    """When a node in it last answered or was added: buckets idle for 15 minutes are refreshed."""
    capacity: int = 8
    """How many nodes it holds (k, or more for the farthest buckets of an extended table)."""
    good_until: float = -math.inf
    """Before this time every node in it is good (RoutingTable._all_good): the scans for bad
    and questionable nodes, 128 `state` calls in an extended bucket for every node that
    answers, are skipped. -inf: not known. Only a failure or a newcomer can bring it
    closer, and both reset it."""


class InsertOutcome(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    REPLACEMENT = "replacement"
    """Bucket full: kept in the replacement cache."""
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class InsertResult:
    outcome: InsertOutcome
    reason: str = ""
    ping: tuple[NodeInfo, ...] = ()
    """Questionable nodes the caller should ping; failures make room for replacements."""
    verified: bool = False
    """The node (in the table or waiting as a replacement) has answered one of our queries:
    a querier that has not is worth a verification ping."""


_ADDED = InsertResult(InsertOutcome.ADDED, verified=True)
_UPDATED = InsertResult(InsertOutcome.UPDATED)
_UPDATED_VERIFIED = InsertResult(InsertOutcome.UPDATED, verified=True)
_WAITING = InsertResult(InsertOutcome.REPLACEMENT, "not verified yet")
_WAITING_VERIFIED = InsertResult(InsertOutcome.REPLACEMENT, "waiting for room", verified=True)


class RoutingTable:
    """BEP 5 routing table around `own_id`.

    Bucket i (i < len-1) holds nodes sharing exactly i leading bits with `own_id`; the
    last bucket holds everything closer, and it is the only one that ever splits.
    At most one entry per IP address. `k` is the bucket size; `replacement_size` bounds
    each replacement cache.

    BEP 42: `verify(node_id, ip)` tells whether an id matches its IP. With `enforce`, nodes
    whose ids do not match never enter the table; with `prefer_verified` (libtorrent's
    default), a matching node takes the place of a non-matching one in a full bucket.

    `native_codec` false keeps `closest_compact` in Python even where the native codec is
    built (mldht/native.py): for comparing the two.
    """

    def __init__(self, own_id: NodeId, k: int = K, replacement_size: int = K, *,
                 verify: Callable[[bytes, str], bool] | None = None, enforce: bool = False,
                 prefer_verified: bool = True, extended: bool = False,
                 prefer_fast: bool = False, fast_margin: float = FAST_MARGIN,
                 native_codec: bool = True) -> None:
        self.own_id = own_id
        self.prefer_fast = prefer_fast
        """libtorrent's rule for a full bucket that cannot split (`replace_node_impl`): a
        node that answered takes a place when its sub-prefix (the log2(capacity) bits after
        the bucket's own) has no node yet, from the slowest node of a crowded sub-prefix;
        else when it answered faster (`fast_margin`) than the slowest node of its own
        sub-prefix. Whoever it displaces waits in the replacement cache. A bucket whose
        nodes spread over its sub-prefixes starts a lookup about log2(capacity) bits closer
        to its target, from nodes that answer sooner."""
        self.fast_margin = fast_margin
        """How many times faster (and 50 ms) a newcomer must be than the node it displaces
        from its sub-prefix; at most 1: faster at all, as libtorrent's."""
        self.k = k
        self.extended = extended
        """libtorrent's extended routing table: the farthest buckets (0 to 3, once they are
        no longer the last) hold 16, 8, 4 and 2 times k nodes. Half the keyspace shares no
        bit with our id, so bucket 0 is where most lookups start: 128 random nodes there
        instead of 8 start a lookup some 4 bits (a hop) closer to its target."""
        self.replacement_size = replacement_size
        self.verify = verify
        self.enforce = enforce
        self.prefer_verified = prefer_verified
        self.own_key = int.from_bytes(own_id, "big")
        self.buckets: list[Bucket] = [Bucket(capacity=k)]
        self._by_ip: dict[str, RoutingEntry] = {}
        self._keys: set[int] = set()
        """The ids (as integers) of the entries in `_by_ip`: one id, one entry."""
        self._id_changes: dict[str, float] = {}
        """IP -> when its node last changed id (bounded, oldest forgotten first)."""
        self._distrusted: dict[str, float] = {}
        """IP -> until when it stays out of the table (bounded likewise)."""
        self.listener: Callable[[str, RoutingEntry], None] | None = None
        """Told `("added", entry)` / `("removed", entry)` when a main bucket changes."""
        self._quiet_until = -math.inf
        """No entry can turn questionable before this time (see `questionable`)."""
        self._krpc = native.module("_krpc") if native_codec else None
        self._serving: tuple[bytes, int] | None = None
        """For the native `closest_compact`: the compact forms of the entries a reply may
        list (answered us, not bad), joined, and their width (0: mixed families, use
        Python); None when something changed since it was made."""

    def _enter(self, entry: RoutingEntry) -> None:
        self._by_ip[entry.info.ip] = entry
        self._keys.add(entry.key)
        self.buckets[self._index_of(entry.key)].good_until = -math.inf

    def _all_good(self, bucket: Bucket, now: float) -> bool:
        """Whether every node of `bucket` is surely good at `now` (False: not known; the
        caller scans). Hearing from a node only makes it good for longer, so the earliest
        time one of them may stop being good stays valid until a failure or a newcomer."""
        if now < bucket.good_until:
            return True
        until = math.inf
        for old in bucket.nodes:
            if old.failures >= BAD_AFTER_FAILURES or old.last_response is None:
                bucket.good_until = -math.inf
                return False
            until = min(until, _good_until(old))
        # A hair early: `now - last < GOOD_INTERVAL` and `now < last + GOOD_INTERVAL` may
        # round apart at the very boundary, where the exact scan then decides.
        bucket.good_until = until - GOOD_MARGIN
        return now < bucket.good_until

    def _leave(self, entry: RoutingEntry) -> None:
        del self._by_ip[entry.info.ip]
        self._keys.discard(entry.key)

    def _notify(self, change: str, entry: RoutingEntry) -> None:
        self._quiet_until = -math.inf  # an entry from the replacements may be old already
        self._serving = None
        if self.listener is not None:
            self.listener(change, entry)

    def with_own_id(self, own_id: NodeId) -> "RoutingTable":
        """A table around a new id holding the same nodes (after our external IP changed)."""
        table = RoutingTable(own_id, self.k, self.replacement_size, verify=self.verify,
                             enforce=self.enforce, prefer_verified=self.prefer_verified,
                             extended=self.extended, prefer_fast=self.prefer_fast,
                             fast_margin=self.fast_margin,
                             native_codec=self._krpc is not None)
        table._id_changes = dict(self._id_changes)
        table._distrusted = dict(self._distrusted)
        for entry in self:
            if entry.id == own_id:
                continue
            table._place(entry)
        return table

    def _place(self, entry: RoutingEntry) -> bool:
        """Put an existing entry where it belongs (no liveness change); False when full."""
        while True:
            index = self._index_of(entry.key)
            bucket = self.buckets[index]
            if len(bucket.nodes) < bucket.capacity:
                bucket.nodes.append(entry)
                self._enter(entry)
                return True
            if index == len(self.buckets) - 1 and len(self.buckets) < ID_BITS:
                self._split_last()
                continue
            self._add_replacement(bucket, entry)
            return False

    # --- lookup -------------------------------------------------------------------------

    def bucket_index(self, node_id: bytes) -> int:
        return self._index_of(int.from_bytes(node_id, "big"))

    def _index_of(self, key: int) -> int:
        shared = ID_BITS - (self.own_key ^ key).bit_length()
        last = len(self.buckets) - 1
        return shared if shared < last else last

    def get(self, address: Address) -> RoutingEntry | None:
        entry = self._by_ip.get(address[0])
        if entry is not None and entry.port == address[1]:
            return entry
        return None

    def by_ip(self, ip: str) -> RoutingEntry | None:
        """The entry holding `ip`, whatever its port (one entry per IP)."""
        return self._by_ip.get(ip)

    def __len__(self) -> int:
        return sum(len(bucket.nodes) for bucket in self.buckets)

    def __iter__(self) -> Iterator[RoutingEntry]:
        for bucket in self.buckets:
            yield from bucket.nodes

    def closest(self, target: bytes, count: int = K, now: float | None = None,
                include_questionable: bool = True, verified_only: bool = False,
                exclude: Address | None = None) -> list[NodeInfo]:
        """The `count` closest nodes to `target` that are not bad.

        Good nodes only when `include_questionable` is false (and `now` is given); only
        nodes that have answered us at least once when `verified_only`; never `exclude`.
        """
        good_only = not include_questionable and now is not None
        return [entry.info for entry in self._closest_entries(target, count, verified_only,
                                                              exclude, now if good_only else None)]

    def closest_compact(self, target: bytes, count: int = K,
                        exclude: Address | None = None, packed_exclude: bytes | None = None
                        ) -> bytes:
        """`closest(target, count, verified_only=True, exclude=exclude)` as the packed compact
        node info of a `nodes` or `nodes6` reply: what every find_node and get_peers costs.
        `packed_exclude` is `pack_address(exclude)`, when the caller has it already.

        With the native codec (mldht/native.py) the choice is made in C from the compact
        forms of the listable entries, kept joined until the table changes: the same bytes.
        """
        krpc = self._krpc
        if krpc is not None and count <= MAX_NATIVE_COUNT:
            serving = self._serving or self._make_serving()
            if serving[1]:
                if exclude is None:
                    packed_exclude = b""
                elif packed_exclude is None:
                    packed_exclude = pack_address(exclude)
                return krpc.closest_compact(serving[0], serving[1], target, count,
                                            packed_exclude)
        return b"".join([entry.compact for entry in
                         self._closest_entries(target, count, True, exclude, None)])

    def _make_serving(self) -> tuple[bytes, int]:
        forms = [entry.compact for entry in self
                 if entry.failures < BAD_AFTER_FAILURES and entry.last_response is not None]
        widths = {len(form) for form in forms}
        width = widths.pop() if len(widths) == 1 else (26 if not widths else 0)
        self._serving = serving = (b"".join(forms), width)
        return serving

    def _closest_entries(self, target: bytes, count: int, verified_only: bool,
                         exclude: Address | None, good_at: float | None) -> list[RoutingEntry]:
        target_key = int.from_bytes(target, "big")
        excluded = self.get(exclude) if exclude is not None else None
        # Buckets fall into classes of XOR distance to the target: the target's own bucket
        # b is nearest, then every deeper bucket (their distance has its top bit at b), then
        # buckets b-1, b-2, ... each farther than the one before. Walk the classes in that
        # order and sort only within them, instead of sorting the whole table per query.
        buckets = self.buckets
        index = min(ID_BITS - (self.own_key ^ target_key).bit_length(), len(buckets) - 1)
        result: list[RoutingEntry] = []
        for step in range(index + 2):
            if step == 0:
                members = buckets[index].nodes
            elif step == 1:
                members = [entry for bucket in buckets[index + 1:] for entry in bucket.nodes]
            else:
                members = buckets[index + 1 - step].nodes
            chosen = [(entry.key ^ target_key, entry) for entry in members
                      if entry.failures < BAD_AFTER_FAILURES
                      and (not verified_only or entry.last_response is not None)
                      and entry is not excluded
                      and (good_at is None or entry.state(good_at) is NodeState.GOOD)]
            chosen.sort()  # distances are distinct: ids are unique in the table
            for _, entry in chosen:
                result.append(entry)
                if len(result) >= count:
                    return result
        return result

    def counts(self, now: float) -> dict[str, int]:
        """How many nodes are in each state, and how many replacements are cached."""
        result = {state.value: 0 for state in NodeState}
        for entry in self:
            result[entry.state(now).value] += 1
        result["replacements"] = sum(len(bucket.replacements) for bucket in self.buckets)
        return result

    # --- updates ------------------------------------------------------------------------

    def capacity_at(self, index: int, depth: int | None = None) -> int:
        """How many nodes bucket `index` holds in a table of `depth` buckets (this one's
        by default)."""
        depth = len(self.buckets) if depth is None else depth
        if self.extended and index < len(EXTENDED_FACTORS) and depth - 1 - index >= EXTENDED_MARGIN:
            return self.k * EXTENDED_FACTORS[index]
        return self.k

    def _split_last(self) -> None:
        old = self.buckets[-1]
        depth = len(self.buckets) - 1
        new = Bucket(last_changed=old.last_changed, capacity=self.k)
        self.buckets.append(new)
        grown = []
        if self.extended:
            for index in range(min(len(EXTENDED_FACTORS), depth)):
                bucket = self.buckets[index]
                capacity = self.capacity_at(index)
                if capacity > bucket.capacity:
                    bucket.capacity = capacity
                    grown.append(bucket)
        own, limit = self.own_key, ID_BITS - depth  # deeper: fewer than `limit` bits differ
        keep: list[RoutingEntry] = []
        for entry in old.nodes:
            (new.nodes if (own ^ entry.key).bit_length() < limit else keep).append(entry)
        old.nodes = keep
        stay: list[RoutingEntry] = []
        for entry in old.replacements:
            (new.replacements if (own ^ entry.key).bit_length() < limit else stay).append(entry)
        old.replacements = stay
        # Fill the room the split made from each bucket's own replacement cache.
        for bucket in (old, new, *grown):
            while len(bucket.nodes) < bucket.capacity:
                replacement = self._best_replacement(bucket)
                if replacement is None:
                    break
                bucket.replacements.remove(replacement)
                bucket.nodes.append(replacement)
                self._enter(replacement)
                self._notify("added", replacement)

    def _check_address(self, node: NodeInfo, now: float, bucket: Bucket) -> str | None:
        if node.id == self.own_id:
            return "our own id"
        if not 0 < node.port <= 0xFFFF:
            return "port out of range"
        if self._distrusted.get(node.ip, now) > now:
            return "its node changed id more than once lately"
        existing = self._by_ip.get(node.ip)
        if existing is not None and existing.info.id != node.id:
            return "another node id already uses this IP address"
        if existing is None and node.key in self._keys:
            return "this node id is already in the table at another IP address"
        return None

    def heard_from(self, node: NodeInfo, now: float, responded: bool,
                   version: bytes | None = None, rtt: float | None = None) -> InsertResult:
        """Record that `node` answered our query (`responded`) or sent us a valid query,
        with the `v` key of that message when it had one.

        Only nodes heard from directly enter the table: never call this for nodes merely
        listed in someone's `nodes` reply, nor for read-only (BEP 43) senders.
        """
        existing = self._by_ip.get(node.ip)
        if existing is not None and existing.info.id == node.id and 0 < node.port <= 0xFFFF:
            if version is not None:
                existing.version = version
            if existing.info.port != node.port:
                existing.move_to_port(node.port)  # same id, same IP: a NAT remapped it
                self._serving = None
            if responded:
                if existing.last_response is None or existing.failures >= BAD_AFTER_FAILURES:
                    self._serving = None  # it may be listed now
                existing.last_response = now
                existing.failures = 0
                if rtt is not None:
                    existing.rtt = rtt if existing.rtt is None else (
                        existing.rtt * (1 - RTT_WEIGHT) + rtt * RTT_WEIGHT)
                existing.ping_pending = False
                self.buckets[self._index_of(existing.key)].last_changed = now
            else:
                existing.last_query = now
            return _UPDATED_VERIFIED if existing.last_response is not None else _UPDATED
        bucket = self.buckets[self._index_of(node.key)]
        reason = self._check_address(node, now, bucket)
        if reason:
            return InsertResult(InsertOutcome.REJECTED, reason)

        if not responded:
            replacements = bucket.replacements
            ip, node_id = node.ip, node.id
            for waiting in replacements:
                info = waiting.info  # not the properties: every querier runs this loop
                if info.ip == ip and info.id == node_id:  # it queried us again
                    waiting.move_to_port(node.port)
                    waiting.last_query = now
                    if version is not None:
                        waiting.version = version
                    replacements.remove(waiting)  # now the most recently heard from
                    replacements.append(waiting)
                    return _WAITING_VERIFIED if waiting.last_response is not None else _WAITING
            if len(bucket.nodes) >= bucket.capacity and len(replacements) >= self.replacement_size and all(
                    waiting.last_response is not None for waiting in replacements):
                # It would be the first evicted: spare the work (and the verification ping).
                return InsertResult(InsertOutcome.REJECTED,
                                    "bucket and replacement cache full of nodes that answered")
        elif self._settled(bucket, now) and \
                self._place_for(bucket, self._index_of(node.key), node.key, rtt, now) is None:
            # A crawl hears from thousands of new nodes a second: where nothing would change
            # but which answering node waits in the replacement cache, spare the work.
            return InsertResult(InsertOutcome.REJECTED, "bucket full of good nodes and "
                                "replacement cache full of nodes that answered lately")
        # Known nodes were checked when they came in: only newcomers cost a CRC32C.
        secure = self.verify is None or self.verify(node.id, node.ip)
        if self.enforce and not secure:
            return InsertResult(InsertOutcome.REJECTED, "node id does not match its IP (BEP 42)")
        entry = RoutingEntry.of(node, now, responded, secure)
        entry.version = version
        entry.rtt = rtt if responded else None
        if not responded:
            # Main buckets hold only nodes that answered us (the8472's sanitizing rules): a
            # querier waits in the replacement cache until it answers a ping.
            self._add_replacement(bucket, entry)
            return _WAITING
        while True:
            index = self._index_of(entry.key)
            bucket = self.buckets[index]
            if len(bucket.nodes) < bucket.capacity:
                bucket.nodes.append(entry)
                self._enter(entry)
                if bucket.replacements:
                    bucket.replacements = [r for r in bucket.replacements if r.ip != node.ip]
                bucket.last_changed = now
                self._notify("added", entry)
                return _ADDED
            if index == len(self.buckets) - 1 and len(self.buckets) < ID_BITS:
                self._split_last()
                continue
            break

        for position, old in enumerate(() if self._all_good(bucket, now) else bucket.nodes):
            if old.state(now) is NodeState.BAD:
                self._leave(old)
                bucket.nodes[position] = entry
                self._enter(entry)
                bucket.last_changed = now
                self._notify("removed", old)
                self._notify("added", entry)
                return InsertResult(InsertOutcome.ADDED, "replaced a bad node", verified=True)

        if self.prefer_verified and secure and responded:
            unverified = [old for old in bucket.nodes if not old.secure_id]
            if unverified:
                old = min(unverified, key=lambda candidate: candidate.last_seen)
                return self._displace(bucket, old, entry, now,
                                      "took the place of a node without a BEP 42 id")

        place = self._place_for(bucket, index, entry.key, rtt, now)
        if place is not None:
            old, reason = place
            return self._displace(bucket, old, entry, now, reason)

        self._add_replacement(bucket, entry)
        to_ping = [] if self._all_good(bucket, now) else sorted(
            (old for old in bucket.nodes
             if not old.ping_pending and old.state(now) is NodeState.QUESTIONABLE),
            key=lambda old: old.last_seen)[:1]
        for old in to_ping:
            old.ping_pending = True
        return InsertResult(InsertOutcome.REPLACEMENT, "bucket full",
                            ping=tuple(old.info for old in to_ping), verified=True)

    def _displace(self, bucket: Bucket, old: RoutingEntry, entry: RoutingEntry, now: float,
                  reason: str) -> InsertResult:
        """`entry` takes `old`'s place in `bucket`; `old` waits in the replacement cache."""
        self._leave(old)
        bucket.nodes[bucket.nodes.index(old)] = entry
        self._enter(entry)
        self._add_replacement(bucket, old)
        bucket.last_changed = now
        self._notify("removed", old)
        self._notify("added", entry)
        return InsertResult(InsertOutcome.ADDED, reason, verified=True)

    def _place_for(self, bucket: Bucket, index: int, key: int, rtt: float | None,
                   now: float) -> tuple[RoutingEntry, str] | None:
        """With `prefer_fast`, the node of the full `bucket` (number `index`) that a node
        with id `key`, which answered in `rtt`, should displace, and why; else None."""
        if not self.prefer_fast or rtt is None or len(bucket.nodes) < bucket.capacity:
            return None
        bits = bucket.capacity.bit_length() - 1
        shift = max(ID_BITS - 1 - index - bits, 0)
        mask = (1 << bits) - 1
        slots: dict[int, list[RoutingEntry]] = {}
        for old in bucket.nodes:
            slots.setdefault((old.key >> shift) & mask, []).append(old)
        own_slot = slots.get((key >> shift) & mask)
        if own_slot is None:
            # An empty sub-prefix: the bucket gains reach, whatever the round trips.
            crowded = [old for slot in slots.values() if len(slot) > 1 for old in slot]
            if not crowded:  # only when capacity is not a power of two
                return None
            return (max(crowded, key=_slowness), "took a place in an empty sub-prefix")
        slowest = max(own_slot, key=_slowness)
        if slowest.rtt is None or slowest.state(now) is not NodeState.GOOD:
            return None
        margin = self.fast_margin
        if slowest.rtt < max(rtt * margin, rtt + 0.05) if margin > 1 else slowest.rtt <= rtt:
            return None
        return (slowest, "took the place of a slower node")

    def _settled(self, bucket: Bucket, now: float) -> bool:
        """A bucket that cannot split, full of good nodes (none to replace or ping, none
        without a BEP 42 id where verified ids are preferred), whose replacement cache is
        full of nodes that answered within the good interval."""
        if len(bucket.nodes) < bucket.capacity or len(bucket.replacements) < self.replacement_size:
            return False
        if bucket is self.buckets[-1] and len(self.buckets) < ID_BITS:
            return False
        if not self._all_good(bucket, now) and \
                any(old.state(now) is not NodeState.GOOD for old in bucket.nodes):
            return False
        if self.prefer_verified and any(not old.secure_id for old in bucket.nodes):
            return False
        return all(waiting.last_response is not None and
                   now - waiting.last_response < GOOD_INTERVAL
                   for waiting in bucket.replacements)

    def _add_replacement(self, bucket: Bucket, entry: RoutingEntry) -> None:
        replacements = bucket.replacements
        ip, node_id = entry.info.ip, entry.info.id
        for old in replacements:
            info = old.info  # not the properties: every new querier runs this loop
            if info.ip == ip or info.id == node_id:
                replacements = bucket.replacements = [
                    old for old in replacements if old.info.ip != ip and old.info.id != node_id]
                break
        replacements.append(entry)
        # Prefer nodes that answered us; among equals, drop the oldest. The list is kept in
        # the order the nodes were last heard from, so the oldest is the first one found.
        while len(replacements) > self.replacement_size:
            for position, old in enumerate(replacements):
                if old.last_response is None:
                    del replacements[position]
                    break
            else:
                del replacements[0]

    def on_timeout(self, address: Address, now: float) -> bool:
        """A query to `address` went unanswered. Returns True when the node was evicted."""
        entry = self.get(address)
        if entry is None:
            return False
        entry.failures += 1
        entry.ping_pending = False
        if entry.failures < BAD_AFTER_FAILURES:
            return False
        self._serving = None  # bad now: no longer listed
        bucket = self.buckets[self._index_of(entry.key)]
        bucket.good_until = -math.inf
        replacement = self._best_replacement(bucket)
        if replacement is None:
            return False  # keep the bad node until something better turns up
        bucket.nodes.remove(entry)
        self._leave(entry)
        bucket.replacements.remove(replacement)
        bucket.nodes.append(replacement)
        self._enter(replacement)
        bucket.last_changed = now
        self._notify("removed", entry)
        self._notify("added", replacement)
        return True

    def _best_replacement(self, bucket: Bucket) -> RoutingEntry | None:
        """The most recently seen replacement that has answered us (never an unverified one)."""
        usable = [entry for entry in bucket.replacements
                  if entry.ip not in self._by_ip and entry.last_response is not None]
        if not usable:
            return None
        return max(usable, key=lambda entry: (entry.last_response is not None, entry.last_seen))

    def id_changed(self, address: Address, new_id: NodeId, now: float) -> bool:
        """The node at `address` answered with an id other than the one in the table.

        The old entry goes (its replacement takes the place). A first change is believed (a
        restart, or a move to a BEP 42 id): the caller may then insert the new id. A second
        change within ID_CHANGE_WINDOW distrusts the IP for that long. Returns whether the
        new id may be inserted.
        """
        entry = self._by_ip.get(address[0])
        if entry is not None and entry.id != new_id:
            bucket = self.buckets[self._index_of(entry.key)]
            bucket.nodes.remove(entry)
            self._leave(entry)
            self._notify("removed", entry)
            replacement = self._best_replacement(bucket)
            if replacement is not None:
                bucket.replacements.remove(replacement)
                bucket.nodes.append(replacement)
                self._enter(replacement)
                self._notify("added", replacement)
        previous = self._id_changes.pop(address[0], None)
        self._id_changes[address[0]] = now
        trusted = previous is None or now - previous >= ID_CHANGE_WINDOW
        if not trusted:
            self._distrusted.pop(address[0], None)
            self._distrusted[address[0]] = now + ID_CHANGE_WINDOW
        for store in (self._id_changes, self._distrusted):
            while len(store) > MAX_ID_CHANGES_TRACKED:
                del store[next(iter(store))]
        return trusted

    def remove(self, address: Address) -> None:
        entry = self.get(address)
        if entry is not None:
            bucket = self.buckets[self._index_of(entry.key)]
            bucket.nodes.remove(entry)
            self._leave(entry)
            self._notify("removed", entry)

    def questionable(self, now: float, limit: int) -> list[NodeInfo]:
        """Questionable nodes not yet being pinged, least recently seen first.

        Called every few seconds by the upkeep: when a scan finds every node good, none can
        turn questionable before the stalest one's good interval runs out, and the scans
        until then are skipped (they were a third of a simulated node's upkeep)."""
        if now < self._quiet_until:
            return []
        entries = []
        good_until = math.inf
        for entry in self:
            state = entry.state(now)
            if state is NodeState.QUESTIONABLE:
                if not entry.ping_pending:
                    entries.append(entry)
            elif state is NodeState.GOOD:
                good_until = min(good_until, _good_until(entry))
        if not entries and all(not entry.ping_pending for entry in self):
            self._quiet_until = good_until
            return []
        entries.sort(key=lambda entry: entry.last_seen)
        for entry in entries[:limit]:
            entry.ping_pending = True
        return [entry.info for entry in entries[:limit]]

    def stale_buckets(self, now: float, idle: float = GOOD_INTERVAL) -> list[int]:
        """Indices of buckets unchanged for `idle` seconds (they need a refresh lookup)."""
        return [index for index, bucket in enumerate(self.buckets) if now - bucket.last_changed >= idle]

    def touch_bucket(self, index: int, now: float) -> None:
        """Mark bucket `index` refreshed (a lookup into its range was started)."""
        self.buckets[index].last_changed = now
