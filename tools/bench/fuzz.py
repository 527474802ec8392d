"""Mutation fuzzing of a node's receive path with real datagrams from fixtures/*.pcap.

    python tools/bench/fuzz.py --count 1000000 [--seed 1] [--compare] [--asan]

Every UDP payload of the captures is a seed. Each fuzzed datagram is a seed mutated by one to
four of: bit flips, byte replacements, deletions, insertions of bencode tokens, truncation,
splicing with another seed, and length-prefix corruption. Each is handed to a live node's
receive path (its datagram handler, with its socket swapped for a recorder, so that replies
are counted and nothing leaves the process), from a random source address. Prints:
datagrams, exceptions that escaped (must be 0), the slowest datagram (a hang would show),
malformed queries with a transaction id and the 203 errors they got, throughput and RSS.

`--compare` hands each mutant instead to two sans-I/O engines, one with the native codec
(mldht/native.py) and one without, alike in everything else (ids, secrets, table), and
counts the datagrams after which they sent different bytes (must be 0). `--asan` first
builds the native codec with AddressSanitizer and UndefinedBehaviorSanitizer (gcc) into a
temporary copy of the package and runs the comparison on it in a child process: a read out
of bounds or undefined behaviour ends the run with the sanitizer's report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import bencodepy

import mldht
from mldht import DHTNode, NodeConfig, NodeId, NodeInfo, native
from mldht.capture import read_datagrams
from mldht.engine.core import Engine
from mldht.errors import KrpcDecodeError
from mldht.krpc import decode_message, response_from_fields

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
NATIVE_SOURCE = Path(__file__).resolve().parents[2] / "native" / "krpc.c"
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


def _decoded(data: bytes):
    try:
        return _raw.decode(data)
    except Exception:
        return None


def plain_queries(rng: random.Random, count: int) -> list[bytes]:
    """Plain ping, find_node and get_peers queries (the native codec's forms), varied."""
    made = []
    for _ in range(count):
        method = rng.choice([b"ping", b"find_node", b"get_peers"])
        arguments = {b"id": rng.randbytes(20)}
        if method != b"ping":
            arguments[b"target" if method == b"find_node" else b"info_hash"] = rng.randbytes(20)
        message = {b"t": rng.randbytes(rng.choice([0, 1, 2, 4, 8, 64, 65])), b"y": b"q",
                   b"q": method, b"a": arguments}
        if rng.random() < 0.5:
            message[b"v"] = rng.randbytes(rng.choice([0, 4, 40]))
        if rng.random() < 0.3:
            message[b"ro"] = rng.choice([0, 1, 2])
        made.append(_raw.encode(message))
    return made


def twin_engines(seed: int) -> list[Engine]:
    """Two engines alike in ids, secrets and table: the first with the native codec, the
    second without."""
    engines = []
    for native_parts in (True, False):
        rng = random.Random(seed)
        engine = Engine(0.0, families=("ipv4", "ipv6"), rng=rng, native_parts=native_parts,
                        config=NodeConfig(inbound_rate=0, reply_bytes_per_second=0,
                                          query_timeout=0.5),
                        node_ids={"ipv4": rng.randbytes(20), "ipv6": rng.randbytes(20)})
        fill = random.Random(seed + 1)
        for n in range(400):
            family = engine.families[n % 2]
            ip = f"2001:db8:5::{n + 1:x}" if family.ipv6 else f"10.5.{n // 200}.{n % 200 + 1}"
            family.table.heard_from(NodeInfo(NodeId(fill.randbytes(20)), ip, 6881), 0.0,
                                    responded=n % 5 != 0, rtt=fill.random())
        engines.append(engine)
    return engines


def compare(count: int, seed: int = 1) -> dict:
    """Each mutant through twin engines (with and without the native codec): how many
    made them send different bytes or report different results. One in four is a reply to
    a query both engines just sent (a captured reply under that query's transaction id,
    then mutated), so that the reply reader's answers reach an operation."""
    rng = random.Random(seed)
    pool = seeds() + plain_queries(rng, 600)  # so that many mutants stay close to plain
    captured_replies = [value for value in (_decoded(d) for d in seeds())
                        if type(value) is dict and value.get(b"y") == b"r"]
    engines = twin_engines(seed)
    codec = native.module("_krpc")  # what the first twin reads with
    if codec is None or engines[0].native_parts is False:
        raise SystemExit("fuzz: no native codec to compare (mldht.native.module('_krpc') is "
                         "None: not built, or MLDHT_NATIVE=0)")
    now, read_natively, replies_read, differences, example = 0.0, 0, 0, 0, None
    started = time.perf_counter()
    for i in range(count):
        source = ((f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                   if rng.random() < 0.8 else f"2001:db8:{rng.randrange(65536):x}::1"),
                  rng.randrange(1, 65536))
        now += 0.001
        if i % 4 == 3 and captured_replies:
            for engine in engines:
                engine.start_ping(source, now, timeout=0.5)
            sent = [engine.datagrams_to_send(now) for engine in engines]
            reply = dict(rng.choice(captured_replies))
            reply[b"t"] = _decoded(sent[0][-1][0])[b"t"] if sent[0] else b"xx"
            data = mutate(_raw.encode(reply), rng, pool) if rng.random() < 0.7 \
                else _raw.encode(reply)
        else:
            data = mutate(rng.choice(pool), rng, pool)
        read_natively += codec.parse_plain_query(data) is not None
        fields = codec.parse_reply(data)
        if fields is not None:
            replies_read += 1
            try:  # the same Response as Python's decoder makes, field for field
                same = response_from_fields(fields) == decode_message(data)
            except KrpcDecodeError:
                same = False
            if not same:
                differences += 1
                example = example or {"datagram": data.hex(), "reply": True}
        sent = []
        for engine in engines:
            engine.receive_datagram(data, source, now)
            if i % 500 == 499:
                engine.handle_timer(now)  # verification pings expire, tokens rotate
            sent.append((engine.datagrams_to_send(now),
                         [repr(event) for event in iter(engine.next_event, None)]))
        if sent[0] != sent[1]:
            differences += 1
            example = example or {"datagram": data.hex(), "source": source}
    elapsed = time.perf_counter() - started
    return {"datagrams": count, "seeds": len(pool), "seconds": round(elapsed, 1),
            "read_natively": read_natively, "replies_read_natively": replies_read,
            "differences": differences, "example": example,
            "escaped_exceptions": sum(e.stats.receive_path_failures for e in engines),
            "answered": [sum(e.stats.queries_received.values()) for e in engines],
            "codec": codec.__file__}


def asan_build(directory: Path) -> Path:
    """A copy of the mldht package in `directory` whose native codec is built with ASan and
    UBSan; returns the sanitizer runtime to preload."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise SystemExit("fuzz: --asan needs gcc")
    package = directory / "mldht"
    shutil.copytree(Path(mldht.__file__).resolve().parent, package,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run([compiler, "-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-I{sysconfig.get_paths()['include']}", str(NATIVE_SOURCE),
                    "-o", str(package / f"_krpc{suffix}")], check=True)
    runtime = subprocess.run([compiler, "-print-file-name=libasan.so"], check=True,
                             capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(runtime):
        raise SystemExit("fuzz: gcc has no libasan here (Debian: libasan8)")
    return Path(runtime)


def compare_under_asan(count: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mldht-asan-") as temporary:
        runtime = asan_build(Path(temporary))
        env = dict(os.environ, PYTHONPATH=temporary, LD_PRELOAD=str(runtime),
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1", MLDHT_NATIVE="1")
        child = subprocess.run([sys.executable, __file__, "--compare", "--count", str(count),
                                "--seed", str(seed)], env=env, capture_output=True, text=True,
                               timeout=3600)
        if child.returncode != 0 or not child.stdout.strip():
            raise SystemExit(f"fuzz: the sanitized run failed ({child.returncode}):\n"
                             f"{child.stderr[-4000:]}")
        result = json.loads(child.stdout)
        result["sanitized"] = result["codec"].startswith(temporary)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compare", action="store_true",
                        help="the same mutants through a node with and one without the "
                        "native codec: the same bytes out")
    parser.add_argument("--asan", action="store_true",
                        help="--compare with the native codec built with ASan and UBSan")
    args = parser.parse_args()
    if args.asan or args.compare:
        result = (compare_under_asan if args.asan else compare)(args.count, args.seed)
        print(json.dumps(result, indent=1))
        sys.exit(1 if result["differences"] or result["escaped_exceptions"] else 0)
    result = asyncio.run(fuzz(args.count, args.seed))
    print(json.dumps(result, indent=1))
    sys.exit(1 if result["escaped_exceptions"] or result["malformed_queries_without_203"] else 0)


if __name__ == "__main__":
    main()
