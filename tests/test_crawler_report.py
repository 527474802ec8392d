"""tools/crawling/report.py and export.py: the crawl report's numbers, page and plots from a
synthetic database of three crawls, an empty or tiny database, and the export's CSV and JSONL
shapes. No network: the database is written here with CrawlStore."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from crawling import estimates, export, report, store  # noqa: E402

T0 = 1_700_000_000.0
DAY = 86400.0
SCRIPT = "<script>alert(1)</script>"
LT = {"client": "libtorrent", "client_version": "2.0", "v": b"LT\x02\x00"}


def node_id(k: int) -> bytes:
    return bytes([k]) * 20


def ip_of(k: int, family: str = "ipv4") -> str:
    return f"198.51.100.{k}" if family == "ipv4" else f"2001:db8::{k:x}"


def add(db: store.CrawlStore, crawl: int, sweep: int, k: int, outcome: str | None, *,
        family: str = "ipv4", ip: str | None = None, queries: int = 1, **fields) -> None:
    """A contact (node k) and, unless outcome is None, its visit."""
    ip = ip or ip_of(k, family)
    at = T0 + (crawl - 1) * DAY + sweep * 600 + k
    db.add_contact(crawl, sweep, ip, 6881, family, node_id(k), at, None)
    if outcome is None:
        return
    row = {"crawl": crawl, "sweep": sweep, "at": at + 1, "ip": ip, "port": 6881,
           "family": family, "node_id": node_id(k), "outcome": outcome, "queries": queries,
           **fields}
    if outcome == "answered":
        row.setdefault("answered_id", node_id(k))
    db.add_visit(row)


def build_db(path: Path) -> Path:
    return asyncio.run(_build_db(path))


async def _build_db(path: Path) -> Path:
    """Three crawls a day apart:

    1. complete, one sweep: 8 IPv4 + 2 IPv6 found; 7 answered, 2 timeouts, 1 error.
    2. complete, two sweeps; its sweep 2: nodes 1, 2, 9, 12 and node 5 on a new IP answer,
       101 times out, 10 is found and not visited.
    3. `running` on another host (shown `incomplete`), no sweep complete: 1 and 9 answer.
    """
    db = await store.CrawlStore.open(path)
    for crawl in (1, 2, 3):
        assert await db.begin_crawl({"concurrency": 64, "samples": True, "note": "<b>bold</b>"},
                              "0.1.0") == crawl
    # crawl 1, sweep 1
    add(db, 1, 1, 1, "answered", rtt=0.010, bep42=1, bep51=1, samples=3, num=100, interval=60,
        **LT)
    add(db, 1, 1, 2, "answered", rtt=0.020, bep42=1, bep51=1, samples=2, **LT)
    add(db, 1, 1, 3, "answered", rtt=0.030, bep42=0, bep51=0, queries=2, **LT)
    add(db, 1, 1, 4, "answered", rtt=0.040, bep42=1, bep51=1, samples=0, client=SCRIPT,
        v=b"<s\x01\x00")
    add(db, 1, 1, 5, "answered", rtt=0.050, bep42=0, client=SCRIPT, v=b"<s\x01\x00")
    add(db, 1, 1, 6, "answered", rtt=0.060, bep42=0, v=b"\xff\x01")
    add(db, 1, 1, 7, "timeout", queries=2)
    add(db, 1, 1, 8, "error", error_code=202)
    add(db, 1, 1, 101, "answered", family="ipv6", rtt=0.070, bep42=1)
    add(db, 1, 1, 102, "timeout", family="ipv6", queries=2)
    db.add_alias(1, 1, ip_of(1), 6882, node_id(200), ip_of(2) + ":6881")
    db.add_alias(1, 1, ip_of(2), 6881, node_id(201), None)
    db.add_samples(1, ip_of(1), T0 + 5, [b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20])
    db.add_samples(1, ip_of(2), T0 + 6, [b"\xcc" * 20, b"\xdd" * 20])
    db.add_estimate(1, 1, "lookup distances", 1000.0, 800.0, 1200.0, "reachable",
                    {"standard_error": 100.0, "lookups": 16})
    mr = estimates.recapture_estimate("mark-recapture (halves)", {1, 2, 3, 4, 5}, {3, 4, 5, 6})
    db.add_estimate(1, 1, mr.name, mr.value, mr.low, mr.high, mr.counts, mr.detail)
    # crawl 2, sweep 1 then sweep 2
    for k in (1, 2, 3, 4):
        add(db, 2, 1, k, "answered", rtt=0.1, bep42=1, **LT)
    for k in (1, 2, 9, 12):
        add(db, 2, 2, k, "answered", rtt=0.1 * k, bep42=1, **LT)
    add(db, 2, 2, 5, "answered", ip="198.51.100.55", rtt=0.2, bep42=0, **LT)
    add(db, 2, 2, 101, "timeout", family="ipv6", queries=2)
    add(db, 2, 2, 10, None)
    # As the crawler stores them (crawl.py): the counts first, then the estimates.
    for e in (estimates.count_estimate("nodes that answered", 5, "reachable", answered_ipv4=5),
              estimates.count_estimate("nodes found", 7, "listed", found_ipv4=6, found_ipv6=1)):
        db.add_estimate(2, 2, e.name, e.value, e.low, e.high, e.counts, e.detail)
    db.add_estimate(2, 2, "lookup distances", 1100.0, 900.0, 1300.0, "reachable",
                    {"standard_error": 102.0, "lookups": 16})
    mr = estimates.recapture_estimate("mark-recapture (sweeps 1, 2)", {1, 2, 3, 4},
                                      {1, 2, 5, 9, 12})
    db.add_estimate(2, 2, mr.name, mr.value, mr.low, mr.high, mr.counts, mr.detail)
    # crawl 3, sweep 1 (partial)
    add(db, 3, 1, 1, "answered", rtt=0.05, bep42=1, **LT)
    add(db, 3, 1, 9, "answered", rtt=0.05, bep42=1, **LT)
    add(db, 3, 1, 11, "timeout", queries=2)
    await db.flush()
    await db.end_crawl(1, "complete", 1)
    await db.end_crawl(2, "complete", 2)
    sql = db.backend.db  # the SQLite connection underneath
    for crawl in (1, 2, 3):
        start = T0 + (crawl - 1) * DAY
        sql.execute("UPDATE crawls SET started_at=?, finished_at=? WHERE id=?",
                    (start, None if crawl == 3 else start + 3600, crawl))
        sql.execute("UPDATE estimates SET at=? WHERE crawl=?", (start + 3000, crawl))
    sql.execute("UPDATE crawls SET host='elsewhere.invalid' WHERE id=3")
    await db.close()
    return path


@pytest.fixture
def crawl_db(tmp_path) -> Path:
    return build_db(tmp_path / "crawl.sqlite")


@pytest.fixture
def built(crawl_db, tmp_path):
    out = tmp_path / "report"
    return report.build_report(crawl_db, out), out


def test_per_crawl_numbers(built):
    summary, _ = built
    one, two, three = summary["crawls"]
    assert [c["status"] for c in summary["crawls"]] == ["complete", "complete", "incomplete"]
    assert one["started_at"] == T0 and one["duration_s"] == 3600
    assert one["settings"]["note"] == "<b>bold</b>"
    assert (one["sweep"], one["sweep_complete"]) == (1, True)
    assert (two["sweep"], two["sweep_complete"]) == (2, True)
    assert (three["sweep"], three["sweep_complete"]) == (1, False)
    assert summary["latest"] == 2  # the latest crawl with a complete sweep

    assert one["found"] == {"ipv4": 8, "ipv6": 2, "total": 10}
    assert one["visited"] == {"ipv4": 8, "ipv6": 2, "total": 10}
    assert one["answered"] == {"ipv4": 6, "ipv6": 1, "total": 7}
    assert one["outcomes"] == {"answered": 7, "timeout": 2, "error": 1}
    assert (one["timeouts"], one["errors"], one["aliases"]) == (2, 1, 2)
    assert one["error_codes"] == {"202": 1}
    assert one["queries"] == 13  # 7 answered (one on its 2nd query), 2 timeouts (2), 1 error
    assert [(c["client"], c["nodes"]) for c in one["clients"]] == [
        ("libtorrent", 3), (SCRIPT, 2), ("no v key", 1), ("unknown (v=ff01)", 1)]
    assert one["clients"][0]["share"] == round(3 / 7, 4)
    assert one["client_versions"][0] == {"client": "libtorrent", "version": "2.0", "nodes": 3}
    assert one["bep42"] == {"valid": 4, "checked": 7, "share": round(4 / 7, 4)}
    assert one["bep51"] == {"supported": 3, "asked": 4, "share": 0.75,
                            "crawl": {"supported": 3, "asked": 4, "share": 0.75}}
    assert one["family_share"] == {"found_ipv6": 0.2, "answered_ipv6": round(1 / 7, 4)}
    rtt = one["rtt"]
    assert (rtt["count"], rtt["p50_ms"], rtt["p90_ms"], rtt["p99_ms"]) == (7, 40, 70, 70)
    assert (rtt["mean_ms"], rtt["min_ms"], rtt["max_ms"]) == (40, 10, 70)
    histogram = rtt["histogram"]
    assert sum(histogram["counts"]) + histogram["overflow"] == 7
    assert len(histogram["edges_ms"]) == len(histogram["counts"]) + 1
    assert histogram["edges_ms"][-1] >= 70
    assert one["queries_per_visit"] == {"1": {"answered": 6, "error": 1},
                                        "2": {"answered": 1, "timeout": 2}}
    assert one["samples"] == {"received": 5, "rows": 5, "distinct_infohashes": 4,
                              "sampling_nodes": 2}
    assert summary["totals"] == {"crawls": 3, "distinct_infohashes": 4}

    assert two["found"] == {"ipv4": 6, "ipv6": 1, "total": 7}
    assert two["answered"] == {"ipv4": 5, "ipv6": 0, "total": 5}
    assert two["timeouts"] == 1
    # IPs .1 and .2 answered in both sweeps; .3, .4, .9, .12, .55 in one; ::65 in none.
    assert two["answered_per_node"] == {"sweeps": 2,
                                        "nodes_by_sweeps_answered": {"0": 1, "1": 5, "2": 2}}
    assert three["answered"]["total"] == 2 and three["timeouts"] == 1


def test_estimates_side_by_side(built):
    summary, _ = built
    one = summary["crawls"][0]
    rows = {r["name"]: r for r in one["estimates"]}
    # Crawl 1 stored no counts: they come from the database, per family.
    assert list(rows) == ["nodes that answered", "nodes found", "lookup distances",
                          "mark-recapture (halves)"]
    assert [r["source"] for r in rows.values()] == ["database"] * 2 + ["estimates"] * 2
    assert rows["nodes found"]["value"] == 10 and rows["nodes found"]["families"] == {
        "ipv4": 8, "ipv6": 2}
    assert rows["nodes found"]["counts"] == "listed"
    assert rows["nodes that answered"]["value"] == 7
    lookup = rows["lookup distances"]
    assert (lookup["value"], lookup["low"], lookup["high"], lookup["standard_error"]) == (
        1000, 800, 1200, 100)
    assert "reachable" in lookup["describes"] and "standard error 100" in lookup["describes"]
    mr = rows["mark-recapture (halves)"]
    value, low, high = estimates.chapman(5, 4, 3)
    assert (mr["value"], mr["low"], mr["high"]) == (value, low, high)
    assert "Chapman" in mr["describes"] and "5 and 4 nodes, 3 in both" in mr["describes"]
    assert "answered us" in rows["nodes that answered"]["describes"]
    # The size over time: every stored estimate, in time order.
    assert [(r["crawl"], r["name"]) for r in summary["size_over_time"]] == [
        (1, "lookup distances"), (1, "mark-recapture (halves)"), (2, "nodes that answered"),
        (2, "nodes found"), (2, "lookup distances"), (2, "mark-recapture (sweeps 1, 2)")]
    # Crawl 2 stored its counts: shown once, with the database's split per family.
    two = summary["crawls"][1]["estimates"]
    assert [(r["name"], r["source"]) for r in two] == [
        ("nodes that answered", "estimates"), ("nodes found", "estimates"),
        ("lookup distances", "estimates"), ("mark-recapture (sweeps 1, 2)", "estimates")]
    assert two[0]["counts"] == "reachable" and two[0]["families"] == {"ipv4": 5, "ipv6": 0}
    assert two[0]["describes"] == ("A count of the nodes that answered us: a lower bound of "
                                   "the reachable nodes.")
    assert two[1]["families"] == {"ipv4": 6, "ipv6": 1} and two[2]["families"] is None
    # Crawl 3 (no sweep complete, nothing stored): its partial sweep's counts only.
    assert [r["name"] for r in summary["crawls"][2]["estimates"]] == [
        "nodes that answered", "nodes found"]
    assert summary["size_over_time_source"] == "estimates"


def test_churn_and_sessions(built):
    summary, _ = built
    first, second = summary["churn"]
    assert (first["from"], first["to"], first["gap_s"]) == (1, 2, DAY)
    # By id: {1,2,3,4,5,6,101} then {1,2,5,9,12}: node 5 stayed though its IP changed.
    assert first["by_id"] == {"before": 7, "after": 5, "stayed": 3, "left": 4, "arrived": 2}
    assert first["by_ip"] == {"before": 7, "after": 5, "stayed": 2, "left": 5, "arrived": 3}
    assert second["by_id"] == {"before": 5, "after": 2, "stayed": 2, "left": 3, "arrived": 0}
    sessions = summary["sessions"]
    # Only node 12 (crawl 2 alone) was seen to begin and end; the rest touch crawl 1 or 3.
    assert sessions["complete"] == {"1": 1, "2": 0, "3": 0}
    assert sessions["censored"] == {"1": 4, "2": 3, "3": 1}
    assert sessions["median_gap_s"] == DAY and sessions["complete_sessions"] == 1
    # Node 12, seen in crawl 2 only: up for less than the two days from crawl 1 to 3.
    assert sessions["median_complete_crawls"] == 1
    assert sessions["median_complete_s"] == [0, 2 * DAY]


def test_page_plots_and_json(built):
    summary, out = built
    assert summary["plot_errors"] == {}
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert set(sources) == {"estimates.svg", "size_over_time.svg", "clients.svg",
                            "features.svg", "rtt.svg", "answers.svg", "samples.svg",
                            "churn.svg", "sessions.svg"}
    for name in sources:
        assert (out / name).stat().st_size > 1000
        assert (out / name).read_text().lstrip().startswith("<?xml")
    assert "<script" not in page.lower() and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" not in page  # crawl 2 is the one shown
    assert "Chapman" in page and "reachable nodes" in page and "nodes that answer us" in page
    assert "4 and 5 nodes, 2 in both" in page
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_database_text_is_escaped(crawl_db, tmp_path):
    out = tmp_path / "report"
    assert report.build_report(crawl_db, out)["plots"]["churn"] == "churn.svg"
    db = sqlite3.connect(crawl_db)  # crawl 1 becomes the latest: its clients are shown
    with db:
        db.execute("DELETE FROM visits WHERE crawl > 1")
        db.execute("DELETE FROM contacts WHERE crawl > 1")
        db.execute("UPDATE crawls SET host='<i>host</i>', mldht_version='\"><img src=x>' ")
    db.close()
    summary = report.build_report(crawl_db, out)
    assert summary["latest"] == 1 and summary["plot_errors"] == {}
    page = (out / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower() and "<i>host" not in page and "<img src=x" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert (out / name).exists()
    # The churn plots are gone with their data: no stale file from the first report.
    assert summary["churn"] == [] and not (out / "churn.svg").exists()


def test_tables_the_report_does_not_read(crawl_db, tmp_path):
    db = sqlite3.connect(crawl_db)
    db.execute("DROP TABLE edges")
    db.execute("DROP TABLE IF EXISTS intents")
    db.commit()
    db.close()
    assert report.build_report(crawl_db, tmp_path / "out")["latest"] == 2
    db = sqlite3.connect(crawl_db)
    db.execute("DROP TABLE samples")
    db.commit()
    db.close()
    with pytest.raises(store.StoreError, match="not a crawl database: no table samples"):
        report.build_report(crawl_db, tmp_path / "out")


async def _empty(path: Path) -> None:
    await (await store.CrawlStore.open(path)).close()


def test_empty_database(tmp_path):
    path = tmp_path / "empty.sqlite"
    asyncio.run(_empty(path))
    summary = report.build_report(path, tmp_path / "out")
    assert summary["crawls"] == [] and summary["latest"] is None
    assert summary["churn"] == [] and summary["sessions"] is None
    assert all(plot is None for plot in summary["plots"].values())
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<img" not in page and "No data yet" in page
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["totals"] == {
        "crawls": 0, "distinct_infohashes": 0}


@pytest.mark.parametrize("stage", ["begun", "one contact", "one timeout", "one answer"])
def test_tiny_databases(tmp_path, stage):
    path = tmp_path / "tiny.sqlite"

    async def build() -> None:
        db = await store.CrawlStore.open(path)
        await db.begin_crawl({}, "0.1.0")
        if stage == "one answer":
            add(db, 1, 1, 1, "answered", rtt=0.0)
        elif stage != "begun":
            add(db, 1, 1, 1, "timeout" if stage == "one timeout" else None)
        await db.close()
    asyncio.run(build())
    summary = report.build_report(path, tmp_path / "out")
    assert summary["plot_errors"] == {}
    assert summary["crawls"][0]["status"] == "running"  # this process is alive
    page = (tmp_path / "out" / "index.html").read_text()
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert (tmp_path / "out" / name).exists()
    if stage == "one answer":
        assert summary["crawls"][0]["rtt"]["p50_ms"] == 0
        assert summary["plots"]["clients"] == "clients.svg"


def test_no_database(tmp_path):
    with pytest.raises(store.StoreError, match="no crawl database"):
        report.build_report(tmp_path / "missing.sqlite", tmp_path / "out")
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "empty-file.sqlite").write_bytes(b"")
    assert report.build_report(tmp_path / "empty-file.sqlite", tmp_path / "out")["crawls"] == []


# --- export -----------------------------------------------------------------------------------

def test_export_csv(crawl_db):
    out = io.StringIO()
    assert export.export(crawl_db, "visits", "csv", out) == 23
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(store.VISIT_COLUMNS)
    first = dict(zip(rows[0], rows[1]))
    assert first["node_id"] == "01" * 20 and first["answered_id"] == "01" * 20
    assert first["v"] == "4c540200" and first["client"] == "libtorrent"
    assert first["error_code"] == "" and first["rtt"] == "0.01"
    assert len(rows) == 24


def test_export_jsonl(crawl_db):
    out = io.StringIO()
    assert export.export(crawl_db, "samples", "jsonl", out) == 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"crawl": 1, "infohash": "aa" * 20, "ip": "198.51.100.1", "at": T0 + 5}
    out = io.StringIO()
    export.export(crawl_db, "crawls", "jsonl", out)
    crawls = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [c["id"] for c in crawls] == [1, 2, 3] and crawls[2]["finished_at"] is None
    out = io.StringIO()
    export.export(crawl_db, out_stream=out)  # visits, CSV by default
    assert out.getvalue().startswith("crawl,sweep,at,ip,")


def test_export_errors(crawl_db, tmp_path):
    with pytest.raises(export.ExportError, match="unknown table 'nodes': choose one of crawls"):
        export.export(crawl_db, "nodes", "csv", io.StringIO())
    with pytest.raises(export.ExportError, match="unknown format 'xml'"):
        export.export(crawl_db, "visits", "xml", io.StringIO())
    with pytest.raises(store.StoreError, match="no crawl database"):
        export.export(tmp_path / "missing.sqlite", "visits", "csv", io.StringIO())
    (tmp_path / "not-a-db").write_text("hello, this is not SQLite" * 100)
    with pytest.raises(store.StoreError, match="cannot read"):
        export.export(tmp_path / "not-a-db", "visits", "csv", io.StringIO())
