"""tools/crawler.py: a crawl of a local network on loopback (every node found, named and
measured, nobody rate-limits it), the crash-and-resume case (kill -9 mid-crawl, the database
intact, the crawl shown incomplete, `--resume` finishing it without asking any node twice),
and the parts: sanitizing, Chapman's estimate, the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from netguard import guarded_env
from toolrun import LoopbackNetwork, run_tool

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from crawling.crawl import Partition  # noqa: E402
from crawling.estimates import Estimate, chapman, combine_parts, recapture_estimate  # noqa: E402
from crawling.store import CrawlStore, StoreError  # noqa: E402
from crawling.traversal import Sweep, acceptable  # noqa: E402

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


async def test_the_store_survives_a_reopen_and_knows_the_frontier(crawl_db):
    store = await CrawlStore.open(crawl_db)
    crawl = await store.begin_crawl({"rate": 1}, "test")
    store.add_contact(crawl, 1, "10.0.0.1", 1, "ipv4", b"\x01" * 20, 1.0, None)
    store.add_contact(crawl, 1, "10.0.0.2", 2, "ipv4", b"\x02" * 20, 1.0, "10.0.0.1:1")
    store.add_contact(crawl, 1, "10.0.0.3", 3, "ipv4", b"\x03" * 20, 1.0, "10.0.0.1:1")
    store.add_contact(crawl, 1, "10.0.0.3", 3, "ipv4", b"\x03" * 20, 1.0, "10.0.0.1:1")  # again
    await store.add_intents(crawl, 1, [("10.0.0.1", 1), ("10.0.0.2", 2)], 2.0)
    store.add_visit({"crawl": crawl, "sweep": 1, "at": 2.5, "ip": "10.0.0.1", "port": 1,
                     "family": "ipv4", "outcome": "timeout", "queries": 1})
    store.add_visit({"crawl": crawl, "sweep": 1, "at": 3.5, "ip": "10.0.0.1", "port": 1,
                     "family": "ipv4", "outcome": "answered", "queries": 2, "bep51": True,
                     "interval": 60, "v": b"LT\x01\x02"})
    await store.close()
    again = await CrawlStore.open(crawl_db)
    contacts, visited = await again.frontier(crawl, 1)
    assert visited == {("10.0.0.1", 1), ("10.0.0.2", 2)}  # an intent counts: never twice
    assert [row[0] for row in contacts] == ["10.0.0.3"]
    assert (await again.crawls())[0].shown_status == "running"  # our own live process
    # The second visit of a node replaced the first; the interval says when to sample again.
    assert await again.fetch("SELECT outcome, queries, v FROM visits") == [
        ("answered", 2, b"LT\x01\x02")]
    assert await again.sample_intervals(crawl) == {("10.0.0.1", 1): 63.5}
    await again.end_crawl(crawl, "complete", 1)
    assert (await again.crawls())[0].shown_status == "complete"
    await again.close()


async def test_partitioned_crawl_parts_are_claimed_once_and_roll_up(crawl_db):
    store = await CrawlStore.open(crawl_db)
    other = await CrawlStore.open(crawl_db)  # a second process
    crawl = await store.begin_crawl({"partition": [0, 2]}, "test", label="march")
    assert await other.begin_crawl({"partition": [1, 2]}, "test", label="march") == crawl
    assert await store.begin_crawl({}, "test", label="april") != crawl
    assert await store.claim_part(crawl, 0, 2, resume=False) == 1
    with pytest.raises(StoreError, match="held by process"):
        await other.claim_part(crawl, 0, 2, resume=False)
    with pytest.raises(StoreError, match="split into 2 parts, not 4"):
        await other.claim_part(crawl, 1, 4, resume=False)
    with pytest.raises(StoreError, match="never started"):
        await other.claim_part(crawl, 1, 2, resume=True)
    assert await other.claim_part(crawl, 1, 2, resume=False) == 1

    async def crawl_row():
        return next(row for row in await store.crawls() if row.id == crawl)
    await store.sweep_done(crawl, 2, part=0)
    await other.sweep_done(crawl, 1, part=1)
    assert (await crawl_row()).sweeps_done == 1  # the fewest any part has done
    await store.end_crawl(crawl, "complete", 2, part=0)
    assert (await crawl_row()).status == "running"  # part 1 is still at it
    await other.end_crawl(crawl, "stopped", 1, part=1)
    assert (await crawl_row()).status == "stopped"
    with pytest.raises(StoreError, match="did not finish: --resume"):
        await other.claim_part(crawl, 1, 2, resume=False)
    assert await other.claim_part(crawl, 1, 2, resume=True) == 2  # carries on at sweep 2
    await other.end_crawl(crawl, "complete", 2, part=1)
    row = await crawl_row()
    assert (row.status, row.sweeps_done) == ("complete", 2)
    with pytest.raises(StoreError, match="is complete"):
        await other.claim_part(crawl, 0, 2, resume=True)
    await store.close()
    await other.close()


def test_partitions_split_the_keyspace_exactly():
    for count in (1, 2, 3, 4, 5, 8, 16):
        parts = [Partition(index, count) for index in range(count)]
        assert sum(part.share for part in parts) == pytest.approx(1.0)
        for first in range(256):
            node_id = bytes([first]) + bytes(19)
            owners = [part for part in parts if part(node_id)]
            assert len(owners) == 1
            key = int.from_bytes(node_id, "big")
            assert any(low <= key <= high for low, high in owners[0].ranges())
    # How far a partition's walk has come, for its progress: the share of its stretches.
    sweep = Sweep.__new__(Sweep)
    sweep.partition, sweep.position = Partition(1, 2), 3 << 62  # positions: 64-bit
    assert sweep.covered == 0.5
    sweep.partition, sweep.position = Partition(0, 3), 1 << 62  # prefixes 00 and 11
    assert sweep.covered == 0.5


def test_the_parts_estimates_combine():
    def part(answered, recapture, lookup, error):
        return [Estimate("nodes that answered", answered, answered, None, "reachable"),
                Estimate("mark-recapture, two halves of the sweep", recapture, recapture - 30,
                         recapture + 40, "reachable", {"n1": 10, "n2": 12, "m": 5}),
                Estimate("lookup distances", lookup, None, None, "reachable",
                         {"standard_error": error, "lookups": 10})]
    combined = {e.name: e for e in combine_parts([part(100, 110, 1000, 100),
                                                   part(300, 320, 1200, 200)])}
    answered = combined["nodes that answered"]
    assert (answered.value, answered.low, answered.high) == (400, 400, None)
    recapture = combined["mark-recapture, two halves of the sweep"]
    assert recapture.value == 430
    assert recapture.low == pytest.approx(430 - math.sqrt(2) * 30)
    assert recapture.high == pytest.approx(430 + math.sqrt(2) * 40)
    assert (recapture.detail["n1"], recapture.detail["m"]) == (20, 10)
    lookup = combined["lookup distances"]
    # Inverse-variance weights 1/100^2 and 1/200^2: 4 to 1.
    assert lookup.value == pytest.approx((4 * 1000 + 1200) / 5)
    assert lookup.detail["standard_error"] == pytest.approx(1 / math.sqrt(1e-4 + 2.5e-5), 0.01)
    assert lookup.detail["lookups"] == 20
    # An estimate one part lacks is left out.
    assert combine_parts([part(1, 2, 3, 4), part(1, 2, 3, 4)[:1]])[0].name == "nodes that answered"
    assert len(combine_parts([part(1, 2, 3, 4), part(1, 2, 3, 4)[:1]])) == 1


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
    assert main(["crawl", "--db", str(tmp_path / "z.sqlite"), "--partition", "0/2",
                 "--bootstrap", "127.0.0.1:1"]) == 2
    assert "--partition needs --label" in capsys.readouterr().err
    for command in (["crawl", "--bootstrap", "127.0.0.1:1"], ["report", "--out", str(tmp_path)],
                    ["export"]):
        assert main([*command, "--db", "postgresql://nobody:secret@127.0.0.1:1/x"]) == 2
        err = capsys.readouterr().err
        assert "cannot connect to postgresql://nobody:***@127.0.0.1:1/x" in err, err
        assert len(err.strip().splitlines()) == 1 and "secret" not in err


# --- crawls of a local network ---------------------------------------------------------------

class Network(LoopbackNetwork):
    """Counts the sample_infohashes each node gets from the crawler (on .250)."""

    def __init__(self, count: int, base: int) -> None:
        super().__init__(count, base)
        self.sampled: dict[int, int] = {i: 0 for i in range(count)}

    def observe(self, index: int, event) -> None:
        if event.kind == "query_received" and event.method == "sample_infohashes" and \
                event.source[0].endswith((".250", ".251")):
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
        # Before it starts, what a sweep will take at its rate (from the join's estimate).
        assert re.search(r"a sweep at \d+ queries a second takes about \d+ (s|min)", err), err
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
async def test_crawl_every_starts_a_sweep_every_interval(tmp_path):
    net = Network(12, 22)
    await net.start()
    try:
        db = tmp_path / "series.sqlite"
        code, out, err = await run_crawler(
            "crawl", "--db", str(db), "--bootstrap", net.bootstrap, "--bind",
            "127.0.22.250:0", "--sweeps", "3", "--every", "8", "--json", "--timeout", "1")
        assert code == 0, err
        assert json.loads(out)["sweeps_done"] == 3
    finally:
        await net.close()
    firsts = [at for _, at in sqlite3.connect(db).execute(
        "SELECT sweep, MIN(at) FROM visits GROUP BY sweep ORDER BY sweep")]
    assert len(firsts) == 3
    # A sweep of 12 nodes takes a few seconds (its last timeouts, its size lookups): the
    # next waits for its turn.
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert all(7.5 <= gap <= 10 for gap in gaps), gaps
    code, _, err = await run_crawler("crawl", "--db", str(db), "--every", "5",
                                     "--bootstrap", "127.0.22.9:9")  # refused before it starts
    assert code == 2 and "--every" in err and len(err.strip().splitlines()) == 1, err


async def kill_9_once(process, visits, at_least: int) -> None:
    """Kill our own child `process` with -9 (a crash mid-crawl) once `visits()` reaches
    `at_least`, or after 30 s whatever it says."""
    try:
        for _ in range(300):
            await asyncio.sleep(0.1)
            if await visits() >= at_least:
                break
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


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

        async def visits() -> int:
            if db.exists():
                with contextlib_suppress():
                    return sqlite3.connect(db).execute("SELECT COUNT(*) FROM visits").fetchone()[0]
            return 0
        await kill_9_once(process, visits, 8)
        check = sqlite3.connect(db)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        visited_before = check.execute("SELECT COUNT(*) FROM visits").fetchone()[0]
        check.close()
        assert 8 <= visited_before < 40
        store = await CrawlStore.open(db)
        assert (await store.crawls())[0].shown_status == "incomplete"
        await store.close()
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
    intents, distinct = rows.execute(
        "SELECT COUNT(*), COUNT(DISTINCT ip || ':' || port) FROM intents").fetchone()
    assert intents == distinct  # one visit started per node, over both runs
    # The resumed run carried on the frontier: every node learned of was visited (or its
    # visit was under way when the crash came).
    unvisited = rows.execute("SELECT COUNT(*) FROM contacts WHERE ip NOT IN "
                             "(SELECT ip FROM intents)").fetchone()[0]
    assert unvisited == 0
    assert distinct >= 20  # most of the 40: nodes only the lost replies knew of can hide
    assert rows.execute("SELECT status FROM crawls").fetchall() == [("complete",)]


@pytest.mark.network
async def test_a_partitioned_crawl_into_postgresql_with_a_crash_and_a_report(
        tmp_path, postgres_url):
    """Two crawler processes, --partition 0/2 and 1/2 of one labelled crawl, write into a
    real PostgreSQL server; one of them is killed with -9 mid-crawl and resumed. Every node
    is visited once, by the part that owns its id; the report and the export read the
    database."""
    from pgserver import fresh_database
    url = fresh_database(postgres_url, "partitioned")
    net = Network(40, 26)
    await net.start()
    ids = {node.address[0]: bytes(node.node_id) for node in net.nodes}

    def part_args(index: int, *extra: str) -> list[str]:
        return ["crawl", "--db", url, "--partition", f"{index}/2", "--label", "crawl-a",
                "--bootstrap", net.bootstrap, "--bind", f"127.0.26.25{index}:0",
                "--timeout", "2", "--estimate-lookups", "2", *extra]
    try:
        # Part 0, slowly, killed once it has visited a few nodes; part 1 meanwhile.
        slow = await asyncio.create_subprocess_exec(
            sys.executable, str(CRAWLER), *part_args(0, "--rate", "6", "--concurrency", "1",
                                                      "-q"),
            env=guarded_env(), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        other = asyncio.ensure_future(run_crawler(*part_args(1, "--json")))
        import asyncpg
        connection = await asyncpg.connect(url)

        async def part_0_visits() -> int:
            with contextlib.suppress(asyncpg.UndefinedTableError):
                return await connection.fetchval(  # ids starting with a 0 bit
                    "SELECT COUNT(*) FROM visits WHERE get_byte(node_id, 0) < 128")
            return 0
        await kill_9_once(slow, part_0_visits, 4)
        code, out, err = await other
        assert code == 0, err
        assert json.loads(out)["part"] == [1, 2]
        status = await connection.fetch("SELECT part, status FROM parts ORDER BY part")
        assert [tuple(row) for row in status] == [(0, "running"), (1, "complete")]
        assert await connection.fetchval("SELECT status FROM crawls") == "running"
        code, _, resumed = await run_crawler(*part_args(0, "--resume", "--json"))
        assert code == 0, resumed
        assert re.search(r"resuming part 0/2 of crawl \d+, sweep 1", resumed), resumed
    finally:
        await net.close()
    try:
        crawl = await connection.fetchrow("SELECT status, sweeps_done FROM crawls")
        assert tuple(crawl) == ("complete", 1)
        rows = await connection.fetch("SELECT ip, node_id, outcome FROM visits")
        intents = await connection.fetch("SELECT ip FROM intents")
    finally:
        await connection.close()
    assert len(intents) == len({row["ip"] for row in intents})  # nobody asked twice
    answered = {row["ip"] for row in rows if row["outcome"] == "answered"}
    # Nearly every node (as an unsplit crawl of so small a network: a few walks in a
    # hundred miss a node or two, and a node only the replies lost in the crash listed can
    # hide from the resumed walk).
    missing = sorted(set(ids) - answered)
    outcomes = {row["ip"]: row["outcome"] for row in rows}
    assert len(missing) <= 3, [(ip, "part 0" if Partition(0, 2)(ids[ip]) else "part 1",
                                outcomes.get(ip)) for ip in missing] + [resumed[-3000:]]
    assert max(net.sampled.values()) == 1, net.sampled
    for row in rows:
        owner = Partition(0, 2)(bytes(row["node_id"]))
        assert owner == Partition(0, 2)(ids[row["ip"]])
    # The report reads PostgreSQL (through a SQLite copy); the parts' estimates combine.
    code, _, err = await run_crawler("report", "--db", url, "--out", str(tmp_path / "r"))
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    latest = summary["crawls"][-1]
    assert latest["status"] == "complete" and latest["answered"]["total"] == len(answered)
    estimates = {e["name"]: e for e in latest["estimates"]}
    assert estimates["nodes that answered"]["value"] == len(answered)
    assert estimates["nodes that answered"]["detail"]["parts"] == 2
    assert summary["database"] == url
    code, out, err = await run_crawler("export", "--db", url, "--table", "parts",
                                       "--format", "jsonl")
    assert code == 0, err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["complete"] * 2


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
    from crawling.estimates import HALF, grouped_recapture
    from crawling.nodes import GROUPS, group_of
    rng = random.Random(5)
    # Each referrer lists 8 nodes, more often the "popular" first ones: unequal
    # catchability. A node keeps only the groups of the referrers that listed it.
    groups = [0] * 2000
    for referrer in range(1500):
        group = group_of(0x0A090000 + referrer)
        for _ in range(8):
            groups[min(1999, int(rng.expovariate(1 / 600)))] |= 1 << group
    masks: dict[int, int] = {}
    for mask in groups:
        if mask:
            masks[mask] = masks.get(mask, 0) + 1
    estimate = grouped_recapture("halves", masks, random.Random(1), rounds=60)
    first = sum(1 for mask in groups if mask & HALF)
    second = sum(1 for mask in groups if mask & ~HALF)
    both = sum(1 for mask in groups if mask & HALF and mask & ~HALF)
    value, low, high = chapman(first, second, both)
    assert estimate.value == pytest.approx(value)
    assert estimate.low <= low and estimate.high >= high
    assert estimate.high - estimate.low > high - low  # the referrers' variation counts
    assert estimate.detail["bootstrap_rounds"] == 60
    assert GROUPS == 32 and len({group_of(0x0A090000 + r) for r in range(1500)}) == GROUPS


async def test_the_nodes_the_estimate_lookups_meet_go_to_the_sweep():
    """A newcomer few tables hold yet may never be listed by the walk's replies; the
    crawler's own find_node lookups (for the size estimate) that met it hand it over."""
    from types import SimpleNamespace

    from crawling.crawl import CrawlOptions, Crawler
    from mldht import NodeId, NodeInfo

    newcomer = NodeInfo(NodeId(bytes([0x1d]) + bytes(19)), "10.0.0.36", 51413)

    class Node:
        stats = SimpleNamespace(queries_sent=0, datagrams_sent=0, datagrams_received=0)
        lookups = 0

        def clock(self):
            return 0.0

        async def find_node_lookup(self, target, timeout):
            self.lookups += 1
            return SimpleNamespace(closest=[newcomer])

    class Walk:
        def __init__(self):
            self.stats = SimpleNamespace(answered={"ipv4": 0})
            self.learned = []

        def learn(self, info, referrer):
            self.learned.append((info, referrer))

    node, walk = Node(), Walk()
    crawler = Crawler(node, store=None, crawl_id=1, options=CrawlOptions(estimate_lookups=3))
    running = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(crawler._estimate_lookups(walk, running))
    for _ in range(100):
        await asyncio.sleep(0)
        if node.lookups >= 3:
            break
    running.set_result(None)
    await asyncio.wait_for(task, 5)
    assert node.lookups == 3
    assert walk.learned == [(newcomer, None)] * 3
    # Once the sweep is over, what a late lookup meets is not handed over.
    late = Walk()
    await crawler._estimate_lookups(late, running)
    assert late.learned == []
