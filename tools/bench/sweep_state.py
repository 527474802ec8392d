"""The crawler's bookkeeping alone, without a network: microseconds and bytes per node as a
sweep learns N nodes, one referral each, the way issue 21 measured it (`Sweep.learn`), and
with the walk's own work per node on top (taking it from the frontier, choosing its
target, covering the stretch its reply would show).

    python tools/bench/sweep_state.py [--sizes 100000,400000,1600000] [--walk] [--json]

Each size runs in a fresh process (so that one size's memory does not count in the next);
prints per size: microseconds per node (CPU time of this process), bytes per node (the
growth of the resident set from before the sweep to after it, the test's own node objects
made and dropped in chunks), and the peak RSS. Linear cost means the microseconds stay flat
as N grows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS.parent))


def _resident() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(count: int, walk: bool, seed: int = 1) -> dict:
    from crawling.keyspace import key64
    from crawling.traversal import Sweep
    from mldht.compact import NodeInfo
    from mldht.ids import NodeId

    class Quiet:
        addresses: list = []

    rng = random.Random(seed)
    before = _resident()
    sweep = Sweep(Quiet(), 1)
    started = time.process_time()
    chunk = 10_000
    referrer = None
    for first in range(0, count, chunk):
        # The nodes of each chunk are made here and dropped after: only the sweep keeps.
        infos = [NodeInfo(NodeId(rng.randbytes(20)),
                          f"{(i >> 24) % 223 + 1}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                          6881) for i in range(first, min(count, first + chunk))]
        for info in infos:
            sweep.learn(info, referrer)
            referrer = 0 if referrer is None else referrer
        if walk:
            # The walk's share: take each node, choose where to ask it about, cover what
            # its reply would cover (the stretch to the next node).
            while True:
                number = sweep.next_visit()
                if number is None:
                    break
                key = key64(sweep.table.node_id(number))
                target, claim = sweep.frontier_target(key)
                following = sweep.keys.after(key)
                sweep.cover(key, following[0] if following else (1 << 64) - 1)
                sweep.claimed.discard(claim)
    elapsed = time.process_time() - started
    held = _resident() - before
    return {"nodes": count, "walk": walk, "microseconds_per_node": round(1e6 * elapsed / count, 2),
            "bytes_per_node": round(held / count, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "found": sum(sweep.stats.found.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sweep_state.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,400000,1600000")
    parser.add_argument("--walk", action="store_true", help="the walk's work per node too")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.walk)))
        return 0
    results = []
    for size in (int(x) for x in args.sizes.split(",")):
        command = [sys.executable, __file__, "--one", str(size)] + (["--walk"] if args.walk else [])
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output))
        if not args.json:
            r = results[-1]
            print(f"{r['nodes']:>10,} nodes: {r['microseconds_per_node']:6.2f} us/node, "
                  f"{r['bytes_per_node']:6.1f} bytes/node held, peak RSS {r['peak_rss_mib']:,} MiB",
                  flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
