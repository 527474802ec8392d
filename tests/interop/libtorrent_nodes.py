"""libtorrent-rasterbar DHT nodes (PyPI `libtorrent`) for the interop lab.

Each node is a session with only the DHT running, on its own lab address (libtorrent keeps
one routing entry per IP and in practice one per /24). Its alerts are pumped in the
background so that lookups, table dumps and bans can be waited for with a timeout.
"""

from __future__ import annotations

import asyncio
import time

import libtorrent as lt

ALERTS = (lt.alert.category_t.dht_notification | lt.alert.category_t.status_notification
          | lt.alert.category_t.dht_operation_notification
          | lt.alert.category_t.dht_log_notification)


def _text(item) -> str:
    """An item's value for a JSON report: a string as text, anything else as its repr."""
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return repr(item)


class LibtorrentNode:
    def __init__(self, ip: str, port: int, *, relaxed: bool = False,
                 enforce_node_id: bool = False) -> None:
        settings = {
            "enable_dht": True,
            "dht_bootstrap_nodes": "",  # never the public routers
            "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
            "listen_interfaces": f"{ip}:{port}",
            # BEP 42: off unless a scenario checks ids (lab addresses are not exempt).
            "dht_enforce_node_id": enforce_node_id,
            "alert_mask": ALERTS,
        }
        if relaxed:  # for many nodes on one host: keep the DoS blocker out of the way
            settings.update(dht_block_ratelimit=100_000, dht_upload_rate_limit=1_000_000)
        self.ip = ip
        self.port = port
        self.session = lt.session(settings)
        self.peers: dict[str, set[tuple[str, int]]] = {}
        self.peer_times: dict[str, float] = {}
        self.live_nodes: list[dict] | None = None
        self.log_lines: list[str] = []
        self.samples: list = []
        self.items: list = []
        """BEP 44 alerts: dht_immutable_item_alert, dht_mutable_item_alert, dht_put_alert."""
        self.started = time.monotonic()
        self._pump = asyncio.get_running_loop().create_task(self._pump_alerts())

    async def _pump_alerts(self) -> None:
        while True:
            for alert in self.session.pop_alerts():
                if isinstance(alert, lt.dht_get_peers_reply_alert):
                    key = str(alert.info_hash)
                    found = {(str(ip), port) for ip, port in alert.peers()}
                    if found and key not in self.peer_times:
                        self.peer_times[key] = time.monotonic()
                    self.peers.setdefault(key, set()).update(found)
                elif isinstance(alert, lt.dht_sample_infohashes_alert):
                    self.samples.append(alert)
                elif isinstance(alert, (lt.dht_immutable_item_alert, lt.dht_mutable_item_alert,
                                        lt.dht_put_alert)):
                    self.items.append(alert)
                elif isinstance(alert, lt.dht_live_nodes_alert):
                    self.live_nodes = alert.nodes
                elif isinstance(alert, lt.dht_log_alert):
                    if len(self.log_lines) < 20_000:
                        self.log_lines.append(alert.log_message())
            await asyncio.sleep(0.05)

    def add_node(self, address: tuple[str, int]) -> None:
        self.session.add_dht_node(address)

    def announce(self, info_hash: bytes, port: int) -> None:
        self.session.dht_announce(lt.sha1_hash(info_hash), port, 0)

    async def lookup(self, info_hash: bytes, timeout: float, expect=None) -> tuple[set, float | None]:
        """Run dht_get_peers until `expect` (a peer) is found or `timeout`; (peers, seconds)."""
        key = info_hash.hex()
        started = time.monotonic()
        self.session.dht_get_peers(lt.sha1_hash(info_hash))
        deadline = started + timeout
        next_retry = started + 5.0
        while time.monotonic() < deadline:
            found = self.peers.get(key, set())
            if found and (expect is None or expect in found):
                return found, round(time.monotonic() - started, 3)
            if time.monotonic() > next_retry:  # a lookup that ended early is started again
                self.session.dht_get_peers(lt.sha1_hash(info_hash))
                next_retry = time.monotonic() + 5.0
            await asyncio.sleep(0.05)
        return self.peers.get(key, set()), None

    async def table(self, own_id: bytes, timeout: float = 10.0) -> list[tuple[str, int]]:
        """Endpoints of libtorrent's live routing-table nodes (needs its own DHT node id,
        which only its wire messages tell: session_state's nids has no Python binding)."""
        self.live_nodes = None
        self.session.dht_live_nodes(lt.sha1_hash(own_id))
        deadline = time.monotonic() + timeout
        while self.live_nodes is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return [(str(n["endpoint"][0]), n["endpoint"][1]) for n in self.live_nodes or []]

    async def sample(self, address: tuple[str, int], target: bytes,
                     timeout: float = 10.0) -> dict | None:
        """libtorrent's BEP 51 query to `address`; its alert as a dict (None on timeout)."""
        self.samples.clear()
        self.session.dht_sample_infohashes(address, lt.sha1_hash(target))
        deadline = time.monotonic() + timeout
        while not self.samples and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.samples:
            return None
        alert = self.samples[0]
        return {"samples": sorted(str(h) for h in alert.samples), "num": alert.num_infohashes,
                "interval": alert.interval.total_seconds() if hasattr(alert.interval, "total_seconds")
                else alert.interval, "nodes": alert.num_nodes}

    async def _item_alert(self, kind, match, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in self.items:
                if isinstance(alert, kind) and match(alert):
                    self.items.remove(alert)
                    return alert
            await asyncio.sleep(0.05)
        return None

    async def put_immutable(self, value: bytes, timeout: float = 30.0) -> dict:
        """BEP 44 put of a string value; {target, num_success} once libtorrent reports it."""
        target = self.session.dht_put_immutable_item(value)
        alert = await self._item_alert(lt.dht_put_alert, lambda a: a.target == target, timeout)
        return {"target": str(target), "num_success": None if alert is None else alert.num_success}

    async def get_immutable(self, target: bytes, timeout: float = 30.0) -> dict | None:
        self.session.dht_get_immutable_item(lt.sha1_hash(target))
        alert = await self._item_alert(lt.dht_immutable_item_alert,
                                       lambda a: a.target == lt.sha1_hash(target), timeout)
        return None if alert is None else {"value": _text(alert.item)}

    async def put_mutable(self, expanded_secret: bytes, public_key: bytes, value: bytes,
                          salt: bytes, timeout: float = 30.0) -> dict:
        """libtorrent signs `value` (a string) with seq = the highest found + 1."""
        self.session.dht_put_mutable_item(expanded_secret, public_key, value, salt)
        alert = await self._item_alert(lt.dht_put_alert,
                                       lambda a: bytes(a.public_key) == public_key, timeout)
        return {} if alert is None else {"seq": alert.seq, "num_success": alert.num_success}

    async def get_mutable(self, public_key: bytes, salt: bytes, timeout: float = 30.0) -> dict | None:
        """The authoritative result of libtorrent's lookup (after the whole traversal)."""
        self.session.dht_get_mutable_item(public_key, salt)
        alert = await self._item_alert(
            lt.dht_mutable_item_alert,
            lambda a: bytes(a.key) == public_key and a.authoritative, timeout)
        if alert is None:
            return None
        return {"value": _text(alert.item), "seq": alert.seq,
                "salt": _text(bytes(alert.salt))}

    def bans(self) -> list[str]:
        """libtorrent's DoS blocker log lines (`BANNING PEER ...`)."""
        return [line for line in self.log_lines if "BANNING" in line.upper()]

    async def close(self) -> None:
        self._pump.cancel()
        try:
            await self._pump
        except asyncio.CancelledError:
            pass
        self.session.pause()
        del self.session
