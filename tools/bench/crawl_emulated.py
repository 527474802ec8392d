"""tools/crawler.py against the emulated DHT (tools/bench/emulated_dht.py), where the truth
is known: how much of the DHT does a sweep find, at what cost, at what speed?

    python tools/bench/crawl_emulated.py --nodes N [--seed S] [--rate Q] [--concurrency C]
        [--partitions P] [--db postgresql://...] [--cpu-limit F] [--emulator OPTION=VALUE]
        [--crawler-arg ARG] [--limit SECONDS] [--keep DIR] [--json]

Runs in a network namespace of its own (`unshare -n`) where it can, else on this host's
loopback. The emulated DHT (realistic by default: silent and gone contacts, round-trip
times, loss, churn, shared IPs, Sybils, the client mix; `--emulator plain=1` for none of
it) runs on one core, the crawler (one process, or `--partitions P` processes writing one
crawl with `--partition I/P --label`) on the last core; `--cpu-limit 0.3` lets the crawler
run only 30 % of the time (SIGSTOP/SIGCONT every 20 ms), as on a slow machine.

Prints, against the truth (the emulator's own, and its network rebuilt here from the seed):
nodes reachable for the whole sweep, at its end and at some moment of it; of those, the
share the crawl found and the share that answered it; nodes found per node listed; queries
per node found; the sweep's wall time (first visit to the crawl's end); datagrams a second
and per CPU-second of the crawler, and the emulator's; the crawler's peak RSS, in all and
per node found; the database's bytes per node found; and for the reachable nodes it missed
(up to 20), who they are. `--json` prints one JSON object. Exit 0 once measured, 2 when
the run could not be made. Every child is stopped by this script, by PID; the whole run is
bounded by `--limit`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for path in (str(HERE), str(REPO / "tools"), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

from processes import (  # noqa: E402
    DutyCycle, child_env, cores, cpu_seconds, die_with_parent, in_own_namespace, pinned,
)

EMULATOR = HERE / "emulated_dht.py"
CRAWLER = REPO / "tools" / "crawler.py"
ANCHOR = 20_000
"""the8472's mldht: 20,000 packets a second on one Xeon core."""
MISSED_SHOWN = 20


class BenchError(Exception):
    pass


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="crawl_emulated.py", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None, help="the crawler's --rate")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None, help="the crawler's --timeout")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--db", default=None, help="postgresql://... (default: SQLite)")
    parser.add_argument("--postgres", action="store_true",
                        help="crawl into a throwaway PostgreSQL server started here "
                             "(tools/bench/pgserver.py, with fsync)")
    parser.add_argument("--cpu-limit", type=float, default=None, metavar="F",
                        help="the crawler runs this share of the time (0 < F < 1)")
    parser.add_argument("--emulator", action="append", default=[], metavar="OPTION=VALUE",
                        help="an emulated_dht.py option, e.g. silent=0.5 or plain=1")
    parser.add_argument("--crawler-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--limit", type=float, default=3600.0, metavar="SECONDS",
                        help="stop everything after this long (default 3600)")
    parser.add_argument("--keep", metavar="DIR", help="keep the database and logs here")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def emulator_command(args, truth: Path) -> list[str]:
    command = [sys.executable, str(EMULATOR), "--nodes", str(args.nodes), "--seed",
               str(args.seed), "--duration", str(args.limit + 600), "--truth", str(truth),
               "--truth-every", str(max(5, args.nodes // 500_000)), "--stdin-stop"]
    for item in args.emulator:
        name, _, value = item.partition("=")
        name = name.strip().lstrip("-").replace("_", "-")
        if name == "plain":
            if value not in ("0", "false", "no"):
                command.append("--plain")
            continue
        command += [f"--{name}", value]
    return command


def crawler_commands(args, bootstrap: str, db: str) -> list[list[str]]:
    commands = []
    for part in range(args.partitions):
        command = [sys.executable, str(CRAWLER), "crawl", "--bootstrap", bootstrap,
                   "--bind", f"127.0.{part // 200}.{part % 200 + 2}:0", "--db", db,
                   "--sweeps", "1", "--json", "-q"]
        if args.rate is not None:
            command += ["--rate", str(args.rate)]
        if args.concurrency is not None:
            command += ["--concurrency", str(args.concurrency)]
        if args.timeout is not None:
            command += ["--timeout", str(args.timeout)]
        if args.partitions > 1:
            command += ["--partition", f"{part}/{args.partitions}", "--label", "bench"]
        commands.append(command + list(args.crawler_arg))
    return commands


def wait_ready(emulator: subprocess.Popen, deadline: float, log: Path) -> str:
    """The bootstrap address the emulated DHT prints once it serves (`ready HOST:PORT`),
    read until `deadline` (time.monotonic())."""
    line = b""
    while time.monotonic() < deadline:
        line = emulator.stdout.readline()
        if not line or line.startswith(b"ready "):
            break
    if not line.startswith(b"ready "):
        raise BenchError(f"the emulated DHT did not start: see {log}")
    return line.split()[1].decode()


def stop(process: subprocess.Popen) -> None:
    """End a child of ours, by PID: stdin closed, then SIGINT, then SIGKILL."""
    if process.poll() is not None:
        return
    for action in ("close", signal.SIGINT, signal.SIGKILL):
        try:
            if action == "close":
                if process.stdin:
                    process.stdin.close()
            else:
                process.send_signal(action)
            process.wait(timeout=30 if action == "close" else 10)
            return
        except (subprocess.TimeoutExpired, OSError):
            continue


def run(args, folder: Path) -> dict:
    others, last = cores()
    truth_path = folder / "truth.json"
    emulator_log = open(folder / "emulator.log", "wb")
    emulator = subprocess.Popen(pinned(emulator_command(args, truth_path), others),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=emulator_log, env=child_env(),
                                preexec_fn=die_with_parent)
    crawlers: list[subprocess.Popen] = []
    try:
        bootstrap = wait_ready(emulator, time.monotonic() + min(args.limit, 1800),
                               folder / "emulator.log")
        db = args.db or str(folder / "crawl.sqlite")
        if args.db and args.db.startswith("postgres"):
            _fresh_postgres(args.db)
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(db + suffix).unlink(missing_ok=True)
        started_wall = time.time()
        emulator_cpu_before = cpu_seconds(emulator.pid) or 0.0
        for index, command in enumerate(crawler_commands(args, bootstrap, db)):
            crawlers.append(subprocess.Popen(
                pinned(command, last), stdout=subprocess.PIPE,
                stderr=open(folder / f"crawler-{index}.log", "wb"), env=child_env(),
                preexec_fn=die_with_parent))
        cycle = None
        if args.cpu_limit:
            cycle = DutyCycle([c.pid for c in crawlers], args.cpu_limit)
            cycle.start()
        cpu = {c.pid: 0.0 for c in crawlers}
        peak = {c.pid: 0 for c in crawlers}
        outputs: dict[int, bytes] = {}
        readers = [threading.Thread(target=lambda c=c: outputs.__setitem__(
            c.pid, c.stdout.read()), daemon=True) for c in crawlers]
        for reader in readers:
            reader.start()
        end = time.monotonic() + args.limit
        left = set(c.pid for c in crawlers)
        while left and time.monotonic() < end:
            for pid in list(left):
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    cpu[pid] = max(cpu[pid], seconds)
                waited, status, usage = os.wait4(pid, os.WNOHANG)
                if waited:
                    peak[pid] = usage.ru_maxrss * 1024
                    cpu[pid] = max(cpu[pid], usage.ru_utime + usage.ru_stime)
                    left.discard(pid)
            time.sleep(0.5)
        finished_wall = time.time()
        if cycle is not None:
            cycle.done.set()
            cycle.join()
        timed_out = bool(left)
        for process in crawlers:
            if process.pid in left:
                process.send_signal(signal.SIGINT)
        for pid in list(left):
            try:
                _, _, usage = os.wait4(pid, 0)
                peak[pid] = usage.ru_maxrss * 1024
            except ChildProcessError:
                pass
        for reader in readers:
            reader.join(timeout=30)
        emulator_cpu = (cpu_seconds(emulator.pid) or 0.0) - emulator_cpu_before
        stop(emulator)
        summaries = []
        for process in crawlers:
            try:
                summaries.append(json.loads(outputs.get(process.pid, b"").strip() or b"{}"))
            except json.JSONDecodeError:
                summaries.append({})
        truth = json.loads(truth_path.read_text())
        return analyse(args, db, truth, summaries, {
            "crawler_cpu": sum(cpu.values()), "peak_rss": max(peak.values()),
            "peak_rss_each": list(peak.values()), "emulator_cpu": emulator_cpu,
            "wall": finished_wall - started_wall, "timed_out": timed_out}, folder)
    finally:
        for process in crawlers:
            if process.poll() is None:
                process.kill()
        stop(emulator)
        emulator_log.close()


def _fresh_postgres(url: str) -> None:
    """Empty the crawl tables of the benchmark's PostgreSQL database."""
    import asyncpg

    async def clear() -> None:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            await connection.execute(
                "DROP TABLE IF EXISTS crawls, parts, contacts, visits, intents, aliases, "
                "samples, edges, estimates")
        finally:
            await connection.close()
    asyncio.run(clear())


def _database_bytes(db: str) -> int:
    if db.startswith("postgres"):
        import asyncpg

        async def size() -> int:
            connection = await asyncpg.connect(db, timeout=10)
            try:
                return await connection.fetchval(
                    "SELECT pg_database_size(current_database())")
            finally:
                await connection.close()
        return asyncio.run(size())
    return sum(os.path.getsize(db + suffix) for suffix in ("", "-wal")
               if os.path.exists(db + suffix))


def analyse(args, db: str, truth: dict, summaries: list[dict], measured: dict,
            folder: Path) -> dict:
    from crawling.store import readable_sqlite
    from emulated.model import EmulatedNetwork, EmulationConfig
    import numpy as np

    database_bytes = _database_bytes(db)
    config = dict(truth["config"])
    clients = config.pop("clients")
    from emulated.model import Client
    config["clients"] = tuple(Client(c["code"], bytes.fromhex(c["v"]) if c["v"] else None,
                                     c["share"], c["bep51"], c["bep42"]) for c in clients)
    network = EmulatedNetwork(EmulationConfig(**config))
    emulator_started = truth["time"] - truth["elapsed"]
    with readable_sqlite(db) as path:
        sql = sqlite3.connect(path)
        first, = sql.execute("SELECT MIN(at) FROM intents").fetchone()
        last_visit, = sql.execute("SELECT MAX(at) FROM visits").fetchone()
        finished, = sql.execute("SELECT MAX(finished_at) FROM crawls").fetchone()
        found = np.zeros(network.population, dtype=bool)
        answered = np.zeros(network.population, dtype=bool)
        outside = 0
        rows = 0
        for table, mask, where in (("contacts", found, ""),
                                   ("visits", answered, " WHERE outcome='answered'")):
            for ip, port in sql.execute(f"SELECT ip, port FROM {table}{where}"):
                rows += 1
                parts = [int(x) for x in ip.split(".")] if "." in ip else None
                rank = None if parts is None else network.rank_at(
                    parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3], port)
                if rank is None:
                    outside += 1
                    continue
                mask[rank] = True
        queries = sum(s.get("datagrams_sent", 0) for s in summaries)
        received = sum(s.get("datagrams_received", 0) for s in summaries)
        visit_rows, = sql.execute("SELECT COUNT(*) FROM visits").fetchone()
        outcomes = dict(sql.execute("SELECT outcome, COUNT(*) FROM visits GROUP BY 1"))
        bep51 = dict(sql.execute("SELECT COALESCE(bep51, -1), COUNT(*) FROM visits "
                                 "WHERE outcome='answered' GROUP BY 1"))
        timeline = sql.execute(
            "SELECT CAST((at - ?) / 10 AS INTEGER) * 10, COUNT(*) FROM intents GROUP BY 1 "
            "ORDER BY 1", (first,)).fetchall() if first else []
        sql.close()
    start = (first or emulator_started) - emulator_started
    end = (finished or last_visit or time.time()) - emulator_started
    answering = ~network.silent
    throughout = network.online_throughout_mask(start, end) & answering
    at_end = network.online_mask(end) & answering
    during = network.online_during_mask(start, end) & answering
    listed = network.listed_mask(end)
    found_count = int(found.sum())
    sweep_seconds = (finished or last_visit or first) - first if first else None
    packets = queries + received

    def share(mask, of):
        total = int(of.sum())
        return round(100.0 * int((mask & of).sum()) / total, 3) if total else None
    missed = np.nonzero(throughout & ~found)[0][:MISSED_SHOWN]
    names = network.client_names()
    missed_rows = []
    for rank in missed:
        ip, port = network.address_of(int(rank))
        flags = network.flags[int(rank)]
        missed_rows.append({
            "address": f"{ip}:{port}", "id": network.id_of(int(rank)).hex(),
            "client": names[network.client[rank]], "sybil": bool(flags & 4),
            "errors": bool(flags & 2), "shared_ip": bool(
                network.sybil_slots <= int(network.slot_of[rank]) < network.single_start),
            "neighbour_found": bool(found[max(0, rank - 1)] or
                                    found[min(network.population - 1, rank + 1)])})
    crawler_cpu = measured["crawler_cpu"]
    result = {
        "nodes": args.nodes, "seed": args.seed, "population": network.population,
        "partitions": args.partitions, "database": "postgresql" if db.startswith("postgres")
        else "sqlite", "cpu_limit": args.cpu_limit,
        "emulator": {k: v for k, v in truth.items()
                     if k in ("nodes", "reachable", "reachable_ever", "listed", "named",
                              "named_never_answer", "packets_per_cpu_second")},
        "reachable_throughout": int(throughout.sum()),
        "reachable_at_end": int(at_end.sum()),
        "reachable_during": int(during.sum()),
        "found": found_count,
        "found_of_reachable_throughout": share(found, throughout),
        "answered_of_reachable_throughout": share(answered, throughout),
        "found_of_reachable_at_end": share(found, at_end),
        "answered_of_reachable_during": share(answered, during),
        "found_of_listed": share(found, listed),
        "outside_the_network": outside,
        "queries": queries, "queries_per_node": round(queries / found_count, 3)
        if found_count else None,
        "visits": visit_rows, "outcomes": outcomes,
        "bep51": {"answered": bep51.get(1, 0), "refused_or_silent": bep51.get(0, 0),
                  "not_asked": bep51.get(-1, 0)},
        "sweep_seconds": round(sweep_seconds, 1) if sweep_seconds else None,
        "packets_per_second": round(packets / sweep_seconds) if sweep_seconds else None,
        "crawler_cpu_seconds": round(crawler_cpu, 1),
        "packets_per_cpu_second": round(packets / crawler_cpu) if crawler_cpu else None,
        "anchor_ratio": round(packets / crawler_cpu / ANCHOR, 3) if crawler_cpu else None,
        "emulator_cpu_seconds": round(measured["emulator_cpu"], 1),
        "emulator_packets_per_cpu_second": round(
            (truth["counts"]["received"] + truth["counts"]["sent"]) / truth["cpu_seconds"])
        if truth.get("cpu_seconds") else None,
        "peak_rss_bytes": measured["peak_rss"],
        "peak_rss_per_node": round(measured["peak_rss"] / found_count, 1)
        if found_count else None,
        "database_bytes": database_bytes,
        "database_bytes_per_node": round(database_bytes / found_count, 1)
        if found_count else None,
        "timed_out": measured["timed_out"],
        "crawler_summaries": [{k: v for k, v in s.items() if k != "estimates"}
                              for s in summaries],
        "estimates": [s.get("estimates") for s in summaries],
        "launches_per_10s": timeline,
        "missed": missed_rows,
    }
    if result["emulator_packets_per_cpu_second"] and result["packets_per_cpu_second"]:
        result["emulator_over_crawler"] = round(
            result["emulator_packets_per_cpu_second"] / result["packets_per_cpu_second"], 2)
    return result


def show(result: dict) -> None:
    lines = [
        f"emulated DHT: {result['nodes']:,} nodes online (population {result['population']:,}),"
        f" seed {result['seed']}; crawler: {result['partitions']} process(es), "
        f"{result['database']}" + (f", CPU limited to {result['cpu_limit']:.0%}"
                                   if result["cpu_limit"] else ""),
        f"reachable for the whole sweep {result['reachable_throughout']:,}, at its end "
        f"{result['reachable_at_end']:,}, at some moment {result['reachable_during']:,}",
        f"found {result['found']:,}: {result['found_of_reachable_throughout']} % of those "
        f"reachable throughout (answered {result['answered_of_reachable_throughout']} %), "
        f"{result['found_of_listed']} % of those listed",
        f"queries {result['queries']:,}: {result['queries_per_node']} per node found",
        f"sweep {result['sweep_seconds']} s: {result['packets_per_second']:,} packets/s; "
        f"crawler CPU {result['crawler_cpu_seconds']} s, {result['packets_per_cpu_second']:,} "
        f"packets per CPU-second ({result['anchor_ratio']} of the8472's 20,000); emulator "
        f"{result['emulator_packets_per_cpu_second']:,} per CPU-second",
        f"crawler peak RSS {result['peak_rss_bytes'] / 2**20:,.0f} MiB: "
        f"{result['peak_rss_per_node']} bytes per node found; database "
        f"{result['database_bytes'] / 2**20:,.0f} MiB: {result['database_bytes_per_node']} "
        f"bytes per node",
        f"BEP 51: {result['bep51']}; outcomes {result['outcomes']}",
    ]
    if result["missed"]:
        lines.append(f"missed (first {len(result['missed'])}):")
        lines += [f"  {row}" for row in result["missed"]]
    if result["timed_out"]:
        lines.append("the crawl did not finish within --limit")
    print("\n".join(lines))


def main(argv=None) -> int:
    argv = in_own_namespace(list(sys.argv[1:] if argv is None else argv))
    args = parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            if args.postgres:
                from pgserver import postgres_server
                args.db = stack.enter_context(postgres_server(durable=True))
            if args.keep:
                folder = Path(args.keep)
                folder.mkdir(parents=True, exist_ok=True)
            else:
                folder = Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="mldht-crawl-emulated-")))
            result = run(args, folder)
    except (BenchError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"crawl_emulated: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
