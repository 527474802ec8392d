"""An asyncio event loop that runs on a virtual clock and never touches the operating system.

`asyncio.sleep`, `asyncio.timeout`, `call_later` and everything built on them (the node's
query timeouts, lookups, maintenance) run unchanged, but when nothing is ready to run the
clock jumps to the next scheduled timer instead of waiting: an hour of network life costs
only the CPU its events need.

    with VirtualTimeLoop.runner() as runner:
        runner.run(main())

The loop opens no sockets and no self-pipe, starts no threads and resolves only IP
literals: anything that would reach the real network raises `RuntimeError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

START_TIME = 1_000_000.0
"""Where the virtual clock starts. A real monotonic clock is far from 0 too (seconds since
boot): code that treats 0.0 as "long ago" behaves as it does on a real host."""


class _VirtualSelector:
    """Stands where the loop's selector would: `select(timeout)` advances the clock by
    `timeout` instead of waiting for I/O (there is no I/O)."""

    def __init__(self, loop: "VirtualTimeLoop") -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list:
        if timeout is None:
            # Nothing ready and no timer: on a virtual clock this would wait forever.
            raise RuntimeError("virtual-time loop has nothing to run and no timer: deadlock")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """An event loop whose `time()` is a virtual clock that jumps from timer to timer."""

    def __init__(self, start: float = START_TIME) -> None:
        super().__init__()
        self._virtual_now = start
        self._selector = _VirtualSelector(self)
        # Timers due within this much of now run in the same turn; virtual time is exact.
        self._clock_resolution = 1e-9

    @classmethod
    def runner(cls, start: float = START_TIME, debug: bool | None = None) -> asyncio.Runner:
        """An `asyncio.Runner` on a new virtual-time loop (use it as a context manager)."""
        return asyncio.Runner(debug=debug, loop_factory=lambda: cls(start))

    def time(self) -> float:
        """The virtual time in seconds."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself when it would otherwise wait)."""
        if seconds < 0:
            raise ValueError("virtual time does not go backwards")
        self._virtual_now += seconds

    # --- what BaseEventLoop leaves to subclasses -------------------------------------------

    def _process_events(self, event_list: list) -> None:
        pass  # no file descriptors are ever registered

    def _write_to_self(self) -> None:
        pass  # single-threaded: nothing needs waking (call_soon_threadsafe still queues)

    # --- refuse the real world ----------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0) -> list:
        """Only IP literals: a simulated node has no DNS, and a name must not be looked up."""
        try:
            address = ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME,
                                  f"virtual-time loop resolves IP literals only, not {host!r}")
        family_found = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        if family not in (0, socket.AF_UNSPEC, family_found):
            return []
        sockaddr: tuple = (str(address), int(port)) if address.version == 4 else (
            str(address), int(port), 0, 0)
        return [(family_found, type or socket.SOCK_DGRAM, proto, "", sockaddr)]

    def _refuse(self, *args: Any, **kwargs: Any):
        raise RuntimeError("the virtual-time loop has no real network, files or threads")

    create_datagram_endpoint = _refuse  # type: ignore[assignment]
    create_connection = _refuse  # type: ignore[assignment]
    create_server = _refuse  # type: ignore[assignment]
    create_unix_connection = _refuse  # type: ignore[assignment]
    create_unix_server = _refuse  # type: ignore[assignment]
    getnameinfo = _refuse  # type: ignore[assignment]
    run_in_executor = _refuse  # type: ignore[assignment]
    sock_connect = _refuse  # type: ignore[assignment]
    sock_sendto = _refuse  # type: ignore[assignment]
    subprocess_exec = _refuse  # type: ignore[assignment]
    subprocess_shell = _refuse  # type: ignore[assignment]
