"""Lookup quality: mldht's traversal next to libtorrent's, in the simulator.

    python tools/bench/lookups.py [--nodes 1000] [--lookups 300] [--dead 0.2] [--seed 1]

Runs the same seeded simulation (mldht.sim: real nodes on a virtual network with lognormal
latencies, median 100 ms one way, and a fraction `--dead` of the nodes silenced before the
lookups) twice: once with mldht's defaults, once with the `libtorrent` parameter set of
tools/simulate.py (5 queries in flight, a fixed 1 s soft timeout, a lookup that waits for
every closer query still out). Prints, for each, success, latency percentiles, time to the
first peer and queries per lookup (virtual time), and the ratio. No socket is opened.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mldht import NodeConfig  # noqa: E402
from mldht.sim import Scenario, run_scenario  # noqa: E402
from simulate import PRESETS  # noqa: E402


def measure(nodes: int, lookups: int, dead: float, seed: int) -> dict[str, dict]:
    rows = {}
    for name in ("mldht", "libtorrent"):
        config = dataclasses.replace(NodeConfig(), **PRESETS[name])
        result = run_scenario(Scenario(nodes=nodes, lookups=lookups, dead=dead, seed=seed,
                                       config=config))
        summary = result.report["lookups"]["all"]
        rows[name] = {
            "success": summary["success_rate"],
            "latency_p50": summary["latency_s"]["p50"], "latency_p90": summary["latency_s"]["p90"],
            "latency_p99": summary["latency_s"]["p99"],
            **{f"first_peer_{q}": result.report["lookups"]["get_peers"]["first_peer_s"][q]
               for q in ("p50", "p90", "p99")},
            "queries_mean": summary["queries"]["mean"], "hops_mean": summary["hops"]["mean"],
            "wall_seconds": result.resources.get("wall_seconds"),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--dead", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.nodes, args.lookups, args.dead, args.seed)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.nodes} nodes, {args.lookups} lookups, {args.dead:.0%} dead, seed {args.seed} "
          "(virtual seconds)")
    columns = ["success", "latency_p50", "latency_p90", "latency_p99", "first_peer_p50",
               "first_peer_p90", "first_peer_p99", "queries_mean", "hops_mean"]
    print(f"{'traversal':12}" + "".join(f"{c:>15}" for c in columns))
    for name, row in rows.items():
        print(f"{name:12}" + "".join(f"{row[c]:15.3f}" for c in columns))
    mine, theirs = rows["mldht"], rows["libtorrent"]
    print(f"mldht / libtorrent: queries {mine['queries_mean'] / theirs['queries_mean']:.2f}, "
          f"p90 latency {mine['latency_p90'] / theirs['latency_p90']:.2f}, first peer "
          + ", ".join(f"{q} {mine[f'first_peer_{q}'] / theirs[f'first_peer_{q}']:.2f}"
                      for q in ("p50", "p90", "p99")))


if __name__ == "__main__":
    main()
