#!/usr/bin/env python3
"""Loopback network benchmark: N mldht nodes on 127.0.0.x, announce and get_peers timings.

Uses only the public library API. Every node is bound to loopback and bootstrapped from the
first one; nothing leaves the machine. Prints bootstrap time, table sizes, and percentiles of
announce and get_peers latency and messages per lookup over R random infohashes.

    python tools/bench/localnet.py --nodes 30 --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from mldht import DHTNode, InfoHash, NodeConfig


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(nodes_count: int, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    config = NodeConfig(query_timeout=2.0)
    first = DHTNode("127.0.1.10:0", bootstrap=[], config=config)
    nodes = [first]
    try:
        await first.start()
        entry = "%s:%d" % first.address
        for i in range(1, nodes_count):
            nodes.append(DHTNode(f"127.0.1.{10 + i}:0", bootstrap=[entry], config=config))
            await nodes[-1].start()
        started = time.perf_counter()
        await asyncio.gather(*(node.bootstrap(timeout=10) for node in nodes[1:]))
        bootstrap_time = time.perf_counter() - started
        sizes = [len(node.routing_table) for node in nodes]
        announce_times, lookup_times, first_peer, queried, found = [], [], [], [], 0
        for _ in range(rounds):
            info_hash = InfoHash(rng.randbytes(20))
            announcer, searcher = rng.sample(nodes, 2)
            port = rng.randrange(1024, 65535)
            t0 = time.perf_counter()
            await announcer.announce(info_hash, port, timeout=10)
            announce_times.append(time.perf_counter() - t0)
            lookup = searcher.get_peers(info_hash, timeout=10)
            peers = await lookup.collect()
            summary = lookup.summary
            lookup_times.append(summary.elapsed)
            queried.append(summary.queried)
            if summary.time_to_first_peer is not None:
                first_peer.append(summary.time_to_first_peer)
            found += (announcer.address[0], port) in peers
        print(f"nodes {nodes_count}, rounds {rounds}, seed {seed}")
        print(f"bootstrap (all but the first, concurrently): {bootstrap_time * 1000:.0f} ms; "
              f"routing table sizes min/median/max {min(sizes)}/{statistics.median(sizes):.0f}/{max(sizes)}")
        for name, values in (("announce", announce_times), ("get_peers", lookup_times),
                             ("first peer", first_peer)):
            if values:
                print(f"{name:>10}: p50 {percentile(values, .5) * 1000:.1f} ms, "
                      f"p90 {percentile(values, .9) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms")
        print(f"   queries per get_peers: mean {statistics.mean(queried):.1f}")
        print(f"   announced peer found: {found}/{rounds}")
    finally:
        for node in nodes:
            await node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 2 <= args.nodes <= 240:
        parser.error("--nodes must be from 2 to 240 (one 127.0.1.x address each)")
    asyncio.run(run(args.nodes, args.rounds, args.seed))


if __name__ == "__main__":
    main()
