"""The peer finder's own code on the simulator, where the truth is known.

    python tools/bench/peer_finder_sim.py [--nodes 10000] [--infohashes 1000]
        [--announced 800] [--loss 0.05] [--dead 0.2] [--seed 1] [--cold 20] [--json]

Builds a simulated DHT (mldht.sim: real engines on a virtual network with lognormal
latencies, median 100 ms one way, `--loss` of every datagram lost; routing tables seeded),
has `--announced` swarms announced by 1 to 4 random nodes each (every peer whose announce
was stored by at least one node is expected), silences `--dead` of the nodes (they stay in
everyone's tables), then runs `tools/peer_finder.py`'s `find()` with its default
concurrency, rates and timeout, on a `mldht.Node` attached to the virtual network, in
virtual time (`mldht.sim.aio`): one warm node, `--infohashes` lookups, the unannounced
ones mixed in. For comparison, `--cold` single lookups as `mldht get-peers` makes them
with an empty node cache: a fresh node that looks one swarm up at once (it does not join
first; its lookup does the joining).

Prints: announced swarms found (any right peer) and complete (every expected peer), the
unannounced reported empty, wrong peers, queries per lookup (the batch's queries over its
lookups, with and without the join) against a cold get_peers (every query its node sent,
and the lookup's own), lookups per virtual second, time to first peer, and the wall time. No socket
is opened.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

from mldht import Node, NodeConfig
from mldht.sim import Scenario
from mldht.sim.aio import attach_node, run_in_simulation
from mldht.sim.scenario import Simulation

TOOLS = Path(__file__).resolve().parents[1]


def load_finder():
    spec = importlib.util.spec_from_file_location("peer_finder", TOOLS / "peer_finder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_finder"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def announce_swarms(sim: Simulation, info_hashes: list[bytes], rng: random.Random,
                    timeout: float) -> dict[bytes, set[str]]:
    """Each swarm announced by 1 to 4 random live nodes; the peers some node stored."""
    expected: dict[bytes, set[str]] = {info_hash: set() for info_hash in info_hashes}
    outstanding = [0]
    now = sim.scheduler.now
    for index, info_hash in enumerate(info_hashes):
        for member in rng.sample(sim.live.items, rng.randint(1, 4)):
            port = 20_000 + index
            outstanding[0] += 1

            def announced(result, error, info_hash=info_hash, member=member, port=port):
                outstanding[0] -= 1
                if result is not None and result.announced_to:
                    expected[info_hash].add(f"{member.info.ip}:{port}")
            member.start(member.engine.start_announce(info_hash, now, port, timeout=timeout),
                         announced)
    sim.scheduler.run_until(lambda: outstanding[0] == 0, until=now + timeout + 60)
    return expected


OVERRIDES: list[str] = []
"""`--set NAME=VALUE`: NodeConfig fields of the measured nodes, changed from the finder's."""


def finder_config(finder) -> NodeConfig:
    return NodeConfig.from_overrides(
        OVERRIDES, base=NodeConfig.from_overrides(finder.finder_overrides()))


def next_address(counter: list[int]) -> tuple[str, int]:
    counter[0] += 1
    return (f"100.{64 + counter[0] // 65536 % 64}.{counter[0] // 256 % 256}."
            f"{counter[0] % 256}", 6881)


async def batch(sim: Simulation, finder, targets, contacts, address) -> dict:
    node = Node(address, bootstrap=contacts, clock=lambda: sim.scheduler.now,
                read_only=True, config=finder_config(finder))
    await attach_node(node, sim.network, address)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await node.bootstrap()
    joined = loop.time()
    join_queries = node.stats.queries_sent
    records = []
    totals = finder.Totals(total=len(targets))
    await finder.find(node, targets, concurrency=finder.DEFAULT_CONCURRENCY,
                      timeout=finder.DEFAULT_TIMEOUT, scrape=False,
                      on_record=records.append, totals=totals)
    finished = loop.time()
    result = {"records": records, "join_seconds": joined - started,
              "batch_seconds": finished - joined, "join_queries": join_queries,
              "batch_queries": node.stats.queries_sent - join_queries,
              "estimate": node.estimated_size().as_dict()}
    await node.close()
    return result


async def cold_lookups(sim: Simulation, finder, info_hashes, contacts_for, addresses) -> list:
    rows = []
    for info_hash in info_hashes:
        address = next_address(addresses)
        node = Node(address, bootstrap=contacts_for(), clock=lambda: sim.scheduler.now,
                    read_only=True, config=NodeConfig.from_overrides(OVERRIDES))
        await attach_node(node, sim.network, address)
        # As the command does: no join first, the lookup starts from the bootstrap nodes.
        lookup = node.get_peers(info_hash, finder.DEFAULT_TIMEOUT)
        await lookup.collect()
        summary = lookup.summary
        rows.append({"total_queries": node.stats.queries_sent,
                     "lookup_queries": summary.queried + summary.resent if summary else 0})
        await node.close()
    return rows


def measure(nodes: int, infohashes: int, announced: int, loss: float, dead: float,
            seed: int, cold: int) -> dict:
    finder = load_finder()
    wall = time.perf_counter()
    sim = Simulation(Scenario(nodes=nodes, lookups=0, swarms=1, loss=loss, dead=0.0,
                              seed=seed, bootstrap="seeded"))
    sim.prepare()
    rng = random.Random(f"peer-finder-{seed}")
    hashes = [rng.randbytes(20) for _ in range(infohashes)]
    expected = announce_swarms(sim, hashes[:announced], rng, finder.DEFAULT_TIMEOUT)
    silenced = sim.silence(dead)
    order = list(hashes)
    rng.shuffle(order)
    targets = [finder.Target(info_hash, None, f"item {i}") for i, info_hash in enumerate(order)]
    addresses = [0]

    def contacts_for() -> list[tuple[str, int]]:
        return [member.address for member in rng.sample(sim.live.items, 3)]
    run = run_in_simulation(sim.scheduler, batch(sim, finder, targets, contacts_for(),
                                                  next_address(addresses)))
    cold_rows = run_in_simulation(sim.scheduler, cold_lookups(
        sim, finder, rng.sample(hashes[:announced], min(cold, announced)), contacts_for,
        addresses))
    by_hash = {record["infohash"]: record for record in run["records"]}
    found = complete = wrong = expected_swarms = 0
    first_peer = []
    for info_hash in hashes[:announced]:
        peers = expected[info_hash]
        if not peers:
            continue  # no node stored any of its announces
        expected_swarms += 1
        record = by_hash[info_hash.hex()]
        got = set(record["peers"])
        found += bool(got & peers)
        complete += peers <= got
        wrong += len(got - peers)
        if record["time_to_first_peer"] is not None:
            first_peer.append(record["time_to_first_peer"])
    unannounced = [by_hash[h.hex()] for h in hashes[announced:]]
    lookups = len(run["records"])
    return {
        "nodes": nodes, "loss": loss, "dead": dead, "seed": seed, "silenced": silenced,
        "infohashes": infohashes, "announced": announced,
        "announced_with_a_stored_peer": expected_swarms,
        "found": found, "found_share": round(found / max(1, expected_swarms), 4),
        "complete": complete, "complete_share": round(complete / max(1, expected_swarms), 4),
        "wrong_peers": wrong,
        "unannounced_empty": sum(1 for r in unannounced if not r["peers"]),
        "unannounced": len(unannounced),
        "failed": sum(1 for r in run["records"] if r["error"]),
        "queries_per_lookup": round(run["batch_queries"] / max(1, lookups), 2),
        "queries_per_lookup_with_join": round(
            (run["batch_queries"] + run["join_queries"]) / max(1, lookups), 2),
        "cold_get_peers_queries": round(sum(r["total_queries"] for r in cold_rows)
                                        / max(1, len(cold_rows)), 2),
        "cold_get_peers_lookup_queries": round(sum(r["lookup_queries"] for r in cold_rows)
                                               / max(1, len(cold_rows)), 2),
        "lookups_per_virtual_second": round(lookups / run["batch_seconds"], 2),
        "batch_virtual_seconds": round(run["batch_seconds"], 1),
        "join_virtual_seconds": round(run["join_seconds"], 1),
        "time_to_first_peer": {"p50": percentile(first_peer, 0.5),
                               "p90": percentile(first_peer, 0.9),
                               "p99": percentile(first_peer, 0.99)},
        "size_estimate": run["estimate"],
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--infohashes", type=int, default=1000)
    parser.add_argument("--announced", type=int, default=800)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--dead", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cold", type=int, default=20, help="cold single lookups to compare")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a NodeConfig field of the finder's and the cold nodes (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    OVERRIDES[:] = args.set
    if not 0 < args.announced <= args.infohashes:
        parser.error("--announced must be between 1 and --infohashes")
    result = measure(args.nodes, args.infohashes, args.announced, args.loss, args.dead,
                     args.seed, args.cold)
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    print(f"{r['nodes']} nodes, {r['loss']:.0%} loss, {r['dead']:.0%} dead, seed {r['seed']}: "
          f"{r['infohashes']} infohashes, {r['announced']} announced")
    print(f"  announced swarms found     {r['found']}/{r['announced_with_a_stored_peer']} "
          f"({r['found_share']:.2%}), complete {r['complete']} ({r['complete_share']:.2%}), "
          f"wrong peers {r['wrong_peers']}")
    print(f"  unannounced reported empty {r['unannounced_empty']}/{r['unannounced']}; "
          f"failed lookups {r['failed']}")
    print(f"  queries per lookup         {r['queries_per_lookup']} "
          f"({r['queries_per_lookup_with_join']} with the join) vs a cold get_peers "
          f"{r['cold_get_peers_queries']} ({r['cold_get_peers_lookup_queries']} for the "
          f"lookup alone)")
    print(f"  lookups per virtual second {r['lookups_per_virtual_second']} "
          f"({r['batch_virtual_seconds']} virtual s for the batch)")
    print(f"  time to first peer         {r['time_to_first_peer']}")
    print(f"  size estimate              {r['size_estimate']}")
    print(f"  wall time                  {r['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
