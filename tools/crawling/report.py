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

Percentiles are nearest-rank: p of n sorted values is the ceil(p * n / 100)-th.
"""

from __future__ import annotations

import html
import json
import math
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from . import report_zones
from .estimates import Estimate, combine_parts
from .export import open_readonly, table_names
from .store import CrawlRow, StoreError

TOP_CLIENTS = 15
"""Bars of the clients plot (the rest are summed as `other`)."""
CLIENTS_KEPT = 200
"""Client labels kept in summary.json per crawl (odd `v` values can be many)."""
VERSIONS_KEPT = 30
PLOT_FORMAT = "svg"
REQUIRED_TABLES = ("crawls", "contacts", "visits", "aliases", "samples", "estimates")
"""What the report reads (a database from an older or newer crawler may have more or fewer
of `store.TABLES`)."""
PLOT_NAMES = ("estimates", "size_over_time", "clients", "features", "rtt", "answers", "samples",
              "churn", "sessions", *report_zones.PLOT_NAMES)

COLOURS = {"blue": "#4269d0", "orange": "#efb118", "red": "#ff725c", "teal": "#6cc5b0",
           "green": "#3ca951", "pink": "#ff8ab7", "purple": "#a463f2", "sky": "#97bbf5",
           "brown": "#9c6b4e", "grey": "#9498a0"}
SERIES = list(COLOURS.values())

COUNTS_MEANING = {
    "reachable": "reachable nodes: those that answer a query from a node they do not know "
                 "(the ones a crawl can visit)",
    "alive": "all running nodes, those behind a NAT or firewall that never answer us included",
    "answered": "nodes that answer us",
    "listed": "nodes other nodes list, stale and unreachable ones included",
}


# --- small helpers ----------------------------------------------------------------------------

def _share(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 4) if whole and part is not None else None


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _finite(value):
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _nice_step(span: float, bins: int) -> float:
    """A round bin width (1, 2, 2.5 or 5 times a power of ten) for about `bins` bins."""
    raw = max(span, 1e-9) / bins
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _json_or_text(text):
    if text is None:
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {"raw": str(text)}


# --- reading the database ---------------------------------------------------------------------

def _crawl_rows(db) -> list[tuple[CrawlRow, str | None]]:
    """Each crawl (as `CrawlStore.crawls` reads it, for its `shown_status`) and the mldht
    version that ran it."""
    rows = db.execute("SELECT id, started_at, finished_at, status, pid, host, settings, "
                      "sweeps_done, mldht_version FROM crawls ORDER BY id").fetchall()
    crawls = []
    for r in rows:
        settings = _json_or_text(r[6])
        row = CrawlRow(r[0], r[1], r[2], r[3], r[4], r[5],
                       settings if isinstance(settings, dict) else {"value": settings},
                       r[7] or 0)
        crawls.append((row, r[8]))
    return crawls


def _basis_sweep(db, crawl: CrawlRow) -> tuple[int | None, bool, list[int]]:
    """The sweep a crawl is described by: its last complete one, else its latest (partial)."""
    sweeps = [s for (s,) in db.execute(
        "SELECT sweep FROM contacts WHERE crawl=? UNION SELECT sweep FROM visits WHERE crawl=? "
        "ORDER BY 1", (crawl.id, crawl.id))]
    if not sweeps:
        return None, False, []
    complete = [s for s in sweeps if s <= crawl.sweeps_done]
    if complete:
        return complete[-1], True, sweeps
    return sweeps[-1], False, sweeps


def _rtt(db, where: str, args: tuple) -> dict:
    cond = f"{where} AND outcome='answered' AND rtt IS NOT NULL"
    count, mean, low, high = db.execute(
        f"SELECT COUNT(*), AVG(rtt), MIN(rtt), MAX(rtt) FROM visits WHERE {cond}", args).fetchone()
    result = {"count": count, "mean_ms": None, "min_ms": None, "p50_ms": None, "p90_ms": None,
              "p99_ms": None, "max_ms": None, "histogram": None}
    if not count:
        return result

    def ms(seconds):
        return round(seconds * 1000, 1)

    result.update(mean_ms=ms(mean), min_ms=ms(low), max_ms=ms(high))
    for p in (50, 90, 99):
        rank = max(1, math.ceil(p * count / 100))
        (value,) = db.execute(f"SELECT rtt FROM visits WHERE {cond} ORDER BY rtt LIMIT 1 "
                              "OFFSET ?", (*args, rank - 1)).fetchone()
        result[f"p{p}_ms"] = ms(value)
    # Bins up to the maximum, or up to the p99 when a few slow replies would squash the rest
    # (those then counted in `overflow`).
    top_ms = high * 1000 if high <= 2 * result["p99_ms"] / 1000 else result["p99_ms"]
    top_ms = max(top_ms, 1.0)
    width = _nice_step(top_ms, 40)
    bins = int(top_ms // width) + 1
    counts = [0] * bins
    overflow = 0
    for index, n in db.execute(
            f"SELECT MIN(CAST(rtt * 1000 / ? AS INTEGER), ?), COUNT(*) FROM visits "
            f"WHERE {cond} GROUP BY 1", (width, bins, *args)):
        if index >= bins:
            overflow += n
        else:
            counts[max(index, 0)] += n
    result["histogram"] = {"bin_ms": width, "edges_ms": [round(i * width, 3)
                                                         for i in range(bins + 1)],
                           "counts": counts, "overflow": overflow}
    return result


def _client_label(client, v_hex, has_v) -> str:
    if client:
        return str(client)
    if not has_v:
        return "no v key"
    return f"unknown (v={v_hex})" if v_hex else "unknown (v empty)"


def _crawl_summary(db, crawl: CrawlRow, version: str | None) -> dict:
    sweep, complete, sweeps = _basis_sweep(db, crawl)
    summary = {
        "id": crawl.id, "started_at": crawl.started_at, "finished_at": crawl.finished_at,
        "started": _iso(crawl.started_at), "finished": _iso(crawl.finished_at),
        "duration_s": (round(crawl.finished_at - crawl.started_at, 1)
                       if crawl.finished_at is not None else None),
        "status": crawl.shown_status, "stored_status": crawl.status, "host": crawl.host,
        "mldht_version": version, "settings": crawl.settings,
        "sweeps_done": crawl.sweeps_done, "sweeps_seen": len(sweeps),
        "sweep": sweep, "sweep_complete": complete,
    }
    families = ("ipv4", "ipv6")
    found = dict.fromkeys(families, 0)
    visited = dict.fromkeys(families, 0)
    answered = dict.fromkeys(families, 0)
    outcomes: dict[str, int] = {}
    outcomes_by_family: dict[str, dict[str, int]] = {f: {} for f in families}
    queries = 0
    here = "crawl=? AND sweep=?"
    args = (crawl.id, sweep)
    if sweep is not None:
        for family, n in db.execute(
                f"SELECT family, COUNT(*) FROM contacts WHERE {here} GROUP BY family", args):
            found[family] = found.get(family, 0) + n
        for family, outcome, n, q in db.execute(
                f"SELECT family, outcome, COUNT(*), SUM(queries) FROM visits WHERE {here} "
                "GROUP BY family, outcome", args):
            visited[family] = visited.get(family, 0) + n
            outcomes[outcome] = outcomes.get(outcome, 0) + n
            outcomes_by_family.setdefault(family, {})[outcome] = n
            if outcome == "answered":
                answered[family] = answered.get(family, 0) + n
            queries += q or 0
    for counts in (found, visited, answered):
        counts["total"] = sum(counts.values())
    summary.update(found=found, visited=visited, answered=answered, outcomes=outcomes,
                   outcomes_by_family=outcomes_by_family,
                   timeouts=outcomes.get("timeout", 0), errors=outcomes.get("error", 0),
                   queries=queries)
    error_codes: dict[str, int] = {}
    aliases = 0
    clients: dict[str, int] = {}
    versions: list[dict] = []
    bep42 = bep51 = None
    queries_per_visit: dict[str, dict[str, int]] = {}
    if sweep is not None:
        for code, n in db.execute(f"SELECT error_code, COUNT(*) FROM visits WHERE {here} AND "
                                  "outcome='error' GROUP BY 1 ORDER BY 2 DESC", args):
            error_codes[str(code)] = n
        (aliases,) = db.execute(f"SELECT COUNT(*) FROM aliases WHERE {here}", args).fetchone()
        for client, v_hex, has_v, n in db.execute(
                "SELECT client, CASE WHEN client IS NULL THEN lower(hex(v)) END, v IS NOT NULL, "
                f"COUNT(*) FROM visits WHERE {here} AND outcome='answered' GROUP BY 1, 2, 3",
                args):
            label = _client_label(client, v_hex, has_v)
            clients[label] = clients.get(label, 0) + n
        for client, version, n in db.execute(
                f"SELECT client, client_version, COUNT(*) FROM visits WHERE {here} AND "
                "outcome='answered' AND client IS NOT NULL GROUP BY 1, 2 "
                "ORDER BY 3 DESC, 1, 2 LIMIT ?", (*args, VERSIONS_KEPT)):
            versions.append({"client": client, "version": version, "nodes": n})
        valid, checked = db.execute(
            f"SELECT SUM(bep42=1), COUNT(bep42) FROM visits WHERE {here} AND outcome='answered'",
            args).fetchone()
        bep42 = {"valid": valid or 0, "checked": checked, "share": _share(valid or 0, checked)}
        supported, asked = db.execute(
            f"SELECT SUM(bep51=1), COUNT(bep51) FROM visits WHERE {here}", args).fetchone()
        bep51 = {"supported": supported or 0, "asked": asked,
                 "share": _share(supported or 0, asked)}
        # Over all the crawl's sweeps, by IP (a node is not asked again within its interval).
        supported, asked = db.execute(
            "SELECT COUNT(DISTINCT CASE WHEN bep51=1 THEN ip END), "
            "COUNT(DISTINCT CASE WHEN bep51 IS NOT NULL THEN ip END) FROM visits WHERE crawl=?",
            (crawl.id,)).fetchone()
        bep51["crawl"] = {"supported": supported, "asked": asked,
                          "share": _share(supported, asked)}
        for q, outcome, n in db.execute(f"SELECT queries, outcome, COUNT(*) FROM visits "
                                        f"WHERE {here} GROUP BY 1, 2 ORDER BY 1, 2", args):
            queries_per_visit.setdefault(str(q), {})[outcome] = n
    total_answered = answered["total"]
    ranked = sorted(clients.items(), key=lambda item: (-item[1], item[0]))
    client_list = [{"client": label, "nodes": n, "share": _share(n, total_answered)}
                   for label, n in ranked[:CLIENTS_KEPT]]
    if len(ranked) > CLIENTS_KEPT:
        rest = sum(n for _, n in ranked[CLIENTS_KEPT:])
        client_list.append({"client": f"other ({len(ranked) - CLIENTS_KEPT} labels)",
                            "nodes": rest, "share": _share(rest, total_answered)})
    summary.update(
        error_codes=error_codes, aliases=aliases, clients=client_list, client_versions=versions,
        bep42=bep42 or {"valid": 0, "checked": 0, "share": None},
        bep51=bep51 or {"supported": 0, "asked": 0, "share": None,
                        "crawl": {"supported": 0, "asked": 0, "share": None}},
        family_share={"found_ipv6": _share(found["ipv6"], found["total"]),
                      "answered_ipv6": _share(answered["ipv6"], total_answered)},
        rtt=_rtt(db, here, args) if sweep is not None else _rtt(db, "0", ()),
        queries_per_visit=queries_per_visit)
    # Across the crawl's sweeps: in how many did each IP answer?
    per_node: dict[str, int] = {}
    for n_answered, nodes in db.execute(
            "SELECT n, COUNT(*) FROM (SELECT ip, SUM(outcome='answered') AS n FROM visits "
            "WHERE crawl=? GROUP BY ip, port) GROUP BY n ORDER BY n", (crawl.id,)):
        per_node[str(n_answered)] = nodes
    (visited_sweeps,) = db.execute("SELECT COUNT(DISTINCT sweep) FROM visits WHERE crawl=?",
                                   (crawl.id,)).fetchone()
    summary["answered_per_node"] = {"sweeps": visited_sweeps, "nodes_by_sweeps_answered": per_node}
    rows, distinct, sampling = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT infohash), COUNT(DISTINCT ip) FROM samples WHERE crawl=?",
        (crawl.id,)).fetchone()
    (received,) = db.execute("SELECT SUM(samples) FROM visits WHERE crawl=?",
                             (crawl.id,)).fetchone()
    summary["samples"] = {"received": received or 0, "rows": rows, "distinct_infohashes": distinct,
                          "sampling_nodes": sampling}
    summary["estimates"] = _latest_estimates(db, crawl.id, summary)
    return summary


# --- estimates --------------------------------------------------------------------------------

def describe_estimate(name: str, value, low, high, counts: str, detail: dict) -> str:
    """One sentence: how the estimate is made and what it counts."""
    lowered = name.lower()
    meaning = COUNTS_MEANING.get(counts, f"{counts} nodes")
    short = {"reachable": "reachable nodes", "alive": "all nodes"}.get(counts, meaning)
    if {"n1", "n2", "m"} <= set(detail):
        return (f"Chapman's mark-recapture between two captures ({detail['n1']:,} and "
                f"{detail['n2']:,} nodes, {detail['m']:,} in both), 95 % interval from the "
                f"normal approximation; it counts {meaning}.")
    if "standard_error" in detail or "lookup" in lowered:
        se = detail.get("standard_error")
        error = f" (standard error {se:,.0f})" if isinstance(se, (int, float)) else ""
        return (f"The engine's estimator from the distances of the closest nodes its lookups "
                f"found{error}; it counts {meaning}.")
    if value is not None and low == value and high is None:  # a plain count
        if "found" in lowered:
            return ("A count of the nodes other nodes listed, stale and unreachable ones "
                    "included.")
        if "answer" in lowered:
            if counts in ("reachable", "alive"):
                return f"A count of the nodes that answered us: a lower bound of the {short}."
            return "A count of the nodes that answered us."
        return f"A count: a lower bound of {meaning}."
    return f"An estimate; it counts {meaning}."


def _estimate_row(sweep, at, name, value, low, high, counts, detail_text) -> dict:
    detail = _json_or_text(detail_text)
    if not isinstance(detail, dict):
        detail = {"value": detail}
    return {"sweep": sweep, "at": at, "name": name, "value": value, "low": low, "high": high,
            "counts": counts, "standard_error": detail.get("standard_error"), "detail": detail,
            "describes": describe_estimate(str(name), value, low, high, str(counts), detail),
            "families": None, "source": "estimates"}


def _stored_estimates(db, crawl_id: int | None = None) -> list[tuple]:
    """Rows of `estimates` (crawl, sweep, at, name, value, low, high, counts, detail), in the
    order they were stored. A partitioned crawl stores one row per part (its detail says
    which): those become one row per sweep and name (`estimates.combine_parts`), once all
    N parts have stored that sweep."""
    where, args = ("WHERE crawl=?", (crawl_id,)) if crawl_id is not None else ("", ())
    rows = db.execute("SELECT crawl, sweep, at, name, value, low, high, counts, detail FROM "
                      f"estimates {where} ORDER BY at, rowid", args).fetchall()
    merged, parted = [], {}
    for row in rows:
        detail = _json_or_text(row[8])
        part = detail.get("part") if isinstance(detail, dict) else None
        if not (isinstance(part, list) and len(part) == 2):
            merged.append(row)
            continue
        index, count = part
        parted.setdefault((row[0], row[1], count), {}).setdefault(index, {})[row[3]] = \
            (row, detail)
    for (crawl, sweep, count), by_part in parted.items():
        if len(by_part) < count:
            continue  # some part has not finished this sweep yet
        estimates = [[Estimate(name, r[4], r[5], r[6], r[7], detail)
                      for name, (r, detail) in named.items()] for named in by_part.values()]
        at = max(r[2] for named in by_part.values() for r, _ in named.values())
        for estimate in combine_parts(estimates):
            merged.append((crawl, sweep, at, estimate.name, estimate.value, estimate.low,
                           estimate.high, estimate.counts, json.dumps(estimate.detail)))
    merged.sort(key=lambda r: r[2] or 0.0)
    return merged


def _latest_estimates(db, crawl_id: int, summary: dict) -> list[dict]:
    """The latest estimate of each name the crawler stored for the crawl, with the sweep's
    counts from the database (per family) next to them: a stored count of the same name and
    sweep gets the database's per-family split (`families`); one the crawler did not store
    (an interrupted sweep, an older crawler) is added from the database (`source`)."""
    latest: dict[str, dict] = {}
    for row in sorted(_stored_estimates(db, crawl_id), key=lambda r: (r[1], r[2])):
        latest[row[3]] = _estimate_row(*row[1:])
    counted = []
    if summary["sweep"] is not None:
        for name, counts, key, meaning in (
                ("nodes that answered", "answered", "answered",
                 "Every node that answered us in this sweep, one per IP: it counts nodes that "
                 "answer us, a lower bound of the reachable nodes."),
                ("nodes found", "listed", "found",
                 "Every node some node listed in this sweep, one per IP: stale and unreachable "
                 "ones included; not a lower bound of the reachable nodes.")):
            numbers = summary[key]
            families = {"ipv4": numbers["ipv4"], "ipv6": numbers["ipv6"]}
            stored = latest.get(name)
            if stored is not None and stored["sweep"] == summary["sweep"]:
                # The database's count: a sweep resumed after a crash stored only the
                # second run's.
                stored["families"] = families
                stored["value"] = stored["low"] = float(numbers["total"])
                continue
            total = float(numbers["total"])
            counted.append({"sweep": summary["sweep"], "at": None, "name": name, "value": total,
                            "low": total, "high": None, "counts": counts,
                            "standard_error": None, "detail": {}, "families": families,
                            "describes": meaning, "source": "database"})
    return counted + list(latest.values())


# --- across crawls ----------------------------------------------------------------------------

def _answered_set_sql(key: str) -> str:
    return f"SELECT {key} FROM visits WHERE crawl=? AND sweep=? AND outcome='answered'"


def _churn(db, crawls: list[dict]) -> list[dict]:
    pairs = []
    for before, after in zip(crawls, crawls[1:]):
        pair = {"from": before["id"], "to": after["id"],
                "gap_s": round(after["started_at"] - before["started_at"], 1)}
        for label, key in (("by_id", "answered_id"), ("by_ip", "ip")):
            a_args = (before["id"], before["sweep"])
            b_args = (after["id"], after["sweep"])
            (n_before,) = db.execute(f"SELECT COUNT(DISTINCT {key}) FROM visits WHERE crawl=? "
                                     "AND sweep=? AND outcome='answered'", a_args).fetchone()
            (n_after,) = db.execute(f"SELECT COUNT(DISTINCT {key}) FROM visits WHERE crawl=? "
                                    "AND sweep=? AND outcome='answered'", b_args).fetchone()
            (stayed,) = db.execute(
                f"SELECT COUNT(*) FROM ({_answered_set_sql(key)} AND {key} IS NOT NULL "
                f"INTERSECT {_answered_set_sql(key)})", (*a_args, *b_args)).fetchone()
            pair[label] = {"before": n_before, "after": n_after, "stayed": stayed,
                           "left": n_before - stayed, "arrived": n_after - stayed}
        pairs.append(pair)
    return pairs


def _sessions(db, crawls: list[dict]) -> dict | None:
    """Runs of consecutive crawls in which a node id answered. A run touching the first or the
    last crawl is censored (it may have begun before or lasted after)."""
    if len(crawls) < 3:
        return None
    index = {c["id"]: i for i, c in enumerate(crawls)}
    starts = [c["started_at"] for c in crawls]
    last = len(crawls) - 1
    complete: dict[int, int] = {}
    censored: dict[int, int] = {}
    shortest: list[float] = []
    longest: list[float] = []
    values = ",".join("(?, ?)" for _ in crawls)
    args = [x for c in crawls for x in (c["id"], c["sweep"])]
    sql = (f"SELECT answered_id, crawl FROM visits WHERE outcome='answered' AND answered_id IS "
           f"NOT NULL AND (crawl, sweep) IN (VALUES {values}) ORDER BY answered_id, crawl")

    def close(seen: list[int]) -> None:
        runs = []
        for i in sorted(set(seen)):
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        for first, final in runs:
            length = final - first + 1
            if first == 0 or final == last:
                censored[length] = censored.get(length, 0) + 1
            else:
                complete[length] = complete.get(length, 0) + 1
                # It lasted at least from its first sighting to its last, at most from the
                # crawl before to the crawl after.
                shortest.append(starts[final] - starts[first])
                longest.append(starts[final + 1] - starts[first - 1])

    current, seen = None, []
    for node_id, crawl in db.execute(sql, args):
        if node_id != current:
            if seen:
                close(seen)
            current, seen = node_id, []
        seen.append(index[crawl])
    if seen:
        close(seen)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    lengths = sorted(set(complete) | set(censored))
    return {"crawls": len(crawls), "median_gap_s": round(statistics.median(gaps), 1),
            "complete": {str(k): complete.get(k, 0) for k in lengths},
            "censored": {str(k): censored.get(k, 0) for k in lengths},
            "complete_sessions": sum(complete.values()),
            "median_complete_crawls": (statistics.median(
                [k for k, n in complete.items() for _ in range(n)]) if complete else None),
            "median_complete_s": ([round(statistics.median(shortest), 1),
                                   round(statistics.median(longest), 1)] if complete else None)}


def _size_over_time(db, crawls: list[dict]) -> tuple[list[dict], str]:
    rows = [{"crawl": r[0], "sweep": r[1], "at": r[2], "name": r[3], "value": r[4], "low": r[5],
             "high": r[6], "counts": r[7]} for r in _stored_estimates(db)]
    if rows:
        return rows, "estimates"
    # No estimate stored: the counts of each crawl's sweep, at its end.
    for c in crawls:
        if c["sweep"] is None:
            continue
        (at,) = db.execute("SELECT MAX(at) FROM visits WHERE crawl=? AND sweep=?",
                           (c["id"], c["sweep"])).fetchone()
        at = at or c["finished_at"] or c["started_at"]
        for name, key, counts in (("nodes found", "found", "listed"),
                                  ("nodes that answered", "answered", "answered")):
            n = float(c[key]["total"])
            rows.append({"crawl": c["id"], "sweep": c["sweep"], "at": at, "name": name,
                         "value": n, "low": n, "high": None, "counts": counts})
    return rows, "database counts"


# --- plots ------------------------------------------------------------------------------------

def _text(label, limit: int = 42) -> str:
    """A label from the database as plain text for matplotlib (no mathtext)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(label))
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def _nodes(value: float) -> str:
    """A node count or estimate: `12,345`, or `6.5` below 100."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}".removesuffix(".0")


def _figure(width: float = 9.0, height: float = 4.5, ncols: int = 1):
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


def _save(fig, out_dir: Path, name: str) -> str:
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


def _plot_estimates(out_dir: Path, crawl: dict) -> str | None:
    rows = [r for r in crawl["estimates"] if r["value"] is not None and r["value"] > 0]
    if not rows:
        return None
    fig, ax = _figure(9, max(2.6, 1.4 + 0.62 * len(rows)))
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
            interval = f"  [{_nodes(row['low'])} – {_nodes(row['high'])}]"
        ax.annotate(f"{_nodes(row['value'])}{interval}", (row["value"], y), xytext=(0, 8),
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
    return _save(fig, out_dir, "estimates")


def _plot_size_over_time(out_dir: Path, rows: list[dict], source: str) -> str | None:
    rows = [r for r in rows if r["value"] is not None and r["value"] > 0 and r["at"]]
    if len({r["at"] for r in rows}) < 2:
        return None
    import matplotlib.dates as mdates
    fig, ax = _figure(10, 5)
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
    return _save(fig, out_dir, "size_over_time")


def _plot_clients(out_dir: Path, crawl: dict) -> str | None:
    clients = crawl["clients"]
    total = crawl["answered"]["total"]
    if not clients or not total:
        return None
    shown = clients[:TOP_CLIENTS]
    rest = clients[TOP_CLIENTS:]
    bars = [(c["client"], c["nodes"]) for c in shown]
    if rest:
        bars.append((f"other ({len(rest)} more)", sum(c["nodes"] for c in rest)))
    fig, ax = _figure(9, max(2.6, 1.3 + 0.34 * len(bars)))
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
    return _save(fig, out_dir, "clients")


def _plot_features(out_dir: Path, crawl: dict) -> str | None:
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
    fig, ax = _figure(10, 3.6)
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
    return _save(fig, out_dir, "features")


def _plot_rtt(out_dir: Path, crawl: dict) -> str | None:
    rtt = crawl["rtt"]
    histogram = rtt["histogram"]
    if not rtt["count"] or not histogram:
        return None
    fig, ax = _figure(9, 4.2)
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
    return _save(fig, out_dir, "rtt")


def _plot_answers(out_dir: Path, crawl: dict) -> str | None:
    per_visit = crawl["queries_per_visit"]
    per_node = crawl["answered_per_node"]["nodes_by_sweeps_answered"]
    if not per_visit and not per_node:
        return None
    fig, (left, right) = _figure(10, 4, ncols=2)
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
    return _save(fig, out_dir, "answers")


def _short_crawl_label(c: dict) -> str:
    when = datetime.fromtimestamp(c["started_at"], timezone.utc).strftime("%m-%d %H:%M")
    return f"#{c['id']}\n{when}"


def _sparse_ticks(ax, positions, labels, most: int = 16) -> None:
    step = max(1, math.ceil(len(positions) / most))
    ax.set_xticks(positions[::step], labels[::step], fontsize=8)


def _plot_samples(out_dir: Path, crawls: list[dict]) -> str | None:
    crawls = [c for c in crawls if c["samples"]["received"] or c["samples"]["rows"]]
    if not crawls:
        return None
    fig, ax = _figure(max(7, 1.2 * len(crawls) + 3), 4.2)
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
    return _save(fig, out_dir, "samples")


def _plot_churn(out_dir: Path, pairs: list[dict], crawls: dict) -> str | None:
    if not pairs:
        return None
    fig, ax = _figure(max(7, 1.1 * len(pairs) + 3), 4.5)
    x = list(range(len(pairs)))
    bottom = [0] * len(pairs)
    for key, label, colour in (("stayed", "stayed (in both)", COLOURS["teal"]),
                               ("left", "left (only in the earlier)", COLOURS["red"]),
                               ("arrived", "arrived (only in the later)", COLOURS["blue"])):
        heights = [p["by_id"][key] for p in pairs]
        ax.bar(x, heights, bottom=bottom, label=label, color=colour, width=0.6)
        bottom = [b + h for b, h in zip(bottom, heights)]
    labels = [f"#{p['from']} → #{p['to']}\n{_gap(p['gap_s'])} apart" for p in pairs]
    _sparse_ticks(ax, x, labels)
    _thousands(ax)
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax)
    ax.set_xlabel("consecutive crawls")
    ax.set_ylabel("nodes that answered (by node id)")
    ax.set_title("Churn between consecutive crawls")
    return _save(fig, out_dir, "churn")


def _plot_sessions(out_dir: Path, sessions: dict | None) -> str | None:
    if not sessions or not (sessions["complete"] or sessions["censored"]):
        return None
    keys = sorted(set(sessions["complete"]) | set(sessions["censored"]), key=int)
    fig, ax = _figure(max(6, 0.6 * len(keys) + 4), 4.2)
    complete = [sessions["complete"].get(k, 0) for k in keys]
    censored = [sessions["censored"].get(k, 0) for k in keys]
    ax.bar(keys, complete, color=COLOURS["purple"], width=0.6,
           label="began and ended within the crawls")
    ax.bar(keys, censored, bottom=complete, color=COLOURS["purple"], alpha=0.35, width=0.6,
           hatch="//", label="at the first or last crawl (censored)")
    _thousands(ax)
    ax.grid(axis="y", alpha=0.3)
    _legend_above(ax, ncols=2)
    ax.set_xlabel(f"session length (consecutive crawls, about {_gap(sessions['median_gap_s'])} "
                  "apart)")
    ax.set_ylabel("sessions (node ids)")
    ax.set_title(f"Session lengths over {sessions['crawls']} crawls")
    return _save(fig, out_dir, "sessions")


def _gap(seconds: float | None) -> str:
    """A duration for people: `40 s`, `12 min`, `6 h`, `1.5 h`, `3.2 days`."""
    if seconds is None:
        return "?"
    for unit, size, limit in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800),
                              ("days", 86400, math.inf)):
        if seconds < limit:
            text = f"{seconds / size:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return "?"


# --- the page ---------------------------------------------------------------------------------

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1120px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid
#ddd; padding-bottom: 0.2em; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f5f7; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
p.empty { color: #666; font-style: italic; } .muted { color: #666; font-size: 0.9em; }
code { font-size: 0.85em; word-break: break-all; } details summary { cursor: pointer; }
.scroll { overflow-x: auto; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _pct(share) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def _figure_html(plots: dict, errors: dict, name: str, alt: str, empty: str) -> str:
    if name in errors:
        return f'<p class="empty">This plot could not be drawn: {_e(errors[name])}</p>'
    if not plots.get(name):
        return f'<p class="empty">{_e(empty)}</p>'
    return f'<figure><img src="{_e(plots[name])}" alt="{_e(alt)}"></figure>'


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
                         for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _estimate_error(row: dict) -> str:
    parts = []
    if isinstance(row.get("standard_error"), (int, float)):
        parts.append(f"± {_nodes(row['standard_error'])} (standard error)")
    if row["low"] is not None and row["high"] is not None:
        parts.append(f"95 %: {_nodes(row['low'])} – {_nodes(row['high'])}")
    elif row["value"] is not None and row["low"] == row["value"] and row["high"] is None:
        parts.append("a count: no sampling error")
    elif row["value"] is None:
        parts.append("not enough data")
    return _e("; ".join(parts) or "–")


def _estimates_html(crawl: dict | None, plots: dict, errors: dict) -> str:
    if crawl is None or not crawl["estimates"]:
        return '<p class="empty">No data yet: no sweep has been stored.</p>'
    rows = []
    for r in crawl["estimates"]:
        value = _e("–" if r["value"] is None else _nodes(r["value"]))
        if r.get("families"):
            value += (f'<br><span class="muted">IPv4 {_num(r["families"]["ipv4"])} · '
                      f'IPv6 {_num(r["families"]["ipv6"])}</span>')
        rows.append([_e(r["name"]), value, _estimate_error(r), _e(r["counts"]),
                     _e(r["describes"]), _e(r["sweep"])])
    partial = "" if crawl["sweep_complete"] else " (partial: no sweep of it is complete)"
    return (f"<p>Crawl {_e(crawl['id'])}, sweep {_e(crawl['sweep'])}{_e(partial)}: counts from "
            "the database and the latest estimate of each kind the crawler stored. They count "
            "different things: reachable nodes (those that answer any node), all nodes (those "
            "behind a NAT included), nodes that answer us (a lower bound of the reachable ones) "
            "or nodes others list (stale ones included).</p>"
            + _table(["estimate", "value", "error", "counts", "what it counts", "sweep"], rows,
                     {1})
            + _figure_html(plots, errors, "estimates", "size estimates side by side",
                           "No estimate with a value yet."))


def _crawls_html(crawls: list[dict]) -> str:
    if not crawls:
        return '<p class="empty">No data yet: the database holds no crawl.</p>'
    rows = []
    for c in crawls:
        sweep = _e(c["sweep"]) if c["sweep"] is not None else "–"
        if c["sweep"] is not None and not c["sweep_complete"]:
            sweep += " (partial)"
        settings = json.dumps(c["settings"], sort_keys=True, ensure_ascii=False)
        rows.append([
            _e(c["id"]), _e(c["started"]), _e(c["finished"] or "–"), _e(c["status"]),
            f"{_e(c['sweeps_done'])} / {sweep}",
            f"{_num(c['found']['ipv4'])} / {_num(c['found']['ipv6'])}",
            f"{_num(c['answered']['ipv4'])} / {_num(c['answered']['ipv6'])}",
            _num(c["timeouts"]), _num(c["errors"]), _num(c["aliases"]),
            _pct(c["bep42"]["share"]), _pct(c["bep51"]["share"]), _num(c["rtt"]["p50_ms"]),
            f"<details><summary>{_e(c['host'] or '')} {_e(c['mldht_version'] or '')}"
            f"</summary><code>{_e(settings)}</code></details>"])
    return _table(["crawl", "started", "finished", "status", "sweeps done / shown",
                   "found IPv4 / IPv6", "answered IPv4 / IPv6", "timeouts", "errors", "aliases",
                   "BEP 42 valid", "BEP 51", "RTT p50 (ms)", "host, version, settings"], rows,
                  {5, 6, 7, 8, 9, 10, 11, 12})


def _latest_html(crawl: dict | None, plots: dict, errors: dict) -> str:
    if crawl is None or crawl["sweep"] is None:
        return '<p class="empty">No data yet: no node has been visited.</p>'
    c = crawl
    out = []
    total = c["answered"]["total"]
    out.append(f"<p>Crawl {_e(c['id'])} ({_e(c['status'])}), sweep {_e(c['sweep'])}"
               f"{'' if c['sweep_complete'] else ' (partial)'}: {_num(c['found']['total'])} "
               f"nodes found, {_num(c['visited']['total'])} visited, {_num(total)} answered "
               f"({_pct(_share(total, c['visited']['total']))} of visits), "
               f"{_num(c['timeouts'])} timeouts, {_num(c['errors'])} errors, "
               f"{_num(c['aliases'])} aliases (other ids or ports on a known IP), "
               f"{_num(c['queries'])} queries.</p>")
    out.append("<h3>Clients (by <code>v</code>)</h3>")
    out.append(_figure_html(plots, errors, "clients", "clients of the nodes that answered",
                            "No data yet: no node answered."))
    if c["clients"]:
        rows = [[_e(x["client"]), _num(x["nodes"]), _pct(x["share"])]
                for x in c["clients"][:TOP_CLIENTS]]
        if len(c["clients"]) > TOP_CLIENTS:
            rest = sum(x["nodes"] for x in c["clients"][TOP_CLIENTS:])
            rows.append([f"other ({len(c['clients']) - TOP_CLIENTS} more)", _num(rest),
                         _pct(_share(rest, total))])
        out.append(_table(["client", "nodes", "share"], rows, {1, 2}))
    out.append("<h3>IPv4 / IPv6, BEP 42, BEP 51</h3>")
    out.append(_table(
        ["", "count", "of", "share"],
        [["IPv6 among nodes found", _num(c["found"]["ipv6"]), _num(c["found"]["total"]),
          _pct(c["family_share"]["found_ipv6"])],
         ["IPv6 among nodes that answered", _num(c["answered"]["ipv6"]), _num(total),
          _pct(c["family_share"]["answered_ipv6"])],
         ["BEP 42: id valid for its IP (answered)", _num(c["bep42"]["valid"]),
          _num(c["bep42"]["checked"]), _pct(c["bep42"]["share"])],
         ["BEP 51: answered sample_infohashes (asked)", _num(c["bep51"]["supported"]),
          _num(c["bep51"]["asked"]), _pct(c["bep51"]["share"])],
         ["BEP 51, over all sweeps of the crawl (IPs)", _num(c["bep51"]["crawl"]["supported"]),
          _num(c["bep51"]["crawl"]["asked"]), _pct(c["bep51"]["crawl"]["share"])]],
        {1, 2, 3}))
    out.append(_figure_html(plots, errors, "features", "IPv4 / IPv6, BEP 42, BEP 51 shares",
                            "No data yet."))
    rtt = c["rtt"]
    out.append("<h3>Round-trip times</h3>")
    if rtt["count"]:
        out.append(f"<p>{_num(rtt['count'])} replies: p50 {_num(rtt['p50_ms'])} ms, p90 "
                   f"{_num(rtt['p90_ms'])} ms, p99 {_num(rtt['p99_ms'])} ms, mean "
                   f"{_num(rtt['mean_ms'])} ms, max {_num(rtt['max_ms'])} ms.</p>")
    out.append(_figure_html(plots, errors, "rtt", "round-trip time histogram",
                            "No data yet: no round-trip time stored."))
    out.append("<h3>Answers per node</h3>")
    out.append(_figure_html(plots, errors, "answers", "queries per visit, answers per node",
                            "No data yet: no visit stored."))
    return "\n".join(out)


def _samples_html(crawls: list[dict], totals: dict, plots: dict, errors: dict) -> str:
    rows = [[_e(c["id"]), _num(c["samples"]["received"]), _num(c["samples"]["rows"]),
             _num(c["samples"]["distinct_infohashes"]), _num(c["samples"]["sampling_nodes"])]
            for c in crawls if c["samples"]["received"] or c["samples"]["rows"]]
    if not rows:
        return '<p class="empty">No data yet: no sample stored (crawl with --samples).</p>'
    return (f"<p>{_num(totals['distinct_infohashes'])} distinct infohashes over all crawls."
            "</p>" + _table(["crawl", "samples received", "distinct (infohash, node)",
                             "distinct infohashes", "nodes that sampled"], rows, {1, 2, 3, 4})
            + _figure_html(plots, errors, "samples", "samples per crawl", "No data yet."))


def _churn_html(pairs: list[dict], sessions: dict | None, plots: dict, errors: dict) -> str:
    if not pairs:
        return ('<p class="empty">No data yet: churn needs two crawls in which nodes '
                'answered.</p>')
    rows = []
    for p in pairs:
        i, a = p["by_id"], p["by_ip"]
        rows.append([f"{_e(p['from'])} → {_e(p['to'])}", _e(_gap(p["gap_s"])), _num(i["stayed"]),
                     _num(i["left"]), _num(i["arrived"]), _num(a["stayed"]), _num(a["left"]),
                     _num(a["arrived"])])
    out = ["<p>Nodes that answered in each crawl's sweep, compared with the crawl before: "
           "stayed (in both), left (only before), arrived (only after); by node id, and by IP "
           "(a node that changed its IP counts as left and arrived there).</p>",
           _table(["crawls", "apart", "stayed (id)", "left (id)", "arrived (id)", "stayed (IP)",
                   "left (IP)", "arrived (IP)"], rows, {2, 3, 4, 5, 6, 7}),
           _figure_html(plots, errors, "churn", "churn between consecutive crawls",
                        "No data yet.")]
    out.append("<h3>Session lengths</h3>")
    if sessions is None:
        out.append('<p class="empty">Session lengths need three crawls or more.</p>')
    else:
        median = sessions["median_complete_crawls"]
        if median is not None:
            low, high = sessions["median_complete_s"]
            median_text = (f" (median {_num(median, 1 if median % 1 else 0)} "
                           f"crawl{'' if median == 1 else 's'}: it lasted between "
                           f"{_e(_gap(low))} and {_e(_gap(high))})")
        else:
            median_text = ""
        out.append(
            f"<p>A session is a run of consecutive crawls in which a node id answered; crawls "
            f"were about {_e(_gap(sessions['median_gap_s']))} apart, so a length is known to "
            f"that precision. {_num(sessions['complete_sessions'])} sessions began and ended "
            f"within the crawls{median_text}; the others were under way at the first or the "
            "last crawl.</p>")
        out.append(_figure_html(plots, errors, "sessions", "session lengths", "No data yet."))
    return "\n".join(out)


def _page(summary: dict, plots: dict, errors: dict) -> str:
    crawls = summary["crawls"]
    latest = next((c for c in crawls if c["id"] == summary["latest"]), None)
    sections = [
        ("Size estimates", _estimates_html(latest, plots, errors) + "<h3>Size over time</h3>" +
         _figure_html(plots, errors, "size_over_time", "network size over time",
                      "No data yet: the size over time needs estimates at two times or more.")),
        ("Crawls", _crawls_html(crawls)),
        ("Crawl " + (f"{latest['id']} in detail" if latest else "details"),
         _latest_html(latest, plots, errors)),
        ("Samples (BEP 51)", _samples_html(crawls, summary["totals"], plots, errors)),
        ("Churn", _churn_html(summary["churn"], summary["sessions"], plots, errors)),
        ("Zone estimates", report_zones.zones_html(
            summary.get("zone_series") or [],
            lambda name, alt, empty: _figure_html(plots, errors, name, alt, empty))),
    ]
    body = "\n".join(f"<h2>{_e(title)}</h2>\n{content}" for title, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DHT crawl report</title>
<style>{CSS}</style>
</head>
<body>
<h1>DHT crawl report</h1>
<p class="muted">{_e(summary['database'])} · {_num(len(crawls))} crawls · generated
{_e(summary['generated'])} · the same numbers are in <a href="summary.json">summary.json</a></p>
{body}
</body>
</html>
"""


# --- the entry point --------------------------------------------------------------------------

def build_summary(db) -> dict:
    present = table_names(db)
    if not present:
        crawl_rows = []  # an empty file: nothing crawled yet
    else:
        missing = [t for t in REQUIRED_TABLES if t not in present]
        if missing:
            raise StoreError(f"not a crawl database: no table {', '.join(missing)}")
        crawl_rows = _crawl_rows(db)
    crawls = [_crawl_summary(db, row, version) for row, version in crawl_rows]
    with_data = [c for c in crawls if c["sweep"] is not None]
    # Shown in detail: the latest crawl with a complete sweep (a running crawl's partial
    # sweep has no estimates yet), else the latest with a partial one.
    complete = [c for c in with_data if c["sweep_complete"]]
    latest = (complete or with_data or crawls or [None])[-1]
    answered = sorted((c for c in with_data if c["answered"]["total"]),
                      key=lambda c: (c["started_at"], c["id"]))
    churn = _churn(db, answered) if present else []
    sessions = _sessions(db, answered) if present else None
    size, size_source = _size_over_time(db, crawls) if present else ([], "none")
    distinct = (db.execute("SELECT COUNT(DISTINCT infohash) FROM samples").fetchone()[0]
                if present else 0)
    zone_series = report_zones.zone_series(db) if present else []
    return {"generated_at": time.time(), "generated": _iso(time.time()),
            "latest": latest["id"] if latest else None, "crawls": crawls,
            "size_over_time": size, "size_over_time_source": size_source,
            "churn": churn, "sessions": sessions, "zone_series": zone_series,
            "totals": {"crawls": len(crawls), "distinct_infohashes": distinct}}


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
        "estimates": lambda: _plot_estimates(out, latest) if has_sweep else None,
        "size_over_time": lambda: _plot_size_over_time(out, summary["size_over_time"],
                                                       summary["size_over_time_source"]),
        "clients": lambda: _plot_clients(out, latest) if has_sweep else None,
        "features": lambda: _plot_features(out, latest) if has_sweep else None,
        "rtt": lambda: _plot_rtt(out, latest) if has_sweep else None,
        "answers": lambda: _plot_answers(out, latest) if has_sweep else None,
        "samples": lambda: _plot_samples(out, crawls),
        "churn": lambda: _plot_churn(out, summary["churn"], crawls),
        "sessions": lambda: _plot_sessions(out, summary["sessions"]),
        "zone_series": lambda: report_zones.plot_series(out, summary["zone_series"], _figure,
                                                        _save, COLOURS),
        "zone_sessions": lambda: report_zones.plot_sessions(out, summary["zone_series"],
                                                            _figure, _save, COLOURS),
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
    summary = _finite(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    (out / "index.html").write_text(_page(summary, plots, errors), encoding="utf-8")
    return summary


__all__ = ["build_report", "build_summary", "describe_estimate"]
