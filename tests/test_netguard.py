"""The guard itself: it must refuse non-loopback traffic in this process and in children."""

import socket
import subprocess
import sys

import netguard
from netguard import guarded_env


def test_guard_refuses_non_loopback_datagram(loopback_only):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            sock.sendto(b"x", ("192.0.2.1", 6881))  # TEST-NET-1: refused before sending
        except PermissionError:
            pass
        else:
            raise AssertionError("the guard let a non-loopback datagram through")
        assert loopback_only and "192.0.2.1" in loopback_only[0]
        loopback_only.clear()  # expected violation: do not fail this test
        sock.sendto(b"x", ("127.0.0.1", 9))  # loopback stays allowed
    finally:
        sock.close()


def test_guard_refuses_host_names(loopback_only):
    try:
        socket.getaddrinfo("router.example.invalid", 6881)
    except socket.gaierror:
        pass
    else:
        raise AssertionError("the guard let a host name resolve")
    assert loopback_only
    loopback_only.clear()
    assert socket.getaddrinfo("127.0.0.1", 6881)


def test_guard_is_loaded_in_child_processes(tmp_path):
    env = guarded_env()
    env["MLDHT_NETGUARD_LOG"] = str(tmp_path / "child.log")
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(b'x', ('192.0.2.1', 6881))\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"netguard" in result.stderr
    assert "192.0.2.1" in (tmp_path / "child.log").read_text()


def test_is_loopback():
    assert netguard.is_loopback("127.0.0.1") and netguard.is_loopback("127.3.4.5")
    assert netguard.is_loopback("::1") and netguard.is_loopback("::ffff:127.0.0.1")
    assert not netguard.is_loopback("0.0.0.0") and not netguard.is_loopback("10.0.0.1")
    assert not netguard.is_loopback("2001:db8::1")
