"""Worst-case amplification of an mldht node: reply bytes per query byte, per message type.

    python tools/bench/amplification.py

A node on 127.0.0.1 with a full routing table (IPv4 and IPv6 nodes) and an infohash holding
the most peers a node stores is sent the smallest query of each kind from a raw socket; the
reply sizes are what a spoofed query could make it send to a victim. Prints a table.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
import time

import bencodepy

from mldht import DHTNode, InfoHash, Item, KeyPair, NodeConfig, NodeId, NodeInfo

CODEC = bencodepy.Bencode(encoding=None)
STORED = InfoHash(b"S" * 20)
BIG_ITEM = Item.immutable(b"x" * 996)  # 1000 bytes bencoded: the largest a node stores
MUTABLE_ITEM = Item.mutable(KeyPair(b"k" * 32), b"y" * 996, seq=1)


def fill(node: DHTNode, rng: random.Random) -> None:
    now = time.monotonic()  # the node's clock
    for i in range(400):
        ip = f"10.{i // 250}.{i % 250}.1" if i % 2 else f"2001:db8::{i:x}"
        node.routing_table.heard_from(NodeInfo(NodeId(rng.randbytes(20)), ip, 6881), now,
                                      responded=True)
    for i in range(node.config.max_peers_per_infohash):
        node.peer_store.announce(STORED, (f"10.9.{i // 250}.{i % 250 + 1}", 6881), now)
    for item in (BIG_ITEM, MUTABLE_ITEM):
        node.item_store.put(item, now, bytes(node.node_id))


def queries(sender: bytes) -> dict[str, dict]:
    """The smallest query of each kind (2-byte transaction ids, no `v`)."""
    base = {b"t": b"aa", b"y": b"q"}
    return {
        "ping": {**base, b"q": b"ping", b"a": {b"id": sender}},
        "find_node": {**base, b"q": b"find_node", b"a": {b"id": sender, b"target": sender}},
        "find_node want n4+n6": {**base, b"q": b"find_node",
                                 b"a": {b"id": sender, b"target": sender, b"want": [b"n4", b"n6"]}},
        "get_peers (no peers)": {**base, b"q": b"get_peers",
                                 b"a": {b"id": sender, b"info_hash": os.urandom(20)}},
        "get_peers (full swarm)": {**base, b"q": b"get_peers",
                                   b"a": {b"id": sender, b"info_hash": bytes(STORED)}},
        "announce_peer (bad token)": {**base, b"q": b"announce_peer", b"a": {
            b"id": sender, b"info_hash": bytes(STORED), b"port": 1, b"token": b"x"}},
        "get (1000-byte item, want n4+n6)": {**base, b"q": b"get", b"a": {
            b"id": sender, b"target": BIG_ITEM.target, b"want": [b"n4", b"n6"]}},
        "get (1000-byte mutable item)": {**base, b"q": b"get", b"a": {
            b"id": sender, b"target": MUTABLE_ITEM.target}},
        "get (no item)": {**base, b"q": b"get", b"a": {b"id": sender, b"target": sender}},
        "unknown method": {**base, b"q": b"x", b"a": {b"id": sender}},
        "malformed query": {**base, b"q": b"ping", b"a": {}},
    }


async def measure() -> list[dict]:
    config = NodeConfig(inbound_rate=0)
    rows = []
    async with DHTNode(("127.0.0.1", 0), bootstrap=[], config=config) as node:
        fill(node, random.Random(1))
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            for name, message in queries(b"Q" * 20).items():
                data = CODEC.encode(message)
                await loop.sock_sendto(sock, data, node.address)
                async with asyncio.timeout(2):
                    while True:
                        reply = await loop.sock_recv(sock, 65535)
                        if CODEC.decode(reply).get(b"y") != b"q":  # skip verification pings
                            break
                rows.append({"query": name, "query_bytes": len(data), "reply_bytes": len(reply),
                             "ratio": round(len(reply) / len(data), 2)})
    return rows


def main() -> None:
    rows = asyncio.run(measure())
    if "--json" in sys.argv:
        print(json.dumps(rows))
        return
    print(f"{'query':34} {'query B':>8} {'reply B':>8} {'ratio':>6}")
    for row in rows:
        print(f"{row['query']:34} {row['query_bytes']:8} {row['reply_bytes']:8} {row['ratio']:6}")
    worst = max(rows, key=lambda row: row["ratio"])
    print(f"worst: {worst['query']}, {worst['ratio']}x; largest reply "
          f"{max(row['reply_bytes'] for row in rows)} bytes")


if __name__ == "__main__":
    main()
