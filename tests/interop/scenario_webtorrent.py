"""Interop with WebTorrent's bittorrent-dht (npm), inside the lab namespace.

    python tests/interop/scenario_webtorrent.py all [--capture DIR] [--workdir DIR]

Three mldht nodes (198.18.1-3.1) form the core; bittorrent-dht instances run on
198.18.11-12.1 (through js/wtnode.js, always with an explicit bootstrap list); a further
mldht node (198.18.4.1) looks up and announces, a probe node (198.18.5.1) sends single
queries, and the `mldht` command line runs from 198.18.21.1. The report (last line of
stdout, JSON) holds:

  join      a bittorrent-dht node bootstrapped from ONE mldht node has it in its table
  wt_to_ml  a peer announced by bittorrent-dht is found by `mldht get-peers` and by
            DHTNode.get_peers (with times)
  ml_to_wt  a peer announced by DHTNode.announce is found by bittorrent-dht's lookup
  probes    what bittorrent-dht answers to each query mldht sends it (typed: Response
            with its keys, RemoteError code and message, or QueryTimeout)
  wire      what bittorrent-dht puts on the wire (raw KRPC as seen by the mldht nodes)
  quirks    findings: 127/8, ping-back, BEP 43 ro, token, `v`, implied_port, ...
  mldht     counters of the mldht nodes (malformed or failed receive paths would be bugs)

Requires `npm ci --prefix tests/interop/js`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bencodepy  # noqa: E402  (mldht's own dependency)

import lab  # noqa: E402
from lab import address_spec, lab_ip, run_mldht_cli  # noqa: E402
from webtorrent import WebTorrentNodes, installed_version  # noqa: E402

from mldht import DHTNode, InfoHash, NodeConfig, NodeId, QueryTimeout, RemoteError  # noqa: E402
from mldht.krpc import AnnouncePeer, FindNode, GetPeers, Ping, Query, UnknownQuery  # noqa: E402

PORT = 6881
CONFIG = NodeConfig(query_timeout=2.0)
PROBE_TIMEOUT = 2.5  # bittorrent-dht drops what it does not like: a silence costs this much
_raw = bencodepy.Bencode(encoding=None, encoding_fallback=None, dict_ordered=False)


class RecordingNode(DHTNode):
    """An mldht node that also keeps the raw KRPC datagrams it receives from `watched` IPs
    (the bittorrent-dht nodes), to report what that implementation really sends."""

    def __init__(self, *args, watched: set[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.watched = watched
        self.wire: list[tuple[float, tuple[str, int], dict | None, int]] = []

    def datagrams_received(self, batch: list) -> None:
        for data, addr in batch:
            if addr[0] in self.watched and len(self.wire) < 2000:
                try:
                    message = _raw.decode(data)
                except Exception:
                    message = None
                self.wire.append((time.monotonic(), (addr[0], addr[1]), message, len(data)))
        super().datagrams_received(batch)


def text(value: Any) -> Any:
    """Raw bencode values as JSON-friendly text (hex for binary strings)."""
    if isinstance(value, bytes):
        try:
            decoded = value.decode("ascii")
            if decoded.isprintable():
                return decoded
        except UnicodeDecodeError:
            pass
        return "0x" + value.hex()
    if isinstance(value, list):
        return [text(item) for item in value]
    if isinstance(value, dict):
        return {text(key): text(item) for key, item in value.items()}
    return value


def wire_summary(nodes: list[RecordingNode]) -> dict:
    """What the bittorrent-dht nodes sent to the mldht nodes, by message kind."""
    queries: dict[str, int] = {}
    query_keys: dict[str, list[str]] = {}
    top_keys: set[str] = set()
    response_keys: set[str] = set()
    tid_lengths: set[int] = set()
    versions: set[str] = set()
    announces: list[dict] = []
    tokens_echoed: set[int] = set()
    errors: list[list] = []
    responses = undecodable = 0
    for node in nodes:
        for _, source, message, _size in node.wire:
            if not isinstance(message, dict):
                undecodable += 1
                continue
            top_keys.update(text(key) for key in message)
            if isinstance(message.get(b"t"), bytes):
                tid_lengths.add(len(message[b"t"]))
            if b"v" in message:
                versions.add(str(text(message[b"v"])))
            kind = message.get(b"y")
            if kind == b"q":
                method = str(text(message.get(b"q")))
                queries[method] = queries.get(method, 0) + 1
                args = message.get(b"a") or {}
                query_keys.setdefault(method, sorted(text(key) for key in args))
                if method == "announce_peer":
                    announces.append({
                        "from": address_spec(source), "to": address_spec(node.address),
                        "port": args.get(b"port"), "implied_port": args.get(b"implied_port"),
                        "token_length": len(args.get(b"token") or b"")})
                    tokens_echoed.add(len(args.get(b"token") or b""))
            elif kind == b"r":
                responses += 1
                response_keys.update(text(key) for key in (message.get(b"r") or {}))
            elif kind == b"e":
                errors.append(text(message.get(b"e")))
    return {"queries": queries, "query_argument_keys": query_keys,
            "top_level_keys": sorted(top_keys), "response_keys": sorted(response_keys),
            "responses": responses, "errors": errors[:10], "undecodable": undecodable,
            "transaction_id_lengths": sorted(tid_lengths), "versions": sorted(versions),
            "announce_peer": announces[:10]}


def describe(result: Any) -> dict:
    """A reply to a probe, as a typed JSON object."""
    if isinstance(result, RemoteError):
        return {"type": "RemoteError", "code": result.code, "message": result.message}
    if isinstance(result, QueryTimeout):
        return {"type": "QueryTimeout"}
    if isinstance(result, BaseException):
        return {"type": type(result).__name__, "message": str(result)}
    keys = ["id"]
    for name in ("nodes", "nodes6", "values", "token"):
        if getattr(result, name) is not None:
            keys.append(name)
    keys += [str(text(key)) for key in result.extra]
    return {
        "type": "Response",
        "keys": sorted(keys),
        "sender_id": result.sender_id.hex(),
        "nodes": None if result.nodes is None else len(result.nodes),
        "values": None if result.values is None else [address_spec(v) for v in result.values],
        "token_length": None if result.token is None else len(result.token),
        "version": None if result.version is None else text(result.version),
        "ip": None if result.requester is None else address_spec(result.requester),
    }


async def probe(node: DHTNode, address: tuple[str, int], query: Query) -> tuple[dict, Any]:
    started = time.monotonic()
    try:
        result: Any = await node.query(address, query, timeout=PROBE_TIMEOUT)
    except (RemoteError, QueryTimeout) as exc:
        result = exc
    report = describe(result)
    report["ms"] = round((time.monotonic() - started) * 1000, 2)
    return report, result


def table_labels(table: list[dict], names: dict[tuple[str, int], str]) -> list[str]:
    return sorted(names.get((entry["host"], entry["port"]), f"{entry['host']}:{entry['port']}")
                  for entry in table)


async def new_node(ip: str, bootstrap: list[str], watched: set[str]) -> RecordingNode:
    node = RecordingNode((ip, PORT), bootstrap=bootstrap, config=CONFIG, watched=watched,
                         node_id=lab.settled_id(ip))
    await node.start()
    return node


async def scenario_all(lab_: lab.Lab, capture: Path | None) -> dict:
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        lab_.start_capture(capture / "webtorrent.pcap")
    report: dict[str, Any] = {"bittorrent_dht_version": installed_version()}
    wt_ips = {lab_ip(11), lab_ip(12)}
    core: list[RecordingNode] = []
    extra: list[DHTNode] = []
    wt = WebTorrentNodes(lab_)
    try:
        await wt.start()
        report["node_version"] = wt.node_version
        await _run(lab_, wt, wt_ips, core, extra, report)
    finally:
        await wt.close()
        for node in [*core, *extra]:
            await node.close()
    if capture is not None:
        await lab_.stop_capture()
        report["capture"] = lab.krpc_traffic(capture / "webtorrent.pcap", wt_ips)
    return report


async def _run(lab_: lab.Lab, wt: WebTorrentNodes, wt_ips: set[str], core: list[RecordingNode],
               extra: list[DHTNode], report: dict) -> None:
    # --- the mldht core: three nodes joined to each other -------------------------------
    a_spec, b_spec, c_spec = (f"{lab_ip(i)}:{PORT}" for i in (1, 2, 3))
    for ip, bootstrap in ((lab_ip(1), [b_spec]), (lab_ip(2), [a_spec]), (lab_ip(3), [a_spec])):
        core.append(await new_node(ip, bootstrap, wt_ips))
    node_a, node_b, node_c = core
    started = time.monotonic()
    await asyncio.gather(node_b.bootstrap(timeout=5), node_c.bootstrap(timeout=5))
    await node_a.bootstrap(timeout=5)
    report["core_bootstrap_s"] = round(time.monotonic() - started, 3)
    names = {node.address: f"mldht-{label}" for node, label in zip(core, "ABC")}
    w1_address, w2_address = (lab_ip(11), PORT), (lab_ip(12), PORT)

    # --- (1) join: bittorrent-dht bootstrapped from node A alone --------------------------
    w1 = await wt.start_dht("w1", lab_ip(11), PORT, bootstrap=[a_spec])
    names[w1_address] = "wt-1"
    w1_table = w1["table"]
    a_entry = next((e for e in w1_table if (e["host"], e["port"]) == node_a.address), None)
    report["join"] = {
        "bootstrap": a_spec,
        "ready": w1["ready"], "ready_ms": w1["readyMs"],
        "table": table_labels(w1_table, names),
        "has_bootstrap_node": a_entry is not None,
        "bootstrap_node_id_matches": a_entry is not None and a_entry["id"] == node_a.node_id.hex(),
    }
    # A second bittorrent-dht node, joined through B: it announces below.
    w2 = await wt.start_dht("w2", lab_ip(12), PORT, bootstrap=[b_spec])
    names[w2_address] = "wt-2"
    report["join"]["second_node"] = {"ready_ms": w2["readyMs"],
                                     "table": table_labels(w2["table"], names)}
    await asyncio.sleep(0.3)  # let mldht's verification pings of the newcomers complete
    report["join"]["mldht_A_verified_w1"] = _verified(node_a, w1_address)
    report["join"]["mldht_tables_with_webtorrent"] = {
        names[node.address]: sorted(names[e.address] for e in node.routing_table
                                    if e.address in (w1_address, w2_address)
                                    and e.last_response is not None)
        for node in core}
    report["join"]["w1_table_after"] = table_labels(await wt.table("w1"), names)

    # --- (2) bittorrent-dht announces, mldht finds ------------------------------------------
    h1 = NodeId.random().hex()
    p1 = 51413
    expected_1 = f"{lab_ip(12)}:{p1}"
    announce_w = await wt.announce("w2", h1, p1)
    wt_to_ml: dict[str, Any] = {
        "info_hash": h1, "expected_peer": expected_1,
        "webtorrent_announce": {"ms": announce_w["ms"], "nodes": announce_w["nodes"]},
        "stored_on_mldht": _stored(core, h1, names),
        "stored_on_webtorrent": {name: await _wt_stored(wt, name, h1) for name in ("w1", "w2")},
    }
    report["wt_to_ml"] = wt_to_ml
    node_d = await new_node(lab_ip(4), [c_spec], wt_ips)
    extra.append(node_d)
    names[node_d.address] = "mldht-D"
    started = time.monotonic()
    await node_d.bootstrap(timeout=5)
    d_bootstrap = time.monotonic() - started
    lookup = node_d.get_peers(InfoHash.from_hex(h1), timeout=10)
    lib_peers = [address_spec(peer) for peer in await lookup.collect()]
    summary = lookup.summary
    values_from = sorted({names.get(source, address_spec(source))
                          for _, source, message, _ in node_d.wire
                          if isinstance(message, dict) and message.get(b"y") == b"r"
                          and b"values" in (message.get(b"r") or {})})
    wt_to_ml["library"] = {
        "peers": lib_peers, "found": expected_1 in lib_peers,
        "bootstrap_s": round(d_bootstrap, 3),
        "elapsed_s": round(summary.elapsed, 3) if summary else None,
        "time_to_first_peer_s": None if summary is None or summary.time_to_first_peer is None
        else round(summary.time_to_first_peer, 3),
        "queried": summary.queried if summary else None,
        "answered": summary.answered if summary else None,
        "timed_out": summary.timed_out if summary else None,
        "values_from_webtorrent_nodes": values_from}

    # bittorrent-dht announcing with port 0 sends implied_port=1 (and port=0): mldht must
    # store the UDP source port.
    h3 = NodeId.random().hex()
    implied = await wt.announce("w1", h3, 0)
    wt_to_ml["implied_port_announce"] = {
        "webtorrent_announce": {"ms": implied["ms"], "nodes": implied["nodes"]},
        "expected_peer": address_spec(w1_address),
        "stored_on_mldht": _stored(core, h3, names)}

    # --- (3) mldht announces, bittorrent-dht finds --------------------------------------
    h2 = NodeId.random().hex()
    p2 = 6999
    result = await node_d.announce(InfoHash.from_hex(h2), p2, timeout=10)
    expected_2 = f"{lab_ip(4)}:{p2}"
    wt_stored_2 = {name: await _wt_stored(wt, name, h2) for name in ("w1", "w2")}
    found_w = await wt.lookup("w1", h2)
    peer_2 = next((p for p in found_w["peers"] if f"{p['host']}:{p['port']}" == expected_2), None)
    report["ml_to_wt"] = {
        "info_hash": h2, "expected_peer": expected_2,
        "mldht_announce": {"announced_to": sorted(names.get(n.address, str(n))
                                                  for n in result.announced_to),
                           "failed": result.failed,
                           "elapsed_s": round(result.summary.elapsed, 3)},
        "stored_on_webtorrent": wt_stored_2,
        "webtorrent_lookup": {key: found_w[key] for key in ("ms", "firstPeerMs", "visited")},
        "found": peer_2 is not None,
        "found_ms": None if peer_2 is None else peer_2["firstMs"],
        "found_from": [] if peer_2 is None else sorted(_label(s, names)
                                                        for s in peer_2["from"]),
    }
    report["ml_to_wt"]["found_in_mldht_replies"] = any(
        source.startswith("mldht-") for source in report["ml_to_wt"]["found_from"])

    # --- (5) single queries from an mldht probe to bittorrent-dht node w1 --------------
    report["probes"], probe_quirks = await _probes(wt, wt_ips, extra, w1, names)
    # addNode without an id: bittorrent-dht pings the node first, then adds it.
    add = await wt.add_node("w2", lab_ip(5), PORT, wait=3.0)
    report["join"]["add_node_by_ping"] = {"added": add["added"], "ms": add["ms"]}

    # --- (2, cont.) the mldht command line finds the bittorrent-dht peer -----------------
    # Last, because its read-only node is gone afterwards while bittorrent-dht keeps it.
    started = time.monotonic()
    code, out, err = await run_mldht_cli("get-peers", h1, "--bootstrap", a_spec, "--bind",
                                         f"{lab_ip(21)}:0", "--json", "--timeout", "10",
                                         timeout=30)
    cli_wall = time.monotonic() - started
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    cli_peers = [f"{line['ip']}:{line['port']}" for line in lines if line.get("type") == "peer"]
    wt_to_ml["cli"] = {
        "exit": code, "peers": cli_peers, "found": expected_1 in cli_peers,
        "summary": next((line for line in lines if line.get("type") == "summary"), None),
        "wall_s": round(cli_wall, 3), "stderr": err[-1500:] if code != 0 else ""}

    # --- quirks ----------------------------------------------------------------------------
    quirks = dict(probe_quirks)
    # 127/8: an mldht node on 127.0.0.1 pings w1; does w1 keep it in its table?
    loop_node = DHTNode(("127.0.0.1", PORT), bootstrap=[], config=CONFIG)
    await loop_node.start()
    extra.append(loop_node)
    try:
        await loop_node.ping(w1_address)
        loop_answered = True
    except (QueryTimeout, RemoteError):
        loop_answered = False
    w1_table_now = await wt.table("w1")
    quirks["loopback_127_answered"] = loop_answered
    quirks["loopback_127_added_to_table"] = any(e["host"] == "127.0.0.1" for e in w1_table_now)
    # bittorrent-dht keeps the (now gone) read-only CLI node and hands it out in `nodes`:
    # what does that cost an mldht lookup?
    mark = len(node_d.wire)
    dead = node_d.get_peers(InfoHash(NodeId.random()), timeout=10)
    await dead.collect()
    cli_ip = bytes(int(part) for part in lab_ip(21).split("."))
    served_by = sorted({names.get(source, address_spec(source))
                        for _, source, message, _ in node_d.wire[mark:]
                        if isinstance(message, dict) and message.get(b"y") == b"r"
                        and _lists_ip((message.get(b"r") or {}).get(b"nodes"), cli_ip)})
    quirks["gone_read_only_node_served_in_nodes_by"] = served_by
    quirks["lookup_after_cli"] = None if dead.summary is None else {
        "elapsed_s": round(dead.summary.elapsed, 3), "queried": dead.summary.queried,
        "timed_out": dead.summary.timed_out}
    # The 127.0.0.1 node that w1 accepted is handed out too: does mldht follow it?
    quirks["loopback_127_served_in_nodes_by"] = sorted(
        {names.get(source, address_spec(source)) for _, source, message, _ in node_d.wire[mark:]
         if isinstance(message, dict) and message.get(b"y") == b"r"
         and _lists_ip((message.get(b"r") or {}).get(b"nodes"), bytes([127, 0, 0, 1]))})
    quirks["mldht_queried_127_node_learnt_from_webtorrent"] = dict(
        loop_node.stats.queries_received)
    quirks["mldht_D_table_has_127_node"] = node_d.routing_table.get(("127.0.0.1", PORT)) is not None
    # BEP 43: the CLI's read-only node (ro=1) should not enter anyone's routing table.
    tables = {name: await wt.table(name) for name in ("w1", "w2")}
    quirks["read_only_cli_node_in_webtorrent_tables"] = sorted(
        name for name, table in tables.items() if any(e["host"] == lab_ip(21) for e in table))
    quirks["read_only_cli_node_in_mldht_tables"] = sorted(
        names[node.address] for node in core
        if any(entry.ip == lab_ip(21) for entry in node.routing_table))
    stats = {name: await wt.stats(name) for name in ("w1", "w2")}
    quirks["webtorrent_queries_received"] = {name: s["queries"] for name, s in stats.items()}
    quirks["webtorrent_warnings"] = {name: s["warnings"][:10] for name, s in stats.items()}
    quirks["webtorrent_errors"] = {name: s["errors"][:10] for name, s in stats.items()}
    quirks["webtorrent_table_sizes"] = {name: len(t) for name, t in tables.items()}
    report["quirks"] = quirks
    report["wire"] = wire_summary([*core, *(n for n in extra if isinstance(n, RecordingNode))])
    report["mldht"] = {names.get(node.address, address_spec(node.address)): {
        "table": len(node.routing_table),
        "queries_received": node.stats.queries_received,
        "errors_received": node.stats.errors_received,
        "timeouts": node.stats.timeouts,
        "malformed_received": node.stats.malformed_received,
        "unmatched_received": node.stats.unmatched_received,
        "receive_path_failures": node.stats.receive_path_failures,
    } for node in [*core, *extra]}
    report["wtnode_unsolicited"] = wt.unsolicited[:10]


def _lists_ip(nodes: Any, ip: bytes) -> bool:
    """Whether a compact `nodes` string lists a node at `ip` (IPv4, 26-byte entries)."""
    if not isinstance(nodes, bytes):
        return False
    return any(nodes[i + 20:i + 24] == ip for i in range(0, len(nodes) - 25, 26))


def _label(spec: str, names: dict) -> str:
    """The name of the node at "ip:port" (or the spec itself: "local", unknown nodes)."""
    host, _, port = spec.rpartition(":")
    return names.get((host, int(port)), spec) if port.isdigit() else spec


def _stored(nodes: Sequence[DHTNode], info_hash: str, names: dict) -> dict[str, list[str]]:
    """The peers each mldht node stores for `info_hash`."""
    key = InfoHash.from_hex(info_hash)
    return {names[node.address]: sorted(address_spec(peer) for peer in node.peer_store.get(
        key, time.monotonic(), 50, random.Random())) for node in nodes if key in node.peer_store}


async def _wt_stored(wt: WebTorrentNodes, name: str, info_hash: str) -> list[str]:
    """The announces a bittorrent-dht node accepted for `info_hash`."""
    return [f"{a['host']}:{a['port']}" for a in (await wt.stats(name))["announced"]
            if a["infohash"] == info_hash]


def _verified(node: DHTNode, address: tuple[str, int]) -> bool:
    entry = node.routing_table.get(address)
    return entry is not None and entry.last_response is not None


async def _probes(wt: WebTorrentNodes, wt_ips: set[str], extra: list[DHTNode], w1: dict,
                  names: dict) -> tuple[dict, dict]:
    """Every kind of query mldht sends, and a few malformed ones, to w1 from a fresh node."""
    probe_node = await new_node(lab_ip(5), [], wt_ips)
    extra.append(probe_node)
    names[probe_node.address] = "mldht-probe"
    me = probe_node.node_id
    target = (lab_ip(11), PORT)
    w1_id = w1["nodeId"]
    empty_hash, stored_hash, implied_hash = (InfoHash(NodeId.random()) for _ in range(3))
    probes: dict[str, dict] = {}
    quirks: dict[str, Any] = {}

    probes["ping"], _ = await probe(probe_node, target, Ping(transaction_id=b"", sender_id=me))
    probes["find_node"], _ = await probe(probe_node, target, FindNode(
        transaction_id=b"", sender_id=me, target=NodeId.random()))
    probes["get_peers_without_peers"], empty = await probe(probe_node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=empty_hash))
    probes["get_peers_for_announce"], with_token = await probe(probe_node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=stored_hash))
    token = getattr(with_token, "token", None) or b"x"
    probes["announce_peer_good_token"], _ = await probe(probe_node, target, AnnouncePeer(
        transaction_id=b"", sender_id=me, info_hash=stored_hash, token=token, port=40000))
    probes["get_peers_with_peers"], _ = await probe(probe_node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=stored_hash))
    # The token of another infohash, and the implied port (the UDP source port, 6881).
    other_token = getattr(empty, "token", None) or b"x"
    probes["announce_peer_implied_port_other_hash_token"], _ = await probe(
        probe_node, target, AnnouncePeer(transaction_id=b"", sender_id=me, info_hash=implied_hash,
                                         token=other_token, port=40001, implied_port=True))
    probes["get_peers_after_implied_port"], _ = await probe(probe_node, target, GetPeers(
        transaction_id=b"", sender_id=me, info_hash=implied_hash))
    bad_token = bytes(b ^ 0xFF for b in token)
    # The remaining probes do not depend on each other: run them together (silences cost
    # PROBE_TIMEOUT each).
    concurrent = {
        "announce_peer_bad_token": AnnouncePeer(transaction_id=b"", sender_id=me,
                                                info_hash=stored_hash, token=bad_token, port=40002),
        "announce_peer_port_0": AnnouncePeer(transaction_id=b"", sender_id=me,
                                             info_hash=stored_hash, token=token, port=0),
        "unknown_method": UnknownQuery(transaction_id=b"", sender_id=me, name=b"frobnicate"),
        "unknown_method_with_target": UnknownQuery(transaction_id=b"", sender_id=me,
                                                   name=b"frobnicate_node", target=NodeId.random()),
        "unknown_method_with_info_hash": UnknownQuery(transaction_id=b"", sender_id=me,
                                                      name=b"frobnicate_peers",
                                                      info_hash=InfoHash(NodeId.random())),
        "find_node_without_target": UnknownQuery(transaction_id=b"", sender_id=me,
                                                 name=b"find_node"),
        "get_peers_without_info_hash": UnknownQuery(transaction_id=b"", sender_id=me,
                                                    name=b"get_peers"),
        "bep44_get": UnknownQuery(transaction_id=b"", sender_id=me, name=b"get",
                                  target=NodeId.random()),
    }
    results = await asyncio.gather(*(probe(probe_node, target, query)
                                     for query in concurrent.values()))
    for name, (described, _) in zip(concurrent, results):
        probes[name] = described

    stored = probes["get_peers_with_peers"].get("values") or []
    implied = probes["get_peers_after_implied_port"].get("values") or []
    quirks["ping_sender_id_matches"] = probes["ping"].get("sender_id") == w1_id
    quirks["version_field_v"] = probes["ping"].get("version")
    quirks["bep42_ip_field"] = probes["ping"].get("ip")
    quirks["find_node_reply_nodes"] = probes["find_node"].get("nodes")
    quirks["get_peers_token_length"] = probes["get_peers_without_peers"].get("token_length")
    quirks["get_peers_with_values_also_has_nodes"] = "nodes" in probes["get_peers_with_peers"].get(
        "keys", [])
    quirks["get_peers_without_values_has_nodes"] = "nodes" in probes[
        "get_peers_without_peers"].get("keys", [])
    quirks["announce_good_token_stored"] = f"{lab_ip(5)}:40000" in stored
    quirks["token_bound_to_infohash"] = probes[
        "announce_peer_implied_port_other_hash_token"]["type"] != "Response"
    quirks["implied_port_honoured"] = f"{lab_ip(5)}:{PORT}" in implied
    quirks["unknown_method"] = probes["unknown_method"]["type"]
    # Did w1 ping (or query) the probe node back after it queried it?
    await asyncio.sleep(0.5)
    from_wt = [message for _, source, message, _ in probe_node.wire
               if source == target and isinstance(message, dict) and message.get(b"y") == b"q"]
    quirks["queries_from_webtorrent_to_new_querier"] = sorted(
        {str(text(message.get(b"q"))) for message in from_wt})
    quirks["webtorrent_pings_back_querier"] = any(m.get(b"q") == b"ping" for m in from_wt)
    return probes, quirks


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
