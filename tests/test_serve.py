"""`mldht serve` as a child process, driven by a raw KRPC client over loopback."""

from __future__ import annotations

import json
import itertools
import os
import re
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


def start_server(folder: Path, ip: str, bootstrap_ip: str, env: dict[str, str],
                 extra: tuple[str, ...] = ()) -> Server:
    port = free_udp_port(ip)
    state = folder / "state.json"
    log = folder / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mldht.cli", "serve", "--bind", f"{ip}:{port}",
             "--bootstrap", f"{bootstrap_ip}:{free_udp_port(bootstrap_ip)}", "--state", str(state),
             *extra],
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


def stop_server(server: Server) -> int:
    """SIGTERM, then the exit status (within 10 s)."""
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve still running 10 s after SIGTERM: {server.log.read_text()}")


def run_serve(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """`mldht serve ARGS` expected to exit by itself (bad input): its status and output."""
    try:
        return subprocess.run([sys.executable, "-m", "mldht.cli", "serve", *args],
                              env=guarded_env(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise AssertionError(f"serve {args} did not exit: {exc.stderr}") from None


# --- bad input at start: one line, exit 2 ----------------------------------------------------


def test_serve_on_a_port_in_use_exits_2_with_one_line():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.56", 0))
        port = holder.getsockname()[1]
        result = run_serve("--bind", f"127.0.0.56:{port}", "--bootstrap", "127.0.0.1:9")
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mldht: error: cannot bind 127.0.0.56:{port}: address already "
                               "in use"), lines


@pytest.mark.parametrize("problem", ["directory", "missing folder"])
def test_serve_with_an_unusable_state_path_exits_2_naming_it(tmp_path, problem):
    path = tmp_path if problem == "directory" else tmp_path / "nowhere" / "state.json"
    result = run_serve("--bind", "127.0.0.57:0", "--bootstrap", "127.0.0.1:9",
                       "--state", str(path))
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mldht: error: state file "), result.stderr
    assert repr(str(path)) in lines[0]
    assert ("is a directory" if problem == "directory" else "does not exist") in lines[0]


def test_serve_with_state_in_a_read_only_folder_exits_2(tmp_path):
    """A folder nobody may write in: mode 0500 for an ordinary user; root bypasses
    permissions, so as root the folder is made immutable (chattr +i), which stops root
    too (ext4, as on the CI machines)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
    try:
        result = run_serve("--bind", "127.0.0.57:0", "--bootstrap", "127.0.0.1:9",
                           "--state", str(folder / "state.json"))
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o700)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"mldht: error: state file {str(folder / 'state.json')!r}: cannot write in "
        f"{str(folder)!r}"], result.stderr


async def test_serve_state_check_refuses_an_unwritable_folder(tmp_path, monkeypatch, capsys):
    """In process, with os.access reporting the folder unwritable (as it does for a user
    without write permission; root bypasses permissions, so this runs as anyone)."""
    from mldht.cli import build_parser, run_command

    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    args = build_parser().parse_args(["serve", "--bind", "127.0.0.57:0", "--bootstrap",
                                      "127.0.0.1:9", "--state", str(folder / "state.json")])
    assert await run_command(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mldht: error: state file {str(folder / 'state.json')!r}: cannot write in "
        f"{str(folder)!r}"]


def test_serve_keeps_a_damaged_state_file_aside_and_starts(tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    server = start_server(tmp_path, "127.0.0.58", "127.0.0.59", guarded_env())
    client = RawKrpcClient(CLIENT_IP)
    try:
        node_id = client.request(server.address, b"ping", {b"id": CLIENT_ID})[b"r"][b"id"]
        code = stop_server(server)
    finally:
        client.close()
        server.stop()
    assert code == 0, server.log.read_text()
    aside = list(tmp_path.glob("state.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json", aside
    assert f"kept as {aside[0]}" in server.log.read_text()
    assert json.loads(state.read_text())["node_id"] == node_id.hex()  # written at exit


# --- NodeConfig from --set and --config --------------------------------------------------


def answered_pings(address: tuple[str, int], client_ip: str, count: int = 120) -> int:
    """Send `count` pings at once from a fresh address; how many were answered."""
    client = RawKrpcClient(client_ip)
    try:
        tids = set()
        for _ in range(count):
            tid = client.new_tid()
            tids.add(tid)
            client.send({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": CLIENT_ID}}, address)
        replies = client.receive(1.0)
        return len({r[b"t"] for r in replies if isinstance(r, dict) and r.get(b"t") in tids
                    and r.get(b"y") == b"r"})
    finally:
        client.close()


def test_default_inbound_rate_drops_a_burst(server: Server):
    """The control of the next test: by default one IP gets about 50 answers at once."""
    assert answered_pings(server.address, "127.0.5.1") < 100


@pytest.mark.parametrize("how", ["--set", "--config top level", "--config [node]"])
def test_serve_sets_node_config_fields(tmp_path, how):
    config = tmp_path / "node.toml"
    if how == "--set":
        extra = ("--set", "inbound_rate=0", "--set", "enforce-node-id=yes")
    else:
        body = "inbound_rate = 0\nenforce_node_id = true\n"
        config.write_text(body if how == "--config top level" else "[node]\n" + body)
        extra = ("--config", str(config))
    server = start_server(tmp_path, "127.0.0.62", "127.0.0.63", guarded_env(), extra)
    try:
        answered = answered_pings(server.address, "127.0.5.2")
        code = stop_server(server)
    finally:
        server.stop()
    assert code == 0, server.log.read_text()
    assert answered == 120  # inbound_rate 0: no per-IP limit
    assert "INFO mldht: config: enforce_node_id=True, inbound_rate=0.0" in server.log.read_text()


def test_set_applies_after_config(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("[node]\ninbound_rate = 7\nk = 10\n")
    server = start_server(tmp_path, "127.0.0.64", "127.0.0.65", guarded_env(),
                          ("--config", str(config), "--set", "inbound_rate=0"))
    try:
        code = stop_server(server)
    finally:
        server.stop()
    assert code == 0
    assert "INFO mldht: config: k=10, inbound_rate=0.0" in server.log.read_text()


CONFIG_ERRORS = [
    ("set", "nope=1", "--set 'nope=1': unknown NodeConfig field 'nope'"),
    ("set", "inbound_rat=0", "--set 'inbound_rat=0': unknown NodeConfig field 'inbound_rat' "
     "(did you mean inbound_rate or inbound_burst?)"),
    ("set", "inbound_rate=fast", "--set 'inbound_rate=fast': inbound_rate is a number, not 'fast'"),
    ("set", "k=2.5", "--set 'k=2.5': k is a whole number, not '2.5'"),
    ("set", "query_rate=-1", "--set 'query_rate=-1': query_rate must be a number not below 0, "
     "not -1.0"),
    ("set", "enforce_node_id=maybe", "--set 'enforce_node_id=maybe': enforce_node_id is a "
     "boolean (true or false), not 'maybe'"),
    ("set", "inbound_rate", "--set 'inbound_rate': expected NAME=VALUE with a NodeConfig field, "
     "not 'inbound_rate'"),
    ("set", "version=x", "--set 'version=x': version cannot be set from text"),
    ("toml", "nope = 1\n", "config file {path!r}: unknown NodeConfig field 'nope'"),
    ("toml", "[node]\nk = \"many\"\n", "config file {path!r}: k is a whole number, not 'many'"),
    ("toml", "[node]\nk = 2.5\n", "config file {path!r}: k is a whole number, not 2.5"),
    ("toml", "enforce_node_id = 1\n", "config file {path!r}: enforce_node_id is a boolean (true "
     "or false), not 1"),
    ("toml", "k = 3\n[node]\nalpha = 2\n", "config file {path!r}: put the fields either at the "
     "top level or in a [node] table, not both"),
    ("toml", "k = \n", "config file {path!r} is not valid TOML: Invalid value (at line 1, "
     "column 5)"),
    ("missing", "", "config file {path!r}: No such file or directory"),
]


@pytest.mark.parametrize("kind, text, message", CONFIG_ERRORS)
def test_bad_config_exits_2_naming_the_field(tmp_path, kind, text, message):
    path = tmp_path / "node.toml"
    if kind == "toml":
        path.write_text(text)
    option = ("--set", text) if kind == "set" else ("--config", str(path))
    result = run_serve("--bind", "127.0.0.57:0", "--bootstrap", "127.0.0.1:9", *option)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [f"mldht: error: {message.format(path=str(path))}"]


# --- logs -----------------------------------------------------------------------------------

STATUS_LINE = re.compile(
    r"INFO mldht: table \d+ nodes \(\d+ good\), stored \d+ infohashes / \d+ peers / \d+ items, "
    r"in (\d+) q / out \d+ q, timeouts \d+, rate-limited \d+$")


def test_serve_logs_readable_status_lines_and_lifecycle_at_info(tmp_path):
    server = start_server(tmp_path, "127.0.0.66", "127.0.0.67", guarded_env(),
                          ("--stats-interval", "0.2"))
    try:
        time.sleep(0.5)
        code = stop_server(server)
    finally:
        server.stop()
    assert code == 0
    log = server.log.read_text()
    assert "NodeStats(" not in log and "{" not in log, log
    statuses = [m for m in map(STATUS_LINE.search, log.splitlines()) if m]
    assert len(statuses) >= 2, log
    assert int(statuses[-1].group(1)) >= 1, log  # start_server's ping
    assert re.search(r"INFO mldht: serving as [0-9a-f]{40} on 127\.0\.0\.66:\d+$", log, re.M), log
    assert re.search(r"INFO mldht: stopping$", log, re.M), log
    assert "WARNING mldht: serving" not in log and "WARNING mldht: stopping" not in log


async def test_status_line_of_both_families():
    from mldht import Node
    from mldht.cli import status_line

    async with Node(["127.0.0.68:0", "[::1]:0"], bootstrap=[]) as node:
        line = status_line(node.status())
    assert line == ("tables IPv4 0 nodes (0 good), IPv6 0 nodes (0 good), stored 0 infohashes "
                    "/ 0 peers / 0 items, in 0 q / out 0 q, timeouts 0, rate-limited 0")
