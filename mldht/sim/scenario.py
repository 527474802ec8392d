"""One simulated run: build a network of real `DHTNode`s, bootstrap it, announce, look up.

    result = run_scenario(Scenario(nodes=1000, lookups=200, loss=0.05, seed=7))
    print(result.report["lookups"]["all"]["success_rate"])

The phases, all in virtual time on one `VirtualTimeLoop`:

1. **bootstrap**: `join` starts the nodes one after another (`join_rate` per second), each
   joining through up to 3 random nodes already in, with the real `DHTNode.bootstrap`;
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

import asyncio
import contextlib
import logging
import math
import random as _random
import resource
import time
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from ..bep42 import secure_node_id
from ..compact import NodeInfo
from ..config import NodeConfig
from ..ids import InfoHash, NodeId
from ..node import DHTNode
from .loop import VirtualTimeLoop
from .network import Address, AddressPool, LatencyModel, VirtualNetwork
from .report import LookupRecord, build_report, table_fill
from .seeding import Population, seed_table
from .sybil import SybilSwarm

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
    latency_median: float = 0.100
    """Median one-way latency of a link, seconds."""
    latency_sigma: float = 0.5
    bootstrap: Literal["join", "seeded"] = "join"
    join_rate: float = 200.0
    """Nodes starting per virtual second in `join` mode."""
    settle: float = 30.0
    swarms: int = 20
    lookup_kind: Literal["mixed", "get_peers", "find_node"] = "mixed"
    lookup_rate: float = 20.0
    """Lookups started per virtual second."""
    lookup_timeout: float = 30.0
    nat_timeout: float = 60.0
    """Seconds a NAT keeps a mapping open after the node last sent to that address."""
    config: NodeConfig = field(default_factory=NodeConfig)
    """Configuration of every honest node."""

    def validate(self) -> None:
        for name in ("loss", "dead", "nat", "sybil"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} is a fraction in [0, 1), got {value}")
        if self.nodes < 2 or self.lookups < 0 or self.churn < 0 or self.swarms < 1:
            raise ValueError("need at least 2 nodes, 1 swarm, and no negative counts or rates")
        if self.bootstrap not in ("join", "seeded"):
            raise ValueError(f"bootstrap is 'join' or 'seeded', not {self.bootstrap!r}")
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
class SimulatedNode:
    """An honest node of the simulation, with what only the simulator knows about it."""

    node: DHTNode
    info: NodeInfo
    nat: bool


@dataclass(slots=True)
class SimulationResult:
    report: dict
    """Deterministic for a given scenario (see `build_report`)."""
    resources: dict
    """Wall time and memory: what the run cost on this machine (not deterministic)."""


class _LiveSet:
    """Live honest nodes, for deterministic random choice and O(1) removal."""

    def __init__(self) -> None:
        self.items: list[SimulatedNode] = []
        self._index: dict[Address, int] = {}

    def add(self, member: SimulatedNode) -> None:
        self._index[member.info.address] = len(self.items)
        self.items.append(member)

    def remove(self, member: SimulatedNode) -> None:
        position = self._index.pop(member.info.address)
        last = self.items.pop()
        if last is not member:
            self.items[position] = last
            self._index[last.info.address] = position

    def __contains__(self, member: SimulatedNode) -> bool:
        return member.info.address in self._index

    def __len__(self) -> int:
        return len(self.items)


class Simulation:
    """Runs one `Scenario` on the running virtual-time loop (use `run_scenario`)."""

    def __init__(self, scenario: Scenario) -> None:
        scenario.validate()
        self.scenario = scenario
        seed = scenario.seed
        # Separate streams: changing the workload does not move the nodes' ids.
        self._roles_rng = _random.Random(f"roles-{seed}")
        self._ids_rng = _random.Random(f"ids-{seed}")
        self._work_rng = _random.Random(f"work-{seed}")
        self._churn_rng = _random.Random(f"churn-{seed}")
        self._addresses = AddressPool(_random.Random(f"addresses-{seed}"))
        self.live = _LiveSet()
        self.reachable_ids: dict[int, SimulatedNode] = {}
        """Live honest nodes that accept unsolicited datagrams, by integer id."""
        self.gone: set[Address] = set()
        self.nat_addresses: set[Address] = set()
        self.records: list[LookupRecord] = []
        self.phases: dict[str, float] = {}
        self._busy: set[Address] = set()
        self._bootstraps: list[asyncio.Task] = []
        self._churned = {"departed": 0, "joined": 0}
        self._dead = 0
        self._everyone: list[SimulatedNode] = []
        """Every honest node ever created (a stopped node keeps its counters)."""
        self._announced: list[int] = []
        self.sybil_addresses: set[Address] = set()

    # --- building -----------------------------------------------------------------------

    def _new_node(self, nat: bool, bootstrap: list[Address],
                  address: Address | None = None) -> SimulatedNode:
        address = address or self._addresses.draw()
        node_id = secure_node_id(address[0], self._ids_rng)  # BEP 42 from the start
        node = DHTNode(address, bootstrap=bootstrap, node_id=node_id,
                       config=replace(self.scenario.config),
                       rng=_random.Random(self._ids_rng.getrandbits(64)), clock=self.loop.time)
        member = SimulatedNode(node, NodeInfo(node_id, address[0], address[1]), nat)
        self._everyone.append(member)
        if nat:
            self.nat_addresses.add(address)
        return member

    async def _bring_up(self, member: SimulatedNode) -> None:
        transport = self.network.attach(member.info.address, member.node.datagram_received,
                                        nat=member.nat)
        await member.node.start(transport=transport)
        self.live.add(member)
        if not member.nat:
            self.reachable_ids[int.from_bytes(member.info.id, "big")] = member

    async def _take_down(self, member: SimulatedNode) -> None:
        self.live.remove(member)
        self.reachable_ids.pop(int.from_bytes(member.info.id, "big"), None)
        self.gone.add(member.info.address)
        await member.node.close()  # closes the transport: it leaves the network

    def _contacts(self, rng: _random.Random) -> list[Address]:
        pool = list(self.reachable_ids.values())
        chosen = rng.sample(pool, min(BOOTSTRAP_CONTACTS, len(pool)))
        return [member.info.address for member in chosen]

    # --- phases -------------------------------------------------------------------------

    async def run(self) -> dict:
        self.loop = asyncio.get_running_loop()
        scenario = self.scenario
        self.network = VirtualNetwork(
            self.loop, latency=LatencyModel(scenario.latency_median, scenario.latency_sigma,
                                            seed=scenario.seed),
            loss=scenario.loss, nat_timeout=scenario.nat_timeout, seed=scenario.seed)
        started = self.loop.time()
        sybil_count = round(scenario.sybil * scenario.nodes)
        honest_count = scenario.nodes - sybil_count
        nat_flags = [False] * honest_count
        for index in self._roles_rng.sample(range(1, honest_count),
                                            round(scenario.nat * honest_count)):
            nat_flags[index] = True  # never the first: someone must be reachable to join
        sybil_addresses = [self._addresses.draw() for _ in range(sybil_count)]
        self.sybil_addresses = set(sybil_addresses)
        self.swarm = SybilSwarm(self.network, sybil_addresses, self._roles_rng,
                                k=scenario.config.k) if sybil_count else None

        wall = time.perf_counter()
        if scenario.bootstrap == "seeded":
            await self._seeded_bootstrap(nat_flags)
        else:
            await self._join_bootstrap(nat_flags)
        self.phases["bootstrap"] = self.loop.time() - started
        log.info("bootstrap (%s) done: %.1f virtual s, %.1f wall s", scenario.bootstrap,
                 self.phases["bootstrap"], time.perf_counter() - wall)
        await asyncio.sleep(scenario.settle)
        tables_after_bootstrap = self._tables()

        swarms = await self._announce()
        log.info("settled and announced %d swarms: %.1f wall s", len(swarms),
                 time.perf_counter() - wall)
        await self._kill(round(scenario.dead * len(self.live)))
        before_lookups = self.network.stats.snapshot()
        queries_before = self._queries_received()
        lookups_started = self.loop.time()
        stop_churn = asyncio.Event()
        churn = asyncio.create_task(self._churn(stop_churn)) if scenario.churn > 0 else None
        await self._lookups(swarms)
        stop_churn.set()
        if churn is not None:
            await churn
        self.phases["lookups"] = self.loop.time() - lookups_started
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
            nodes=[member.node for member in self.live.items],
            lookup_queries=lookup_queries, churn=dict(self._churned), dead=self._dead,
            sybils=self.swarm.queries_answered if self.swarm else None,
            announced=self._announced)
        await self._close_all()
        return report

    async def _seeded_bootstrap(self, nat_flags: list[bool]) -> None:
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
        now = self.loop.time()
        for member in members:
            await self._bring_up(member)
            seed_table(member.node.routing_table, population,
                       _random.Random(self._ids_rng.getrandbits(64)), now)

    async def _join_bootstrap(self, nat_flags: list[bool]) -> None:
        scenario = self.scenario
        order: list[int | Address] = list(range(len(nat_flags)))
        if self.swarm is not None:
            order[1:] = self._roles_rng.sample(order[1:] + self.swarm.addresses, len(order) - 1 +
                                               len(self.swarm.addresses))
        start = self.loop.time()
        for position, entry in enumerate(order):
            delay = start + position / scenario.join_rate - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if isinstance(entry, tuple):
                self.swarm.introduce(entry, self._contacts(self._roles_rng))
                continue
            member = self._new_node(nat_flags[entry], self._contacts(self._roles_rng))
            await self._bring_up(member)
            self._bootstraps.append(asyncio.create_task(member.node.bootstrap()))
        await asyncio.gather(*self._bootstraps)
        self._bootstraps.clear()

    async def _announce(self) -> list[tuple[InfoHash, Address]]:
        swarms: list[tuple[InfoHash, Address]] = []
        announcers = []
        for index in range(self.scenario.swarms):
            info_hash = InfoHash(self._work_rng.randbytes(20))
            member = self._work_rng.choice(self.live.items)
            port = 10_000 + index
            swarms.append((info_hash, (member.info.ip, port)))
            announcers.append(member.node.announce(info_hash, port,
                                                   timeout=self.scenario.lookup_timeout))
        results = await asyncio.gather(*announcers)
        self._announced = [len(result.announced_to) for result in results]
        return swarms

    async def _kill(self, count: int) -> None:
        """Silence `count` random live honest nodes: they stop and leave the network, but
        stay in the routing tables of others (nobody is told)."""
        for member in self._work_rng.sample(self.live.items, count):
            await self._take_down(member)
            self._dead += 1

    async def _lookups(self, swarms: list[tuple[InfoHash, Address]]) -> None:
        scenario = self.scenario
        rng = self._work_rng
        start = self.loop.time()
        tasks = []
        for index in range(scenario.lookups):
            delay = start + index / scenario.lookup_rate - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            member = rng.choice(self.live.items)
            kind = scenario.lookup_kind
            if kind == "mixed":
                kind = "get_peers" if index % 2 == 0 else "find_node"
            if kind == "get_peers":
                tasks.append(asyncio.create_task(self._get_peers(member, *rng.choice(swarms))))
            else:
                tasks.append(asyncio.create_task(self._find_node(member, NodeId(rng.randbytes(20)))))
        await asyncio.gather(*tasks)

    async def _get_peers(self, member: SimulatedNode, info_hash: InfoHash, peer: Address) -> None:
        self._busy.add(member.info.address)
        try:
            lookup = member.node.get_peers(info_hash, timeout=self.scenario.lookup_timeout)
            peers = await lookup.collect()
        finally:
            self._busy.discard(member.info.address)
        self.records.append(LookupRecord.of("get_peers", peer in peers, lookup.summary, member.nat))

    async def _find_node(self, member: SimulatedNode, target: NodeId) -> None:
        self._busy.add(member.info.address)
        try:
            summary = await member.node.find_node_lookup(target,
                                                         timeout=self.scenario.lookup_timeout)
        finally:
            self._busy.discard(member.info.address)
        target_int = int.from_bytes(target, "big")
        own = int.from_bytes(member.info.id, "big")
        best = min((node_id for node_id in self.reachable_ids if node_id != own),
                   key=target_int.__xor__, default=None)
        found = summary.closest[0] if summary.closest else None
        success = found is not None and best is not None and (
            found.address not in self.gone and found.address not in self.sybil_addresses
            and int.from_bytes(found.id, "big") ^ target_int <= best ^ target_int)
        self.records.append(LookupRecord.of("find_node", success, summary, member.nat))

    async def _churn(self, stop: asyncio.Event) -> None:
        scenario = self.scenario
        rng = self._churn_rng
        interval = 60.0 / (scenario.churn * max(1, len(self.live)))
        # Bounded: the lookup phase lasts at most lookups / rate + timeout seconds.
        most = math.ceil((scenario.lookups / scenario.lookup_rate + scenario.lookup_timeout
                          + 1) / interval) + 1
        for _ in range(most):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            if stop.is_set():
                return
            idle = [member for member in self.live.items if member.info.address not in self._busy]
            if len(idle) > BOOTSTRAP_CONTACTS + 1:
                await self._take_down(rng.choice(idle))
                self._churned["departed"] += 1
            joiner = self._new_node(rng.random() < scenario.nat, self._contacts(rng))
            await self._bring_up(joiner)
            self._churned["joined"] += 1
            # Never taken down mid-join: bootstrap() is not meant to be interrupted.
            self._busy.add(joiner.info.address)
            task = asyncio.create_task(joiner.node.bootstrap())
            task.add_done_callback(lambda _, address=joiner.info.address:
                                   self._busy.discard(address))
            self._bootstraps.append(task)

    def _queries_received(self) -> dict[str, int]:
        """Queries received by the honest nodes so far, by method."""
        totals: dict[str, int] = {}
        for member in self._everyone:
            for method, count in member.node.stats.queries_received.items():
                totals[method] = totals.get(method, 0) + count
        return totals

    def _tables(self) -> dict:
        return table_fill([member.node for member in self.live.items], self.nat_addresses,
                          self.sybil_addresses, self.gone)

    async def _close_all(self) -> None:
        # Let late joiners finish (bounded by their bootstrap timeout): cancelling
        # bootstrap() midway leaves its refresh coroutines never awaited.
        await asyncio.gather(*self._bootstraps, return_exceptions=True)
        for member in self.live.items:
            await member.node.close()


def run_scenario(scenario: Scenario) -> SimulationResult:
    """Run `scenario` on a fresh virtual-time loop; returns the report and what it cost."""
    wall = time.perf_counter()
    with VirtualTimeLoop.runner() as runner:
        report = runner.run(Simulation(scenario).run())
    resources = {"wall_seconds": round(time.perf_counter() - wall, 2),
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return SimulationResult(report, resources)
