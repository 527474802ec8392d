"""One simulated run: build a network of real engines, bootstrap it, announce, look up.

    result = run_scenario(Scenario(nodes=1000, lookups=200, loss=0.05, seed=7))
    print(result.report["lookups"]["all"]["success_rate"])

Every node is an `mldht.engine.Engine` (the code a real node runs, minus the asyncio
adapter) driven by one `Scheduler`: no event loop, no socket. The phases, all in virtual
time:

1. **bootstrap**: `join` starts the nodes one after another (`join_rate` per second), each
   joining through up to 3 random nodes already in, with the engine's real bootstrap;
   `seeded` fills every routing table from the global view (see `seeding`) at once.
   Sybils join too: they query a few honest nodes (join) or are seeded like anyone.
2. **settle**: `settle` seconds of idle network (verification pings, maintenance).
3. **announce**: `swarms` infohashes, each announced by a random honest node.
4. **dead**: a fraction `dead` of the honest nodes goes silent (still in others' tables).
5. **lookups**: `lookups` lookups, `lookup_rate` started per second from random live honest
   nodes, get_peers for a random swarm and find_node for a random id, alternately (or only
   one kind). Meanwhile `churn`: that fraction of the honest nodes per minute leaves, and
   as many new nodes join through the real bootstrap.

A get_peers lookup succeeds when it returns the announced peer; a find_node lookup when the
closest node it returns is the closest live, reachable honest node to the target (or closer).
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import logging
import math
import random as _random
import resource
import time
from dataclasses import dataclass, field, fields
from typing import Literal

from ..bep42 import secure_node_id
from ..compact import NodeInfo
from ..config import NodeConfig
from ..engine import Engine
from ..ids import InfoHash, NodeId
from .clock import Scheduler
from .network import Address, AddressPool, LatencyModel, VirtualNetwork
from .node import SimNode
from .report import LookupRecord, Placement, build_report, table_fill
from .seeding import Population, seed_table
from .sybil import STRATEGIES, SybilSwarm

LEGACY_IDS = 0.2
"""Honest nodes without a BEP 42 id, by default: what the emulated DHT's client mix implies
(tools/bench/emulated/model.py: about 80 % of nodes have BEP 42 ids; the crawler records
the share it sees, `bep42` in each visit and `shares` in each estimate)."""

log = logging.getLogger(__name__)

BOOTSTRAP_CONTACTS = 3
"""Nodes a joining node is given to bootstrap through."""


@dataclass(slots=True)
class Scenario:
    """Everything a simulated run is made of; the same scenario gives the same report."""

    nodes: int = 1000
    """Addresses on the network at the start: honest nodes plus Sybils."""
    lookups: int = 200
    seed: int = 1
    loss: float = 0.0
    """Probability that any one datagram is lost."""
    dead: float = 0.0
    """Fraction of the honest nodes that go silent after the announces."""
    churn: float = 0.0
    """Fraction of the honest nodes replaced per virtual minute during the lookups."""
    nat: float = 0.0
    """Fraction of the honest nodes behind a NAT (no unsolicited datagrams reach them)."""
    sybil: float = 0.0
    """Fraction of the addresses that belong to the Sybil attacker."""
    sybil_strategy: str = "eclipse"
    """How the Sybils lie (`mldht.sim.sybil.STRATEGIES`): `eclipse` (ids right next to every
    target), `plausible` (BEP 42 ids for their own IPs, only as close as the network's
    size makes believable) or `poison` (as eclipse, with made-up peers in get_peers replies)."""
    legacy_ids: float = LEGACY_IDS
    """Fraction of the honest nodes whose ids are not BEP 42 ids (old or careless clients:
    they never adopt one)."""
    latency_median: float = 0.100
    """Median one-way latency of a link, seconds."""
    latency_sigma: float = 0.5
    bootstrap: Literal["join", "seeded"] = "join"
    join_rate: float = 200.0
    """Nodes starting per virtual second in `join` mode."""
    settle: float = 30.0
    swarms: int = 20
    items: int = 0
    """BEP 44 immutable items put after the announces, each by a random honest node (the
    report says where they were stored, as for the announces)."""
    lookup_kind: Literal["mixed", "get_peers", "find_node"] = "mixed"
    lookup_rate: float = 20.0
    """Lookups started per virtual second."""
    lookup_timeout: float = 30.0
    nat_timeout: float = 60.0
    """Seconds a NAT keeps a mapping open after the node last sent to that address."""
    config: NodeConfig = field(default_factory=NodeConfig)
    """Configuration of every honest node."""

    def validate(self) -> None:
        for name in ("loss", "dead", "nat", "sybil", "legacy_ids"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} is a fraction in [0, 1), got {value}")
        if (self.nodes < 2 or self.lookups < 0 or self.churn < 0 or self.swarms < 1
                or self.items < 0):
            raise ValueError("need at least 2 nodes, 1 swarm, and no negative counts or rates")
        if self.bootstrap not in ("join", "seeded"):
            raise ValueError(f"bootstrap is 'join' or 'seeded', not {self.bootstrap!r}")
        if self.sybil_strategy not in STRATEGIES:
            raise ValueError(f"unknown Sybil strategy {self.sybil_strategy!r} "
                             f"(one of {', '.join(STRATEGIES)})")
        if self.lookup_kind not in ("mixed", "get_peers", "find_node"):
            raise ValueError(f"unknown lookup kind {self.lookup_kind!r}")

    def as_dict(self) -> dict:
        """The parameters, for the report (node configuration only where it differs from the
        defaults)."""
        result = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}
        default = NodeConfig()
        result["config"] = {f.name: getattr(self.config, f.name) for f in fields(self.config)
                            if getattr(self.config, f.name) != getattr(default, f.name)
                            and not isinstance(getattr(self.config, f.name), bytes)}
        return result


@dataclass(slots=True)
class SimulationResult:
    report: dict
    """Deterministic for a given scenario (see `build_report`)."""
    resources: dict
    """Wall time and memory: what the run cost on this machine (not deterministic)."""


class _LiveSet:
    """Live honest nodes, for deterministic random choice and O(1) removal."""

    def __init__(self) -> None:
        self.items: list[SimNode] = []
        self._index: dict[Address, int] = {}

    def add(self, member: SimNode) -> None:
        self._index[member.info.address] = len(self.items)
        self.items.append(member)

    def remove(self, member: SimNode) -> None:
        position = self._index.pop(member.info.address)
        last = self.items.pop()
        if last is not member:
            self.items[position] = last
            self._index[last.info.address] = position

    def __contains__(self, member: SimNode) -> bool:
        return member.info.address in self._index

    def __len__(self) -> int:
        return len(self.items)


class Simulation:
    """Runs one `Scenario` (use `run_scenario`)."""

    def __init__(self, scenario: Scenario, settled=lambda: None) -> None:
        scenario.validate()
        self.scenario = scenario
        self._settled = settled
        """Called when the long-lived part of the network is built (after the bootstrap
        and the announces): `run_scenario` freezes it for the garbage collector."""
        seed = scenario.seed
        # Separate streams: changing the workload does not move the nodes' ids.
        self._roles_rng = _random.Random(f"roles-{seed}")
        self._ids_rng = _random.Random(f"ids-{seed}")
        self._legacy_rng = _random.Random(f"legacy-{seed}")
        self._legacy_config = dataclasses.replace(scenario.config, adopt_secure_id=False)
        self._work_rng = _random.Random(f"work-{seed}")
        self._churn_rng = _random.Random(f"churn-{seed}")
        self._engine_rng = _random.Random(f"engines-{seed}")
        self._addresses = AddressPool(_random.Random(f"addresses-{seed}"))
        self.scheduler = Scheduler()
        self.network = VirtualNetwork(
            self.scheduler, latency=LatencyModel(scenario.latency_median, scenario.latency_sigma,
                                                 seed=seed),
            loss=scenario.loss, nat_timeout=scenario.nat_timeout, seed=seed)
        self.live = _LiveSet()
        self.reachable_ids: dict[int, SimNode] = {}
        """Live honest nodes that accept unsolicited datagrams, by integer id."""
        self.gone: set[Address] = set()
        self.nat_addresses: set[Address] = set()
        self.records: list[LookupRecord] = []
        self.phases: dict[str, float] = {}
        self._busy: set[Address] = set()
        self._joining = 0
        self._churned = {"departed": 0, "joined": 0}
        self._dead = 0
        self._everyone: list[SimNode] = []
        """Every honest node ever created (a stopped node keeps its counters)."""
        self._announced: list[Placement] = []
        self._put: list[Placement] = []
        self.sybil_addresses: set[Address] = set()
        self.legacy_addresses: set[Address] = set()
        self.swarm: SybilSwarm | None = None
        self._wall_started = 0.0
        self._tables_after_bootstrap: dict = {}

    # --- building -----------------------------------------------------------------------

    def _new_node(self, nat: bool, contacts: list[Address],
                  address: Address | None = None) -> SimNode:
        address = address or self._addresses.draw()
        node_id = secure_node_id(address[0], self._ids_rng)  # BEP 42 from the start
        config = self.scenario.config
        if self._legacy_rng.random() < self.scenario.legacy_ids:
            # An old client: a random id, kept whatever its address (its own PRNG, so that
            # the other nodes' ids stay what they were without legacy nodes).
            node_id = NodeId(self._legacy_rng.randbytes(20))
            config = self._legacy_config
            self.legacy_addresses.add(address)
        # One config object and one PRNG for all (engines only read the config, and the
        # order of events is fixed, so the draws are too): a Mersenne Twister is 2.5 KB.
        engine = Engine(self.scheduler.now, node_ids={"ipv4": node_id},
                        config=config, rng=self._engine_rng)
        self._ids_rng.getrandbits(64)  # what a per-node PRNG's seed took: same ids as ever
        engine.set_routers(contacts)
        member = SimNode(engine, NodeInfo(node_id, address[0], address[1]), nat,
                         self.scheduler, self.network)
        self._everyone.append(member)
        if nat:
            self.nat_addresses.add(address)
        return member

    def _bring_up(self, member: SimNode) -> None:
        member.attach()
        self.live.add(member)
        if not member.nat:
            self.reachable_ids[int.from_bytes(member.info.id, "big")] = member

    def _take_down(self, member: SimNode) -> None:
        self.live.remove(member)
        self.reachable_ids.pop(int.from_bytes(member.info.id, "big"), None)
        self.gone.add(member.info.address)
        member.detach()  # it leaves the network; nobody is told

    def _contacts(self, rng: _random.Random) -> list[Address]:
        pool = list(self.reachable_ids.values())
        chosen = rng.sample(pool, min(BOOTSTRAP_CONTACTS, len(pool)))
        return [member.info.address for member in chosen]

    def _join(self, member: SimNode) -> None:
        """The real bootstrap; `member` is busy (never churned away) until it ends."""
        self._joining += 1
        self._busy.add(member.info.address)

        def joined(result, error) -> None:
            self._joining -= 1
            self._busy.discard(member.info.address)
        member.start(member.engine.start_bootstrap(self.scheduler.now), joined)

    def _wait(self, done, limit: float, what: str) -> None:
        """Run the network until `done()`; `limit` virtual seconds at most (every operation
        has its own timeout, so this only guards against a bug)."""
        if not self.scheduler.run_until(done, until=self.scheduler.now + limit):
            raise RuntimeError(f"simulation: {what} did not finish within {limit} virtual s")

    # --- phases -------------------------------------------------------------------------

    def prepare(self) -> list[tuple[InfoHash, Address]]:
        """Build the network up to the lookups: bootstrap, settle, announce the swarms,
        silence the dead. Returns the swarms (infohash, announced peer). `run` goes on with
        the lookups; a workload of one's own (tools/bench/peer_finder.py) drives `scheduler`
        and `network` from here instead, with `live` the nodes still up."""
        scenario = self.scenario
        scheduler = self.scheduler
        started = scheduler.now
        sybil_count = round(scenario.sybil * scenario.nodes)
        honest_count = scenario.nodes - sybil_count
        nat_flags = [False] * honest_count
        for index in self._roles_rng.sample(range(1, honest_count),
                                            round(scenario.nat * honest_count)):
            nat_flags[index] = True  # never the first: someone must be reachable to join
        sybil_addresses = [self._addresses.draw() for _ in range(sybil_count)]
        self.sybil_addresses = set(sybil_addresses)
        self.swarm = SybilSwarm(self.network, sybil_addresses, self._roles_rng,
                                k=scenario.config.k, strategy=scenario.sybil_strategy,
                                honest_nodes=honest_count) if sybil_count else None

        wall = time.perf_counter()
        if scenario.bootstrap == "seeded":
            self._seeded_bootstrap(nat_flags)
        else:
            self._join_bootstrap(nat_flags)
        self.phases["bootstrap"] = scheduler.now - started
        log.info("bootstrap (%s) done: %.1f virtual s, %.1f wall s", scenario.bootstrap,
                 self.phases["bootstrap"], time.perf_counter() - wall)
        self._settled()
        scheduler.advance(scenario.settle)
        tables_after_bootstrap = self._tables()

        swarms = self._announce()
        if scenario.items:
            self._put_items()
        self._settled()
        log.info("settled and announced %d swarms: %.1f wall s", len(swarms),
                 time.perf_counter() - wall)
        self._kill(round(scenario.dead * len(self.live)))
        self._wall_started = wall
        self._tables_after_bootstrap = tables_after_bootstrap
        return swarms

    def run(self) -> dict:
        swarms = self.prepare()
        scenario = self.scenario
        scheduler = self.scheduler
        wall = self._wall_started
        tables_after_bootstrap = self._tables_after_bootstrap
        before_lookups = self.network.stats.snapshot()
        queries_before = self._queries_received()
        lookups_started = scheduler.now
        self._lookups(swarms)
        self.phases["lookups"] = scheduler.now - lookups_started
        log.info("%d lookups done: %.1f virtual s, %.1f wall s", len(self.records),
                 self.phases["lookups"], time.perf_counter() - wall)
        lookup_traffic = self.network.stats.minus(before_lookups)
        queries_after = self._queries_received()
        lookup_queries = {method: count - queries_before.get(method, 0)
                          for method, count in sorted(queries_after.items())}
        report = build_report(
            scenario=scenario.as_dict(), records=self.records, phases=self.phases,
            tables_after_bootstrap=tables_after_bootstrap, tables_at_end=self._tables(),
            network_total=self.network.stats, lookup_traffic=lookup_traffic,
            nodes=[member.engine for member in self.live.items],
            lookup_queries=lookup_queries, churn=dict(self._churned), dead=self._dead,
            sybils=self.swarm.queries_answered if self.swarm else None,
            announced=self._announced, put=self._put, k=scenario.config.k)
        # Late joiners end on their own (their bootstrap has a timeout), then all stop.
        self._wait(lambda: self._joining == 0, 3600.0, "the last joins")
        for member in list(self.live.items):
            member.detach()
        return report

    def _seeded_bootstrap(self, nat_flags: list[bool]) -> None:
        addresses = [self._addresses.draw() for _ in nat_flags]
        reachable = [address for address, nat in zip(addresses, nat_flags) if not nat]
        rng = self._roles_rng
        # The bootstrap contacts only matter should a table run dry (a real client keeps a
        # few routers for that).
        members = [self._new_node(nat, rng.sample(reachable, min(BOOTSTRAP_CONTACTS,
                                                                  len(reachable))), address)
                   for address, nat in zip(addresses, nat_flags)]
        population = Population([member.info for member in members if not member.nat]
                                + (self.swarm.home_infos() if self.swarm is not None else []))
        now = self.scheduler.now
        for member in members:
            self._bring_up(member)
            seed_table(member.engine.families[0].table, population,
                       _random.Random(self._ids_rng.getrandbits(64)), now)

    def _join_bootstrap(self, nat_flags: list[bool]) -> None:
        scenario = self.scenario
        order: list[int | Address] = list(range(len(nat_flags)))
        if self.swarm is not None:
            order[1:] = self._roles_rng.sample(order[1:] + self.swarm.addresses, len(order) - 1 +
                                               len(self.swarm.addresses))
        start = self.scheduler.now

        def arrive(entry: int | Address) -> None:
            if isinstance(entry, tuple):
                assert self.swarm is not None
                self.swarm.introduce(entry, self._contacts(self._roles_rng))
                return
            member = self._new_node(nat_flags[entry], self._contacts(self._roles_rng))
            self._bring_up(member)
            self._join(member)
            if len(self.live) % 1000 == 0:
                self._settled()  # what has joined so far lives on

        for position, entry in enumerate(order):
            self.scheduler.call_at(start + position / scenario.join_rate, arrive, entry)
        arrivals = start + len(order) / scenario.join_rate
        self._wait(lambda: self.scheduler.now >= arrivals and self._joining == 0,
                   len(order) / scenario.join_rate + 3600.0, "the joins")

    def _announce(self) -> list[tuple[InfoHash, Address]]:
        swarms: list[tuple[InfoHash, Address]] = []
        results: dict[int, Placement] = {}
        now = self.scheduler.now
        for index in range(self.scenario.swarms):
            info_hash = InfoHash(self._work_rng.randbytes(20))
            member = self._work_rng.choice(self.live.items)
            port = 10_000 + index
            swarms.append((info_hash, (member.info.ip, port)))

            def announced(result, error, index=index, target=bytes(info_hash)) -> None:
                results[index] = self._placement(
                    target, result.announced_to if result is not None else [])
            member.start(member.engine.start_announce(info_hash, now, port,
                                                      timeout=self.scenario.lookup_timeout),
                         announced)
        self._wait(lambda: len(results) == len(swarms), self.scenario.lookup_timeout + 60.0,
                   "the announces")
        self._announced = [results[index] for index in range(len(swarms))]
        return swarms

    def _put_items(self) -> None:
        results: dict[int, Placement] = {}
        now = self.scheduler.now
        for index in range(self.scenario.items):
            value = b"item %d of seed %d" % (index, self.scenario.seed)
            member = self._work_rng.choice(self.live.items)

            def put(result, error, index=index) -> None:
                results[index] = (self._placement(bytes(result.item.target), result.stored_on)
                                  if result is not None else Placement(0, 0, 0))
            member.start(member.engine.start_put_immutable(
                value, now, timeout=self.scenario.lookup_timeout), put)
        self._wait(lambda: len(results) == self.scenario.items,
                   self.scenario.lookup_timeout + 60.0, "the puts")
        self._put = [results[index] for index in range(self.scenario.items)]

    def _placement(self, target: bytes, stored_on) -> "Placement":
        """Where a store landed: on how many nodes, how many of them Sybils, and how many
        of the k live honest nodes closest to the target (those that should hold it)."""
        addresses = {node.address for node in stored_on}
        key = int.from_bytes(target, "big")
        closest = heapq.nsmallest(self.scenario.config.k, self.live.items,
                                  key=lambda member: key ^ int.from_bytes(
                                      member.engine.node_id, "big"))
        return Placement(stored=len(addresses),
                         on_sybils=len(addresses & self.sybil_addresses),
                         on_true_closest=sum(member.address in addresses for member in closest))

    def silence(self, fraction: float) -> int:
        """Silence that fraction of the live honest nodes (as `Scenario.dead` does after the
        announces), for workloads driven after `prepare`; returns how many."""
        count = round(fraction * len(self.live))
        self._kill(count)
        return count

    def _kill(self, count: int) -> None:
        """Silence `count` random live honest nodes: they stop and leave the network, but
        stay in the routing tables of others (nobody is told)."""
        for member in self._work_rng.sample(self.live.items, count):
            self._take_down(member)
            self._dead += 1

    def _lookups(self, swarms: list[tuple[InfoHash, Address]]) -> None:
        scenario = self.scenario
        rng = self._work_rng
        start = self.scheduler.now
        finished = [0]

        def launch(index: int) -> None:
            member = rng.choice(self.live.items)
            kind = scenario.lookup_kind
            if kind == "mixed":
                kind = "get_peers" if index % 2 == 0 else "find_node"
            if kind == "get_peers":
                self._get_peers(member, *rng.choice(swarms), finished)
            else:
                self._find_node(member, NodeId(rng.randbytes(20)), finished)

        for index in range(scenario.lookups):
            self.scheduler.call_at(start + index / scenario.lookup_rate, launch, index)
        if scenario.churn > 0:
            self._schedule_churn(lambda: finished[0] >= scenario.lookups)
        self._wait(lambda: finished[0] >= scenario.lookups,
                   scenario.lookups / scenario.lookup_rate + scenario.lookup_timeout + 60.0,
                   "the lookups")

    def _get_peers(self, member: SimNode, info_hash: InfoHash, peer: Address,
                   finished: list[int]) -> None:
        address = member.info.address
        self._busy.add(address)
        handle = member.engine.start_get_peers(info_hash, self.scheduler.now,
                                               self.scenario.lookup_timeout)

        def done(summary, error) -> None:
            self._busy.discard(address)
            peers = member.peers.pop(handle, [])
            finished[0] += 1
            if summary is not None:
                found = peer in peers
                self.records.append(LookupRecord.of("get_peers", found, summary, member.nat,
                                                    peers=len(peers),
                                                    made_up=len(peers) - found))
        member.start(handle, done, collect_peers=True)

    def _find_node(self, member: SimNode, target: NodeId, finished: list[int]) -> None:
        address = member.info.address
        self._busy.add(address)

        def done(summary, error) -> None:
            self._busy.discard(address)
            finished[0] += 1
            if summary is None:
                return
            target_int = int.from_bytes(target, "big")
            own = int.from_bytes(member.info.id, "big")
            best = min((node_id for node_id in self.reachable_ids if node_id != own),
                       key=target_int.__xor__, default=None)
            found = summary.closest[0] if summary.closest else None
            success = found is not None and best is not None and (
                found.address not in self.gone and found.address not in self.sybil_addresses
                and int.from_bytes(found.id, "big") ^ target_int <= best ^ target_int)
            self.records.append(LookupRecord.of("find_node", success, summary, member.nat))
        member.start(member.engine.start_find_node(target, self.scheduler.now,
                                                   self.scenario.lookup_timeout), done)

    def start_churn(self, stopped, longest: float) -> None:
        """Churn as `Scenario.churn` says (that fraction of the live nodes replaced per
        virtual minute, joiners through the real bootstrap) until `stopped()` is true, for
        at most `longest` virtual seconds: for workloads driven after `prepare`."""
        if self.scenario.churn > 0:
            self._schedule_churn(stopped, longest)

    def churned(self) -> dict[str, int]:
        return dict(self._churned)

    def _schedule_churn(self, stopped, longest: float | None = None) -> None:
        scenario = self.scenario
        rng = self._churn_rng
        interval = 60.0 / (scenario.churn * max(1, len(self.live)))
        if longest is None:
            # Bounded: the lookup phase lasts at most lookups / rate + timeout seconds.
            longest = scenario.lookups / scenario.lookup_rate + scenario.lookup_timeout + 1
        most = math.ceil(longest / interval) + 1
        left = [most]

        def step() -> None:
            if stopped() or left[0] <= 0:
                return
            left[0] -= 1
            idle = [member for member in self.live.items if member.info.address not in self._busy]
            if len(idle) > BOOTSTRAP_CONTACTS + 1:
                self._take_down(rng.choice(idle))
                self._churned["departed"] += 1
            joiner = self._new_node(rng.random() < scenario.nat, self._contacts(rng))
            self._bring_up(joiner)
            self._churned["joined"] += 1
            self._join(joiner)  # never taken down mid-join
            self.scheduler.call_later(interval, step)

        self.scheduler.call_later(interval, step)

    def _queries_received(self) -> dict[str, int]:
        """Queries received by the honest nodes so far, by method."""
        totals: dict[str, int] = {}
        for member in self._everyone:
            for method, count in member.engine.stats.queries_received.items():
                totals[method] = totals.get(method, 0) + count
        return totals

    def _tables(self) -> dict:
        return table_fill([member.engine.families[0].table for member in self.live.items],
                          self.nat_addresses, self.sybil_addresses, self.gone)


class _QuietCollector:
    """The cyclic garbage collector tuned for a run: the network (engines, tables) lives for
    the whole run, and every full collection would walk millions of its objects for
    nothing (a third of the wall time at 1,000 nodes). `freeze()` moves what lives now
    out of the collector's sight; the thresholds make young collections rarer."""

    def __enter__(self) -> "_QuietCollector":
        self._thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 50, 1000)
        return self

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()

    def __exit__(self, *exc_info) -> None:
        gc.unfreeze()
        gc.set_threshold(*self._thresholds)


def run_scenario(scenario: Scenario) -> SimulationResult:
    """Run `scenario` on a fresh virtual clock; returns the report and what it cost."""
    wall = time.perf_counter()
    with _QuietCollector() as collector:
        report = Simulation(scenario, collector.freeze).run()
    resources = {"wall_seconds": round(time.perf_counter() - wall, 2),
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return SimulationResult(report, resources)
