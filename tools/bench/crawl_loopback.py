"""tools/crawler.py against a loopback DHT of thousands of nodes: how many packets a second
does the crawler sustain on one core, and how long does a sweep take?

    python tools/bench/crawl_loopback.py [--nodes 2000] [--hosts 8] [--rate 20000]
        [--concurrency 512] [--query-timeout S] [--join-concurrency N] [--join-wait S]
        [--no-pin] [--timeout S] [--keep] [--db postgresql://...] [--json]

The network (`loopnet.LoopbackDHT`, shared with the peer finder's loopback benchmark):
`--hosts` host processes, each running its share of `--nodes` `mldht.Node`s in one asyncio
loop, node g on its own address 127.30.(g // 250).(g % 250 + 1) (a routing table keeps one
node per IP). The first node of the first host is the seed; every other node joins
(`bootstrap()`) from the seed and two nodes of its own host that joined before it,
`--join-concurrency` at a time per host. Once every host has joined, each node looks up its
own id once more (the tables then know the whole network, not what existed when the node
joined). Host nodes run with
`inbound_rate=0` and `reply_bytes_per_second=0`: thousands of joins go through the seed,
whose per-IP inbound and reply budgets are not what is measured here (the crawler sends at
most 2 queries a second to one IP and is never limited by them).

The crawler: `tools/crawler.py crawl --db TMP/crawl.sqlite --bootstrap <a host node>
--bind 127.29.0.1:0 --sweeps 1 --rate R --concurrency C --estimate-lookups 0 --json -q`, a
child process timed from start to exit. With 2 or more cores, the crawler gets the last
core allowed to this process, and the hosts (and this script) the others, by `taskset` and
`sched_setaffinity` (`--no-pin`: neither); the CPU time of the crawler and of the hosts is
read from /proc every `POLL` seconds, so that what each spent in the sweep is known.

Prints: nodes started and joined, their table sizes, join and refresh times; nodes the
crawler found, of those started, and its visits by outcome; the sweep's wall time (from its
database: the first visit started to the crawl's end; the crawler's own `elapsed`, in
tenths of a second, is kept beside it), split into the walk (to the last visit ended) and
what follows it (the hole-filling rounds); its datagrams sent and received (`datagrams_sent`,
`datagrams_received` of its `--json` summary) and packets per second over the sweep, and
the visits' own packets per second in the walk; its CPU time (user + system, the sum of its
threads' run time) in the sweep and in the walk, and the packets per CPU-second, which
compare to the anchor: the8472's mldht (Java) processes 20,000 packets a second on one Xeon
core; the share of its core the crawler used, and of theirs the hosts used in the walk (a
host core near 100 % would mean the network, not the crawler, set the pace); round-trip
times. For each node the crawler missed (up to MAX_DIAGNOSED), the hosts say how many
routing tables list it, and its id is compared with the ids found. `--json` prints one
JSON object instead. Exit 0 once measured (whatever the figures), 2 when the network or
the crawler could not be run.

Everything goes to 127.0.0.0/8; the child processes are stopped by this script, by PID
(`quit` on their stdin, then SIGINT, then SIGKILL), and the whole run is bounded by
`--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopnet import BenchError, LoopbackDHT  # noqa: E402
from processes import DutyCycle, child_env, cores, cpu_seconds, pinned  # noqa: E402

CRAWLER = REPO / "tools" / "crawler.py"
NODE_NET = "127.30"
HOST_SETTINGS = ["inbound_rate=0", "reply_bytes_per_second=0"]
"""Thousands of joins go through the seed: its per-IP inbound and reply budgets are not what
is measured here (the crawler sends at most 2 queries a second to one IP)."""
CRAWLER_BIND = "127.29.0.1:0"
ANCHOR_PACKETS_PER_SECOND = 20_000
"""the8472's mldht: 20,000 packets a second on one Xeon core."""
POLL = 0.01
"""Seconds between two reads of the children's /proc/<pid>/stat."""
MAX_NODES = 20_000
MAX_DIAGNOSED = 50
"""Nodes the crawler missed that the hosts are asked about (who lists them)."""


def percentile(values: list, share: float):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None


# --- the benchmark ------------------------------------------------------------------------

class Sampler:
    """Reads the CPU time of some processes every POLL seconds:
    [(time.time(), {pid: CPU seconds})]."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[int, float | None]]] = []

    async def run(self) -> None:
        while True:
            self.samples.append((time.time(), {pid: cpu_seconds(pid) for pid in self.pids}))
            await asyncio.sleep(POLL)

    def at(self, pid: int, moment: float) -> float | None:
        """`pid`'s CPU seconds at `moment`, interpolated between the samples around it."""
        known = [(t, values[pid]) for t, values in self.samples
                 if values.get(pid) is not None]
        if not known or moment < known[0][0]:
            return None
        index = bisect.bisect_right([t for t, _ in known], moment)
        if index >= len(known):
            return known[-1][1]
        (t0, c0), (t1, c1) = known[index - 1], known[index]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1

    def seconds_between(self, pid: int, start: float, end: float) -> float | None:
        """CPU seconds `pid` spent from `start` to `end` (time.time())."""
        first, last = self.at(pid, start), self.at(pid, end)
        return None if first is None or last is None else max(0.0, last - first)


async def wait_exit(pid: int, seconds: float) -> tuple[int, object] | None:
    """Reap our child `pid` with its resource usage (os.wait4): (exit code, rusage), or
    None if it is still running after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status), usage
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.01)


async def fresh_postgres_database(url: str) -> tuple[str, Callable]:
    """A new database on the server of `url` for one crawl, and how to drop it."""
    import asyncpg
    name = f"mldht_bench_{os.getpid()}_{int(time.time())}"
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()

    async def drop() -> None:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await connection.close()
    return url.rsplit("/", 1)[0] + "/" + name, drop


async def run_crawler(args, folder: Path, bootstrap: str, env, cpu, seconds: float,
                      watch: list[int]) -> dict:
    db = folder / "crawl.sqlite"
    target, drop = str(db), None
    if args.db:  # PostgreSQL: crawled into a database of its own, read back as a SQLite copy
        target, drop = await fresh_postgres_database(args.db)
    try:
        return await _run_crawler(args, folder, db, target, bootstrap, env, cpu, seconds,
                                  watch)
    finally:
        if drop is not None:
            await drop()


async def _run_crawler(args, folder: Path, db: Path, target: str, bootstrap: str, env, cpu,
                       seconds: float, watch: list[int]) -> dict:
    command = [sys.executable, str(CRAWLER), "crawl", "--db", target, "--bootstrap",
               bootstrap, "--bind", CRAWLER_BIND, "--sweeps", "1", "--rate", str(args.rate),
               "--concurrency", str(args.concurrency), "--estimate-lookups", "0",
               "--timeout", str(args.query_timeout), "--json", "-q"]
    out_path, err_path = folder / "crawler.out", folder / "crawler.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        # Popen, not asyncio's: the child is reaped here, by os.wait4, for its rusage.
        process = subprocess.Popen(pinned(command, cpu), env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err)
    sampler = Sampler([process.pid, *watch])
    sampling = asyncio.ensure_future(sampler.run())
    cycle = None
    if args.cpu_limit:
        cycle = DutyCycle([process.pid], args.cpu_limit)
        cycle.start()
    try:
        reaped = await wait_exit(process.pid, seconds)
        wall = time.monotonic() - started
        if reaped is None:
            raise BenchError(f"the crawler was still running after {seconds:g} s")
        code, usage = reaped
        process.returncode = code
    finally:
        sampling.cancel()
        if cycle is not None:
            cycle.done.set()
            cycle.join()
        if process.returncode is None:
            process.kill()  # our own child, by its pid
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, 0)
            process.returncode = -9
    stderr = err_path.read_text(errors="replace").strip()
    if code != 0:
        raise BenchError(f"the crawler exited with {code}: {stderr[-2000:]}")
    try:
        summary = json.loads(out_path.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"no JSON summary from the crawler: {stderr[-2000:]}") from None
    if target != str(db):
        from crawling.store import CrawlStore
        store = await CrawlStore.open(target)
        try:
            await store.copy_to_sqlite(db)
        finally:
            await store.close()
    with contextlib.closing(sqlite3.connect(db)) as rows:
        first_intent = rows.execute("SELECT MIN(at) FROM intents").fetchone()[0]
        last_visit = rows.execute("SELECT MAX(at) FROM visits").fetchone()[0]
        finished = rows.execute("SELECT MAX(finished_at) FROM crawls").fetchone()[0]
        outcomes = dict(rows.execute("SELECT outcome, COUNT(*) FROM visits GROUP BY outcome"))
        visit_queries = rows.execute("SELECT COALESCE(SUM(queries), 0) FROM visits").fetchone()[0]
        found = {ip for (ip,) in rows.execute("SELECT ip FROM contacts")}
        found_keys = sorted(int.from_bytes(node_id, "big") for (node_id,) in rows.execute(
            "SELECT node_id FROM contacts"))
        visited = {ip for (ip,) in rows.execute("SELECT ip FROM visits")}
        answered = {ip for (ip,) in rows.execute(
            "SELECT ip FROM visits WHERE outcome = 'answered'")}
        rtts = [rtt for (rtt,) in rows.execute(
            "SELECT rtt FROM visits WHERE rtt IS NOT NULL")]
    walk = sweep = None
    cpu = {}
    if first_intent is not None and last_visit is not None and finished is not None:
        # The walk: from the first visit started to the last one ended; the sweep: from the
        # first visit started to the crawl's end (hole-filling rounds included).
        walk, sweep = (first_intent, last_visit), (first_intent, finished)
        cpu = {name: {pid: sampler.seconds_between(pid, *window)
                      for pid in [process.pid, *watch]}
               for name, window in (("walk", walk), ("sweep", sweep))}
    return {"summary": summary, "wall": wall, "rusage": usage, "outcomes": outcomes,
            "visit_queries": visit_queries, "found": found, "found_keys": found_keys,
            "visited": visited,
            "answered": answered, "rtts": rtts, "walk": walk, "sweep": sweep, "cpu": cpu,
            "pid": process.pid, "stderr": stderr}


async def measure(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="mldht-crawl-loopback-"))
    env = child_env()
    host_cpus, crawler_cpu = cores() if not args.no_pin else (None, None)
    affinity = None
    if host_cpus is not None:
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, host_cpus)  # this script stays off the crawler's core
    dht = LoopbackDHT(args.nodes, args.hosts, folder, net=NODE_NET, settings=HOST_SETTINGS,
                      join_concurrency=args.join_concurrency, join_timeout=args.join_timeout)
    began = time.monotonic()
    try:
        ready = await dht.start(args.join_wait, env, host_cpus)
        join_seconds, ready_seconds = ready["join_seconds"], ready["ready_seconds"]
        addresses, tables = ready["addresses"], ready["tables"]
        started_ips = {a.rpartition(":")[0] for a in addresses}
        before = await dht.stats()
        # The crawler joins through a node in the middle of the network, not the seed.
        bootstrap = addresses[len(addresses) // 2]
        left = args.timeout - (time.monotonic() - began)
        crawl = await run_crawler(args, folder, bootstrap, env, crawler_cpu,
                                  max(10.0, left - 30), dht.pids)
        after = await dht.stats()
        missed_ips = sorted(started_ips - crawl["found"])[:MAX_DIAGNOSED]
        diagnosis = await dht.diagnose(missed_ips)
    finally:
        await dht.stop()
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        if args.keep:
            print(f"crawl_loopback: files kept in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    summary = crawl["summary"]
    sent, received = summary.get("datagrams_sent"), summary.get("datagrams_received")
    if sent is None or received is None:
        raise BenchError("the crawler's summary has no datagrams_sent / datagrams_received")
    packets = sent + received
    usage = crawl["rusage"]
    outcomes = crawl["outcomes"]
    # The visits' own datagrams: each query, and each reply but the timeouts' (no retries).
    visit_packets = 2 * crawl["visit_queries"] - outcomes.get("timeout", 0)
    host_cores = len(host_cpus) if host_cpus else (os.cpu_count() or 1)
    host_pids = dht.pids

    def seconds_of(window):
        return None if window is None else window[1] - window[0]

    def cpu_of(phase: str, pids: list[int]):
        values = [crawl["cpu"].get(phase, {}).get(pid) for pid in pids]
        return None if not values or None in values else sum(values)

    def ratio(value, seconds, digits=1):
        return round(value / seconds, digits) if value is not None and seconds else None

    walk_seconds, sweep_seconds = seconds_of(crawl["walk"]), seconds_of(crawl["sweep"])
    if sweep_seconds is None:
        sweep_seconds = summary["elapsed"]
    cpu_walk, cpu_sweep = cpu_of("walk", [crawl["pid"]]), cpu_of("sweep", [crawl["pid"]])
    hosts_walk = cpu_of("walk", host_pids)
    found = crawl["found"] & started_ips
    answered = crawl["answered"] & started_ips
    missed = sorted(started_ips - crawl["found"])
    growth = {key: sum(a[key] for a in after) - sum(b[key] for b in before)
              for key in ("queries_received", "datagrams_received", "datagrams_sent",
                          "rate_limited")}
    rtts = crawl["rtts"]
    per_cpu = ratio(packets, cpu_sweep)
    keys = crawl["found_keys"]
    for report in diagnosis.values():
        # How close the crawler came: the bits its id shares with the nearest id found.
        if "id" in report and keys:
            key = int(report["id"], 16)
            index = bisect.bisect_left(keys, key)
            report["bits_shared_with_nearest_found"] = max(
                160 - (key ^ keys[i]).bit_length() for i in (index - 1, index)
                if 0 <= i < len(keys))
    return {
        "nodes": args.nodes, "hosts": args.hosts,
        "pinned": {"hosts": sorted(host_cpus) if host_cpus else None, "crawler": crawler_cpu},
        "joined": ready["joined"],
        "join_failures": ready["join_failed"],
        "join_seconds": round(join_seconds, 1),
        "refresh_failures": ready["refresh_failed"],
        "network_ready_seconds": round(ready_seconds, 1),
        "table_sizes": {"min": min(tables), "median": percentile(tables, 0.5),
                        "max": max(tables)},
        "rate": args.rate, "concurrency": args.concurrency,
        "found": summary["found"], "visited": summary["visited"],
        "answering": summary["answering"],
        "found_of_started": len(found), "found_share": round(len(found) / args.nodes, 4),
        "answered_of_started": len(answered),
        "answered_share": round(len(answered) / args.nodes, 4),
        "outcomes": outcomes,
        "missed": len(missed),
        "missed_nodes": {ip: diagnosis.get(ip, {}) for ip in missed[:MAX_DIAGNOSED]},
        "found_not_started": len(crawl["found"] - started_ips),
        "crawler_wall_seconds": round(crawl["wall"], 2),
        "sweep_seconds": round(sweep_seconds, 3),
        "crawler_elapsed": summary["elapsed"],
        "walk_seconds": None if walk_seconds is None else round(walk_seconds, 3),
        "after_walk_seconds": None if walk_seconds is None or sweep_seconds is None
        else round(sweep_seconds - walk_seconds, 3),
        "datagrams_sent": sent, "datagrams_received": received,
        "queries_beside_visits": sent - crawl["visit_queries"],
        "queries_per_second": summary["queries_per_second"],
        "packets_per_second": ratio(packets, sweep_seconds),
        "walk_packets_per_second": ratio(visit_packets, walk_seconds),
        "crawler_cpu_sweep_seconds": None if cpu_sweep is None else round(cpu_sweep, 3),
        "crawler_cpu_walk_seconds": None if cpu_walk is None else round(cpu_walk, 3),
        "crawler_cpu_total_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "crawler_core_busy_walk": ratio(cpu_walk, walk_seconds, 3),
        "crawler_core_busy_sweep": ratio(cpu_sweep, sweep_seconds, 3),
        "packets_per_cpu_second": per_cpu,
        "walk_packets_per_cpu_second": ratio(visit_packets, cpu_walk),
        "anchor_packets_per_cpu_second": ANCHOR_PACKETS_PER_SECOND,
        "database": "postgresql" if args.db else "sqlite", "cpu_limit": args.cpu_limit,
        "share_of_anchor": None if per_cpu is None
        else round(per_cpu / ANCHOR_PACKETS_PER_SECOND, 3),
        "hosts_cores_busy_walk": ratio(hosts_walk, (walk_seconds or 0) * host_cores, 3),
        "rtt_ms": {"p50": round(1000 * percentile(rtts, .5), 2) if rtts else None,
                   "p90": round(1000 * percentile(rtts, .9), 2) if rtts else None,
                   "max": round(1000 * max(rtts), 2) if rtts else None},
        "hosts_during_crawl": growth,
        "crawler_rate_limited": summary.get("rate_limited"),
        "total_seconds": round(time.monotonic() - began, 1),
    }


async def bounded(args) -> dict:
    try:
        async with asyncio.timeout(args.timeout):
            return await measure(args)
    except TimeoutError:
        raise BenchError(f"not done within --timeout {args.timeout:g} s") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2000, help="nodes in all (default 2000)")
    parser.add_argument("--hosts", type=int, default=8,
                        help="processes the nodes are shared between (default 8)")
    parser.add_argument("--rate", type=float, default=20000.0,
                        help="the crawler's --rate, queries a second in all (default 20000)")
    parser.add_argument("--concurrency", type=int, default=512,
                        help="the crawler's --concurrency (default 512)")
    parser.add_argument("--query-timeout", type=float, default=5.0, metavar="S",
                        help="the crawler's --timeout per query (default 5)")
    parser.add_argument("--join-concurrency", type=int, default=25, metavar="N",
                        help="joins (and refresh lookups) at once in each host (default 25)")
    parser.add_argument("--join-timeout", type=float, default=20.0, metavar="S",
                        help="one node's join or refresh lookup at most (default 20)")
    parser.add_argument("--join-wait", type=float, default=300.0, metavar="S",
                        help="each of the join and the refresh at most (default 300)")
    parser.add_argument("--no-pin", action="store_true", help="no taskset, no affinity")
    parser.add_argument("--timeout", type=float, default=900.0, metavar="S",
                        help="the whole run at most (default 900)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the crawl database and the logs")
    parser.add_argument("--db", metavar="URL",
                        help="a postgresql:// server to crawl into (a new database on it, "
                             "dropped afterwards); default a SQLite file")
    parser.add_argument("--postgres", action="store_true",
                        help="crawl into a throwaway PostgreSQL server started here "
                             "(tools/bench/pgserver.py, with fsync)")
    parser.add_argument("--cpu-limit", type=float, metavar="F",
                        help="the crawler runs this share of the time (SIGSTOP/SIGCONT every "
                             "20 ms), as on a slower machine")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu_limit is not None and not 0 < args.cpu_limit < 1:
        parser.error("--cpu-limit must be between 0 and 1")
    if not 2 <= args.nodes <= MAX_NODES:
        parser.error(f"--nodes must be from 2 to {MAX_NODES}")
    if not 1 <= args.hosts <= args.nodes:
        parser.error("--hosts must be from 1 to --nodes")
    if args.rate <= 0 or args.concurrency < 1 or args.query_timeout <= 0 or \
            args.join_concurrency < 1 or args.join_timeout <= 0 or args.join_wait <= 0 or \
            args.timeout <= 0:
        parser.error("--rate, --concurrency, the timeouts and waits must be positive")
    try:
        if args.postgres:
            from pgserver import postgres_server
            with postgres_server(durable=True) as url:
                args.db = url
                result = asyncio.run(bounded(args))
        else:
            result = asyncio.run(bounded(args))
    except (BenchError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"crawl_loopback: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    tables = r["table_sizes"]
    print(f"database: {r['database']}")
    print(f"network: {r['nodes']} nodes in {r['hosts']} processes (cores {r['pinned']['hosts']},"
          f" crawler on {r['pinned']['crawler']}); joined {r['joined']} in "
          f"{r['join_seconds']} s ({r['join_failures']} joins failed), ready in "
          f"{r['network_ready_seconds']} s; tables min/median/max "
          f"{tables['min']}/{tables['median']}/{tables['max']}")
    rows = [
        ("nodes found (of those started)", f"{r['found_of_started']:,} of {r['nodes']:,} "
                                          f"({r['found_share']:.1%}); missed {r['missed']}"),
        ("visits", f"{r['visited']:,}: {r['outcomes']}"),
        ("sweep wall time", f"{r['sweep_seconds']} s: the walk (first visit to last) "
                            f"{r['walk_seconds']} s, then {r['after_walk_seconds']} s "
                            f"(crawler process {r['crawler_wall_seconds']} s in all)"),
        ("datagrams sent / received", f"{r['datagrams_sent']:,} / {r['datagrams_received']:,}"
                                      f" ({r['queries_beside_visits']:,} queries beside the "
                                      f"visits')"),
        ("packets per second", f"{r['packets_per_second']:,} over the sweep "
                               f"({r['queries_per_second']:g} queries/s; --rate "
                               f"{r['rate']:g}); {r['walk_packets_per_second']:,} in the walk"),
        ("crawler CPU", f"{r['crawler_cpu_sweep_seconds']} s in the sweep (its core "
                        f"{r['crawler_core_busy_sweep']} busy), {r['crawler_cpu_walk_seconds']}"
                        f" s in the walk ({r['crawler_core_busy_walk']} busy), "
                        f"{r['crawler_cpu_total_seconds']} s in all"),
        ("packets per CPU-second", f"{r['packets_per_cpu_second']:,} over the sweep (anchor "
                                   f"{r['anchor_packets_per_cpu_second']:,}: x"
                                   f"{r['share_of_anchor']}); "
                                   f"{r['walk_packets_per_cpu_second']:,} in the walk"),
        ("hosts' cores busy in the walk", f"{r['hosts_cores_busy_walk']}"),
        ("reply RTT p50/p90/max", f"{r['rtt_ms']['p50']}/{r['rtt_ms']['p90']}/"
                                  f"{r['rtt_ms']['max']} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for ip, report in list(r["missed_nodes"].items())[:10]:
        print(f"  missed {ip}: in {report.get('listed_by')} routing tables (and "
              f"{report.get('cached_by')} replacement caches); id {report.get('id', '?')[:8]}.."
              f", its table {report.get('table')}, {report.get('bits_shared_with_nearest_found')}"
              f" bits shared with the nearest id found")
    print(f"total {r['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
