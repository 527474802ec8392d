"""Test-suite guard: refuse (and record) any datagram or connection to a non-loopback address.

Installed in the pytest process by conftest.py and in child processes (the `mldht` CLI
started by tests) through tests/guard/sitecustomize.py, which reads MLDHT_NETGUARD_LOG:
every violation is appended to that file so the parent test fails too.
Host names other than localhost are refused at resolution, before any DNS packet leaves.
"""

from __future__ import annotations

import ipaddress
import os
import socket

violations: list[str] = []
child_log_path = os.devnull
"""Where child processes started with the tests' environment record their violations."""
_installed = False


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _record(what: str) -> None:
    violations.append(what)
    path = os.environ.get("MLDHT_NETGUARD_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(what + "\n")


def _check(address, action: str) -> None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        if not is_loopback(address[0]):
            message = f"netguard: {action} to non-loopback address {address!r} refused"
            _record(message)
            raise PermissionError(message)


def install() -> None:
    """Patch socket so that non-loopback traffic raises PermissionError and is recorded."""
    global _installed
    if _installed:
        return
    _installed = True
    original_sendto = socket.socket.sendto
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def sendto(self, data, *args):
        _check(args[-1], "sendto")
        return original_sendto(self, data, *args)

    def connect(self, address):
        _check(address, "connect")
        return original_connect(self, address)

    def connect_ex(self, address):
        _check(address, "connect")
        return original_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host is not None and not is_loopback(host):
            try:
                ipaddress.ip_address(str(host).split("%", 1)[0])
            except ValueError:
                message = f"netguard: resolving host name {host!r} refused"
                _record(message)
                raise socket.gaierror(socket.EAI_NONAME, message) from None
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.sendto = sendto
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    _guard_native_sends()


def _guard_native_sends() -> None:
    """The node's native transport sends with sendmmsg, past socket.sendto: check each
    batch's addresses before it goes (children turn the native path off instead)."""
    if os.environ.get("MLDHT_NATIVE", "").strip() == "0":
        return
    try:
        from mldht import _batchio  # type: ignore[attr-defined]
    except ImportError:
        return
    original_send_batch = _batchio.send_batch

    def send_batch(fd, family, datagrams, start):
        for _, address in datagrams[start:]:
            _check(address, "sendmmsg")
        return original_send_batch(fd, family, datagrams, start)

    _batchio.send_batch = send_batch


GUARD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard")


def guarded_env() -> dict[str, str]:
    """Environment for child processes: the guard is loaded through sitecustomize."""
    env = dict(os.environ)
    env["MLDHT_NETGUARD_LOG"] = child_log_path
    # uvloop sends from C, past the patched socket methods: children use asyncio's own loop.
    env["MLDHT_EVENT_LOOP"] = "asyncio"
    env["MLDHT_NATIVE"] = "0"  # likewise the native transport's sendmmsg
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [GUARD_DIR, env.get("PYTHONPATH")]))
    return env
