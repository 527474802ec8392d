"""The time to the first peer, as curves, from the JSON that tools/bench/get_peers_emulated.py
--json prints: one panel per run (network), one curve per mode.

    python tools/bench/get_peers_plot.py RESULT.json [RESULT.json ...] --out FILE.png
        [--mode [LABEL:]MODE[|MODE...] ...]

Each curve is the share of lookups that had their first peer by a given time (a lookup
without a peer never gets there), so that p50 and p90 are where a curve crosses 0.5 and
0.9, and a curve to the left is faster everywhere, not only at two percentiles. `--mode`
picks the modes drawn and names them (`"no resends:warm+lookup_resends=false"`; the first
of `A|B` a run has, for runs that name the same code differently; by default every mode,
under its own name); a label has the same colour in every panel.
Prints each mode's p50, p90 and datagrams per lookup (queries and resends) too. matplotlib draws it (the report's plotting
library, already a dependency of the tools).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path: str) -> dict:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise SystemExit(f"get_peers_plot: cannot read {path}: {exc.strerror}")
    if not text:
        raise SystemExit(f"get_peers_plot: {path} is empty (a run still going?)")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"get_peers_plot: {path} is not get_peers_emulated.py's JSON: {exc}")
    if not isinstance(result, dict) or not isinstance(result.get("modes"), dict):
        raise SystemExit(f"get_peers_plot: {path} has no 'modes': not get_peers_emulated.py's JSON")
    return result


def chosen_modes(result: dict, picks: list[str]) -> list[tuple[str, str]]:
    """(mode, label) pairs to draw from one run, in the order asked for. A pick is
    `[LABEL:]MODE[|MODE...]`: the first of its modes the run has (runs made with different
    --variant sets name the same code differently), drawn as LABEL (else its name)."""
    if not picks:
        return [(mode, mode) for mode in result["modes"]]
    pairs = []
    for pick in picks:
        label, _, modes = pick.rpartition(":")
        mode = next((m for m in modes.split("|") if m in result["modes"]), None)
        if mode is not None:
            pairs.append((mode, label or mode))
    return pairs


def curve(rows: list[dict]) -> tuple[list[float], list[float]]:
    """The times of the first peers, sorted, and the share of all lookups done by each."""
    times = sorted(r["first_peer"] for r in rows if r.get("first_peer") is not None)
    return times, [(index + 1) / len(rows) for index in range(len(times))]


def title(result: dict) -> str:
    return f"{result.get('nodes', 0):,} nodes, seed {result.get('seed', '?')}"


def plot(runs: list[tuple[dict, list[tuple[str, str]]]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for _, pairs in runs for _, label in pairs))
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}
    figure, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.0), squeeze=False,
                                sharey=True)
    for axis, (result, pairs) in zip(axes[0], runs):
        for mode, label in pairs:
            times, shares = curve(result["modes"][mode]["rows"])
            axis.step([0.0] + times, [0.0] + shares, where="post", label=label,
                      color=colours[label])
        for level in (0.5, 0.9):
            axis.axhline(level, color="0.85", linewidth=0.8, zorder=0)
        axis.set_xscale("log")
        ticks = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]
        axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        times = [r["first_peer"] for mode, _ in pairs for r in result["modes"][mode]["rows"]
                 if r.get("first_peer")]
        if times:  # the ticks above must not widen the axis past the data
            axis.set_xlim(min(times) * 0.8, max(times) * 1.25)
        axis.set_xlabel("seconds to the first peer")
        axis.set_title(title(result))
        axis.grid(True, which="both", axis="x", color="0.92")
    axes[0][0].set_ylabel("share of lookups")
    axes[0][-1].legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="get_peers_plot.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", metavar="RESULT.json")
    parser.add_argument("--out", required=True, metavar="FILE.png")
    parser.add_argument("--mode", action="append", default=[], metavar="[LABEL:]MODE[|MODE...]")
    args = parser.parse_args(argv)
    runs = []
    for path in args.results:
        result = load(path)
        pairs = chosen_modes(result, args.mode)
        if not pairs:
            print(f"get_peers_plot: {path} has none of the modes asked for: left out",
                  file=sys.stderr)
            continue
        runs.append((result, pairs))
    if not runs:
        print("get_peers_plot: nothing to draw", file=sys.stderr)
        return 2
    def seconds(value) -> str:
        return "never" if value is None else f"{value:.2f}"
    print(f"{'network':<26} {'mode':<28} {'p50':>7} {'p90':>7} {'datagrams':>9}")
    for result, pairs in runs:
        for mode, label in pairs:
            row = result["modes"][mode]  # the benchmark's own summary of the mode
            queries, resent = row.get("queries_mean"), row.get("resent_mean")
            datagrams = "?" if queries is None else f"{queries + (resent or 0):.1f}"
            print(f"{title(result):<26} {label:<28} {seconds(row.get('first_peer_p50')):>7} "
                  f"{seconds(row.get('first_peer_p90')):>7} {datagrams:>9}")
    plot(runs, Path(args.out))
    print(f"drawn: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
