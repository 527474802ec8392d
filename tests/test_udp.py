"""The node's UDP transport (mldht.udp) and the second send of a silent lookup query."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mldht import DHTNode, NodeConfig, NodeId
from mldht.errors import QueryTimeout
from mldht.krpc import Ping, decode_bencode, encode_bencode
from mldht.udp import SocketDatagramTransport


def _udp_socket(ip: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, 0))
    sock.setblocking(False)
    return sock


async def test_every_datagram_of_a_burst_is_delivered_in_order():
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    done = asyncio.Event()

    def on_datagram(data: bytes, addr) -> None:
        received.append(data)
        if len(received) == 300:
            done.set()

    receiving = _udp_socket()
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # room for the burst
    transport = SocketDatagramTransport(loop, receiving, on_datagram)
    sender = _udp_socket("127.0.0.2")
    try:
        for n in range(300):  # more than one wake-up reads (READS_PER_WAKEUP)
            sender.sendto(b"%d" % n, transport.get_extra_info("sockname"))
        async with asyncio.timeout(5):
            await done.wait()
        assert received == [b"%d" % n for n in range(300)]
    finally:
        transport.close()
        sender.close()
    assert transport.is_closing()


class _FullOnce:
    """A socket whose send buffer is full for the first `full` sends."""

    def __init__(self, sock: socket.socket, full: int) -> None:
        self.sock, self.full, self.sent = sock, full, []

    def fileno(self) -> int:
        return self.sock.fileno()

    def getsockname(self):
        return self.sock.getsockname()

    def recvfrom(self, size: int):
        return self.sock.recvfrom(size)

    def sendto(self, data, addr):
        if self.full:
            self.full -= 1
            raise BlockingIOError
        self.sent.append(bytes(data))
        return len(data)

    def close(self) -> None:
        self.sock.close()


async def test_a_full_send_buffer_queues_and_keeps_the_order():
    loop = asyncio.get_running_loop()
    fake = _FullOnce(_udp_socket(), full=1)
    transport = SocketDatagramTransport(loop, fake, lambda data, addr: None)  # type: ignore[arg-type]
    try:
        for n in range(5):
            transport.sendto(b"%d" % n, ("127.0.0.1", 9))
        assert fake.sent == [] and transport.get_write_buffer_size() == 5
        async with asyncio.timeout(5):
            while transport.get_write_buffer_size():
                await asyncio.sleep(0.01)
        assert fake.sent == [b"%d" % n for n in range(5)]
    finally:
        transport.close()


async def test_a_query_unanswered_at_resend_after_is_sent_again_and_its_answer_taken():
    remote = _udp_socket("127.0.0.3")
    loop = asyncio.get_running_loop()
    async with DHTNode(("127.0.0.1", 0), bootstrap=[], config=NodeConfig()) as node:

        async def silent_once() -> int:
            seen = []
            while len(seen) < 2:  # drop the first query, answer the second
                data, source = await loop.sock_recvfrom(remote, 2048)
                seen.append(decode_bencode(data))
            reply = {b"t": seen[1][b"t"], b"y": b"r", b"r": {b"id": b"\x07" * 20}}
            await loop.sock_sendto(remote, encode_bencode(reply), source)
            assert seen[0][b"t"] == seen[1][b"t"]  # the same transaction
            return len(seen)

        answering = asyncio.create_task(silent_once())
        query = Ping(transaction_id=b"", sender_id=node.node_id)
        async with asyncio.timeout(5):
            response = await node.query(remote.getsockname(), query, timeout=3.0,
                                        resend_after=0.2)
            assert await answering == 2
        assert response.sender_id == NodeId(b"\x07" * 20)
        assert node.stats.queries_resent == 1 and node.stats.timeouts == 0

        # With resend_if saying no, a silent node is not asked twice.
        asked = []
        with_no = asyncio.create_task(node.query(remote.getsockname(), query, timeout=0.5,
                                                 resend_after=0.1,
                                                 resend_if=lambda: asked.append(1) or False))
        async with asyncio.timeout(5):
            with pytest.raises(QueryTimeout):
                await with_no
        assert asked == [1] and node.stats.queries_resent == 1
    remote.close()


async def test_query_observers_see_plain_queries_and_can_be_removed():
    client = _udp_socket("127.0.0.4")
    loop = asyncio.get_running_loop()
    async with DHTNode(("127.0.0.1", 0), bootstrap=[]) as node:
        seen = []
        remove = node.observe_queries(lambda query, source: seen.append((query, source)))

        async def ping(tid: bytes) -> dict:
            query = {b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x05" * 20}}
            await loop.sock_sendto(client, encode_bencode(query), node.address)
            async with asyncio.timeout(5):
                while True:  # the node may ping us first, to verify a new querier
                    message = decode_bencode((await loop.sock_recvfrom(client, 2048))[0])
                    if message[b"y"] != b"q" and message[b"t"] == tid:
                        return message

        first = await ping(b"p1")
        assert len(seen) == 1 and isinstance(seen[0][0], Ping)
        assert seen[0][0].sender_id == b"\x05" * 20 and seen[0][1] == client.getsockname()
        remove()
        second = await ping(b"p2")  # answered by the quick path, unobserved
        assert len(seen) == 1
        assert first[b"r"] == second[b"r"] and second[b"t"] == b"p2"
        assert node.stats.queries_received["ping"] == 2
    client.close()
