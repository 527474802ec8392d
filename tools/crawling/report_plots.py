"""The crawl report's plots: SVG files drawn by matplotlib (Agg) from the summary's numbers."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from .report_figures import TOP_CLIENTS

PLOT_FORMAT = "svg"
PLOT_NAMES = ("estimates", "size_over_time", "clients", "features", "rtt", "answers", "samples",
              "churn", "sessions", "zone_series", "zone_sessions")
COLOURS = {"blue": "#4269d0", "orange": "#efb118", "red": "#ff725c", "teal": "#6cc5b0",
           "green": "#3ca951", "pink": "#ff8ab7", "purple": "#a463f2", "sky": "#97bbf5",
           "brown": "#9c6b4e", "grey": "#9498a0"}
SERIES = list(COLOURS.values())


# --- plots ------------------------------------------------------------------------------------

def _text(label, limit: int = 42) -> str:
    """A label from the database as plain text for matplotlib (no mathtext)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(label))
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def nodes_text(value: float) -> str:
    """A node count or estimate: `12,345`, or `6.5` below 100."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}".removesuffix(".0")


def new_figure(width: float = 9.0, height: float = 4.5, ncols: int = 1):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols) if ncols > 1 else fig.subplots()
    for ax in (axes if ncols > 1 else [axes]):
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_axisbelow(True)
    return fig, axes


def _thousands(ax, axis: str = "y") -> None:
    """Counts on a linear axis: whole ticks only, with thousands separators."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    target.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))


def _log_axis(ax, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}" if x >= 1 else f"{x:g}"))


def save_figure(fig, out_dir: Path, name: str) -> str:
    import matplotlib
    filename = f"{name}.{PLOT_FORMAT}"
    with matplotlib.rc_context({"svg.hashsalt": "mldht-crawl-report"}):
        fig.savefig(out_dir / filename, format=PLOT_FORMAT,
                    metadata={"Date": None} if PLOT_FORMAT == "svg" else None)
    return filename


def _legend_above(ax, ncols: int = 3) -> None:
    """The legend in a band above the tallest bar, never over one."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + (top - bottom) * 0.16)
    ax.legend(fontsize=8.5, loc="upper center", ncols=ncols, frameon=False)


def _error_bars(rows: list[dict]) -> list[list[float]]:
    lower = [max(r["value"] - r["low"], 0.0) if r["low"] is not None else 0.0 for r in rows]
    upper = [max(r["high"] - r["value"], 0.0) if r["high"] is not None else 0.0 for r in rows]
    return [lower, upper]


def _use_log(values: list[float]) -> bool:
    positive = [v for v in values if v and v > 0]
    return len(positive) >= 2 and max(positive) / min(positive) > 20


def plot_estimates(out_dir: Path, crawl: dict) -> str | None:
    rows = [r for r in crawl["estimates"] if r["value"] is not None and r["value"] > 0]
    if not rows:
        return None
    fig, ax = new_figure(9, max(2.6, 1.4 + 0.62 * len(rows)))
    positions = list(range(len(rows)))[::-1]
    colour_of = {"listed": COLOURS["grey"], "answered": COLOURS["teal"],
                 "reachable": COLOURS["blue"], "alive": COLOURS["orange"]}
    for y, row in zip(positions, rows):
        colour = colour_of.get(row["counts"], COLOURS["purple"])
        if row["high"] is None:  # a count: no interval
            ax.plot([row["value"]], [y], "D", color=colour, markersize=7)
        else:
            ax.errorbar([row["value"]], [y], xerr=_error_bars([row]), fmt="o", color=colour,
                        capsize=5, markersize=7, elinewidth=2)
        interval = ""
        if row["high"] is not None and row["low"] is not None:
            interval = f"  [{nodes_text(row['low'])} – {nodes_text(row['high'])}]"
        ax.annotate(f"{nodes_text(row['value'])}{interval}", (row["value"], y), xytext=(0, 8),
                    textcoords="offset points", ha="center", fontsize=8.5)
    ax.set_yticks(positions, [f"{_text(r['name'])}\ncounts: {_text(r['counts'])}"
                              for r in rows], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.25)
    values = [v for r in rows for v in (r["value"], r["low"], r["high"]) if v]
    if _use_log(values):
        _log_axis(ax, "x")
        ax.margins(x=0.12)
    else:
        ax.set_xlim(0, max(values) * 1.15)
        _thousands(ax, "x")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("nodes (dot and bar: estimate and its 95 % interval; diamond: a count)")
    ax.set_ylabel("estimate (what it counts)")
    ax.set_title(f"Size estimates side by side: crawl {crawl['id']}, sweep {crawl['sweep']}")
    return save_figure(fig, out_dir, "estimates")


def plot_size_over_time(out_dir: Path, rows: list[dict], source: str) -> str | None:
    rows = [r for r in rows if r["value"] is not None and r["value"] > 0 and r["at"]]
    if len({r["at"] for r in rows}) < 2:
        return None
    import matplotlib.dates as mdates
    fig, ax = new_figure(10, 5)
    names = list(dict.fromkeys(r["name"] for r in rows))
    for i, name in enumerate(names):
        series = [r for r in rows if r["name"] == name]
        times = [datetime.fromtimestamp(r["at"], timezone.utc) for r in series]
        ax.errorbar(times, [r["value"] for r in series], yerr=_error_bars(series),
                    fmt="-o", color=SERIES[i % len(SERIES)], capsize=4, markersize=5,
                    label=_text(f"{name} · counts {series[0]['counts']}", 60))
    if _use_log([v for r in rows for v in (r["value"], r["low"], r["high"]) if v]):
        _log_axis(ax, "y")
    else:
        ax.set_ylim(bottom=0)
        _thousands(ax)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="best")
    ax.set_xlabel("time of the estimate (UTC)")
    ax.set_ylabel("nodes (bars: 95 % interval)")
    ax.set_title("Network size over time across crawls" +
                 (" (counts only: no estimate stored)" if source != "estimates" else ""))
    return save_figure(fig, out_dir, "size_over_time")


def plot_clients(out_dir: Path, crawl: dict) -> str | None:
    clients = crawl["clients"]
    total = crawl["answered"]["total"]
    if not clients or not total:
        return None
    shown = clients[:TOP_CLIENTS]
    rest = clients[TOP_CLIENTS:]
    bars = [(c["client"], c["nodes"]) for c in shown]
    if rest:
        bars.append((f"other ({len(rest)} more)", sum(c["nodes"] for c in rest)))
    fig, ax = new_figure(9, max(2.6, 1.3 + 0.34 * len(bars)))
    positions = list(range(len(bars)))[::-1]
    colours = [COLOURS["grey"] if label.startswith(("other (", "unknown (v", "no v key"))
               else COLOURS["blue"] for label, _ in bars]
    ax.barh(positions, [n for _, n in bars], color=colours, height=0.7)
    ax.set_yticks(positions, [_text(label) for label, _ in bars])
    peak = max(n for _, n in bars)
    for y, (_, n) in zip(positions, bars):
        ax.text(n + peak * 0.01, y, f"{n:,} ({100 * n / total:.1f} %)", va="center",
                fontsize=8.5)
    ax.set_xlim(0, peak * 1.22)
    _thousands(ax, "x")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("nodes that answered")
    ax.set_ylabel("client (from v)")
    ax.set_title(f"Clients: top {min(TOP_CLIENTS, len(clients))} of {len(clients)} "
                 f"(crawl {crawl['id']}, sweep {crawl['sweep']}, {total:,} nodes)")
    return save_figure(fig, out_dir, "clients")


def plot_features(out_dir: Path, crawl: dict) -> str | None:
    found, answered = crawl["found"], crawl["answered"]
    outcomes = crawl["outcomes"]
    other = sum(n for k, n in outcomes.items() if k not in ("answered", "timeout", "error"))
    rows = [
        ("nodes found", [("IPv4", found["ipv4"], COLOURS["blue"]),
                         ("IPv6", found["ipv6"], COLOURS["orange"])]),
        ("nodes that answered", [("IPv4", answered["ipv4"], COLOURS["blue"]),
                                 ("IPv6", answered["ipv6"], COLOURS["orange"])]),
        ("visits", [("answered", outcomes.get("answered", 0), COLOURS["green"]),
                    ("timeout", outcomes.get("timeout", 0), COLOURS["grey"]),
                    ("error", outcomes.get("error", 0), COLOURS["red"]),
                    ("other", other, COLOURS["brown"])]),
        ("BEP 42 id (answered)", [("valid", crawl["bep42"]["valid"], COLOURS["green"]),
                                  ("not valid", crawl["bep42"]["checked"] -
                                   crawl["bep42"]["valid"], COLOURS["red"])]),
        ("BEP 51 (asked)", [("supports", crawl["bep51"]["supported"], COLOURS["green"]),
                            ("refuses", crawl["bep51"]["asked"] - crawl["bep51"]["supported"],
                             COLOURS["red"])]),
    ]
    if not any(n for _, parts in rows for _, n, _ in parts):
        return None
    fig, ax = new_figure(10, 3.6)
    labels = []
    for y, (label, parts) in zip(range(len(rows) - 1, -1, -1), rows):
        whole = sum(n for _, n, _ in parts)
        labels.append((y, f"{label}\n(n = {whole:,})" if whole else f"{label}\n(no data)"))
        left = 0.0
        for part, n, colour in parts:
            if not whole or not n:
                continue
            width = 100 * n / whole
            ax.barh(y, width, left=left, color=colour, height=0.66, edgecolor="white")
            if width >= 10:
                ax.text(left + width / 2, y, f"{part} {width:.1f} %", ha="center", va="center",
                        fontsize=8.5, color="black")
            elif width >= 5:
                ax.text(left + width / 2, y, f"{width:.0f} %", ha="center", va="center",
                        fontsize=8)
            left += width
    ax.set_yticks([y for y, _ in labels], [text for _, text in labels], fontsize=8.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share (%)")
    ax.set_ylabel("population")
    ax.set_title(f"IPv4 / IPv6, visit outcomes, BEP 42 and BEP 51 (crawl {crawl['id']}, "
                 f"sweep {crawl['sweep']})")
    return save_figure(fig, out_dir, "features")


def plot_rtt(out_dir: Path, crawl: dict) -> str | None:
    rtt = crawl["rtt"]
    histogram = rtt["histogram"]
    if not rtt["count"] or not histogram:
        return None
    fig, ax = new_figure(9, 4.2)
    edges, counts, width = histogram["edges_ms"], histogram["counts"], histogram["bin_ms"]
    ax.bar(edges[:-1], counts, width=width, align="edge", color=COLOURS["sky"],
           edgecolor=COLOURS["blue"], linewidth=0.5, label=f"{rtt['count']:,} replies")
    if histogram["overflow"]:
        ax.bar([edges[-1]], [histogram["overflow"]], width=width, align="edge",
               color=COLOURS["grey"], label=f"≥ {edges[-1]:,.0f} ms")
    for p, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        ax.axvline(rtt[f"{p}_ms"], color=COLOURS["red"], linestyle=style, linewidth=1.3,
                   label=f"{p} {rtt[f'{p}_ms']:,.0f} ms")
    ax.set_xlim(0, edges[-1] + (width if histogram["overflow"] else 0))
    _thousands(ax)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper right")
    ax.set_xlabel(f"round-trip time (ms, bins of {width:g} ms)")
    ax.set_ylabel("nodes that answered")
    ax.set_title(f"Round-trip times (crawl {crawl['id']}, sweep {crawl['sweep']})")
    return save_figure(fig, out_dir, "rtt")


def plot_answers(out_dir: Path, crawl: dict) -> str | None:
    per_visit = crawl["queries_per_visit"]
    per_node = crawl["answered_per_node"]["nodes_by_sweeps_answered"]
    if not per_visit and not per_node:
        return None
    fig, (left, right) = new_figure(10, 4, ncols=2)
    keys = sorted(per_visit, key=int)
    outcomes = ["answered", "timeout", "error"]
    outcomes += sorted({o for k in keys for o in per_visit[k]} - set(outcomes))
    palette = {"answered": COLOURS["green"], "timeout": COLOURS["grey"], "error": COLOURS["red"]}
    bottom = [0] * len(keys)
    for outcome in outcomes:
        heights = [per_visit[k].get(outcome, 0) for k in keys]
        if any(heights):
            left.bar(keys, heights, bottom=bottom, label=_text(outcome),
                     color=palette.get(outcome, COLOURS["brown"]), width=0.6)
            bottom = [b + h for b, h in zip(bottom, heights)]
    if keys:
        _legend_above(left)
    _thousands(left)
    left.grid(axis="y", alpha=0.3)
    left.set_xlabel("queries sent to the node")
    left.set_ylabel("visits")
    left.set_title(f"Queries per visit (sweep {crawl['sweep']})", fontsize=10.5)
    node_keys = sorted(per_node, key=int)
    right.bar(node_keys, [per_node[k] for k in node_keys], color=COLOURS["teal"], width=0.6)
    _thousands(right)
    right.grid(axis="y", alpha=0.3)
    right.set_xlabel(f"sweeps it answered in (of {crawl['answered_per_node']['sweeps']})")
    right.set_ylabel("nodes (IPs)")
    right.set_title("Answers per node across the crawl's sweeps", fontsize=10.5)
    fig.suptitle(f"Answers per node (crawl {crawl['id']})")
    return save_figure(fig, out_dir, "answers")


def _short_crawl_label(c: dict) -> str:
    when = datetime.fromtimestamp(c["started_at"], timezone.utc).strftime("%m-%d %H:%M")
    return f"#{c['id']}\n{when}"


def _sparse_ticks(ax, positions, labels, most: int = 16) -> None:
    step = max(1, math.ceil(len(positions) / most))
    ax.set_xticks(positions[::step], labels[::step], fontsize=8)


def plot_samples(out_dir: Path, crawls: list[dict]) -> str | None:
    crawls = [c for c in crawls if c["samples"]["received"] or c["samples"]["rows"]]
    if not crawls:
        return None
    fig, ax = new_figure(max(7, 1.2 * len(crawls) + 3), 4.2)
    series = (("received", "samples received", COLOURS["sky"]),
              ("rows", "distinct (infohash, node)", COLOURS["blue"]),
              ("distinct_infohashes", "distinct infohashes", COLOURS["orange"]))
    width = 0.8 / len(series)
    x = list(range(len(crawls)))
    for i, (key, label, colour) in enumerate(series):
        ax.bar([p + (i - 1) * width for p in x], [c["samples"][key] for c in crawls],
               width=width, label=label, color=colour)
    _sparse_ticks(ax, x, [_short_crawl_label(c) for c in crawls])
    _thousands(ax)
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax)
    ax.set_xlabel("crawl (start, UTC)")
    ax.set_ylabel("infohashes")
    ax.set_title("BEP 51 samples and distinct infohashes per crawl")
    return save_figure(fig, out_dir, "samples")


def plot_churn(out_dir: Path, pairs: list[dict], crawls: dict) -> str | None:
    if not pairs:
        return None
    fig, ax = new_figure(max(7, 1.1 * len(pairs) + 3), 4.5)
    x = list(range(len(pairs)))
    bottom = [0] * len(pairs)
    for key, label, colour in (("stayed", "stayed (in both)", COLOURS["teal"]),
                               ("left", "left (only in the earlier)", COLOURS["red"]),
                               ("arrived", "arrived (only in the later)", COLOURS["blue"])):
        heights = [p["by_id"][key] for p in pairs]
        ax.bar(x, heights, bottom=bottom, label=label, color=colour, width=0.6)
        bottom = [b + h for b, h in zip(bottom, heights)]
    labels = [f"#{p['from']} → #{p['to']}\n{duration_text(p['gap_s'])} apart" for p in pairs]
    _sparse_ticks(ax, x, labels)
    _thousands(ax)
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax)
    ax.set_xlabel("consecutive crawls")
    ax.set_ylabel("nodes that answered (by node id)")
    ax.set_title("Churn between consecutive crawls")
    return save_figure(fig, out_dir, "churn")


def plot_sessions(out_dir: Path, sessions: dict | None) -> str | None:
    if not sessions or not (sessions["complete"] or sessions["censored"]):
        return None
    keys = sorted(set(sessions["complete"]) | set(sessions["censored"]), key=int)
    fig, ax = new_figure(max(6, 0.6 * len(keys) + 4), 4.2)
    complete = [sessions["complete"].get(k, 0) for k in keys]
    censored = [sessions["censored"].get(k, 0) for k in keys]
    ax.bar(keys, complete, color=COLOURS["purple"], width=0.6,
           label="began and ended within the crawls")
    ax.bar(keys, censored, bottom=complete, color=COLOURS["purple"], alpha=0.35, width=0.6,
           hatch="//", label="at the first or last crawl (censored)")
    _thousands(ax)
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax, ncols=2)
    gap = duration_text(sessions['median_gap_s'])
    ax.set_xlabel(f"session length (consecutive crawls, about {gap} "
                  "apart)")
    ax.set_ylabel("sessions (node ids)")
    ax.set_title(f"Session lengths over {sessions['crawls']} crawls")
    return save_figure(fig, out_dir, "sessions")


def duration_text(seconds: float | None) -> str:
    """A duration for people: `40 s`, `12 min`, `6 h`, `1.5 h`, `3.2 days`."""
    if seconds is None:
        return "?"
    for unit, size, limit in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800),
                              ("days", 86400, math.inf)):
        if seconds < limit:
            text = f"{seconds / size:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return "?"


# --- zone estimates ------------------------------------------------------------------------

def _thousands_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def plot_zone_series(out_dir: Path, series: list[dict]) -> str | None:
    """Size with its 95 % band over time (each estimate crawl), and the churn per step."""
    shown = [s for s in series if len(s["measurements"]) >= 1]
    if not shown:
        return None
    fig, (size_ax, churn_ax) = new_figure(12, 4.5, ncols=2)
    start = min(m["at"] for s in shown for m in s["measurements"])
    for number, one in enumerate(shown):
        for key, colour, label in (("reachable", COLOURS["blue"], "nodes that answer"),
                                   ("listed", COLOURS["orange"], "nodes listed")):
            points = [m for m in one["measurements"] if m.get(key, {}).get("value")]
            if not points:
                continue
            minutes = [(m["at"] - start) / 60 for m in points]
            size_ax.plot(minutes, [m[key]["value"] for m in points], marker="o",
                         color=colour, label=label if number == 0 else None)
            lows = [m[key]["low"] if m[key]["low"] is not None else m[key]["value"]
                    for m in points]
            highs = [m[key]["high"] if m[key]["high"] is not None else m[key]["value"]
                     for m in points]
            size_ax.fill_between(minutes, lows, highs, color=colour, alpha=0.2, linewidth=0)
        steps = one["churn"]
        if steps:
            x = [(one["measurements"][s["to"] - 1]["at"] - start) / 60 for s in steps]
            churn_ax.plot(x, [100 * (s["left_share"] or 0) for s in steps], marker="v",
                          color=COLOURS["red"], label="left" if number == 0 else None)
            churn_ax.plot(x, [100 * (s["joined_share"] or 0) for s in steps], marker="^",
                          color=COLOURS["teal"], label="joined" if number == 0 else None)
    size_ax.set_xlabel("minutes")
    size_ax.set_ylabel("nodes (95 % band)")
    size_ax.set_title("Size from zone estimates")
    size_ax.yaxis.set_major_formatter(_thousands_formatter())
    size_ax.grid(alpha=0.3)
    size_ax.legend(fontsize=8.5, frameon=False)
    churn_ax.set_xlabel("minutes")
    churn_ax.set_ylabel("% of the zones' answering nodes")
    churn_ax.set_title("Churn between measurements")
    churn_ax.grid(alpha=0.3)
    if any(s["churn"] for s in shown):
        churn_ax.legend(fontsize=8.5, frameon=False)
    return save_figure(fig, out_dir, "zone_series")


def plot_zone_sessions(out_dir: Path, series: list[dict]
                  ) -> str | None:
    """Kaplan-Meier survival of session lengths, with its 95 % band."""
    curves = [s for s in series if s["sessions"]["survival"]]
    if not curves:
        return None
    fig, ax = new_figure(7.5, 4.5)
    palette = list(COLOURS.values())
    for number, one in enumerate(curves):
        points = one["sessions"]["survival"]
        minutes = [0.0] + [p[0] / 60 for p in points]
        colour = palette[number % len(palette)]
        ax.step(minutes, [1.0] + [p[1] for p in points], where="post", color=colour,
                label=f"crawl {one['crawl']} ({one['sessions']['observed']:,} sessions)")
        ax.fill_between(minutes, [1.0] + [p[2] for p in points],
                        [1.0] + [p[3] for p in points], step="post", color=colour, alpha=0.2,
                        linewidth=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("session length (minutes)")
    ax.set_ylabel("share of sessions lasting longer")
    ax.set_title("Session lengths (Kaplan-Meier, 95 % band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, frameon=False)
    return save_figure(fig, out_dir, "zone_sessions")
