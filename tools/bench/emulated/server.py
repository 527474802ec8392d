"""The emulated DHT's UDP loop: every virtual node on 127.0.0.0/8, one socket per port.

Sockets are bound to 0.0.0.0 on `ports` consecutive ports (a socket cannot be bound to a
/8), with IP_PKTINFO: a datagram's destination says which virtual node it is for, and the
reply leaves from that same address. Only datagrams from 127.0.0.0/8 are answered; anything
else is counted and dropped, so nothing is ever sent off this machine.

Per datagram: lost on the way in (`loss`), refused by libtorrent's per-IP limit (counted
per source IP and zone), answered by the model, lost on the way back, else sent after the
node's round-trip time (with per-datagram jitter). The truth (what is online, reachable,
listed; what arrived and was dropped, per zone of keyspace and per source IP) is written
as JSON every `truth_every` seconds and at the end.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import resource
import select
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np

from .model import EmulatedNetwork

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("@i4s4s")
SOCKET_BUFFER = 8 << 20
MAX_PENDING = 2_000_000
"""Replies waiting for their round trip; past it, a reply is dropped (and counted)."""
MAX_SOURCES = 4096
"""Source IPs counted one by one in the truth; past it, under `other`."""
RECEIVE_BATCH = 256
TICK = 30.0
"""Seconds between two recomputations of who is online (sessions last hours; the whole
population is gone over, a second of CPU at 20 million nodes)."""
OUTCOMES = ("answered", "error", "silent", "offline", "malformed", "dropped")


def _pktinfo(ip: bytes) -> list:
    return [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, ip, b"\0\0\0\0"))]


class EmulatorServer:
    """Serves `network` until `duration` seconds have passed or `stop()` is called."""

    def __init__(self, network: EmulatedNetwork, *, truth_path: str | None = None,
                 truth_every: float = 10.0, seed: int = 1) -> None:
        self.network = network
        self.config = network.config
        self.truth_path = Path(truth_path) if truth_path else None
        self.truth_every = truth_every
        self.random = random.Random(seed).random
        self.sockets: dict[int, socket.socket] = {}
        self.port_of: dict[int, int] = {}
        self.pending: list = []
        self._sequence = 0
        population = network.population
        self.answered = bytearray(population)
        self.named = bytearray(population)
        self.counts = {name: 0 for name in (
            "received", "foreign", "no_node", "lost_in", "rate_limited", *OUTCOMES,
            "lost_out", "sent", "send_failed", "overflow")}
        self.zone_received = [0] * 256
        self.zone_answered = [0] * 256
        self.zone_dropped = [0] * 256
        self.sources: dict[str, list[int]] = {}
        """source IP -> [received, answered, rate_limited, lost]."""
        self.limits: dict[tuple[int, bytes], list] = {}
        self.packed_sources: dict[str, bytes] = {}
        self.started = time.monotonic()
        self._truth_thread: threading.Thread | None = None
        self.started_wall = time.time()
        self.cpu_started = time.process_time()
        self._stopped = False
        jitter = np.exp(np.random.default_rng(seed).normal(0.0, self.config.jitter_sigma, 4096))
        self._jitter = [float(x) for x in jitter]
        self._limit_threshold = self.config.per_ip_limit * self.config.per_ip_window

    # --- sockets ----------------------------------------------------------------------------

    def open(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.network.ports + 256
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))
        base = self.config.base_port
        for offset in range(self.network.ports):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            for option, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
                try:  # SO_RCVBUFFORCE / SO_SNDBUFFORCE: past rmem_max, where allowed
                    sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            try:
                sock.bind(("0.0.0.0", base + offset))
            except OSError as exc:
                self.close()
                raise OSError(f"cannot bind UDP port {base + offset}: {exc.strerror}") from None
            sock.setblocking(False)
            self.sockets[sock.fileno()] = sock
            self.port_of[sock.fileno()] = base + offset

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()

    def bootstrap_address(self) -> str:
        ip, port = self.network.address_of(self.network.bootstrap_rank)
        return f"{ip}:{port}"

    def stop(self) -> None:
        self._stopped = True

    # --- the loop -------------------------------------------------------------------------------

    def serve(self, duration: float) -> None:
        poller = select.epoll()
        for fd in self.sockets:
            poller.register(fd, select.EPOLLIN)
        network = self.network
        deadline = self.started + duration
        next_truth = self.started
        next_tick = self.started
        try:
            while not self._stopped:
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_tick:
                    network.set_time(now - self.started)
                    self._prune_limits(now)
                    next_tick = now + TICK
                if now >= next_truth and self.truth_path is not None:
                    self.write_truth_behind()
                    next_truth = time.monotonic() + self.truth_every
                wait = min(deadline, next_tick, next_truth if self.truth_path else deadline) - now
                if self.pending:
                    wait = min(wait, self.pending[0][0] - now)
                events = poller.poll(max(0.0, min(wait, 0.05)), 64)
                now = time.monotonic()
                for fd, _ in events:
                    self._receive(self.sockets[fd], self.port_of[fd], now)
                self._send_due(time.monotonic())
        finally:
            poller.close()
            if self._truth_thread is not None:
                self._truth_thread.join()
            if self.truth_path is not None:
                self.write_truth()

    def _receive(self, sock: socket.socket, port: int, now: float) -> None:
        network = self.network
        counts = self.counts
        rnd = self.random
        loss = self.config.loss
        elapsed = now - self.started
        for _ in range(RECEIVE_BATCH):
            try:
                data, ancillary, _flags, source = sock.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            source_ip, source_port = source
            counts["received"] += 1
            if not source_ip.startswith("127."):
                counts["foreign"] += 1  # never answered: nothing leaves this machine
                continue
            destination = None
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    destination = value[8:12]
            if destination is None:
                counts["no_node"] += 1
                continue
            rank = network.rank_at(int.from_bytes(destination, "big"), port)
            if rank is None:
                counts["no_node"] += 1
                continue
            zone = network.ids[rank * 20]
            self.zone_received[zone] += 1
            source_stats = self._source(source_ip)
            source_stats[0] += 1
            if loss and rnd() < loss:
                counts["lost_in"] += 1
                source_stats[3] += 1
                self.zone_dropped[zone] += 1
                continue
            packed = self.packed_sources.get(source_ip)
            if packed is None:
                packed = self.packed_sources[source_ip] = socket.inet_aton(source_ip)
                if len(self.packed_sources) > 65536:
                    self.packed_sources.clear()
            if self._limit_threshold and self._limited(network.host_of(rank), packed, now):
                counts["rate_limited"] += 1
                source_stats[2] += 1
                self.zone_dropped[zone] += 1
                continue
            reply, outcome, listed = network.answer(data, (packed, source_port), rank, elapsed)
            counts[outcome] += 1
            if reply is None:
                self.zone_dropped[zone] += 1
                continue
            self.answered[rank] = 1
            self.zone_answered[zone] += 1
            source_stats[1] += 1
            named = self.named
            for entry in listed:
                named[entry] = 1
            if loss and rnd() < loss:
                counts["lost_out"] += 1
                source_stats[3] += 1
                continue
            due = now + network.round_trip(rank) * self._jitter[int(rnd() * 4096)]
            if len(self.pending) >= MAX_PENDING:
                counts["overflow"] += 1
                continue
            self._sequence += 1
            heapq.heappush(self.pending, (due, self._sequence, sock, reply, destination,
                                          source))

    def _send_due(self, now: float) -> None:
        pending = self.pending
        counts = self.counts
        while pending and pending[0][0] <= now:
            _, _, sock, reply, source_ip, address = heapq.heappop(pending)
            try:
                sock.sendmsg([reply], _pktinfo(source_ip), 0, address)
                counts["sent"] += 1
            except OSError:
                counts["send_failed"] += 1

    def _source(self, ip: str) -> list[int]:
        stats = self.sources.get(ip)
        if stats is None:
            if len(self.sources) >= MAX_SOURCES:
                ip = "other"
                stats = self.sources.get(ip)
            if stats is None:
                stats = self.sources[ip] = [0, 0, 0, 0]
        return stats

    def _limited(self, host: int, source: bytes, now: float) -> bool:
        """libtorrent's dos_blocker (src/kademlia/dos_blocker.cpp): the first datagram
        from a source opens a window of `per_ip_window` seconds; the one that brings the
        count to `per_ip_limit` x `per_ip_window` inside it bans the source for
        `per_ip_ban` seconds, and everything it sends until then is dropped; a window that
        ran out before the count did starts again."""
        key = (host, source)
        entry = self.limits.get(key)
        if entry is None:
            self.limits[key] = [1, now + self.config.per_ip_window]
            return False
        entry[0] += 1
        if entry[0] >= self._limit_threshold:
            if now < entry[1]:
                if entry[0] == self._limit_threshold:
                    entry[1] = now + self.config.per_ip_ban
                return True
            entry[0] = 0
            entry[1] = now + self.config.per_ip_window
        return False

    def _prune_limits(self, now: float) -> None:
        """Windows and bans that ran out are as good as forgotten (the next datagram
        would start again)."""
        stale = [key for key, (_count, limit) in self.limits.items() if limit < now]
        for key in stale:
            del self.limits[key]

    # --- the truth ------------------------------------------------------------------------------

    def truth(self) -> dict:
        network = self.network
        now = time.monotonic()
        elapsed = now - self.started
        online = network.online_mask(elapsed)
        answering = ~network.silent
        reachable = online & answering
        reachable_ever = network.online_during_mask(0.0, elapsed) & answering
        listed = network.listed_mask(elapsed)
        answered = np.frombuffer(bytes(self.answered), dtype=np.uint8).astype(bool)
        named = np.frombuffer(bytes(self.named), dtype=np.uint8).astype(bool)
        zones = network.zone_of
        clients = network.client_names()
        client_counts = np.bincount(network.client[reachable], minlength=len(clients))
        named_total = int(named.sum())
        named_silent = int((named & ~answering).sum())
        cpu = time.process_time() - self.cpu_started
        packets = self.counts["received"] + self.counts["sent"]
        # Snapshots first: this runs in a thread of its own while the serving thread adds
        # and prunes entries, and list() of a dict's view copies it under the GIL.
        limits = list(self.limits.values())
        sources = list(self.sources.items())
        banned = sum(1 for count, limit in limits
                     if count >= self._limit_threshold and limit > now)
        return {
            "time": time.time(), "elapsed": round(elapsed, 3),
            "seed": network.config.seed,
            "population": network.population,
            "nodes": int(online.sum()),
            "reachable": int(reachable.sum()),
            "reachable_ever": int(reachable_ever.sum()),
            "listed": int(listed.sum()),
            "answered": int(answered.sum()),
            "named": named_total,
            "named_never_answer": round(named_silent / named_total, 4) if named_total else None,
            "bootstrap": self.bootstrap_address(),
            "ips": {"sybil": network.sybil_ips, "sybil_ids": network.sybil_ids,
                    "shared": network.nat_ips, "shared_nodes": network.nat_slots,
                    "ports": network.ports},
            "clients": {name: int(count) for name, count in zip(clients, client_counts)},
            "bep42_reachable": round(float(network.secure[reachable].mean()), 4)
            if reachable.any() else None,
            "counts": dict(self.counts),
            "banned_now": banned,
            "cpu_seconds": round(cpu, 3),
            "packets_per_cpu_second": round(packets / cpu) if cpu > 0 else None,
            "packets_per_second": round(packets / elapsed) if elapsed > 0 else None,
            "zones": {"bits": 8,
                      "nodes": np.bincount(zones[online], minlength=256).tolist(),
                      "reachable": np.bincount(zones[reachable], minlength=256).tolist(),
                      "received": list(self.zone_received),
                      "answered": list(self.zone_answered),
                      "dropped": list(self.zone_dropped)},
            "sources": {ip: {"received": s[0], "answered": s[1], "rate_limited": s[2],
                             "lost": s[3]} for ip, s in sources},
            "swarms": [info_hash.hex() for info_hash in list(network.swarms)[:1000]],
            "config": network.config.as_dict(),
        }

    def write_truth_behind(self) -> None:
        """The truth, written by a thread of its own: its whole-network counts take seconds
        at 20 million nodes (numpy, which lets the serving thread run meanwhile); the one
        before still being written, this one is skipped."""
        if self._truth_thread is not None and self._truth_thread.is_alive():
            return
        self._truth_thread = threading.Thread(target=self.write_truth, daemon=True)
        self._truth_thread.start()

    def write_truth(self) -> None:
        """Atomically (a reader never sees half a file)."""
        path = self.truth_path
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.truth()))
        os.replace(temporary, path)

