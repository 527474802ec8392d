"""The node's UDP transport (mldht.udp), the second send of a silent lookup query, and
observers of what the node receives."""

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

    batches = []

    def on_datagrams(batch) -> None:
        batches.append(len(batch))
        received.extend(data for data, _ in batch)
        if len(received) == 300:
            done.set()

    receiving = _udp_socket()
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # room for the burst
    transport = SocketDatagramTransport(loop, receiving, on_datagrams)
    sender = _udp_socket("127.0.0.2")
    try:
        for n in range(300):  # more than one wake-up reads (READS_PER_WAKEUP)
            sender.sendto(b"%d" % n, transport.get_extra_info("sockname"))
        async with asyncio.timeout(5):
            await done.wait()
        assert received == [b"%d" % n for n in range(300)]
        assert len(batches) < 300  # several datagrams per wake-up
    finally:
        transport.close()
        sender.close()
    assert transport.is_closing()


class _FullOnce:
    """A socket whose send buffer is full for the first `full` sends."""

    def __init__(self, sock: socket.socket, full: int) -> None:
        self.sock, self.full, self.sent = sock, full, []

    family = socket.AF_INET

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


async def test_a_full_send_buffer_queues_and_keeps_the_order(monkeypatch):
    monkeypatch.setenv("MLDHT_NATIVE", "0")  # Python's sendto, which the fake socket fills
    loop = asyncio.get_running_loop()
    fake = _FullOnce(_udp_socket(), full=1)
    transport = SocketDatagramTransport(loop, fake, lambda batch: None)  # type: ignore[arg-type]
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


def test_a_query_unanswered_at_resend_after_is_sent_again_and_its_answer_taken():
    """The transaction layer (sans-I/O): a query past `resend_after` goes once more with the
    same transaction id when its owner claims it, and the answer to either copy is taken."""
    from mldht.engine import Engine
    from mldht.engine.transactions import Transaction, TransactionOwner
    from mldht.krpc import Response, decode_message, encode_message

    class Owner(TransactionOwner):
        def __init__(self, claim: bool) -> None:
            self.claim, self.asked, self.responses, self.failures = claim, 0, [], []

        def claim_resend(self, tx) -> bool:
            self.asked += 1
            return self.claim

        def on_response(self, tx, response, now) -> None:
            self.responses.append(response)

        def on_failure(self, tx, error, now) -> None:
            self.failures.append(error)

    engine = Engine(0.0)
    engine.set_address(("127.0.0.1", 6881))
    remote = ("127.0.0.3", 7000)
    owner = Owner(claim=True)
    engine.submit(Transaction(remote, Ping(transaction_id=b"", sender_id=engine.node_id), owner,
                              timeout=3.0, resend_after=0.2), 0.0)
    first = engine.datagrams_to_send(0.0)
    engine.handle_timer(0.1)
    assert engine.datagrams_to_send(0.1) == []
    engine.handle_timer(0.2)
    second = engine.datagrams_to_send(0.2)
    assert first == second and len(first) == 1  # the same datagram, same transaction id
    tid = decode_message(first[0][0]).transaction_id
    engine.receive_datagram(encode_message(Response(transaction_id=tid,
                                                    sender_id=NodeId(b"\x07" * 20))), remote, 0.3)
    assert [r.sender_id for r in owner.responses] == [NodeId(b"\x07" * 20)]
    assert engine.stats.queries_resent == 1 and engine.stats.timeouts == 0

    # When the owner says no, a silent node is not asked twice, and it times out.
    refusing = Owner(claim=False)
    engine.submit(Transaction(remote, Ping(transaction_id=b"", sender_id=engine.node_id),
                              refusing, timeout=0.5, resend_after=0.1), 1.0)
    assert len(engine.datagrams_to_send(1.0)) == 1
    engine.handle_timer(1.1)
    assert engine.datagrams_to_send(1.1) == []
    engine.handle_timer(1.5)
    assert refusing.asked == 1 and engine.stats.queries_resent == 1
    assert [type(e) for e in refusing.failures] == [QueryTimeout]


async def test_observers_see_plain_queries_answered_by_the_quick_path_and_can_be_removed():
    from mldht.engine import QueryReceived

    client = _udp_socket("127.0.0.4")
    loop = asyncio.get_running_loop()
    async with DHTNode(("127.0.0.1", 0), bootstrap=[]) as node:
        def full_path(*args):
            raise AssertionError("an observed plain ping must not leave the quick path")
        node.engine.families[0].handler.handle = full_path
        seen = []
        remove = node.add_observer(lambda event: isinstance(event, QueryReceived) and seen.append(event))

        async def ping(tid: bytes) -> dict:
            query = {b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x05" * 20}}
            await loop.sock_sendto(client, encode_bencode(query), node.address)
            async with asyncio.timeout(5):
                while True:  # the node may ping us first, to verify a new querier
                    message = decode_bencode((await loop.sock_recvfrom(client, 2048))[0])
                    if message[b"y"] != b"q" and message[b"t"] == tid:
                        return message

        first = await ping(b"p1")
        assert [(e.method, e.sender_id, e.source) for e in seen] == [
            ("ping", b"\x05" * 20, client.getsockname())]
        remove()
        second = await ping(b"p2")
        assert len(seen) == 1
        assert first[b"r"] == second[b"r"] and second[b"t"] == b"p2"
        assert node.stats.queries_received["ping"] == 2
    client.close()
