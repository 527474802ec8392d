"""Probe a reference node with every BEP 5 query (and the bad ones) from an mldht node.

Used by every interop scenario for scenario 5 ("mldht handles each implementation's replies
and errors as they really are") and to make captures cover errors as well as replies.
"""

from __future__ import annotations

import asyncio
import os
import socket

import bencodepy

from mldht import DHTNode, InfoHash, NodeId, QueryTimeout, RemoteError
from mldht.krpc import (
    AnnouncePeer, FindNode, GetPeers, Ping, Response, UnknownQuery, decode_message,
)
from mldht.replay import describe

_bencode = bencodepy.Bencode(encoding=None)


def outcome(reply: Response | RemoteError | QueryTimeout) -> dict:
    """A JSON-able summary of one typed reply."""
    if isinstance(reply, QueryTimeout):
        return {"shape": "timeout"}
    if isinstance(reply, RemoteError):
        return {"shape": f"e{reply.code}", "code": reply.code, "message": reply.message}
    result = {"shape": describe(reply), "version": (reply.version or b"").hex(),
              "id": reply.sender_id.hex()}
    if reply.token is not None:
        result["token_length"] = len(reply.token)
    if reply.values is not None:
        result["values"] = [f"{ip}:{port}" for ip, port in reply.values]
    if reply.nodes is not None:
        result["nodes"] = len(reply.nodes)
    if reply.requester is not None:
        result["ip"] = f"{reply.requester[0]}:{reply.requester[1]}"
    return result


async def _ask(node: DHTNode, address, query) -> dict:
    try:
        return outcome(await node.query(address, query, timeout=3.0))
    except (RemoteError, QueryTimeout) as exc:
        return outcome(exc)


async def raw_exchange(source_ip: str, address, payload: bytes, timeout: float = 3.0) -> dict:
    """Send one raw datagram from a fresh socket and summarise the first reply."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_ip, 0))
        sock.setblocking(False)
        await loop.sock_sendto(sock, payload, address)
        try:
            async with asyncio.timeout(timeout):
                data = await loop.sock_recv(sock, 65535)
        except TimeoutError:
            return {"shape": "timeout"}
    try:
        message = decode_message(data)
    except Exception as exc:  # report what came back, whatever it is
        return {"shape": "undecodable", "problem": str(exc)}
    if isinstance(message, Response):
        return outcome(message)
    code = getattr(message, "code", None)
    return {"shape": f"e{code}" if code is not None else type(message).__name__,
            "code": code, "message": getattr(message, "message", None)}


async def probe(node: DHTNode, address: tuple[str, int], stored: InfoHash | None = None,
                announce_port: int = 6999) -> dict:
    """Every query type against `address`; returns {query name: outcome}.

    `stored`: an info hash the target is known to hold peers for (get_peers should then give
    `values`). A successful announce of `announce_port` for a fresh info hash is included.
    """
    own = node.node_id
    fresh = InfoHash(os.urandom(20))
    results: dict[str, dict] = {}
    tid = lambda: os.urandom(2)  # noqa: E731 - transaction ids for hand-made queries
    results["ping"] = await _ask(node, address, Ping(transaction_id=tid(), sender_id=own))
    results["find_node"] = await _ask(node, address, FindNode(
        transaction_id=tid(), sender_id=own, target=NodeId(os.urandom(20))))
    results["get_peers_unknown_hash"] = await _ask(node, address, GetPeers(
        transaction_id=tid(), sender_id=own, info_hash=fresh))
    if stored is not None:
        results["get_peers_stored_hash"] = await _ask(node, address, GetPeers(
            transaction_id=tid(), sender_id=own, info_hash=stored))
    results["announce_bad_token"] = await _ask(node, address, AnnouncePeer(
        transaction_id=tid(), sender_id=own, info_hash=fresh, token=b"not-a-token",
        port=announce_port))
    token = None
    try:
        reply = await node.query(address, GetPeers(transaction_id=tid(), sender_id=own,
                                                   info_hash=fresh), timeout=3.0)
        token = reply.token
    except (RemoteError, QueryTimeout):
        pass
    if token is not None:
        results["announce_good_token"] = await _ask(node, address, AnnouncePeer(
            transaction_id=tid(), sender_id=own, info_hash=fresh, token=token,
            port=announce_port))
        check = await _ask(node, address, GetPeers(transaction_id=tid(), sender_id=own,
                                                   info_hash=fresh))
        results["get_peers_after_announce"] = check
    results["unknown_method"] = await _ask(node, address, UnknownQuery(
        transaction_id=tid(), sender_id=own, name=b"mldht_probe"))
    results["unknown_method_with_target"] = await _ask(node, address, UnknownQuery(
        transaction_id=tid(), sender_id=own, name=b"mldht_probe", target=NodeId(os.urandom(20))))
    source_ip = node.address[0]
    results["malformed_missing_info_hash"] = await raw_exchange(source_ip, address, _bencode.encode(
        {b"t": b"mx", b"y": b"q", b"q": b"get_peers", b"a": {b"id": bytes(own)}}))
    results["malformed_short_id"] = await raw_exchange(source_ip, address, _bencode.encode(
        {b"t": b"my", b"y": b"q", b"q": b"ping", b"a": {b"id": b"short"}}))
    results["not_bencode"] = await raw_exchange(source_ip, address, b"d1:t2:mz1:y1:q", 1.0)
    return results
