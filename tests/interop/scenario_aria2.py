"""Interop scenario: mldht and aria2 (1.36) in the lab.

    python tests/interop/scenario_aria2.py all [--workdir DIR] [--capture DIR]

Hosts: mldht nodes n1 (aria2's only `--dht-entry-point`), n2, n3 (joined through n1; n3
rejects every announce token, so that aria2 meets a KRPC error), an announcer node with a
`HandshakeListener` on its address (host 5), aria2 on host 4, a library lookup node (6), the
`mldht get-peers` command (7) and a probe node (8). One infohash H: the announcer announces its
listener for H, then aria2 fetches the magnet of H. The report (JSON, last line) covers:

1. bootstrap: aria2 started with n1 alone has n1 in its dht.dat after a graceful stop (and
   aria2 is a verified node of n1); a restart with that dht.dat keeps aria2's id and sends
   find_node to the saved nodes;
2. announce: the peer aria2 announces (its BitTorrent listen port) is found by the command line
   and by `DHTNode.get_peers`;
3. connect: aria2 connects to the listener mldht announced and sends a handshake for H;
5. probes: typed outcomes of ping, find_node, get_peers, announce_peer (bad token, implied_port
   with and without port) and unknown methods sent to aria2's DHT port.

With --capture DIR every UDP datagram goes to DIR/aria2.pcap; the report lists the message
kinds aria2 sent and received in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
from aria2 import Aria2, aria2c_path, aria2c_version  # noqa: E402

from mldht.engine import QueryReceived  # noqa: E402
from mldht.errors import QueryTimeout, RemoteError  # noqa: E402
from mldht.ids import InfoHash, NodeId  # noqa: E402
from mldht.krpc import (  # noqa: E402
    AnnouncePeer, FindNode, GetPeers, Ping, UnknownQuery,
)

ARIA2_HOST = 4
PCAP_LIMIT = 300_000


def _hex(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def _version(v: bytes | None) -> str | None:
    """A `v` key as text: two client letters then the version bytes in hex (A2 0003)."""
    if v is None:
        return None
    return v[:2].decode("ascii", "replace") + (" " + v[2:].hex() if len(v) > 2 else "")


class RecordingListener(lab.HandshakeListener):
    """A HandshakeListener that also records every TCP connection with its time: aria2 first
    tries an encrypted (MSE) handshake, which the listener cannot read, then a plain one."""

    def __init__(self, clock_origin: float) -> None:
        super().__init__()
        self.origin = clock_origin
        self.connections: list[tuple[float, tuple[str, int]]] = []
        self.handshake_times: list[float] = []

    async def _on_connection(self, reader, writer) -> None:
        self.connections.append((time.monotonic(), writer.get_extra_info("peername")[:2]))
        before = len(self.handshakes)
        await super()._on_connection(reader, writer)
        if len(self.handshakes) > before:
            self.handshake_times.append(time.monotonic())


class RejectingTokens:
    """Stands in for a node's TokenManager: issues tokens but accepts none, so that every
    announce_peer to that node gets KRPC error 203."""

    def __init__(self, real) -> None:
        self.real = real

    def issue(self, ip, info_hash, now):
        return self.real.issue(ip, info_hash, now)

    def is_valid(self, token, ip, info_hash, now):
        return False


def record_queries(node, label: str, log: list[dict]) -> None:
    """Log every query `node` receives (who, what, when)."""

    def on_event(event):
        if not isinstance(event, QueryReceived):
            return
        entry = {"node": label, "from": list(event.source), "method": event.method,
                 "v": _version(event.version), "sender_id": (event.sender_id or b"").hex(),
                 "t": time.monotonic(), "ro": event.read_only}
        if event.method == "announce_peer":
            arguments = event.arguments or {}
            entry.update(port=arguments.get(b"port"),
                         implied_port=bool(arguments.get(b"implied_port")),
                         token_length=len(arguments.get(b"token") or b""))
        log.append(entry)

    node.add_observer(on_event)


def labels_of(nodes: dict, aria2: Aria2, address) -> str:
    if tuple(address) == aria2.dht_address:
        return "aria2"
    for label, node in nodes.items():
        if node.address == tuple(address):
            return label
    return f"{address[0]}:{address[1]}"


def stored_peers(node, info_hash: bytes) -> list[tuple[str, int]]:
    return node.peer_store.get(info_hash, time.monotonic(), 1000, random.Random(0), ipv6=False)


async def probe(node, address, query, timeout: float) -> dict:
    """Send one query and describe the typed outcome."""
    started = time.monotonic()
    try:
        response = await node.query(address, query, timeout=timeout)
    except QueryTimeout:
        return {"outcome": "timeout", "after": round(time.monotonic() - started, 3)}
    except RemoteError as exc:
        return {"outcome": "error", "code": exc.code, "message": exc.message,
                "rtt_ms": round((time.monotonic() - started) * 1000, 2)}
    return {
        "outcome": "response", "rtt_ms": round((time.monotonic() - started) * 1000, 2),
        "id": response.sender_id.hex(), "v": _version(response.version),
        "nodes": None if response.nodes is None else len(response.nodes),
        "node_addresses": [list(n.address) for n in response.nodes or []],
        "nodes6": None if response.nodes6 is None else len(response.nodes6),
        "values": None if response.values is None else [list(v) for v in response.values],
        "token_length": None if response.token is None else len(response.token),
        "token": _hex(response.token),
        "ip": None if response.requester is None else list(response.requester),
        "extra_keys": sorted(key.decode(errors="replace") for key in response.extra),
    }


async def run_probes(node, aria2: Aria2, info_hash: bytes) -> dict:
    """Item 5: what aria2 answers to each kind of query mldht can send."""
    target = aria2.dht_address
    me = node.node_id
    results: dict[str, dict] = {}
    results["ping"] = await probe(node, target, Ping(transaction_id=b"", sender_id=me), 3)
    results["find_node"] = await probe(node, target, FindNode(
        transaction_id=b"", sender_id=me, target=NodeId(os.urandom(20))), 3)
    results["get_peers"] = await probe(node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=InfoHash(info_hash)), 3)
    results["get_peers_unknown_hash"] = await probe(node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=InfoHash(os.urandom(20))), 3)
    token = bytes.fromhex(results["get_peers"].get("token") or "00")
    fake_port = 4242
    # Queries aria2 may not answer: sent together, each with its own timeout.
    silent = {
        "announce_peer_bad_token": AnnouncePeer(
            transaction_id=b"", sender_id=me, info_hash=InfoHash(info_hash),
            token=b"not-a-token", port=fake_port),
        "announce_peer_implied_port_without_port": AnnouncePeer(
            transaction_id=b"", sender_id=me, info_hash=InfoHash(info_hash), token=token,
            port=None, implied_port=True),
        "unknown_method": UnknownQuery(transaction_id=b"", sender_id=me, name=b"frobnicate"),
        "unknown_method_with_target": UnknownQuery(
            transaction_id=b"", sender_id=me, name=b"sample_infohashes",
            target=NodeId(os.urandom(20))),
    }
    outcomes = await asyncio.gather(*(probe(node, target, query, 3) for query in silent.values()))
    results.update(zip(silent, outcomes))
    # A valid token with implied_port=1 and an explicit port: which port does aria2 store?
    results["announce_peer_implied_port"] = await probe(node, target, AnnouncePeer(
        transaction_id=b"", sender_id=me, info_hash=InfoHash(info_hash), token=token,
        port=fake_port, implied_port=True), 3)
    after = await probe(node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=InfoHash(info_hash)), 3)
    results["get_peers_after_announce"] = after
    values = [tuple(v) for v in after.get("values") or []]
    own_ip, own_udp_port = node.address
    return {
        "results": results,
        "token_length": results["get_peers"].get("token_length"),
        "version": results["ping"].get("v"),
        "answers_unknown_method": results["unknown_method"]["outcome"] != "timeout",
        "answers_bad_token": results["announce_peer_bad_token"]["outcome"] != "timeout",
        "implied_port": {
            "announced_port": fake_port, "probe_udp_port": own_udp_port,
            "stored_explicit_port": (own_ip, fake_port) in values,
            "stored_udp_port": (own_ip, own_udp_port) in values,
        },
    }


# --- the scenario ----------------------------------------------------------------------------


async def scenario_all(the_lab: lab.Lab, capture: Path | None) -> dict:
    origin = time.monotonic()
    report: dict = {"aria2": {"path": aria2c_path(), "version": aria2c_version()}}
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        pcap = capture / "aria2.pcap"
        the_lab.start_capture(pcap)
    queries: list[dict] = []
    info_hash = os.urandom(20)
    report["info_hash"] = info_hash.hex()

    # mldht network: n1 (entry point), n2 and n3 joined through it; n3 rejects announces.
    n1 = await lab.start_mldht(lab.lab_ip(1))
    n2 = await lab.start_mldht(lab.lab_ip(2), bootstrap=[lab.address_spec(n1.address)])
    n3 = await lab.start_mldht(lab.lab_ip(3), bootstrap=[lab.address_spec(n1.address)])
    handler = n3.engine.family("ipv4").handler
    handler.tokens = RejectingTokens(handler.tokens)
    nodes = {"n1": n1, "n2": n2, "n3": n3}
    for label, node in nodes.items():
        record_queries(node, label, queries)
    await asyncio.gather(n2.bootstrap(timeout=5), n3.bootstrap(timeout=5))

    # Item 3 preparation: the announcer announces its listener for H before aria2 starts.
    listener = RecordingListener(origin)
    listener_address = await listener.start(lab.lab_ip(5))
    announcer = await lab.start_mldht(lab.lab_ip(5), bootstrap=[lab.address_spec(n1.address)])
    nodes["announcer"] = announcer
    record_queries(announcer, "announcer", queries)
    await announcer.bootstrap(timeout=5)
    announced = await announcer.announce(info_hash, listener_address[1], timeout=10)
    report["listener_announce"] = {
        "listener": list(listener_address),
        "accepted_by": [list(n.address) for n in announced.announced_to],
        "failed": announced.failed}
    report["mldht_setup_seconds"] = round(time.monotonic() - origin, 3)

    # aria2 on host 4, bootstrapped from n1 alone.
    aria2 = Aria2(the_lab, lab.lab_ip(ARIA2_HOST), info_hash, n1.address, rpc=True)
    await aria2.start()
    rpc_version = await aria2.rpc("aria2.getVersion")
    report["aria2"].update(dht=list(aria2.dht_address), listen_port=aria2.listen_port,
                           rpc_version=rpc_version.get("version"),
                           features=rpc_version.get("enabledFeatures"))
    t0 = aria2.started_at
    assert t0 is not None

    def since_start(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    # Item 2 (first half) and item 3: wait for aria2's announce and for its connection.
    aria2_peer = aria2.peer_address
    announce_seen: float | None = None
    handshake_seen: float | None = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and (announce_seen is None or handshake_seen is None):
        if announce_seen is None and any(aria2_peer in stored_peers(node, info_hash)
                                         for node in nodes.values()):
            announce_seen = time.monotonic()
        if handshake_seen is None and listener.handshake_times:
            handshake_seen = listener.handshake_times[0]
        await asyncio.sleep(0.05)
    report["connect"] = {
        "handshake_seconds": since_start(handshake_seen),
        "first_connection_seconds": since_start(
            listener.connections[0][0] if listener.connections else None),
        "connections": len(listener.connections),
        "handshakes": [[list(peer), h.hex()] for peer, h in listener.handshakes],
        "handshake_info_hash_ok": info_hash in listener.info_hashes(),
        "handshake_from_aria2_ip": any(peer[0] == aria2.ip for peer, _ in listener.handshakes),
    }

    aria2_queries = [q for q in queries if q["from"][0] == aria2.ip]
    announces = [q for q in aria2_queries if q["method"] == "announce_peer"]
    get_peers_times = sorted(q["t"] for q in aria2_queries if q["method"] == "get_peers")
    report["announce"] = {
        "aria2_peer": list(aria2_peer),
        "first_get_peers_seconds": since_start(get_peers_times[0] if get_peers_times else None),
        "stored_seconds": since_start(announce_seen),
        "announce_ports": sorted({q["port"] for q in announces if q.get("port") is not None}),
        "announce_implied_port_flags": sorted({q["implied_port"] for q in announces}),
        "stored_in": sorted(label for label, node in nodes.items()
                            if aria2_peer in stored_peers(node, info_hash)),
    }

    # Item 2: the command line and the library find aria2's peer.
    cli_started = time.monotonic()
    code, out, err = await lab.run_mldht_cli(
        "get-peers", info_hash.hex(), "--bootstrap", lab.address_spec(n1.address),
        "--bind", f"{lab.lab_ip(7)}:0", "--timeout", "20", "--json", timeout=40)
    cli_lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    cli_peers = [(x["ip"], x["port"]) for x in cli_lines if x.get("type") == "peer"]
    cli_summary: dict = next((x for x in cli_lines if x.get("type") == "summary"), {})
    report["announce"]["cli"] = {
        "exit": code, "seconds": round(time.monotonic() - cli_started, 3),
        "peers": [list(p) for p in cli_peers], "found_aria2": aria2_peer in cli_peers,
        "found_listener": tuple(listener_address) in cli_peers,
        "elapsed": cli_summary.get("elapsed"),
        "time_to_first_peer": cli_summary.get("time_to_first_peer"),
        "queried": cli_summary.get("queried"), "answered": cli_summary.get("answered"),
        "stderr": err[-500:]}

    library_node = await lab.start_mldht(lab.lab_ip(6), bootstrap=[lab.address_spec(n1.address)])
    nodes["library"] = library_node
    record_queries(library_node, "library", queries)
    lib_started = time.monotonic()
    await library_node.bootstrap(timeout=5)
    bootstrapped = time.monotonic()
    lookup = library_node.get_peers(info_hash, timeout=15)
    lib_peers = await lookup.collect()
    summary = lookup.summary
    report["announce"]["library"] = {
        "bootstrap_seconds": round(bootstrapped - lib_started, 3),
        "lookup_seconds": round(time.monotonic() - bootstrapped, 3),
        "time_to_first_peer": None if summary.time_to_first_peer is None
        else round(summary.time_to_first_peer, 3),
        "queried": summary.queried, "answered": summary.answered,
        "timed_out": summary.timed_out,
        "peers": [list(p) for p in lib_peers], "found_aria2": aria2_peer in lib_peers,
        "aria2_among_closest": any(n.address == aria2.dht_address for n in summary.closest)}

    # Item 5: probes of aria2's DHT port.
    prober = await lab.start_mldht(lab.lab_ip(8))
    report["probes"] = await run_probes(prober, aria2, info_hash)

    # DHTNode.announce(implied_port=True) through the lookup, aria2 among the targets: which
    # port does each receiver store for the prober?
    implied_hash = os.urandom(20)
    result = await prober.announce(implied_hash, implied_port=True, timeout=10)
    stored_by_aria2 = await probe(prober, aria2.dht_address, GetPeers(
        transaction_id=b"", sender_id=prober.node_id, info_hash=InfoHash(implied_hash)), 3)
    prober_ip, prober_udp_port = prober.address
    report["library_implied_port_announce"] = {
        "prober_udp_port": prober_udp_port,
        "announced_to": sorted(labels_of(nodes, aria2, n.address)
                               for n in result.announced_to),
        "aria2_stored": [v[1] for v in stored_by_aria2.get("values") or []
                         if v[0] == prober_ip],
        "mldht_stored": sorted({port for node in nodes.values()
                                for ip, port in stored_peers(node, implied_hash)
                                if ip == prober_ip}),
    }

    # Item 1: n1's view, then aria2's routing table after a graceful stop.
    n1_entry = n1.routing_table.get(aria2.dht_address)
    aria2_log = aria2.log()
    stop_code, stop_seconds = await aria2.stop()
    table = aria2.routing_table()
    table_addresses = {node.address: node.id.hex() for node in table.nodes}
    labels = {node.address: label for label, node in nodes.items()}
    labels[prober.address] = "prober"
    report["bootstrap"] = {
        "entry_point": list(n1.address),
        "entry_in_dht_dat": table_addresses.get(n1.address) == n1.node_id.hex(),
        "dht_dat_nodes": sorted(labels.get(a, f"{a[0]}:{a[1]}") for a in table_addresses),
        "dht_dat_format": table.format_id, "dht_dat_version": table.version,
        "aria2_id": table.local_id.hex(),
        "aria2_id_matches_queries": all(q["sender_id"] == table.local_id.hex()
                                        for q in aria2_queries),
        "aria2_in_n1_table": n1_entry is not None,
        "aria2_verified_by_n1": n1_entry is not None and n1_entry.last_response is not None,
        "cli_read_only_node_in_dht_dat": any(a[0] == lab.lab_ip(7) for a in table_addresses),
        "stop_exit_code": stop_code, "stop_seconds": round(stop_seconds, 3),
        "graceful_shutdown_logged": "Shutdown sequence commencing" in the_lab.log(aria2.name),
    }
    to_n1 = [q for q in aria2_queries if q["node"] == "n1"]
    report["bootstrap"]["first_query_to_n1"] = to_n1[0]["method"] if to_n1 else None
    report["bootstrap"]["first_query_to_n1_seconds"] = since_start(to_n1[0]["t"]) if to_n1 else None
    report["aria2_queries"] = {}
    for q in aria2_queries:
        report["aria2_queries"][q["method"]] = report["aria2_queries"].get(q["method"], 0) + 1
    report["aria2_query_versions"] = sorted({q["v"] or "" for q in aria2_queries})
    report["aria2_read_errors"] = {
        "received_error_203": "Received Error DHT message. code=203" in aria2_log,
        "announces_to_n3": sum(1 for q in announces if q["node"] == "n3"),
        "n3_in_dht_dat": n3.address in table_addresses,
    }

    # Item 1 (restart): aria2 reloads dht.dat, keeps its id and refreshes through find_node.
    restart_mark = len(queries)
    again = Aria2(the_lab, aria2.ip, info_hash, n1.address, name="aria2-restart",
                  dht_port=aria2.dht_port, dht_file=aria2.dht_file)
    await again.start()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if any(q["method"] == "find_node" and q["from"][0] == aria2.ip
               for q in queries[restart_mark:]):
            break
        await asyncio.sleep(0.05)
    restart_queries = [q for q in queries[restart_mark:] if q["from"][0] == aria2.ip]
    first_find_node = next((q for q in restart_queries if q["method"] == "find_node"), None)
    report["restart"] = {
        "same_id": bool(restart_queries) and all(q["sender_id"] == table.local_id.hex()
                                                 for q in restart_queries),
        "find_node_seconds": None if first_find_node is None
        else round(first_find_node["t"] - again.started_at, 3),
        "find_node_to": sorted({q["node"] for q in restart_queries
                                if q["method"] == "find_node"}),
        "methods": sorted({q["method"] for q in restart_queries}),
    }
    await again.stop()

    await lab.close_all(listener, *nodes.values(), prober)
    report["mldht_stats"] = {label: {"receive_path_failures": node.stats.receive_path_failures,
                                     "malformed_received": node.stats.malformed_received,
                                     "errors_sent": node.stats.errors_sent,
                                     "queries_received": node.stats.queries_received}
                             for label, node in nodes.items()}
    if capture is not None:
        await the_lab.stop_capture()
        report["capture"] = lab.krpc_traffic(pcap, {aria2.ip})
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
