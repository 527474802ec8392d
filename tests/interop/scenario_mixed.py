"""Scenario 4: one DHT of four implementations, run inside the lab namespace.

    python tests/interop/scenario_mixed.py all [--capture DIR]

7 mldht nodes (one of them beside a BitTorrent listener), 5 libtorrent sessions (default DHT settings: rate limits and DoS blocker on),
5 WebTorrent bittorrent-dht nodes, 2 aria2 and 2 Transmission daemons: 21 nodes. They join
through different entry points (mldht, libtorrent and WebTorrent nodes), so the network is
mixed rather than a star around mldht. Then every implementation looks up a peer announced by
another implementation:

- libtorrent announces H_lt: found by WebTorrent and by mldht;
- WebTorrent announces H_wt: found by libtorrent and by mldht;
- mldht announces a BitTorrent listener for H_ml: found by libtorrent and WebTorrent, and
  aria2 and Transmission, fetching the magnet of H_ml, connect to that listener;
- aria2 and Transmission announce themselves for H_ml: found by mldht.

Then the peer finder (tools/peer_finder.py, run as a command in the lab) reads H_lt, H_wt and
H_ml from one input file, joins through a libtorrent, a WebTorrent and an mldht node, and must
find every peer above: libtorrent's, WebTorrent's, and for H_ml mldht's listener and each
aria2 and Transmission peer (by address: the ports these clients announce are known).

Then the crawler (tools/crawler.py crawl, one sweep with BEP 51 samples, run as a command in
the lab) joins through a libtorrent, a WebTorrent and an mldht node, and must find every node
of every implementation and name its client from `v`; libtorrent and mldht nodes answer
sample_infohashes with the infohashes they store. Neither libtorrent's DoS blocker nor
mldht's per-IP limits may have dropped it.

At the end the report tells whether any reference node dropped or banned an mldht node:
libtorrent's DoS blocker log, and whether mldht nodes are still in every libtorrent,
WebTorrent and aria2 routing table (Transmission saves its table only once it has 40 good
nodes, more than this network has).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
from aria2 import Aria2  # noqa: E402
from libtorrent_nodes import LibtorrentNode  # noqa: E402
from transmission import TransmissionDaemon  # noqa: E402
from webtorrent import WebTorrentNodes  # noqa: E402

from mldht import InfoHash  # noqa: E402

MLDHT = 6
LIBTORRENT = 5
WEBTORRENT = 5
PORT = 6881
PEER_FINDER = lab.REPO / "tools" / "peer_finder.py"
FINDER_HOST = 50  # lab host index of the peer finder's node (no other node uses it)
FINDER_LOOKUP_TIMEOUT = 20.0
FINDER_PROCESS_TIMEOUT = 90.0
CRAWLER = lab.REPO / "tools" / "crawler.py"
CRAWLER_HOST = 51  # lab host index of the crawler's node (no other node uses it)
CRAWLER_QUERY_TIMEOUT = 3.0
CRAWLER_PROCESS_TIMEOUT = 90.0


def spec(address) -> str:
    return f"{address[0]}:{address[1]}"


async def run_peer_finder(the_lab: lab.Lab, info_hashes: dict[str, InfoHash],
                          bootstrap: list[str],
                          expected: dict[str, list[tuple[str, str]]]) -> dict:
    """Run tools/peer_finder.py on one input file of `info_hashes` ({label: hash}), joining
    through `bootstrap`; report its exit code, what it found per infohash and, per
    implementation, which of its `expected` peers ([(label, "ip:port")]) were found: by
    address (`found`) and by IP alone (`ip_found`, to tell a wrong port from a missed peer)."""
    input_file = the_lab.path("peer_finder_input.txt")
    output_file = the_lab.path("peer_finder_output.jsonl")
    input_file.write_text(
        "# mixed scenario: the infohashes announced by libtorrent (lt), WebTorrent (wt) and "
        "mldht, aria2 and Transmission (ml)\n"
        + "".join(f"{info_hash.hex()}\n" for info_hash in info_hashes.values()))
    argv = [sys.executable, str(PEER_FINDER), "-i", str(input_file), "-o", str(output_file),
            *(arg for spec_ in bootstrap for arg in ("--bootstrap", spec_)),
            "--bind", f"{lab.lab_ip(FINDER_HOST)}:0", "--timeout", str(FINDER_LOOKUP_TIMEOUT)]
    started = time.monotonic()
    # Spawned through the lab (tracked by PID, killed with the scenario) and waited for
    # without blocking: the mldht nodes of this scenario run on this event loop.
    process = the_lab.spawn("peer_finder", argv, cwd=lab.REPO)
    finished = await lab.wait_until(lambda: process.poll() is not None,
                                    FINDER_PROCESS_TIMEOUT, step=0.2)
    timed_out = finished is None
    exit_code = await the_lab.stop("peer_finder") if timed_out else process.returncode
    seconds = round(time.monotonic() - started, 2)
    records = {}
    if output_file.exists():
        for line in output_file.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["infohash"]] = record
    results: dict = {}
    for implementation, peers in expected.items():
        results[implementation] = []
        for label, peer in peers:
            found = records.get(info_hashes[label].hex(), {}).get("peers", [])
            results[implementation].append({
                "info_hash": label, "peer": peer, "found": peer in found,
                "ip_found": peer.rsplit(":", 1)[0] in {p.rsplit(":", 1)[0] for p in found}})
    expected_by_hash: dict[str, set[str]] = {}
    for peers in expected.values():
        for label, peer in peers:
            expected_by_hash.setdefault(label, set()).add(peer)
    return {
        "exit_code": exit_code, "timed_out": timed_out, "seconds": seconds,
        "bootstrap": bootstrap, "lines": len(records),
        "records": {label: {key: records.get(info_hash.hex(), {}).get(key) for key in (
            "peers", "peer_count", "time_to_first_peer", "elapsed", "queried", "answered",
            "error")} for label, info_hash in info_hashes.items()},
        "unexpected": {label: sorted(set(records.get(info_hash.hex(), {}).get("peers", []))
                                     - expected_by_hash.get(label, set()))
                       for label, info_hash in info_hashes.items()},
        "expected": results,
        "log_tail": the_lab.log("peer_finder")[-3000:],
    }


async def run_crawler(the_lab: lab.Lab, bootstrap: list[str],
                      implementations: dict[str, list[str]],
                      info_hashes: dict[str, InfoHash]) -> dict:
    """Run tools/crawler.py (one sweep, BEP 51 samples kept) joining through `bootstrap`,
    then read its database: per implementation (`implementations`: {name: [node IPs]}) how
    many of its nodes the crawler found (answered) and visited, the client names and the raw
    `v` values it recorded, BEP 51 answers, and which of the scenario's `info_hashes` its
    nodes sampled. Visits of IPs no scenario node has are reported under `others`."""
    database = the_lab.path("crawl.sqlite")
    summary_file = the_lab.path("crawler_summary.json")
    argv = [sys.executable, str(CRAWLER), "crawl", "--db", str(database),
            *(arg for spec_ in bootstrap for arg in ("--bootstrap", spec_)),
            "--bind", f"{lab.lab_ip(CRAWLER_HOST)}:0", "--sweeps", "1", "--samples", "--json",
            "--timeout", str(CRAWLER_QUERY_TIMEOUT), "-q"]
    started = time.monotonic()
    with open(summary_file, "wb") as stdout:  # --json: the summary on stdout
        # Spawned through the lab (tracked by PID, killed with the scenario) and waited for
        # without blocking: the mldht nodes of this scenario run on this event loop.
        process = the_lab.spawn("crawler", argv, cwd=lab.REPO, stdout=stdout)
    finished = await lab.wait_until(lambda: process.poll() is not None,
                                    CRAWLER_PROCESS_TIMEOUT, step=0.2)
    timed_out = finished is None
    exit_code = await the_lab.stop("crawler") if timed_out else process.returncode
    seconds = round(time.monotonic() - started, 2)
    summary = None
    lines = [line for line in summary_file.read_text().splitlines() if line.startswith("{")]
    if lines:
        summary = json.loads(lines[-1])
        summary.pop("estimates", None)
    result: dict = {"exit_code": exit_code, "timed_out": timed_out, "seconds": seconds,
                    "bootstrap": bootstrap, "summary": summary,
                    "log_tail": the_lab.log("crawler")[-3000:]}
    if not database.exists():
        result["error"] = "no database"
        return result
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        visits = {row[0]: row for row in connection.execute(
            "SELECT ip, port, outcome, client, client_version, v, bep51, samples, error_code, "
            "queries FROM visits")}
        contacts = {ip for (ip,) in connection.execute("SELECT DISTINCT ip FROM contacts")}
        sampled: dict[str, set[bytes]] = {}
        for infohash, ip in connection.execute("SELECT infohash, ip FROM samples"):
            sampled.setdefault(ip, set()).add(bytes(infohash))
        result["crawls"] = [dict(zip(("status", "sweeps_done"), row)) for row in
                            connection.execute("SELECT status, sweeps_done FROM crawls")]
    finally:
        connection.close()
    labels = {bytes(info_hash): label for label, info_hash in info_hashes.items()}
    known_ips: set[str] = set()
    per_implementation: dict[str, dict] = {}
    for name, ips in implementations.items():
        known_ips.update(ips)
        clients: dict[str, int] = {}
        raw: set[str] = set()
        bep51: dict[str, int] = {}
        nodes: dict[str, dict] = {}
        for ip in ips:
            visit = visits.get(ip)
            if visit is None:
                nodes[ip] = {"listed": ip in contacts, "outcome": None}
                continue
            _, port, outcome, client, client_version, v, bep, count, error_code, queries = visit
            nodes[ip] = {"listed": ip in contacts, "port": port, "outcome": outcome,
                         "error_code": error_code, "queries": queries, "client": client,
                         "client_version": client_version,
                         "v": None if v is None else bytes(v).hex(), "bep51": bep,
                         "samples": count,
                         "sampled": sorted(labels.get(h, "other") for h in sampled.get(ip, ()))}
            if outcome == "answered":
                key = str(client)  # "None": answered without a `v` the crawler could name
                clients[key] = clients.get(key, 0) + 1
                raw.add("none" if v is None else bytes(v).hex())
                bep51[str(bep)] = bep51.get(str(bep), 0) + 1
        answered = [ip for ip in ips if nodes[ip]["outcome"] == "answered"]
        per_implementation[name] = {
            "nodes": len(ips), "found": len(answered),
            "listed": sum(node["listed"] for node in nodes.values()),
            "visited": sum(node["outcome"] is not None for node in nodes.values()),
            "clients": clients, "v": sorted(raw), "bep51": bep51,
            "samples": sum(node.get("samples") or 0 for node in nodes.values()),
            "sampled": sorted({label for node in nodes.values()
                               for label in node.get("sampled", [])}),
            "missed": {ip: node for ip, node in nodes.items() if ip not in answered},
            "per_node": nodes}
    result["implementations"] = per_implementation
    result["others"] = {ip: {"outcome": row[2], "client": row[3],
                             "v": None if row[5] is None else bytes(row[5]).hex()}
                        for ip, row in visits.items() if ip not in known_ips}
    result["visits"] = len(visits)
    result["contacts"] = len(contacts)
    return result


async def scenario_all(the_lab: lab.Lab, capture: Path | None) -> dict:
    report: dict = {"nodes": {}}
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        the_lab.start_capture(capture / "mixed.pcap")
    started = time.monotonic()
    mldht = [await lab.start_mldht(lab.lab_ip(1), PORT)]
    entry = mldht[0].address
    mldht += [await lab.start_mldht(lab.lab_ip(1 + i), PORT, bootstrap=[spec(entry)])
              for i in range(1, MLDHT)]
    # The seventh mldht node shares the BitTorrent listener's IP: BEP 5 announces the
    # sender's IP, so this node announces the listener for H_ml.
    peer_ip = lab.lab_ip(40)
    peer_node = await lab.start_mldht(peer_ip, PORT, bootstrap=[spec(entry)])
    mldht.append(peer_node)
    libtorrent: list[LibtorrentNode] = []
    webtorrent = WebTorrentNodes(the_lab)
    aria: list[Aria2] = []
    transmission: list[TransmissionDaemon] = []
    listener = lab.HandshakeListener()
    h_lt, h_wt, h_ml = (InfoHash(os.urandom(20)) for _ in range(3))
    report["info_hashes"] = {"lt": h_lt.hex(), "wt": h_wt.hex(), "ml": h_ml.hex()}
    try:
        # --- joining: mldht through M0; libtorrent through M0 and M1; WebTorrent through a
        # libtorrent node and an mldht node; aria2 through libtorrent and WebTorrent;
        # Transmission through mldht.
        await asyncio.gather(*(node.bootstrap(timeout=5) for node in mldht[1:]))
        for i in range(LIBTORRENT):
            node = LibtorrentNode(lab.lab_ip(11 + i), PORT)
            node.add_node(mldht[i % 2].address)
            libtorrent.append(node)
        await asyncio.sleep(3.0)
        await webtorrent.start()
        for i in range(WEBTORRENT):
            await webtorrent.start_dht(f"w{i}", lab.lab_ip(21 + i), PORT, bootstrap=[
                f"{lab.lab_ip(11 + i % LIBTORRENT)}:{PORT}", spec(mldht[2 + i % 4].address)])
        for node in mldht:  # mldht nodes refresh so that they learn the newcomers
            await node.bootstrap(timeout=5)
        report["joined_seconds"] = round(time.monotonic() - started, 2)
        lab.progress("joined: mldht, libtorrent, WebTorrent")

        # --- announces
        _, peer_port = await listener.start(peer_ip)
        for attempt in range(6):  # dht_announce is one-shot: repeat until a node stored it
            libtorrent[0].announce(bytes(h_lt), 7001)
            stored = await lab.wait_until(lambda: any(h_lt in n.peer_store for n in mldht), 5)
            if stored is not None:
                break
        report["libtorrent_announce_attempts"] = attempt + 1
        await webtorrent.announce("w0", h_wt.hex(), 7002)
        peer_result = await peer_node.announce(h_ml, peer_port, timeout=10)
        report["listener"] = f"{peer_ip}:{peer_port}"
        report["listener_announce_accepted_by"] = len(peer_result.announced_to)

        lab.progress("announced")
        for i in range(2):
            entry_point = (lab.lab_ip(13), PORT) if i == 0 else (lab.lab_ip(22), PORT)
            client = Aria2(the_lab, lab.lab_ip(31 + i), bytes(h_ml), entry_point,
                           name=f"aria2-{i}")
            await client.start()
            aria.append(client)
        for i in range(2):
            daemon = TransmissionDaemon(the_lab, lab.lab_ip(35 + i), 51413, 9091,
                                        name=f"transmission-{i}",
                                        bootstrap=[mldht[4 + i].address])
            await daemon.start()
            await daemon.add_magnet(bytes(h_ml))
            transmission.append(daemon)

        lab.progress("aria2 and Transmission started")
        # --- lookups by every implementation
        lookups: dict[str, dict] = {}

        async def mldht_lookup(label: str, node, info_hash: InfoHash, expect: str) -> None:
            deadline = time.monotonic() + 60
            while True:
                lookup = node.get_peers(info_hash, timeout=10)
                peers = {spec(p) for p in await lookup.collect()}
                found = expect in peers or expect in {p.split(":")[0] for p in peers}
                if found or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
            lookups[label] = {"found": found, "seconds": round(lookup.summary.elapsed, 3),
                              "queried": lookup.summary.queried, "peers": sorted(peers)}
            lab.progress(f"{label}: {lookups[label]}")

        async def lt_lookup(label: str, node: LibtorrentNode, info_hash: InfoHash, expect) -> None:
            found, seconds = await node.lookup(bytes(info_hash), 60, expect=expect)
            lookups[label] = {"found": expect in found, "seconds": seconds}
            lab.progress(f"{label}: {lookups[label]}")

        async def wt_lookup(label: str, name: str, info_hash: InfoHash, expect: str) -> None:
            deadline = time.monotonic() + 60
            while True:
                result = await webtorrent.lookup(name, info_hash.hex(), timeout=10)
                peers = {f"{p['host']}:{p['port']}" for p in result["peers"]}
                if expect in peers or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
            first = result.get("firstPeerMs")
            lookups[label] = {"found": expect in peers,
                              "seconds": None if first is None else round(first / 1000, 3),
                              "visited": result.get("visited")}
            lab.progress(f"{label}: {lookups[label]}")

        lt_peer = f"{lab.lab_ip(11)}:7001"
        wt_peer = f"{lab.lab_ip(21)}:7002"
        ml_peer = f"{peer_ip}:{peer_port}"
        await asyncio.gather(
            mldht_lookup("mldht finds libtorrent's peer", mldht[5], h_lt, lt_peer),
            mldht_lookup("mldht finds WebTorrent's peer", mldht[4], h_wt, wt_peer),
            wt_lookup("WebTorrent finds libtorrent's peer", "w3", h_lt, lt_peer),
            wt_lookup("WebTorrent finds mldht's peer", "w4", h_ml, ml_peer),
            lt_lookup("libtorrent finds WebTorrent's peer", libtorrent[3], h_wt,
                      (lab.lab_ip(21), 7002)),
            lt_lookup("libtorrent finds mldht's peer", libtorrent[4], h_ml, (peer_ip, peer_port)),
        )

        # aria2 and Transmission: they connect to the listener mldht announced for H_ml.
        def connected_from(ip: str) -> bool:
            return any(address[0] == ip and info_hash == bytes(h_ml)
                       for address, info_hash in listener.handshakes)

        async def connects(label: str, ip: str, since_start, timeout: float) -> None:
            seconds = await lab.wait_until(lambda: connected_from(ip), timeout)
            lookups[label] = {"found": seconds is not None,
                              "seconds": round(since_start(), 2) if seconds is not None else None}
            lab.progress(f"{label}: {lookups[label]}")

        await asyncio.gather(
            *(connects(f"{c.name} connects to mldht's peer", c.ip, c.elapsed, 60) for c in aria),
            *(connects(f"{d.name} connects to mldht's peer", d.ip, d.since_start, 120)
              for d in transmission))
        lab.progress(f"handshakes: {sorted({a[0] for a, _ in listener.handshakes})}")
        # ... and announce themselves for H_ml, which mldht finds.
        for client in aria:  # aria2 announces the TCP port it really listens on
            await mldht_lookup(f"mldht finds {client.name}'s peer", mldht[1], h_ml, client.ip)
        for daemon in transmission:
            await mldht_lookup(f"mldht finds {daemon.name}'s peer", mldht[2], h_ml, daemon.ip)
        report["lookups"] = lookups

        lab.progress("lookups done")
        # --- the peer finder: every infohash of the scenario in one input file, joined
        # through nodes of three implementations, while every announcer still runs.
        finder = await run_peer_finder(
            the_lab, {"lt": h_lt, "wt": h_wt, "ml": h_ml},
            bootstrap=[f"{libtorrent[1].ip}:{PORT}", f"{lab.lab_ip(22)}:{PORT}",
                       spec(mldht[3].address)],
            expected={
                "libtorrent": [("lt", lt_peer)],
                "WebTorrent": [("wt", wt_peer)],
                "mldht": [("ml", ml_peer)],
                # aria2 announces its BitTorrent listen port, Transmission its peer port.
                "aria2": [("ml", spec(client.peer_address)) for client in aria],
                "Transmission": [("ml", spec(daemon.address)) for daemon in transmission],
            })
        report["peer_finder"] = finder
        found = {name: f"{sum(p['found'] for p in peers)}/{len(peers)}"
                 for name, peers in finder["expected"].items()}
        lab.progress(f"peer finder: exit {finder['exit_code']} in {finder['seconds']} s, "
                     f"found {found}")
        # --- the crawler: one sweep from a libtorrent, a WebTorrent and an mldht node, while
        # every implementation still runs (the table check below stops aria2).
        mldht_rate_limited_before = [node.stats.rate_limited for node in mldht]
        bans_before = [line for node in libtorrent for line in node.bans()]
        crawl = await run_crawler(
            the_lab, bootstrap=[f"{libtorrent[2].ip}:{PORT}", f"{lab.lab_ip(24)}:{PORT}",
                                spec(mldht[1].address)],
            implementations={
                "libtorrent": [node.ip for node in libtorrent],
                "WebTorrent": [lab.lab_ip(21 + i) for i in range(WEBTORRENT)],
                "aria2": [client.ip for client in aria],
                "Transmission": [daemon.ip for daemon in transmission],
                "mldht": [node.address[0] for node in mldht],
            },
            info_hashes={"lt": h_lt, "wt": h_wt, "ml": h_ml})
        crawl["libtorrent_bans_before"] = bans_before
        crawl["libtorrent_bans"] = [line for node in libtorrent for line in node.bans()]
        crawl["mldht_rate_limited_before"] = mldht_rate_limited_before
        crawl["mldht_rate_limited"] = [node.stats.rate_limited for node in mldht]
        # What each mldht node stores (all of it fits in one BEP 51 sample: its samples).
        crawl["mldht_stored"] = {node.address[0]: sorted(
            label for label, info_hash in (("lt", h_lt), ("wt", h_wt), ("ml", h_ml))
            if info_hash in node.peer_store) for node in mldht}
        crawl["peer_finder_ip"] = lab.lab_ip(FINDER_HOST)
        report["crawler"] = crawl
        found = {name: f"{figures['found']}/{figures['nodes']} {figures['clients']}"
                 for name, figures in crawl.get("implementations", {}).items()}
        lab.progress(f"crawler: exit {crawl['exit_code']} in {crawl['seconds']} s, "
                     f"found {found}")
        # --- was mldht dropped or banned?
        mldht_addresses = {spec(node.address) for node in mldht}
        tables = {}
        for node in libtorrent:
            # libtorrent moves to a BEP 42 id once it learns its external IP: ask it now.
            own = await mldht[0].ping((node.ip, PORT), timeout=3)
            table = {spec(a) for a in await node.table(bytes(own))}
            tables[f"libtorrent {node.ip}"] = {"size": len(table),
                                               "mldht": len(table & mldht_addresses),
                                               "missing": sorted(mldht_addresses - table)}
        for i in range(WEBTORRENT):
            table = {f"{n['host']}:{n['port']}" for n in await webtorrent.table(f"w{i}")}
            tables[f"webtorrent w{i}"] = {"size": len(table), "mldht": len(table & mldht_addresses),
                                          "missing": sorted(mldht_addresses - table)}
        for client in aria:  # aria2 writes its table (good nodes only) when it stops
            await client.stop()
            saved = {spec(n.address) for n in client.routing_table().nodes}
            tables[f"aria2 {client.ip}"] = {"size": len(saved),
                                            "mldht": len(saved & mldht_addresses)}
        report["tables"] = tables
        report["libtorrent_bans"] = [line for node in libtorrent for line in node.bans()]
        report["mldht_tables"] = [len(node.routing_table) for node in mldht]
        report["mldht_external_ips_right"] = sum(n.external_ip == n.address[0] for n in mldht)
        report["mldht_rate_limited"] = [node.stats.rate_limited for node in mldht]
        report["mldht_queries_received"] = [sum(node.stats.queries_received.values())
                                            for node in mldht]
        report["nodes"] = {"mldht": len(mldht), "libtorrent": len(libtorrent),
                           "webtorrent": WEBTORRENT, "aria2": len(aria),
                           "transmission": len(transmission)}
        report["total_seconds"] = round(time.monotonic() - started, 1)
    finally:
        for client in aria:
            await client.stop()
        for daemon in transmission:
            await daemon.stop()
        await lab.close_all(webtorrent, *libtorrent, listener, *mldht)
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
