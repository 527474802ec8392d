"""BEP 44 put/get and BEP 33 scrape with libtorrent and WebTorrent, inside the lab namespace.

    python tests/interop/scenario_extensions.py all [--capture DIR]

Seven mldht nodes, one libtorrent session (default DHT settings) and one WebTorrent
bittorrent-dht form one DHT. Items are put by each implementation and read by the others
(immutable and mutable, with a salt), and mldht's stale and racing puts meet the others'
302 and 301. For BEP 33, three mldht nodes announce to libtorrent (two as seeds) and mldht
reads libtorrent's BFsd/BFpe filters. Prints a JSON report (see test_extensions_lab.py).
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
from webtorrent import WebTorrentMissing, WebTorrentNodes, installed_version  # noqa: E402

from mldht import InfoHash, KeyPair  # noqa: E402
from mldht.bep33 import BloomFilter, ScrapeMerger  # noqa: E402
from mldht.bep44 import mutable_target  # noqa: E402
from mldht.krpc import AnnouncePeer, GetPeers  # noqa: E402

PORT = 6881
MLDHT_NODES = 7
"""With libtorrent and WebTorrent, 9 nodes: a writer's k = 8 closest are all the others."""
LT_IP = lab.lab_ip(20)
WT_IP = lab.lab_ip(21)


def _addresses(result) -> list[str]:
    return [lab.address_spec(node.address) for node in result.stored_on]


def _put_report(result) -> dict:
    return {"target": result.item.target.hex(), "seq": result.item.seq,
            "stored_on": _addresses(result), "asked": result.asked,
            "errors": {str(code): n for code, n in result.errors.items()},
            "timed_out": result.timed_out}


def _get_report(result) -> dict:
    item = result.item
    return {"found": item is not None, "value": None if item is None else item.value.decode(
        "utf-8", "replace") if isinstance(item.value, bytes) else repr(item.value),
        "seq": None if item is None else item.seq, "copies": result.copies,
        "invalid": result.invalid}


async def _step(report: dict, name: str, coroutine) -> None:
    """Run one check; its failure is recorded under `name` and the others still run."""
    try:
        report[name] = await coroutine
    except Exception as exc:  # reported: the test says which step failed and how
        report[name] = {"error": repr(exc)}


async def bep44_mldht_to_others(nodes, libtorrent: LibtorrentNode, wt) -> dict:
    out: dict = {}
    writer, reader = nodes[1], nodes[2]
    put = await writer.put_immutable(b"immutable from mldht", timeout=15)
    out["put_immutable"] = _put_report(put)
    target = put.item.target
    out["lt_get_immutable"] = await libtorrent.get_immutable(target, timeout=20)
    if wt is not None:
        out["wt_get_immutable"] = await wt.command("get", name="w1", target=target.hex(),
                                                   timeoutMs=15000, timeout=20)
    keys = KeyPair(os.urandom(32))
    first = await writer.put_mutable(keys, b"mutable from mldht 1", salt=b"lab", timeout=15)
    second = await writer.put_mutable(keys, b"mutable from mldht 2", salt=b"lab", timeout=15)
    out["put_mutable"] = [_put_report(first), _put_report(second)]
    out["lt_get_mutable"] = await libtorrent.get_mutable(keys.public_key, b"lab", timeout=20)
    if wt is not None:
        out["wt_get_mutable"] = await wt.command(
            "get", name="w1", target=mutable_target(keys.public_key, b"lab").hex(), salt="lab",
            timeoutMs=15000, timeout=20)
    # A stale seq and a wrong cas, sent to the nodes that hold seq 2 (the writer's closest):
    # every implementation must refuse, with 302 and 301.
    out["put_stale"] = _put_report(await writer.put_mutable(
        keys, b"stale", salt=b"lab", seq=1, timeout=15))
    out["put_cas_mismatch"] = _put_report(await writer.put_mutable(
        keys, b"racing", salt=b"lab", seq=5, cas=1, timeout=15))
    out["mldht_get_mutable"] = _get_report(await reader.get_item(
        mutable_target(keys.public_key, b"lab"), salt=b"lab", timeout=15))
    return out


async def bep44_libtorrent_to_mldht(nodes, libtorrent: LibtorrentNode) -> dict:
    out: dict = {}
    put = await libtorrent.put_immutable(b"immutable from libtorrent", timeout=30)
    out["lt_put_immutable"] = put
    target = bytes.fromhex(put["target"])
    out["stored_by_mldht_nodes"] = sum(target in node.item_store for node in nodes)
    out["mldht_get_immutable"] = _get_report(await nodes[3].get_item(target, timeout=15))
    keys = KeyPair(os.urandom(32))
    out["lt_put_mutable"] = await libtorrent.put_mutable(keys.expanded_secret, keys.public_key,
                                                         b"mutable from libtorrent", b"lt-salt",
                                                         timeout=30)
    mutable = mutable_target(keys.public_key, b"lt-salt")
    out["mutable_stored_by_mldht_nodes"] = sum(mutable in node.item_store for node in nodes)
    out["mldht_get_mutable"] = _get_report(await nodes[3].get_item(mutable, salt=b"lt-salt",
                                                                   timeout=15))
    # The command line reads it too (the value is a bencoded string).
    code, stdout, stderr = await lab.run_mldht_cli(
        "get", keys.public_key.hex(), "--salt", "lt-salt", "--bootstrap",
        lab.address_spec(nodes[0].address), "--bind", f"{lab.lab_ip(30)}:0", "--timeout", "15")
    out["cli_get_mutable"] = {"exit": code, "stdout": stdout, "stderr": stderr[-500:]}
    return out


async def bep44_webtorrent_to_mldht(nodes, wt) -> dict:
    out: dict = {}
    put = await wt.command("put", name="w1", value="immutable from webtorrent",
                           timeoutMs=15000, timeout=20)
    out["wt_put_immutable"] = put
    target = bytes.fromhex(put["target"])
    out["stored_by_mldht_nodes"] = sum(target in node.item_store for node in nodes)
    out["mldht_get_immutable"] = _get_report(await nodes[4].get_item(target, timeout=15))
    seed = os.urandom(32)
    put = await wt.command("put", name="w1", value="mutable from webtorrent", seed=seed.hex(),
                           salt="wt-salt", seq=7, timeoutMs=15000, timeout=20)
    out["wt_put_mutable"] = put
    mutable = mutable_target(KeyPair(seed).public_key, b"wt-salt")
    out["mutable_target_agrees"] = put["target"] == mutable.hex()
    out["mutable_stored_by_mldht_nodes"] = sum(mutable in node.item_store for node in nodes)
    out["mldht_get_mutable"] = _get_report(await nodes[4].get_item(mutable, salt=b"wt-salt",
                                                                   timeout=15))
    return out


async def bep33_libtorrent(the_lab: lab.Lab, libtorrent_address) -> dict:
    """Three mldht nodes on their own addresses announce one infohash to libtorrent (two as
    seeds); mldht reads libtorrent's filters and compares them with its own."""
    out: dict = {}
    info_hash = InfoHash(os.urandom(20))
    announcers = [await lab.start_mldht(lab.lab_ip(40 + i), PORT) for i in range(3)]
    try:
        for index, node in enumerate(announcers):
            reply = await node.query(libtorrent_address, GetPeers(
                transaction_id=b"", sender_id=node.node_id, info_hash=info_hash))
            await node.query(libtorrent_address, AnnouncePeer(
                transaction_id=b"", sender_id=node.node_id, info_hash=info_hash,
                token=reply.token, port=7000 + index, seed=index < 2))
        asker = announcers[0]
        reply = await asker.query(libtorrent_address, GetPeers(
            transaction_id=b"", sender_id=asker.node_id, info_hash=info_hash, scrape=True))
        seeds_filter, peers_filter = reply.extra.get(b"BFsd"), reply.extra.get(b"BFpe")
        out["keys"] = sorted(key.decode() for key in reply.extra)
        seed_ips = [lab.lab_ip(40), lab.lab_ip(41)]
        out["bfsd_equals_mldht_filter"] = seeds_filter == bytes(BloomFilter.of(seed_ips))
        out["bfpe_equals_mldht_filter"] = peers_filter == bytes(BloomFilter.of([lab.lab_ip(42)]))
        merger = ScrapeMerger()
        merger.add(reply.extra)
        estimate = merger.estimate()
        out["estimate"] = {"seeds": round(estimate.seeds, 2), "peers": round(estimate.peers, 2),
                           "filters": estimate.filters}
        out["values"] = sorted(f"{ip}:{port}" for ip, port in reply.values or [])
    finally:
        for node in announcers:
            await node.close()
    return out


async def scenario_all(the_lab: lab.Lab, capture: Path | None) -> dict:
    import libtorrent as lt

    report: dict = {"libtorrent": lt.__version__, "webtorrent": installed_version()}
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        the_lab.start_capture(capture / "extensions.pcap")
    started = time.monotonic()
    nodes = [await lab.start_mldht(lab.lab_ip(1), PORT)]
    entry = lab.address_spec(nodes[0].address)
    nodes += [await lab.start_mldht(lab.lab_ip(1 + i), PORT, bootstrap=[entry])
              for i in range(1, MLDHT_NODES)]
    await asyncio.gather(*(node.bootstrap(timeout=5) for node in nodes[1:]))
    libtorrent = LibtorrentNode(LT_IP, PORT)
    wt = None
    try:
        libtorrent.add_node(nodes[0].address)
        report["lt_joined_seconds"] = await lab.wait_until(lambda: any(
            e.ip == LT_IP for n in nodes for e in n.routing_table), 30)
        try:
            wt = WebTorrentNodes(the_lab)
            await wt.start()
            info = await wt.start_dht("w1", WT_IP, PORT, bootstrap=[entry], host=WT_IP)
            report["wt_ready"] = info.get("ready")
        except WebTorrentMissing as exc:
            report["error"] = str(exc)
            wt = None
        # Everyone learns everyone: the k closest of an item are then the same for all.
        await asyncio.gather(*(node.bootstrap(timeout=5) for node in nodes))
        await asyncio.sleep(3.0)
        report["mldht_tables"] = [len(node.routing_table) for node in nodes]
        await _step(report, "bep44_from_mldht", bep44_mldht_to_others(nodes, libtorrent, wt))
        await _step(report, "bep44_from_libtorrent", bep44_libtorrent_to_mldht(nodes, libtorrent))
        if wt is not None:
            await _step(report, "bep44_from_webtorrent", bep44_webtorrent_to_mldht(nodes, wt))
            report["wt_items"] = await wt.command("items", name="w1")
            report["wt_stats"] = await wt.command("stats", name="w1")
        await _step(report, "bep33_libtorrent", bep33_libtorrent(the_lab, (LT_IP, PORT)))
        report["mldht_items"] = [len(node.item_store) for node in nodes]
        report["mldht_queries"] = [dict(node.stats.queries_received) for node in nodes]
        report["mldht_receive_failures"] = sum(n.stats.receive_path_failures for n in nodes)
        report["bans"] = libtorrent.bans()
        report["total_seconds"] = round(time.monotonic() - started, 2)
    finally:
        if wt is not None:
            await wt.close()
        await lab.close_all(libtorrent, *nodes)
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
