"""One sweep of the keyspace: every reachable node visited once (the8472's keyspace
traversal), on a running `mldht.Node` and through its public API only.

Each node is asked once, walking the keyspace in id order from what the crawler's own
routing table holds, for a target in the first stretch of keyspace after its id that no
reply has covered yet: next to its own id where the walk is dense, so that its reply lists
its neighbours, and into the gap where it is not, so that its reply opens the next subtree.
Every node that some node lists is found, and none is asked twice.

The query is `find_node`; a node that answers is then asked `sample_infohashes` (BEP 51)
when its client (its `v`) has been seen to answer it (`SamplePolicy`: on the real DHT about
a third of nodes do; µTorrent, Transmission, aria2 and WebTorrent drop it without a word, so
asking everyone first would cost a second query for half the nodes). Where most nodes
answer it, as in a network of libtorrent or mldht nodes, `sample_infohashes` goes first and
`find_node` only after a refusal or, while it pays, a silence. A node whose BEP 51
`interval` has not passed is not sampled again. A node that does not answer is tried again
only with `retries`; one that answers with an error is not.

Waiting, not computing, is what a crawl of the real DHT spends its time on: about half of
the contacts it is handed never answer. A visit that has not been answered after the stall
time (`StallTimer`: the8472's max(p10 + 100 ms, p90) of the round trips seen, at least
0.25 s) gives its slot to the next node and goes on waiting in the background, up to
`timeout`: `concurrency` bounds the visits not yet stalled.

A node is its (IP, port): other ports on one IP are other nodes (carrier-grade NAT), other
ids on one (IP, port) are aliases, counted, not visited. Politeness comes from the node's
outbound budget (`NodeConfig.query_rate` in all, `per_ip_query_rate` after
`per_ip_query_burst` to any one IP) and from here: one visit at a time to an IP, and
nothing that the8472's sanitizing rules reject (`nodes.visitable`).

The sweep's state is flat and linear in the nodes found: the crawl's `NodeTable`, a
`SortedKeys` of the ids found, the `Coverage` of replies, a heap of the nodes still to
visit; nothing keeps a list per referrer.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import inspect
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from mldht.bep42 import is_secure_id
from mldht.bep51 import InvalidSample, Sample
from mldht.clients import describe_version
from mldht.compact import NodeInfo, format_address
from mldht.errors import MldhtError, QueryNotSent, QueryTimeout, RemoteError
from mldht.ids import NodeId, random_id_in_bucket
from mldht.krpc import FindNode, SampleInfohashes

from .keyspace import KEYSPACE, Coverage, SortedKeys, key64
from .nodes import (
    ANSWERED, FOUND, NONE, SKIPPED, V6_MARK, VISITED, NodeTable, address_key, group_of,
    key_address,
    visitable,
)
from .policies import SamplePolicy, StallTimer

METHOD_UNKNOWN = 204
MAX_FILL_ROUNDS = 32
MAX_HOLE_ASKS = 3
HOLE_TRIES = 6
"""Nodes asked about one target of a hole at most: more than MAX_HOLE_ASKS, since the
replies of nodes poorly placed to know count for less (`shows_empty`)."""
CLOSE_GAPS = 1
FALLBACK_TRIAL = 64
FALLBACK_WORTH = 0.1
MAX_TABLE_DEPTH = 40
HOLE_GAPS = 1
SMALL_NETWORK = 2000
GONE = 16
"""Flag: answered this sweep, then failed to (a hole is not asked of it again)."""
STALLED_PER_SLOT = 16
"""Visits waiting past their stall time, at most, per slot of `concurrency`."""
ANSWERED_NEAR = 256
LAUNCH_BATCH = 32
LAUNCH_WAIT = 0.1
"""Seconds a launch waits for a batch's worth of free slots. Each launch commits its
intents: at 0.02 s, the commits of a crawl at the default rate cost a tenth of its CPU; at
0.1 s the crawler handled 11 % more datagrams per CPU-second (30,000 emulated nodes,
default rate; 5 % at 100,000 nodes, --rate 5000), with the same sweep time and nodes found
(tools/bench/crawl_emulated.py, side by side)."""
BALL_K = 8
BALL_REACH = 6
"""The ball a reply shows complete reaches out to its 6th closest node, not its 8th: a
bucket of the responder's that is full may hold only 8 of the nodes of its subtree, and
the farthest of the nodes listed are the likeliest to come from one (on 2,000 real mldht
nodes on loopback: 99.4 to 99.55 % found with the 8th, 99.8 to 99.85 % with the 6th, 100 %
with the 4th, for 0.04 more queries a node on the emulated DHT; tools/bench/crawl_loopback.py)."""
"""A reply shows its target's XOR ball complete only when it lists a full k nodes."""
"""How far (in ids) a hole looks for an answering node to ask about it."""


@dataclass
class Contact:
    """A node as the sweep's callbacks see it."""

    number: int
    key: int
    ip: str
    port: int
    node_id: bytes
    referrer: str | None = None
    found_at: float = 0.0

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.ip else "ipv4"

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


def _shared_bits(a: int, b: int) -> int:
    return 64 - (a ^ b).bit_length()


def target_id(position: int) -> NodeId:
    """The id at a 64-bit position of the keyspace (its other 96 bits zero)."""
    return NodeId((position % KEYSPACE).to_bytes(8, "big") + bytes(12))


def acceptable(address: tuple[str, int], referrer: tuple[str, int] | None) -> bool:
    """the8472's sanitizing: may a node that `referrer` listed be visited?"""
    try:
        key = address_key(*address)
        referrer_key = None if referrer is None else address_key(*referrer)
    except (OSError, ValueError):
        return False
    return visitable(key, referrer_key)


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
    sample_queries: int = 0
    """sample_infohashes sent after a find_node answer (BEP 51 probes)."""
    stalled: int = 0
    """Visits that gave their slot away at the stall time."""
    late: int = 0
    """Of those, answered after all."""
    recaptured: int = 0
    """Nodes that answered this sweep and the one before."""
    skipped: int = 0
    """Nodes not visited: their IP had had its `per_ip_visits` this sweep."""


class Sweep:
    """Visit every node reachable from `seeds`, each once; `on_visit(row)` gets the visit
    record (see store.VISIT_COLUMNS), `on_contact(contact)` each new node,
    `on_alias(...)` each other id seen on a known (IP, port)."""

    def __init__(self, node, sweep: int, *, table: NodeTable | None = None,
                 policy: SamplePolicy | None = None, concurrency: int = 64,
                 timeout: float = 5.0, stall: float | None = None, retries: int = 1,
                 sample: bool = True, want: tuple[bytes, ...] = (),
                 clock: Callable[[], float] = time.time, epoch: float | None = None,
                 on_visit=None, on_contact=None, on_alias=None, on_samples=None,
                 on_edges=None, on_launch=None, routing_tables: bool = False,
                 partition=None, per_ip_visits: int = 16) -> None:
        self.node = node
        self.sweep = sweep
        self.table = table if table is not None else NodeTable()
        self.table.new_sweep(sweep)
        self.policy = policy if policy is not None else SamplePolicy()
        self.concurrency = concurrency
        self.timeout = timeout
        self.stall = StallTimer(ceiling=timeout, fixed=stall)
        self.retries = retries
        self.sample = sample
        self.want = want
        self.clock = clock
        self.epoch = clock() if epoch is None else epoch
        """Where `NodeTable.sample_after` counts its seconds from."""
        self.on_visit = on_visit or (lambda row: None)
        self.on_contact = on_contact or (lambda contact: None)
        self.on_alias = on_alias or (lambda *args: None)
        self.on_samples = on_samples or (lambda *args: None)
        self.on_edges = on_edges
        self.on_launch = on_launch or (lambda addresses, at: None)
        self.routing_tables = routing_tables
        self.partition = partition
        """A `crawl.Partition` (the ids to visit, and their stretches of keyspace), or None."""
        self.stats = SweepStats()
        self.keys = SortedKeys()
        """The ids of every node found this sweep (64-bit), with their numbers."""
        self.coverage = Coverage()
        self.frontier: list[int] = []
        """Nodes to visit: (key64 << 32 | number), smallest first."""
        self.ready: deque[int] = deque()
        """Nodes whose IP was busy when their turn came, released one by one."""
        self.waiting: dict[int, deque[int]] = {}
        self.busy: set[int] = set()
        """IPs (their keys) a visit is asking now."""
        self.per_ip_visits = per_ip_visits
        self.crowded: dict[int, int] = {}
        """IPs found holding more than one node, with the visits made to them: past
        `per_ip_visits`, the rest of an IP's nodes (a Sybil cluster's thousands of ids, to
        be asked at most a few times a second) are recorded as skipped, not visited."""
        self.claimed: set[int] = set()
        """Holes a visit in flight is asking about (their start)."""
        self._claims: dict[int, int | None] = {}
        """Node number -> the hole its visit claimed, until it ends or stalls."""
        self.asked_holes: dict[tuple[int, int], set[tuple[int, int]]] = {}
        """Each hole asked about, with who was asked about which target in it."""
        self.hole_evidence: dict[tuple[int, int], float] = {}
        """Each hole, with how far the replies that listed nobody in it show it empty
        (`shows_empty`): one from a node whose bucket there is a sparse sample counts little."""
        self.fill_queue: deque[tuple[int, int, tuple[int, int]]] = deque()
        """Questions about holes waiting for a slot: (node, target, hole)."""
        self.fallback_tries = 0
        self.fallback_successes = 0
        self.own = set()
        for address in getattr(node, "addresses", []):
            try:
                self.own.add(address_key(*address))
            except (OSError, ValueError):
                pass
        self.fill_rounds = 0
        self._last_fill: tuple | None = None
        self.position = 0
        """The id (64 bits) of the last node taken from the frontier: how far the walk has
        come through the keyspace."""
        self.active = 0
        self._stalled: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        if partition is not None:
            # Outside the partition is other processes' work: nothing to find there.
            position = 0
            for low, high in self._ranges():
                if low > position:
                    self.coverage.cover(position, low - 1)
                position = high + 1
            if position < KEYSPACE:
                self.coverage.cover(position, KEYSPACE - 1)

    def _ranges(self) -> list[tuple[int, int]]:
        return [(low >> 96, high >> 96) for low, high in self.partition.ranges()]

    # --- the frontier -----------------------------------------------------------------------

    def learn(self, info: NodeInfo, referrer: int | None) -> None:
        """A node listed by node number `referrer` (None: the crawler's own knowledge, its
        routing table or its lookups)."""
        try:
            key = address_key(info.ip, info.port)
        except (OSError, ValueError):
            self.stats.rejected += 1
            return
        self._learn(key, bytes(info.id), referrer,
                    None if referrer is None else self.table.key(referrer))

    def learn_reply(self, response, referrer: int) -> list[int]:
        """Every node a reply lists (read from its compact form, without making objects of
        the nodes already known); returns their positions (64-bit), for the coverage."""
        positions: list[int] = []
        referrer_key = self.table.key(referrer)
        learn = self._learn
        for nodes in (response.nodes, response.nodes6):
            if not nodes:
                continue
            raw = getattr(nodes, "raw", None)
            if raw is None:  # a list of NodeInfo (not from the wire)
                for info in nodes:
                    positions.append(key64(info.id))
                    self.learn(info, referrer)
                continue
            ipv6 = nodes.ipv6
            size = 38 if ipv6 else 26
            mark = V6_MARK if ipv6 else 0
            for start in range(0, len(raw), size):
                node_id = raw[start:start + 20]
                positions.append(int.from_bytes(node_id[:8], "big"))
                learn(mark | int.from_bytes(raw[start + 20:start + size], "big"), node_id,
                      referrer, referrer_key)
        return positions

    def _learn(self, key: int, node_id: bytes, referrer: int | None,
               referrer_key: int | None) -> None:
        if key in self.own:
            return  # the crawler itself, as another node lists it
        if referrer_key is not None and not visitable(key, referrer_key):
            self.stats.rejected += 1
            return
        if self.partition is not None and not self.partition(node_id):
            return
        table = self.table
        number = table.index.get(key)
        if number is None:
            number = table.add(key, node_id)
        elif table.flags[number] & FOUND:
            if referrer_key is not None:
                table.groups[number] |= 1 << group_of(referrer_key >> 16)
            if table.ids[number * 20:number * 20 + 20] != node_id:
                self.stats.aliases += 1
                ip, port = key_address(key)
                self.on_alias(ip, port, bytes(node_id), self._referrer_text(referrer))
            return
        elif table.ids[number * 20:number * 20 + 20] != node_id:
            table.set_id(number, node_id)  # a new id since an earlier sweep
        table.flags[number] |= FOUND
        table.referrer[number] = NONE if referrer is None else referrer
        if referrer_key is not None:
            table.groups[number] |= 1 << group_of(referrer_key >> 16)
        position = int.from_bytes(node_id[:8], "big")
        self.keys.add(position, number)
        ip, port = key_address(key)
        self.stats.found["ipv6" if key & V6_MARK else "ipv4"] += 1
        self.on_contact(Contact(number, position, ip, port, bytes(node_id),
                                self._referrer_text(referrer), self.clock()))
        heapq.heappush(self.frontier, position << 32 | number)
        self._wake.set()

    def _referrer_text(self, referrer: int | None) -> str | None:
        if referrer is None or referrer == NONE:
            return None
        return format_address(self.table.address(referrer))

    def restore(self, contacts: list[tuple], visited: set[tuple[str, int]],
                visited_contacts: list[tuple] = ()) -> None:
        """Carry on a sweep a crashed crawl left (`store.frontier`): visited nodes are not
        visited again; their ids (`store.visited_contacts`) mark where the walk has been,
        so that the stretches between them are asked about, by those that answered (their
        replies may have been lost in the crash, and with them the only way to some
        nodes)."""
        table = self.table
        for ip, port, _family, node_id, _found_at, _referrer, *answered in visited_contacts:
            node_id = bytes(node_id)
            key = address_key(ip, port)
            number = table.index.get(key)
            if number is None:
                number = table.add(key, node_id)
            if table.flags[number] & FOUND:
                continue
            table.flags[number] |= FOUND | VISITED
            self.keys.add(key64(node_id), number)
            family = "ipv6" if ":" in ip else "ipv4"
            # Counted as this sweep's, as if the crash had not been.
            self.stats.found[family] += 1
            self.stats.visited += 1
            if answered and answered[0]:
                table.flags[number] |= ANSWERED
                self.stats.answered[family] += 1
        for ip, port, _family, node_id, _found_at, _referrer in contacts:
            if (ip, port) in visited:
                continue
            self.learn(NodeInfo(NodeId(bytes(node_id)), ip, port), None)

    def next_visit(self) -> int | None:
        """The node (its number in `table`) to visit next, or None: one released by a busy IP
        first, then the frontier in id order (a node of a busy IP waits; one past its IP's
        `per_ip_visits` is recorded as skipped). `run` calls it; benchmarks of the
        bookkeeping alone (tools/bench/sweep_state.py) drive it directly."""
        table = self.table
        flags = table.flags
        while self.ready:
            number = self.ready.popleft()
            if not flags[number] & VISITED:
                return number
        crowded = self.crowded
        while self.frontier:
            item = heapq.heappop(self.frontier)
            number = item & 0xFFFFFFFF
            if flags[number] & VISITED:
                continue
            ip = table.ip_key(number)
            if ip in crowded and crowded[ip] >= self.per_ip_visits:
                self._skip(number)
                continue
            if ip in self.busy:
                crowded.setdefault(ip, 1)
                self.waiting.setdefault(ip, deque()).append(number)
                continue
            if ip in crowded:
                crowded[ip] += 1
            self.position = item >> 32
            return number
        return None

    def _skip(self, number: int) -> None:
        """A node on an IP that has had its visits this sweep: recorded, not asked."""
        self.table.flags[number] |= VISITED | SKIPPED
        self.stats.skipped += 1
        contact = self.contact(number)
        self.on_visit({"sweep": self.sweep, "ip": contact.ip, "port": contact.port,
                       "family": contact.family, "node_id": contact.node_id,
                       "referrer": contact.referrer, "queries": 0, "outcome": "skipped",
                       "at": self.clock()})

    def _release(self, ip: int) -> None:
        self.busy.discard(ip)
        queue = self.waiting.get(ip)
        if not queue:
            return
        if self.crowded.get(ip, 0) >= self.per_ip_visits:
            for number in queue:
                self._skip(number)
            queue.clear()
        else:
            self.crowded[ip] = self.crowded.get(ip, 1) + 1
            self.ready.append(queue.popleft())
        if not queue:
            del self.waiting[ip]

    @property
    def in_flight(self) -> int:
        """Visits waiting for an answer (stalled ones included)."""
        return self.active + len(self._stalled)

    @property
    def queued(self) -> int:
        """Nodes waiting for their visit."""
        return len(self.frontier) + len(self.ready) + sum(map(len, self.waiting.values()))

    @property
    def covered(self) -> float:
        """Share of the keyspace (of its partition's stretches) the walk has passed, for
        the estimate of the total."""
        if self.partition is None:
            return self.position / float(KEYSPACE)
        ranges = self._ranges()
        passed = sum(max(0, min(self.position, high + 1) - low) for low, high in ranges)
        return passed / float(sum(high + 1 - low for low, high in ranges))

    # --- visiting -------------------------------------------------------------------------

    async def run(self) -> SweepStats:
        """Until nothing is left to visit."""
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task] = set()
        most = self.concurrency * STALLED_PER_SLOT
        table = self.table
        batch = max(1, min(LAUNCH_BATCH, self.concurrency // 8))
        held_since: float | None = None
        try:
            while True:
                # Launch in batches (one commit of their intents each), not one by one as
                # slots free up: unless a batch's worth of slots is free, wait a moment.
                free = self.concurrency - self.active
                if free < batch and self.active and self.frontier:
                    now = loop.time()
                    if held_since is None:
                        held_since = now
                        loop.call_later(LAUNCH_WAIT, self._wake.set)
                    if now - held_since < LAUNCH_WAIT:
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                held_since = None
                launched = []
                while self.active + len(launched) < self.concurrency and \
                        len(running) + len(launched) < most:
                    number = self.next_visit()
                    if number is None:
                        break
                    self.busy.add(table.ip_key(number))
                    table.flags[number] |= VISITED
                    launched.append(number)
                if launched:
                    # Durable before any query leaves (tasks run after this returns).
                    recorded = self.on_launch([table.address(n) for n in launched],
                                              self.clock())
                    if inspect.isawaitable(recorded):
                        await recorded
                for number in launched:
                    self._launch(self._visit(number), running, loop, number)
                # Questions about holes, as slots free up (a round can ask about tens of
                # thousands of holes: never all at once).
                while self.fill_queue and self.active < self.concurrency and \
                        len(running) < most:
                    number, target, hole = self.fill_queue.popleft()
                    ip = table.ip_key(number)
                    if ip in self.busy:
                        self.asked_holes.get(hole, set()).discard((number, target))
                        self._last_fill = None  # one query at a time to an IP: next round
                        continue
                    self.busy.add(ip)
                    self._launch(self._ask_about(number, target, hole), running, loop)
                if self.active == 0 and not self.frontier and not self.ready and \
                        not self.fill_queue:
                    # The walk has nobody left to ask: open the holes it left, a round at a
                    # time (a round begins once the last one's answers are in or stalled).
                    if self._open_holes():
                        continue  # launch the round's first questions now
                    if not running:
                        return self.stats
                self._wake.clear()
                await self._wake.wait()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _launch(self, coroutine, running: set, loop, number: int | None = None) -> None:
        """Start a visit (of node `number`) or a question about a hole: it holds a slot of
        `concurrency` until it ends or its stall time passes (a visit's hole is then free
        for another to ask about: the node is most likely silent)."""
        task = asyncio.ensure_future(coroutine)
        self.active += 1
        timer = loop.call_later(self.stall.value, self._stalling, task, number)
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(lambda done, timer=timer: self._ended(done, timer))

    def _stalling(self, task: asyncio.Task, number: int | None) -> None:
        if number is not None:
            self.claimed.discard(self._claims.pop(number, None))
        if not task.done():
            self._stalled.add(task)
            self.active -= 1
            self.stats.stalled += 1
            self._wake.set()

    def _ended(self, task: asyncio.Task, timer) -> None:
        timer.cancel()
        if task in self._stalled:
            self._stalled.discard(task)
        else:
            self.active -= 1
        self._wake.set()

    def frontier_target(self, key: int) -> tuple[int, int | None]:
        """Where to ask the node at `key` about: into the first hole the walk has after it.

        A hole is a stretch after a covered one (where a reply listed every node) up to the
        next covered stretch or known node. The target is its middle: the reply lists the
        nodes around it, from the responder's bucket for that part of the keyspace, so
        that the walk crosses the boundaries of id subtrees, which XOR-closest sets never
        do by themselves. A hole another visit is asking about is left to it: the next
        one is taken. Returns the target (64 bits) and the hole claimed (to release)."""
        before = self._hole_before(key)
        if before is not None:
            start, end, left = before
            # Nobody before it will ask (it has been asked already, or there is nobody):
            # the node asks back, or the hole waits for the end of the sweep.
            if start not in self.claimed and (
                    left is None or self.table.flags[left] & VISITED):
                self.claimed.add(start)
                return (start + end) // 2 or 1, start
        position = key
        coverage = self.coverage
        for _ in range(16):  # bounded: past that, the node's own neighbourhood
            end = coverage.end_at(position)
            hole_start = position if end is None else end
            if hole_start >= KEYSPACE:
                break
            hole_end = self._hole_end(hole_start)
            if hole_start in self.claimed:
                if hole_end is None:
                    break
                position = hole_end
                continue
            self.claimed.add(hole_start)
            target = (hole_start + (hole_end if hole_end is not None else KEYSPACE - 1)) // 2
            if target == hole_start:
                target = hole_start ^ 1
            return target, hole_start
        return (key + 1) % KEYSPACE, None

    def _hole_before(self, key: int) -> tuple[int, int, int | None] | None:
        """The uncovered stretch that ends right before `key` (start, end, and the node
        it starts at, if it starts at one), or None."""
        if key <= 0 or self.coverage.covered(key - 1):
            return None
        start = self.coverage.end_before(key - 1)
        left = None
        known = self.keys.before(key)
        if known is not None and known[0] >= start:
            start, left = known[0], known[1]
        return start, key - 1, left

    def _hole_end(self, start: int) -> int | None:
        candidates = []
        following = self.coverage.next_start(start)
        if following is not None:
            candidates.append(following)
        known = self.keys.after(start)
        if known is not None:
            candidates.append(known[0])
        return min(candidates) if candidates else None

    def cover(self, low: int, high: int) -> None:
        """Mark [low, high] as known completely (the nodes of a reply around its target)."""
        self.coverage.cover(low, high)

    def holes(self) -> list[tuple[int, int]]:
        """The stretches of keyspace (64-bit) no reply covered, in order."""
        return self.coverage.holes()

    def _known_over_keyspace(self) -> int:
        """The nodes known, as many as the whole keyspace would hold at the same density
        (a partition's walk sees only its share): the gap between ids it implies."""
        if self.partition is None:
            return len(self.keys)
        return round(len(self.keys) / self.partition.share)

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
            self.learn_reply(response, contact.number)
            nodes = list(response.nodes or []) + list(response.nodes6 or [])
            if self.on_edges is not None:
                self.on_edges(contact.ip, nodes)
            own = int.from_bytes(contact.node_id, "big")
            in_bucket = [info for info in nodes
                         if 160 - (info.key ^ own).bit_length() == depth]
            if not in_bucket and depth >= 3:
                break  # past the deepest bucket it has
        return sent

    def _fallback_worthwhile(self) -> bool:
        """Whether a silent node is worth a find_node after its sample_infohashes timed out:
        always at first, then while such second tries find someone often enough (in a
        network of BEP 51 nodes, silence means the node is gone: no second query)."""
        tries = self.fallback_tries
        return tries < FALLBACK_TRIAL or self.fallback_successes >= FALLBACK_WORTH * tries

    def _open_holes(self) -> int:
        """When the walk has nobody left to visit but stretches of keyspace stay uncovered
        (no node there was ever listed: the walk had no way in), ask about each one the
        node that answered whose id shares the most bits with its middle (and, in a small
        network, with its ends): its bucket for that stretch lists the nodes there. What
        a round leaves uncovered is asked again the next round, of another node, up to
        `HOLE_TRIES` nodes a target, until the empty replies add up to `MAX_HOLE_ASKS` a
        target (`shows_empty`). These are the only second queries a node gets in a sweep
        (a few per hundred nodes)."""
        if self.fill_rounds >= MAX_FILL_ROUNDS or not any(self.stats.answered.values()):
            return 0
        changes = (len(self.coverage), len(self.keys), sum(self.stats.answered.values()))
        if changes == self._last_fill:
            return 0  # nothing new since a round that found nothing to ask
        self._last_fill = changes
        self.fill_rounds += 1
        asked = 0
        # In a large network, a stretch shorter than the average gap between ids most
        # likely holds nobody; in a small one every stretch is worth its one query.
        known = self._known_over_keyspace()
        smallest = 0 if known < SMALL_NETWORK else HOLE_GAPS * KEYSPACE // max(1, known)
        for low, high in self.holes():
            if high - low < smallest:
                continue  # too short to hold anyone
            if low in self.claimed:
                continue  # a visit is asking about it now
            # XOR-closest sets do not follow id order: a stretch across a subtree boundary
            # needs a target on each side (the middle of each of its largest subtrees); in
            # a small network its two ends too.
            targets = hole_targets(low, high, smallest)
            if known < SMALL_NETWORK:
                targets = list(dict.fromkeys(targets + [low, high]))
            tried = self.asked_holes.setdefault((low, high), set())
            if len(tried) >= HOLE_TRIES * len(targets):
                continue  # asked enough, and unchanged since
            for target in targets:
                # The answering node sharing most bits with the target first (its bucket
                # there lists the nodes there), another one next round.
                nearest = self.answering_near(target, HOLE_TRIES)
                responder = next((candidate for candidate in nearest
                                  if (candidate, target) not in tried), None)
                if responder is None:
                    continue
                tried.add((responder, target))
                self.fill_queue.append((responder, target, (low, high)))
                asked += 1
        if not asked:
            self.fill_rounds -= 1  # nothing asked: not a round
        return asked

    def _answering(self, number: int) -> bool:
        return self.table.flags[number] & (ANSWERED | GONE) == ANSWERED

    def answering_near(self, key: int, count: int = MAX_HOLE_ASKS + 1) -> list[int]:
        """Up to `count` answering nodes whose ids share the most leading bits with `key`
        (the nearest in id order first among equals), from within `ANSWERED_NEAR` ids on
        each side. Not simply the nearest in id order: across a subtree boundary the
        nearest id may share 5 bits with `key` where one a little farther shares 11, and
        only the latter's bucket there lists the nodes there rather than k of thousands."""
        best: list[tuple[int, int, int]] = []  # (-shared bits, id gap, number), sorted
        keys = self.keys
        for item, step in ((keys.before(key + 1), keys.before), (keys.after(key), keys.after)):
            for _ in range(ANSWERED_NEAR):
                if item is None:
                    break
                position, number = item
                rank = (-_shared_bits(position, key), abs(position - key), number)
                # Moving away from `key` on one side, the bits shared never grow and the gap
                # only grows: nothing farther on this side can make the best `count`.
                if len(best) >= count and rank >= best[-1]:
                    break
                if self._answering(number):
                    bisect.insort(best, rank)
                    del best[count:]
                item = step(position)
        return [number for _, _, number in best]

    def contact(self, number: int) -> Contact:
        table = self.table
        ip, port = table.address(number)
        node_id = table.node_id(number)
        return Contact(number, key64(node_id), ip, port, node_id,
                       self._referrer_text(table.referrer[number]))

    async def _ask_about(self, number: int, middle: int, hole: tuple[int, int]) -> None:
        """Ask an answering node about a hole (its IP was made busy for this)."""
        try:
            await self._ask_about_hole(number, middle, hole)
        finally:
            self._release(self.table.ip_key(number))

    async def _ask_about_hole(self, number: int, middle: int, hole: tuple[int, int]) -> None:
        self.stats.queries += 1
        self.stats.fill_queries += 1
        contact = self.contact(number)
        try:
            response = await self.node.query(contact.address,
                                             self._query(contact, False, target_id(middle)),
                                             timeout=self.timeout)
        except MldhtError:
            # Gone since it answered (churn): ask someone else about the hole next round,
            # not it again.
            self.asked_holes.get(hole, set()).discard((number, middle))
            self.table.flags[number] |= GONE
            return
        listed = self.learn_reply(response, number)
        low, high = hole
        if not any(low <= key <= high for key in listed):
            # Nobody there, says the node best placed to know: believed for a short stretch
            # at once, for a long one (its bucket there holds 8 nodes of a wider part, which
            # may all lie outside) only once the replies that knew nobody there add up to
            # `MAX_HOLE_ASKS` for each of its targets, each counting as far as it can show
            # (`shows_empty`): three nodes just across a subtree boundary, whose buckets there
            # hold 8 of hundreds, once hid a stretch of a dozen nodes.
            known = max(1, self._known_over_keyspace())
            evidence = self.hole_evidence.get(hole, 0.0) + \
                shows_empty(contact.key, middle, low, high)
            self.hole_evidence[hole] = evidence
            targets = {target for _, target in self.asked_holes.get(hole, ())}
            if (high - low) * known <= CLOSE_GAPS * KEYSPACE or \
                    evidence >= MAX_HOLE_ASKS * max(1, len(targets)):
                self.cover(low, high)
        self._cover_reply(contact, response, listed, middle)

    def _query(self, contact: Contact, sampling: bool, target: NodeId):
        own = self.node.node_ids.get(contact.family) or self.node.node_id
        if sampling:
            return SampleInfohashes(transaction_id=b"", sender_id=own, target=target,
                                    want=self.want)
        return FindNode(transaction_id=b"", sender_id=own, target=target, want=self.want)

    def _may_sample(self, number: int, now: float) -> bool:
        return self.sample and self.table.sample_after[number] <= now - self.epoch

    async def _ask(self, contact: Contact, sampling: bool, target: NodeId,
                   timeout: float | None = None):
        self.stats.queries += 1
        return await self.node.query(contact.address, self._query(contact, sampling, target),
                                     timeout=timeout or self.timeout)

    async def _visit(self, number: int) -> None:
        stats = self.stats
        contact = self.contact(number)
        now = self.clock()
        may_sample = self._may_sample(number, now)
        sampling = may_sample and self.policy.first
        row = {"sweep": self.sweep, "ip": contact.ip, "port": contact.port,
               "family": contact.family, "node_id": contact.node_id,
               "referrer": contact.referrer, "queries": 0, "outcome": "timeout"}
        response = None
        attempts = 0
        falling_back = False
        position, claim = self.frontier_target(contact.key)
        self._claims[number] = claim
        target = target_id(position)
        started = time.monotonic()
        try:
            while True:
                attempts += 1
                row["queries"] += 1
                try:
                    response = await self._ask(contact, sampling, target)
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
            stats.visited += 1
            row["at"] = self.clock()
            if response is not None and falling_back:
                self.fallback_successes += 1
                row["bep51"] = 0  # it answers find_node, and ignored sample_infohashes
            if response is not None:
                if time.monotonic() - started > self.stall.value:
                    stats.late += 1
                self.stall.observe(response.rtt)
                self._answered(contact, response, sampling, row, position)
                if not sampling and may_sample and \
                        self.policy.worth_asking(response.version):
                    await self._probe(contact, response.version, row, target)
                self.policy.answered_visit(row.get("bep51") == 1)
                if self.routing_tables:
                    row["queries"] += await self._dump_table(contact)
            elif row["outcome"] == "error":
                stats.errors += 1
            else:
                stats.timeouts += 1
        finally:
            if self._claims.pop(number, None) is not None:
                self.claimed.discard(claim)
            self._release(self.table.ip_key(number))
        self.on_visit(row)

    async def _probe(self, contact: Contact, version: bytes | None, row: dict,
                     target: NodeId) -> None:
        """BEP 51 after a find_node answer: its samples, and whether it knows the query."""
        self.stats.sample_queries += 1
        row["queries"] += 1
        try:
            # It has just answered: a silence now is a node that drops the query (a long
            # wait would only hold its IP), not one that has gone.
            response = await self._ask(contact, True, target,
                                       min(self.timeout, max(1.0, 3 * self.stall.value)))
        except RemoteError:
            self.policy.record(version, False)
            row["bep51"] = 0
            return
        except MldhtError:
            self.policy.record(version, False)
            row["bep51"] = 0
            return
        self._sampled(contact, response, row)
        self.policy.record(version, row.get("bep51") == 1)
        self.learn_reply(response, contact.number)

    def _sampled(self, contact: Contact, response, row: dict) -> None:
        try:
            sample = Sample.from_response(response)
        except InvalidSample:
            row["bep51"] = 0  # nodes only: it took the query for a find_node
            return
        self.stats.bep51 += 1
        self.stats.samples += len(sample.samples)
        row.update(bep51=1, num=sample.num, interval=sample.interval,
                   samples=len(sample.samples))
        at = row.get("at") or self.clock()
        self.table.sample_after[contact.number] = \
            min(0xFFFFFFFF, max(0, int(at - self.epoch + sample.interval)))
        if sample.samples:
            self.on_samples(contact.ip, at, [bytes(h) for h in sample.samples])

    def _answered(self, contact: Contact, response, sampling: bool, row: dict,
                  target: int) -> None:
        stats = self.stats
        table = self.table
        number = contact.number
        stats.answered[contact.family] += 1
        table.flags[number] |= ANSWERED
        if table.answered_sweep[number] == self.sweep - 1 and self.sweep > 1:
            stats.recaptured += 1
        table.answered_sweep[number] = min(self.sweep, 0xFFFF)
        version = response.version
        client = describe_version(version)
        row.update(outcome="answered", answered_id=bytes(response.sender_id),
                   v=version, client=client.name or client.code if client else None,
                   client_version=client.version if client else None,
                   bep42=int(is_secure_id(bytes(response.sender_id), contact.ip)),
                   rtt=None if response.rtt is None else round(response.rtt, 4))
        if sampling:
            self._sampled(contact, response, row)
        listed = self.learn_reply(response, number)
        row["neighbours"] = len(listed)
        self._cover_reply(contact, response, listed, target)

    def _cover_reply(self, contact: Contact, response, listed: list[int],
                     target: int) -> None:
        """Mark what a reply showed complete: the XOR ball around its target out to the
        `BALL_REACH`th closest of the k nodes it listed (any node closer to the target would
        have been listed instead), when the responder lies inside that ball, where its own
        table is full (a node knows its neighbourhood completely; for a far target its
        bucket holds k of the nodes there, not all). In id order the ball is a few aligned
        blocks, the largest holding half of it: the three largest are covered. (A stretch
        from the first listed node to the last is not: XOR-closest sets skip nodes across
        subtree boundaries.)"""
        if len(listed) >= BALL_K:
            reach = sorted(key ^ target for key in listed)[BALL_REACH - 1]
            if contact.key ^ target <= reach:
                size = reach + 1  # the ball is target ^ [0, size)
                for _ in range(3):
                    if not size:
                        break
                    bit = size.bit_length() - 1
                    block = 1 << bit
                    start = (((size >> (bit + 1)) << (bit + 1)) ^ target) & ~(block - 1)
                    self.cover(start, start + block - 1)
                    size ^= block
        if self.on_edges is not None:
            self.on_edges(contact.ip, list(response.nodes or []) + list(response.nodes6 or []))


def shows_empty(responder: int, target: int, low: int, high: int) -> float:
    """How far a reply of node `responder` (64-bit id) about `target` that lists nobody in
    [low, high] shows that stretch empty (1: as far as one reply can): its bucket there
    holds k nodes of the subtree sharing one bit more with the target than its id does,
    spread over it; a stretch that is a small part of a large subtree may hold nodes none
    of the k falls in."""
    subtree = 1 << max(0, 63 - _shared_bits(responder, target))
    return min(1.0, BALL_K * (high - low + 1) / subtree)


def hole_targets(low: int, high: int, smallest: int = 0, most: int = 4) -> list[int]:
    """Where to ask about the stretch [low, high]: the middles of the largest aligned
    blocks (subtrees) it is made of, at most `most`, those smaller than `smallest` left
    out (unless nothing else is left). A reply lists the nodes XOR-closest to its target,
    all inside the target's subtree while it has enough: a stretch across a subtree
    boundary is seen from both sides only with a target on each."""
    blocks: list[tuple[int, int]] = []
    position = low
    while position <= high:
        size = position & -position if position else KEYSPACE
        while position + size - 1 > high:
            size >>= 1
        blocks.append((size, position))
        position += size
    kept = [block for block in blocks if block[0] >= smallest] or [max(blocks)]
    largest = sorted(kept, reverse=True)[:most]
    return [start + size // 2 for size, start in sorted(largest, key=lambda b: b[1])]


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


__all__ = ["Contact", "Sweep", "SweepStats", "acceptable", "hole_targets", "seed_contacts",
           "shows_empty", "target_id"]
