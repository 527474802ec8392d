"""A virtual UDP network: datagrams between endpoints, delivered on the scheduler's clock.

Every endpoint is an `(ip, port)` address attached with a receiver callable. A datagram
sent to an address that is attached when it leaves and still attached when it arrives is
handed to the receiver after the link's latency; otherwise it vanishes without a trace,
as on the internet (no ICMP error ever comes back). On top of that:

- latency per link from a `LatencyModel` (deterministic per pair of IPs),
- random loss with probability `loss` per datagram,
- NAT: an endpoint attached with `nat=True` receives only from addresses it has sent to
  within `nat_timeout` seconds (a port-restricted cone NAT); unsolicited datagrams drop.

All randomness comes from the seed, and delivery order is fixed by the scheduler's heap,
so the same sequence of sends gives the same deliveries.
"""

from __future__ import annotations

import ipaddress
import math
import random as _random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

from .clock import Scheduler

Address = tuple[str, int]
Receiver = Callable[[bytes, Address], None]

_MASK64 = (1 << 64) - 1
_STANDARD_NORMAL = NormalDist()


def mix64(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer, the same on every
    run and Python version (unlike `hash()` of strings)."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """One-way latency of each link: lognormal around `median` seconds with shape `sigma`,
    clipped to [`minimum`, `maximum`], fixed per pair of IPs by `seed` (both directions
    alike). The defaults resemble the public DHT: a median of 100 ms, 90% under ~190 ms,
    a tail of a few hundred ms."""

    median: float = 0.100
    sigma: float = 0.5
    minimum: float = 0.005
    maximum: float = 2.0
    seed: int = 0

    def one_way(self, ip_a: int, ip_b: int) -> float:
        """Latency in seconds between two IPs given as integers."""
        low, high = (ip_a, ip_b) if ip_a <= ip_b else (ip_b, ip_a)
        spread = mix64(mix64(self.seed ^ low) ^ high)
        # Strictly inside (0, 1): inv_cdf refuses the ends.
        uniform = ((spread >> 11) + 0.5) / (1 << 53)
        latency = self.median * math.exp(self.sigma * _STANDARD_NORMAL.inv_cdf(uniform))
        return min(max(latency, self.minimum), self.maximum)


@dataclass(slots=True)
class NetworkStats:
    """Datagrams the network carried or dropped, by reason."""

    sent: int = 0
    delivered: int = 0
    bytes_sent: int = 0
    lost: int = 0
    """Dropped by random loss."""
    to_absent: int = 0
    """Sent to an address nobody is attached to (dead or departed nodes)."""
    absent_on_arrival: int = 0
    """The receiver left while the datagram was in flight."""
    nat_dropped: int = 0
    """Unsolicited datagrams stopped by a receiver's NAT."""

    def snapshot(self) -> "NetworkStats":
        return NetworkStats(self.sent, self.delivered, self.bytes_sent, self.lost,
                            self.to_absent, self.absent_on_arrival, self.nat_dropped)

    def minus(self, earlier: "NetworkStats") -> "NetworkStats":
        return NetworkStats(*(getattr(self, name) - getattr(earlier, name)
                              for name in self.__slots__))


class _Endpoint:
    __slots__ = ("address", "ip_key", "receiver", "nat", "contacted", "contacts_at_prune")

    def __init__(self, address: Address, receiver: Receiver, nat: bool) -> None:
        self.address = address
        self.ip_key = int(ipaddress.ip_address(address[0]))
        self.receiver = receiver
        self.nat = nat
        self.contacted: dict[Address, float] = {}
        """NAT only: remote address -> when we last sent to it (the mapping's filter)."""
        self.contacts_at_prune = 256


class VirtualTransport:
    """The sending side of one endpoint (`sendto`, `close`), like a datagram transport."""

    __slots__ = ("_network", "_endpoint", "_closing")

    def __init__(self, network: "VirtualNetwork", endpoint: _Endpoint) -> None:
        self._network = network
        self._endpoint = endpoint
        self._closing = False

    def get_extra_info(self, name: str, default=None):
        return self._endpoint.address if name == "sockname" else default

    def sendto(self, data: bytes, addr: Address | None = None) -> None:
        if self._closing:
            raise OSError("transport closed")
        if addr is None:
            raise ValueError("a virtual transport is not connected: give an address")
        self._network._send(self._endpoint, data, addr)

    def send_batch(self, datagrams: list[tuple[bytes, Address]]) -> int:
        if self._closing:
            return len(datagrams)
        send = self._network._send
        endpoint = self._endpoint
        for data, address in datagrams:
            send(endpoint, data, address)
        return 0

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._network.detach(self._endpoint.address)

    def is_closing(self) -> bool:
        return self._closing


class VirtualNetwork:
    """Endpoints exchanging datagrams on `scheduler`'s clock (see the module docstring)."""

    def __init__(self, scheduler: Scheduler, *, latency: LatencyModel | None = None,
                 loss: float = 0.0, nat_timeout: float = 60.0, seed: int = 0) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss is a probability below 1")
        self.scheduler = scheduler
        self.latency = latency or LatencyModel(seed=seed)
        self.loss = loss
        self.nat_timeout = nat_timeout
        self.stats = NetworkStats()
        self._rng = _random.Random(f"network-{seed}")
        self._endpoints: dict[Address, _Endpoint] = {}

    def attach(self, address: Address, receiver: Receiver, *, nat: bool = False) -> VirtualTransport:
        """Give `address` to a new endpoint whose datagrams go to `receiver(data, source)`.
        A `nat` endpoint only receives from addresses it has recently sent to."""
        if address in self._endpoints:
            raise ValueError(f"{address} is already attached")
        endpoint = _Endpoint(address, receiver, nat)
        self._endpoints[address] = endpoint
        return VirtualTransport(self, endpoint)

    def detach(self, address: Address) -> None:
        """Take `address` off the network: what is sent to it from now on vanishes."""
        self._endpoints.pop(address, None)

    def is_attached(self, address: Address) -> bool:
        return address in self._endpoints

    def is_behind_nat(self, address: Address) -> bool:
        endpoint = self._endpoints.get(address)
        return endpoint is not None and endpoint.nat

    def __len__(self) -> int:
        return len(self._endpoints)

    def _send(self, source: _Endpoint, data: bytes, address: Address) -> None:
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += len(data)
        if source.nat:
            self._open_mapping(source, address)
        target = self._endpoints.get(address)
        if target is None:
            stats.to_absent += 1
            return
        if self.loss and self._rng.random() < self.loss:
            stats.lost += 1
            return
        delay = self.latency.one_way(source.ip_key, target.ip_key)
        self.scheduler.call_later(delay, self._deliver, target, data, source.address)

    def _open_mapping(self, source: _Endpoint, address: Address) -> None:
        now = self.scheduler.now
        contacted = source.contacted
        contacted[address] = now
        if len(contacted) >= source.contacts_at_prune:
            # Forget expired mappings; the bound doubles only while the live ones fill it.
            horizon = now - self.nat_timeout
            for remote in [remote for remote, at in contacted.items() if at < horizon]:
                del contacted[remote]
            source.contacts_at_prune = max(256, 2 * len(contacted))

    def _deliver(self, target: _Endpoint, data: bytes, source: Address) -> None:
        if self._endpoints.get(target.address) is not target:
            self.stats.absent_on_arrival += 1
            return
        if target.nat:
            opened = target.contacted.get(source)
            if opened is None or self.scheduler.now - opened > self.nat_timeout:
                self.stats.nat_dropped += 1
                return
        self.stats.delivered += 1
        target.receiver(data, source)


class AddressPool:
    """Draws distinct random IPv4 addresses that look public (global unicast), each with a
    random port. Inside the simulator they are only names, but BEP 42 and the node's address
    checks treat them as they would real ones (private and loopback ranges are special)."""

    def __init__(self, rng: _random.Random) -> None:
        self._rng = rng
        self._used: set[int] = set()

    def draw(self) -> Address:
        for _ in range(1000):  # bounded: the global space is far larger than any simulation
            value = self._rng.getrandbits(32)
            if value in self._used:
                continue
            ip = ipaddress.IPv4Address(value)
            if not ip.is_global or ip.is_multicast:
                continue
            self._used.add(value)
            return (str(ip), self._rng.randrange(1024, 65536))
        raise RuntimeError("could not draw a fresh public address")
