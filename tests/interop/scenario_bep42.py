"""BEP 42 in the lab: mldht nodes learn their external IP and move to secure ids, an enforcing
mldht node and an enforcing libtorrent keep them, and lookups still work.

    python tests/interop/scenario_bep42.py all [--capture DIR]

Lab addresses (198.18.N.1) are not among BEP 42's exempt local ranges, so ids are checked
for real here; each node is alone in its /24, so each reply comes from a distinct voter.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
from libtorrent_nodes import LibtorrentNode  # noqa: E402

from mldht import DHTNode, InfoHash, NodeConfig  # noqa: E402
from mldht.bep42 import is_secure_id  # noqa: E402

NODES = 12
PORT = 6881


async def scenario_all(the_lab: lab.Lab, capture: Path | None) -> dict:
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        the_lab.start_capture(capture / "bep42.pcap")
    report: dict = {}
    started = time.monotonic()
    config = NodeConfig(query_timeout=2.0)
    first = DHTNode((lab.lab_ip(1), PORT), bootstrap=[], config=config)
    await first.start()
    entry = lab.address_spec(first.address)
    nodes = [first]
    for i in range(2, NODES + 1):
        enforcing = i == NODES
        node = DHTNode((lab.lab_ip(i), PORT), bootstrap=[entry], config=NodeConfig(
            query_timeout=2.0, enforce_node_id=enforcing))
        await node.start()
        nodes.append(node)
    report["ids_secure_at_start"] = sum(is_secure_id(n.node_id, n.address[0]) for n in nodes)
    await asyncio.gather(*(node.bootstrap(timeout=5) for node in nodes[1:]))
    report["ids_settled_seconds"] = await lab.wait_until(
        lambda: all(n.stats.id_changes for n in nodes), 20)
    # Every node refreshes once more: the ids have moved and tables must follow.
    await asyncio.gather(*(node.bootstrap(timeout=5) for node in nodes))
    libtorrent = LibtorrentNode(lab.lab_ip(40), PORT, enforce_node_id=True)
    try:
        libtorrent.add_node(first.address)
        await asyncio.sleep(2.0)
        # libtorrent learns the other (now secure) ids as they query it.
        await asyncio.gather(*(node.bootstrap(timeout=5) for node in nodes))
        await asyncio.sleep(2.0)
        report["join_seconds"] = round(time.monotonic() - started, 2)
        report["external_ips_right"] = sum(n.external_ip == n.address[0] for n in nodes)
        report["id_changes"] = [n.stats.id_changes for n in nodes]
        report["ids_secure"] = sum(is_secure_id(n.node_id, n.address[0]) for n in nodes)
        enforcing = nodes[-1]
        report["enforcing_table"] = len(enforcing.routing_table)
        report["enforcing_table_insecure"] = sum(
            not is_secure_id(e.id, e.ip) for e in enforcing.routing_table)
        report["tables"] = [len(n.routing_table) for n in nodes]

        info_hash = InfoHash(os.urandom(20))
        announced = await nodes[3].announce(info_hash, 7000, timeout=10)
        report["announced_to"] = len(announced.announced_to)
        report["found_by"] = 0
        for seeker in (nodes[7], enforcing):
            peers = await seeker.get_peers(info_hash, timeout=10).collect()
            report["found_by"] += (lab.lab_ip(4), 7000) in peers

        lt_id = await first.ping((lab.lab_ip(40), PORT), timeout=3)
        report["libtorrent_id_secure"] = is_secure_id(lt_id, lab.lab_ip(40))
        ours = {lab.address_spec(n.address) for n in nodes}
        deadline = time.monotonic() + 20  # libtorrent fills its table at its own pace
        while True:
            table = {lab.address_spec(a) for a in await libtorrent.table(bytes(lt_id))}
            if len(table & ours) >= 8 or time.monotonic() > deadline:
                break
            await asyncio.gather(*(n.ping((lab.lab_ip(40), PORT), timeout=2) for n in nodes),
                                 return_exceptions=True)
            await asyncio.sleep(1.0)
        report["libtorrent_table"] = len(table)
        report["mldht_in_libtorrent_table"] = len(table & ours)
        # The enforcing node may not have met libtorrent in its lookups: it asks it now.
        await asyncio.gather(enforcing.ping((lab.lab_ip(40), PORT), timeout=3),
                             return_exceptions=True)
        report["libtorrent_in_enforcing_table"] = enforcing.routing_table.by_ip(
            lab.lab_ip(40)) is not None
        # With 12 nodes, libtorrent's bucket may already hold k mldht nodes that answered:
        # then it is kept waiting as a replacement, which is not a BEP 42 rejection.
        table_ = enforcing.routing_table
        bucket = table_.buckets[table_.bucket_index(lt_id)]
        report["libtorrent_bucket_in_enforcing_table"] = len(bucket.nodes)
        report["libtorrent_waiting_in_enforcing_table"] = any(
            entry.ip == lab.lab_ip(40) for entry in bucket.replacements)
        report["receive_path_failures"] = sum(n.stats.receive_path_failures for n in nodes)
    finally:
        await lab.close_all(libtorrent, *nodes)
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
