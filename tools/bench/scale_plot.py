"""Time and memory of sweeps against the size of the emulated DHT, on log-log axes, from the
JSON that tools/bench/crawl_emulated.py --json prints.

    python tools/bench/scale_plot.py RESULT.json [RESULT.json ...] --out docs/crawler-scale.png

One point per single-process run (partitioned runs are left out: their time and memory are
shared between processes): the sweep's wall time, the crawler's CPU time and its peak RSS,
each against the nodes found, with a line of slope 1 through the smallest run (what linear
cost looks like). Prints the points as a table too. matplotlib draws it (the report's
plotting library, already a dependency of the tools).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(paths: list[str]) -> list[dict]:
    runs = []
    for path in paths:
        text = Path(path).read_text().strip()
        if not text:
            print(f"scale_plot: {path} is empty (a run still going?): left out", file=sys.stderr)
            continue
        result = json.loads(text)
        if result.get("partitions", 1) == 1 and result.get("found"):
            runs.append(result)
    return sorted(runs, key=lambda r: r["found"])


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [r["found"] for r in runs]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, marker in (("sweep_seconds", "sweep, wall time", "o"),
                               ("crawler_cpu_seconds", "crawler, CPU time", "s")):
        values = [r[key] for r in runs]
        time_axis.loglog(found, values, marker=marker, label=label)
    base = runs[0]
    time_axis.loglog(found, [base["sweep_seconds"] * n / found[0] for n in found], ":",
                     color="grey", label="linear (slope 1)")
    time_axis.set_xlabel("nodes found")
    time_axis.set_ylabel("seconds")
    time_axis.set_title("time of one sweep")
    time_axis.legend()
    rss = [r["peak_rss_bytes"] / 2**20 for r in runs]
    memory_axis.loglog(found, rss, marker="o", label="crawler peak RSS")
    memory_axis.loglog(found, [200 * n / 2**20 for n in found], ":", color="grey",
                       label="200 bytes a node")
    database = [r["database_bytes"] / 2**20 for r in runs]
    memory_axis.loglog(found, database, marker="s", label="database (SQLite)")
    memory_axis.set_xlabel("nodes found")
    memory_axis.set_ylabel("MiB")
    memory_axis.set_title("memory and disk")
    memory_axis.legend()
    for axis in (time_axis, memory_axis):
        axis.grid(True, which="both", alpha=0.3)
    figure.suptitle("tools/crawler.py against the emulated DHT (tools/bench/crawl_emulated.py)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scale_plot.py", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out", default="docs/crawler-scale.png")
    args = parser.parse_args(argv)
    runs = load(args.results)
    if not runs:
        print("scale_plot: no single-process run to plot", file=sys.stderr)
        return 2
    print(f"{'online':>11} {'found':>11} {'sweep s':>8} {'CPU s':>8} {'RSS MiB':>8} "
          f"{'B/node':>7} {'q/node':>6} {'found %':>7}")
    for r in runs:
        print(f"{r['nodes']:>11,} {r['found']:>11,} {r['sweep_seconds']:>8} "
              f"{r['crawler_cpu_seconds']:>8} {r['peak_rss_bytes'] / 2**20:>8.0f} "
              f"{r['peak_rss_per_node']:>7} {r['queries_per_node']:>6} "
              f"{r['found_of_reachable_throughout']:>7}")
    plot(runs, Path(args.out))
    print(f"scale_plot: written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
