"""A UDP transport that drains its socket on each wake-up and sends straight from it.

asyncio's own datagram transport reads one datagram per event-loop iteration, so a loaded
node pays a poll and a callback dispatch for every query. This one is woken by `add_reader`
and reads until the socket is empty (bounded, so timers and other sockets still get their
turn), hands the whole batch to its owner at once, and sends the owner's batch of replies
with direct `sendto` calls; only when the kernel's send buffer is full are datagrams
queued (bounded) until the socket is writable again. It measured 2-3 times the datagrams
per CPU-second of the stock transport (tools/bench/throughput.py). Where the native module
is built (`mldht.batchio`), each wake-up reads up to 64 datagrams per recvmmsg and a batch
of replies goes out with one sendmmsg per 64; otherwise one recvfrom / sendto each.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import errno
import os
import socket
from typing import Callable

from . import batchio

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 65535
READS_PER_WAKEUP = 256
"""Datagrams read per readiness event at most, so one busy socket cannot starve the loop."""
MAX_QUEUED_DATAGRAMS = 4096
"""Datagrams waiting for a full send buffer to drain; beyond this they are dropped (UDP)."""


class SocketDatagramTransport(asyncio.DatagramTransport):
    """Hands the datagrams read from `sock` at each wake-up to `on_datagrams(batch)`, a list
    of `(data, addr)`.

    Raises NotImplementedError for a loop that cannot watch sockets (Windows' proactor).
    `on_datagrams` must not raise. `sendto` raises OSError for an address the socket cannot
    send to, as a socket does; a datagram the send buffer cannot take now is queued.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 on_datagrams: Callable[[list[tuple[bytes, tuple]]], None]) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fileno = sock.fileno()
        self._on_datagrams = on_datagrams
        self._queue: collections.deque[tuple[bytes, tuple]] = collections.deque()
        self._closed = False
        self.dropped = 0
        """Datagrams dropped because the send queue was full."""
        self._extra = {"socket": sock, "sockname": sock.getsockname(), "peername": None}
        self._native = batchio.native_module()
        """The native batch calls (recvmmsg/sendmmsg), or None: Python's, one by one."""
        self._family = int(sock.family)
        loop.add_reader(self._fileno, self._native_read_ready if self._native is not None
                        else self._read_ready)

    def _native_read_ready(self) -> None:
        receive, fileno, size = self._native.recv_batch, self._fileno, self._native.BATCH
        batch: list[tuple[bytes, tuple]] = []
        for _ in range(READS_PER_WAKEUP // size):
            try:
                got = receive(fileno, size)
            except OSError as exc:  # an ICMP error queued on the socket: nothing to read
                log.debug("socket error: %s", exc)
                continue
            batch += got
            if len(got) < size:
                break
        if batch:
            self._on_datagrams(batch)

    def _read_ready(self) -> None:
        receive = self._sock.recvfrom
        batch = []
        append = batch.append
        for _ in range(READS_PER_WAKEUP):
            try:
                append(receive(MAX_DATAGRAM_BYTES))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued on the socket: nothing to read
                log.debug("socket error: %s", exc)
                continue
        if batch:
            self._on_datagrams(batch)

    def send_batch(self, datagrams: list[tuple[bytes, tuple]]) -> int:
        """Send `(data, addr)` datagrams in order; returns how many were refused (an
        address this socket cannot send to). What the send buffer cannot take is queued."""
        if self._closed:
            return len(datagrams)
        if self._queue:
            for data, addr in datagrams:
                self._enqueue(data, addr)
            return 0
        if self._native is not None:
            return self._native_send_batch(datagrams)
        send = self._send_one
        failed = 0
        for position, (data, addr) in enumerate(datagrams):
            outcome = send(data, addr)
            if outcome < 0:
                self._queue_from(datagrams, position)
                break
            failed += outcome
        return failed

    def _send_one(self, data: bytes, addr) -> int:
        """Send one datagram with Python's sendto: 0 when it went, 1 when its address was
        refused, -1 when the send buffer is full."""
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return -1
        except (OSError, ValueError, TypeError) as exc:
            log.debug("send to %s failed: %s", addr, exc)
            return 1
        return 0

    def _native_send_batch(self, datagrams: list[tuple[bytes, tuple]]) -> int:
        if not isinstance(datagrams, list):
            datagrams = list(datagrams)
        send, fileno, family = self._native.send_batch, self._fileno, self._family
        failed = position = 0
        while position < len(datagrams):
            position, reason = send(fileno, family, datagrams, position)
            if reason == 0:
                break
            if reason == errno.EINTR:
                continue
            if reason == errno.EAGAIN:
                self._queue_from(datagrams, position)
                break
            data, addr = datagrams[position]
            if reason == -1:  # not a numeric address of our family: Python's sendto decides
                outcome = self._send_one(data, addr)
                if outcome < 0:
                    self._queue_from(datagrams, position)
                    break
                failed += outcome
            else:
                failed += 1
                log.debug("send to %s failed: %s", addr, os.strerror(reason))
            position += 1
        return failed

    def _queue_from(self, datagrams: list[tuple[bytes, tuple]], position: int) -> None:
        """The send buffer is full: datagrams[position:] wait until the socket is writable."""
        for data, addr in datagrams[position:]:
            self._enqueue(data, addr)
        self._loop.add_writer(self._fileno, self._write_ready)

    def sendto(self, data, addr=None) -> None:
        if self._closed:
            raise OSError("transport closed")
        if self._queue:  # keep the order: the queue goes first
            self._enqueue(data, addr)
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, addr)
            self._loop.add_writer(self._fileno, self._write_ready)

    def _enqueue(self, data: bytes, addr) -> None:
        if len(self._queue) >= MAX_QUEUED_DATAGRAMS:
            self.dropped += 1
            return
        self._queue.append((bytes(data), addr))

    def _write_ready(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # that destination only: the others may still go
                log.debug("queued send to %s failed: %s", addr, exc)
            self._queue.popleft()
        self._loop.remove_writer(self._fileno)

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fileno)
        if self._queue:
            self._loop.remove_writer(self._fileno)
            self._queue.clear()
        self._sock.close()

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return len(self._queue)
