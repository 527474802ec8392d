"""Helpers shared by the multi-node tests: a DHT of in-process nodes on 127.0.0.x addresses,
raw KRPC sockets (async and blocking), and running the `mldht` command line.

Everything here binds to loopback addresses only and gives every node an explicit
loopback bootstrap list, so nothing is ever sent beyond 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from dataclasses import dataclass

import bencodepy
import pytest_asyncio

import netguard
from mldht import DHTNode, NodeConfig, NodeId

BENCODE = bencodepy.Bencode(encoding=None)
"""Raw bencode: dictionaries with bytes keys, strings as bytes."""

NETWORK_SIZE = 30
QUERY_TIMEOUT = 2.0
BOOTSTRAP_TIMEOUT = 5.0


def network_config() -> NodeConfig:
    """Shorter timeouts than the defaults so that the tests stay fast."""
    return NodeConfig(query_timeout=QUERY_TIMEOUT)


def loopback_ip(index: int) -> str:
    assert 1 <= index <= 254
    return f"127.0.0.{index}"


def free_udp_port(ip: str) -> int:
    """A UDP port that was free on `ip` a moment ago (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


class DhtNetwork:
    """`nodes[0]` is the bootstrap node; every other node joined through it."""

    def __init__(self, nodes: list[DHTNode], joined: list[int]) -> None:
        self.nodes = nodes
        self.joined = joined
        """What the single `bootstrap()` returned for nodes[1:], in order."""

    @property
    def first(self) -> DHTNode:
        return self.nodes[0]

    @property
    def bootstrap_spec(self) -> str:
        ip, port = self.first.address
        return f"{ip}:{port}"

    @property
    def ids(self) -> list[NodeId]:
        return [node.node_id for node in self.nodes]

    def true_closest(self, target: bytes, k: int = 8, exclude: bytes | None = None) -> list[NodeId]:
        """The k ids of the network nearest to `target`, nearest first (maybe without `exclude`)."""
        ids = [node_id for node_id in self.ids if node_id != exclude]
        return sorted(ids, key=lambda node_id: node_id.distance(target))[:k]

    async def close(self) -> None:
        await asyncio.gather(*(node.close() for node in self.nodes), return_exceptions=True)


async def start_network(count: int = NETWORK_SIZE, first_index: int = 10) -> DhtNetwork:
    """Start `count` nodes on 127.0.0.first_index... and join them through the first one.

    Every node but the first runs `bootstrap()` once, all concurrently, as real clients
    joining through one router would: the runtime itself must turn that into a meshed network
    (it pings the nodes that query it and retries a bootstrap that left its table sparse).
    """
    assert first_index + count - 1 <= 254
    nodes: list[DHTNode] = []
    try:
        first = DHTNode((loopback_ip(first_index), 0), bootstrap=[], config=network_config())
        nodes.append(first)
        await first.start()
        spec = f"{first.address[0]}:{first.address[1]}"
        for index in range(first_index + 1, first_index + count):
            node = DHTNode((loopback_ip(index), 0), bootstrap=[spec], config=network_config())
            nodes.append(node)
            await node.start()
        async with asyncio.timeout(3 * BOOTSTRAP_TIMEOUT + 10):
            joined = await asyncio.gather(*(node.bootstrap(timeout=BOOTSTRAP_TIMEOUT)
                                            for node in nodes[1:]))
    except BaseException:
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
        raise
    network = DhtNetwork(nodes, list(joined))
    if netguard.violations:  # set up before the per-test guard fixture starts recording
        await network.close()
        raise AssertionError("non-loopback network use while starting the network: "
                             + "; ".join(netguard.violations))
    return network


# --- raw KRPC ----------------------------------------------------------------------------


def encode(message: dict) -> bytes:
    return BENCODE.encode(message)


def decode(data: bytes):
    """Decoded bencode, or None when the datagram is not bencode."""
    try:
        return BENCODE.decode(data)
    except Exception:
        return None


class AsyncRawSocket:
    """A bare UDP socket driven by the event loop (for talking to in-process nodes)."""

    def __init__(self, ip: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]

    async def send(self, data: bytes, address: tuple[str, int]) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, address)

    async def recv(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        try:
            async with asyncio.timeout(timeout):
                data, address = await asyncio.get_running_loop().sock_recvfrom(self.sock, 65535)
        except TimeoutError:
            return None
        return data, address[:2]

    def close(self) -> None:
        self.sock.close()


class RawKrpcClient:
    """A blocking KRPC client on one UDP socket (for talking to a node in another process)."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.address = self.sock.getsockname()[:2]
        self._next_tid = 0

    def new_tid(self) -> bytes:
        self._next_tid += 1
        return b"c" + self._next_tid.to_bytes(3, "big")

    def send(self, message: dict | bytes, address: tuple[str, int]) -> None:
        data = message if isinstance(message, bytes) else encode(message)
        self.sock.sendto(data, address)

    def receive(self, timeout: float) -> list[dict]:
        """Every non-query message received within `timeout` seconds (queries sent to us by
        the node, such as its pings of questionable nodes, are dropped)."""
        messages = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            message = decode(data)
            if isinstance(message, dict) and message.get(b"y") == b"q":
                continue
            messages.append(message)
        return messages

    def request(self, address: tuple[str, int], method: bytes, arguments: dict,
                timeout: float = 2.0, **top_level) -> dict | None:
        """Send a query and return the reply with the same `t` (None after `timeout`)."""
        tid = self.new_tid()
        message = {b"t": tid, b"y": b"q", b"q": method, b"a": arguments}
        message.update({key.encode(): value for key, value in top_level.items()})
        self.send(message, address)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            reply = decode(data)
            if (source[:2] == tuple(address) and isinstance(reply, dict)
                    and reply.get(b"t") == tid and reply.get(b"y") in (b"r", b"e")):
                return reply
        return None

    def close(self) -> None:
        self.sock.close()


# --- the command line --------------------------------------------------------------------


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float


async def run_cli(*args: str, timeout: float = 30.0) -> CliResult:
    """Run `python -m mldht.cli ARGS` under the network guard, without blocking the event
    loop (the in-process network keeps answering). Killed if it runs past `timeout`."""
    from netguard import guarded_env

    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mldht.cli", *args, env=guarded_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()  # our own child, by its pid
        await asyncio.wait_for(process.wait(), 10)
        raise AssertionError(f"mldht {' '.join(args)} still running after {timeout} s") from None
    return CliResult(process.returncode, stdout.decode(), stderr.decode(),
                     time.monotonic() - started)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net():
    """The 30-node network, shared by the tests of one module (import it into the module)."""
    network = await start_network()
    try:
        yield network
    finally:
        await network.close()
