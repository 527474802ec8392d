"""The crawl report's numbers, read from a crawl database: one summary per crawl (over one
of its sweeps), the size estimates, churn and sessions across crawls (`build_summary`:
what summary.json holds). No plot and no HTML here.

Percentiles are nearest-rank: p of n sorted values is the ceil(p * n / 100)-th.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from datetime import datetime, timezone

from .estimates import Estimate, combine_parts
from .sessions import churn, kaplan_meier, median_length, sessions
from .store import CrawlRow, StoreError
from .export import table_names

TOP_CLIENTS = 15
"""Bars of the clients plot (the rest are summed as `other`)."""
CLIENTS_KEPT = 200
"""Client labels kept in summary.json per crawl (odd `v` values can be many)."""
VERSIONS_KEPT = 30
REQUIRED_TABLES = ("crawls", "contacts", "visits", "aliases", "samples", "estimates")
"""What the report reads (a database from an older or newer crawler may have more or fewer
of `store.TABLES`)."""
COUNTS_MEANING = {
    "reachable": "reachable nodes: those that answer a query from a node they do not know "
                 "(the ones a crawl can visit)",
    "alive": "all running nodes, those behind a NAT or firewall that never answer us included",
    "answered": "nodes that answer us",
    "listed": "nodes other nodes list, stale and unreachable ones included",
}


ZONE_REACHABLE = "zones: nodes that answer"
ZONE_LISTED = "zones: nodes listed"
"""The names of a zone estimate's two figures (crawls of kind `estimate`)."""


# --- small helpers ----------------------------------------------------------------------------

def share_of(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 4) if whole and part is not None else None


def iso_time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def finite(value):
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
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
        "started": iso_time(crawl.started_at), "finished": iso_time(crawl.finished_at),
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
        bep42 = {"valid": valid or 0, "checked": checked, "share": share_of(valid or 0, checked)}
        supported, asked = db.execute(
            f"SELECT SUM(bep51=1), COUNT(bep51) FROM visits WHERE {here}", args).fetchone()
        bep51 = {"supported": supported or 0, "asked": asked,
                 "share": share_of(supported or 0, asked)}
        # Over all the crawl's sweeps, by IP (a node is not asked again within its interval).
        supported, asked = db.execute(
            "SELECT COUNT(DISTINCT CASE WHEN bep51=1 THEN ip END), "
            "COUNT(DISTINCT CASE WHEN bep51 IS NOT NULL THEN ip END) FROM visits WHERE crawl=?",
            (crawl.id,)).fetchone()
        bep51["crawl"] = {"supported": supported, "asked": asked,
                          "share": share_of(supported, asked)}
        for q, outcome, n in db.execute(f"SELECT queries, outcome, COUNT(*) FROM visits "
                                        f"WHERE {here} GROUP BY 1, 2 ORDER BY 1, 2", args):
            queries_per_visit.setdefault(str(q), {})[outcome] = n
    total_answered = answered["total"]
    ranked = sorted(clients.items(), key=lambda item: (-item[1], item[0]))
    client_list = [{"client": label, "nodes": n, "share": share_of(n, total_answered)}
                   for label, n in ranked[:CLIENTS_KEPT]]
    if len(ranked) > CLIENTS_KEPT:
        rest = sum(n for _, n in ranked[CLIENTS_KEPT:])
        client_list.append({"client": f"other ({len(ranked) - CLIENTS_KEPT} labels)",
                            "nodes": rest, "share": share_of(rest, total_answered)})
    summary.update(
        error_codes=error_codes, aliases=aliases, clients=client_list, client_versions=versions,
        bep42=bep42 or {"valid": 0, "checked": 0, "share": None},
        bep51=bep51 or {"supported": 0, "asked": 0, "share": None,
                        "crawl": {"supported": 0, "asked": 0, "share": None}},
        family_share={"found_ipv6": share_of(found["ipv6"], found["total"]),
                      "answered_ipv6": share_of(answered["ipv6"], total_answered)},
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


def zone_series(db) -> list[dict]:
    """Each crawl of kind `estimate` (`crawler.py estimate`), with its measurements (the
    size with its band), the churn between consecutive measurements of its zones, and the
    session lengths (Kaplan-Meier, `sessions.py`)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(crawls)")}
    if "kind" not in columns:
        return []
    series = []
    for (crawl,) in db.execute("SELECT id FROM crawls WHERE kind='estimate' ORDER BY id")\
            .fetchall():
        measurements: dict[int, dict] = {}
        for sweep, at, name, value, low, high, detail in db.execute(
                "SELECT sweep, at, name, value, low, high, detail FROM estimates WHERE crawl=? "
                "AND name IN (?, ?) ORDER BY sweep", (crawl, ZONE_REACHABLE, ZONE_LISTED)):
            row = measurements.setdefault(sweep, {"measurement": sweep, "at": at})
            key = "reachable" if name == ZONE_REACHABLE else "listed"
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
    zones = zone_series(db) if present else []
    return {"generated_at": time.time(), "generated": iso_time(time.time()),
            "latest": latest["id"] if latest else None, "crawls": crawls,
            "size_over_time": size, "size_over_time_source": size_source,
            "churn": churn, "sessions": sessions, "zone_series": zones,
            "totals": {"crawls": len(crawls), "distinct_infohashes": distinct}}


