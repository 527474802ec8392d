"""What a simulated run measured, as a JSON-ready dict and as text.

Everything in the report is a function of the scenario (virtual times, counts): the same
seed gives the same report, byte for byte. Wall time and memory are kept apart (the
`resources` of a `SimulationResult`) since they are not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ..engine import Engine, LookupSummary
from ..routing import RoutingTable
from .network import Address, NetworkStats


@dataclass(slots=True)
class LookupRecord:
    """One lookup's outcome."""

    kind: str
    success: bool
    elapsed: float
    first_peer: float | None
    queried: int
    """Queries sent, second sends after a silence included."""
    answered: int
    timed_out: int
    hops: int | None
    max_hop: int
    first_peer_hop: int | None
    from_nat: bool
    peers: int = 0
    """Distinct peers a get_peers lookup returned..."""
    made_up: int = 0
    """...of which this many nobody announced (a poisoning Sybil's)."""

    @classmethod
    def of(cls, kind: str, success: bool, summary: LookupSummary, from_nat: bool,
           peers: int = 0, made_up: int = 0) -> "LookupRecord":
        return cls(kind, success, summary.elapsed, summary.time_to_first_peer,
                   summary.queried + summary.resent,
                   summary.answered, summary.timed_out, summary.hops, summary.max_hop,
                   summary.first_peer_hop, from_nat, peers, made_up)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def distribution(values: Iterable[float], digits: int = 3) -> dict:
    """mean, p50, p90, p99 and max of `values`, rounded."""
    values = list(values)
    if not values:
        return {"count": 0}
    result = {"count": len(values), "mean": round(sum(values) / len(values), digits)}
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        result[name] = round(percentile(values, fraction), digits)
    result["max"] = round(max(values), digits)
    return result


def summarize_lookups(records: Sequence[LookupRecord]) -> dict:
    """Success, latency (virtual seconds), messages and hops of `records`."""
    if not records:
        return {"count": 0}
    succeeded = [record for record in records if record.success]
    result = {
        "count": len(records),
        "success_rate": round(len(succeeded) / len(records), 4),
        "latency_s": distribution(record.elapsed for record in records),
        "queries": distribution((record.queried for record in records), 1),
        "timeouts": distribution((record.timed_out for record in records), 1),
        "hops": distribution((record.hops for record in records if record.hops is not None), 2),
        "max_hop": distribution((record.max_hop for record in records), 2),
    }
    firsts = [record.first_peer for record in records if record.first_peer is not None]
    if firsts:
        result["first_peer_s"] = distribution(firsts)
        result["first_peer_hop"] = distribution(
            (record.first_peer_hop for record in records if record.first_peer_hop is not None), 2)
    peers = sum(record.peers for record in records)
    made_up = sum(record.made_up for record in records)
    if made_up:
        result["peers_returned"] = peers
        result["made_up_peer_share"] = round(made_up / peers, 4)
    from_nat = [record for record in records if record.from_nat]
    if from_nat:
        result["from_nat"] = {"count": len(from_nat), "success_rate": round(
            sum(record.success for record in from_nat) / len(from_nat), 4)}
    return result


def table_fill(tables: Sequence[RoutingTable], nat: set[Address], sybil: set[Address],
               gone: set[Address]) -> dict:
    """Routing-table sizes and bucket fill of `tables`, and how many entries point at NAT'd,
    Sybil and dead or departed addresses."""
    if not tables:
        return {"nodes": 0}
    sizes: list[int] = []
    buckets = full = 0
    pointing = {"nat": 0, "sybil": 0, "gone": 0}
    for table in tables:
        size = 0
        for bucket in table.buckets:
            buckets += 1
            size += len(bucket.nodes)
            if len(bucket.nodes) >= bucket.capacity:
                full += 1
            for entry in bucket.nodes:
                address = entry.address
                if address in nat:
                    pointing["nat"] += 1
                if address in sybil:
                    pointing["sybil"] += 1
                if address in gone:
                    pointing["gone"] += 1
        sizes.append(size)
    total = sum(sizes)
    return {
        "nodes": len(tables),
        "size": {"mean": round(total / len(sizes), 1), "min": min(sizes), "max": max(sizes)},
        "buckets_mean": round(buckets / len(tables), 2),
        "full_bucket_fraction": round(full / buckets, 4),
        "entries_to_nat": pointing["nat"],
        "entries_to_sybil": pointing["sybil"],
        "entries_to_gone": pointing["gone"],
        "entry_fraction_nat": round(pointing["nat"] / total, 4) if total else 0.0,
        "entry_fraction_sybil": round(pointing["sybil"] / total, 4) if total else 0.0,
        "entry_fraction_gone": round(pointing["gone"] / total, 4) if total else 0.0,
    }


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one announce or put was stored."""

    stored: int
    """Nodes that accepted it."""
    on_sybils: int
    """...of which Sybils."""
    on_true_closest: int
    """How many of the k live honest nodes closest to the key hold it (k: all of them)."""


def summarize_placements(placements: Sequence[Placement], k: int) -> dict:
    """How stores landed: nodes per store, the share of stored copies on Sybils, how many of
    the k honest nodes that should hold each store do, and the share of stores that reached
    none of them (lost to a reader whose lookup ends on the honest closest nodes)."""
    copies = sum(p.stored for p in placements)
    return {
        "count": len(placements),
        "stored_on": distribution([p.stored for p in placements], 1),
        "sybil_share": round(sum(p.on_sybils for p in placements) / copies, 4) if copies else 0.0,
        "on_true_closest": distribution([p.on_true_closest for p in placements], 1),
        "true_closest_share": (round(sum(p.on_true_closest for p in placements)
                                     / (k * len(placements)), 4) if placements else None),
        "missed_true_closest": (round(sum(p.on_true_closest == 0 for p in placements)
                                      / len(placements), 4) if placements else None),
    }


def build_report(*, scenario: dict, records: Sequence[LookupRecord], phases: dict,
                 tables_after_bootstrap: dict, tables_at_end: dict, network_total: NetworkStats,
                 lookup_traffic: NetworkStats, lookup_queries: dict[str, int],
                 nodes: Sequence[Engine], churn: dict, dead: int,
                 sybils: int | None, announced: Sequence[Placement],
                 put: Sequence[Placement] = (), k: int = 8) -> dict:
    """The report of a run (see the module docstring)."""
    kinds = sorted({record.kind for record in records})
    lookups = {"all": summarize_lookups(records)}
    for kind in kinds:
        lookups[kind] = summarize_lookups([record for record in records if record.kind == kind])
    counters = {"timeouts": 0, "rate_limited": 0, "replies_dropped": 0,
                "receive_path_failures": 0, "id_changes": 0, "unmatched_received": 0}
    for node in nodes:
        for name in counters:
            counters[name] += getattr(node.stats, name)
    traffic = asdict(lookup_traffic)
    traffic["datagrams_per_lookup"] = (round(lookup_traffic.sent / len(records), 1)
                                       if records else None)
    traffic["queries_received_by_method"] = lookup_queries
    report = {
        "scenario": scenario,
        "virtual_seconds": {name: round(value, 3) for name, value in phases.items()},
        "lookups": lookups,
        "announces": {"swarms": len(announced), **summarize_placements(announced, k)},
        "puts": summarize_placements(put, k),
        "routing_tables": {"after_bootstrap": tables_after_bootstrap, "at_end": tables_at_end},
        "network": {"total": asdict(network_total), "lookup_phase": traffic},
        "node_counters": counters,
        "population": {"live_honest_at_end": len(nodes), "dead": dead, **churn},
    }
    if sybils is not None:
        report["population"]["sybil_queries_answered"] = sybils
    return report


def format_report(report: dict, resources: dict | None = None) -> str:
    """A short human-readable rendering of a report."""
    scenario = report["scenario"]
    lines = [f"{scenario['nodes']} nodes ({scenario['bootstrap']} bootstrap), "
             f"{scenario['lookups']} lookups, seed {scenario['seed']}; loss {scenario['loss']}, "
             f"dead {scenario['dead']}, churn {scenario['churn']}/min, nat {scenario['nat']}, "
             f"sybil {scenario['sybil']} ({scenario.get('sybil_strategy', 'eclipse')}), legacy ids "
             f"{scenario.get('legacy_ids', 0)}, latency median {scenario['latency_median'] * 1000:g} ms"]
    if scenario["config"]:
        lines.append("node config: " + ", ".join(f"{k}={v}" for k, v in scenario["config"].items()))
    for kind, summary in report["lookups"].items():
        if not summary.get("count"):
            continue
        latency, queries, hops = summary["latency_s"], summary["queries"], summary["hops"]
        line = (f"{kind:>9}: {summary['count']} lookups, success {summary['success_rate']:.2%}; "
                f"latency p50/p90/p99 {latency['p50']:.2f}/{latency['p90']:.2f}/"
                f"{latency['p99']:.2f} s; queries mean {queries['mean']} (p90 {queries['p90']}); "
                f"timeouts mean {summary['timeouts']['mean']}")
        if hops.get("count"):
            line += f"; hops mean {hops['mean']} (p90 {hops['p90']}, max {hops['max']})"
        lines.append(line)
        if "first_peer_s" in summary:
            first = summary["first_peer_s"]
            lines.append(f"{'':>11}first peer p50/p90/p99 {first['p50']:.2f}/{first['p90']:.2f}/"
                         f"{first['p99']:.2f} s")
        if "made_up_peer_share" in summary:
            lines.append(f"{'':>11}{summary['made_up_peer_share']:.1%} of the "
                         f"{summary['peers_returned']} peers returned were made up")
    for name in ("announces", "puts"):
        placed = report.get(name, {})
        if placed.get("count"):
            lines.append(f"{name:>9}: {placed['count']}, stored on {placed['stored_on']['mean']} "
                         f"nodes each, {placed['sybil_share']:.1%} of the copies on Sybils; "
                         f"{placed['true_closest_share']:.1%} of the {report['scenario']['config'].get('k', 8)}"
                         f" closest honest nodes hold each, "
                         f"{placed['missed_true_closest']:.1%} reached none of them")
    for when, tables in report["routing_tables"].items():
        if not tables.get("nodes"):
            continue
        size = tables["size"]
        lines.append(f"tables {when}: size mean {size['mean']} (min {size['min']}, max "
                     f"{size['max']}), {tables['buckets_mean']} buckets, "
                     f"{tables['full_bucket_fraction']:.1%} full; entries to NAT "
                     f"{tables['entry_fraction_nat']:.2%}, Sybil {tables['entry_fraction_sybil']:.2%},"
                     f" gone {tables['entry_fraction_gone']:.2%}")
    traffic = report["network"]["lookup_phase"]
    lines.append(f"lookup phase: {traffic['sent']} datagrams ({traffic['datagrams_per_lookup']} "
                 f"per lookup, background included), lost {traffic['lost']}, to gone "
                 f"{traffic['to_absent']}, NAT-dropped {traffic['nat_dropped']}")
    lines.append("virtual seconds: " + ", ".join(f"{k} {v:g}" for k, v in
                                                 report["virtual_seconds"].items()))
    population = report["population"]
    lines.append(f"population at end: {population['live_honest_at_end']} live honest, "
                 f"{population['dead']} dead, {population['departed']} departed, "
                 f"{population['joined']} joined")
    if resources:
        lines.append(f"wall {resources['wall_seconds']} s, peak RSS {resources['peak_rss_mb']} MB")
    return "\n".join(lines)
