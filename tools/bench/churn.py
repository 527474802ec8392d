"""Churn: lookups in a network that loses 10% of its datagrams and 30% of its nodes mid-run.

    python tools/bench/churn.py --nodes 100 --lookups 400 [--kill 0.3] [--loss 0.1] [--seed 1]

N nodes on 127.0.x.y join through the first; 20 peers are announced for 20 infohashes. Then
every node's transport drops a fraction `--loss` of what it sends, half the lookups run, a
fraction `--kill` of the nodes dies (their sockets stay bound but silent, as a vanished
host is on the internet: no ICMP error tells anyone), and the other half of the lookups run.
Each lookup is a get_peers from a random live node for a random announced infohash; it
succeeds when it finds that infohash's peer. Prints success rates, latency percentiles and
queries per lookup before and after the kill. Loopback only, bounded by --lookups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import time

from mldht import DHTNode, InfoHash, NodeConfig


class LossyTransport:
    """Wraps a node's datagram transport and drops a fraction `loss` of what it sends (none
    until `loss` is set)."""

    def __init__(self, inner, rng: random.Random) -> None:
        self.inner = inner
        self.loss = 0.0
        self.rng = rng
        self.dropped = 0

    def sendto(self, data: bytes, address) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.inner.sendto(data, address)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class ToNode(asyncio.DatagramProtocol):
    """Hands what the socket receives to the node."""

    def __init__(self, node: DHTNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr) -> None:
        self.node.datagram_received(data, addr)


async def start_lossy(node: DHTNode, ip: str, rng: random.Random) -> LossyTransport:
    """Start `node` on a UDP socket of `ip` wrapped in a `LossyTransport`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)  # as DHTNode.start
    sock.bind((ip, 0))
    sock.setblocking(False)
    inner, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: ToNode(node), sock=sock)
    lossy = LossyTransport(inner, rng)
    await node.start(transport=lossy)
    return lossy


def node_ip(index: int) -> str:
    return f"127.0.{10 + index // 250}.{index % 250 + 1}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def run(nodes: int = 100, lookups: int = 400, kill: float = 0.3, loss: float = 0.1,
              seed: int = 1, concurrency: int = 20) -> dict:
    rng = random.Random(seed)
    config = NodeConfig(query_timeout=2.0)
    network = [DHTNode((node_ip(0), 0), bootstrap=[], config=config, rng=random.Random(seed))]
    transports = [await start_lossy(network[0], node_ip(0), random.Random(rng.random()))]
    entry = f"{network[0].address[0]}:{network[0].address[1]}"
    for index in range(1, nodes):
        node = DHTNode((node_ip(index), 0), bootstrap=[entry], config=config,
                       rng=random.Random(seed * 1000 + index))
        transports.append(await start_lossy(node, node_ip(index), random.Random(rng.random())))
        network.append(node)
    zombies: list[socket.socket] = []
    report: dict = {"nodes": nodes, "kill": kill, "loss": loss, "seed": seed}
    try:
        started = time.monotonic()
        await asyncio.gather(*(node.bootstrap(timeout=10) for node in network[1:]))
        report["join_seconds"] = round(time.monotonic() - started, 2)
        report["table_sizes_min_median"] = [min(len(n.routing_table) for n in network),
                                            statistics.median(len(n.routing_table) for n in network)]
        swarms: list[tuple[InfoHash, tuple[str, int]]] = []
        for i in range(20):
            info_hash = InfoHash(rng.randbytes(20))
            announcer = rng.choice(network)
            await announcer.announce(info_hash, 10_000 + i, timeout=15)
            swarms.append((info_hash, (announcer.address[0], 10_000 + i)))
        for transport in transports:
            transport.loss = loss

        live = list(network)

        async def lookup_round(count: int) -> list[dict]:
            results: list[dict] = []
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    node = rng.choice(live)
                    info_hash, peer = rng.choice(swarms)
                    lookup = node.get_peers(info_hash, timeout=30)
                    peers = await lookup.collect()
                    summary = lookup.summary
                    results.append({"found": peer in peers, "seconds": summary.elapsed,
                                    "first": summary.time_to_first_peer,
                                    "queried": summary.queried, "timed_out": summary.timed_out})

            await asyncio.gather(*(one() for _ in range(count)))
            return results

        before = await lookup_round(lookups // 2)
        victims = rng.sample(network[1:], int(kill * nodes))
        for victim in victims:
            address = victim.address
            await victim.close()  # closes the wrapped socket too
            live.remove(victim)
            zombie = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(100):  # the transport releases its socket on the next loop turn
                await asyncio.sleep(0.001)
                try:
                    zombie.bind(address)  # silent: datagrams to it vanish, no ICMP error
                    break
                except OSError:
                    continue
            zombies.append(zombie)
        after = await lookup_round(lookups - lookups // 2)

        def summarize(results: list[dict]) -> dict:
            found = [r for r in results if r["found"]]
            firsts = [r["first"] for r in found if r["first"] is not None]
            return {
                "lookups": len(results), "found": len(found),
                "success_rate": round(len(found) / len(results), 4) if results else None,
                "first_peer_p50_ms": round(percentile(firsts, 0.5) * 1000, 1),
                "first_peer_p90_ms": round(percentile(firsts, 0.9) * 1000, 1),
                "lookup_p50_s": round(percentile([r["seconds"] for r in results], 0.5), 2),
                "lookup_p90_s": round(percentile([r["seconds"] for r in results], 0.9), 2),
                "queries_mean": round(statistics.mean(r["queried"] for r in results), 1),
                "timeouts_mean": round(statistics.mean(r["timed_out"] for r in results), 1),
            }

        report["before_kill"] = summarize(before)
        report["after_kill"] = summarize(after)
        report["killed"] = len(victims)
        report["datagrams_dropped"] = sum(transport.dropped for node, transport
                                          in zip(network, transports) if node in live)
        report["total_seconds"] = round(time.monotonic() - started, 1)
    finally:
        for node in network:
            await node.close()
        for zombie in zombies:
            zombie.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=400)
    parser.add_argument("--kill", type=float, default=0.3)
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.nodes, args.lookups, args.kill, args.loss, args.seed)),
                     indent=1))


if __name__ == "__main__":
    main()
