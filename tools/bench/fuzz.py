"""Mutation fuzzing of a node's receive path with real datagrams from fixtures/*.pcap.

    python tools/bench/fuzz.py --count 1000000 [--seed 1]

Every UDP payload of the captures is a seed. Each fuzzed datagram is a seed mutated by one to
four of: bit flips, byte replacements, deletions, insertions of bencode tokens, truncation,
splicing with another seed, and length-prefix corruption. Each is handed to a live node's
receive path (its datagram handler, with its socket swapped for a recorder, so that replies
are counted and nothing leaves the process), from a random source address. Prints:
datagrams, exceptions that escaped (must be 0), the slowest datagram (a hang would show),
malformed queries with a transaction id and the 203 errors they got, throughput and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from pathlib import Path

import bencodepy

from mldht import DHTNode, NodeConfig
from mldht.capture import read_datagrams
from mldht.errors import KrpcDecodeError
from mldht.krpc import decode_message

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TOKENS = [b"d", b"e", b"l", b"i", b"0:", b"1:t", b"2:aa", b"i-1e", b"i0e", b"ie", b"-",
          b"1:y1:q", b"1:q4:ping", b"1:a", b"le", b"de", b"99999999999:", b"i1e" * 3]
_raw = bencodepy.Bencode(encoding=None)


def seeds() -> list[bytes]:
    payloads = {d.payload for path in sorted(FIXTURES.glob("*.pcap")) for d in read_datagrams(path)}
    return sorted(p for p in payloads if p)


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        if choice == 0 and out:
            position = rng.randrange(len(out))
            out[position] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif choice == 2 and out:
            start = rng.randrange(len(out))
            del out[start:start + rng.randint(1, 8)]
        elif choice == 3:
            position = rng.randint(0, len(out))
            out[position:position] = rng.choice(TOKENS)
        elif choice == 4 and out:
            del out[rng.randrange(len(out)):]
        elif choice == 5:
            other = rng.choice(pool)
            cut, other_cut = rng.randint(0, len(out)), rng.randint(0, len(other))
            out = out[:cut] + bytearray(other[other_cut:])
        else:  # a string length prefix made wrong
            digits = [i for i, byte in enumerate(out) if 0x30 <= byte <= 0x39]
            if digits:
                out[rng.choice(digits)] = rng.choice(b"0123456789-")
    return bytes(out[:2048])


class Recorder:
    """Stands in for the UDP transport: counts what the node sends."""

    def __init__(self) -> None:
        self.sent = 0
        self.errors_203: set[bytes] = set()

    def sendto(self, data: bytes, address) -> None:
        self.sent += 1
        if b"1:y1:e" in data:
            try:
                message = _raw.decode(data)
                if message[b"e"][0] == 203:
                    self.errors_203.add(message[b"t"])
            except Exception:
                pass

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 6881) if name == "sockname" else default

    def close(self) -> None:
        pass


def expects_203(data: bytes) -> bytes | None:
    """The transaction id of a malformed query that BEP 5 says deserves a 203, else None."""
    try:
        decode_message(data)
    except KrpcDecodeError as exc:
        if exc.is_query and exc.transaction_id is not None:
            return exc.transaction_id
    return None


async def fuzz(count: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    pool = seeds()
    config = NodeConfig(inbound_rate=0, reply_bytes_per_second=0, query_timeout=0.5)
    node = DHTNode(("127.0.0.1", 0), bootstrap=[], config=config, rng=random.Random(seed))
    recorder = Recorder()
    await node.start(transport=recorder)  # type: ignore[arg-type]  # the receive path, no socket
    slowest = 0.0
    malformed_queries: dict[bytes, int] = {}
    missing_203 = 0
    started = time.perf_counter()
    try:
        for i in range(count):
            data = mutate(rng.choice(pool), rng, pool)
            source = (f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                      rng.randrange(1, 65536))
            tid = expects_203(data)
            before = len(recorder.errors_203)
            t0 = time.perf_counter()
            node.datagram_received(data, source)
            slowest = max(slowest, time.perf_counter() - t0)
            if tid is not None:
                malformed_queries[tid] = malformed_queries.get(tid, 0) + 1
                if tid not in recorder.errors_203 and len(recorder.errors_203) == before:
                    missing_203 += 1
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let verification pings and timeouts run
        elapsed = time.perf_counter() - started
    finally:
        await node.close()
    stats = node.stats
    return {
        "datagrams": count, "seeds": len(pool), "seconds": round(elapsed, 1),
        "per_second": round(count / elapsed), "escaped_exceptions": stats.receive_path_failures,
        "slowest_ms": round(slowest * 1000, 2),
        "malformed_queries_with_tid": sum(malformed_queries.values()),
        "malformed_queries_without_203": missing_203,
        "decoded_queries": sum(stats.queries_received.values()),
        "malformed": stats.malformed_received, "sent": recorder.sent,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(fuzz(args.count, args.seed))
    print(json.dumps(result, indent=1))
    sys.exit(1 if result["escaped_exceptions"] or result["malformed_queries_without_203"] else 0)


if __name__ == "__main__":
    main()
