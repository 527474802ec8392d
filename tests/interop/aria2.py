"""aria2 (1.36) as a reference DHT implementation in the interop lab.

aria2's DHT only runs while it has a BitTorrent download, so `Aria2` starts `aria2c` on a magnet
link (no trackers) with its IPv4 DHT on a lab address, one `--dht-entry-point` and everything
that could reach the outside world switched off (IPv6 DHT, LPD, PEX, trackers, async DNS,
config files). aria2 has no UPnP/NAT-PMP support at all.

Quirks that shape the options (aria2 1.36.0 source, checked in the lab):

* The IPv4 DHT socket binds to 0.0.0.0 unless the *hidden* option `--dht-listen-addr` is given
  (only `--dht-listen-addr6` is documented). Inside the lab a socket bound to 0.0.0.0 that
  sends to 198.18.1.1 gets 198.18.1.1 as its source address, so aria2 would appear to share
  the address of whatever node it talks to: `--dht-listen-addr` is mandatory here.
  `--interface` binds the BitTorrent listen socket and outgoing TCP connections.
* The routing table is written to `--dht-file-path` every 30 minutes and when aria2 halts,
  good nodes only. SIGINT starts the graceful shutdown ("Shutdown sequence commencing");
  SIGTERM (and SIGHUP) is the *emergency* shutdown (it still writes dht.dat).
  The format (aria2 manual, "DHT routing table file format") is parsed by `read_dht_file`.
* A fresh `--dht-file-path` makes aria2 log an ERROR ("Failed to load DHT routing table"):
  harmless, it starts with a new random id.

DHT behaviour measured in the lab (scenario_aria2.py):

* Bootstrap: it pings the entry point and, at the same moment, starts a find_node lookup of
  its own id on a still empty table, which ends at once: from a single entry point aria2
  sends no find_node at all (bucket refresh is checked every 5 min); it learns nodes from
  get_peers replies. Restarted with a dht.dat it keeps its id and sends find_node (forced
  bucket refresh, several at once to the same node) within ~20 ms.
* get_peers: the first lookup runs at start on the empty table; the retry comes 5 s later
  (GET_PEER_INTERVAL_RETRY), so the first real get_peers is at ~6 s, then every ~6 s while
  it lacks peers. Each lookup ends with announce_peer to the 8 closest nodes that gave a
  token: `port` = its BitTorrent listen port, never `implied_port`.
* Peers found: connected ~3 s later, MSE (encrypted) handshake first, a plain BitTorrent
  handshake 1 s after that fails; it also dials its own announced address.
* Serving: `v` = "A2" 00 03; 20-byte tokens (SHA-1 of infohash, IP *and UDP port*, secret);
  no BEP 42 `ip`; find_node/get_peers replies list up to 8 nodes, the requester included.
  It never sends KRPC errors: unknown methods, a bad token, or announce_peer without `port`
  (even with implied_port=1) go unanswered. It ignores `implied_port` (stores `port`) and
  BEP 43 `ro` (read-only queriers enter its table, its replies and its dht.dat).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import secrets
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import lab as _lab

ARIA2C = "aria2c"
INSTALL_HINT = "aria2c not found: install it with `apt-get install aria2`"

DHT_FILE_MAGIC = b"\xa1\xa2"
DHT_FILE_HEADER = 56
DHT_FILE_ENTRY = 56


def aria2c_path() -> str:
    path = shutil.which(ARIA2C)
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


def aria2c_version() -> str:
    out = subprocess.run([aria2c_path(), "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("aria2 version ").strip()


@dataclass(slots=True)
class DhtFileNode:
    id: bytes
    ip: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


@dataclass(slots=True)
class DhtFile:
    """The content of an aria2 dht.dat: its own node id, the save time and the good nodes."""

    format_id: int
    version: int
    saved_at: int
    local_id: bytes
    nodes: list[DhtFileNode]


def read_dht_file(path: Path) -> DhtFile:
    """Parse aria2's binary routing table file (format 0x02 of the aria2 manual).

    Header (56 bytes): magic A1 A2, format id (1 byte), 3 reserved, version (2 bytes, BE),
    save time (8 bytes, BE seconds), 8 reserved, local node id (20), 4 reserved,
    node count (4 bytes, BE), 4 reserved. Then per node (56 bytes): compact length (1 byte,
    6 for IPv4, 18 for IPv6), 7 reserved, compact address (padded to 24 bytes),
    node id (20), 4 reserved.
    """
    data = Path(path).read_bytes()
    if len(data) < DHT_FILE_HEADER or data[:2] != DHT_FILE_MAGIC:
        raise ValueError(f"{path}: not an aria2 DHT routing table file")
    format_id = data[2]
    version = struct.unpack_from(">H", data, 6)[0]
    saved_at = struct.unpack_from(">Q", data, 8)[0]
    local_id = data[24:44]
    count = struct.unpack_from(">I", data, 48)[0]
    if len(data) < DHT_FILE_HEADER + count * DHT_FILE_ENTRY:
        raise ValueError(f"{path}: truncated ({count} nodes announced, {len(data)} bytes)")
    nodes = []
    for index in range(count):
        entry = data[DHT_FILE_HEADER + index * DHT_FILE_ENTRY:][:DHT_FILE_ENTRY]
        compact_length = entry[0]
        compact = entry[8:8 + compact_length]
        node_id = entry[32:52]
        if compact_length == 6:
            ip = ".".join(str(byte) for byte in compact[:4])
            port = struct.unpack(">H", compact[4:6])[0]
        elif compact_length == 18:
            import ipaddress

            ip = str(ipaddress.IPv6Address(compact[:16]))
            port = struct.unpack(">H", compact[16:18])[0]
        else:
            continue
        nodes.append(DhtFileNode(node_id, ip, port))
    return DhtFile(format_id, version, saved_at, local_id, nodes)


class Aria2:
    """One aria2c process fetching a magnet link, its DHT on `ip:dht_port`.

    `entry_point` is the one (ip, port) given as `--dht-entry-point`. With `rpc=True` a
    JSON-RPC endpoint listens on 127.0.0.1:`rpc_port` inside the lab (see `rpc`). Give the
    `dht_file` of a previous run to restart with its node id and routing table.
    """

    def __init__(self, lab: "_lab.Lab", ip: str, info_hash: bytes,
                 entry_point: tuple[str, int], *, name: str = "aria2",
                 dht_port: int | None = None, listen_port: int | None = None,
                 rpc: bool = False, message_timeout: int | None = None,
                 dht_file: Path | None = None, log_level: str = "info") -> None:
        self.lab = lab
        self.name = name
        self.ip = ip
        self.info_hash = bytes(info_hash)
        self.entry_point = entry_point
        self.dht_port = dht_port or _lab.free_udp_port(ip)
        self.listen_port = listen_port or _lab.free_tcp_port(ip)
        self.rpc_enabled = rpc
        self.rpc_port = _lab.free_tcp_port("127.0.0.1") if rpc else None
        self.rpc_secret = secrets.token_hex(16)
        self.message_timeout = message_timeout
        self.log_level = log_level
        self.dir = lab.path(name)
        self.dht_file = Path(dht_file) if dht_file else self.dir / "dht.dat"
        self.log_file = self.dir / "aria2.log"
        self.started_at: float | None = None
        self.process: subprocess.Popen | None = None

    @property
    def dht_address(self) -> tuple[str, int]:
        return (self.ip, self.dht_port)

    @property
    def peer_address(self) -> tuple[str, int]:
        """The BitTorrent (TCP) address aria2 announces: its DHT source IP, its listen port."""
        return (self.ip, self.listen_port)

    @property
    def magnet(self) -> str:
        return f"magnet:?xt=urn:btih:{self.info_hash.hex()}&dn=mldht-interop"

    def argv(self) -> list[str]:
        argv = [
            aria2c_path(),
            "--no-conf=true", "--no-netrc=true",
            f"--dir={self.dir / 'download'}",
            f"--log={self.log_file}", f"--log-level={self.log_level}",
            "--console-log-level=notice", "--summary-interval=0", "--enable-color=false",
            "--show-console-readout=false",
            "--async-dns=false",  # c-ares would read resolv.conf; the entry point is numeric
            "--disable-ipv6=true", "--enable-dht6=false",
            "--enable-dht=true",
            f"--dht-listen-addr={self.ip}",  # hidden option: see the module docstring
            f"--dht-listen-port={self.dht_port}",
            f"--dht-entry-point={self.entry_point[0]}:{self.entry_point[1]}",
            f"--dht-file-path={self.dht_file}",
            f"--interface={self.ip}",
            f"--listen-port={self.listen_port}",
            "--bt-enable-lpd=false", "--enable-peer-exchange=false",
            "--bt-save-metadata=false", "--bt-metadata-only=true",
            "--follow-torrent=false", "--seed-time=0",
            "--bt-tracker-connect-timeout=1", "--bt-stop-timeout=0",
        ]
        if self.message_timeout is not None:
            argv.append(f"--dht-message-timeout={self.message_timeout}")
        if self.rpc_enabled:
            argv += ["--enable-rpc=true", "--rpc-listen-all=false",
                     f"--rpc-listen-port={self.rpc_port}", "--rpc-allow-origin-all=false",
                     f"--rpc-secret={self.rpc_secret}"]
        argv.append(self.magnet)
        return argv

    async def start(self) -> None:
        """Start aria2c and wait until its DHT socket is listening (it says so in its log)."""
        if not _lab.in_lab_namespace():
            raise RuntimeError("aria2c may only run inside the lab namespace")
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.dir),
               "XDG_CACHE_HOME": str(self.dir / "cache"),
               "XDG_CONFIG_HOME": str(self.dir / "config"), "LANG": "C"}
        self.started_at = time.monotonic()
        self.process = process = self.lab.spawn(self.name, self.argv(), cwd=self.dir, env=env)
        deadline = time.monotonic() + 10
        needle = f"IPv4 DHT: listening on UDP port {self.dht_port}"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"aria2c exited ({process.returncode}):\n"
                                   f"{self.lab.log(self.name)[-3000:]}")
            if needle in self.log() or needle in self.lab.log(self.name):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"aria2c DHT did not start listening:\n{self.log()[-3000:]}")
        if self.rpc_enabled:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    await self.rpc("aria2.getVersion")
                    break
                except OSError:
                    await asyncio.sleep(0.1)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def elapsed(self) -> float:
        assert self.started_at is not None
        return time.monotonic() - self.started_at

    async def rpc(self, method: str, *params, timeout: float = 5.0):
        """Call aria2's JSON-RPC (only with rpc=True); returns the `result`."""
        if not self.rpc_enabled:
            raise RuntimeError("RPC not enabled")
        body = json.dumps({"jsonrpc": "2.0", "id": "lab", "method": method,
                           "params": [f"token:{self.rpc_secret}", *params]}).encode()
        url = f"http://127.0.0.1:{self.rpc_port}/jsonrpc"

        def call():
            request = urllib.request.Request(url, data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read())

        answer = await asyncio.to_thread(call)
        if "error" in answer:
            raise RuntimeError(f"aria2 RPC {method}: {answer['error']}")
        return answer["result"]

    async def stop(self, timeout: float = 15.0) -> tuple[int | None, float]:
        """Stop aria2 gracefully (one SIGINT: it halts and writes dht.dat); returns its exit
        status (7: downloads left unfinished, the normal case here) and how long it took."""
        started = time.monotonic()
        code = await self.lab.stop(self.name, timeout=timeout, sig=signal.SIGINT)
        return code, time.monotonic() - started

    def routing_table(self) -> DhtFile:
        """The routing table aria2 saved at exit."""
        return read_dht_file(self.dht_file)

    def log_count(self, needle: str) -> int:
        return self.log().count(needle)
