"""The crawler's own code on the simulator, where the truth is known.

    python tools/bench/crawl.py --nodes N --dead F --nat F --churn F --seed S [--sweeps 1]
        [--rate Q] [--json]

Builds a simulated DHT (mldht.sim: real engines on a virtual network, lognormal latency with
a median of 100 ms one way; routing tables seeded, `--nat` of the nodes behind a NAT, then
`--dead` of them silenced while they stay in others' tables), then runs tools/crawler.py's
`Crawler` (tools/crawling/) on a read-only `mldht.Node` attached to the virtual network, in
virtual time, into a SQLite database in a temporary folder; `--churn` replaces that share of
the nodes a minute during the crawl. Prints one JSON object (`--json`) or a table with:
`reachable` (live nodes not behind a NAT at the end), `alive` (all live nodes), `found`
(distinct nodes that answered the crawler), `listed` (nodes it learned of), `share_found`
(found / reachable), `queries_per_node` (queries sent per node found), `virtual_seconds` (of
the sweeps), and `estimates`: `{name, value, low, high, counts, error}` per estimate of the
last sweep, `error` being (value - truth) / truth against the count it estimates. No socket
is opened.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOOLS))

from mldht import Node, NodeConfig  # noqa: E402
from mldht.sim import Scenario  # noqa: E402
from mldht.sim.aio import attach_node, run_in_simulation  # noqa: E402
from mldht.sim.scenario import Simulation  # noqa: E402

from crawling.crawl import CrawlOptions, CrawlResult, Crawler  # noqa: E402
from crawling.estimates import combine_parts  # noqa: E402
from crawling.store import CrawlStore  # noqa: E402

CRAWLER_ADDRESS = ("100.64.0.1", 6881)
CRAWL_GAP = 600.0
"""Virtual seconds between the crawls of `--crawls`."""


def truth(sim: Simulation) -> dict:
    live = sim.live.items
    reachable = sum(1 for member in live if not member.nat)
    return {"alive": len(live), "reachable": reachable}


async def crawl(sim: Simulation, options: CrawlOptions, rate: float, db: str,
                contacts: list, crawls: int = 1, partitions: int = 1) -> dict:
    """`crawls` crawls one after another; each made by `partitions` crawlers at once (each
    its own node and address, `--partition I/N` of one labelled crawl) into `db`."""
    config = NodeConfig.from_overrides({"query_rate": rate, "per_ip_query_rate": 2.0,
                                        "per_ip_query_burst": 10.0})
    nodes = []
    for index in range(partitions):
        address = (CRAWLER_ADDRESS[0][:-1] + str(1 + index), CRAWLER_ADDRESS[1])
        node = Node(address, bootstrap=contacts, clock=lambda: sim.scheduler.now,
                    read_only=True, config=config, rng=random.Random(1 + index))
        await attach_node(node, sim.network, address)
        nodes.append(node)
    await asyncio.gather(*(node.bootstrap() for node in nodes))
    store = await CrawlStore.open(db)
    done = [False]
    sim.start_churn(lambda: done[0], longest=7200.0 * crawls)
    started = sim.scheduler.now
    results = []
    for number in range(crawls):
        if number:
            await asyncio.sleep(CRAWL_GAP)  # virtual time: the network churns meanwhile
            started = sim.scheduler.now
        label = f"bench-{number}-{random.Random().getrandbits(32):08x}" if partitions > 1 \
            else None
        crawl_id = await store.begin_crawl({"bench": True, "rate": rate,
                                            "partition": partitions > 1 or None}, "bench",
                                           label=label)
        crawlers = []
        for index, node in enumerate(nodes):
            part_options = dataclasses.replace(
                options, partition=(index, partitions) if partitions > 1 else None)
            if partitions > 1:
                await store.claim_part(crawl_id, index, partitions, resume=False)
            crawlers.append(Crawler(node, store, crawl_id, part_options,
                                    clock=lambda: sim.scheduler.now,
                                    rng=random.Random(2 + number + 100 * index)))
        results = await asyncio.gather(*(crawler.run() for crawler in crawlers))
        for index, result in enumerate(results):
            await store.end_crawl(crawl_id, "complete", result.sweeps_done,
                                  part=index if partitions > 1 else None)
    done[0] = True
    elapsed = sim.scheduler.now - started
    found = {row[0] for row in await store.fetch(
        "SELECT DISTINCT ip FROM visits WHERE outcome='answered' AND crawl=?", crawl_id)}
    (listed,), = await store.fetch("SELECT COUNT(DISTINCT ip) FROM contacts WHERE crawl=?",
                                   crawl_id)
    await store.close()
    queries = sum(node.stats.queries_sent for node in nodes)
    for node in nodes:
        await node.close()
    return {"result": results[0] if partitions == 1 else combined(results), "found": len(found),
            "listed": listed, "queries": queries / crawls, "virtual_seconds": elapsed}


def combined(results: list) -> object:
    """The estimates of N partitions' crawls as one crawl's (tools/crawling/estimates.py)."""
    merged = CrawlResult(sweeps_done=min(r.sweeps_done for r in results))
    for sweep in range(merged.sweeps_done):
        merged.estimates.append(combine_parts([r.estimates[sweep] for r in results]))
    return merged


def measure(nodes: int, dead: float, nat: float, churn: float, seed: int, sweeps: int = 1,
            rate: float = 500.0, estimate_lookups: int = 16, crawls: int = 1,
            keep_db: str | None = None, partitions: int = 1) -> dict:
    wall = time.perf_counter()
    sim = Simulation(Scenario(nodes=nodes, lookups=0, swarms=1, dead=0.0, nat=nat,
                              churn=churn, seed=seed, bootstrap="seeded"))
    sim.prepare()
    sim.silence(dead)
    rng = random.Random(f"crawl-{seed}")
    contacts = [member.address for member in rng.sample(
        [m for m in sim.live.items if not m.nat], 3)]
    options = CrawlOptions(sweeps=sweeps, concurrency=256, timeout=3.0,
                           estimate_lookups=estimate_lookups)
    with tempfile.TemporaryDirectory(prefix="mldht-crawl-bench-") as folder:
        db = keep_db or str(Path(folder) / "crawl.sqlite")
        run = run_in_simulation(sim.scheduler, crawl(sim, options, rate, db, contacts,
                                                     crawls, partitions))
    true = truth(sim)
    estimates = []
    for estimate in run["result"].estimates[-1] if run["result"].estimates else []:
        row = estimate.as_dict()
        target = true.get(row["counts"])
        row["error"] = None if target is None or row["value"] is None else round(
            (row["value"] - target) / target, 4)
        row["covers_truth"] = None if target is None or row["low"] is None or \
            row["high"] is None else row["low"] <= target <= row["high"]
        estimates.append(row)
    return {
        "nodes": nodes, "dead": dead, "nat": nat, "churn": churn, "seed": seed,
        "partitions": partitions,
        "sweeps": run["result"].sweeps_done, "rate": rate,
        **true, "found": run["found"], "listed": run["listed"],
        "share_found": round(run["found"] / max(1, true["reachable"]), 4),
        "queries": run["queries"],
        "queries_per_node": round(run["queries"] / max(1, run["found"]), 3),
        "virtual_seconds": round(run["virtual_seconds"], 1),
        "churned": sim.churned(),
        "estimates": estimates,
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--dead", type=float, default=0.2)
    parser.add_argument("--nat", type=float, default=0.2)
    parser.add_argument("--churn", type=float, default=0.0,
                        help="share of the nodes replaced per virtual minute during the crawl")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", metavar="A-B",
                        help="one run per seed from A to B, then how often each estimate's "
                             "interval covered the truth and its mean error")
    parser.add_argument("--sweeps", type=int, default=1)
    parser.add_argument("--rate", type=float, default=500.0, help="crawler queries per second")
    parser.add_argument("--crawls", type=int, default=1,
                        help=f"crawls one after another, {CRAWL_GAP:g} virtual s apart (churn "
                             f"between crawls; the figures are the last crawl's)")
    parser.add_argument("--partitions", type=int, default=1, metavar="N",
                        help="N crawlers at once, each its own node, one crawl split by "
                             "--partition I/N (the estimates combined as the report does)")
    parser.add_argument("--db", metavar="PATH|URL",
                        help="keep the crawl database here (for the report): a SQLite path "
                             "or postgresql://...")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds:
        first, _, last = args.seeds.partition("-")
        return many(args, range(int(first), int(last or first) + 1))
    result = measure(args.nodes, args.dead, args.nat, args.churn, args.seed, args.sweeps,
                     args.rate, crawls=args.crawls, keep_db=args.db,
                     partitions=args.partitions)
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    crawlers = f" by {r['partitions']} crawlers" if r["partitions"] > 1 else ""
    print(f"{r['nodes']} nodes, {r['dead']:.0%} dead, {r['nat']:.0%} behind NAT, churn "
          f"{r['churn']:.0%}/min, seed {r['seed']}, {r['sweeps']} sweep(s) at {r['rate']:g} q/s"
          f"{crawlers}")
    print(f"  reachable {r['reachable']}, alive {r['alive']}; found {r['found']} "
          f"({r['share_found']:.2%} of reachable), listed {r['listed']}")
    print(f"  queries per node found {r['queries_per_node']}, sweep {r['virtual_seconds']} "
          f"virtual s, wall {r['wall_seconds']} s, churned {r['churned']}")
    for e in r["estimates"]:
        interval = "" if e["low"] is None or e["high"] is None else \
            f" [{e['low']:.0f}, {e['high']:.0f}]"
        error = "" if e["error"] is None else f", error {e['error']:+.2%}"
        print(f"  {e['name']:<42} {e['value']}{interval} ({e['counts']}{error})")
    return 0


def many(args, seeds) -> int:
    runs = []
    for seed in seeds:
        result = measure(args.nodes, args.dead, args.nat, args.churn, seed, args.sweeps,
                         args.rate, partitions=args.partitions)
        runs.append(result)
        if not args.json:
            print(f"seed {seed}: found {result['share_found']:.2%} of {result['reachable']} "
                  f"reachable, {result['queries_per_node']} queries per node; " + "; ".join(
                      f"{e['name']} {e['error']:+.2%}{' covers' if e['covers_truth'] else ''}"
                      for e in result["estimates"] if e["error"] is not None), flush=True)
    names = [e["name"] for e in runs[0]["estimates"] if e["error"] is not None]
    summary = {"runs": len(runs), "nodes": args.nodes,
               "share_found_min": min(r["share_found"] for r in runs),
               "share_found_mean": round(sum(r["share_found"] for r in runs) / len(runs), 4),
               "queries_per_node_mean": round(sum(r["queries_per_node"] for r in runs)
                                              / len(runs), 3),
               "estimates": {}}
    for name in names:
        rows = [e for r in runs for e in r["estimates"] if e["name"] == name]
        covered = [e["covers_truth"] for e in rows if e["covers_truth"] is not None]
        summary["estimates"][name] = {
            "mean_abs_error": round(sum(abs(e["error"]) for e in rows) / len(rows), 4),
            "within_5_percent": sum(abs(e["error"]) <= 0.05 for e in rows),
            "interval_covers_truth": sum(covered) if covered else None,
            "runs": len(rows)}
    if args.json:
        print(json.dumps({"summary": summary, "runs": runs}))
    else:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
