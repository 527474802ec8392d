"""Zone estimates against the truth, from the JSON of tools/bench/estimate_emulated.py --json:
each estimate's error with its 95 % interval, by number of zones and size of the DHT; and,
for a series (`--every`), the estimates over time against the moving truth.

    python tools/bench/estimate_plot.py RESULT.json [RESULT.json ...] --out docs/zone-estimates.png

Prints the summary table too (one row per size and number of zones). matplotlib draws it
(the report's plotting library, already a dependency of the tools).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def load(paths: list[str]) -> list[dict]:
    """The results, those of one size of DHT (several runs of the bench) merged."""
    merged: dict[tuple, dict] = {}
    for result in _read(paths):
        series = any("measurement" in run for run in result["runs"])
        key = (result["nodes"], series)
        if key in merged:
            merged[key]["runs"] += result["runs"]
        else:
            merged[key] = {**result, "runs": list(result["runs"])}
    return list(merged.values())


def _read(paths: list[str]) -> list[dict]:
    results = []
    for path in paths:
        text = Path(path).read_text().strip()
        if not text:
            print(f"estimate_plot: {path} is empty (a run still going?): left out",
                  file=sys.stderr)
            continue
        results.append(json.loads(text))
    return results


def table(results: list[dict]) -> list[dict]:
    rows = []
    for result in results:
        runs = [r for r in result["runs"] if "zones" in r and "measurement" not in r]
        for zones in sorted({r["zones"] for r in runs}):
            chosen = [r for r in runs if r["zones"] == zones]
            row = {"nodes": result["nodes"], "zones": zones, "runs": len(chosen),
                   "median_queries": statistics.median(r["queries"] for r in chosen),
                   "median_seconds": statistics.median(r["seconds"] for r in chosen),
                   "largest_seconds": max(r["seconds"] for r in chosen)}
            for name in ("reachable", "listed"):
                errors = [r[name]["error"] for r in chosen]
                row[name] = {"mean_abs_error": statistics.mean(abs(e) for e in errors),
                             "rms_error": statistics.mean(e * e for e in errors) ** 0.5,
                             "largest_abs_error": max(abs(e) for e in errors),
                             "within_3pc": sum(abs(e) <= 0.03 for e in errors),
                             "covered": sum(bool(r[name]["covers"]) for r in chosen)}
            rows.append(row)
    return rows


def show(rows: list[dict]) -> None:
    print(f"{'nodes':>11} {'Z':>3} {'runs':>4} | {'reachable: mean |err|':>21} {'largest':>8} "
          f"{'<=3%':>5} {'cover':>5} | {'listed: mean |err|':>18} {'largest':>8} {'<=3%':>5} "
          f"{'cover':>5} | {'queries':>8} {'s (median, max)':>15}")
    for row in rows:
        a, b = row["reachable"], row["listed"]
        print(f"{row['nodes']:>11,} {row['zones']:>3} {row['runs']:>4} | "
              f"{a['mean_abs_error']:>21.2%} {a['largest_abs_error']:>8.2%} "
              f"{a['within_3pc']:>5} {a['covered']:>5} | {b['mean_abs_error']:>18.2%} "
              f"{b['largest_abs_error']:>8.2%} {b['within_3pc']:>5} {b['covered']:>5} | "
              f"{row['median_queries']:>8,.0f} {row['median_seconds']:>7.1f}, "
              f"{row['largest_seconds']:.1f}")


def plot(results: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [r for r in results if any("measurement" in run for run in r["runs"])]
    single = [r for r in results if r not in series]
    panels = 1 + bool(series)
    figure, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.4), squeeze=False)
    errors_axis = axes[0][0]
    sizes = sorted({r["nodes"] for r in single})
    colours = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#a463f2"]
    zone_counts = sorted({run["zones"] for r in single for run in r["runs"] if "zones" in run})
    labelled: set[int] = set()
    for s_index, size in enumerate(sizes):
        runs = [run for r in single if r["nodes"] == size for run in r["runs"] if "zones" in run]
        for z_index, zones in enumerate(zone_counts):
            chosen = [run for run in runs if run["zones"] == zones]
            for k, run in enumerate(chosen):
                a = run["reachable"]
                x = z_index + (s_index - (len(sizes) - 1) / 2) * 0.25 + \
                    (k - len(chosen) / 2) * 0.018
                error = 100 * a["error"]
                low = 100 * (a["low"] / a["truth"] - 1)
                high = 100 * (a["high"] / a["truth"] - 1)
                errors_axis.errorbar([x], [error], yerr=[[error - low], [high - error]],
                                     fmt="o", markersize=3, elinewidth=0.8,
                                     color=colours[s_index % len(colours)],
                                     label=None if size in labelled else f"{size:,} nodes")
                labelled.add(size)
    errors_axis.axhspan(-3, 3, color="#3ca951", alpha=0.1, label="within 3 %")
    errors_axis.axhline(0, color="black", linewidth=0.8)
    errors_axis.set_xticks(range(len(zone_counts)), [str(z) for z in zone_counts])
    errors_axis.set_xlabel("zones an estimate crawls")
    errors_axis.set_ylabel("error of the estimate of nodes that answer (%)")
    errors_axis.set_title("Zone estimates against the truth (95 % intervals)")
    errors_axis.legend(fontsize=8, frameon=False)
    errors_axis.grid(axis="y", alpha=0.3)
    if series:
        axis = axes[0][1]
        runs = [run for run in series[0]["runs"] if "measurement" in run]
        start = min(run["at"] for run in runs)
        minutes = [(run["at"] - start) / 60 for run in runs]
        for key, colour, label in (("reachable", "#4269d0", "answer"),
                                   ("listed", "#efb118", "listed")):
            axis.plot(minutes, [run[key]["truth"] for run in runs], color=colour,
                      linestyle="--", label=f"truth: {label}")
            axis.errorbar(minutes, [run[key]["value"] for run in runs],
                          yerr=[[run[key]["value"] - run[key]["low"] for run in runs],
                                [run[key]["high"] - run[key]["value"] for run in runs]],
                          fmt="o", markersize=3, color=colour, label=f"estimate: {label}")
        axis.set_xlabel("minutes")
        axis.set_ylabel("nodes")
        axis.set_title(f"Every {round(minutes[1] - minutes[0], 1) if len(minutes) > 1 else '?'} "
                       f"min, a swinging DHT ({series[0]['nodes']:,} on average)")
        axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
            lambda value, _: f"{value:,.0f}"))
        axis.legend(fontsize=8, frameon=False)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"estimate_plot: {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="estimate_plot.py", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out", default="docs/zone-estimates.png")
    args = parser.parse_args(argv)
    results = load(args.results)
    if not results:
        print("estimate_plot: nothing to plot", file=sys.stderr)
        return 2
    show(table(results))
    plot(results, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
