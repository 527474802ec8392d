"""tools/crawler.py against a loopback DHT of thousands of nodes: how many packets a second
does the crawler sustain on one core, and how long does a sweep take?

    python tools/bench/crawl_loopback.py [--nodes 2000] [--hosts 8] [--rate 20000]
        [--concurrency 512] [--query-timeout S] [--join-concurrency N] [--join-wait S]
        [--no-pin] [--timeout S] [--keep] [--db postgresql://...] [--json]

The network: `--hosts` host processes (this file run with `--host`), each running its share
of `--nodes` `mldht.Node`s in one asyncio loop, node g on its own address
127.30.(g // 250).(g % 250 + 1) (a routing table keeps one node per IP). The first node of
the first host is the seed; every other node joins (`bootstrap()`) from the seed and two
nodes of its own host that joined before it, `--join-concurrency` at a time per host. Once
every host has joined, each node looks up its own id once more (the tables then know the
whole network, not what existed when the node joined). Host nodes run with
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
import random
import shutil
import signal
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
from processes import DutyCycle, child_env, cores, cpu_seconds, pinned  # noqa: E402

CRAWLER = REPO / "tools" / "crawler.py"
NODE_NET = "127.30"
PER_SUBNET = 250
CRAWLER_BIND = "127.29.0.1:0"
ANCHOR_PACKETS_PER_SECOND = 20_000
"""the8472's mldht: 20,000 packets a second on one Xeon core."""
POLL = 0.01
"""Seconds between two reads of the children's /proc/<pid>/stat."""
MAX_NODES = 20_000
MAX_DIAGNOSED = 50
"""Nodes the crawler missed that the hosts are asked about (who lists them)."""


class BenchError(Exception):
    """The network or the crawler could not be run: exit 2 with this message."""


def node_ip(index: int) -> str:
    return f"{NODE_NET}.{index // PER_SUBNET}.{index % PER_SUBNET + 1}"


def percentile(values: list, share: float):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None


# --- a host: many nodes in one process ------------------------------------------------------

def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def host(args) -> int:
    """`--host`: run nodes `args.first` .. `args.first + args.count - 1`; talk JSON lines on
    stdout, take commands (`refresh`, `stats`, `quit`) on stdin; stop on EOF or a signal."""
    from mldht import Node, NodeConfig
    from mldht.errors import MldhtError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = NodeConfig(inbound_rate=0, reply_bytes_per_second=0)
    rng = random.Random(args.first)
    nodes: list = []
    """The nodes started, in the order they started."""
    seed = args.seed

    def spec(node) -> str:
        ip, port = node.address
        return f"{ip}:{port}"

    async def next_command() -> str | None:
        line_task = asyncio.ensure_future(reader.readline())
        stop_task = asyncio.ensure_future(stop.wait())
        await asyncio.wait({line_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not line_task.done():
            line_task.cancel()
            return None
        return line_task.result().decode().strip() or None  # b"": EOF

    async def each(work, items, concurrency: int) -> int:
        """`work(item)` for every item, `concurrency` at a time; the failures counted."""
        gate = asyncio.Semaphore(concurrency)
        failures = 0

        async def one(item) -> None:
            nonlocal failures
            async with gate:
                if stop.is_set():
                    return
                try:
                    await work(item)
                except (MldhtError, OSError, TimeoutError):
                    failures += 1
        await asyncio.gather(*(one(item) for item in items))
        return failures

    try:
        indexes = list(range(args.first, args.first + args.count))
        if seed is None:  # the first host: its first node is the seed, it joins nobody
            first = Node((node_ip(indexes.pop(0)), 0), bootstrap=[], config=config)
            await first.start()
            nodes.append(first)
            seed = spec(first)
            emit({"seed": seed})
        joined = list(nodes)
        began = time.monotonic()

        async def join(index: int) -> None:
            # Created when its turn comes: its bootstrap list names the seed and two nodes
            # of this host that joined before it.
            friends = [spec(other) for other in rng.sample(joined, min(2, len(joined)))]
            node = Node((node_ip(index), 0), bootstrap=[seed, *friends], config=config)
            await node.start()
            nodes.append(node)
            await node.bootstrap(timeout=args.join_timeout)
            joined.append(node)
        failed = await each(join, indexes, args.join_concurrency)
        emit({"joined": len(joined), "failed": failed,
              "seconds": round(time.monotonic() - began, 2),
              "addresses": [spec(node) for node in nodes]})
        while not stop.is_set():
            command = await next_command()
            if command is None or command == "quit":
                break
            if command == "refresh":
                began = time.monotonic()

                async def refresh(node) -> None:
                    await node.find_node_lookup(node.node_id, timeout=args.join_timeout)
                failed = await each(refresh, nodes, args.join_concurrency)
                emit({"ready": len(nodes), "failed": failed,
                      "seconds": round(time.monotonic() - began, 2),
                      "tables": [len(node.routing_table) for node in nodes]})
            elif command.startswith("diagnose "):
                # For each IP asked about: how many of this host's nodes list it in their
                # routing table (or its replacement cache), and its id and table size when
                # it is one of ours.
                asked = command.split()[1].split(",")
                report = {ip: {"listed_by": 0, "cached_by": 0} for ip in asked}
                for node in nodes:
                    for family in node.table().values():
                        for bucket in family["buckets"]:
                            for key, entries in (("listed_by", bucket["nodes"]),
                                                 ("cached_by", bucket.get("replacements", []))):
                                for entry in entries:
                                    ip = entry["address"].rpartition(":")[0].strip("[]")
                                    if ip in report:
                                        report[ip][key] += 1
                    ip = node.address[0]
                    if ip in report:
                        report[ip].update(id=node.node_id.hex(), table=len(node.routing_table))
                emit({"diagnose": report})
            elif command == "stats":
                emit({"stats": {
                    "queries_received": sum(sum(n.stats.queries_received.values())
                                            for n in nodes),
                    "datagrams_received": sum(n.stats.datagrams_received for n in nodes),
                    "datagrams_sent": sum(n.stats.datagrams_sent for n in nodes),
                    "rate_limited": sum(n.stats.rate_limited for n in nodes)}})
    finally:
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
    return 0


# --- the benchmark ------------------------------------------------------------------------

class Host:
    """One host child process: its JSON lines in `messages`, its stderr in a log file."""

    def __init__(self, index: int, first: int, count: int, folder: Path) -> None:
        self.index, self.first, self.count = index, first, count
        self.log = folder / f"host-{index}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.messages: asyncio.Queue = asyncio.Queue()
        self.reader: asyncio.Task | None = None

    async def start(self, seed: str | None, args, env, cpus) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--host",
                   "--first", str(self.first), "--count", str(self.count),
                   "--join-concurrency", str(args.join_concurrency),
                   "--join-timeout", str(args.join_timeout)]
        if seed is not None:
            command += ["--seed", seed]
        with open(self.log, "wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *pinned(command, cpus), env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, limit=1 << 24)  # long lines: addresses
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(ValueError):
                await self.messages.put(json.loads(line))
        await self.messages.put(None)

    async def expect(self, key: str, seconds: float) -> dict:
        """The next message carrying `key` (BenchError when the host exits or is late)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                message = await asyncio.wait_for(self.messages.get(),
                                                 max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise BenchError(f"host {self.index}: no {key!r} within {seconds:g} s") from None
            if message is None:
                raise BenchError(f"host {self.index} exited: "
                                 f"{self.log.read_text(errors='replace')[-2000:]}")
            if key in message:
                return message

    def send(self, command: str) -> None:
        if self.process is not None and self.process.stdin is not None and \
                self.process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.process.stdin.write(command.encode() + b"\n")

    async def stats(self) -> dict:
        self.send("stats")
        return (await self.expect("stats", 30))["stats"]


async def stop_hosts(hosts: list[Host], grace: float = 10.0) -> None:
    """`quit` to each host still running (our own children), SIGINT after `grace`, SIGKILL
    after as long again."""
    running = [h for h in hosts if h.process is not None and h.process.returncode is None]
    for h in running:
        h.send("quit")
        with contextlib.suppress(Exception):
            h.process.stdin.close()
    for signum in (None, signal.SIGINT, signal.SIGKILL):
        left = [h for h in running if h.process.returncode is None]
        for h in left:
            if signum is not None:
                with contextlib.suppress(ProcessLookupError):
                    h.process.send_signal(signum)
        if not left:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(h.process.wait() for h in left)), grace)
    for h in hosts:
        if h.reader is not None:
            h.reader.cancel()


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
    shares = [args.nodes // args.hosts + (i < args.nodes % args.hosts) for i in range(args.hosts)]
    firsts = [sum(shares[:i]) for i in range(args.hosts)]
    hosts = [Host(i, firsts[i], shares[i], folder) for i in range(args.hosts)]
    began = time.monotonic()
    try:
        await hosts[0].start(None, args, env, host_cpus)
        seed = (await hosts[0].expect("seed", 60))["seed"]
        for h in hosts[1:]:
            await h.start(seed, args, env, host_cpus)
        joins = await asyncio.gather(*(h.expect("joined", args.join_wait) for h in hosts))
        join_seconds = time.monotonic() - began
        addresses = [a for message in joins for a in message["addresses"]]
        started_ips = {a.rpartition(":")[0] for a in addresses}
        for h in hosts:
            h.send("refresh")
        readies = await asyncio.gather(*(h.expect("ready", args.join_wait) for h in hosts))
        ready_seconds = time.monotonic() - began
        tables = [size for message in readies for size in message["tables"]]
        before = await asyncio.gather(*(h.stats() for h in hosts))
        # The crawler joins through a node in the middle of the network, not the seed.
        bootstrap = addresses[len(addresses) // 2]
        left = args.timeout - (time.monotonic() - began)
        crawl = await run_crawler(args, folder, bootstrap, env, crawler_cpu,
                                  max(10.0, left - 30),
                                  [h.process.pid for h in hosts])
        after = await asyncio.gather(*(h.stats() for h in hosts))
        missed_ips = sorted(started_ips - crawl["found"])[:MAX_DIAGNOSED]
        diagnosis: dict[str, dict] = {}
        if missed_ips:
            for h in hosts:
                h.send("diagnose " + ",".join(missed_ips))
            for report in await asyncio.gather(*(h.expect("diagnose", 60) for h in hosts)):
                for ip, part in report["diagnose"].items():
                    merged = diagnosis.setdefault(ip, {"listed_by": 0, "cached_by": 0})
                    merged["listed_by"] += part.pop("listed_by")
                    merged["cached_by"] += part.pop("cached_by")
                    merged.update(part)
    finally:
        await stop_hosts(hosts)
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
    host_pids = [h.process.pid for h in hosts]

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
        "joined": sum(message["joined"] for message in joins),
        "join_failures": sum(message["failed"] for message in joins),
        "join_seconds": round(join_seconds, 1),
        "refresh_failures": sum(message["failed"] for message in readies),
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


def host_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="crawl_loopback.py --host")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", default=None, metavar="IP:PORT")
    parser.add_argument("--join-concurrency", type=int, default=25)
    parser.add_argument("--join-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.first < 0 or args.first + args.count > MAX_NODES:
        parser.error(f"nodes from 0 to {MAX_NODES - 1}")
    if args.seed is not None and not args.seed.startswith("127."):
        parser.error("--seed must be a loopback address")
    return asyncio.run(host(args))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--host"]:
        return host_main(argv[1:])
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
