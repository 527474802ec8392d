"""Tests of mldht.compact: compact node info (26 / 38 bytes) and compact peer info (6 / 18 bytes)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mldht.compact import (
    NODE4_LENGTH, NODE6_LENGTH, PEER4_LENGTH, PEER6_LENGTH, NodeInfo, format_address,
    normalize_ip, pack_address, pack_nodes, unpack_address, unpack_nodes,
)
from mldht.ids import NodeId

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

node_ids = st.binary(min_size=20, max_size=20).map(NodeId)
ports = st.integers(min_value=0, max_value=0xFFFF)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)


def test_lengths():
    assert (PEER4_LENGTH, PEER6_LENGTH, NODE4_LENGTH, NODE6_LENGTH) == (6, 18, 26, 38)


def test_pack_address_byte_exact():
    assert pack_address(("1.2.3.4", 6881)) == b"\x01\x02\x03\x04\x1a\xe1"
    assert pack_address(("255.255.255.255", 65535)) == b"\xff" * 6
    assert pack_address(("::1", 1)) == bytes(15) + b"\x01" + b"\x00\x01"
    assert pack_address(("2001:db8::2", 0x1234)) == (
        b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02" + b"\x12\x34")


def test_unpack_address_byte_exact():
    assert unpack_address(b"\x01\x02\x03\x04\x1a\xe1") == ("1.2.3.4", 6881)
    assert unpack_address(b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02\x12\x34") == ("2001:db8::2", 0x1234)


@given(ipv4, ports)
@SETTINGS
def test_peer4_round_trip(ip, port):
    packed = pack_address((str(ip), port))
    assert len(packed) == 6
    assert packed == ip.packed + port.to_bytes(2, "big")
    assert unpack_address(packed) == (str(ip), port)


@given(ipv6, ports)
@SETTINGS
def test_peer6_round_trip(ip, port):
    packed = pack_address((str(ip), port))
    assert len(packed) == 18
    assert packed == ip.packed + port.to_bytes(2, "big")
    text, got_port = unpack_address(packed)
    assert got_port == port
    # The text form may differ (e.g. embedded IPv4 notation) but it is the same address.
    assert ipaddress.IPv6Address(text) == ip
    assert pack_address((text, port)) == packed


@given(st.binary(min_size=6, max_size=6) | st.binary(min_size=18, max_size=18))
@SETTINGS
def test_unpack_then_pack_is_identity(data):
    assert pack_address(unpack_address(data)) == data


@pytest.mark.parametrize("length", [0, 1, 5, 7, 16, 17, 19, 26, 38])
def test_unpack_address_wrong_length(length):
    with pytest.raises(ValueError):
        unpack_address(bytes(length))


@pytest.mark.parametrize("port", [-1, 65536, 10**6])
def test_pack_address_port_out_of_range(port):
    with pytest.raises(ValueError):
        pack_address(("1.2.3.4", port))


@given(st.lists(st.tuples(node_ids, ipv4, ports), max_size=20))
@SETTINGS
def test_nodes4_round_trip(entries):
    nodes = [NodeInfo(node_id, str(ip), port) for node_id, ip, port in entries]
    packed = pack_nodes(nodes)
    assert len(packed) == 26 * len(nodes)
    for i, node in enumerate(nodes):
        chunk = packed[26 * i:26 * (i + 1)]
        assert chunk[:20] == node.id
        assert chunk[20:] == pack_address(node.address)
    assert unpack_nodes(packed) == nodes
    for node in unpack_nodes(packed):
        assert type(node.id) is NodeId
        assert not node.is_ipv6


@given(st.lists(st.tuples(node_ids, ipv6, ports), max_size=20))
@SETTINGS
def test_nodes6_round_trip(entries):
    nodes = [NodeInfo(node_id, str(ip), port) for node_id, ip, port in entries]
    packed = pack_nodes(nodes)
    assert len(packed) == 38 * len(nodes)
    unpacked = unpack_nodes(packed, ipv6=True)
    assert len(unpacked) == len(nodes)
    for got, want in zip(unpacked, nodes):
        assert got.id == want.id and got.port == want.port
        assert ipaddress.IPv6Address(got.ip) == ipaddress.IPv6Address(want.ip)
        assert got.is_ipv6
    assert pack_nodes(unpacked) == packed


@pytest.mark.parametrize("length", [1, 25, 27, 38, 51, 53])
def test_unpack_nodes_wrong_length(length):
    with pytest.raises(ValueError, match="nodes"):
        unpack_nodes(bytes(length))


@pytest.mark.parametrize("length", [1, 26, 37, 39, 75, 77])
def test_unpack_nodes6_wrong_length(length):
    with pytest.raises(ValueError, match="nodes6"):
        unpack_nodes(bytes(length), ipv6=True)


def test_unpack_nodes_empty():
    assert unpack_nodes(b"") == []
    assert unpack_nodes(b"", ipv6=True) == []
    assert pack_nodes([]) == b""


def test_node_info_helpers():
    node = NodeInfo(NodeId(bytes(20)), "10.0.0.1", 6881)
    assert node.address == ("10.0.0.1", 6881)
    assert not node.is_ipv6
    assert str(node) == "00" * 20 + "@10.0.0.1:6881"
    node6 = NodeInfo(NodeId(b"\xff" * 20), "fe80::1", 53)
    assert node6.is_ipv6
    assert str(node6) == "ff" * 20 + "@[fe80::1]:53"
    assert format_address(("::", 0)) == "[::]:0"


@pytest.mark.parametrize("text, expected", [
    ("1.2.3.4", "1.2.3.4"),
    ("::ffff:1.2.3.4", "1.2.3.4"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
])
def test_normalize_ip(text, expected):
    assert normalize_ip(text) == expected


def test_normalize_ip_rejects_garbage():
    with pytest.raises(ValueError):
        normalize_ip("not an address")


def test_is_contactable_refuses_martians_from_remote_referrers():
    from mldht.compact import is_contactable

    remote, local = ("198.51.100.7", 6881), ("127.0.0.5", 6881)
    assert is_contactable(("203.0.113.9", 6881), remote)
    assert is_contactable(("10.1.2.3", 6881), remote)  # private networks are real DHTs too
    assert not is_contactable(("127.0.0.1", 6881), remote)
    assert is_contactable(("127.0.0.1", 6881), local)  # a loopback test network
    assert not is_contactable(("::1", 6881), ("2001:db8::1", 6881))
    for martian in ("0.0.0.0", "224.0.0.1", "255.255.255.255", "240.0.0.1", "169.254.1.1",
                    "::", "ff02::1", "fe80::1", "not-an-ip"):
        assert not is_contactable((martian, 6881), remote), martian
    assert not is_contactable(("203.0.113.9", 0), remote)
