"""Blocking raw-KRPC exchanges for the benchmarks (no mldht code in the way)."""

from __future__ import annotations

import socket
import time

import bencodepy

CODEC = bencodepy.Bencode(encoding=None)


def exchange(sock: socket.socket, messages: list[dict], target, timeout: float = 2.0) -> dict:
    """Send every message, then collect replies by transaction id (bounded by `timeout`);
    each reply dictionary also carries its datagram size under `_size`."""
    for message in messages:
        sock.sendto(CODEC.encode(message), target)
    replies: dict[bytes, dict] = {}
    deadline = time.monotonic() + timeout
    while len(replies) < len(messages) and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except (TimeoutError, socket.timeout):
            break
        try:
            reply = CODEC.decode(data)
        except Exception:
            continue
        if isinstance(reply, dict) and reply.get(b"y") in (b"r", b"e"):
            replies[reply.get(b"t")] = reply | {b"_size": len(data)}
    return replies
