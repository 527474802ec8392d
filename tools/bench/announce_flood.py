"""Announce flood: N announce_peer queries with valid tokens against an `mldht serve` process.

    python tools/bench/announce_flood.py --announces 1000000

The node runs as its own process (`mldht serve` on 127.0.0.1, default limits, a bootstrap
address that leads nowhere) so that its memory is measured alone. The flood comes from many
loopback source addresses (127.x.y.z, each used for 25 announces so that the node's per-IP
limit of a burst of 50 datagrams is never hit): get_peers for a random infohash to get a
token, then announce_peer with it. Prints the node's RSS before and after, announces
accepted, how many datagrams went unanswered, and whether it still answers a ping.
Every packet goes to 127.0.0.1; the run is bounded by --announces and --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bencodepy

CODEC = bencodepy.Bencode(encoding=None)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from krpcio import exchange  # noqa: E402
PER_SOURCE = 25


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def source_ip(index: int) -> str:
    index += 1
    return f"127.{1 + index // 65000}.{(index // 250) % 260 % 256}.{index % 250 + 1}"


def flood(announces: int, max_seconds: float) -> dict:
    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "mldht", "serve", "--bind", f"127.0.0.1:{port}",
         "--bootstrap", "127.0.0.1:9", "--stats-interval", "3600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = ("127.0.0.1", port)
    result: dict = {"announces_asked": announces}
    try:
        ping = {b"t": b"pp", b"y": b"q", b"q": b"ping", b"a": {b"id": b"P" * 20}}
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        for _ in range(50):
            if exchange(probe, [ping], target, 0.2):
                break
        time.sleep(0.5)
        result["rss_before_mib"] = rss_mib(node.pid)
        accepted = unanswered = sent = 0
        started = time.monotonic()
        source = 0
        while sent < announces and time.monotonic() - started < max_seconds:
            batch = min(PER_SOURCE, announces - sent)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source_ip(source), 0))
                source += 1
                hashes = [os.urandom(20) for _ in range(batch)]
                asks = [{b"t": i.to_bytes(2, "big"), b"y": b"q", b"q": b"get_peers",
                         b"a": {b"id": b"S" * 20, b"info_hash": h}} for i, h in enumerate(hashes)]
                tokens = exchange(sock, asks, target)
                announce = []
                for i, h in enumerate(hashes):
                    reply = tokens.get(i.to_bytes(2, "big"))
                    token = reply.get(b"r", {}).get(b"token") if reply else None
                    if token is None:
                        unanswered += 1
                        continue
                    announce.append({b"t": (1000 + i).to_bytes(2, "big"), b"y": b"q",
                                     b"q": b"announce_peer",
                                     b"a": {b"id": b"S" * 20, b"info_hash": h, b"port": 6881,
                                            b"token": token}})
                replies = exchange(sock, announce, target)
                accepted += sum(1 for r in replies.values() if r.get(b"y") == b"r")
                unanswered += len(announce) - len(replies)
                sent += batch
            if source % 4000 == 0:
                result.setdefault("rss_during_mib", []).append(rss_mib(node.pid))
        elapsed = time.monotonic() - started
        result.update(announces_sent=sent, accepted=accepted, unanswered=unanswered,
                      source_addresses=source, seconds=round(elapsed, 1),
                      announces_per_second=round(sent / elapsed))
        result["rss_after_mib"] = rss_mib(node.pid)
        result["still_answers_ping"] = bool(exchange(probe, [ping], target, 2.0))
        probe.close()
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--announces", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()
    print(json.dumps(flood(args.announces, args.max_seconds), indent=1))


if __name__ == "__main__":
    main()
