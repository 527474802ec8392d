"""Transmission (transmission-daemon 3.00, jech/dht inside) as a lab peer.

`TransmissionDaemon` writes a config directory, starts `transmission-daemon -f -g DIR` in the
lab (through `Lab.spawn`, so it is tracked by PID), adds magnets over RPC, stops it with
SIGTERM (it then writes `dht.dat`) and parses `dht.dat`, its saved routing table.

Quirks this adapter works around (Transmission 3.00 / its bundled jech dht):

* Nodes on 127/8 (and 0/8, 224/3, port 0) are "martian" and dropped: use lab addresses.
* It bootstraps from `dht.dat` nodes, then from the "host port" lines of `dht.bootstrap` in the
  config dir (one ping per address, then a 7.5-22.5 s nap), then, if still not "firewalled",
  from dht.transmissionbt.com every 20-60 s (the lab has no DNS, so that fails at once).
* It searches/announces only when its DHT is at least "poor": 4 good nodes and more than 8
  known ones; until then it retries every 5-10 s.
* At shutdown it writes `dht.dat` only if its DHT is at least "firewalled", i.e. 40 good
  nodes ("Not saving nodes, DHT not ready" otherwise), and `nodes` holds 6-byte compact
  addresses (no ids) of good nodes only.
* `dht.dat` also holds its node `id`; a `dht.dat` with only an `id` makes it reuse that id
  without giving it any node, which lets a scenario place nodes in chosen buckets.
* A node becomes "good" only by answering one of its queries; queries it receives only make
  the sender "dubious". Its first bucket holds 128 nodes (jech/dht 0.27), so it does not split
  in a small lab network, and table maintenance queries one random node every 5-15 s: its
  searches (one per torrent) are what make many nodes good quickly.
* It sends no `v` key, answers unknown methods with nothing (logged "Unparseable message",
  even with a `target`), uses 8-byte tokens, and rate-limits incoming queries
  ("Dropping request due to rate limiting"; 400 burst / 100 per s in jech/dht 0.27).
* `TR_DHT_VERBOSE` in the environment makes jech/dht log every message to stderr.
* `encryption` 0 (prefer clear) makes its outgoing peer connections start with a plain
  BitTorrent handshake instead of MSE.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request

import bencodepy

DAEMON = "transmission-daemon"
INSTALL_HINT = ("transmission-daemon is not installed: apt-get install transmission-daemon "
                "(Debian package, Transmission 3.00)")

ENCRYPTION_PREFER_CLEAR = 0
"""settings.json `encryption`: 0 prefers plaintext handshakes (no MSE), 1 prefers, 2 requires MSE."""


def daemon_path() -> str | None:
    return shutil.which(DAEMON)


def magnet(info_hash: bytes, name: str = "mldht-interop") -> str:
    return f"magnet:?xt=urn:btih:{info_hash.hex()}&dn={name}"


def parse_dht_dat(data: bytes) -> dict:
    """`dht.dat` as {"id": bytes|None, "nodes": [(ip, port)], "nodes6": [(ip, port)]}."""
    import ipaddress

    decoded = bencodepy.Bencode(encoding=None, dict_ordered=False).decode(data)
    nodes = []
    raw = decoded.get(b"nodes", b"")
    for offset in range(0, len(raw) - len(raw) % 6, 6):
        nodes.append((str(ipaddress.IPv4Address(raw[offset:offset + 4])),
                      int.from_bytes(raw[offset + 4:offset + 6], "big")))
    nodes6 = []
    raw6 = decoded.get(b"nodes6", b"")
    for offset in range(0, len(raw6) - len(raw6) % 18, 18):
        nodes6.append((str(ipaddress.IPv6Address(raw6[offset:offset + 16])),
                       int.from_bytes(raw6[offset + 16:offset + 18], "big")))
    return {"id": decoded.get(b"id"), "nodes": nodes, "nodes6": nodes6}


class TransmissionDaemon:
    """One transmission-daemon in the lab: `ip` for everything (peer port = DHT UDP port)."""

    def __init__(self, lab, ip: str, peer_port: int, rpc_port: int, *, name: str = "transmission",
                 node_id: bytes | None = None, bootstrap: list[tuple[str, int]] | None = None,
                 verbose_dht: bool = True, settings: dict | None = None) -> None:
        self.lab = lab
        self.name = name
        self.ip = ip
        self.peer_port = peer_port
        self.rpc_port = rpc_port
        self.node_id = node_id
        self.bootstrap = list(bootstrap or [])
        self.verbose_dht = verbose_dht
        self.extra_settings = dict(settings or {})
        self.config_dir = lab.path(f"{name}-config")
        self.download_dir = lab.path(f"{name}-downloads")
        self.started_at: float | None = None
        self.exit_code: int | None = None
        self._session_id = ""

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.peer_port)

    def settings(self) -> dict:
        settings = {
            "bind-address-ipv4": self.ip,
            "bind-address-ipv6": "::1",
            "peer-port": self.peer_port,
            "peer-port-random-on-start": False,
            "port-forwarding-enabled": False,
            "dht-enabled": True,
            "lpd-enabled": False,
            "pex-enabled": False,
            "utp-enabled": False,
            "encryption": ENCRYPTION_PREFER_CLEAR,
            "blocklist-enabled": False,
            "rpc-enabled": True,
            "rpc-bind-address": self.ip,
            "rpc-port": self.rpc_port,
            "rpc-authentication-required": False,
            "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False,
            "download-dir": str(self.download_dir),
            "incomplete-dir-enabled": False,
            "watch-dir-enabled": False,
            "start-added-torrents": True,
            "message-level": 3,
            "peer-limit-global": 50,
            "peer-limit-per-torrent": 50,
        }
        settings.update(self.extra_settings)
        return settings

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "settings.json").write_text(json.dumps(self.settings(), indent=1))
        if self.bootstrap:
            (self.config_dir / "dht.bootstrap").write_text(
                "".join(f"{host} {port}\n" for host, port in self.bootstrap))
        dat = self.config_dir / "dht.dat"
        if self.node_id is not None:
            # Only an id: Transmission reuses it ("Reusing old id") and knows no node yet.
            dat.write_bytes(bencodepy.encode({b"id": bytes(self.node_id)}))
        elif dat.exists():
            dat.unlink()

    async def start(self) -> None:
        if daemon_path() is None:
            raise RuntimeError(INSTALL_HINT)
        self.write_config()
        env = dict(os.environ)
        env.pop("TR_DHT_VERBOSE", None)
        if self.verbose_dht:
            env["TR_DHT_VERBOSE"] = "1"
        self.lab.spawn(self.name, [daemon_path(), "-f", "-g", str(self.config_dir)], env=env,
                       cwd=self.config_dir)
        self.started_at = time.monotonic()
        await self.wait_rpc()

    def since_start(self) -> float:
        assert self.started_at is not None
        return round(time.monotonic() - self.started_at, 3)

    def log(self) -> str:
        return self.lab.log(self.name)

    def running(self) -> bool:
        process = self.lab.processes.get(self.name)
        return process is not None and process.poll() is None

    # --- RPC ---------------------------------------------------------------------------

    def _rpc_blocking(self, method: str, arguments: dict | None = None) -> dict:
        url = f"http://{self.ip}:{self.rpc_port}/transmission/rpc"
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(2):
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "X-Transmission-Session-Id": self._session_id,
                "Content-Type": "application/json"})
            try:
                with opener.open(request, timeout=5) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    raise
                self._session_id = exc.headers.get("X-Transmission-Session-Id", "")
        raise RuntimeError("Transmission RPC kept answering 409")

    async def rpc(self, method: str, arguments: dict | None = None) -> dict:
        reply = await asyncio.to_thread(self._rpc_blocking, method, arguments)
        if reply.get("result") != "success":
            raise RuntimeError(f"Transmission RPC {method} failed: {reply}")
        return reply.get("arguments", {})

    async def wait_rpc(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{DAEMON} exited early:\n{self.log()[-3000:]}")
            try:
                await self.rpc("session-get")
                return
            except (OSError, RuntimeError, ValueError) as exc:
                last = exc
                await asyncio.sleep(0.2)
        raise RuntimeError(f"Transmission RPC not answering after {timeout} s: {last}")

    async def add_magnet(self, info_hash: bytes, name: str = "mldht-interop") -> dict:
        return await self.rpc("torrent-add", {"filename": magnet(info_hash, name),
                                              "paused": False})

    async def torrents(self) -> list[dict]:
        reply = await self.rpc("torrent-get", {"fields": [
            "hashString", "name", "peersConnected", "peersFrom", "error", "errorString"]})
        return reply.get("torrents", [])

    # --- stop and saved state ------------------------------------------------------------

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (Transmission then saves dht.dat), waited for `timeout` seconds."""
        self.exit_code = await self.lab.stop(self.name, timeout=timeout, sig=signal.SIGTERM)
        return self.exit_code

    def dht_dat(self) -> dict | None:
        """The parsed `dht.dat` (None when absent)."""
        path = self.config_dir / "dht.dat"
        if not path.exists():
            return None
        return parse_dht_dat(path.read_bytes())
