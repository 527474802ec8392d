"""Zone estimates of the DHT's size (tools/crawling/zones.py): zones as a sweep's partition,
the width from the size estimate, the estimator's arithmetic and the honesty of its
interval (checked by simulation where the truth is known), the counts of a sweep's table,
and the records an estimate leaves in the crawl database."""

from __future__ import annotations

import asyncio
import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from crawling.nodes import ANSWERED, FOUND, SKIPPED, VISITED, NodeTable, address_key  # noqa: E402
from crawling.store import CrawlStore  # noqa: E402
from crawling.zones import (  # noqa: E402
    Zone, Zones, count_zones, pick_zones, t975, wilson, zone_bits, zone_estimate,
)


def test_a_zone_holds_the_ids_with_its_prefix():
    zone = Zone(0x3A5, 12)
    inside = bytes.fromhex("3a5f") + bytes(18)
    assert zone(inside) and zone(bytes.fromhex("3a50") + b"\xff" * 18)
    assert not zone(bytes.fromhex("3a60") + bytes(18))
    low, high = zone.ranges()[0]
    assert low == 0x3A5 << 148 and high == (0x3A6 << 148) - 1
    assert zone(zone.middle) and zone.share == 2 ** -12 and str(zone) == "3a5/12"
    with pytest.raises(ValueError):
        Zone(16, 4)
    zones = Zones([Zone(1, 4), Zone(9, 4)])
    assert zones(bytes([0x1F]) + bytes(19)) and zones(bytes([0x90]) + bytes(19))
    assert not zones(bytes([0x20]) + bytes(19))
    assert zones.zone_of(bytes([0x95]) + bytes(19)) == 1 and zones.share == 2 / 16
    with pytest.raises(ValueError):
        Zones([Zone(1, 4), Zone(1, 5)])


def test_the_width_leaves_the_nodes_wanted_in_a_zone():
    assert zone_bits(20_000_000, 500) == 16  # 305 nodes a zone (at 15 bits: 610)
    assert zone_bits(12_000_000, 500) == 15  # 366
    assert zone_bits(1_000_000, 500) == 11
    assert zone_bits(300, 500) == 0 and zone_bits(None, 500) == 0
    rng = random.Random(1)
    zones = pick_zones(16, 10, rng)
    assert len({zone.prefix for zone in zones.zones}) == 16
    assert len(pick_zones(40, 3, rng)) == 8  # all of them


def test_student_t_and_wilson():
    assert t975(1) == pytest.approx(12.706) and t975(15) == pytest.approx(2.131)
    for degrees, value in ((40, 2.021), (60, 2.000), (120, 1.980)):
        assert t975(degrees) == pytest.approx(value, abs=0.001)
    share, low, high = wilson(500, 500)
    assert share == 1.0 and high == 1.0 and 0.99 < low < 0.995
    share, low, high = wilson(0, 10)
    assert share == 0.0 and low == 0.0 and 0.2 < high < 0.35
    share, low, high = wilson(90, 100)
    assert low < 0.9 < high


def _simulated_estimate(rng: random.Random, size: int, bits: int, zones: int,
                        completeness: float, checked: int) -> tuple[float, float, float]:
    """A zone estimate of `size` nodes with uniform ids, each zone's nodes counted with
    probability `completeness`, and a check of `checked` nodes."""
    share = 2.0 ** -bits
    counts = []
    for _ in range(zones):
        in_zone = sum(1 for _ in range(size) if rng.random() < share) if size < 5000 else \
            max(0, round(rng.gauss(size * share, math.sqrt(size * share))))
        counts.append(sum(rng.random() < completeness for _ in range(in_zone)))
    seen = sum(rng.random() < completeness for _ in range(checked))
    estimate = zone_estimate("zones", counts, bits, "reachable", (seen, checked))
    return estimate.value, estimate.low, estimate.high


def test_the_interval_covers_the_truth_as_often_as_it_says():
    """400 simulated estimates of 2 million nodes (16 zones of 12 bits: about 490 nodes a
    zone), with a crawl that counts 99 % of a zone's nodes: the estimate is unbiased and
    its 95 % interval covers the truth at least 95 % of the time (the completeness
    correction's ends make it a little wider than 95 %)."""
    rng = random.Random(7)
    size, covered, errors = 2_000_000, 0, []
    for _ in range(400):
        value, low, high = _simulated_estimate(rng, size, 12, 16, 0.99, 500)
        errors.append(value / size - 1)
        covered += low <= size <= high
    assert abs(sum(errors) / len(errors)) < 0.005
    assert covered >= 0.95 * 400
    assert sum(abs(e) <= 0.03 for e in errors) >= 0.95 * 400


def test_a_crawl_that_misses_nodes_is_corrected_by_the_check():
    rng = random.Random(3)
    size = 2_000_000
    values = [_simulated_estimate(rng, size, 12, 16, 0.9, 500)[0] for _ in range(100)]
    assert abs(sum(values) / len(values) / size - 1) < 0.01
    # Without the check the count is 10 % short.
    counts = [450] * 16
    assert zone_estimate("z", counts, 12, "reachable").value == 450 * 4096


def test_an_estimate_of_one_zone_has_no_interval_and_none_of_no_zones():
    one = zone_estimate("z", [100.0], 4, "reachable")
    assert one.value == 1600 and one.low is None
    assert zone_estimate("z", [], 4, "reachable").value is None


def test_zone_counts_come_from_the_sweeps_table():
    table = NodeTable()
    table.new_sweep(1)
    zones = Zones([Zone(0, 1), Zone(1, 1)])  # the two halves of the keyspace
    def add(ip: str, port: int, first_byte: int, flags: int) -> None:
        number = table.add(address_key(ip, port), bytes([first_byte]) + bytes(19))
        table.flags[number] |= FOUND | flags
    add("10.0.0.1", 1, 0x10, VISITED | ANSWERED)
    add("10.0.0.2", 1, 0x20, VISITED)  # silent
    add("10.0.0.3", 1, 0x30, 0)  # found, not visited
    # A crowded IP in the upper half: 3 visited, 2 answered, 2 skipped (count 2/3 each).
    for port in range(1, 4):
        add("10.0.0.9", port, 0x90, VISITED | (ANSWERED if port < 3 else 0))
    for port in range(4, 6):
        add("10.0.0.9", port, 0xA0, VISITED | SKIPPED)
    lower, upper = count_zones(table, zones)
    assert (lower.found, lower.answered, lower.skipped) == (3, 1, 0)
    assert lower.reachable == 1 and lower.listed == 3
    assert (upper.found, upper.answered, upper.skipped) == (5, 2, 2)
    assert upper.reachable == pytest.approx(2 + 2 * 2 / 3)


def test_an_estimate_is_a_crawl_of_kind_estimate_with_its_zones(tmp_path):
    async def run():
        store = await CrawlStore.open(tmp_path / "e.sqlite")
        crawl = await store.begin_crawl({"kind": "estimate"}, "test", kind="estimate")
        store.add_zone(crawl, 1, "3a5/12", 12, 900, 450, 3, 452.0, 900.0)
        store.add_estimate(crawl, 1, "zones: nodes that answer", 1.0e6, 0.9e6, 1.1e6,
                           "reachable", {"zones": 16})
        await store.sweep_done(crawl, 1)
        await store.end_crawl(crawl, "complete", 1)
        # An estimate is never what --resume carries on.
        again = await store.begin_crawl({"kind": "estimate"}, "test", kind="estimate")
        rows = await store.fetch("SELECT kind FROM crawls ORDER BY id")
        zones = await store.fetch("SELECT zone, bits, found, answered FROM zones")
        latest = await store.latest_unfinished()
        await store.close()
        return rows, zones, latest, again
    rows, zones, latest, again = asyncio.run(run())
    assert rows == [("estimate",), ("estimate",)]
    assert zones == [("3a5/12", 12, 900, 450)]
    assert latest is None


def test_an_old_database_gains_the_kind_column(tmp_path):
    import sqlite3
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE crawls (id INTEGER PRIMARY KEY, started_at REAL NOT NULL, "
               "finished_at REAL, status TEXT NOT NULL, pid INTEGER, host TEXT, settings TEXT, "
               "sweeps_done INTEGER DEFAULT 0, mldht_version TEXT, label TEXT)")
    db.execute("INSERT INTO crawls (started_at, status) VALUES (1, 'complete')")
    db.commit()
    db.close()

    async def run():
        store = await CrawlStore.open(path)
        rows = await store.fetch("SELECT kind FROM crawls")
        await store.close()
        return rows
    assert asyncio.run(run()) == [("crawl",)]


def test_the_report_shows_a_series_of_zone_estimates(tmp_path):
    """Three measurements of the same zones: the report's zone section has their sizes,
    who left and joined, the sessions, and both plots."""
    from crawling.report import build_report

    async def record():
        store = await CrawlStore.open(tmp_path / "series.sqlite")
        crawl = await store.begin_crawl({"kind": "estimate"}, "test", kind="estimate")
        answered_in = {1: range(0, 10), 2: range(2, 12), 3: range(2, 12)}
        for sweep in (1, 2, 3):
            for n in range(12):
                store.add_visit({"crawl": crawl, "sweep": sweep, "at": 1000.0 + 60 * sweep + n,
                                 "ip": f"10.0.0.{n + 1}", "port": 6881, "family": "ipv4",
                                 "queries": 1, "outcome": "answered" if n in answered_in[sweep]
                                 else "timeout"})
            for name, value in (("zones: nodes that answer", 1000.0 * sweep),
                                ("zones: nodes listed", 2000.0 * sweep)):
                store.add_estimate(crawl, sweep, name, value, value * 0.9, value * 1.1,
                                   "reachable", {"zones": 16, "bits": 10, "queries": 500,
                                                 "seconds": 40.0})
            await store.sweep_done(crawl, sweep)
        await store.end_crawl(crawl, "complete", 3)
        await store.close()
    asyncio.run(record())
    summary = build_report(tmp_path / "series.sqlite", tmp_path / "report")
    series, = summary["zone_series"]
    assert [m["reachable"]["value"] for m in series["measurements"]] == [1000, 2000, 3000]
    first, second = series["churn"]
    assert (first["left"], first["joined"], second["left"], second["joined"]) == (2, 2, 0, 0)
    # Nodes 10 and 11 began a session at the second measurement, still running at the third.
    assert series["sessions"]["observed"] == 2 and series["sessions"]["ended"] == 0
    assert summary["plots"]["zone_series"] and summary["plots"]["zone_sessions"] is None
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Zone estimates" in page and "zone_series.svg" in page
