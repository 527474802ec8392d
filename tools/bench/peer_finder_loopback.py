"""tools/peer_finder.py against a loopback DHT of `mldht serve` processes: does it find every
announced swarm, politely, and how fast?

    python tools/bench/peer_finder_loopback.py [--nodes 60] [--announced 500]
        [--unannounced 100] [--announcers 10] [--concurrency N] [--lookup-timeout S]
        [--min-table N] [--seed N] [--timeout S] [--json]

Starts `--nodes` `mldht serve` processes, each on its own address 127.0.11.i (a routing
table keeps one node per IP) with `--http 127.0.11.i:0`, logging to a file in a temporary
folder; the first one bootstraps from a dead loopback address, the others from the first.
Waits (bounded by `--table-wait`) until every node's /api/status shows at least
`--min-table` nodes in its routing table and the table sizes stop changing (the joins are
over). Then `--announcers` read-only `mldht.Node`s in this process, on 127.0.12.j,
announce `--announced` random infohashes between them, each with a port of its own (BEP 5
stores the sender's IP and the given port: the expected peer is 127.0.12.j:port), and are
closed. `--unannounced` more random infohashes are announced by nobody. All of them,
shuffled, go to an input file for `tools/peer_finder.py -i FILE -o OUT.jsonl --bind
127.0.13.1:0 --quiet`, bootstrapped from three of the nodes and run as a child process,
timed from start to exit.

Prints: nodes, their table sizes, the time spent announcing, announced infohashes found
with the expected peer (and their share), unannounced ones reported empty, wrong or
missing peers, lookup errors, the finder's wall time and exit status, lookups per second
(all infohashes / wall time), lookup time percentiles, the queries the finder's lookups
sent (the sum of each record's `queried`; its bootstrap not included: `--quiet` prints no
summary) beside the growth of the nodes' `queries_received` during its run, by method
(maintenance between the nodes included), the busiest node's share against what the
finder's per-IP budget allows over its wall time, and the nodes' `rate_limited` counters:
max and sum over the nodes at the end, and their growth during the finder's run (expected
0: the finder is polite). `--json` prints one JSON object instead. Exit 0 once measured
(whatever the figures), 2 when the network or the finder could not be run.

Everything goes to 127.0.0.0/8; the child processes are stopped by this script (SIGINT,
then SIGKILL after 10 s), and the whole run is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mldht import Node  # noqa: E402

FINDER = REPO / "tools" / "peer_finder.py"
NODE_NET = "127.0.11"
ANNOUNCER_NET = "127.0.12"
FINDER_IP = "127.0.13.1"
DEAD_IP = "127.0.10.254"  # nothing listens there: the first node's bootstrap
FIRST_PORT = 10_000
STATUS_MAX_AGE = 1.5
"""Seconds to wait for a fresh /api/status (the page serves a snapshot up to 1 s old)."""
STATUS_PAGE = re.compile(r"status page on (http://\S+?)/?\s*$", re.MULTILINE)


PER_IP_BURST, PER_IP_RATE = 10, 3.0
"""The finder's default per-IP budget (tools/peer_finder.py --per-ip-rate)."""


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(share * len(values)))]


class BenchError(Exception):
    """The network or the finder could not be run: exit 2 with this message."""


def free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """This environment, with the repository first on PYTHONPATH (anything already there,
    such as a test's network guard, kept)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class ServeNode:
    """One `mldht serve` child process and what its log says."""

    def __init__(self, index: int, folder: Path) -> None:
        self.index = index
        self.ip = f"{NODE_NET}.{index + 1}"
        self.port = free_udp_port(self.ip)
        self.log = folder / f"node-{index + 1:03d}.log"
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self, bootstrap: str, env: dict[str, str]) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mldht.cli", "serve", "--bind", self.address,
                 "--bootstrap", bootstrap, "--http", f"{self.ip}:0",
                 "--stats-interval", "3600"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def poll_url(self) -> str | None:
        """The status page's URL once the log names it; BenchError when it exited."""
        if self.url is None:
            found = STATUS_PAGE.search(self.log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
            elif self.process is not None and self.process.poll() is not None:
                raise BenchError(f"node {self.address} exited with {self.process.returncode}:"
                                 f" {self.log.read_text(errors='replace')[-2000:]}")
        return self.url


def stop_all(nodes: list[ServeNode], grace: float = 10.0) -> None:
    """SIGINT to every child still running (our own, by pid), then SIGKILL after `grace`."""
    running = [node.process for node in nodes
               if node.process is not None and node.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for_urls(nodes: list[ServeNode], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if all(node.poll_url() for node in nodes):
            return
        if time.monotonic() > deadline:
            missing = [node.address for node in nodes if node.url is None]
            raise BenchError(f"no status page after {seconds:g} s from {len(missing)} nodes: "
                             f"{', '.join(missing[:5])}")
        await asyncio.sleep(0.1)


async def fetch_status(session, node: ServeNode) -> dict:
    import aiohttp
    async with session.get(node.url + "/api/status",
                           timeout=aiohttp.ClientTimeout(total=10)) as response:
        response.raise_for_status()
        return await response.json()


async def all_statuses(session, nodes: list[ServeNode]) -> list[dict]:
    return list(await asyncio.gather(*(fetch_status(session, node) for node in nodes)))


def table_size(status: dict) -> int:
    return sum(family["table"]["nodes"] for family in status["families"].values())


def counters_of(statuses: list[dict]) -> dict:
    received = [sum(s["counters"]["queries_received"].values()) for s in statuses]
    limited = [s["counters"]["rate_limited"] for s in statuses]
    methods: dict[str, int] = {}
    for status in statuses:
        for method, count in status["counters"]["queries_received"].items():
            methods[method] = methods.get(method, 0) + count
    return {"queries_received": received, "rate_limited": limited, "by_method": methods}


async def wait_for_tables(session, nodes: list[ServeNode], minimum: int,
                          seconds: float) -> list[int]:
    """Poll every node's table until each has `minimum` nodes and no table has changed
    size over the last 3 polls (the joins are over: a table only grows again at its
    15-minute bucket refresh); BenchError after `seconds`."""
    deadline = time.monotonic() + seconds
    history: list[list[int]] = []
    while True:
        sizes = [table_size(status) for status in await all_statuses(session, nodes)]
        history = (history + [sizes])[-3:]
        if min(sizes) >= minimum and len(history) == 3 and history[0] == sizes:
            return sizes
        if time.monotonic() > deadline:
            small = sorted((size, node.address) for size, node in zip(sizes, nodes))[:5]
            raise BenchError(f"routing tables under {minimum} nodes or still changing after "
                             f"{seconds:g} s; the smallest: "
                             + ", ".join(f"{address} has {size}" for size, address in small))
        await asyncio.sleep(STATUS_MAX_AGE)


async def announce_all(entries: list[str], hashes: list[bytes], announcers: int,
                       rng: random.Random) -> tuple[dict[str, str], dict]:
    """Announce `hashes` from `announcers` read-only nodes on 127.0.12.x, each its share;
    the expected peer of each (hex infohash: "ip:port") and how it went."""
    nodes = [Node((f"{ANNOUNCER_NET}.{j + 1}", 0), bootstrap=entries, read_only=True)
             for j in range(announcers)]
    expected: dict[str, str] = {}
    accepted: list[int] = []
    failures: list[str] = []
    try:
        for node in nodes:
            await node.start()
        await asyncio.gather(*(node.bootstrap() for node in nodes))

        async def share(j: int, node: Node) -> None:
            mine = hashes[j::announcers]
            gate = asyncio.Semaphore(8)

            async def one(info_hash: bytes) -> None:
                port = rng.randrange(FIRST_PORT, 60_000)
                async with gate:
                    result = await node.announce(info_hash, port, timeout=30)
                expected[info_hash.hex()] = f"{node.address[0]}:{port}"
                accepted.append(len(result.announced_to))
                if not result.announced_to:
                    failures.append(info_hash.hex())
            await asyncio.gather(*(one(h) for h in mine))
        await asyncio.gather(*(share(j, node) for j, node in enumerate(nodes)))
    finally:
        for node in nodes:
            await node.close()
    return expected, {"accepted_min": min(accepted, default=0),
                      "accepted_mean": round(sum(accepted) / max(1, len(accepted)), 2),
                      "announced_to_nobody": len(failures)}


async def run_finder(folder: Path, targets: list[str], entries: list[str], args,
                     env: dict[str, str], seconds: float) -> tuple[int, float, Path, str]:
    listing = folder / "infohashes.txt"
    listing.write_text("".join(f"{target}\n" for target in targets))
    output = folder / "out.jsonl"
    command = [sys.executable, str(FINDER), "-i", str(listing), "-o", str(output),
               "--bootstrap", ",".join(entries), "--bind", f"{FINDER_IP}:0", "--quiet"]
    if args.concurrency is not None:
        command += ["--concurrency", str(args.concurrency)]
    if args.lookup_timeout is not None:
        command += ["--timeout", str(args.lookup_timeout)]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), seconds)
    except (TimeoutError, asyncio.CancelledError):
        if process.returncode is None:
            process.kill()  # our own child
            await process.wait()
        raise
    wall = time.monotonic() - started
    return process.returncode, wall, output, stderr.decode(errors="replace")


async def measure(args) -> dict:
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="mldht-finder-bench-"))
    env = child_env()
    nodes = [ServeNode(i, folder) for i in range(args.nodes)]
    began = time.monotonic()
    import aiohttp
    try:
        # The first node joins nobody (it logs that and serves); the others join it, a
        # wave at a time so that 2 cores are not asked to start 60 interpreters at once.
        nodes[0].start(f"{DEAD_IP}:{free_udp_port(DEAD_IP)}", env)
        await wait_for_urls(nodes[:1], 60)
        for start in range(1, len(nodes), args.wave):
            wave = nodes[start:start + args.wave]
            for node in wave:
                node.start(nodes[0].address, env)
            await wait_for_urls(wave, 60)
        started_all = time.monotonic() - began
        async with aiohttp.ClientSession() as session:
            minimum = min(args.nodes - 1, args.min_table)
            sizes = await wait_for_tables(session, nodes, minimum, args.table_wait)
            network_ready = time.monotonic() - began

            hashes = [rng.randbytes(20) for _ in range(args.announced + args.unannounced)]
            announced, unannounced = hashes[:args.announced], hashes[args.announced:]
            spread = [nodes[i * len(nodes) // 3].address for i in range(min(3, len(nodes)))]
            t0 = time.monotonic()
            expected, announce_stats = await announce_all(spread, announced, args.announcers,
                                                          rng)
            announce_seconds = time.monotonic() - t0

            # /api/status is a snapshot up to 1 s old (WebSettings.snapshot_max_age): wait
            # past it (and for the last announce replies) so that the counters are fresh.
            await asyncio.sleep(STATUS_MAX_AGE)
            before = counters_of(await all_statuses(session, nodes))
            targets = [h.hex() for h in hashes]
            rng.shuffle(targets)
            left = args.timeout - (time.monotonic() - began)
            code, wall, output, stderr = await run_finder(folder, targets, spread, args, env,
                                                          max(10.0, left - 20))
            await asyncio.sleep(STATUS_MAX_AGE)
            after_statuses = await all_statuses(session, nodes)
            after = counters_of(after_statuses)
            end_sizes = [table_size(status) for status in after_statuses]
        if code not in (0, 1) or not output.exists():
            raise BenchError(f"the peer finder exited with {code}: {stderr.strip()[-2000:]}")

        records = {}
        for line in output.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["infohash"]] = record
        found = wrong = missing_records = errors = extra = 0
        wrong_examples = []
        for key in (h.hex() for h in announced):
            record = records.get(key)
            if record is None:
                missing_records += 1
                continue
            errors += bool(record["error"])
            if expected.get(key) in record["peers"]:
                found += 1
                extra += len(record["peers"]) - 1
            else:
                wrong += 1
                if len(wrong_examples) < 5:
                    wrong_examples.append({"infohash": key, "expected": expected.get(key),
                                           "peers": record["peers"][:5],
                                           "queried": record["queried"],
                                           "answered": record["answered"],
                                           "error": record["error"]})
        empty = not_empty = 0
        for key in (h.hex() for h in unannounced):
            record = records.get(key)
            if record is None:
                missing_records += 1
                continue
            errors += bool(record["error"])
            if record["peers"]:
                not_empty += 1
            else:
                empty += 1
        queried = sum(record["queried"] or 0 for record in records.values())
        unanswered = sum(record["unanswered"] or 0 for record in records.values())
        elapsed = sorted(record["elapsed"] for record in records.values()
                         if record["elapsed"] is not None)
        growth = [b - a for a, b in zip(before["queries_received"], after["queries_received"])]
        limited_growth = [b - a for a, b in zip(before["rate_limited"], after["rate_limited"])]
        total = len(targets)
        return {
            "nodes": args.nodes,
            "start_seconds": round(started_all, 1),
            "network_ready_seconds": round(network_ready, 1),
            "table_min_wanted": minimum,
            "table_sizes": {"min": min(sizes), "median": sorted(sizes)[len(sizes) // 2],
                            "max": max(sizes)},
            "table_sizes_end": {"min": min(end_sizes),
                                "median": sorted(end_sizes)[len(end_sizes) // 2],
                                "max": max(end_sizes)},
            "announcers": args.announcers,
            "announce_seconds": round(announce_seconds, 2),
            "announce": announce_stats,
            "announced": args.announced,
            "found": found,
            "found_share": round(found / args.announced, 4) if args.announced else None,
            "wrong_peers": wrong,
            "wrong_examples": wrong_examples,
            "other_peers_beside_expected": extra,
            "unannounced": args.unannounced,
            "unannounced_empty": empty,
            "unannounced_with_peers": not_empty,
            "records": len(records),
            "missing_records": missing_records,
            "lookup_errors": errors,
            "finder_exit": code,
            "finder_wall_seconds": round(wall, 2),
            "lookups_per_second": round(total / wall, 2),
            "finder_lookup_queries": queried,
            "finder_queries_per_lookup": round(queried / max(1, len(records)), 1),
            "finder_lookup_unanswered": unanswered,
            "lookup_seconds": {"p50": percentile(elapsed, 0.5), "p90": percentile(elapsed, 0.9),
                               "max": elapsed[-1] if elapsed else None},
            "nodes_queries_received_growth": sum(growth),
            "nodes_queries_received_growth_max": max(growth),
            "busiest_node": nodes[growth.index(max(growth))].address,
            # What the finder's per-IP budget allows one node over its wall time, at its
            # defaults (a burst of 10, then 3 a second): the busiest node near it means the
            # per-IP cap, not the network, set the pace.
            "per_ip_cap_over_wall": int(PER_IP_BURST + PER_IP_RATE * wall),
            "nodes_queries_received_growth_by_method": {
                method: count - before["by_method"].get(method, 0)
                for method, count in after["by_method"].items()
                if count - before["by_method"].get(method, 0)},
            "rate_limited_max": max(after["rate_limited"]),
            "rate_limited_sum": sum(after["rate_limited"]),
            "rate_limited_during_finder_sum": sum(limited_growth),
            "rate_limited_nodes": [node.address for node, value
                                   in zip(nodes, after["rate_limited"]) if value],
            "finder_stderr": stderr.strip()[-2000:],
            "total_seconds": round(time.monotonic() - began, 1),
        }
    finally:
        stop_all(nodes)
        if args.keep:
            print(f"logs kept in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def bounded(args) -> dict:
    try:
        async with asyncio.timeout(args.timeout):
            return await measure(args)
    except TimeoutError:
        raise BenchError(f"not done within --timeout {args.timeout:g} s") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=60, help="mldht serve processes")
    parser.add_argument("--announced", type=int, default=500)
    parser.add_argument("--unannounced", type=int, default=100)
    parser.add_argument("--announcers", type=int, default=10,
                        help="announcing nodes in this process, one 127.0.12.x IP each")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the finder's --concurrency (default: its own)")
    parser.add_argument("--lookup-timeout", type=float, default=None, metavar="S",
                        help="the finder's --timeout per lookup (default: its own)")
    parser.add_argument("--min-table", type=int, default=8, metavar="N",
                        help="wait until every node's table has N nodes (at most nodes - 1; "
                             "default 8, a full bucket) and the tables stopped changing")
    parser.add_argument("--table-wait", type=float, default=90.0, metavar="S",
                        help="for at most S seconds (default 90)")
    parser.add_argument("--wave", type=int, default=10,
                        help="serve processes started at once (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, metavar="S",
                        help="the whole run at most (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' logs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 250:
        parser.error("--nodes must be from 2 to 250 (one 127.0.11.x address each)")
    if not 1 <= args.announcers <= 250:
        parser.error("--announcers must be from 1 to 250 (one 127.0.12.x address each)")
    if args.announced < 0 or args.unannounced < 0 or args.announced + args.unannounced < 1:
        parser.error("--announced and --unannounced: not negative, at least one in all")
    if args.wave < 1 or args.min_table < 1 or args.timeout <= 0 or args.table_wait <= 0:
        parser.error("--wave, --min-table, --timeout and --table-wait must be positive")
    try:
        result = asyncio.run(bounded(args))
    except BenchError as exc:
        print(f"peer_finder_loopback: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    share = f" ({r['found_share']:.1%})" if r["found_share"] is not None else ""
    print(f"nodes {r['nodes']} (started in {r['start_seconds']} s, tables ready in "
          f"{r['network_ready_seconds']} s; table sizes min/median/max "
          f"{r['table_sizes']['min']}/{r['table_sizes']['median']}/{r['table_sizes']['max']})")
    print(f"announcing: {r['announced']} infohashes from {r['announcers']} nodes in "
          f"{r['announce_seconds']} s (stored on {r['announce']['accepted_mean']} nodes each, "
          f"min {r['announce']['accepted_min']})")
    print(f"found: {r['found']} of {r['announced']} announced{share}; wrong or missing peer "
          f"{r['wrong_peers']}; unannounced reported empty {r['unannounced_empty']} of "
          f"{r['unannounced']}; lookup errors {r['lookup_errors']}; records missing "
          f"{r['missing_records']}")
    print(f"finder: wall {r['finder_wall_seconds']} s (exit {r['finder_exit']}), "
          f"{r['lookups_per_second']} lookups/s, {r['finder_lookup_queries']} queries by its "
          f"lookups ({r['finder_queries_per_lookup']} a lookup); the nodes received "
          f"{r['nodes_queries_received_growth']} queries meanwhile, at most "
          f"{r['nodes_queries_received_growth_max']} on one node ({r['busiest_node']}; "
          f"per-IP cap over the wall time {r['per_ip_cap_over_wall']})")
    seconds = r["lookup_seconds"]
    print(f"lookups: p50 {seconds['p50']} s, p90 {seconds['p90']} s, max {seconds['max']} s; "
          f"queries unanswered at their end {r['finder_lookup_unanswered']}")
    print(f"rate_limited: max {r['rate_limited_max']}, sum {r['rate_limited_sum']} over the "
          f"nodes ({r['rate_limited_during_finder_sum']} during the finder's run; expected 0)")
    for example in r["wrong_examples"]:
        print(f"  wrong: {example}")
    print(f"total {r['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
