"""`mldht serve` as a child process, driven by a raw KRPC client over loopback."""

from __future__ import annotations

import json
import itertools
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dhtnet import RawKrpcClient, decode, encode, free_udp_port
from netguard import guarded_env

SERVER_IP = "127.0.0.50"
BOOTSTRAP_IP = "127.0.0.51"  # nothing listens there
CLIENT_IP = "127.0.0.60"
CLIENT_ID = bytes(range(100, 120))
INFO_HASH = bytes(range(20))


class Server:
    def __init__(self, process: subprocess.Popen, address: tuple[str, int], state: Path,
                 log: Path) -> None:
        self.process = process
        self.address = address
        self.state = state
        self.log = log

    def stop(self) -> None:
        """Kill it if it is still running (teardown only)."""
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its pid
            self.process.wait(timeout=10)


def start_server(folder: Path, ip: str, bootstrap_ip: str, env: dict[str, str]) -> Server:
    port = free_udp_port(ip)
    state = folder / "state.json"
    log = folder / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mldht.cli", "serve", "--bind", f"{ip}:{port}",
             "--bootstrap", f"{bootstrap_ip}:{free_udp_port(bootstrap_ip)}", "--state", str(state)],
            env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    server = Server(process, (ip, port), state, log)
    client = RawKrpcClient(CLIENT_IP)
    try:
        for _ in range(100):  # up to ~10 s
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()}")
            if client.request(server.address, b"ping", {b"id": CLIENT_ID}, timeout=0.1):
                return server
        raise AssertionError(f"serve never answered a ping: {log.read_text()}")
    except BaseException:
        server.stop()
        raise
    finally:
        client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    env = guarded_env()
    # This fixture outlives the per-test guard log: give the child a log of its own.
    guard_log = folder / "netguard.log"
    env["MLDHT_NETGUARD_LOG"] = str(guard_log)
    server = start_server(folder, SERVER_IP, BOOTSTRAP_IP, env)
    try:
        yield server
    finally:
        server.stop()
    assert not guard_log.exists() or not guard_log.read_text(), guard_log.read_text()


_client_hosts = itertools.count(1)


@pytest.fixture
def client():
    # Each test from its own address: the server limits one IP to a burst of 50 queries.
    krpc = RawKrpcClient(f"127.0.4.{next(_client_hosts)}")
    try:
        yield krpc
    finally:
        krpc.close()


def get_peers(client: RawKrpcClient, server: Server, info_hash: bytes = INFO_HASH) -> dict:
    reply = client.request(server.address, b"get_peers", {b"id": CLIENT_ID, b"info_hash": info_hash})
    assert reply is not None and reply[b"y"] == b"r", reply
    return reply


def compact(ip: str, port: int) -> bytes:
    return socket.inet_aton(ip) + port.to_bytes(2, "big")


def assert_error(reply: dict | None, code: int) -> None:
    assert reply is not None, "no reply"
    assert reply[b"y"] == b"e", reply
    assert isinstance(reply[b"e"], list) and len(reply[b"e"]) == 2, reply
    assert reply[b"e"][0] == code and isinstance(reply[b"e"][1], bytes), reply


def test_ping(server: Server, client: RawKrpcClient):
    tid = b"\x00\xffping-tid"
    client.send({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": CLIENT_ID}}, server.address)
    replies = [r for r in client.receive(1.0) if isinstance(r, dict) and r.get(b"t") == tid]
    assert len(replies) == 1
    reply = replies[0]
    assert reply[b"y"] == b"r"
    assert isinstance(reply[b"r"][b"id"], bytes) and len(reply[b"r"][b"id"]) == 20
    # BEP 42: the address the query came from.
    assert reply.get(b"ip") == compact(*client.address)


def test_find_node(server: Server, client: RawKrpcClient):
    reply = client.request(server.address, b"find_node", {b"id": CLIENT_ID, b"target": bytes(20)})
    assert reply is not None and reply[b"y"] == b"r", reply
    nodes = reply[b"r"][b"nodes"]
    assert isinstance(nodes, bytes) and len(nodes) % 26 == 0
    assert len(reply[b"r"][b"id"]) == 20


def test_get_peers_then_announce(server: Server, client: RawKrpcClient):
    first = get_peers(client, server)
    token = first[b"r"][b"token"]
    assert isinstance(token, bytes) and token
    assert b"values" not in first[b"r"]
    assert isinstance(first[b"r"][b"nodes"], bytes) and len(first[b"r"][b"nodes"]) % 26 == 0

    reply = client.request(server.address, b"announce_peer",
                           {b"id": CLIENT_ID, b"info_hash": INFO_HASH, b"token": token, b"port": 6000})
    assert reply is not None and reply[b"y"] == b"r", reply
    reply = client.request(server.address, b"announce_peer",
                           {b"id": CLIENT_ID, b"info_hash": INFO_HASH, b"token": token,
                            b"port": 6001, b"implied_port": 1})
    assert reply is not None and reply[b"y"] == b"r", reply

    values = get_peers(client, server)[b"r"][b"values"]
    assert isinstance(values, list) and all(len(value) == 6 for value in values)
    assert sorted(values) == sorted([compact(client.address[0], 6000), compact(*client.address)])


def test_get_peers_reply_stays_small_with_many_peers(server: Server, client: RawKrpcClient):
    info_hash = bytes(range(60, 80))
    token = get_peers(client, server, info_hash)[b"r"][b"token"]
    for port in range(10000, 10300):
        client.send({b"t": b"a%d" % port, b"y": b"q", b"q": b"announce_peer",
                     b"a": {b"id": CLIENT_ID, b"info_hash": info_hash, b"token": token, b"port": port}},
                    server.address)
        if port % 50 == 49:
            client.receive(0.05)  # keep the socket buffers from overflowing
    client.receive(0.3)
    tid = b"big"
    client.send({b"t": tid, b"y": b"q", b"q": b"get_peers", b"a": {b"id": CLIENT_ID, b"info_hash": info_hash}},
                server.address)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        client.sock.settimeout(deadline - time.monotonic())
        data, _ = client.sock.recvfrom(65535)
        reply = decode(data)
        if reply.get(b"t") == tid:
            break
    else:
        raise AssertionError("no reply")
    values = reply[b"r"][b"values"]
    assert 20 <= len(values) <= 100
    assert len(set(values)) == len(values)
    assert len(data) <= 1400, len(data)


def test_announce_with_a_bad_token(server: Server, client: RawKrpcClient):
    info_hash = bytes(range(40, 60))
    token = get_peers(client, server, info_hash)[b"r"][b"token"]
    for bad in (b"x" + token, token[:-1], bytes(len(token))):
        reply = client.request(server.address, b"announce_peer",
                               {b"id": CLIENT_ID, b"info_hash": info_hash, b"token": bad, b"port": 6000})
        assert_error(reply, 203)
    # A token is for one infohash only.
    reply = client.request(server.address, b"announce_peer",
                           {b"id": CLIENT_ID, b"info_hash": INFO_HASH[::-1], b"token": token,
                            b"port": 6000})
    assert_error(reply, 203)
    assert b"values" not in get_peers(client, server, info_hash)[b"r"]


def test_token_is_bound_to_the_ip(server: Server, client: RawKrpcClient):
    token = get_peers(client, server)[b"r"][b"token"]
    other = RawKrpcClient("127.0.0.61")
    try:
        reply = other.request(server.address, b"announce_peer",
                              {b"id": bytes(range(1, 21)), b"info_hash": INFO_HASH, b"token": token,
                               b"port": 6002})
        assert_error(reply, 203)
    finally:
        other.close()


def test_unknown_method(server: Server, client: RawKrpcClient):
    reply = client.request(server.address, b"frobnicate", {b"id": CLIENT_ID})
    assert_error(reply, 204)


def test_unknown_method_with_target_is_answered_like_find_node(server: Server, client: RawKrpcClient):
    reply = client.request(server.address, b"frobnicate", {b"id": CLIENT_ID, b"target": bytes(20)})
    assert reply is not None and reply[b"y"] == b"r", reply
    assert isinstance(reply[b"r"][b"nodes"], bytes) and len(reply[b"r"][b"nodes"]) % 26 == 0


def test_unknown_method_with_info_hash_is_answered_like_get_peers(server: Server,
                                                                   client: RawKrpcClient):
    reply = client.request(server.address, b"frobnicate", {b"id": CLIENT_ID, b"info_hash": INFO_HASH})
    assert reply is not None and reply[b"y"] == b"r", reply
    assert reply[b"r"][b"token"]


def test_missing_info_hash(server: Server, client: RawKrpcClient):
    assert_error(client.request(server.address, b"get_peers", {b"id": CLIENT_ID}), 203)
    assert_error(client.request(server.address, b"announce_peer",
                                {b"id": CLIENT_ID, b"token": b"abc", b"port": 1}), 203)


def test_missing_id(server: Server, client: RawKrpcClient):
    assert_error(client.request(server.address, b"ping", {}), 203)


def test_non_dictionary_datagrams_get_no_reply(server: Server, client: RawKrpcClient):
    for datagram in (encode([b"t", b"aa", b"y", b"q", b"q", b"ping"]), encode(b"ping"), encode(3),
                     b"", b"\xff" * 40, b"d1:t2:aa", b"l1:t2:aae"):
        client.send(datagram, server.address)
    assert client.receive(0.5) == []
    # Still alive.
    assert client.request(server.address, b"ping", {b"id": CLIENT_ID}) is not None


def test_sigterm_exits_0_and_saves_state(tmp_path):
    server = start_server(tmp_path, "127.0.0.52", "127.0.0.53", guarded_env())
    client = RawKrpcClient(CLIENT_IP)
    try:
        node_id = client.request(server.address, b"ping", {b"id": CLIENT_ID})[b"r"][b"id"]
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running 5 s after SIGTERM: {server.log.read_text()}")
        print(f"\nserve exited {time.monotonic() - started:.2f} s after SIGTERM")
    finally:
        client.close()
        server.stop()
    assert code == 0, server.log.read_text()
    document = json.loads(server.state.read_text())
    assert document["node_id"] == node_id.hex()
    assert isinstance(document["nodes"], list)
    assert not list(tmp_path.glob(".state.json.*")), "temporary state file left behind"


def test_serve_on_uvloop(tmp_path):
    # With the `fast` extra the command line runs on uvloop. uvloop sends from C, out of the
    # network guard's sight, so this child gets only loopback addresses by construction.
    env = guarded_env()
    env["MLDHT_EVENT_LOOP"] = "uvloop"
    server = start_server(tmp_path, "127.0.0.54", "127.0.0.55", env)
    client = RawKrpcClient(CLIENT_IP)
    try:
        reply = client.request(server.address, b"get_peers", {b"id": CLIENT_ID, b"info_hash": INFO_HASH})
        assert reply is not None and reply[b"r"][b"token"], reply
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=5)
    finally:
        client.close()
        server.stop()
    assert code == 0, server.log.read_text()
    assert "event loop: uvloop.Loop" in server.log.read_text()
