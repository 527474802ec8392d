"""Memory per stored peer, per routing-table entry and per pending transaction.

    python tools/bench/memory.py

Each figure is measured in a fresh Python process (this script run with `--one`), twice: once
as the growth of the process's RSS (VmRSS, after gc) and once as the bytes tracemalloc counts
(a separate process, since tracing has a memory cost of its own).

- peers: `PeerStore.announce` of `--peers` peers (default 100,000), in swarms of 50 (2,000
  infohashes) and in swarms of 500 (200; the store's default bounds hold both); reported per
  100,000 peers.
- routing: `--tables` routing tables (default 100), each given 16 answering nodes at each of
  the first 20 depths (8 in the bucket, 8 in its replacement cache), each with its compact
  form cached as replies leave it; per entry, every entry a distinct node.
- pending: one `Node` on 127.0.0.1 with `--pending` pings (default 20,000) outstanding to
  a loopback socket that never answers (each ping is a task awaiting its transaction, as in a
  lookup); per pending query. The node sends these pings to 127.0.0.1 only.

Prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
import tracemalloc

CASES = ("peers, swarms of 50", "peers, swarms of 500", "routing", "pending")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Meter:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode == "tracemalloc":
            tracemalloc.start()

    def read(self) -> int:
        gc.collect()
        if self.mode == "tracemalloc":
            return tracemalloc.get_traced_memory()[0]
        return rss_bytes()


def measure_peers(meter: Meter, peers: int, swarms: int) -> dict:
    from mldht.peerstore import PeerStore

    per_swarm = peers // swarms
    rng = random.Random(1)
    hashes = [rng.randbytes(20) for _ in range(swarms)]
    store = PeerStore(max_infohashes=max(2000, swarms), max_peers=max(500, per_swarm))
    now = time.monotonic()
    before = meter.read()
    for swarm, info_hash in enumerate(hashes):
        for index in range(per_swarm):
            number = swarm * per_swarm + index
            # distinct peers, as text addresses the way the node stores them
            store.announce(info_hash, (f"127.{number >> 16 & 255}.{number >> 8 & 255}."
                                       f"{number & 255}", 6881 + swarm % 1000), now)
    after = meter.read()
    assert store.peer_count() == swarms * per_swarm
    return {"items": store.peer_count(), "bytes": after - before}


def measure_routing(meter: Meter, tables: int) -> dict:
    from mldht.bep42 import is_secure_id
    from mldht.compact import NodeInfo
    from mldht.ids import NodeId
    from mldht.routing import RoutingTable

    rng = random.Random(2)
    owners = [NodeId(rng.randbytes(20)) for _ in range(tables)]
    now = time.monotonic()
    before = meter.read()
    built = []
    number = 0
    for own in owners:
        table = RoutingTable(own, verify=is_secure_id)
        own_int = int.from_bytes(own, "big")
        for depth in range(20):
            for _ in range(16):
                value = ((own_int >> (159 - depth)) ^ 1) << (159 - depth) | rng.getrandbits(159 - depth)
                number += 1
                ip = f"127.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
                table.heard_from(NodeInfo(NodeId(value.to_bytes(20, "big")), ip, 6881), now,
                                 responded=True)
        # As in a serving node: replies have listed every entry, so each one's compact form
        # (and node info) is cached.
        for entry in table:
            entry.compact
        built.append(table)
    after = meter.read()
    entries = sum(len(table) + sum(len(bucket.replacements) for bucket in table.buckets)
                  for table in built)
    main = sum(len(table) for table in built)
    return {"items": entries, "bytes": after - before, "in_buckets": main,
            "in_replacement_caches": entries - main}


def measure_pending(meter: Meter, count: int) -> dict:
    import asyncio
    import socket

    from mldht import Node, NodeConfig

    async def run() -> dict:
        # No outbound budget: every ping to the one silent address must be out at once.
        config = NodeConfig(max_pending=count + 10, query_timeout=120.0, inbound_rate=0,
                            query_rate=0, per_ip_query_rate=0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))  # never read: queries to it are never answered
            target = silent.getsockname()
            async with Node(("127.0.0.1", 0), bootstrap=[], config=config) as node:
                warm = asyncio.create_task(node.ping(target))
                await asyncio.sleep(0.05)
                warm.cancel()
                await asyncio.gather(warm, return_exceptions=True)
                before = meter.read()
                tasks = [asyncio.create_task(node.ping(target)) for _ in range(count)]
                deadline = time.monotonic() + 60
                while sum(node.in_flight.values()) < count and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                pending = sum(node.in_flight.values())
                after = meter.read()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return {"items": pending, "bytes": after - before}

    return asyncio.run(run())


def one(case: str, mode: str, args) -> dict:
    meter = Meter(mode)
    if case == "peers, swarms of 50":
        return measure_peers(meter, args.peers, max(1, args.peers // 50))
    if case == "peers, swarms of 500":
        return measure_peers(meter, args.peers, max(1, args.peers // 500))
    if case == "routing":
        return measure_routing(meter, args.tables)
    if case == "pending":
        return measure_pending(meter, args.pending)
    raise ValueError(case)


def measure(peers: int = 100_000, tables: int = 100, pending: int = 20_000) -> list[dict]:
    """Every case, each in a fresh process for RSS and another for tracemalloc."""
    rows = []
    for case in CASES:
        row: dict = {"case": case}
        for mode in ("rss", "tracemalloc"):
            output = subprocess.run(
                [sys.executable, __file__, "--one", case, "--mode", mode, "--peers", str(peers),
                 "--tables", str(tables), "--pending", str(pending)],
                capture_output=True, text=True, timeout=600, check=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            row["items"] = result["items"]
            row[f"{mode}_bytes"] = result["bytes"]
            row[f"{mode}_bytes_per_item"] = round(result["bytes"] / max(result["items"], 1), 1)
            row.update({key: value for key, value in result.items()
                        if key not in ("items", "bytes")})
        if case.startswith("peers"):
            for mode in ("rss", "tracemalloc"):
                row[f"{mode}_mib_per_100k"] = round(row[f"{mode}_bytes_per_item"] * 100_000 / 2**20, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100_000)
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--pending", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("rss", "tracemalloc"), default="rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (1 <= args.peers <= 1_000_000 and 1 <= args.tables <= 10_000 and 1 <= args.pending <= 100_000):
        parser.error("--peers up to 1,000,000, --tables up to 10,000, --pending up to 100,000")
    if args.one:
        print(json.dumps(one(args.one, args.mode, args)))
        return
    rows = measure(args.peers, args.tables, args.pending)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'case':21} {'items':>8} {'RSS B/item':>11} {'traced B/item':>14} "
          f"{'RSS MiB/100k':>13} {'traced MiB/100k':>16}")
    for row in rows:
        print(f"{row['case']:21} {row['items']:>8} {row['rss_bytes_per_item']:>11} "
              f"{row['tracemalloc_bytes_per_item']:>14} {row.get('rss_mib_per_100k', ''):>13} "
              f"{row.get('tracemalloc_mib_per_100k', ''):>16}")
    print("peers: PeerStore entries; routing: RoutingTable entries (buckets and replacement "
          "caches); pending: outstanding pings, each with the task awaiting it")


if __name__ == "__main__":
    main()
