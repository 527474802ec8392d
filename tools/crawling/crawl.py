"""A crawl: sweeps of the keyspace from one joined node, written to a `CrawlStore`, with
the size estimates of each sweep. The command line (tools/crawler.py) and the simulator
benchmark (tools/bench/crawl.py) both run this code."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from mldht.ids import random_id_with_prefix

from .estimates import (
    Estimate, chapman_estimate, count_estimate, engine_estimate, grouped_recapture,
)
from .nodes import ANSWERED, NodeTable
from .policies import SamplePolicy
from .traversal import Sweep, seed_contacts


@dataclass
class CrawlOptions:
    sweeps: int | None = 1
    duration: float | None = None
    every: float | None = None
    """Start a sweep every this many seconds (a sweep that takes longer is followed at
    once); None: back to back."""
    concurrency: int = 64
    """Visits in flight that have not stalled (see traversal.StallTimer)."""
    timeout: float = 5.0
    stall: float | None = None
    """Seconds before a visit gives its slot away (None: adaptive)."""
    retries: int = 0
    """Second tries after a timeout (0: a silent node is tried again next sweep; about half
    the contacts the real DHT hands out never answer, see the8472's notes)."""
    samples: bool = False
    """Keep the sampled infohashes (BEP 51 support is recorded either way)."""
    sample: bool = True
    """Ask sample_infohashes first (else find_node only)."""
    estimate_lookups: int = 16
    """Random lookups for the lookup-distance estimate, at least, per sweep."""
    nodes_per_estimate_lookup: int = 400
    """One more lookup per this many nodes answering, up to `MAX_ESTIMATE_LOOKUPS`: the
    estimate's standard error falls as 1/sqrt(lookups) (about 7 % at 30 lookups), and at
    400 nodes a lookup its queries cost under 0.07 per node."""
    partition: tuple[int, int] | None = None
    routing_tables: bool = False
    per_ip_visits: int = 16
    """Nodes visited at most on one IP per sweep (the rest are recorded as skipped)."""


MAX_ESTIMATE_LOOKUPS = 240
"""The engine's estimator keeps the last 256 lookups."""
ESTIMATE_LOOKUPS_AT_ONCE = 32
"""On the real DHT a lookup takes seconds (half its contacts never answer): enough at once
that the lookups a large sweep calls for end with it, not minutes after."""


@dataclass
class CrawlResult:
    sweeps_done: int = 0
    estimates: list[list[Estimate]] = field(default_factory=list)
    stats: list = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    """Nodes that answered, per sweep."""
    stopped: bool = False


@dataclass(frozen=True)
class Partition:
    """`--partition I/N`: the ids whose first `bits` bits, read as a number, are I modulo N
    (N a power of two: contiguous stretches of equal size). Called with an id, says
    whether it belongs."""
    index: int
    count: int

    @property
    def bits(self) -> int:
        return max(1, (self.count - 1).bit_length())

    def __call__(self, node_id: bytes) -> bool:
        return (int.from_bytes(node_id[:4], "big") >> (32 - self.bits)) % self.count == self.index

    def ranges(self) -> list[tuple[int, int]]:
        """The stretches of the 160-bit keyspace in the part, as (low, high) integers."""
        shift = 160 - self.bits
        return [(prefix << shift, ((prefix + 1) << shift) - 1)
                for prefix in range(1 << self.bits) if prefix % self.count == self.index]

    @property
    def share(self) -> float:
        """The part's share of the keyspace."""
        return len(self.ranges()) / (1 << self.bits)


def partition_filter(partition: tuple[int, int] | None) -> Partition | None:
    """`--partition I/N` as the `Partition` a sweep keeps to (None: the whole keyspace)."""
    return None if partition is None else Partition(*partition)


class Crawler:
    """Runs the sweeps of one crawl on `node` (joined), writing to `store` under `crawl_id`.
    `progress()` gives the live numbers (for the progress bar and the --http page)."""

    def __init__(self, node, store, crawl_id: int, options: CrawlOptions, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 first_sweep: int = 1, resume: tuple[list, set] | None = None,
                 sample_after: dict[tuple[str, int], float] | None = None) -> None:
        self.node = node
        self.store = store
        self.crawl_id = crawl_id
        self.options = options
        self.clock = clock
        self.rng = rng or random.Random()
        self.first_sweep = first_sweep
        self.resume = resume
        self.sample_after = sample_after or {}
        self.result = CrawlResult()
        self.part = None if options.partition is None else options.partition[0]
        self.sweep: Sweep | None = None
        self.table = NodeTable()
        """Every node of the crawl, across its sweeps."""
        self.policy = SamplePolicy()
        self.epoch = clock()
        self.started = node.clock()
        self.sweep_started = self.started
        self.finished = False
        self._queries_at_start = node.stats.queries_sent
        self._datagrams_at_start = (node.stats.datagrams_sent, node.stats.datagrams_received)

    def progress(self) -> dict:
        sweep = self.sweep
        stats = sweep.stats if sweep else None
        elapsed = self.node.clock() - self.started
        found = sum(stats.found.values()) if stats else 0
        visited = stats.visited if stats else 0
        covered = sweep.covered if sweep else 0.0
        queries = self.node.stats.queries_sent - self._queries_at_start
        walked = self.node.clock() - self.sweep_started
        return {
            "sweep": sweep.sweep if sweep else 0,
            "part": None if self.options.partition is None else
            "{}/{}".format(*self.options.partition),
            "found": found, "visited": visited,
            "answering": sum(stats.answered.values()) if stats else 0,
            "queue": sweep.queued if sweep else 0,
            "in_flight": sweep.in_flight if sweep else 0,
            "queries_per_second": round(queries / max(elapsed, 1e-9), 1),
            "elapsed": round(elapsed, 1),
            "keyspace_covered": round(covered, 4),
            # The walk goes through the keyspace in order: what it found behind it, scaled.
            "estimated_total": round(visited / covered) if covered > 0.05 and visited >= 100
            else None,
            # ...and at the pace it went so far, the rest of it (holes filled at the end
            # add a few per cent).
            "eta_seconds": round(walked * (1 - covered) / covered)
            if 0.01 < covered < 1 and visited >= 100 and not self.finished else None,
            "samples": stats.samples if stats else 0,
            # What the sweep holds, for a look at its memory (store: rows not yet written).
            "held": {"nodes": len(self.table), "frontier": len(sweep.frontier),
                     "waiting": sweep.queued - len(sweep.frontier),
                     "stretches": len(sweep.coverage), "holes_asked": len(sweep.asked_holes),
                     "stalled": sweep.in_flight - sweep.active,
                     "store_queue": self.store.queued_rows} if sweep else None,
            "rate_limited": self.node.stats.rate_limited,
            "datagrams_sent": self.node.stats.datagrams_sent - self._datagrams_at_start[0],
            "datagrams_received": (self.node.stats.datagrams_received
                                   - self._datagrams_at_start[1]),
        }

    def _estimate_lookups_wanted(self, sweep: Sweep) -> int:
        answered = sum(sweep.stats.answered.values())
        # The N parts of a partitioned crawl pool their lookups (estimates.combine_parts).
        parts = 1 if self.options.partition is None else self.options.partition[1]
        least = -(-self.options.estimate_lookups // parts)
        return min(MAX_ESTIMATE_LOOKUPS, max(least,
                   answered // max(1, self.options.nodes_per_estimate_lookup)))

    async def _estimate_lookups(self, sweep: Sweep, sweep_done: asyncio.Future) -> None:
        """Random find_node lookups, the food of the engine's lookup-distance estimator,
        made while the sweep goes on, as many as its size calls for (a few at a time).
        The nodes that answered them go to the sweep too: a node the walk's replies never
        list (a newcomer few tables hold yet) is still visited when a lookup met it."""
        if self.options.estimate_lookups <= 0:
            return
        started = 0
        running: set[asyncio.Task] = set()

        async def one(index: int) -> None:
            # Evenly spread targets (first 4 bits), the rest random.
            target = random_id_with_prefix(index % 16, 4, self.rng)
            try:
                summary = await self.node.find_node_lookup(target, timeout=30.0)
            except Exception:  # noqa: BLE001 - one lookup less for the estimate
                return
            if not sweep_done.done():
                for info in summary.closest:
                    sweep.learn(info, None)
        try:
            while True:
                finished = sweep_done.done()
                wanted = self._estimate_lookups_wanted(sweep)
                while started < wanted and len(running) < ESTIMATE_LOOKUPS_AT_ONCE:
                    task = asyncio.ensure_future(one(started))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    started += 1
                if finished and started >= wanted and not running:
                    return
                await asyncio.wait([sweep_done, *running], timeout=1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in running:
                task.cancel()

    async def _partition_seeds(self) -> list:
        """A partitioned crawl's way in: the nodes a lookup finds in the middle of each of
        its stretches (the crawler's own table may hold none there)."""
        partition = partition_filter(self.options.partition)
        if partition is None:
            return []
        found = []
        for low, high in partition.ranges():
            middle = ((low + high) // 2).to_bytes(20, "big")
            try:
                found += await self.node.find_node(middle, timeout=30.0)
            except Exception:  # noqa: BLE001 - the routing table's nodes are still there
                pass
        return found

    def _sweep_for(self, number: int) -> Sweep:
        store, crawl = self.store, self.crawl_id
        options = self.options
        want = tuple(b"n4" if name == "ipv4" else b"n6" for name in self.node.families) \
            if len(self.node.families) > 1 else ()
        def store_edges(ip, nodes):
            for info in nodes:
                store.add_edge(crawl, number, ip, info.ip, info.port, bytes(info.id))
        on_edges = store_edges if options.routing_tables else None
        return Sweep(
            self.node, number, table=self.table, policy=self.policy,
            concurrency=options.concurrency, timeout=options.timeout, stall=options.stall,
            retries=options.retries, sample=options.sample, epoch=self.epoch,
            want=want, clock=self.clock,
            on_visit=lambda row: store.add_visit({**row, "crawl": crawl}),
            on_contact=lambda c: store.add_contact(crawl, number, c.ip, c.port, c.family,
                                                   c.node_id, c.found_at, c.referrer),
            on_alias=lambda ip, port, node_id, referrer: store.add_alias(
                crawl, number, ip, port, node_id, referrer),
            on_samples=(lambda ip, at, hashes: store.add_samples(crawl, ip, at, hashes))
            if options.samples else None,
            on_edges=on_edges, partition=partition_filter(options.partition),
            on_launch=lambda addresses, at: store.add_intents(crawl, number, addresses, at),
            routing_tables=options.routing_tables, per_ip_visits=options.per_ip_visits)

    async def run(self, stop: asyncio.Event | None = None) -> CrawlResult:
        stop = stop or asyncio.Event()
        options = self.options
        started = self.node.clock()
        deadline = None if options.duration is None else started + options.duration
        number = self.first_sweep
        while True:
            sweep = self.sweep = self._sweep_for(number)
            self.sweep_started = self.node.clock()
            if self.resume is not None and number == self.first_sweep:
                sweep.restore(*self.resume)
                self._restore_intervals()
            for info in seed_contacts(self.node) + await self._partition_seeds():
                sweep.learn(info, None)
            work = asyncio.ensure_future(sweep.run())
            lookups = asyncio.ensure_future(self._estimate_lookups(sweep, work))
            work_and_lookups = asyncio.ensure_future(asyncio.gather(work, lookups))
            waiters = {work_and_lookups, asyncio.ensure_future(stop.wait())}
            if deadline is not None:
                left = max(0.0, deadline - self.node.clock())
                waiters.add(asyncio.ensure_future(asyncio.sleep(left)))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters - {work_and_lookups}:
                waiter.cancel()
            if not work_and_lookups.done():
                work_and_lookups.cancel()
                await asyncio.gather(work, lookups, return_exceptions=True)
                self.result.stopped = stop.is_set()
                await self.store.flush()
                break
            work.result()
            self.finished = options.sweeps is not None and \
                self.result.sweeps_done + 1 >= options.sweeps
            self.result.sweeps_done += 1
            self.result.stats.append(sweep.stats)
            estimates = self.estimates(sweep)
            self.result.answered.append(sum(sweep.stats.answered.values()))
            self.result.estimates.append(estimates)
            part = {} if options.partition is None else {"part": list(options.partition)}
            for estimate in estimates:
                self.store.add_estimate(self.crawl_id, number, estimate.name, estimate.value,
                                        estimate.low, estimate.high, estimate.counts,
                                        {**estimate.detail, **part})
            await self.store.sweep_done(self.crawl_id, number, part=self.part)
            finished_all = options.sweeps is not None and self.result.sweeps_done >= options.sweeps
            if finished_all or (deadline is not None and self.node.clock() >= deadline):
                break
            if options.every is not None and not await self._wait_for_next(
                    started + self.result.sweeps_done * options.every, deadline, stop):
                break
            number += 1
        return self.result

    async def _wait_for_next(self, start_at: float, deadline: float | None,
                             stop: asyncio.Event) -> bool:
        """Wait until `start_at` (`--every`); False when the crawl ends first (stopped, or
        its --duration is over before the next sweep would start)."""
        if deadline is not None and start_at >= deadline:
            return False
        wait = start_at - self.node.clock()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if stop.is_set():
            self.result.stopped = True
            return False
        return True

    def _restore_intervals(self) -> None:
        """BEP 51 intervals of a resumed crawl, for the nodes the table knows now."""
        from .nodes import address_key
        for (ip, port), at in self.sample_after.items():
            number = self.table.index.get(address_key(ip, port))
            if number is not None:
                self.table.sample_after[number] = max(0, min(0xFFFFFFFF, int(at - self.epoch)))

    def estimates(self, sweep: Sweep) -> list[Estimate]:
        stats = sweep.stats
        answered = sum(stats.answered.values())
        result = [
            count_estimate("nodes that answered", answered, "reachable",
                           **{f"answered_{k}": v for k, v in stats.answered.items()}),
            count_estimate("nodes found", sum(stats.found.values()), "listed",
                           **{f"found_{k}": v for k, v in stats.found.items()}),
            engine_estimate(self.node.estimated_size().as_dict()),
        ]
        # Who listed each node that answered, by group of referrers.
        table = self.table
        masks: dict[int, int] = {}
        groups = table.groups
        for number, flags in enumerate(table.flags):
            if flags & ANSWERED:
                mask = groups[number]
                masks[mask] = masks.get(mask, 0) + 1
        result.append(grouped_recapture("mark-recapture, two halves of the sweep", masks,
                                        self.rng))
        if self.result.answered:
            result.append(chapman_estimate("mark-recapture, this sweep and the last",
                                           self.result.answered[-1], answered,
                                           stats.recaptured))
        return result
