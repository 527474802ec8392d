"""get_peers under Sybil attack, in the simulator: success, time to the first peer, queries
per lookup, the share of made-up peers and where announces and BEP 44 puts are stored
(on Sybils, on the honest nodes closest to the key), for each attacker strategy and share of Sybil
addresses, with the default configuration, the configuration before the Sybil defences and
BEP 42 enforcement, side by side (same seeds, same networks).

    python tools/bench/sybil.py --nodes 3000,10000 --seeds 1-3 --jobs 2

Every run is `mldht.sim` (tools/simulate.py): real engines on a virtual network and clock,
seeded routing tables (Sybils among them, under their home ids), 30 % of the honest nodes with ids that are not BEP 42 ids by default
(`--legacy-ids`), round trips around 200 ms. Figures are means over the seeds; `--json`
prints every run's numbers too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mldht import NodeConfig  # noqa: E402
from mldht.sim import Scenario, run_scenario  # noqa: E402
from mldht.sim.sybil import STRATEGIES  # noqa: E402

BEFORE_DEFENCES: dict = {"max_believed_shared_bits": 0, "store_nodes": 8,
                          "widen_peerless_lookups": 8}
"""The NodeConfig fields that turn this work's Sybil defences off: the configuration of
main before them (filled in as each defence lands, so that the comparison stays one run)."""
CONFIGS = {
    "default": {},
    "before": BEFORE_DEFENCES,
    "enforce": {"enforce_node_id": True},
}


def parse_range(text: str) -> list[int]:
    values: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        values += list(range(int(low), int(high or low) + 1))
    return values


def one_run(job: tuple) -> dict:
    nodes, strategy, share, config_name, seed, lookups, legacy, items = job
    config = replace(NodeConfig(), **CONFIGS[config_name])
    scenario = Scenario(nodes=nodes, lookups=lookups, seed=seed, sybil=share, items=items,
                        sybil_strategy=strategy, legacy_ids=legacy, lookup_kind="get_peers",
                        bootstrap="seeded", config=config)
    started = time.perf_counter()
    report = run_scenario(scenario).report
    summary = report["lookups"]["get_peers"]
    first = summary.get("first_peer_s", {})
    return {"nodes": nodes, "strategy": strategy, "sybil": share, "config": config_name,
            "seed": seed, "success": summary["success_rate"],
            "first_peer_p50": first.get("p50"), "first_peer_p90": first.get("p90"),
            "queries": summary["queries"]["mean"],
            "made_up_share": summary.get("made_up_peer_share", 0.0),
            **{f"{name}_{field}": report[key][field] for name, key in
               (("announce", "announces"), ("put", "puts"))
               for field in ("sybil_share", "true_closest_share", "missed_true_closest")},
            "wall_s": round(time.perf_counter() - started, 1)}


PLACEMENT = [f"{name}_{field}" for name in ("announce", "put")
             for field in ("sybil_share", "true_closest_share", "missed_true_closest")]


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="3000,10000", help="network sizes, comma-separated")
    parser.add_argument("--seeds", default="1-3", help="e.g. 1-3 or 1,4,7")
    parser.add_argument("--fractions", default="0,0.01,0.05,0.2",
                        help="shares of the addresses that are Sybils")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--legacy-ids", type=float, default=0.3,
                        help="share of honest nodes without BEP 42 ids (default 0.3)")
    parser.add_argument("--items", type=int, default=20,
                        help="BEP 44 puts per run, besides the 20 announces (default 20)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    strategies = args.strategies.split(",")
    configs = args.configs.split(",")
    for name in strategies:
        if name not in STRATEGIES:
            parser.error(f"unknown strategy {name!r}")
    for name in configs:
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r} (one of {', '.join(CONFIGS)})")
    fractions = [float(f) for f in args.fractions.split(",")]
    jobs = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        for share in fractions:
            # Without Sybils the strategy does not matter: one row.
            for strategy in (strategies[:1] if share == 0 else strategies):
                for config in configs:
                    for seed in parse_range(args.seeds):
                        jobs.append((nodes, strategy, share, config, seed, args.lookups,
                                     args.legacy_ids, args.items))
    print(f"sybil: {len(jobs)} runs on {args.jobs} processes", file=sys.stderr, flush=True)
    results = []
    pool = multiprocessing.Pool(args.jobs) if args.jobs > 1 else None
    try:
        runs = pool.imap(one_run, jobs) if pool is not None else map(one_run, jobs)
        for done, result in enumerate(runs, 1):
            results.append(result)
            print(f"sybil: {done}/{len(jobs)} {result['nodes']} nodes {result['strategy']} "
                  f"{result['sybil']:.0%} {result['config']} seed {result['seed']}: success "
                  f"{result['success']:.1%} ({result['wall_s']} s)", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    rows = []
    keys = sorted({(r["nodes"], r["sybil"], r["strategy"], r["config"]) for r in results},
                  key=lambda key: (key[0], key[1], STRATEGIES.index(key[2]), configs.index(key[3])))
    for nodes, share, strategy, config in keys:
        same = [r for r in results if (r["nodes"], r["sybil"], r["strategy"], r["config"])
                == (nodes, share, strategy, config)]
        rows.append({"nodes": nodes, "sybil": share,
                     "strategy": strategy if share else "-", "config": config,
                     "seeds": len(same), "success": mean(r["success"] for r in same),
                     "first_peer_p50": mean(r["first_peer_p50"] for r in same),
                     "first_peer_p90": mean(r["first_peer_p90"] for r in same),
                     "queries": mean(r["queries"] for r in same),
                     "made_up_share": mean(r["made_up_share"] for r in same),
                     **{name: mean(r[name] for r in same) for name in PLACEMENT}})
    if args.json:
        print(json.dumps({"rows": rows, "runs": results, "legacy_ids": args.legacy_ids,
                          "lookups": args.lookups}, indent=1))
        return 0
    print("Stores: of the copies of each announce (put), the share on Sybils, and the share of "
          "the k honest nodes closest to the key that hold one.")
    print(f"{'nodes':>6} {'sybil':>6} {'strategy':>10} {'config':>8} {'success':>8} "
          f"{'first p50':>9} {'p90':>6} {'queries':>7} {'made up':>7} {'ann Sybil':>9} "
          f"{'ann held':>8} {'put Sybil':>9} {'put held':>8}")
    for row in rows:
        print(f"{row['nodes']:>6} {row['sybil']:>6.0%} {row['strategy']:>10} {row['config']:>8} "
              f"{row['success']:>8.1%} {row['first_peer_p50'] or 0:>9.2f} "
              f"{row['first_peer_p90'] or 0:>6.2f} {row['queries']:>7.1f} "
              f"{row['made_up_share'] or 0:>7.1%} {row['announce_sybil_share'] or 0:>9.1%} "
              f"{row['announce_true_closest_share'] or 0:>8.1%} {row['put_sybil_share'] or 0:>9.1%} "
              f"{row['put_true_closest_share'] or 0:>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
