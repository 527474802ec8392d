"""The status page under load: does HTTP slow the DHT node it runs beside?

    python tools/bench/http_load.py [--clients 200] [--seconds 15] [--dht-rate 200]
                                    [--poll-interval 1] [--json]

Starts `mldht serve --http 127.0.0.1:0` in its own process (pinned to core 0 when taskset
is there), then measures the node's DHT reply latency: `--dht-rate` read-only pings a second
from `--sources` loopback addresses (127.0.9.x, each under the node's per-IP limit), every
reply's round trip timed. Four phases of `--seconds` each, in one run: without HTTP load;
with `--clients` concurrent HTTP clients (one keep-alive connection each, in a separate
process pinned to core 1) requesting `/api/status` and `/metrics` in turn as fast as they
are answered (saturating); the same clients each polling once every `--poll-interval`
seconds (what 200 open status pages do); and without again. Prints, per phase, the DHT
reply latency (p50, p90, p99, max) and losses; for the loaded phases, HTTP requests per
second, HTTP errors and HTTP latency. Everything goes to 127.0.0.0/8; the child processes are stopped by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bencodepy

CODEC = bencodepy.Bencode(encoding=None)
NODE_IP = "127.0.8.1"
REPO = Path(__file__).resolve().parents[2]

HTTP_CLIENTS = r'''
import asyncio, json, sys, time
import aiohttp

async def main(base, clients, seconds, interval):
    statuses, latencies = {}, []
    deadline = time.monotonic() + seconds
    async def client(index):
        paths = ["/api/status", "/metrics"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            turn = index
            while time.monotonic() < deadline:
                path = paths[turn % 2]
                turn += 1
                started = time.monotonic()
                try:
                    async with session.get(base + path, timeout=aiohttp.ClientTimeout(total=30)) as r:
                        await r.read()
                        key = str(r.status)
                except Exception as error:
                    key = type(error).__name__
                latencies.append(time.monotonic() - started)
                statuses[key] = statuses.get(key, 0) + 1
                if interval:
                    await asyncio.sleep(max(0.0, started + interval - time.monotonic()))
    began = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - began
    print(json.dumps({"statuses": statuses, "latencies": latencies, "elapsed": elapsed}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
'''


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_summary(values: list[float]) -> dict:
    def ms(value):
        return None if value is None else round(value * 1000, 3)
    return {"count": len(values), "p50_ms": ms(percentile(values, 0.5)),
            "p90_ms": ms(percentile(values, 0.9)), "p99_ms": ms(percentile(values, 0.99)),
            "max_ms": ms(max(values) if values else None)}


def pinned(command: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *command]
    return command


def free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


class Prober(asyncio.DatagramProtocol):
    """Read-only pings from many loopback sources; the round trip of each reply."""

    def __init__(self) -> None:
        self.sent: dict[bytes, float] = {}
        self.rtts: list[float] = []

    def datagram_received(self, data: bytes, addr) -> None:
        now = time.perf_counter()
        try:
            message = CODEC.decode(data)
        except Exception:
            return
        started = self.sent.pop(message.get(b"t", b""), None)
        if started is not None and message.get(b"y") == b"r":
            self.rtts.append(now - started)


async def probe(node: tuple[str, int], sources: int, rate: float, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    prober = Prober()
    transports = []
    for index in range(sources):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: prober, local_addr=(f"127.0.9.{index + 1}", 0))
        transports.append(transport)
    sender_id = os.urandom(20)
    sent = 0
    started = loop.time()
    try:
        while loop.time() - started < seconds:
            tid = sent.to_bytes(4, "big")
            query = CODEC.encode({b"t": tid, b"y": b"q", b"q": b"ping", b"ro": 1,
                                  b"a": {b"id": sender_id}})
            prober.sent[tid] = time.perf_counter()
            transports[sent % sources].sendto(query, node)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - loop.time()))
        await asyncio.sleep(1.0)  # the last replies
    finally:
        for transport in transports:
            transport.close()
    return {"sent": sent, "lost": sent - len(prober.rtts), **latency_summary(prober.rtts)}


async def loaded_phase(args, url: str, node: tuple[str, int], interval: float):
    """DHT latency while `args.clients` HTTP clients run (each at most one request per
    `interval` seconds; 0: as fast as answered); the clients' statuses and latency."""
    load = await asyncio.create_subprocess_exec(
        *pinned([sys.executable, "-c", HTTP_CLIENTS, url, str(args.clients),
                 str(args.seconds + 1.0), str(interval)], 1), stdout=subprocess.PIPE)
    await asyncio.sleep(0.5)  # the clients connect
    try:
        dht = await probe(node, args.sources, args.dht_rate, args.seconds)
        output, _ = await asyncio.wait_for(load.communicate(), args.seconds + 60)
    finally:
        if load.returncode is None:
            load.kill()
    result = json.loads(output)
    requests = sum(result["statuses"].values())
    errors = sum(count for status, count in result["statuses"].items() if status != "200")
    return dht, {"requests": requests, "errors": errors, "statuses": result["statuses"],
                 "requests_per_second": round(requests / result["elapsed"], 1),
                 **latency_summary(result["latencies"])}


async def measure(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="mldht-http-load-"))
    port = free_udp_port(NODE_IP)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log_path = folder / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(pinned(
            [sys.executable, "-m", "mldht.cli", "serve", "--bind", f"{NODE_IP}:{port}",
             "--bootstrap", f"127.0.8.2:{free_udp_port('127.0.8.2')}",
             "--http", "127.0.0.1:0"], 0), env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        url = None
        for _ in range(200):
            found = re.search(r"status page on (http://\S+)/", log_path.read_text())
            if found:
                url = found.group(1)
                break
            if server.poll() is not None:
                raise SystemExit(f"serve exited: {log_path.read_text()}")
            await asyncio.sleep(0.05)
        if url is None:
            raise SystemExit("serve did not start its HTTP server")
        node = (NODE_IP, port)
        phases, http = {}, {}
        phases["without_http"] = await probe(node, args.sources, args.dht_rate, args.seconds)
        for name, interval in [("with_http_saturating", 0.0),
                               ("with_http_polling", args.poll_interval)]:
            phases[name], http[name] = await loaded_phase(args, url, node, interval)
        phases["without_http_again"] = await probe(node, args.sources, args.dht_rate,
                                                   args.seconds)
        base = phases["without_http"]["p99_ms"]
        return {
            "clients": args.clients, "seconds": args.seconds, "dht_rate": args.dht_rate,
            "poll_interval": args.poll_interval, "dht": phases, "http": http,
            "p99_ratio": {name: round(phases[name]["p99_ms"] / base, 2) if base else None
                          for name in http},
        }
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # our own child, by its pid
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--dht-rate", type=float, default=200.0, help="pings a second")
    parser.add_argument("--sources", type=int, default=100,
                        help="loopback source addresses of the pings (per-IP limit: 5/s)")
    parser.add_argument("--poll-interval", type=float, default=1.0, metavar="S",
                        help="the polling phase: each client asks once every S seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.dht_rate / args.sources > 4:
        parser.error("keep --dht-rate / --sources under 4: the node limits one IP to 5 a second")
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.clients} HTTP clients, {args.dht_rate:g} DHT pings/s, {args.seconds:g} s a phase")
    for name, phase in result["dht"].items():
        print(f"  DHT {name:<19} p50 {phase['p50_ms']} ms  p90 {phase['p90_ms']} ms  "
              f"p99 {phase['p99_ms']} ms  max {phase['max_ms']} ms  lost {phase['lost']}/{phase['sent']}")
    for name, http in result["http"].items():
        print(f"  HTTP {name:<20} {http['requests']} requests ({http['requests_per_second']}/s),"
              f" errors {http['errors']} {http['statuses']}, p50 {http['p50_ms']} ms, "
              f"p99 {http['p99_ms']} ms; DHT p99 x{result['p99_ratio'][name]} of without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
