"""tools/crawler.py: a crawl of a local network on loopback (every node found, named and
measured, nobody rate-limits it), the crash-and-resume case (kill -9 mid-crawl, the database
intact, the crawl shown incomplete, `--resume` finishing it without asking any node twice),
and the parts: sanitizing, Chapman's estimate, the store."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import zlib
import sys
from pathlib import Path

import pytest

from netguard import guarded_env
from toolrun import LoopbackNetwork, run_tool

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from crawling.estimates import chapman, recapture_estimate  # noqa: E402
from crawling.store import CrawlStore  # noqa: E402
from crawling.traversal import acceptable  # noqa: E402

CRAWLER = TOOLS / "crawler.py"


# --- parts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("address, referrer, ok", [
    (("203.0.113.5", 6881), ("1.1.1.1", 6881), False),       # a documentation range, from afar
    (("8.8.8.8", 6881), ("1.1.1.1", 6881), True),
    (("10.0.0.5", 6881), ("1.1.1.1", 6881), False),          # private, from afar
    (("10.0.0.5", 6881), ("10.0.0.9", 6881), True),          # private, from the same kind
    (("127.0.0.5", 6881), ("1.1.1.1", 6881), False),         # loopback from afar
    (("127.0.0.5", 6881), ("127.0.0.9", 6881), True),
    (("240.0.0.1", 6881), ("1.1.1.1", 6881), False),         # reserved
    (("224.0.0.1", 6881), ("1.1.1.1", 6881), False),         # multicast
    (("8.8.8.8", 0), ("1.1.1.1", 6881), False),              # port 0
])
def test_sanitizing_rules(address, referrer, ok):
    assert acceptable(address, referrer) is ok


def test_chapman_estimate_and_interval():
    value, low, high = chapman(100, 100, 50)
    assert value == pytest.approx(101 * 101 / 51 - 1)
    variance = 101 * 101 * 50 * 50 / (51 ** 2 * 52)
    assert high - value == pytest.approx(1.96 * math.sqrt(variance))
    assert low >= 150  # never below the distinct nodes seen in the two captures
    full = recapture_estimate("x", set(range(50)), set(range(50)))
    assert (full.value, full.low, full.high) == (50, 50, 50)
    empty = recapture_estimate("x", set(), {1})
    assert empty.value is None


def test_the_store_survives_a_reopen_and_knows_the_frontier(tmp_path):
    store = CrawlStore(tmp_path / "c.sqlite")
    crawl = store.begin_crawl({"rate": 1}, "test")
    store.add_contact(crawl, 1, "10.0.0.1", 1, "ipv4", b"\x01" * 20, 1.0, None)
    store.add_contact(crawl, 1, "10.0.0.2", 2, "ipv4", b"\x02" * 20, 1.0, "10.0.0.1:1")
    store.add_contact(crawl, 1, "10.0.0.3", 3, "ipv4", b"\x03" * 20, 1.0, "10.0.0.1:1")
    store.add_intents(crawl, 1, ["10.0.0.1", "10.0.0.2"], 2.0)
    store.add_visit({"crawl": crawl, "sweep": 1, "at": 2.5, "ip": "10.0.0.1", "port": 1,
                     "family": "ipv4", "outcome": "answered", "queries": 1})
    store.close()
    again = CrawlStore(tmp_path / "c.sqlite")
    contacts, visited = again.frontier(crawl, 1)
    assert visited == {"10.0.0.1", "10.0.0.2"}  # an intent counts: never asked twice
    assert [row[0] for row in contacts] == ["10.0.0.3"]
    assert again.crawls()[0].shown_status == "running"  # our own live process
    again.close()


def test_bad_input_exits_2(capsys, tmp_path):
    from crawler import main
    assert main(["crawl", "--db", str(tmp_path / "x.sqlite"), "--resume",
                 "--bootstrap", "127.0.0.1:1"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["crawl", "--db", str(tmp_path / "y.sqlite"), "--rate", "0",
                 "--bootstrap", "127.0.0.1:1"]) == 2
    (tmp_path / "not-a-db").write_text("hello, this is not SQLite at all" * 10)
    assert main(["crawl", "--db", str(tmp_path / "not-a-db"), "--bootstrap",
                 "127.0.0.1:1"]) == 2
    assert "cannot use" in capsys.readouterr().err


# --- crawls of a local network ---------------------------------------------------------------

class Network(LoopbackNetwork):
    """Counts the sample_infohashes each node gets from the crawler (on .250)."""

    def __init__(self, count: int, base: int) -> None:
        super().__init__(count, base)
        self.sampled: dict[int, int] = {i: 0 for i in range(count)}

    def observe(self, index: int, event) -> None:
        if event.kind == "query_received" and event.method == "sample_infohashes" and \
                event.source[0].endswith(".250"):
            self.sampled[index] += 1


async def run_crawler(*argv: str, timeout: float = 120) -> tuple[int, str, str]:
    return await run_tool("crawler.py", *argv, timeout=timeout)


@pytest.mark.network
async def test_a_crawl_finds_and_describes_every_node(tmp_path):
    net = Network(30, 21)
    await net.start()
    swarms = [bytes([i]) * 20 for i in range(1, 6)]
    for index, info_hash in enumerate(swarms):
        await net.nodes[index].announce(info_hash, 7000 + index)
    storing = {i for i, node in enumerate(net.nodes) if node.status()["stores"]["infohashes"]}
    try:
        db = tmp_path / "crawl.sqlite"
        code, out, err = await run_crawler(
            "crawl", "--db", str(db), "--bootstrap", net.bootstrap, "--bind",
            "127.0.21.250:0", "--sweeps", "2", "--samples", "--json", "--timeout", "2")
        assert code == 0, err
        summary = json.loads(out)
        assert summary["status"] == "complete" and summary["sweeps_done"] == 2
        assert [n.stats.rate_limited for n in net.nodes] == [0] * 30
        # Asked for samples once a sweep: every mldht node here gives interval 0 (its whole
        # store fits in one sample), so it may be asked again the next sweep.
        assert storing
        assert sorted(set(net.sampled.values())) == [2], net.sampled
    finally:
        await net.close()
    db_rows = sqlite3.connect(db)
    visits = db_rows.execute("SELECT ip, outcome, client, client_version, bep42, rtt, bep51, "
                             "num, interval, neighbours, answered_id FROM visits "
                             "WHERE sweep=1").fetchall()
    assert len(visits) == 30
    ids = {n.node_id for n in net.nodes}
    for ip, outcome, client, version, bep42, rtt, bep51, num, interval, neighbours, \
            answered_id in visits:
        assert outcome == "answered" and client == "mldht (Python)" and version == "0.1"
        assert bep42 in (0, 1) and 0 <= rtt < 1.0
        assert bep51 == 1 and num >= 0 and interval >= 0 and neighbours > 0
        assert bytes(answered_id) in ids
    sampled = {bytes(row[0]) for row in db_rows.execute("SELECT infohash FROM samples")}
    assert sampled == set(swarms)
    estimates = {e["name"]: e for e in summary["estimates"][-1]}
    assert estimates["nodes that answered"]["value"] == 30
    assert estimates["mark-recapture, this sweep and the last"]["value"] == pytest.approx(30)
    crawl_row = db_rows.execute("SELECT status, sweeps_done FROM crawls").fetchone()
    assert crawl_row == ("complete", 2)


@pytest.mark.network
async def test_kill_9_then_resume_finishes_without_asking_anyone_twice(tmp_path):
    net = Network(40, 22)
    await net.start()
    db = tmp_path / "crawl.sqlite"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CRAWLER), "crawl", "--db", str(db), "--bootstrap",
            net.bootstrap, "--bind", "127.0.22.250:0", "--rate", "8", "--concurrency", "2",
            "--estimate-lookups", "0", "--timeout", "2", "-q", env=guarded_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            for _ in range(300):  # until some visits are on disk (at most 30 s)
                await asyncio.sleep(0.1)
                if db.exists():
                    with contextlib_suppress():
                        done = sqlite3.connect(db).execute(
                            "SELECT COUNT(*) FROM visits").fetchone()[0]
                        if done >= 8:
                            break
            process.send_signal(signal.SIGKILL)  # our own child: a crash mid-crawl
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        check = sqlite3.connect(db)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        visited_before = check.execute("SELECT COUNT(*) FROM visits").fetchone()[0]
        check.close()
        assert 8 <= visited_before < 40
        store = CrawlStore(db)
        assert store.crawls()[0].shown_status == "incomplete"
        store.close()
        code, out, err = await run_crawler(
            "crawl", "--db", str(db), "--resume", "--bootstrap", net.bootstrap, "--bind",
            "127.0.22.250:0", "--estimate-lookups", "0", "--timeout", "2", "--json")
        assert code == 0, err
        assert "resuming crawl 1" in err
        assert json.loads(out)["status"] == "complete"
        # Asked for samples at most once over both runs, the crash included.
        assert max(net.sampled.values()) == 1, net.sampled
    finally:
        await net.close()
    rows = sqlite3.connect(db)
    intents, distinct = rows.execute("SELECT COUNT(*), COUNT(DISTINCT ip) FROM intents").fetchone()
    assert intents == distinct  # one visit started per node, over both runs
    # The resumed run carried on the frontier: every node learned of was visited (or its
    # visit was under way when the crash came).
    unvisited = rows.execute("SELECT COUNT(*) FROM contacts WHERE ip NOT IN "
                             "(SELECT ip FROM intents)").fetchone()[0]
    assert unvisited == 0
    assert distinct >= 20  # most of the 40: nodes only the lost replies knew of can hide
    assert rows.execute("SELECT status FROM crawls").fetchall() == [("complete",)]


class contextlib_suppress:
    """sqlite3 may find the database mid-creation: try again at the next poll."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, sqlite3.Error)


@pytest.mark.network
async def test_routing_tables_store_the_neighbour_graph(tmp_path):
    net = Network(12, 24)
    await net.start()
    ips = {node.address[0] for node in net.nodes}
    try:
        db = tmp_path / "crawl.sqlite"
        code, out, err = await run_crawler(
            "crawl", "--db", str(db), "--bootstrap", net.bootstrap, "--bind",
            "127.0.24.250:0", "--routing-tables", "--estimate-lookups", "0", "--json",
            "--timeout", "2")
        assert code == 0, err
        assert [n.stats.rate_limited for n in net.nodes] == [0] * 12
    finally:
        await net.close()
    rows = sqlite3.connect(db)
    edges = rows.execute("SELECT from_ip, to_ip FROM edges").fetchall()
    assert {a for a, _ in edges} == ips  # every node's table was read
    # Each node's table lists the other nodes it knows: together, everyone.
    assert {b for _, b in edges} == ips
    assert all(a != b for a, b in edges)
    queries = [q for (q,) in rows.execute("SELECT queries FROM visits")]
    assert min(queries) >= 2  # the visit, then at least one bucket


def test_the_bootstrap_widens_the_recapture_interval_to_what_the_referrers_vary():
    import random
    from crawling.estimates import bootstrap_recapture
    rng = random.Random(5)
    population = [f"10.0.{i // 250}.{i % 250}" for i in range(2000)]
    # Each referrer lists 8 nodes, more often the "popular" first half: unequal catchability.
    listings = {f"10.9.{r // 250}.{r % 250}": [population[min(1999, int(rng.expovariate(1 / 600)))]
                                               for _ in range(8)] for r in range(1500)}
    answered = set(population)
    estimate = bootstrap_recapture("halves", listings, answered, random.Random(1), rounds=60)
    first = {ip for ref, ips in listings.items() if zlib.crc32(ref.encode()) & 1 == 0 for ip in ips}
    second = {ip for ref, ips in listings.items() if zlib.crc32(ref.encode()) & 1 for ip in ips}
    value, low, high = chapman(len(first), len(second), len(first & second))
    assert estimate.value == pytest.approx(value)
    assert estimate.low <= low and estimate.high >= high
    assert estimate.high - estimate.low > high - low  # the referrers' variation counts
    assert estimate.detail["bootstrap_rounds"] == 60
