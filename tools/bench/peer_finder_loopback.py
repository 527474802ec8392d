"""tools/peer_finder.py against a loopback DHT of `mldht serve` processes: does it find every
announced swarm, politely, and how fast?

    python tools/bench/peer_finder_loopback.py [--nodes 60] [--hosts 4] [--announced 500]
        [--unannounced 100] [--announcers 10] [--concurrency N] [--lookup-timeout S]
        [--join-wait S] [--seed N] [--timeout S] [--json]

The network is `loopnet.LoopbackDHT` (shared with the crawler's loopback benchmark):
`--nodes` `mldht.Node`s with the default configuration (the per-IP inbound limits on) in
`--hosts` host processes, each node on its own address 127.31.0.i (a routing table keeps
one node per IP), joined through the first and then each looking its own id up once more.
Then `--announcers` read-only `mldht.Node`s in this process, on 127.0.12.j,
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

Everything goes to 127.0.0.0/8; the host processes are stopped by this script (by PID:
`quit`, then SIGINT, then SIGKILL), and the whole run is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mldht import Node  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopnet import BenchError, LoopbackDHT  # noqa: E402
from processes import child_env  # noqa: E402

FINDER = REPO / "tools" / "peer_finder.py"
NODE_NET = "127.31"
ANNOUNCER_NET = "127.0.12"
FINDER_IP = "127.0.13.1"
FIRST_PORT = 10_000
SETTLE = 1.0
"""Seconds for the last replies to land before the nodes' counters are read."""


PER_IP_BURST, PER_IP_RATE = 10, 3.0
"""The finder's default per-IP budget (tools/peer_finder.py --per-ip-rate)."""


def counters_of(nodes: list[dict]) -> dict:
    """Per node (in the network's order): queries received and rate_limited; and the
    queries received by method over all nodes."""
    methods: dict[str, int] = {}
    for node in nodes:
        for method, count in node["queries_received"].items():
            methods[method] = methods.get(method, 0) + count
    return {"queries_received": [sum(node["queries_received"].values()) for node in nodes],
            "rate_limited": [node["rate_limited"] for node in nodes], "by_method": methods}


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(share * len(values)))]


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
    hosts = max(1, min(args.hosts, args.nodes // 2))
    dht = LoopbackDHT(args.nodes, hosts, folder, net=NODE_NET)
    began = time.monotonic()
    try:
        ready = await dht.start(args.join_wait, env)
        started_all = ready["join_seconds"]
        network_ready = ready["ready_seconds"]
        sizes = ready["tables"]
        addresses = ready["addresses"]

        hashes = [rng.randbytes(20) for _ in range(args.announced + args.unannounced)]
        announced, unannounced = hashes[:args.announced], hashes[args.announced:]
        spread = [addresses[i * len(addresses) // 3] for i in range(min(3, len(addresses)))]
        t0 = time.monotonic()
        expected, announce_stats = await announce_all(spread, announced, args.announcers, rng)
        announce_seconds = time.monotonic() - t0

        await asyncio.sleep(SETTLE)
        before = counters_of(await dht.node_stats())
        targets = [h.hex() for h in hashes]
        rng.shuffle(targets)
        left = args.timeout - (time.monotonic() - began)
        code, wall, output, stderr = await run_finder(folder, targets, spread, args, env,
                                                      max(10.0, left - 20))
        await asyncio.sleep(SETTLE)
        after_nodes = await dht.node_stats()
        after = counters_of(after_nodes)
        end_sizes = [node["table"] for node in after_nodes]
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
            "busiest_node": after_nodes[growth.index(max(growth))]["address"],
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
            "rate_limited_nodes": [node["address"] for node, value
                                   in zip(after_nodes, after["rate_limited"]) if value],
            "finder_stderr": stderr.strip()[-2000:],
            "total_seconds": round(time.monotonic() - began, 1),
        }
    finally:
        await dht.stop()
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
    parser.add_argument("--nodes", type=int, default=60, help="nodes in the network")
    parser.add_argument("--announced", type=int, default=500)
    parser.add_argument("--unannounced", type=int, default=100)
    parser.add_argument("--announcers", type=int, default=10,
                        help="announcing nodes in this process, one 127.0.12.x IP each")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the finder's --concurrency (default: its own)")
    parser.add_argument("--lookup-timeout", type=float, default=None, metavar="S",
                        help="the finder's --timeout per lookup (default: its own)")
    parser.add_argument("--hosts", type=int, default=4,
                        help="host processes the nodes run in (default 4)")
    parser.add_argument("--join-wait", type=float, default=120.0, metavar="S",
                        help="the joins, and then the refresh lookups, at most S seconds each "
                             "(default 120)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, metavar="S",
                        help="the whole run at most (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the hosts' logs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 2000:
        parser.error("--nodes must be from 2 to 2000")
    if not 1 <= args.announcers <= 250:
        parser.error("--announcers must be from 1 to 250 (one 127.0.12.x address each)")
    if args.announced < 0 or args.unannounced < 0 or args.announced + args.unannounced < 1:
        parser.error("--announced and --unannounced: not negative, at least one in all")
    if args.hosts < 1 or args.timeout <= 0 or args.join_wait <= 0:
        parser.error("--hosts, --timeout and --join-wait must be positive")
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
    print(f"nodes {r['nodes']} (joined in {r['start_seconds']} s, tables ready in "
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
