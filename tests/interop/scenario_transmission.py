"""Interop with Transmission (transmission-daemon 3.00, jech/dht) in the lab, in ONE daemon run.

Scenario "all" (about two minutes) measures and reports, as JSON:

1. bootstrap: Transmission, given a single mldht node in `dht.bootstrap`, finds the other
   mldht nodes through it and keeps that node in its routing table (`dht.dat`, written at
   SIGTERM);
2. its_announce: the peer Transmission announces for its magnet is found by
   `mldht get-peers` (command line) and by `DHTNode.get_peers` (library);
3. connect: Transmission connects, with a plaintext BitTorrent handshake for its magnet, to a
   peer (a `HandshakeListener`) that an mldht node announced for that infohash;
5. probes: mldht's typed outcomes for ping, find_node, get_peers, announce_peer with a bad
   token (and a good one) and an unknown method sent to Transmission.

Transmission only searches once 4 nodes are good and more than 8 known, and only saves
`dht.dat` when 40 nodes are good (answered one of its queries). A node only becomes good when
Transmission queries it, which it does on its own just once every 5-15 s (table
maintenance) but at once for its searches; so the scenario runs NODES mldht nodes (one
process, one lab address each; jech/dht's first bucket holds 128 nodes, so it never splits)
and gives Transmission MAGNETS torrents with well spread infohashes: each search makes the
~10 nodes closest to its infohash good. `--capture DIR` records every datagram to or from
Transmission in DIR/transmission.pcap.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
from lab import HandshakeListener, address_spec, lab_ip, run_mldht_cli, start_mldht  # noqa: E402
from transmission import (  # noqa: E402
    INSTALL_HINT, TransmissionDaemon, daemon_path)

from mldht import DHTNode, NodeConfig  # noqa: E402
from mldht.engine import QueryReceived  # noqa: E402
from mldht.errors import QueryTimeout, RemoteError  # noqa: E402
from mldht.ids import InfoHash, NodeId  # noqa: E402
from mldht.krpc import AnnouncePeer, FindNode, GetPeers, Ping, UnknownQuery  # noqa: E402

NODES = 64
"""mldht nodes (under the 128 that jech/dht's first bucket holds before it splits)."""
MAGNETS = 8
"""Torrents given to Transmission: the first is "its magnet", the others drive searches."""
TRANSMISSION_HOST = 200
LISTENER_HOST = 201
PROBE_HOST = 202
CLI_HOST = 203
API_HOST = 204
PEER_PORT = 51413
PROBE_ANNOUNCED_PORT = 6881
RPC_PORT = 9091
DEADLINE = 130.0
"""Hard bound (seconds after the daemon starts) on waiting for Transmission."""
WANT_GOOD = 44
"""Stop Transmission once about this many mldht nodes answered it (it saves dht.dat at 40)."""


def _elapsed(daemon: TransmissionDaemon, at: float | None) -> float | None:
    return None if at is None or daemon.started_at is None else round(at - daemon.started_at, 3)


class Watch:
    """What mldht nodes saw of Transmission: every query it sent them, with its time."""

    def __init__(self, transmission_ip: str) -> None:
        self.ip = transmission_ip
        self.queries: list[dict] = []
        self.answered_by: set[int] = set()
        self.first_query_at: float | None = None

    def attach(self, index: int, node: DHTNode) -> None:
        def on_event(event):
            if isinstance(event, QueryReceived) and event.source[0] == self.ip:
                at = time.monotonic()
                self.first_query_at = self.first_query_at or at
                arguments = event.arguments or {}
                entry = {"at": at, "node": index, "method": event.method,
                         "v": None if event.version is None else event.version.hex(),
                         "source_port": event.source[1]}
                if event.method in ("get_peers", "announce_peer"):
                    entry["info_hash"] = (arguments.get(b"info_hash") or b"").hex()
                if event.method == "announce_peer":
                    entry.update(port=arguments.get(b"port"),
                                 implied_port=bool(arguments.get(b"implied_port")),
                                 token_length=len(arguments.get(b"token") or b""))
                self.queries.append(entry)
                self.answered_by.add(index)

        node.add_observer(on_event)


def spread_info_hashes(count: int, rng: random.Random) -> list[InfoHash]:
    """`count` random infohashes in distinct slices of the id space (so that the searches
    for them reach different nodes)."""
    return [InfoHash(bytes([index * 256 // count + rng.randrange(256 // count)])
                     + rng.randbytes(19)) for index in range(count)]


async def outcome(node: DHTNode, address, query, timeout: float = 3.0) -> dict:
    """A typed outcome: response (with what it holds), KRPC error or timeout."""
    started = time.monotonic()
    try:
        response = await node.query(address, query, timeout=timeout)
    except RemoteError as exc:
        return {"outcome": "error", "code": exc.code, "message": exc.message,
                "rtt_ms": round((time.monotonic() - started) * 1000, 1)}
    except QueryTimeout:
        return {"outcome": "timeout", "after_s": timeout}
    return {
        "outcome": "response", "rtt_ms": round((time.monotonic() - started) * 1000, 1),
        "id": response.sender_id.hex(),
        "v": None if response.version is None else response.version.hex(),
        "nodes": None if response.nodes is None else len(response.nodes),
        "nodes6": None if response.nodes6 is None else len(response.nodes6),
        "values": None if response.values is None else [list(v) for v in response.values],
        "token_length": None if response.token is None else len(response.token),
        "token": None if response.token is None else response.token.hex(),
        "ip": None if response.requester is None else list(response.requester),
        "extra_keys": sorted(key.decode("ascii", "replace") for key in response.extra),
    }


async def probe(node: DHTNode, address, info_hash: InfoHash) -> dict:
    """Item 5: each query mldht can send, and what Transmission makes of it."""
    own = node.node_id
    results: dict[str, dict] = {}
    results["ping"] = await outcome(node, address, Ping(transaction_id=b"", sender_id=own))
    results["find_node"] = await outcome(node, address, FindNode(
        transaction_id=b"", sender_id=own, target=NodeId.random()))
    results["get_peers"] = await outcome(node, address, GetPeers(
        transaction_id=b"", sender_id=own, info_hash=info_hash))
    results["announce_peer_bad_token"] = await outcome(node, address, AnnouncePeer(
        transaction_id=b"", sender_id=own, info_hash=info_hash, token=b"\x00" * 8, port=6881))
    token = results["get_peers"].get("token")
    if token:
        results["announce_peer_good_token"] = await outcome(node, address, AnnouncePeer(
            transaction_id=b"", sender_id=own, info_hash=info_hash, token=bytes.fromhex(token),
            port=PROBE_ANNOUNCED_PORT))
        # Now it stores a peer for info_hash: does it answer with values, nodes or both?
        results["get_peers_after_announce"] = await outcome(node, address, GetPeers(
            transaction_id=b"", sender_id=own, info_hash=info_hash))
    results["unknown_method"] = await outcome(node, address, UnknownQuery(
        transaction_id=b"", sender_id=own, name=b"mldht_unknown"))
    results["unknown_method_with_target"] = await outcome(node, address, UnknownQuery(
        transaction_id=b"", sender_id=own, name=b"mldht_find", target=NodeId.random()))
    return results


async def cli_get_peers(info_hash: InfoHash, bootstrap: str, started_at: float) -> dict:
    launched = time.monotonic()
    code, stdout, stderr = await run_mldht_cli(
        "get-peers", info_hash.hex(), "--bootstrap", bootstrap,
        "--bind", f"{lab_ip(CLI_HOST)}:0", "--timeout", "20", "--json", timeout=40)
    peers, summary = [], None
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("type") == "peer":
            peers.append([item["ip"], item["port"]])
        elif item.get("type") == "summary":
            summary = item
    return {"exit": code, "peers": peers, "summary": summary, "stderr": stderr[-1500:],
            "launched_s": round(launched - started_at, 3),
            "done_s": round(time.monotonic() - started_at, 3)}


async def api_get_peers(info_hash: InfoHash, bootstrap: str, started_at: float) -> dict:
    launched = time.monotonic()
    node = await start_mldht(lab_ip(API_HOST), bootstrap=[bootstrap])
    try:
        await node.bootstrap(timeout=8)
        lookup = node.get_peers(info_hash, timeout=15)
        peers = await lookup.collect()
        summary = lookup.summary
    finally:
        await node.close()
    return {"peers": [list(peer) for peer in peers],
            "time_to_first_peer": None if summary is None or summary.time_to_first_peer is None
            else round(summary.time_to_first_peer, 3),
            "queried": summary.queried if summary else None,
            "launched_s": round(launched - started_at, 3),
            "done_s": round(time.monotonic() - started_at, 3)}


async def scenario_all(lab_: lab.Lab, capture: Path | None) -> dict:
    if daemon_path() is None:
        return {"error": INSTALL_HINT}
    rng = random.Random()
    report: dict = {"settings": {"mldht_nodes": NODES, "magnets": MAGNETS}}
    transmission_ip = lab_ip(TRANSMISSION_HOST)
    info_hashes = spread_info_hashes(MAGNETS, rng)
    info_hash = info_hashes.pop(rng.randrange(MAGNETS))
    report["info_hash"] = info_hash.hex()

    # The mldht network: node 0 is the bootstrap node; every node on its own lab address.
    watch = Watch(transmission_ip)
    nodes: list[DHTNode] = []
    entry_spec = ""
    for index in range(NODES):
        node = DHTNode((lab_ip(index + 1), 0), bootstrap=[entry_spec] if index else [],
                       node_id=lab.settled_id(lab_ip(index + 1)),
                       config=NodeConfig(query_timeout=2.0))
        await node.start()
        watch.attach(index, node)
        nodes.append(node)
        entry_spec = entry_spec or address_spec(node.address)
    entry = nodes[0]
    joined_at = time.monotonic()
    await asyncio.gather(*(node.bootstrap(timeout=10) for node in nodes[1:]))
    await entry.bootstrap(timeout=5)
    report["mldht_network"] = {
        "nodes": len(nodes), "join_s": round(time.monotonic() - joined_at, 2),
        "table_sizes_min_max": [min(len(n.routing_table) for n in nodes),
                                max(len(n.routing_table) for n in nodes)]}

    # Item 3's peer: a listener, announced by an mldht node on the same address.
    listener = HandshakeListener()
    listener_address = await listener.start(lab_ip(LISTENER_HOST))
    announcer = await start_mldht(lab_ip(LISTENER_HOST), bootstrap=[entry_spec])
    await announcer.bootstrap(timeout=8)
    announced = await announcer.announce(info_hash, listener_address[1], timeout=15)
    report["listener"] = {"address": list(listener_address),
                          "announced_to": len(announced.announced_to)}

    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        lab_.start_capture(capture / "transmission.pcap", bpf=f"udp and host {transmission_ip}")

    daemon = TransmissionDaemon(lab_, transmission_ip, PEER_PORT, RPC_PORT,
                                bootstrap=[entry.address])
    await daemon.start()
    started_wall = time.time()  # capture timestamps are wall-clock
    await daemon.add_magnet(info_hash)
    for index, other in enumerate(info_hashes):
        await daemon.add_magnet(other, f"mldht-extra-{index}")
    started = daemon.started_at
    assert started is not None

    events: dict[str, float | None] = {"entry_knows_transmission": None,
                                       "handshake": None, "transmission_announce_stored": None}
    tasks: dict[str, asyncio.Task] = {}
    probe_node = await start_mldht(lab_ip(PROBE_HOST))
    transmission_address = daemon.address

    loop_deadline = started + DEADLINE
    while time.monotonic() < loop_deadline and daemon.running():
        now = time.monotonic()
        entry_row = entry.routing_table.get(transmission_address)
        if events["entry_knows_transmission"] is None and entry_row is not None \
                and entry_row.last_response is not None:
            events["entry_knows_transmission"] = now
        if events["handshake"] is None and listener.handshakes:
            events["handshake"] = now
        if events["transmission_announce_stored"] is None and any(
                transmission_address in node.peer_store.get(info_hash, now, 1000, rng)
                for node in nodes):
            events["transmission_announce_stored"] = now
        if watch.first_query_at is not None and "probe" not in tasks and now - started > 20:
            tasks["probe"] = asyncio.create_task(probe(probe_node, transmission_address, info_hash))
        if events["transmission_announce_stored"] is not None and "cli" not in tasks:
            tasks["cli"] = asyncio.create_task(cli_get_peers(info_hash, entry_spec, started))
            tasks["api"] = asyncio.create_task(api_get_peers(info_hash, entry_spec, started))
        finished = all(name in tasks and tasks[name].done() for name in ("probe", "cli", "api"))
        if finished and events["handshake"] is not None and len(watch.answered_by) >= WANT_GOOD:
            break
        await asyncio.sleep(0.25)
    report["waited_s"] = round(time.monotonic() - started, 2)
    report["transmission_queries_answered_by_mldht_nodes"] = len(watch.answered_by)

    for name, task in tasks.items():
        if not task.done():
            task.cancel()
    results = {}
    for name, task in tasks.items():
        try:
            results[name] = await task
        except asyncio.CancelledError:
            results[name] = {"error": "not finished before the deadline"}
        except Exception as exc:  # reported, not raised: the report must still come out
            results[name] = {"error": repr(exc)}

    torrents = await daemon.torrents() if daemon.running() else []
    stop_started = time.monotonic()
    exit_code = await daemon.stop(timeout=20)
    stop_s = round(time.monotonic() - stop_started, 2)
    dat = daemon.dht_dat()
    log_text = daemon.log()
    await lab_.stop_capture()

    # 1. bootstrap
    entry_ip, entry_port = entry.address
    saved = [list(n) for n in (dat or {}).get("nodes", [])]
    mldht_addresses = {node.address for node in nodes}
    report["bootstrap"] = {
        "dht_bootstrap_file": f"{entry_ip} {entry_port}",
        "entry_node_knows_transmission_s": _elapsed(daemon, events["entry_knows_transmission"]),
        "first_query_to_mldht_s": _elapsed(daemon, watch.first_query_at),
        "mldht_nodes_queried_by_transmission": len(watch.answered_by),
        "dht_dat_written": dat is not None,
        "dht_dat_id": None if dat is None or dat.get("id") is None else dat["id"].hex(),
        "dht_dat_nodes": len(saved),
        "dht_dat_mldht_nodes": sum(tuple(n) in mldht_addresses for n in saved),
        "entry_node_in_dht_dat": [entry_ip, entry_port] in saved,
        "dht_dat_other_nodes": [n for n in saved if tuple(n) not in mldht_addresses],
        "not_saving_logged": "Not saving nodes" in log_text,
        "saving_line": next((line.strip() for line in log_text.splitlines()
                             if "Saving" in line and "nodes" in line), None),
    }
    # What Transmission sent to mldht nodes.
    methods: dict[str, int] = {}
    for query in watch.queries:
        methods[query["method"]] = methods.get(query["method"], 0) + 1
    announces = [q for q in watch.queries if q["method"] == "announce_peer"]
    first = {m: _elapsed(daemon, min(q["at"] for q in watch.queries if q["method"] == m))
             for m in methods}
    report["transmission_queries"] = {
        "by_method": methods, "first_s": first,
        "v": sorted({q["v"] for q in watch.queries if q["v"] is not None}),
        "without_v": sum(q["v"] is None for q in watch.queries),
        "source_ports": sorted({q["source_port"] for q in watch.queries}),
        "announce_peer": [{k: q[k] for k in ("node", "port", "implied_port", "token_length")}
                          for q in announces],
        "searched_info_hashes": len({q["info_hash"] for q in watch.queries
                                     if q["method"] == "get_peers"}),
    }
    # 2. its announce, found by mldht
    cli = results.get("cli", {"error": "never started (Transmission's announce not seen)"})
    api = results.get("api", {"error": "never started (Transmission's announce not seen)"})
    expected = list(transmission_address)
    own_announces = [q["at"] for q in announces if q["info_hash"] == info_hash.hex()]
    report["its_announce"] = {
        "transmission_peer": expected,
        "first_announce_peer_s": _elapsed(daemon, min(own_announces, default=None)),
        "announce_peer_queries_for_it": len(own_announces),
        "stored_by_mldht_s": _elapsed(daemon, events["transmission_announce_stored"]),
        "cli": cli, "api": api,
        "cli_found": expected in cli.get("peers", []),
        "api_found": expected in api.get("peers", []),
        "cli_found_s": cli.get("done_s") if expected in cli.get("peers", []) else None,
        "api_found_s": api.get("done_s") if expected in api.get("peers", []) else None,
    }
    # 3. connect to the peer mldht announced
    report["connect"] = {
        "handshake_s": _elapsed(daemon, events["handshake"]),
        "handshakes": [[list(peer), info.hex()] for peer, info in listener.handshakes[:5]],
        "info_hash_matches": info_hash in listener.info_hashes(),
        "from_transmission_ip": any(peer[0] == transmission_ip
                                    for peer, _ in listener.handshakes),
        "torrents": torrents,
    }
    # 5. probes
    report["probes"] = results.get("probe", {"error": "never started"})
    report["transmission_exit"] = {"code": exit_code, "stop_s": stop_s}
    if capture is not None:
        pcap = capture / "transmission.pcap"
        traffic = lab.krpc_traffic(pcap, {transmission_ip})
        first, last = traffic.pop("first_time"), traffic.pop("last_time")
        report["capture"] = {
            **traffic, "tcpdump": lab_.capture_stats,
            "first_s": None if first is None else round(first - started_wall, 3),
            "last_s": None if last is None else round(last - started_wall, 3)}
    everyone = [*nodes, announcer, probe_node]
    report["mldht_stats"] = {
        name: sum(getattr(node.stats, name) for node in everyone)
        for name in ("malformed_received", "receive_path_failures", "unmatched_received",
                     "errors_received", "errors_sent", "send_failures")}
    report["log_errors"] = [line.strip() for line in log_text.splitlines()
                            if " ERR " in line or "rror" in line][:10]

    await lab.close_all(listener, *nodes, announcer, probe_node)
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
