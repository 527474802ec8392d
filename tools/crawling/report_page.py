"""The crawl report's page: one static HTML file (no script, no CDN) around the plots."""

from __future__ import annotations

import html
import json

from .report_figures import TOP_CLIENTS, share_of
from .report_plots import duration_text, nodes_text

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
        parts.append(f"± {nodes_text(row['standard_error'])} (standard error)")
    if row["low"] is not None and row["high"] is not None:
        parts.append(f"95 %: {nodes_text(row['low'])} – {nodes_text(row['high'])}")
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
        value = _e("–" if r["value"] is None else nodes_text(r["value"]))
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
               f"({_pct(share_of(total, c['visited']['total']))} of visits), "
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
                         _pct(share_of(rest, total))])
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
        rows.append([f"{_e(p['from'])} → {_e(p['to'])}", _e(duration_text(p["gap_s"])),
                     _num(i["stayed"]), _num(i["left"]), _num(i["arrived"]),
                     _num(a["stayed"]), _num(a["left"]), _num(a["arrived"])])
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
                           f"{_e(duration_text(low))} and {_e(duration_text(high))})")
        else:
            median_text = ""
        out.append(
            f"<p>A session is a run of consecutive crawls in which a node id answered; crawls "
            f"were about {_e(duration_text(sessions['median_gap_s']))} apart, so a length is "
            f"known to "
            f"that precision. {_num(sessions['complete_sessions'])} sessions began and ended "
            f"within the crawls{median_text}; the others were under way at the first or the "
            "last crawl.</p>")
        out.append(_figure_html(plots, errors, "sessions", "session lengths", "No data yet."))
    return "\n".join(out)


def _zones_html(series: list[dict], plots: dict, errors: dict) -> str:
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
    out.append(_figure_html(plots, errors, "zone_series", "size from zone estimates, and churn",
                            "No data yet."))
    out.append(_figure_html(plots, errors, "zone_sessions", "session lengths",
                            "Session lengths need three measurements or more."))
    return "\n".join(out)


def render_page(summary: dict, plots: dict, errors: dict) -> str:
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
        ("Zone estimates", _zones_html(summary.get("zone_series") or [], plots, errors)),
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

