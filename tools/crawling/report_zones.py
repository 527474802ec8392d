"""The report's zone estimates (crawls of kind `estimate`, from `crawler.py estimate`): for
each such crawl, its measurements (the size with its band), the churn between consecutive
measurements of its zones, and the session lengths (Kaplan-Meier, `sessions.py`); read
from the database, drawn, and written as the page's section."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .sessions import churn, kaplan_meier, median_length, sessions

REACHABLE = "zones: nodes that answer"
LISTED = "zones: nodes listed"
PLOT_NAMES = ("zone_series", "zone_sessions")


def zone_series(db) -> list[dict]:
    """Each crawl of kind `estimate`, with its measurements, churn and sessions."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(crawls)")}
    if "kind" not in columns:
        return []
    series = []
    for (crawl,) in db.execute("SELECT id FROM crawls WHERE kind='estimate' ORDER BY id")\
            .fetchall():
        measurements: dict[int, dict] = {}
        for sweep, at, name, value, low, high, detail in db.execute(
                "SELECT sweep, at, name, value, low, high, detail FROM estimates WHERE crawl=? "
                "AND name IN (?, ?) ORDER BY sweep", (crawl, REACHABLE, LISTED)):
            row = measurements.setdefault(sweep, {"measurement": sweep, "at": at})
            key = "reachable" if name == REACHABLE else "listed"
            extra = json.loads(detail or "{}")
            row[key] = {"value": value, "low": low, "high": high}
            row["queries"], row["seconds"] = extra.get("queries"), extra.get("seconds")
            row["zones"], row["bits"] = extra.get("zones"), extra.get("bits")
        if not measurements:
            continue
        ordered = [measurements[k] for k in sorted(measurements)]
        started = dict(db.execute("SELECT sweep, MIN(at) FROM visits WHERE crawl=? GROUP BY "
                                  "sweep", (crawl,)).fetchall())
        times = [started.get(m["measurement"]) or m["at"] for m in ordered]
        index = {m["measurement"]: i for i, m in enumerate(ordered)}
        presence: dict[tuple, list[int]] = {}
        for ip, port, sweep in db.execute(
                "SELECT ip, port, sweep FROM visits WHERE crawl=? AND outcome='answered'",
                (crawl,)):
            if sweep in index:
                presence.setdefault((ip, port), []).append(index[sweep])
        observed = sessions(presence, times)
        curve = kaplan_meier(observed)
        series.append({
            "crawl": crawl, "measurements": ordered,
            "churn": churn(presence, len(ordered)),
            "sessions": {"observed": len(observed), "ended": sum(s.ended for s in observed),
                         "median_s": median_length(curve),
                         "gap_s": round((times[-1] - times[0]) / (len(times) - 1), 1)
                         if len(times) > 1 else None,
                         "survival": [[p.time, p.survival, p.low, p.high] for p in curve]}})
    return series


def plot_series(out_dir: Path, series: list[dict], figure, save, colours: dict) -> str | None:
    """Size with its 95 % band over time (each estimate crawl), and the churn per step."""
    shown = [s for s in series if len(s["measurements"]) >= 1]
    if not shown:
        return None
    fig, (size_ax, churn_ax) = figure(12, 4.5, ncols=2)
    start = min(m["at"] for s in shown for m in s["measurements"])
    for number, one in enumerate(shown):
        for key, colour, label in (("reachable", colours["blue"], "nodes that answer"),
                                   ("listed", colours["orange"], "nodes listed")):
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
                          color=colours["red"], label="left" if number == 0 else None)
            churn_ax.plot(x, [100 * (s["joined_share"] or 0) for s in steps], marker="^",
                          color=colours["teal"], label="joined" if number == 0 else None)
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
    return save(fig, out_dir, "zone_series")


def plot_sessions(out_dir: Path, series: list[dict], figure, save, colours: dict
                  ) -> str | None:
    """Kaplan-Meier survival of session lengths, with its 95 % band."""
    curves = [s for s in series if s["sessions"]["survival"]]
    if not curves:
        return None
    fig, ax = figure(7.5, 4.5)
    palette = list(colours.values())
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
    return save(fig, out_dir, "zone_sessions")


def _thousands_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def _e(value) -> str:
    return html.escape(str(value))


def zones_html(series: list[dict], figure_html) -> str:
    """The page's section: a table of each estimate crawl's measurements, the plots."""
    if not series:
        return ('<p class="empty">No zone estimates yet: <code>crawler.py estimate</code> '
                'measures the size from a few random zones of the keyspace.</p>')
    out = ["<p>Each measurement crawled every node of a few random zones of the keyspace "
           "and scaled up (the same zones each time, so that the churn and sessions below "
           "follow the same nodes). Intervals are 95 %.</p>"]
    for one in series:
        rows = []
        for m in one["measurements"]:
            cells = [str(m["measurement"])]
            for key in ("reachable", "listed"):
                estimate = m.get(key) or {}
                value, low, high = (estimate.get(k) for k in ("value", "low", "high"))
                cells.append("-" if value is None else f"{value:,.0f}")
                cells.append("" if low is None or high is None else
                             f"{low:,.0f} to {high:,.0f}")
            cells += [str(m.get("zones") or ""), f"{m.get('queries') or 0:,}",
                      f"{m.get('seconds') or 0:.0f} s"]
            rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in (
            "#", "answer", "95 %", "listed", "95 %", "zones", "queries", "time"))
        out.append(f"<h3>Crawl {one['crawl']}</h3>")
        out.append(f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>')
        sessions_seen = one["sessions"]
        median = sessions_seen["median_s"]
        out.append(f"<p>{sessions_seen['observed']:,} sessions began during the measurements "
                   f"({sessions_seen['ended']:,} ended); median length "
                   + (f"{median / 60:.1f} minutes" if median else "not reached yet")
                   + ". A session is a run of measurements in which a node answered; one "
                   "running at the first measurement is left out, one running at the last "
                   "counts as lasting at least that long.</p>")
    out.append(figure_html("zone_series", "size from zone estimates, and churn",
                           "No data yet."))
    out.append(figure_html("zone_sessions", "session lengths",
                           "Session lengths need three measurements or more."))
    return "\n".join(out)
