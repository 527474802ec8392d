"""Interop scenarios with libtorrent-rasterbar, run inside the lab namespace.

    python tests/interop/scenario_libtorrent.py all [--capture DIR]

Prints a JSON report: each scenario's measured outcome (see tests/interop/test_libtorrent_lab.py
for what is asserted). libtorrent runs with its default DHT rate limits here.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
from libtorrent_nodes import LibtorrentNode  # noqa: E402
from probe import probe  # noqa: E402

from mldht import InfoHash  # noqa: E402

LT_PORT = 6881


async def scenario_all(the_lab: lab.Lab, capture: Path | None) -> dict:
    report: dict = {"implementation": "libtorrent"}
    import libtorrent as lt
    report["version"] = lt.__version__
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        the_lab.start_capture(capture / "libtorrent.pcap")
    nodes = [await lab.start_mldht(lab.lab_ip(1 + i), 6881) for i in range(3)]
    entry = nodes[0].address
    for node in nodes[1:]:
        await node.ping(entry)
        await node.bootstrap(timeout=3)
    lt_ip = lab.lab_ip(10)
    libtorrent = LibtorrentNode(lt_ip, LT_PORT)
    try:
        # 1. libtorrent bootstrapped from one mldht node alone.
        started = time.monotonic()
        libtorrent.add_node(entry)
        joined = await lab.wait_until(lambda: any(
            e.ip == lt_ip for n in nodes for e in n.routing_table), 30)
        report["joined_seconds"] = joined
        await asyncio.sleep(2.0)  # let its own self-lookup finish
        lt_address = (lt_ip, LT_PORT)
        probed = await probe(nodes[1], lt_address)
        report["probe"] = probed
        lt_id = bytes.fromhex(probed["ping"]["id"]) if "id" in probed["ping"] else b"\0" * 20
        table = await libtorrent.table(lt_id)
        report["libtorrent_table"] = [f"{ip}:{port}" for ip, port in table]
        report["entry_in_table"] = f"{entry[0]}:{entry[1]}" in report["libtorrent_table"]
        report["mldht_in_table"] = sum(
            f"{n.address[0]}:{n.address[1]}" in report["libtorrent_table"] for n in nodes)

        # 2. a peer announced by libtorrent, found by the library and by the CLI.
        announced = InfoHash(os.urandom(20))
        libtorrent.announce(bytes(announced), 7001)
        stored = await lab.wait_until(lambda: any(announced in n.peer_store for n in nodes), 30)
        report["lt_announce_stored_seconds"] = stored
        seeker = nodes[2]
        lookup = seeker.get_peers(announced, timeout=10)
        peers = await lookup.collect()
        report["library_found"] = [f"{ip}:{port}" for ip, port in peers]
        report["library_lookup"] = {"elapsed": round(lookup.summary.elapsed, 3),
                                    "queried": lookup.summary.queried}
        cli_started = time.monotonic()
        code, out, err = await lab.run_mldht_cli(
            "get-peers", announced.hex(), "--bootstrap", lab.address_spec(nodes[1].address),
            "--bind", f"{lab.lab_ip(20)}:0", "--timeout", "10", "--json")
        report["cli"] = {"exit": code, "seconds": round(time.monotonic() - cli_started, 3),
                         "peers": [json.loads(line)["ip"] + ":" + str(json.loads(line)["port"])
                                   for line in out.splitlines() if '"peer"' in line],
                         "stderr": err[-500:]}

        # 3. a peer announced by mldht, found by libtorrent's lookup.
        ours = InfoHash(os.urandom(20))
        result = await nodes[1].announce(ours, 7777, timeout=10)
        report["mldht_announced_to"] = len(result.announced_to)
        found, seconds = await libtorrent.lookup(bytes(ours), 30, expect=(nodes[1].address[0], 7777))
        report["lt_found"] = sorted(f"{ip}:{port}" for ip, port in found)
        report["lt_lookup_seconds"] = seconds

        # 5 (with `probe` above). The stored hash now has a peer on libtorrent's side too?
        # BEP 51 both ways. libtorrent stores the infohash the probe announced to it.
        from mldht.bep51 import InvalidSample
        try:
            sample = await nodes[2].sample_infohashes(lt_address, target=bytes(20))
            report["mldht_samples_libtorrent"] = {
                "samples": sorted(h.hex() for h in sample.samples), "num": sample.num,
                "interval": sample.interval, "nodes": len(sample.nodes)}
        except (InvalidSample, Exception) as exc:  # reported, and the test says which
            report["mldht_samples_libtorrent"] = {"error": repr(exc)}
        report["libtorrent_samples_mldht"] = await libtorrent.sample(nodes[0].address, bytes(20))
        report["mldht_0_stores"] = sorted(h.hex() for h in nodes[0].peer_store.info_hashes())

        # `mldht replay --target`: every query WebTorrent's capture holds, sent to a relaxed
        # libtorrent (the default one would ban a replay faster than 50 queries in 10 s).
        relaxed = LibtorrentNode(lab.lab_ip(11), LT_PORT, relaxed=True)
        try:
            await asyncio.sleep(0.5)
            capture_file = lab.REPO / "fixtures" / "webtorrent.pcap"
            code, out, err = await lab.run_mldht_cli(
                "replay", str(capture_file), "--target", f"{lab.lab_ip(11)}:{LT_PORT}",
                "--bind", f"{lab.lab_ip(21)}:0", "--rate", "200", "--json")
            replayed = json.loads(out) if code in (0, 1) and out.strip() else {}
            report["replay_to_libtorrent"] = {
                "exit": code, "stderr": err[-500:], "replayed": replayed.get("replayed"),
                "answered": replayed.get("answered"), "problems": replayed.get("problems"),
                "differences": len(replayed.get("differences", []))}
        finally:
            await relaxed.close()
        report["bans"] = libtorrent.bans()
        report["mldht_stats"] = [dict(n.stats.queries_received) for n in nodes]
        report["total_seconds"] = round(time.monotonic() - started, 2)
    finally:
        await lab.close_all(libtorrent, *nodes)
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
