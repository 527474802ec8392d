"""The engine's cost per datagram, without sockets: what a serving node pays for each plain
query and what a crawler pays for each exchange, side by side with and without the native
codec, and against another checkout.

    python tools/bench/engine_path.py [--queriers 2000] [--seconds 1] [--repeat 5]
        [--baseline DIR] [--json]

- `ping`, `find_node`, `get_peers`: an `Engine` (limits off) whose table holds 8 nodes in
  each of its 20 first buckets receives plain queries from `--queriers` addresses, each
  with its own id (as a public node hears from many nodes), in batches of 64, and the
  replies are taken (`datagrams_to_send`): the quick path and the querier's bookkeeping.
- `exchange`: the crawler's side: a find_node query to a node never heard from, and its
  8-node reply taken in (the transaction, the decode, the table hearing from it).

Each figure is the best of `--repeat` timings of about `--seconds` of CPU time, in µs per
query (per exchange). Rows: this checkout with the native codec (`native`), without it
(`pure`, `Engine(native_parts=False)`), and `--baseline DIR`'s mldht package (run in a
child process with that directory first on its path). Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ids_at_depths  # noqa: E402  (the same seeded table as the serving bench)

KINDS = ("ping", "find_node", "get_peers", "exchange")


def _engine(native_parts: bool):
    from mldht import NodeConfig, NodeId, NodeInfo
    from mldht.engine.core import Engine
    rng = random.Random(7)
    config = NodeConfig(inbound_rate=0, reply_bytes_per_second=0, query_rate=0,
                        per_ip_query_rate=0)
    try:
        engine = Engine(0.0, config=config, node_ids={"ipv4": rng.randbytes(20)},
                        native_parts=native_parts)
    except TypeError:  # an mldht from before the native codec
        engine = Engine(0.0, config=config, node_ids={"ipv4": rng.randbytes(20)})
    table = engine.families[0].table
    for index, (depth, node_id) in enumerate(ids_at_depths(table.own_id, 20, 8, rng)):
        table.heard_from(NodeInfo(NodeId(node_id), f"198.{18 + index % 2}.{depth}.{index % 250 + 1}",
                                  6881), 0.0, responded=True)
    return engine


def _queries(kind: str, queriers: int) -> list[list[tuple[bytes, tuple]]]:
    from mldht.krpc import encode_bencode
    rng = random.Random(11)
    ids = [rng.randbytes(20) for _ in range(queriers)]
    sources = [(f"{1 + n % 200}.{n // 200 % 250}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                1024 + n) for n in range(queriers)]
    batches = []
    for b in range(max(1, queriers // 64) * 4):
        batch = []
        for j in range(64):
            n = (b * 64 + j) % queriers
            arguments = {b"id": ids[n]}
            if kind == "find_node":
                arguments[b"target"] = rng.randbytes(20)
            elif kind == "get_peers":
                arguments[b"info_hash"] = rng.randbytes(20)
            batch.append((encode_bencode({b"t": (b * 64 + j).to_bytes(2, "big"), b"y": b"q",
                                          b"q": kind.encode(), b"a": arguments,
                                          b"v": b"LT\x02\x01"}), sources[n]))
        batches.append(batch)
    return batches


def _serving(kind: str, native_parts: bool, queriers: int, seconds: float) -> float:
    engine = _engine(native_parts)
    batches = _queries(kind, queriers)
    now, done, spent = 1.0, 0, 0.0
    while spent < seconds:
        started = time.process_time()
        for batch in batches:
            now += 0.001
            engine.receive_datagrams(batch, now)
            engine.datagrams_to_send(now)
        spent += time.process_time() - started
        done += sum(len(batch) for batch in batches)
    return spent / done * 1e6


def _exchanges(native_parts: bool, seconds: float) -> float:
    from mldht import NodeId
    from mldht.krpc import FindNode, decode_datagram, encode_bencode
    engine = _engine(native_parts)
    rng = random.Random(3)
    nodes = b"".join(rng.randbytes(20) + bytes([1, 2, rng.randrange(256), rng.randrange(1, 255),
                                                0x1A, 0xE1]) for _ in range(8))
    count = 4000
    bodies = [{b"id": rng.randbytes(20), b"nodes": nodes} for _ in range(count)]
    targets = [NodeId(rng.randbytes(20)) for _ in range(count)]
    now, done, spent, serial = 1.0, 0, 0.0, 0
    while spent < seconds:
        addresses = [(f"{1 + (serial + n) % 200}.{(serial + n) // 200 % 250}."
                      f"{(serial + n) // 50000 % 250}.{n % 250 + 1}", 6881) for n in range(count)]
        serial += count
        started = time.process_time()
        for n in range(count):
            now += 0.0001
            engine.start_query(addresses[n], FindNode(transaction_id=b"", sender_id=engine.node_id,
                                                      target=targets[n]), now)
            for data, destination in engine.datagrams_to_send(now):
                reply = {b"t": decode_datagram(data)[b"t"], b"y": b"r", b"r": bodies[n]}
                engine.receive_datagram(encode_bencode(reply), destination, now + 0.00005)
            while engine.next_event() is not None:
                pass
        spent += time.process_time() - started
        done += count
    return spent / done * 1e6


def measure(kinds, native_parts: bool, queriers: int, seconds: float, repeat: int) -> dict:
    result = {}
    for kind in kinds:
        runs = [(_exchanges(native_parts, seconds) if kind == "exchange"
                 else _serving(kind, native_parts, queriers, seconds)) for _ in range(repeat)]
        result[kind] = round(min(runs), 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--queriers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", metavar="DIR",
                        help="also measure the mldht package of this checkout (pure only "
                        "where it has no native codec)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("native", "pure"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        parser.error(f"unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    if args.child:
        print(json.dumps(measure(kinds, args.child == "native", args.queriers, args.seconds,
                                 args.repeat)))
        return 0
    rows = {"native": measure(kinds, True, args.queriers, args.seconds, args.repeat),
            "pure": measure(kinds, False, args.queriers, args.seconds, args.repeat)}
    if args.baseline:
        tree = str(Path(args.baseline).resolve())
        child = subprocess.run(
            [sys.executable, __file__, "--child", "native", "--kinds", ",".join(kinds),
             "--queriers", str(args.queriers), "--seconds", str(args.seconds), "--repeat",
             str(args.repeat)], env=dict(os.environ, PYTHONPATH=tree), capture_output=True,
            text=True, check=False, cwd=tree)
        if child.returncode != 0:
            print(f"engine_path.py: the baseline failed: {child.stderr[-1000:]}", file=sys.stderr)
            return 2
        rows["baseline"] = json.loads(child.stdout)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'µs per query (exchange)':24}" + "".join(f"{kind:>11}" for kind in kinds))
    for name, row in rows.items():
        print(f"{name:24}" + "".join(f"{row[kind]:>11.2f}" for kind in kinds))
    for name in [name for name in ("pure", "baseline") if name in rows]:
        print(f"{name + ' / native':24}" + "".join(
            f"{rows[name][kind] / rows['native'][kind]:>11.2f}" for kind in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
