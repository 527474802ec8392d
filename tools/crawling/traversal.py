"""One sweep of the keyspace: every reachable node visited once (the8472's keyspace
traversal), on a running `mldht.Node` and through its public API only.

Each node is asked once, walking the keyspace in id order from what the crawler's own
routing table holds, for a target in the first stretch of keyspace after its id that no
reply has covered yet: next to its own id where the walk is dense, so that its reply lists
its neighbours, and into the gap where it is not, so that its reply opens the next subtree.
Every node that some node lists is found, and none is asked twice. `sample_infohashes`
(BEP 51) is the query where the node supports it (its reply has the same `nodes`, plus
samples), `find_node` where it refused it, or where the `interval` it gave last time has
not passed, and once after a silence (aria2, Transmission and WebTorrent drop
`sample_infohashes` without a word). A node that does not answer is tried again only with
`retries`; one that answers with an error is not.

Politeness comes from the node's outbound budget (`NodeConfig.query_rate` in all,
`per_ip_query_rate` after `per_ip_query_burst` to any one IP) and from here: one query at a
time to an IP, one node per IP per sweep (another id or port on an IP already known is an
alias, counted, not visited), and nothing that the8472's sanitizing rules reject: no
unspecified, multicast, reserved or link-local address, loopback only from loopback, and a
private address only from a node on a private address itself.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import inspect
import ipaddress
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

from mldht.bep42 import is_secure_id
from mldht.bep51 import InvalidSample, Sample
from mldht.clients import describe_version
from mldht.compact import NodeInfo, format_address, is_contactable
from mldht.errors import MldhtError, QueryNotSent, QueryTimeout, RemoteError
from mldht.ids import NodeId, random_id_in_bucket
from mldht.krpc import FindNode, SampleInfohashes

METHOD_UNKNOWN = 204
MAX_FILL_ROUNDS = 32
MAX_HOLE_ASKS = 3
CLOSE_GAPS = 1
FALLBACK_TRIAL = 64
FALLBACK_WORTH = 0.1
MAX_TABLE_DEPTH = 40
HOLE_GAPS = 1
SMALL_NETWORK = 2000


@dataclass(order=True)
class Contact:
    key: int
    ip: str = field(compare=False)
    port: int = field(compare=False)
    node_id: bytes = field(compare=False)
    referrer: str | None = field(compare=False, default=None)
    found_at: float = field(compare=False, default=0.0)

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.ip else "ipv4"

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


def _shared_bits(a: int, b: int) -> int:
    return 160 - (a ^ b).bit_length()


def successor_target(key: int) -> NodeId:
    """The id right after `key`: the nodes XOR-closest to it follow the node in id order,
    across subtree boundaries too (where `key + 1` flips high bits, its closest nodes lie
    in the next subtree, which the node's routing table knows)."""
    return NodeId(((key + 1) % (1 << 160)).to_bytes(20, "big"))


def _is_private(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return True
    return not address.is_global and not address.is_loopback


def acceptable(address: tuple[str, int], referrer: tuple[str, int] | None) -> bool:
    """the8472's sanitizing: may a node that `referrer` listed be visited?"""
    if referrer is None:
        return True  # our own routing table: its nodes answered us
    if not is_contactable(address, referrer):
        return False
    return not _is_private(address[0]) or _is_private(referrer[0])


@dataclass
class SweepStats:
    found: dict = field(default_factory=lambda: {"ipv4": 0, "ipv6": 0})
    visited: int = 0
    answered: dict = field(default_factory=lambda: {"ipv4": 0, "ipv6": 0})
    timeouts: int = 0
    errors: int = 0
    queries: int = 0
    aliases: int = 0
    rejected: int = 0
    samples: int = 0
    bep51: int = 0
    table_queries: int = 0
    """With routing tables: the find_nodes that list each node's buckets."""
    fill_queries: int = 0
    """Second queries, to open stretches of keyspace the walk had no way into."""


class Sweep:
    """Visit every node reachable from `seeds`, each once; `on_visit(row)` gets the visit
    record (see store.VISIT_COLUMNS), `on_contact(contact)` each new node,
    `on_alias(...)` each second id on a known IP."""

    def __init__(self, node, sweep: int, *, concurrency: int = 64, timeout: float = 5.0,
                 retries: int = 1, sample: bool = True,
                 sample_after: dict[str, float] | None = None,
                 want: tuple[bytes, ...] = (), clock: Callable[[], float] = time.time,
                 on_visit=None, on_contact=None, on_alias=None, on_samples=None,
                 on_edges=None, on_launch=None, routing_tables: bool = False,
                 partition=None) -> None:
        self.node = node
        self.sweep = sweep
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.sample = sample
        self.sample_after = sample_after if sample_after is not None else {}
        self.want = want
        self.clock = clock
        self.on_visit = on_visit or (lambda row: None)
        self.on_contact = on_contact or (lambda contact: None)
        self.on_alias = on_alias or (lambda *args: None)
        self.on_samples = on_samples or (lambda *args: None)
        self.on_edges = on_edges
        self.on_launch = on_launch or (lambda ips, at: None)
        self.routing_tables = routing_tables
        self.partition = partition
        """A `crawl.Partition` (the ids to visit, and their stretches of keyspace), or None."""
        self.stats = SweepStats()
        self.known: dict[str, Contact] = {}
        """Every IP learned of this sweep, with the first node seen on it."""
        self.visited: set[str] = set()
        self.frontier: list[Contact] = []
        self.keys: list[int] = []
        """The ids of every node known this sweep, sorted (where the gaps are)."""
        self.covered_starts: list[int] = []
        self.covered_ends: list[int] = []
        self.claimed: set[int] = set()
        """Holes a visit in flight is asking about (their start)."""
        self.answered_keys: list[int] = []
        self.answered_by_key: dict[int, Contact] = {}
        self.asked_holes: dict[tuple[int, int], set[int]] = {}
        """Each hole asked about, with the nodes asked (their keys)."""
        self.fallback_tries = 0
        self.fallback_successes = 0
        self.own = {tuple(address) for address in getattr(node, "addresses", [])}
        self.fill_rounds = 0
        """Disjoint stretches of keyspace whose nodes some reply listed, sorted."""
        self.in_flight: set[str] = set()
        self.listed_by_half: tuple[set[str], set[str]] = (set(), set())
        self.listings: dict[str, list[str]] = {}
        """Who listed whom (referrer IP -> IPs), for the bootstrap of the mark-recapture
        interval."""
        """The IPs listed by one half of the referrers and by the other (split by a hash of
        the referrer's IP): two captures of one sweep, for mark-recapture."""
        self.answered_ips: set[str] = set()
        self.position = 0
        """The id (as an integer) of the last node taken from the frontier: how far the walk
        has come through the keyspace."""
        self._wake = asyncio.Event()
        if partition is not None:
            # Outside the partition is other processes' work: nothing to find there.
            position = 0
            for low, high in partition.ranges():
                if low > position:
                    self.cover(position, low - 1)
                position = high + 1
            if position < 1 << 160:
                self.cover(position, (1 << 160) - 1)

    # --- the frontier -----------------------------------------------------------------------

    def learn(self, info: NodeInfo, referrer: tuple[str, int] | None) -> None:
        ip, port = info.ip, info.port
        if (ip, port) in self.own:
            return  # the crawler itself, as another node lists it
        if not acceptable((ip, port), referrer):
            self.stats.rejected += 1
            return
        node_id = bytes(info.id)
        if self.partition is not None and not self.partition(node_id):
            return
        if referrer is not None:
            self.listed_by_half[zlib.crc32(referrer[0].encode()) & 1].add(ip)
            self.listings.setdefault(referrer[0], []).append(ip)
        referrer_text = format_address(referrer) if referrer else None
        known = self.known.get(ip)
        if known is not None:
            if known.node_id != node_id or known.port != port:
                self.stats.aliases += 1
                self.on_alias(ip, port, node_id, referrer_text)
            return
        contact = Contact(int.from_bytes(node_id, "big"), ip, port, node_id, referrer_text,
                          self.clock())
        self.add(contact, new=True)

    def add(self, contact: Contact, new: bool) -> None:
        self.known[contact.ip] = contact
        bisect.insort(self.keys, contact.key)
        self.stats.found[contact.family] += 1
        if new:
            self.on_contact(contact)
        if contact.ip not in self.visited:
            heapq.heappush(self.frontier, contact)
            self._wake.set()

    def restore(self, contacts: list[tuple], visited: set[str],
                visited_contacts: list[tuple] = ()) -> None:
        """Carry on a sweep a crashed crawl left (`store.frontier`): visited IPs are not
        visited again; their ids (`store.visited_contacts`) mark where the walk has been,
        so that the stretches between them are asked about, by those that answered (their
        replies may have been lost in the crash, and with them the only way to some
        nodes)."""
        self.visited |= visited
        for ip, port, _family, node_id, found_at, referrer, *answered in visited_contacts:
            contact = Contact(int.from_bytes(node_id, "big"), ip, port, bytes(node_id),
                              referrer, found_at)
            self.known[ip] = contact
            bisect.insort(self.keys, contact.key)
            # Counted as this sweep's, as if the crash had not been.
            self.stats.found[contact.family] += 1
            self.stats.visited += 1
            if answered and answered[0]:
                bisect.insort(self.answered_keys, contact.key)
                self.answered_by_key[contact.key] = contact
                self.answered_ips.add(ip)
                self.stats.answered[contact.family] += 1
        for ip in visited:
            self.known.setdefault(ip, Contact(0, ip, 0, b"", None, 0.0))
        for ip, port, _family, node_id, found_at, referrer in contacts:
            self.add(Contact(int.from_bytes(node_id, "big"), ip, port, bytes(node_id),
                             referrer, found_at), new=False)

    def _next(self) -> Contact | None:
        while self.frontier:
            contact = heapq.heappop(self.frontier)
            if contact.ip in self.visited or contact.ip in self.in_flight:
                continue
            self.position = contact.key
            return contact
        return None

    @property
    def covered(self) -> float:
        """Share of the keyspace (of its partition's stretches) the walk has passed, for
        the estimate of the total."""
        if self.partition is None:
            return self.position / float(1 << 160)
        ranges = self.partition.ranges()
        passed = sum(max(0, min(self.position, high + 1) - low) for low, high in ranges)
        return passed / float(sum(high + 1 - low for low, high in ranges))

    # --- visiting -------------------------------------------------------------------------

    async def run(self) -> SweepStats:
        """Until nothing is left to visit."""
        running: set[asyncio.Task] = set()
        try:
            while True:
                launched = []
                while len(running) + len(launched) < self.concurrency:
                    contact = self._next()
                    if contact is None:
                        break
                    self.in_flight.add(contact.ip)
                    launched.append(contact)
                if launched:
                    # Durable before any query leaves (tasks run after this returns).
                    recorded = self.on_launch([contact.ip for contact in launched],
                                              self.clock())
                    if inspect.isawaitable(recorded):
                        await recorded
                for contact in launched:
                    task = asyncio.ensure_future(self._visit(contact))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    task.add_done_callback(lambda _: self._wake.set())
                if not running and not self.frontier:
                    for task in self._open_holes():
                        running.add(task)
                        task.add_done_callback(running.discard)
                        task.add_done_callback(lambda _: self._wake.set())
                    if not running:
                        return self.stats
                self._wake.clear()
                await self._wake.wait()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _frontier_target(self, key: int) -> tuple[NodeId, int | None]:
        """Where to ask the node at `key` about: into the first hole the walk has after it.

        A hole is a stretch after a covered one (where a reply listed every node) up to the
        next covered stretch or known node. The target is its middle: the reply lists the
        nodes around it, from the responder's bucket for that part of the keyspace, so
        that the walk crosses the boundaries of id subtrees, which XOR-closest sets never
        do by themselves. A hole another visit is asking about is left to it: the next
        one is taken. Returns the target and the hole claimed (to release)."""
        position = key
        for _ in range(16):  # bounded: past that, the node's own neighbourhood
            end = self._covered_end(position)
            hole_start = position if end is None else end
            hole_end = self._hole_end(hole_start)
            if hole_start in self.claimed:
                if hole_end is None:
                    break
                position = hole_end
                continue
            self.claimed.add(hole_start)
            target = (hole_start + (hole_end if hole_end is not None else (1 << 160) - 1)) // 2
            if target == hole_start:
                target = hole_start ^ 1
            return NodeId(target.to_bytes(20, "big")), hole_start
        return successor_target(key), None

    def _covered_end(self, key: int) -> int | None:
        index = bisect.bisect_right(self.covered_starts, key) - 1
        if index >= 0 and self.covered_ends[index] >= key:
            return self.covered_ends[index]
        return None

    def _hole_end(self, start: int) -> int | None:
        candidates = []
        index = bisect.bisect_right(self.covered_starts, start)
        if index < len(self.covered_starts):
            candidates.append(self.covered_starts[index])
        following = self._next_key(start)
        if following is not None:
            candidates.append(following)
        return min(candidates) if candidates else None

    def cover(self, low: int, high: int) -> None:
        """Mark [low, high] as known completely (the nodes of a reply around its target)."""
        starts, ends = self.covered_starts, self.covered_ends
        index = bisect.bisect_left(ends, low - 1)
        while index < len(starts) and starts[index] <= high + 1:
            low, high = min(low, starts[index]), max(high, ends[index])
            del starts[index], ends[index]
        starts.insert(index, low)
        ends.insert(index, high)

    def _known_over_keyspace(self) -> int:
        """The nodes known, as many as the whole keyspace would hold at the same density
        (a partition's walk sees only its share): the gap between ids it implies."""
        if self.partition is None:
            return len(self.keys)
        return round(len(self.keys) / self.partition.share)

    def _next_key(self, key: int) -> int | None:
        index = bisect.bisect_right(self.keys, key)
        return self.keys[index] if index < len(self.keys) else None

    async def _dump_table(self, contact: Contact) -> int:
        """Nebula's method: a find_node for a random id in each of the node's buckets'
        ranges (sharing 0, 1, 2... bits with its id), until its buckets run out; every
        node listed is an edge of the graph. Returns the queries sent."""
        sent = 0
        rng = random.Random(contact.key)
        for depth in range(MAX_TABLE_DEPTH):
            target = random_id_in_bucket(contact.node_id, depth, rng)
            sent += 1
            self.stats.queries += 1
            self.stats.table_queries += 1
            try:
                response = await self.node.query(contact.address,
                                                 self._query(contact, False, target),
                                                 timeout=self.timeout)
            except MldhtError:
                break
            nodes = list(response.nodes or []) + list(response.nodes6 or [])
            for info in nodes:
                self.learn(info, contact.address)
            if self.on_edges is not None:
                self.on_edges(contact.ip, nodes)
            in_bucket = [info for info in nodes if _shared_bits(info.key, contact.key) == depth]
            if not in_bucket and depth >= 3:
                break  # past the deepest bucket it has
        return sent

    def _fallback_worthwhile(self) -> bool:
        """Whether a silent node is worth a find_node after its sample_infohashes timed out:
        always at first, then while such second tries find someone often enough (in a
        network of BEP 51 nodes, silence means the node is gone: no second query)."""
        tries = self.fallback_tries
        return tries < FALLBACK_TRIAL or self.fallback_successes >= FALLBACK_WORTH * tries

    def holes(self) -> list[tuple[int, int]]:
        """The stretches of keyspace no reply covered, in order."""
        holes, position = [], 0
        for start, end in zip(self.covered_starts, self.covered_ends):
            if start > position:
                holes.append((position, start - 1))
            position = end + 1
        if position < (1 << 160):
            holes.append((position, (1 << 160) - 1))
        return holes

    def _open_holes(self) -> list[asyncio.Future]:
        """When the walk has nobody left to visit but stretches of keyspace stay uncovered
        (no node there was ever listed: the walk had no way in), ask about each one, once,
        the node that answered whose id shares the most bits with its middle: its bucket
        for that stretch lists the nodes there. These are the only second queries a node
        gets in a sweep (a few per hundred nodes)."""
        if self.fill_rounds >= MAX_FILL_ROUNDS or not self.answered_keys:
            return []
        self.fill_rounds += 1
        tasks = []
        # In a large network, a stretch shorter than the average gap between ids most
        # likely holds nobody; in a small one every stretch is worth its one query.
        known = self._known_over_keyspace()
        smallest = 0 if known < SMALL_NETWORK else HOLE_GAPS * (1 << 160) // known
        for low, high in self.holes():
            if high - low < smallest:
                continue  # too short to hold anyone
            tried = self.asked_holes.setdefault((low, high), set())
            if len(tried) >= MAX_HOLE_ASKS:
                continue  # asked enough, and unchanged since
            middle = (low + high) // 2
            # The answering node sharing most bits with its middle, then those on either
            # side of it: each knows a different part of the keyspace around it. In a small
            # network all three at once, about its middle and its two ends: XOR-closest
            # sets do not follow id order, so a node just inside one end of a stretch may
            # be listed for a target at that end and for no target in its middle.
            left, right = self._neighbours_answered(low, high, sides=True)
            asks = [(self._closest_answered(middle), middle), (left, low), (right, high)]
            if known >= SMALL_NETWORK:
                asks = [next(((c, middle) for c, _ in asks
                              if c is not None and c.key not in tried), (None, middle))]
            for responder, target in asks:
                if responder is None or responder.key in tried:
                    continue
                tried.add(responder.key)
                tasks.append(asyncio.ensure_future(
                    self._ask_about(responder, target, (low, high))))
        return tasks

    def _neighbours_answered(self, low: int, high: int, sides: bool = False) -> list:
        """The answering nodes just below and just above [low, high] (with `sides`, as a
        pair with None where there is none; else those that exist)."""
        keys = self.answered_keys
        chosen = [keys[i] if 0 <= i < len(keys) else None
                  for i in (bisect.bisect_left(keys, low) - 1, bisect.bisect_right(keys, high))]
        found = [None if key is None else self.answered_by_key[key] for key in chosen]
        return found if sides else [contact for contact in found if contact is not None]

    def _closest_answered(self, key: int) -> Contact | None:
        keys = self.answered_keys
        index = bisect.bisect_left(keys, key)
        candidates = [keys[i] for i in (index - 1, index) if 0 <= i < len(keys)]
        if not candidates:
            return None
        best = max(candidates, key=lambda candidate: _shared_bits(candidate, key))
        return self.answered_by_key.get(best)

    async def _ask_about(self, contact: Contact, middle: int, hole: tuple[int, int]) -> None:
        self.stats.queries += 1
        self.stats.fill_queries += 1
        target = NodeId(middle.to_bytes(20, "big"))
        try:
            response = await self.node.query(contact.address, self._query(contact, False, target),
                                             timeout=self.timeout)
        except MldhtError:
            # Gone since it answered (churn): ask someone else about the hole next round,
            # not it again.
            self.asked_holes.get(hole, set()).discard(contact.key)
            self._forget_answered(contact)
            return
        nodes = list(response.nodes or []) + list(response.nodes6 or [])
        for info in nodes:
            self.learn(info, contact.address)
        low, high = hole
        if not any(low <= info.key <= high for info in nodes):
            # Nobody there, says the node best placed to know: believed for a short stretch
            # at once, for a long one (its bucket there holds 8 nodes of a wider part, which
            # may all lie outside) only once nodes on both sides agree.
            known = max(1, self._known_over_keyspace())
            if (high - low) * known <= CLOSE_GAPS * (1 << 160) or \
                    len(self.asked_holes.get(hole, ())) >= MAX_HOLE_ASKS:
                self.cover(low, high)
        self._cover_reply(contact, nodes, middle)

    def _forget_answered(self, contact: Contact) -> None:
        if self.answered_by_key.pop(contact.key, None) is not None:
            index = bisect.bisect_left(self.answered_keys, contact.key)
            if index < len(self.answered_keys) and self.answered_keys[index] == contact.key:
                del self.answered_keys[index]

    def _query(self, contact: Contact, sampling: bool, target: NodeId):
        own = self.node.node_ids.get(contact.family) or self.node.node_id
        if sampling:
            return SampleInfohashes(transaction_id=b"", sender_id=own, target=target,
                                    want=self.want)
        return FindNode(transaction_id=b"", sender_id=own, target=target, want=self.want)

    async def _visit(self, contact: Contact) -> None:
        stats = self.stats
        now = self.clock()
        sampling = self.sample and self.sample_after.get(contact.ip, 0.0) <= now
        row = {"sweep": self.sweep, "ip": contact.ip, "port": contact.port,
               "family": contact.family, "node_id": contact.node_id or None,
               "referrer": contact.referrer, "queries": 0, "outcome": "timeout"}
        response = None
        attempts = 0
        falling_back = False
        target, claim = self._frontier_target(contact.key) if contact.node_id \
            else (NodeId.random(), None)
        try:
            while True:
                attempts += 1
                row["queries"] += 1
                stats.queries += 1
                try:
                    response = await self.node.query(contact.address,
                                                     self._query(contact, sampling, target),
                                                     timeout=self.timeout)
                    break
                except QueryTimeout:
                    if sampling and self._fallback_worthwhile():
                        # aria2, Transmission and WebTorrent drop sample_infohashes without
                        # a word (no 204): their neighbours come by find_node.
                        sampling = False
                        self.fallback_tries += 1
                        falling_back = True
                        continue
                    if attempts > self.retries + falling_back:
                        break
                except RemoteError as error:
                    if sampling and error.code == METHOD_UNKNOWN:
                        row["bep51"] = 0
                        sampling = False  # no BEP 51: the neighbours by find_node
                        continue
                    row["outcome"], row["error_code"] = "error", error.code
                    break
                except QueryNotSent:
                    row["outcome"] = "not_sent"
                    break
        finally:
            self.in_flight.discard(contact.ip)
            self.visited.add(contact.ip)
            self.claimed.discard(claim)
        stats.visited += 1
        row["at"] = self.clock()
        if response is not None and falling_back:
            self.fallback_successes += 1
            row["bep51"] = 0  # it answers find_node, and ignored sample_infohashes
        if response is not None:
            self._answered(contact, response, sampling, row, int.from_bytes(target, "big"))
            if self.routing_tables:
                self.in_flight.add(contact.ip)  # one query at a time to an IP, still
                try:
                    row["queries"] += await self._dump_table(contact)
                finally:
                    self.in_flight.discard(contact.ip)
        elif row["outcome"] == "error":
            stats.errors += 1
        else:
            stats.timeouts += 1
        self.on_visit(row)

    def _answered(self, contact: Contact, response, sampling: bool, row: dict,
                  target: int) -> None:
        stats = self.stats
        stats.answered[contact.family] += 1
        self.answered_ips.add(contact.ip)
        version = response.version
        client = describe_version(version)
        row.update(outcome="answered", answered_id=bytes(response.sender_id),
                   v=version, client=client.name or client.code if client else None,
                   client_version=client.version if client else None,
                   bep42=int(is_secure_id(bytes(response.sender_id), contact.ip)),
                   rtt=None if response.rtt is None else round(response.rtt, 4))
        nodes = list(response.nodes or []) + list(response.nodes6 or [])
        row["neighbours"] = len(nodes)
        if sampling:
            try:
                sample = Sample.from_response(response)
            except InvalidSample:
                row["bep51"] = 0
            else:
                stats.bep51 += 1
                stats.samples += len(sample.samples)
                row.update(bep51=1, num=sample.num, interval=sample.interval,
                           samples=len(sample.samples))
                self.sample_after[contact.ip] = row["at"] + sample.interval
                if sample.samples:
                    self.on_samples(contact.ip, row["at"], [bytes(h) for h in sample.samples])
        referrer = contact.address
        for info in nodes:
            self.learn(info, referrer)
        bisect.insort(self.answered_keys, contact.key)
        self.answered_by_key[contact.key] = contact
        self._cover_reply(contact, nodes, target)

    def _cover_reply(self, contact: Contact, nodes: list, target: int) -> None:
        # The reply lists every node of the stretch it spans only when the responder lives
        # inside it: a node knows its own part of the keyspace completely, while a bucket
        # for a far part holds 8 of the nodes there, not all.
        listed = [info.key for info in nodes]
        if len(listed) >= 2:
            low, high = min(listed + [target]), max(listed + [target])
            if low <= contact.key <= high:
                self.cover(low, high)
        if self.on_edges is not None:
            self.on_edges(contact.ip, nodes)


def seed_contacts(node) -> list[NodeInfo]:
    """The crawler node's own routing table (nodes that answered it), as where to start."""
    seeds = []
    for family in node.table().values():
        for bucket in family["buckets"]:
            for entry in bucket["nodes"]:
                host, _, port = entry["address"].rpartition(":")
                seeds.append(NodeInfo(NodeId(bytes.fromhex(entry["id"])), host.strip("[]"),
                                      int(port)))
    return seeds


__all__ = ["Contact", "Sweep", "SweepStats", "acceptable", "seed_contacts"]
