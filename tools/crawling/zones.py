"""The DHT's size from a sample of its keyspace: crawl every node of a few random id-prefix
zones, and scale up (Wang and Kangasharju, "Measuring large-scale distributed systems: case
of BitTorrent Mainline DHT", IEEE P2P 2013; ../shared/notes/measuring-the-dht.md).

A zone is the ids that begin with a given `bits`-bit prefix: 2**-bits of the keyspace.
Node ids are uniformly random (BEP 5; BEP 42 ids are random but for a few bits tied to the
IP), so the nodes of a random zone are a random sample of the DHT's nodes, each node in it
with probability 2**-bits. `estimate_size` picks the width so that a zone holds a few
hundred nodes that answer, crawls the Z zones at once (one `Sweep`, kept to the zones),
and `zone_estimate` turns the Z zone counts into the DHT's size with its 95 % interval.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from .estimates import Estimate
from .nodes import ANSWERED, FOUND, SKIPPED, VISITED, NodeTable, address_key
from .policies import SamplePolicy
from .traversal import Sweep

ID_BITS = 160
KEY_BITS = 64
"""A sweep places nodes by the first 64 bits of their id: zones are at most that narrow."""


@dataclass(frozen=True)
class Zone:
    """The ids whose first `bits` bits are `prefix`."""
    prefix: int
    bits: int

    def __post_init__(self) -> None:
        if not 0 <= self.bits <= 32 or not 0 <= self.prefix < 1 << self.bits:
            raise ValueError(f"a zone is a prefix of 0 to 32 bits, not {self.prefix}/{self.bits}")

    def __call__(self, node_id: bytes) -> bool:
        return int.from_bytes(node_id[:4], "big") >> (32 - self.bits) == self.prefix \
            if self.bits else True

    def ranges(self) -> list[tuple[int, int]]:
        shift = ID_BITS - self.bits
        return [(self.prefix << shift, ((self.prefix + 1) << shift) - 1)]

    @property
    def share(self) -> float:
        return 2.0 ** -self.bits

    @property
    def middle(self) -> bytes:
        return self.point(0.5)

    def point(self, share: float) -> bytes:
        """The id `share` of the way through the zone."""
        low, high = self.ranges()[0]
        return (low + int((high - low) * share)).to_bytes(20, "big")

    def __str__(self) -> str:
        """`3fa/12`: the prefix in hexadecimal (as many digits as its bits need), its bits."""
        return f"{self.prefix:0{max(1, -(-self.bits // 4))}x}/{self.bits}"


class Zones:
    """Several zones of one width, as the `partition` a `Sweep` keeps to: called with an id,
    says whether it lies in one of them (one dictionary lookup, as every node a reply
    lists is asked)."""

    def __init__(self, zones: list[Zone]) -> None:
        if not zones:
            raise ValueError("no zones")
        widths = {zone.bits for zone in zones}
        if len(widths) != 1:
            raise ValueError("zones of one width only")
        self.bits = widths.pop()
        self.zones = sorted(set(zones), key=lambda zone: zone.prefix)
        self._index = {zone.prefix: number for number, zone in enumerate(self.zones)}

    def zone_of(self, node_id: bytes) -> int | None:
        """The number (in `zones`) of the zone holding `node_id`, or None."""
        if not self.bits:
            return 0
        return self._index.get(int.from_bytes(node_id[:4], "big") >> (32 - self.bits))

    def __call__(self, node_id: bytes) -> bool:
        return self.zone_of(node_id) is not None

    def ranges(self) -> list[tuple[int, int]]:
        return [zone.ranges()[0] for zone in self.zones]

    @property
    def share(self) -> float:
        return len(self.zones) * 2.0 ** -self.bits

    def __len__(self) -> int:
        return len(self.zones)


def zone_bits(size: float | None, nodes_per_zone: int) -> int:
    """The narrowest prefix width that leaves at most `nodes_per_zone` of `size` nodes in a
    zone (between half that and that; at least 0 bits, at most 32). Rounded to the nearest
    instead, an estimate just under a boundary made zones up to 1.4 times too full, and an
    estimate at 20 million nodes took 80 to 90 s instead of under 60."""
    if not size or size <= nodes_per_zone:
        return 0
    return max(0, min(32, math.ceil(math.log2(size / nodes_per_zone))))


def pick_zones(count: int, bits: int, rng: random.Random) -> Zones:
    """`count` distinct zones of `bits` bits, drawn at random (all of them when there are
    fewer)."""
    available = 1 << bits
    if count >= available:
        return Zones([Zone(prefix, bits) for prefix in range(available)])
    return Zones([Zone(prefix, bits) for prefix in rng.sample(range(available), count)])


# --- the estimate ------------------------------------------------------------------------------

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(degrees: int) -> float:
    """Student's t quantile 0.975 for `degrees` degrees of freedom (a table to 30, then a
    series in 1/df that is within 0.001 of it)."""
    if degrees < 1:
        return math.inf
    if degrees <= len(_T975):
        return _T975[degrees - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * degrees) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * degrees ** 2)


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float, float]:
    """A proportion with its Wilson score interval (95 %): honest at 0 and at 1, where the
    normal one collapses to a point (a crawl that missed none of the nodes checked)."""
    if trials <= 0:
        return 1.0, 0.0, 1.0
    share = successes / trials
    scale = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / scale
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / scale
    return share, max(0.0, centre - half), min(1.0, centre + half)


def zone_estimate(name: str, counts: list[float], bits: int, what: str,
                  checked: tuple[int, int] | None = None, **detail) -> Estimate:
    """The size of the DHT from the node counts of Z random zones of `bits` bits, and the
    crawls' completeness (`checked`: of the nodes a check found in the zones after their
    crawl, how many the crawl had counted, and how many there were), with a 95 % interval.

    Derivation. Each node's id falls in a given zone with probability p = 2**-bits, and
    the zones are drawn at random, so for each zone z, E[n_z] = c * p * N, where n_z is
    what the crawl of z counted and c the share of a zone's nodes a crawl counts (its
    completeness). The zone counts are independent draws of one distribution, so
    mean(n_z) / p estimates c * N without bias, and the sample variance s**2 of the n_z
    holds both sources of their spread, which nodes happened to have ids in the zone
    (binomial, about p * N) and how the crawl's misses fell (two-stage sampling: the
    spread of the units' totals covers the error inside each unit), without a model of
    either: Var = s**2 / (Z * p**2), interval +- t(0.975, Z - 1) * sqrt(Var) (Student's t,
    s being estimated from Z values).

    The completeness c is measured, not assumed: while the crawl begins, lookups for
    random targets inside the zones find the nodes closest to them by the lookups' own
    routes (an independent second capture, as in Lincoln-Petersen), and c_hat = m / n,
    with m of those n nodes found by the crawl; pooled over the zones (c is the crawler's,
    not a zone's). A node there when the crawl began stays listed while it runs (a real
    node evicts a contact only minutes after it left), so a node the check saw and the
    crawl did not find is one the walk missed, not churn. (Checked after the crawl, or on
    whether the node answered the crawl, the check counts as missed the nodes that came
    online meanwhile and cannot see those that went: on the emulated DHT that read 2.6 %
    missed where the counts were 0.3 % short.) N_hat = mean(n_z) / (p * c_hat); its
    interval is the zone interval divided by the ends of c's Wilson interval (two 95 %
    intervals combined at their ends: at least 95 %). A node that answered the crawl and
    left before its end, or came online after its visit, is churn either way: the count
    describes the nodes online during the crawl, in the steady state as many as at any
    moment of it. Referrer-based corrections (Chapman between halves of the referrers,
    Chao's f1/f2) were tried on the emulated DHT and added 2 to 3 % where the crawl had
    missed 0.1 to 0.3 %: in Kademlia who lists a node is set by its neighbourhood, not
    drawn at random, so a node listed by one referrer says nothing of unseen ones."""
    zones = len(counts)
    if not zones:
        return Estimate(name, None, None, None, what, {"zones": 0, **detail})
    scale = 2.0 ** bits
    mean = sum(counts) / zones
    share, share_low, share_high = wilson(*checked) if checked else (1.0, 1.0, 1.0)
    share = share or share_high  # none of the checked nodes counted: no correction
    value = mean * scale / share
    info = {"zones": zones, "bits": bits, "counted": round(mean * scale),
            "completeness": round(share, 4),
            "completeness_checked": None if checked is None else list(checked), **detail}
    if zones < 2:
        return Estimate(name, value, None, None, what, info)
    variance = sum((c - mean) ** 2 for c in counts) / (zones - 1)
    half = t975(zones - 1) * math.sqrt(variance / zones) * scale
    low = max(0.0, mean * scale - half) / max(share_high, 1e-9)
    high = (mean * scale + half) / max(share_low, 1e-9)
    return Estimate(name, value, low, high, what, {
        **info, "standard_error": round(math.sqrt(variance / zones) * scale / share, 1)})


# --- measuring --------------------------------------------------------------------------------

@dataclass
class ZoneCounts:
    """What the crawl of one zone saw."""
    zone: str
    found: int = 0
    answered: int = 0
    skipped: int = 0
    reachable: float = 0.0
    """Nodes that answered, and the share of the skipped ones their IP's visits suggest."""
    listed: float = 0.0
    """Nodes found (answering or not)."""


@dataclass
class ZoneOptions:
    zones: int = 16
    nodes_per_zone: int = 500
    """Nodes that answer, in a zone (from the lookup-distance estimate): about twice as
    many are listed. Hundreds keep a zone's count near normal and its crawl short."""
    bits: int | None = None
    """The zones' width (None: from the size estimate and `nodes_per_zone`)."""
    concurrency: int = 256
    timeout: float = 5.0
    retries: int = 1
    """A lost datagram would count a node that answers as silent: one more try (on the
    emulated DHT, 1 % loss each way lost 2 % of the nodes without it)."""
    sample: bool = True
    per_ip_visits: int = 16
    size_lookups: int = 8
    """Lookups made first when the node's size estimate has fewer behind it."""
    check_lookups: int = 4
    """Lookups into each zone after its crawl, to measure what the crawl missed."""


@dataclass
class ZoneResult:
    reachable: Estimate
    listed: Estimate
    zones: list[ZoneCounts] = field(default_factory=list)
    bits: int = 0
    queries: int = 0
    seconds: float = 0.0
    size_estimate: dict | None = None
    stats: object = None

    def as_dict(self) -> dict:
        def interval(estimate: Estimate) -> dict:
            return {"value": None if estimate.value is None else round(estimate.value),
                    "low": None if estimate.low is None else round(estimate.low),
                    "high": None if estimate.high is None else round(estimate.high),
                    "standard_error": estimate.detail.get("standard_error"),
                    "completeness": estimate.detail.get("completeness")}
        return {"reachable": interval(self.reachable), "listed": interval(self.listed),
                "zones": len(self.zones), "bits": self.bits, "queries": self.queries,
                "seconds": round(self.seconds, 2)}


def count_zones(table: NodeTable, zones: Zones) -> list[ZoneCounts]:
    """Per zone, the nodes a sweep over `zones` found and that answered. A node skipped (its IP had had its visits: a Sybil cluster, a large
    NAT) counts as answering with the share of its IP's visited nodes that answered."""
    rows = [ZoneCounts(str(zone)) for zone in zones.zones]
    ids, flags = table.ids, table.flags
    members: list[list[int]] = [[] for _ in rows]
    visited_on: dict[int, list[int]] = {}  # IP -> [visited, answered]
    for number in range(len(flags)):
        flag = flags[number]
        if not flag & FOUND:
            continue
        where = zones.zone_of(ids[number * 20:number * 20 + 4])
        if where is None:
            continue
        members[where].append(number)
        if flag & VISITED and not flag & SKIPPED:
            tally = visited_on.setdefault(table.ip_key(number), [0, 0])
            tally[0] += 1
            tally[1] += bool(flag & ANSWERED)
    for row, numbers in zip(rows, members):
        skipped_answering = 0.0
        for number in numbers:
            flag = flags[number]
            row.found += 1
            if flag & ANSWERED:
                row.answered += 1
            elif flag & SKIPPED:
                row.skipped += 1
                visited, answered = visited_on.get(table.ip_key(number), (0, 0))
                skipped_answering += answered / visited if visited else 0.0
        row.listed = float(row.found)
        row.reachable = row.answered + skipped_answering
    return rows


async def estimate_size(node, options: ZoneOptions | None = None, *,
                        rng: random.Random | None = None, measurement: int = 1,
                        table: NodeTable | None = None, policy: SamplePolicy | None = None,
                        clock: Callable[[], float] = time.time,
                        on_sweep: Callable[[Sweep], None] | None = None,
                        zones: Zones | None = None, **sweep_callbacks) -> ZoneResult:
    """Estimate the DHT's size from the nodes of `options.zones` random zones, crawled
    completely from `node` (started and joined). `sweep_callbacks` (`on_visit`,
    `on_contact`, ...) go to the `Sweep`, to record what it saw; `on_sweep` gets the sweep
    before it starts (for progress). `zones` crawls those zones instead of new ones."""
    options = options or ZoneOptions()
    rng = rng or random.Random()
    started = node.clock()
    queries_before = node.stats.queries_sent
    size = node.estimated_size().as_dict()
    pilot = None
    if zones is None and options.bits is None:
        if (size.get("lookups") or 0) < options.size_lookups:
            await size_lookups(node, options.size_lookups, rng)
            size = node.estimated_size().as_dict()
        pilot = await pilot_size(node, size.get("size"), options, rng)
        bits = zone_bits(pilot["size"], options.nodes_per_zone)
    else:
        bits = options.bits if options.bits is not None else 0
    if zones is None:
        zones = pick_zones(options.zones, bits, rng)
    bits = zones.bits
    sweep = Sweep(node, measurement, table=table, policy=policy,
                  concurrency=options.concurrency, timeout=options.timeout,
                  retries=options.retries, sample=options.sample, clock=clock,
                  partition=zones, per_ip_visits=options.per_ip_visits, **sweep_callbacks)
    if on_sweep is not None:
        on_sweep(sweep)
    # The check's lookups go out with the crawl's first ones: the nodes they end on were
    # there when the crawl began, and stay listed (a real node evicts a contact only
    # minutes after it left), so a crawl that does not find one missed it.
    check = asyncio.ensure_future(check_lookups(node, zones, options.check_lookups, rng))
    try:
        for found in await asyncio.gather(*(node.find_node(zone.middle, timeout=30.0)
                                            for zone in zones.zones), return_exceptions=True):
            if isinstance(found, BaseException):
                continue  # that zone starts from what the other lookups found, or nobody
            for info in found:
                sweep.learn(info, None)
        stats = await sweep.run()
        checked_nodes = await check
    finally:
        check.cancel()
    rows = count_zones(sweep.table, zones)
    found, checked = completeness(sweep.table, zones, checked_nodes)
    detail = {"size_estimate": size.get("size"), "pilot": pilot, "skipped": stats.skipped}
    result = ZoneResult(
        reachable=zone_estimate("zones: nodes that answer", [r.reachable for r in rows], bits,
                                "reachable", (found, checked), **detail),
        listed=zone_estimate("zones: nodes listed", [r.listed for r in rows], bits, "listed",
                             (found, checked), **detail),
        zones=rows, bits=bits, queries=node.stats.queries_sent - queries_before,
        seconds=node.clock() - started, size_estimate=size, stats=stats)
    return result


PILOT_TIMEOUT = 2.0
PILOT_NODES = 30
"""A pilot zone with fewer nodes that answer is too narrow to say the density: widened."""


async def pilot_size(node, lookup_size: float | None, options: ZoneOptions,
                     rng: random.Random) -> dict:
    """The DHT's size from one narrow zone crawled first (no second tries, nothing
    recorded), to set the zones' width. The lookup-distance estimate alone will not do:
    on the emulated DHT (half the contacts silent, 1 % loss) 60 % of lookups ended short
    of the true closest nodes and it read 2.5 to 4 times low, which would make every zone
    that many times too wide (and the estimate that much slower). The pilot zone is 2 bits
    narrower than that estimate says (a quarter of `nodes_per_zone` if it were right);
    it holds at least `PILOT_NODES` answering nodes or is widened."""
    # No estimate yet: start as narrow as the public DHT's 20 million would need.
    bits = zone_bits((lookup_size or 20_000_000) * 4, options.nodes_per_zone)
    while True:
        zone = Zone(rng.randrange(1 << bits), bits) if bits else Zone(0, 0)
        zones = Zones([zone])
        # A short wait: the pilot only sets the width (a node 2 s away counts the next time).
        sweep = Sweep(node, 1, table=NodeTable(), concurrency=options.concurrency,
                      timeout=min(options.timeout, PILOT_TIMEOUT), retries=0, sample=False,
                      partition=zones,
                      per_ip_visits=options.per_ip_visits)
        try:
            found = await node.find_node(zone.middle, timeout=30.0)
        except Exception:  # noqa: BLE001 - nobody found: the walk starts from nothing
            found = []
        for info in found:
            sweep.learn(info, None)
        stats = await sweep.run()
        answered = sum(stats.answered.values())
        if answered >= PILOT_NODES or bits == 0:
            return {"size": answered * 2.0 ** bits, "bits": bits, "answered": answered,
                    "lookup_size": lookup_size}
        bits = max(0, bits - 2)


async def check_lookups(node, zones: Zones, lookups: int, rng: random.Random) -> list:
    """`lookups` lookups for random targets in each zone: the nodes they end on."""
    from mldht.ids import random_id_with_prefix

    async def one(zone: Zone) -> list:
        try:
            return await node.find_node(random_id_with_prefix(zone.prefix, zone.bits, rng),
                                        timeout=30.0)
        except Exception:  # noqa: BLE001 - one check less
            return []
    results = await asyncio.gather(*(one(zone) for zone in zones.zones
                                     for _ in range(lookups)))
    return [info for closest in results for info in closest]


def completeness(table: NodeTable, zones: Zones, checked: list) -> tuple[int, int]:
    """Of the distinct nodes in the zones that the check's lookups ended on, how many the
    crawl found, and how many there were (see `zone_estimate`)."""
    seen: set[int] = set()
    found = 0
    for info in checked:
        if not zones(bytes(info.id)):
            continue
        try:
            key = address_key(info.ip, info.port)
        except (OSError, ValueError):
            continue
        if key in seen:
            continue
        seen.add(key)
        number = table.index.get(key)
        found += number is not None and bool(table.flags[number] & FOUND)
    return found, len(seen)


async def size_lookups(node, count: int, rng: random.Random) -> None:
    """`count` lookups for random targets at once, for the node's size estimate."""
    from mldht.ids import random_id_with_prefix

    async def one(index: int) -> None:
        try:
            await node.find_node_lookup(random_id_with_prefix(index % 16, 4, rng), timeout=30.0)
        except Exception:  # noqa: BLE001 - one lookup less for the estimate
            pass
    await asyncio.gather(*(one(index) for index in range(count)))


class ZoneMeasurements:
    """Zone estimates from `node`, written to `store` as the sweeps of crawl `crawl_id` (of
    kind `estimate`): each measurement's visits, contacts, zones and its two estimates.
    Every measurement crawls the same zones (drawn at the first), so that consecutive
    measurements see the same nodes come and go."""

    def __init__(self, node, store, crawl_id: int, options: ZoneOptions, *,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.store = store
        self.crawl_id = crawl_id
        self.options = options
        self.rng = rng or random.Random()
        self.clock = clock
        self.table = NodeTable()
        self.policy = SamplePolicy()
        self.zones: Zones | None = None
        self.sweep: Sweep | None = None
        self.measurement = 0
        self.done = 0
        self.results: list[ZoneResult] = []
        self.presence: dict[int, list[int]] = {}
        """Node (its number in `table`) -> the measurements (from 0) it answered in."""
        self.times: list[float] = []
        """When each measurement began (the node's clock)."""

    def progress(self) -> dict | None:
        sweep = self.sweep
        if sweep is None:
            return None
        stats = sweep.stats
        return {"measurement": self.measurement, "zones": len(self.zones or ()),
                "found": sum(stats.found.values()), "visited": stats.visited,
                "answering": sum(stats.answered.values()), "queue": sweep.queued}

    def churn(self) -> dict | None:
        """Between the last two measurements: who left, who joined (`sessions.churn`)."""
        from .sessions import churn
        if len(self.times) < 2:
            return None
        steps = churn({node: [i for i in seen if i >= len(self.times) - 2]
                       for node, seen in self.presence.items()}, len(self.times))
        return steps[-1]

    def sessions(self) -> dict | None:
        """Session lengths so far (Kaplan-Meier over the runs of measurements in which a
        node answered; `sessions.py`), from three measurements on."""
        from .sessions import kaplan_meier, median_length, sessions
        if len(self.times) < 3:
            return None
        observed = sessions(self.presence, self.times)
        curve = kaplan_meier(observed)
        return {"observed": len(observed), "ended": sum(s.ended for s in observed),
                "median_s": median_length(curve),
                "survival": [[round(p.time, 1), round(p.survival, 4), round(p.low, 4),
                              round(p.high, 4)] for p in curve]}

    async def measure(self, number: int) -> ZoneResult:
        self.measurement = number
        self.times.append(self.node.clock())
        store, crawl = self.store, self.crawl_id
        options = self.options

        def on_sweep(sweep: Sweep) -> None:
            self.sweep = sweep
            self.zones = sweep.partition
        result = await estimate_size(
            self.node, options, rng=self.rng, measurement=number, table=self.table,
            policy=self.policy, clock=self.clock, on_sweep=on_sweep, zones=self.zones,
            on_visit=lambda row: store.add_visit({**row, "crawl": crawl}),
            on_contact=lambda c: store.add_contact(crawl, number, c.ip, c.port, c.family,
                                                   c.node_id, c.found_at, c.referrer),
            on_alias=lambda ip, port, node_id, referrer: store.add_alias(
                crawl, number, ip, port, node_id, referrer))
        for row in result.zones:
            store.add_zone(crawl, number, row.zone, result.bits, row.found, row.answered,
                           row.skipped, row.reachable, row.listed)
        for estimate in (result.reachable, result.listed):
            store.add_estimate(crawl, number, estimate.name, estimate.value, estimate.low,
                               estimate.high, estimate.counts,
                               {**estimate.detail, "queries": result.queries,
                                "seconds": round(result.seconds, 2)})
        await store.sweep_done(crawl, number)
        index = len(self.times) - 1
        table, zones = self.table, self.zones
        for node in range(len(table.flags)):
            if table.flags[node] & ANSWERED and zones(table.ids[node * 20:node * 20 + 4]):
                self.presence.setdefault(node, []).append(index)
        self.done = number
        self.results.append(result)
        return result

    async def shares(self, number: int, top: int = 8) -> dict:
        """What the nodes that answered measurement `number` run (read back from the store
        once the measurement is written): the `top` clients by share of them (by the
        client name mldht.clients gives their `v`, else `unknown`), the share whose id is
        valid for its IP under BEP 42, and the share of those asked that answer BEP 51."""
        where = "crawl=? AND sweep=?"
        args = (self.crawl_id, number)
        rows = await self.store.fetch(
            f"SELECT COALESCE(client, 'unknown'), COUNT(*) FROM visits WHERE {where} AND "
            "outcome='answered' GROUP BY 1 ORDER BY 2 DESC, 1", *args)
        answered = sum(n for _, n in rows)
        (valid, checked), = await self.store.fetch(
            f"SELECT SUM(CASE WHEN bep42=1 THEN 1 ELSE 0 END), COUNT(bep42) FROM visits "
            f"WHERE {where} AND outcome='answered'", *args)
        (supported, asked), = await self.store.fetch(
            f"SELECT SUM(CASE WHEN bep51=1 THEN 1 ELSE 0 END), COUNT(bep51) FROM visits "
            f"WHERE {where}", *args)

        def share(part, whole) -> float | None:
            return round((part or 0) / whole, 4) if whole else None
        return {"answered": answered,
                "clients": [{"client": name, "share": share(n, answered)}
                            for name, n in rows[:top]],
                "bep42": share(valid, checked), "bep51": share(supported, asked)}
