"""Serving throughput: KRPC queries per second one node answers on one core, mldht and libtorrent.

    python tools/bench/throughput.py

The node under test runs alone in its own process pinned to one core (`--node-cpu`, 0): an
mldht `DHTNode` on 127.0.0.1 with `NodeConfig(inbound_rate=0, reply_bytes_per_second=0)`, and
a libtorrent session with only the DHT and its limits relaxed (`dht_block_ratelimit`,
`dht_upload_rate_limit`). Both routing tables hold 8 nodes per bucket for the first `--depths`
buckets (ids sharing 0, 1, 2... leading bits with the node's), so find_node and get_peers
replies carry 8 nodes: mldht's is filled directly, libtorrent's by adding small loopback
responders with `add_dht_node`. The load comes from `loadgen.c` (built here with gcc),
pinned to the other core (`--load-cpu`, 1): sendmmsg/recvmmsg on `--sources` sockets bound
to 127.77.x.y, at most `--window` queries outstanding, replies matched by transaction id,
`--warmup` then `--seconds` per measurement. Query kinds: ping, find_node (random targets),
get_peers (random infohashes: nodes + token) and get_peers_values (an infohash 50 loopback
peers announced to: nodes + token + 50 values). The rig ceiling is the same load generator
against a C responder that answers every query with an 8-node reply. Without a C compiler
(or with `--python-loadgen`) a Python version of the generator and responder is used: it
works, but then the generator is the limit, not the node.

Prints replies per second, losses, latency, the CPU use of the node and of the load
generator (near 100 % would mean the generator, not the node, is the limit) and the ratio
mldht / libtorrent per query kind; `--json` prints the same as JSON. `--uvloop` also measures
mldht under uvloop. `--profile DIR` profiles the mldht node (py-spy when installed, else
cProfile; `--profiler`) during each measurement and prints where its time goes.
Every datagram goes to 127.0.0.0/8; every child process is stopped by this script.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bencodepy

HERE = Path(__file__).resolve().parent
LOADGEN_SOURCE = HERE / "loadgen.c"
CODEC = bencodepy.Bencode(encoding=None)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from krpcio import exchange  # noqa: E402
KINDS = ("ping", "find_node", "get_peers", "get_peers_values")
TID_MARK = b"TTTT"
ID_MARK = b"I" * 20
SWARM = bytes.fromhex("5757575757575757575757575757575757575757")
SWARM_PEERS = 50
NODE_IP = "127.0.0.1"
LOAD_PREFIX = "127.77"  # load generator sources: 127.77.x.y
PROBE_IP = "127.0.0.1"


# --- child processes --------------------------------------------------------------------


class Children:
    """Every process this script starts; `stop_all` ends them (by PID), also on error."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], cpu: int | None, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, **kwargs)
        self.procs.append(proc)
        if cpu is not None:
            try:
                os.sched_setaffinity(proc.pid, {cpu})
            except OSError:
                pass
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def pinning(node_cpu: int, load_cpu: int) -> tuple[int | None, int | None]:
    """The cores to pin to, or (None, None) when there are not two usable ones."""
    try:
        usable = os.sched_getaffinity(0)
    except AttributeError:
        return None, None
    if node_cpu in usable and load_cpu in usable and node_cpu != load_cpu:
        return node_cpu, load_cpu
    return None, None


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    """The next JSON line the child prints (other lines are skipped)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {proc.args[:3]} exited (status {proc.poll()})")
        line = line.strip()
        if line.startswith(b"{"):
            return json.loads(line)
    raise TimeoutError(f"no answer from child {proc.args[:3]} within {timeout} s")


def command(proc: subprocess.Popen, message: dict, timeout: float = 30.0) -> dict:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()
    return read_json_line(proc, timeout)


def free_port(ip: str = NODE_IP) -> int:
    """A port free for both UDP and TCP on `ip` (libtorrent listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((ip, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def build_loadgen(directory: str, python: bool = False) -> list[str]:
    """The load generator's command: loadgen.c compiled into `directory`, or (`python`, or
    no C compiler found) the much slower Python version of it in this file."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if python or compiler is None:
        return [sys.executable, str(Path(__file__).resolve()), "_py-loadgen"]
    output = os.path.join(directory, "loadgen")
    subprocess.run([compiler, "-O2", "-o", output, str(LOADGEN_SOURCE)], check=True,
                   capture_output=True, timeout=120)
    return [output]


def py_loadgen_main(argv: list[str]) -> None:
    """Child: loadgen.c's `gen` and `echo` in Python (same arguments and JSON output), for
    hosts without a C compiler. Far slower: with it, the generator is the limit."""
    import selectors

    def loopback(ip: str) -> str:
        if not ip.startswith("127."):
            raise SystemExit(f"loadgen: {ip} is not in 127.0.0.0/8")
        return ip

    if argv[0] == "echo":
        ip, port, seconds, max_replies, nodes = argv[1:6]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((loopback(ip), int(port)))
        sock.settimeout(0.1)
        print(json.dumps({"ready": True}), flush=True)
        answered = received = 0
        started = time.monotonic()
        while time.monotonic() - started < float(seconds) and answered < int(max_replies):
            try:
                data, source = sock.recvfrom(2048)
            except (TimeoutError, socket.timeout):
                continue
            received += 1
            try:
                message = CODEC.decode(data)
            except Exception:
                continue
            if isinstance(message, dict) and message.get(b"y") == b"q" and source[0].startswith("127."):
                body = {b"id": b"E" * 20, b"nodes": b"N" * 26 * int(nodes)}
                sock.sendto(CODEC.encode({b"t": message.get(b"t", b""), b"y": b"r", b"r": body}),
                            source)
                answered += 1
        print(json.dumps({"received": received, "answered": answered,
                          "cpu_seconds": time.process_time(),
                          "seconds": time.monotonic() - started}))
        return

    (ip, port, path, sources_text, prefix, window_text, seconds_text, warmup_text, max_text,
     timeout_text) = argv[1:11]
    target = (loopback(ip), int(port))
    templates = []
    with open(path) as handle:
        for line in handle:
            tid_offset, id_offset, hex_data = line.split()
            templates.append((int(tid_offset), int(id_offset), bytes.fromhex(hex_data)))
    count, window = int(sources_text), int(window_text)
    max_queries, timeout = int(max_text), int(timeout_text) / 1000
    selector = selectors.DefaultSelector()
    rng = random.Random(5)
    sources = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((loopback(f"{prefix}.{index // 250}.{index % 250 + 1}"), 0))
        sock.connect(target)
        sock.setblocking(False)
        size = window // count + (1 if index < window % count else 0)
        source = {"sock": sock, "id": rng.randbytes(20), "sent": [None] * size,
                  "gen": [0] * size, "free": list(range(size))}
        selector.register(sock, selectors.EVENT_READ, source)
        sources.append(source)
    totals = collections.Counter()
    rtts: list[float] = []
    next_template = 0
    start = time.monotonic()
    measure_from, measuring = start + float(warmup_text), float(warmup_text) <= 0
    deadline = measure_from + float(seconds_text)
    wall_start, cpu_start, last_sweep = start, time.process_time(), start
    while (now := time.monotonic()) < deadline:
        if not measuring and now >= measure_from:
            measuring = True
            totals.clear()
            rtts.clear()
            wall_start, cpu_start = now, time.process_time()
        for source in sources:
            while source["free"] and totals["total_sent"] < max_queries:
                index = source["free"].pop()
                source["gen"][index] = (source["gen"][index] + 1) & 0xFFFF
                tid_offset, id_offset, template = templates[next_template % len(templates)]
                next_template += 1
                data = bytearray(template)
                data[tid_offset:tid_offset + 4] = index.to_bytes(2, "big") + \
                    source["gen"][index].to_bytes(2, "big")
                data[id_offset:id_offset + 20] = source["id"]
                try:
                    source["sock"].send(data)
                except (BlockingIOError, ConnectionRefusedError):
                    source["free"].append(index)
                    totals["send_blocked"] += 1
                    break
                source["sent"][index] = time.monotonic()
                totals["sent"] += 1
                totals["total_sent"] += 1
        for key, _ in selector.select(0.001):
            source = key.data
            while True:
                try:
                    data = source["sock"].recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                totals["bytes_in"] += len(data)
                try:
                    message = CODEC.decode(data)
                    tid, kind = message[b"t"], message[b"y"]
                except Exception:
                    totals["unmatched"] += 1
                    continue
                if kind == b"q":
                    totals["queries_in"] += 1
                    continue
                index = int.from_bytes(tid[:2], "big") if len(tid) == 4 else -1
                if (not 0 <= index < len(source["sent"]) or source["sent"][index] is None
                        or source["gen"][index] != int.from_bytes(tid[2:], "big")):
                    totals["unmatched"] += 1
                    continue
                rtts.append(time.monotonic() - source["sent"][index])
                source["sent"][index] = None
                source["free"].append(index)
                totals["replies" if kind == b"r" else "errors"] += 1
        if now - last_sweep > 0.01:
            last_sweep = now
            for source in sources:
                for index, sent in enumerate(source["sent"]):
                    if sent is not None and now - sent > timeout:
                        source["sent"][index] = None
                        source["free"].append(index)
                        totals["lost"] += 1
    elapsed = time.monotonic() - wall_start
    rtts.sort()

    def percentile(q: float) -> float:
        return round(rtts[min(len(rtts) - 1, int(q * len(rtts)))] * 1e6) if rtts else 0

    print(json.dumps({key: totals[key] for key in (
        "sent", "replies", "errors", "queries_in", "unmatched", "lost", "send_blocked",
        "bytes_in")} | {"seconds": elapsed, "cpu_seconds": time.process_time() - cpu_start,
                        "rtt_p50_us": percentile(0.5), "rtt_p99_us": percentile(0.99),
                        "sources": count, "window": window, "python": True}))
    for source in sources:
        source["sock"].close()


# --- queries ----------------------------------------------------------------------------


def ids_at_depths(own: bytes, depths: int, per_depth: int, rng: random.Random) -> list[tuple[int, bytes]]:
    """`per_depth` ids sharing exactly d leading bits with `own`, for d in 0..depths-1."""
    own_int = int.from_bytes(own, "big")
    out = []
    for depth in range(depths):
        for _ in range(per_depth):
            low = rng.getrandbits(159 - depth) if depth < 159 else 0
            value = ((own_int >> (159 - depth)) ^ 1) << (159 - depth) | low
            out.append((depth, value.to_bytes(20, "big")))
    return out


def query(kind: str, tid: bytes, sender: bytes, rng: random.Random) -> dict:
    if kind == "ping":
        name, args = b"ping", {b"id": sender}
    elif kind == "find_node":
        name, args = b"find_node", {b"id": sender, b"target": rng.randbytes(20)}
    elif kind == "get_peers":
        name, args = b"get_peers", {b"id": sender, b"info_hash": rng.randbytes(20)}
    elif kind == "get_peers_values":
        name, args = b"get_peers", {b"id": sender, b"info_hash": SWARM}
    else:
        raise ValueError(kind)
    return {b"t": tid, b"y": b"q", b"q": name, b"a": args}


def write_templates(path: str, kind: str, count: int, rng: random.Random) -> None:
    """Query templates for loadgen: '<tid offset> <id offset> <hex>' per line."""
    with open(path, "w") as out:
        for _ in range(count):
            data = CODEC.encode(query(kind, TID_MARK, ID_MARK, rng))
            tid_offset = data.index(b"1:t4:" + TID_MARK) + 5
            id_offset = data.index(b"2:id20:" + ID_MARK) + 7
            out.write(f"{tid_offset} {id_offset} {data.hex()}\n")


def probe(target: tuple[str, int], kind: str, timeout: float = 2.0) -> dict:
    """One query of `kind` from 127.0.0.1: what its reply carries."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PROBE_IP, 0))
        replies = exchange(sock, [query(kind, b"pr", b"P" * 20, random.Random())], target, timeout)
    reply = replies.get(b"pr")
    if reply is None or reply.get(b"y") != b"r":
        return {"answered": False}
    body = reply.get(b"r", {})
    return {"answered": True, "id": body.get(b"id", b"").hex(),
            "nodes": len(body.get(b"nodes", b"")) // 26, "values": len(body.get(b"values", [])),
            "token": b"token" in body, "bytes": reply[b"_size"]}


def wait_answering(target: tuple[str, int], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe(target, "ping", 0.3)
        if answer["answered"]:
            return answer
    raise TimeoutError(f"{target} does not answer pings")


def announce_swarm(target: tuple[str, int], peers: int = SWARM_PEERS) -> int:
    """Announce `peers` loopback peers (127.88.0.x) for SWARM; returns how many were accepted."""
    accepted = 0
    for index in range(peers):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((f"127.88.{index // 250}.{index % 250 + 1}", 0))
            sender = bytes([index % 256]) * 20
            ask = {b"t": b"gp", b"y": b"q", b"q": b"get_peers",
                   b"a": {b"id": sender, b"info_hash": SWARM}}
            token = exchange(sock, [ask], target).get(b"gp", {}).get(b"r", {}).get(b"token")
            if token is None:
                continue
            announce = {b"t": b"an", b"y": b"q", b"q": b"announce_peer",
                        b"a": {b"id": sender, b"info_hash": SWARM, b"port": 6881 + index,
                               b"token": token}}
            if exchange(sock, [announce], target).get(b"an", {}).get(b"y") == b"r":
                accepted += 1
    return accepted


class Responders:
    """Loopback nodes that answer whatever libtorrent asks (an empty `nodes`, a token), so
    that it takes them into its routing table. Runs in a thread until `close`."""

    def __init__(self, node_id: bytes, depths: int, rng: random.Random) -> None:
        self.sockets: dict[socket.socket, bytes] = {}
        for depth, node in ids_at_depths(node_id, depths, 8, rng):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # One /24 per node of a bucket (libtorrent's dht_restrict_routing_ips).
            sock.bind((f"127.{120 + len(self.sockets) % 8}.{depth}.1", 0))
            sock.setblocking(False)
            self.sockets[sock] = node
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="responders", daemon=True)
        self._thread.start()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname() for sock in self.sockets]

    def _run(self) -> None:
        sockets = list(self.sockets)
        while not self._stop.is_set():
            ready, _, _ = select.select(sockets, [], [], 0.2)
            for sock in ready:
                try:
                    data, source = sock.recvfrom(2048)
                    message = CODEC.decode(data)
                except Exception:
                    continue
                if not isinstance(message, dict) or message.get(b"y") != b"q":
                    continue
                if not source[0].startswith("127."):
                    continue
                body = {b"id": self.sockets[sock]}
                if message.get(b"q") != b"ping":
                    body[b"nodes"] = b""
                if message.get(b"q") in (b"get_peers", b"get"):
                    body[b"token"] = b"tk"
                reply = {b"t": message.get(b"t", b""), b"y": b"r", b"r": body}
                try:
                    sock.sendto(CODEC.encode(reply), source)
                    self.answered += 1
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


# --- the nodes under test (run as child processes of this script) -------------------------


def mldht_node_main(argv: list[str]) -> None:
    """Child: an mldht node with limits off and a seeded table; commands on stdin."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ip", default=NODE_IP)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--depths", type=int, default=20)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--auto-loop", action="store_true",
                        help="uvloop when it is installed, as `mldht serve` chooses")
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)

    import asyncio

    from mldht import DHTNode, NodeConfig, NodeId, NodeInfo

    async def main() -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(7)
        config = NodeConfig(inbound_rate=0, reply_bytes_per_second=0)
        node = DHTNode((args.ip, args.port), bootstrap=[], config=config,
                       node_id=NodeId(rng.randbytes(20)))
        stop = asyncio.Event()
        profiler = None

        def handle(line: str) -> None:
            nonlocal profiler
            if not line:
                stop.set()
                return
            request = json.loads(line)
            answer: dict = {"ok": True}
            if request.get("cmd") == "stats":
                stats = node.stats
                answer.update(table=len(node.routing_table), received=stats.datagrams_received,
                              sent=stats.datagrams_sent, failures=stats.receive_path_failures,
                              queries=stats.queries_received, peers=node.peer_store.peer_count())
            elif request.get("cmd") == "profile-start":
                import cProfile
                profiler = cProfile.Profile()
                profiler.enable()
            elif request.get("cmd") == "profile-stop" and profiler is not None:
                profiler.disable()
                profiler.dump_stats(request["path"])
                profiler = None
            elif request.get("cmd") == "quit":
                stop.set()
            print(json.dumps(answer), flush=True)

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(handle, line.strip() or "{}")
            loop.call_soon_threadsafe(handle, "")

        async with node:
            now = time.monotonic()
            for index, (depth, node_id) in enumerate(ids_at_depths(node.node_id, args.depths, 8, rng)):
                # Addresses nobody listens on (127.100-107.d.1): they are only listed in replies.
                node.routing_table.heard_from(
                    NodeInfo(NodeId(node_id), f"127.{100 + index % 8}.{depth}.1", 6881), now,
                    responded=True)
            threading.Thread(target=read_stdin, daemon=True).start()
            from mldht.krpc import codec_backend

            def io_path() -> str:
                try:
                    from mldht.native import describe
                except ImportError:
                    try:
                        from mldht.batchio import describe
                    except ImportError:  # an mldht from before the native transport
                        return "pure Python"
                return describe()
            print(json.dumps({"ready": True, "port": node.address[1], "id": node.node_id.hex(),
                              "table": len(node.routing_table),
                              "loop": type(loop).__module__, "codec": codec_backend(),
                              "io": io_path()}),
                  flush=True)
            try:
                await asyncio.wait_for(stop.wait(), args.max_seconds)
            except TimeoutError:
                pass

    if args.auto_loop:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())
    elif args.uvloop:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())


def libtorrent_node_main(argv: list[str]) -> None:
    """Child: a libtorrent session with only the DHT, limits relaxed; commands on stdin."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ip", default=NODE_IP)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)
    if not args.ip.startswith("127."):
        raise SystemExit("loopback only")

    import libtorrent as lt

    session = lt.session({
        "enable_dht": True,
        "dht_bootstrap_nodes": "",  # never the public routers
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": f"{args.ip}:{args.port}",
        "outgoing_interfaces": args.ip,
        "alert_mask": lt.alert.category_t.dht_notification | lt.alert.category_t.stats_notification
        | lt.alert.category_t.status_notification,
        # Relaxed, as for many nodes on one host: the DoS blocker (per-IP packets per 10 s,
        # times 10 must fit an int) and the reply quota (bytes/s, times 3 must fit an int).
        "dht_block_ratelimit": 100_000_000,
        "dht_upload_rate_limit": 500_000_000,
        "dht_max_peers_reply": 100,
        # The receive buffer mldht asks for too (node.RECEIVE_BUFFER_BYTES): with the OS
        # default, a window of queries overflows it and the drops stall the load generator.
        "recv_socket_buffer_size": 4 * 1024 * 1024,
        "send_socket_buffer_size": 4 * 1024 * 1024,
    })
    print(json.dumps({"ready": True, "port": args.port}), flush=True)
    deadline = time.monotonic() + args.max_seconds

    def table_size(timeout: float = 5.0) -> int:
        session.post_dht_stats()
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            session.wait_for_alert(100)
            for alert in session.pop_alerts():
                if isinstance(alert, lt.dht_stats_alert):
                    return sum(bucket["num_nodes"] for bucket in alert.routing_table)
        return -1

    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            session.pop_alerts()
            if not ready:
                continue
            line = sys.stdin.readline()
            if not line:
                break
            request = json.loads(line)
            answer: dict = {"ok": True}
            if request.get("cmd") == "add":
                for ip, port in request["nodes"]:
                    if ip.startswith("127."):
                        session.add_dht_node((ip, port))
            elif request.get("cmd") == "stats":
                answer["table"] = table_size()
            elif request.get("cmd") == "quit":
                print(json.dumps(answer), flush=True)
                break
            print(json.dumps(answer), flush=True)
    finally:
        session.pause()  # the session itself goes with the process


# --- measurement ------------------------------------------------------------------------


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.children = Children()
        self.tmp = tempfile.mkdtemp(prefix="mldht-throughput-")
        self.node_cpu, self.load_cpu = pinning(args.node_cpu, args.load_cpu)
        try:
            self.loadgen = build_loadgen(self.tmp, python=args.python_loadgen)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.rng = random.Random(args.seed)
        self.templates: dict[str, str] = {}
        for kind in KINDS + ("echo",):
            path = os.path.join(self.tmp, f"{kind}.txt")
            write_templates(path, "find_node" if kind == "echo" else kind, args.templates, self.rng)
            self.templates[kind] = path
        self.profiles: dict[str, list[str]] = {}

    def close(self) -> None:
        self.children.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_load(self, port: int, kind: str, node_pid: int | None, label: str) -> dict:
        args = self.args
        cmd = [*self.loadgen, "gen", NODE_IP, str(port), self.templates[kind], str(args.sources),
               LOAD_PREFIX, str(args.window), str(args.seconds), str(args.warmup),
               str(args.max_queries), str(args.timeout_ms)]
        profiler = None
        proc = self.children.start(cmd, self.load_cpu, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        time.sleep(args.warmup)
        started = time.monotonic()
        ticks = cpu_ticks(node_pid) if node_pid else None
        if args.profile and label.startswith("mldht") and node_pid:
            profiler = self.start_profile(node_pid, label, kind)
        try:
            out, err = proc.communicate(timeout=args.warmup + args.seconds + 60)
        finally:
            self.children.stop(proc)
        elapsed = time.monotonic() - started
        if profiler is not None:
            self.stop_profile(profiler, label, kind)
        if ticks is not None and node_pid:
            node_cpu = (cpu_ticks(node_pid) - ticks) / os.sysconf("SC_CLK_TCK") / elapsed
        else:
            node_cpu = None
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed: {err.decode(errors='replace').strip()}")
        result = json.loads(out)
        seconds = result["seconds"] or 1e-9
        return {
            "target": label, "query": kind,
            "replies_per_s": round(result["replies"] / seconds),
            "errors_per_s": round(result["errors"] / seconds),
            "sent": result["sent"], "replies": result["replies"], "lost": result["lost"],
            "unmatched": result["unmatched"], "queries_in": result["queries_in"],
            "rtt_p50_ms": round(result["rtt_p50_us"] / 1000, 2),
            "rtt_p99_ms": round(result["rtt_p99_us"] / 1000, 2),
            "node_cpu_pct": None if node_cpu is None else round(100 * node_cpu),
            # Replies per second of the node's own CPU time: robust to other work on the host.
            "replies_per_cpu_s": round(result["replies"] / seconds / node_cpu)
            if node_cpu else None,
            "loadgen_cpu_pct": round(100 * result["cpu_seconds"] / seconds),
            "seconds": round(seconds, 2),
        }

    # profiling of the mldht node

    def start_profile(self, pid: int, label: str, kind: str):
        directory = self.args.profile
        os.makedirs(directory, exist_ok=True)
        if self.args.profiler == "py-spy":
            path = os.path.join(directory, f"{label}-{kind}.pyspy.txt")
            cmd = [find_py_spy() or "py-spy", "record", "--pid", str(pid), "--rate", "250",
                   "--duration", str(max(1, int(self.args.seconds) - 1)), "--format", "raw",
                   "--nonblocking", "--output", path]
            proc = self.children.start(cmd, self.load_cpu, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
            return ("py-spy", proc, path)
        path = os.path.join(directory, f"{label}-{kind}.prof")
        command(self.node_proc, {"cmd": "profile-start"})
        return ("cprofile", None, path)

    def stop_profile(self, profiler, label: str, kind: str) -> None:
        tool, proc, path = profiler
        if tool == "py-spy":
            try:
                proc.communicate(timeout=30)
            finally:
                self.children.stop(proc)
            lines = summarize_pyspy(path, self.args.profile_top)
        else:
            command(self.node_proc, {"cmd": "profile-stop", "path": path})
            lines = summarize_cprofile(path, self.args.profile_top)
        self.profiles[f"{label} {kind}"] = lines

    # targets

    def measure_echo(self) -> list[dict]:
        port = free_port()
        lifetime = self.args.warmup + self.args.seconds + 60
        proc = self.children.start(
            [*self.loadgen, "echo", NODE_IP, str(port), str(lifetime), str(10**12), "8"],
            self.node_cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            read_json_line(proc, 10)
            row = self.run_load(port, "echo", proc.pid, "rig ceiling")
            row.update(query="find_node (echo, 8 nodes)", nodes=8)
            return [row]
        finally:
            self.children.stop(proc)

    def measure_mldht(self, kinds: list[str], uvloop: bool = False,
                      root: str | None = None, python: tuple[str, str] | None = None,
                      pure: bool = False) -> list[dict]:
        """This checkout's mldht, or (with `root`) the mldht package of another checkout,
        e.g. a worktree of the commit before a change, or (with `python`, a (label, path)
        pair) the mldht installed for another interpreter, on the event loop `mldht serve`
        would choose there."""
        label = (("mldht+uvloop" if uvloop else "mldht") + ("@baseline" if root else "")
                 + ("@pure" if pure else ""))
        cmd = [sys.executable, str(Path(__file__).resolve()), "_mldht-node", "--depths",
               str(self.args.depths), "--max-seconds", str(self.lifetime(kinds))]
        if uvloop:
            cmd.append("--uvloop")
        env = None
        if root:
            env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()))
        if python:
            label, cmd[0] = python
            cmd.append("--auto-loop")
            env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        if pure:  # the pure-Python transport (mldht.batchio)
            env = dict(env if env is not None else os.environ, MLDHT_NATIVE="0")
        proc = self.children.start(cmd, self.node_cpu, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env)
        self.node_proc = proc
        try:
            ready = read_json_line(proc, 30)
            rows = self.measure_kinds(label, proc, (NODE_IP, ready["port"]), kinds,
                                      table=ready["table"])
            for row in rows:
                row.update(loop=ready.get("loop"), codec=ready.get("codec"),
                           io=ready.get("io"))
            return rows
        finally:
            self.children.stop(proc)

    def measure_libtorrent(self, kinds: list[str]) -> list[dict]:
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "_libtorrent-node", "--port",
               str(port), "--max-seconds", str(self.lifetime(kinds))]
        proc = self.children.start(cmd, self.node_cpu, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE)
        responders = None
        try:
            read_json_line(proc, 30)
            target = (NODE_IP, port)
            node_id = bytes.fromhex(wait_answering(target, 15)["id"])
            responders = Responders(node_id, self.args.depths, self.rng)
            command(proc, {"cmd": "add", "nodes": responders.addresses})
            wanted = 8 * self.args.depths
            table = 0
            deadline = time.monotonic() + self.args.seed_timeout
            while time.monotonic() < deadline:
                table = command(proc, {"cmd": "stats"})["table"]
                if table >= wanted and probe(target, "find_node")["nodes"] >= min(8, wanted):
                    break
                time.sleep(0.5)
            return self.measure_kinds("libtorrent", proc, target, kinds, table=table)
        finally:
            self.children.stop(proc)
            if responders is not None:
                responders.close()

    def measure_kinds(self, label: str, proc, target, kinds: list[str], table: int) -> list[dict]:
        rows = []
        for kind in kinds:
            if kind == "get_peers_values":
                announced = announce_swarm(target)
            shape = probe(target, kind)
            row = self.run_load(target[1], kind, proc.pid, label)
            row.update(nodes=shape.get("nodes"), values=shape.get("values"),
                       token=shape.get("token"), reply_bytes=shape.get("bytes"), table=table)
            if kind == "get_peers_values":
                row["announced"] = announced
            rows.append(row)
        return rows

    def lifetime(self, kinds: list[str]) -> float:
        per = self.args.warmup + self.args.seconds + 30
        return 120 + per * len(kinds)

    def run(self) -> dict:
        args = self.args
        kinds = args.kinds
        rows: list[dict] = []
        if "echo" in args.targets:
            rows += self.measure_echo()
        if "mldht" in args.targets:
            # Old and new alternate, so that a machine growing busier does not favour one.
            for uvloop in (False, True) if args.uvloop else (False,):
                rows += self.measure_mldht(kinds, uvloop=uvloop)
                if args.pure:
                    rows += self.measure_mldht(kinds, uvloop=uvloop, pure=True)
                if args.baseline:
                    rows += self.measure_mldht(kinds, uvloop=uvloop, root=args.baseline)
                for python in args.python:
                    rows += self.measure_mldht(kinds, python=python)
        if "libtorrent" in args.targets:
            rows += self.measure_libtorrent(kinds)
        ratios: dict = {}
        to_baseline: dict = {}
        for kind in kinds:
            same = {row["target"]: row for row in rows if row["query"] == kind}
            for label in ("mldht", "mldht+uvloop"):
                ours, before = same.get(label), same.get(label + "@baseline")
                if ours and before and ours["replies_per_cpu_s"] and before["replies_per_cpu_s"]:
                    to_baseline.setdefault(label, {})[kind] = round(
                        ours["replies_per_cpu_s"] / before["replies_per_cpu_s"], 3)
            theirs = same.get("libtorrent")
            if not theirs or not theirs["replies_per_s"]:
                continue
            for label in ("mldht", "mldht+uvloop", "mldht@baseline", "mldht+uvloop@baseline",
                          "mldht@pure", "mldht+uvloop@pure",
                          *(label for label, _ in args.python)):
                ours = same.get(label)
                if ours is None:
                    continue
                entry = {"replies_per_s": round(ours["replies_per_s"] / theirs["replies_per_s"], 3)}
                if ours["replies_per_cpu_s"] and theirs["replies_per_cpu_s"]:
                    entry["replies_per_cpu_s"] = round(
                        ours["replies_per_cpu_s"] / theirs["replies_per_cpu_s"], 3)
                ratios.setdefault(label, {})[kind] = entry
        return {"rows": rows, "ratio_to_libtorrent": ratios,
                "replies_per_cpu_s_to_baseline": to_baseline, "profiles": self.profiles,
                "config": {"mldht_code": code_version(),"seconds": args.seconds, "warmup": args.warmup, "window": args.window,
                           "sources": args.sources, "depths": args.depths,
                           "node_cpu": self.node_cpu, "load_cpu": self.load_cpu,
                           "cpus": os.cpu_count(),
                           "loadgen": "C" if len(self.loadgen) == 1 else "Python"}}


def code_version() -> str:
    """The commit measured, and whether mldht/ had uncommitted changes."""
    root = HERE.parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "mldht"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in mldht/' if dirty else ''}"


def find_py_spy() -> str | None:
    """py-spy on PATH or next to this Python (a virtual environment's bin)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def summarize_pyspy(path: str, top: int) -> list[str]:
    """Self and inclusive time per function from py-spy's raw (collapsed stack) output."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    try:
        with open(path) as handle:
            for line in handle:
                stack, _, count = line.rstrip().rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                samples = int(count)
                # "function (file:line)" -> "function (file)": one entry per function
                frames = [re.sub(r":\d+\)$", ")", frame.strip())
                          for frame in stack.split(";") if frame.strip()]
                while frames and frames[0].startswith(("process ", "thread ")):
                    frames = frames[1:]
                if not frames:
                    continue
                total += samples
                own[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
    except FileNotFoundError:
        return ["(py-spy wrote no profile)"]
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples; self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive time (the runner's own frames left out):")
    roots = ("throughput.py", "asyncio/runners.py", "run_until_complete", "run_forever")
    kept = [(frame, n) for frame, n in inclusive.most_common()
            if not any(root in frame for root in roots)]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in kept[:top]]
    return lines


def summarize_cprofile(path: str, top: int) -> list[str]:
    import pstats
    stats = pstats.Stats(path)
    total = stats.total_tt or 1e-9
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)
    lines = [f"{total:.2f} s profiled; self time (tottime):"]
    for (filename, line, name), (_, calls, tottime, cumtime, _) in rows[:top]:
        lines.append(f"  {100 * tottime / total:5.1f}%  {name} ({Path(filename).name}:{line}) "
                     f"calls={calls}")
    lines.append("inclusive time (cumtime):")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)
    for (filename, line, name), (_, calls, tottime, cumtime, _) in rows[:top]:
        lines.append(f"  {100 * cumtime / total:5.1f}%  {name} ({Path(filename).name}:{line})")
    return lines


def measure(**options) -> dict:
    """Run the benchmark with `options` (the command-line flags, underscores for dashes)."""
    args = parse_args([])
    for key, value in options.items():
        setattr(args, key, value)
    bench = Bench(args)
    try:
        return bench.run()
    finally:
        bench.close()


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="echo,mldht,libtorrent",
                        type=lambda text: text.split(","),
                        help="comma-separated: echo (rig ceiling), mldht, libtorrent")
    parser.add_argument("--kinds", default=",".join(KINDS), type=lambda text: text.split(","),
                        help=f"comma-separated query kinds: {', '.join(KINDS)}")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--window", type=int, default=512, help="queries outstanding at most")
    parser.add_argument("--sources", type=int, default=32, help="source sockets (127.77.x.y)")
    parser.add_argument("--max-queries", type=int, default=50_000_000)
    parser.add_argument("--timeout-ms", type=int, default=1000)
    parser.add_argument("--depths", type=int, default=20,
                        help="routing-table buckets filled with 8 nodes each")
    parser.add_argument("--templates", type=int, default=256, help="distinct queries per kind")
    parser.add_argument("--seed-timeout", type=float, default=30.0,
                        help="seconds to wait for libtorrent's table to fill")
    parser.add_argument("--node-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="also measure mldht under uvloop")
    parser.add_argument("--baseline", metavar="DIR", default=None,
                        help="also measure the mldht package of another checkout (e.g. a git "
                             "worktree of the commit before a change), alternating with this "
                             "one, and print the replies per CPU-second of this one over it")
    parser.add_argument("--pure", action="store_true",
                        help="also measure this checkout's mldht on the pure-Python transport "
                             "(MLDHT_NATIVE=0: one recvfrom/sendto per datagram), alternating")
    parser.add_argument("--python", metavar="LABEL=PATH", action="append", default=[],
                        help="also measure the mldht installed for the interpreter PATH (a "
                             "venv's bin/python, e.g. a plain `pip install .` against one "
                             "with [fast]), on the loop `mldht serve` picks there; repeatable")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="profile the mldht node during each run, files in DIR")
    parser.add_argument("--profiler", choices=("py-spy", "cprofile"),
                        default="py-spy" if find_py_spy() else "cprofile")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--python-loadgen", action="store_true",
                        help="use the (slow) Python load generator even when gcc is there")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    pythons = []
    for item in args.python:
        label, _, path = item.partition("=")
        if not label or not path or not Path(path).exists():
            parser.error(f"--python {item!r}: expected LABEL=PATH of an existing interpreter")
        pythons.append((label, path))
    args.python = pythons
    for kind in args.kinds:
        if kind not in KINDS:
            parser.error(f"unknown query kind {kind}")
    if args.seconds <= 0 or args.seconds > 600 or args.warmup < 0 or args.warmup > 60:
        parser.error("--seconds must be in (0, 600] and --warmup in [0, 60]")
    if args.window < args.sources:
        parser.error("--window must be at least --sources")
    return args


def print_table(result: dict) -> None:
    header = (f"{'target':22} {'query':28} {'replies/s':>10} {'per CPU-s':>10} {'lost':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'node CPU':>8} {'gen CPU':>8} {'nodes':>5} "
              f"{'values':>6} {'reply B':>7}")
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        node_cpu = "-" if row["node_cpu_pct"] is None else f"{row['node_cpu_pct']}%"
        per_cpu = "-" if row["replies_per_cpu_s"] is None else f"{row['replies_per_cpu_s']:,}"
        print(f"{row['target']:22} {row['query']:28} {row['replies_per_s']:>10,} {per_cpu:>10} "
              f"{row['lost']:>6} {row['rtt_p50_ms']:>7} {row['rtt_p99_ms']:>7} {node_cpu:>8} "
              f"{str(row['loadgen_cpu_pct']) + '%':>8} {row.get('nodes') or 0:>5} "
              f"{row.get('values') or 0:>6} {row.get('reply_bytes') or '-':>7}")
    for label, ratios in result["ratio_to_libtorrent"].items():
        text = ", ".join(
            f"{kind} {entry['replies_per_s']:.3f}"
            + (f" ({entry['replies_per_cpu_s']:.3f} per CPU-s)" if "replies_per_cpu_s" in entry else "")
            for kind, entry in ratios.items())
        print(f"{label} / libtorrent: {text}")
    for label, ratios in result.get("replies_per_cpu_s_to_baseline", {}).items():
        text = ", ".join(f"{kind} {ratio:.3f}" for kind, ratio in ratios.items())
        print(f"{label} / {label}@baseline, replies per CPU-s: {text}")
    print("per CPU-s: replies per second of the node's own CPU time (what one free core would "
          "serve); gen CPU: the load generator's share of its core")
    config = result["config"]
    pinned = (f"node on CPU {config['node_cpu']}, load generator on CPU {config['load_cpu']}"
              if config["node_cpu"] is not None else "not pinned (fewer than two usable CPUs)")
    print(f"{config['seconds']} s per run after {config['warmup']} s warmup, window "
          f"{config['window']} from {config['sources']} sources; {pinned}; mldht at "
          f"{config['mldht_code']}; {config['loadgen']} load generator")
    for name, lines in result["profiles"].items():
        print(f"\nprofile: {name}")
        for line in lines:
            print(line)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_mldht-node":
        mldht_node_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_py-loadgen":
        py_loadgen_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_libtorrent-node":
        libtorrent_node_main(sys.argv[2:])
        return
    args = parse_args(sys.argv[1:])
    bench = Bench(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        result = bench.run()
    finally:
        bench.close()
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
