"""`crawler.py report`: one static HTML page (`index.html`, no script, no CDN) with its plots
next to it (SVG, drawn by matplotlib on the Agg backend), and `summary.json` with the same
numbers, from a crawl database opened read only.

Each crawl is described by one sweep: its last complete sweep (`sweeps_done`), or, while no
sweep is complete, the latest one (marked partial). Over that sweep: nodes found (contacts)
and nodes that answered (visits), per family; timeouts, errors, aliases; clients by `v`;
BEP 42 and BEP 51 shares; round-trip times; queries per visit; samples. Across the crawl's
sweeps: how many sweeps each node (IP) answered. Across crawls: the size estimates over
time, churn between consecutive crawls (by node id and by IP) and, from three crawls on,
session lengths.

The work is in three files, one job each: `report_figures` (the numbers, from the
database), `report_plots` (the SVG plots) and `report_page` (the HTML page).
"""

from __future__ import annotations

import json
from pathlib import Path

from .export import open_readonly
from .report_figures import build_summary, describe_estimate, finite
from .report_page import render_page
from .report_plots import (
    PLOT_FORMAT, PLOT_NAMES, plot_answers, plot_churn, plot_clients,
    plot_estimates, plot_features, plot_rtt, plot_samples, plot_sessions, plot_size_over_time,
    plot_zone_series, plot_zone_sessions,
)

def build_report(db_path: str | Path, out_dir: str | Path, shown_as: str | None = None) -> dict:
    """Write `index.html`, `summary.json` and the plots into `out_dir` (created if need be);
    return the summary (what summary.json holds). `shown_as` names the database in the
    report (a PostgreSQL URL whose copy `db_path` is)."""
    import matplotlib
    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = open_readonly(db_path)
    try:
        summary = build_summary(db)
    finally:
        db.close()
    summary = {"database": shown_as or str(db_path), **summary}
    crawls = summary["crawls"]
    latest = next((c for c in crawls if c["id"] == summary["latest"]), None)
    has_sweep = latest is not None and latest["sweep"] is not None
    jobs = {
        "estimates": lambda: plot_estimates(out, latest) if has_sweep else None,
        "size_over_time": lambda: plot_size_over_time(out, summary["size_over_time"],
                                                       summary["size_over_time_source"]),
        "clients": lambda: plot_clients(out, latest) if has_sweep else None,
        "features": lambda: plot_features(out, latest) if has_sweep else None,
        "rtt": lambda: plot_rtt(out, latest) if has_sweep else None,
        "answers": lambda: plot_answers(out, latest) if has_sweep else None,
        "samples": lambda: plot_samples(out, crawls),
        "churn": lambda: plot_churn(out, summary["churn"], crawls),
        "sessions": lambda: plot_sessions(out, summary["sessions"]),
        "zone_series": lambda: plot_zone_series(out, summary["zone_series"]),
        "zone_sessions": lambda: plot_zone_sessions(out, summary["zone_series"]),
    }
    plots: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for name, job in jobs.items():
        try:
            plots[name] = job()
        except Exception as exc:  # a plot must never cost the report
            plots[name] = None
            errors[name] = f"{type(exc).__name__}: {exc}"
    for name in PLOT_NAMES:  # plots of an earlier report that this one has not drawn
        if not plots.get(name):
            (out / f"{name}.{PLOT_FORMAT}").unlink(missing_ok=True)
    summary["plots"] = plots
    summary["plot_errors"] = errors
    summary = finite(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    (out / "index.html").write_text(render_page(summary, plots, errors), encoding="utf-8")
    return summary




__all__ = ["build_report", "build_summary", "describe_estimate"]
