"""What a node's bounded stores cost per operation when they are full: microseconds.

    python tools/bench/stores.py

- `ItemStore.put` (BEP 44) of new immutable items into a store already holding `--items`
  (default 1,000, the node's default cap): each put expires what is due and, the store being
  full, drops the item farthest from our id (or the newcomer, when it is the farthest).
- `PeerStore.announce` of new peers into a full swarm (`--peers`, default 500, the node's
  default cap per infohash), and `PeerStore.get_packed` of 50 values from it (a get_peers
  reply's worth).

Best of `--repeat` timings. Prints a table, or JSON with --json. Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from mldht.bep44 import Item, ItemStore
from mldht.peerstore import PeerStore


def _best_us(run, operations: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / operations * 1e6


def measure(items: int = 1000, peers: int = 500, number: int = 5000,
            repeat: int = 3) -> list[dict]:
    """One row per operation: what it is, how many entries the store held, µs each."""
    rng = random.Random(1)
    own_id = rng.randbytes(20)
    rows = []

    values = iter(range(10**9))

    def seconds_for_item_puts() -> float:
        store = ItemStore(max_items=items)
        for _ in range(items):
            store.put(Item.immutable(next(values)), 0.0, own_id)
        # Made before the clock starts: hashing a new item is not the store's cost.
        newcomers = [Item.immutable(next(values)) for _ in range(number)]
        started = time.perf_counter()
        for index, item in enumerate(newcomers):
            store.put(item, 1.0 + index * 1e-3, own_id)
        return time.perf_counter() - started

    best = min(seconds_for_item_puts() for _ in range(repeat))
    rows.append({"operation": "ItemStore.put, full", "stored": items,
                 "us_per_op": best / number * 1e6})

    info_hash = rng.randbytes(20)
    store = PeerStore(max_peers=peers)
    for index in range(peers):
        store.announce(info_hash, (f"10.0.{index // 250}.{index % 250 + 1}", 6881), 0.0)
    addresses = [(f"10.{1 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}", 6881)
                 for n in range(number)]

    def announces() -> None:
        for index, address in enumerate(addresses):
            store.announce(info_hash, address, 1.0 + index * 1e-3)

    rows.append({"operation": "PeerStore.announce, full swarm", "stored": peers,
                 "us_per_op": _best_us(announces, number, repeat)})

    def gets() -> None:
        for _ in range(number):
            store.get_packed(info_hash, 10.0, 50, rng, False)

    rows.append({"operation": "PeerStore.get_packed, 50 values", "stored": peers,
                 "us_per_op": _best_us(gets, number, repeat)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=500)
    parser.add_argument("--number", type=int, default=5000, help="operations per timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.items, args.peers, args.number, args.repeat)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'operation':34} {'stored':>7} {'µs per op':>10}")
    for row in rows:
        print(f"{row['operation']:34} {row['stored']:>7,} {row['us_per_op']:>10.2f}")


if __name__ == "__main__":
    main()
