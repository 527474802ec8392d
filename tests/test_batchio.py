"""The transport's two batch paths (mldht.batchio): the native one (recvmmsg/sendmmsg) and
Python's socket calls give the same datagrams, from the same addresses, in the same order,
and handle the same failures."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

import netguard
from mldht import batchio
from mldht.udp import SocketDatagramTransport

PATHS = ["native", "python"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch) -> str:
    monkeypatch.setenv(batchio.ENVIRONMENT_VARIABLE, "1" if request.param == "native" else "0")
    return request.param


def _socket(family: int, ip: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((ip, 0))
    sock.setblocking(False)
    return sock


def test_the_native_module_is_built_here(monkeypatch):
    """This suite runs on Linux with a C compiler: `pip install` built the native path, and
    the transport takes it unless told otherwise."""
    monkeypatch.setenv(batchio.ENVIRONMENT_VARIABLE, "1")
    assert batchio.native_module() is not None
    assert batchio.describe().startswith("native")
    monkeypatch.setenv(batchio.ENVIRONMENT_VARIABLE, "0")
    assert batchio.native_module() is None and batchio.describe() == "pure Python"


async def _receive_through_transport(family: int, ip: str, sends: list[tuple[int, bytes]]):
    """Send `sends` ((sender number, data)) to a transport; what it handed its owner, and
    the senders' addresses."""
    loop = asyncio.get_running_loop()
    received: list[tuple[bytes, tuple]] = []
    batches: list[int] = []

    def on_datagrams(batch) -> None:
        batches.append(len(batch))
        received.extend(batch)

    receiving = _socket(family, ip)
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    transport = SocketDatagramTransport(loop, receiving, on_datagrams)
    senders = [_socket(family, ip) for _ in range(3)]
    try:
        for sender, data in sends:
            senders[sender].sendto(data, transport.get_extra_info("sockname"))
        async with asyncio.timeout(5):
            while len(received) < len(sends):
                await asyncio.sleep(0.01)
        return received, [sender.getsockname() for sender in senders], batches
    finally:
        transport.close()
        for sender in senders:
            sender.close()


@pytest.mark.parametrize("family,ip", [(socket.AF_INET, "127.0.0.1"),
                                       (socket.AF_INET6, "::1")])
async def test_both_paths_hand_over_the_same_datagrams_and_addresses(path, family, ip):
    sizes = [0, 1, 20, 1400, 1500, 9000, 65507 if family == socket.AF_INET else 65487]
    sends = [(n % 3, bytes([n % 251]) * size) for n, size in
             enumerate(sizes * 3 + [30] * 300)]  # more than one wake-up's reads
    received, senders, batches = await _receive_through_transport(family, ip, sends)
    assert [data for data, _ in received] == [data for _, data in sends]
    # The addresses as socket.recvfrom gives them: (ip, port), or a 4-tuple for IPv6.
    assert [address for _, address in received] == [senders[sender] for sender, _ in sends]
    assert len(batches) < len(sends)


async def _send_through_transport(datagrams_for) -> tuple[int, list[tuple[bytes, tuple]]]:
    loop = asyncio.get_running_loop()
    receiving = _socket(socket.AF_INET, "127.0.0.1")
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sending = _socket(socket.AF_INET, "127.0.0.5")
    transport = SocketDatagramTransport(loop, sending, lambda batch: None)
    try:
        datagrams = datagrams_for(receiving.getsockname())
        failed = transport.send_batch(datagrams)
        got = []
        async with asyncio.timeout(5):
            while len(got) < len(datagrams) - failed:
                try:
                    got.append(receiving.recvfrom(65535))
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        return failed, got
    finally:
        transport.close()
        receiving.close()


async def test_both_paths_send_the_same_batch_and_refuse_the_same_address(path):
    """200 datagrams in one batch, among them one to an address Python's sendto must
    resolve ("localhost") and one the socket cannot send to (IPv6 on an IPv4 socket): the first
    goes, the second is counted as refused, and the rest still go, in order."""
    def datagrams_for(address):
        ip, port = address
        batch = [(b"%d" % n, (ip, port)) for n in range(200)]
        batch[70] = (b"70", ("localhost", port))
        batch[130] = (b"130", ("::1", port))
        return batch

    failed, got = await _send_through_transport(datagrams_for)
    assert failed == 1
    assert [data for data, _ in got] == [b"%d" % n for n in range(200) if n != 130]
    assert {address for _, address in got} == {("127.0.0.5", got[0][1][1])}


class _FakeNative:
    """The native module's send, with a full send buffer from datagram `full_at` on (what
    sendmmsg reports with EAGAIN), or one destination refused (`refused_at`)."""

    BATCH = 64

    def __init__(self, real, full_at: int | None = None, refused_at: int | None = None):
        self.real, self.full_at, self.refused_at = real, full_at, refused_at

    def recv_batch(self, fd, count):
        return self.real.recv_batch(fd, count)

    def send_batch(self, fd, family, datagrams, start):
        stop = min(x for x in (self.full_at, self.refused_at, len(datagrams))
                   if x is not None and x >= start)
        sent, _ = self.real.send_batch(fd, family, datagrams[:stop], start)
        if sent < stop:
            return sent, errno.EAGAIN
        if stop == self.refused_at:
            return stop, errno.EPERM
        if stop == self.full_at:
            self.full_at = None  # writable again
            return stop, errno.EAGAIN
        return stop, 0


async def test_a_full_send_buffer_in_the_native_path_queues_the_rest_in_order(monkeypatch):
    monkeypatch.setenv(batchio.ENVIRONMENT_VARIABLE, "1")
    real = batchio.native_module()

    def datagrams_for(address):
        return [(b"%d" % n, address) for n in range(100)]

    original = SocketDatagramTransport.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._native = _FakeNative(real, full_at=40, refused_at=90)

    monkeypatch.setattr(SocketDatagramTransport, "__init__", patched)
    failed, got = await _send_through_transport(datagrams_for)
    # 0-39 went at once, 40-99 waited in the queue for the socket to be writable, and
    # went then (through Python's sendto: 90 too, since the fake refuses only in a batch).
    assert failed == 0
    assert [data for data, _ in got] == [b"%d" % n for n in range(100)]


async def test_a_refused_destination_in_the_native_path_does_not_stop_the_batch(monkeypatch):
    monkeypatch.setenv(batchio.ENVIRONMENT_VARIABLE, "1")
    real = batchio.native_module()
    original = SocketDatagramTransport.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._native = _FakeNative(real, refused_at=10)

    monkeypatch.setattr(SocketDatagramTransport, "__init__", patched)
    failed, got = await _send_through_transport(
        lambda address: [(b"%d" % n, address) for n in range(30)])
    assert failed == 1
    assert [data for data, _ in got] == [b"%d" % n for n in range(30) if n != 10]


def test_the_guard_sees_native_sends_to_other_hosts(monkeypatch):
    """The test suite's guard checks the native path too: it sends past socket.sendto."""
    monkeypatch.setenv(batchio.ENVIRONMENT_VARIABLE, "1")
    native = batchio.native_module()
    sock = _socket(socket.AF_INET, "127.0.0.1")
    try:
        with pytest.raises(PermissionError):
            native.send_batch(sock.fileno(), socket.AF_INET,
                              [(b"x", ("127.0.0.1", 9)), (b"x", ("192.0.2.1", 6881))], 0)
    finally:
        sock.close()
    assert netguard.violations and "192.0.2.1" in netguard.violations[-1]
    netguard.violations.clear()  # recorded on purpose: not this test's failure
