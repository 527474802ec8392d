"""A loopback DHT for the benchmarks: thousands of `mldht.Node`s in a few host processes.

    dht = LoopbackDHT(nodes=2000, hosts=8, folder=tmp, net="127.30",
                      settings=["inbound_rate=0"])
    ready = await dht.start(join_wait=300, env=child_env(), cpus=None)
    ...                                   # ready["addresses"], ready["tables"]
    await dht.stats(); await dht.node_stats(); await dht.diagnose(["127.30.0.7"])
    await dht.stop()

Each host process (this file run with `--host`) runs its share of the nodes in one asyncio
loop, node g on its own address NET.(g // 250).(g % 250 + 1) (a routing table keeps one
node per IP). The first node of the first host is the seed; every other node joins
(`bootstrap()`) from the seed and two nodes of its own host that joined before it,
`join_concurrency` at a time per host. Once every host has joined, each node looks up its
own id once more (the tables then know the whole network, not what existed when the node
joined). The hosts talk JSON lines on stdout and take commands on stdin; they are stopped
by PID (`quit` on stdin, then SIGINT, then SIGKILL). Everything stays on 127.0.0.0/8.

Used by `crawl_loopback.py` (the crawler against thousands of nodes) and
`peer_finder_loopback.py` (the peer finder against a network with its limits on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from processes import die_with_parent, pinned  # noqa: E402

DEFAULT_NET = "127.30"
PER_SUBNET = 250
MAX_NODES = 20_000


class BenchError(Exception):
    """The network (or what runs against it) could not be run."""


def node_ip(index: int, net: str = DEFAULT_NET) -> str:
    """Node `index`'s IP in the network `net` (two octets of 127.0.0.0/8)."""
    return f"{net}.{index // PER_SUBNET}.{index % PER_SUBNET + 1}"


# --- a host: many nodes in one process ------------------------------------------------------

def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def host(args) -> int:
    """`--host`: run nodes `args.first` .. `args.first + args.count - 1`; talk JSON lines on
    stdout, take commands (`refresh`, `stats`, `nodes`, `diagnose IP,...`, `quit`) on stdin;
    stop on EOF or a signal."""
    from mldht import Node, NodeConfig
    from mldht.errors import MldhtError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = NodeConfig.from_overrides(args.set)
    rng = random.Random(args.first)
    nodes: list = []
    """The nodes started, in the order they started."""
    seed = args.seed

    def spec(node) -> str:
        ip, port = node.address
        return f"{ip}:{port}"

    async def next_command() -> str | None:
        line_task = asyncio.ensure_future(reader.readline())
        stop_task = asyncio.ensure_future(stop.wait())
        await asyncio.wait({line_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not line_task.done():
            line_task.cancel()
            return None
        return line_task.result().decode().strip() or None  # b"": EOF

    async def each(work, items, concurrency: int) -> int:
        """`work(item)` for every item, `concurrency` at a time; the failures counted."""
        gate = asyncio.Semaphore(concurrency)
        failures = 0

        async def one(item) -> None:
            nonlocal failures
            async with gate:
                if stop.is_set():
                    return
                try:
                    await work(item)
                except (MldhtError, OSError, TimeoutError):
                    failures += 1
        await asyncio.gather(*(one(item) for item in items))
        return failures

    try:
        indexes = list(range(args.first, args.first + args.count))
        if seed is None:  # the first host: its first node is the seed, it joins nobody
            first = Node((node_ip(indexes.pop(0), args.net), 0), bootstrap=[], config=config)
            await first.start()
            nodes.append(first)
            seed = spec(first)
            emit({"seed": seed})
        joined = list(nodes)
        began = time.monotonic()

        async def join(index: int) -> None:
            # Created when its turn comes: its bootstrap list names the seed and two nodes
            # of this host that joined before it.
            friends = [spec(other) for other in rng.sample(joined, min(2, len(joined)))]
            node = Node((node_ip(index, args.net), 0), bootstrap=[seed, *friends], config=config)
            await node.start()
            nodes.append(node)
            await node.bootstrap(timeout=args.join_timeout)
            joined.append(node)
        failed = await each(join, indexes, args.join_concurrency)
        emit({"joined": len(joined), "failed": failed,
              "seconds": round(time.monotonic() - began, 2),
              "addresses": [spec(node) for node in nodes]})
        while not stop.is_set():
            command = await next_command()
            if command is None or command == "quit":
                break
            if command == "refresh":
                began = time.monotonic()

                async def refresh(node) -> None:
                    await node.find_node_lookup(node.node_id, timeout=args.join_timeout)
                failed = await each(refresh, nodes, args.join_concurrency)
                emit({"ready": len(nodes), "failed": failed,
                      "seconds": round(time.monotonic() - began, 2),
                      "tables": [len(node.routing_table) for node in nodes]})
            elif command.startswith("diagnose "):
                # For each IP asked about: how many of this host's nodes list it in their
                # routing table (or its replacement cache), and its id and table size when
                # it is one of ours.
                asked = command.split()[1].split(",")
                report = {ip: {"listed_by": 0, "cached_by": 0} for ip in asked}
                for node in nodes:
                    for family in node.table().values():
                        for bucket in family["buckets"]:
                            for key, entries in (("listed_by", bucket["nodes"]),
                                                 ("cached_by", bucket.get("replacements", []))):
                                for entry in entries:
                                    ip = entry["address"].rpartition(":")[0].strip("[]")
                                    if ip in report:
                                        report[ip][key] += 1
                    ip = node.address[0]
                    if ip in report:
                        report[ip].update(id=node.node_id.hex(), table=len(node.routing_table))
                emit({"diagnose": report})
            elif command == "stats":
                emit({"stats": {
                    "queries_received": sum(sum(n.stats.queries_received.values())
                                            for n in nodes),
                    "datagrams_received": sum(n.stats.datagrams_received for n in nodes),
                    "datagrams_sent": sum(n.stats.datagrams_sent for n in nodes),
                    "rate_limited": sum(n.stats.rate_limited for n in nodes)}})
            elif command == "nodes":
                emit({"nodes": [{"address": spec(n), "table": len(n.routing_table),
                                 "queries_received": dict(n.stats.queries_received),
                                 "rate_limited": n.stats.rate_limited} for n in nodes]})
    finally:
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
    return 0


def host_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="loopnet.py --host")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", default=None, metavar="IP:PORT")
    parser.add_argument("--net", default=DEFAULT_NET, help="the first two octets of the nodes' IPs")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a NodeConfig field of every node (repeatable)")
    parser.add_argument("--join-concurrency", type=int, default=25)
    parser.add_argument("--join-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.first < 0 or args.first + args.count > MAX_NODES:
        parser.error(f"nodes from 0 to {MAX_NODES - 1}")
    if not args.net.startswith("127.") or args.net.count(".") != 1:
        parser.error("--net is two octets of 127.0.0.0/8, e.g. 127.30")
    if args.seed is not None and not args.seed.startswith("127."):
        parser.error("--seed must be a loopback address")
    return asyncio.run(host(args))


# --- the network, from the benchmark's side ---------------------------------------------------

class Host:
    """One host child process: its JSON lines in `messages`, its stderr in a log file."""

    def __init__(self, index: int, first: int, count: int, folder: Path, net: str,
                 settings: list[str]) -> None:
        self.index, self.first, self.count = index, first, count
        self.net, self.settings = net, settings
        self.log = folder / f"host-{index}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.messages: asyncio.Queue = asyncio.Queue()
        self.reader: asyncio.Task | None = None

    async def start(self, seed: str | None, join_concurrency: int, join_timeout: float, env,
                    cpus) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--host",
                   "--first", str(self.first), "--count", str(self.count), "--net", self.net,
                   "--join-concurrency", str(join_concurrency),
                   "--join-timeout", str(join_timeout)]
        command += [f"--set={item}" for item in self.settings]
        if seed is not None:
            command += ["--seed", seed]
        with open(self.log, "wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *pinned(command, cpus), env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, limit=1 << 24,  # long lines: addresses
                preexec_fn=die_with_parent)  # a benchmark killed midway leaves no host behind
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(ValueError):
                await self.messages.put(json.loads(line))
        await self.messages.put(None)

    async def expect(self, key: str, seconds: float) -> dict:
        """The next message carrying `key` (BenchError when the host exits or is late)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                message = await asyncio.wait_for(self.messages.get(),
                                                 max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise BenchError(f"host {self.index}: no {key!r} within {seconds:g} s") from None
            if message is None:
                raise BenchError(f"host {self.index} exited: "
                                 f"{self.log.read_text(errors='replace')[-2000:]}")
            if key in message:
                return message

    def send(self, command: str) -> None:
        if self.process is not None and self.process.stdin is not None and \
                self.process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.process.stdin.write(command.encode() + b"\n")

    async def stats(self) -> dict:
        self.send("stats")
        return (await self.expect("stats", 30))["stats"]


async def stop_hosts(hosts: list[Host], grace: float = 10.0) -> None:
    """`quit` to each host still running (our own children), SIGINT after `grace`, SIGKILL
    after as long again."""
    running = [h for h in hosts if h.process is not None and h.process.returncode is None]
    for h in running:
        h.send("quit")
        with contextlib.suppress(Exception):
            h.process.stdin.close()
    for signum in (None, signal.SIGINT, signal.SIGKILL):
        left = [h for h in running if h.process.returncode is None]
        for h in left:
            if signum is not None:
                with contextlib.suppress(ProcessLookupError):
                    h.process.send_signal(signum)
        if not left:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(h.process.wait() for h in left)), grace)
    for h in hosts:
        if h.reader is not None:
            h.reader.cancel()


class LoopbackDHT:
    """`nodes` nodes in `hosts` host processes (see the module docstring); `settings` are
    `NAME=VALUE` NodeConfig fields of every node; logs go to `folder`."""

    def __init__(self, nodes: int, hosts: int, folder: Path, *, net: str = DEFAULT_NET,
                 settings: list[str] | None = None, join_concurrency: int = 25,
                 join_timeout: float = 20.0) -> None:
        if not 1 <= nodes <= MAX_NODES or hosts < 1 or hosts > nodes:
            raise BenchError(f"1 to {MAX_NODES} nodes in 1 to that many hosts")
        shares = [nodes // hosts + (i < nodes % hosts) for i in range(hosts)]
        firsts = [sum(shares[:i]) for i in range(hosts)]
        self.hosts = [Host(i, firsts[i], shares[i], folder, net, list(settings or []))
                      for i in range(hosts)]
        self.join_concurrency, self.join_timeout = join_concurrency, join_timeout
        self.addresses: list[str] = []

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self.hosts if h.process is not None]

    async def start(self, join_wait: float, env: dict, cpus=None) -> dict:
        """Start the hosts, wait for every join and then every refresh (BenchError after
        `join_wait` seconds each); returns the addresses, table sizes, join and ready
        times (seconds from the start), nodes joined, and the joins and refreshes that failed."""
        began = time.monotonic()
        first = self.hosts[0]
        await first.start(None, self.join_concurrency, self.join_timeout, env, cpus)
        seed = (await first.expect("seed", 60))["seed"]
        for h in self.hosts[1:]:
            await h.start(seed, self.join_concurrency, self.join_timeout, env, cpus)
        joins = await asyncio.gather(*(h.expect("joined", join_wait) for h in self.hosts))
        join_seconds = time.monotonic() - began
        self.addresses = [a for message in joins for a in message["addresses"]]
        for h in self.hosts:
            h.send("refresh")
        readies = await asyncio.gather(*(h.expect("ready", join_wait) for h in self.hosts))
        return {"addresses": list(self.addresses), "join_seconds": join_seconds,
                "ready_seconds": time.monotonic() - began,
                "joined": sum(m["joined"] for m in joins),
                "join_failed": sum(m["failed"] for m in joins),
                "refresh_failed": sum(m["failed"] for m in readies),
                "tables": [size for message in readies for size in message["tables"]]}

    async def stats(self) -> list[dict]:
        """Each host's totals: queries and datagrams received, datagrams sent, rate_limited."""
        return list(await asyncio.gather(*(h.stats() for h in self.hosts)))

    async def node_stats(self) -> list[dict]:
        """Every node: address, table size, queries received by method, rate_limited."""
        for h in self.hosts:
            h.send("nodes")
        replies = await asyncio.gather(*(h.expect("nodes", 60) for h in self.hosts))
        return [node for reply in replies for node in reply["nodes"]]

    async def diagnose(self, ips: list[str]) -> dict[str, dict]:
        """For each IP: how many routing tables list it (and replacement caches hold it),
        and its id and table size when it is one of the network's nodes."""
        diagnosis: dict[str, dict] = {}
        if not ips:
            return diagnosis
        for h in self.hosts:
            h.send("diagnose " + ",".join(ips))
        for report in await asyncio.gather(*(h.expect("diagnose", 60) for h in self.hosts)):
            for ip, part in report["diagnose"].items():
                merged = diagnosis.setdefault(ip, {"listed_by": 0, "cached_by": 0})
                merged["listed_by"] += part.pop("listed_by")
                merged["cached_by"] += part.pop("cached_by")
                merged.update(part)
        return diagnosis

    async def stop(self) -> None:
        await stop_hosts(self.hosts)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--host"]:
        sys.exit("loopnet.py is a module for the benchmarks; `--host` runs one host")
    sys.exit(host_main(sys.argv[2:]))
