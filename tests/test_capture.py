"""Reading UDP datagrams out of pcap and pcapng files (mldht.capture)."""

from __future__ import annotations

import socket

import dpkt
import pytest

from mldht.capture import (
    LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, Datagram, read_datagrams,
)
from mldht.errors import InvalidInput

PAYLOAD = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xx1:y1:qe"


def udp_ipv4(payload=PAYLOAD, src="198.18.1.1", dst="198.18.2.1", sport=6881, dport=6882,
             **ip_fields) -> dpkt.ip.IP:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    return dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_UDP,
                      data=udp, **ip_fields)


def udp_ipv6(payload=PAYLOAD) -> dpkt.ip6.IP6:
    udp = dpkt.udp.UDP(sport=1000, dport=2000, data=payload)
    udp.ulen = len(udp)
    return dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                        dst=socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
                        nxt=dpkt.ip.IP_PROTO_UDP, hlim=64, data=udp, plen=len(udp))


def ethernet(packet, ethertype=dpkt.ethernet.ETH_TYPE_IP) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=b"\0" * 6, dst=b"\0" * 6, type=ethertype, data=packet))


def write_pcap(path, frames, linktype=LINKTYPE_ETHERNET) -> None:
    with open(path, "wb") as stream:
        writer = dpkt.pcap.Writer(stream, linktype=linktype, snaplen=65535)
        for timestamp, frame in enumerate(frames):
            writer.writepkt(bytes(frame), ts=1000.0 + timestamp)


def test_ethernet_ipv4_udp(tmp_path):
    path = tmp_path / "a.pcap"
    write_pcap(path, [ethernet(udp_ipv4())])
    assert list(read_datagrams(path)) == [
        Datagram(1000.0, ("198.18.1.1", 6881), ("198.18.2.1", 6882), PAYLOAD)]


def test_ipv6_raw_and_linux_cooked(tmp_path):
    raw = tmp_path / "raw.pcap"
    write_pcap(raw, [bytes(udp_ipv6())], linktype=LINKTYPE_RAW)
    [datagram] = read_datagrams(raw)
    assert datagram.source == ("2001:db8::1", 1000) and datagram.payload == PAYLOAD

    cooked = tmp_path / "sll.pcap"
    sll = dpkt.sll.SLL(type=0, hrd=772, hlen=6, hdr=b"\0" * 8, ethtype=dpkt.ethernet.ETH_TYPE_IP,
                       data=udp_ipv4())
    write_pcap(cooked, [bytes(sll)], linktype=LINKTYPE_LINUX_SLL)
    [datagram] = read_datagrams(cooked)
    assert datagram.destination == ("198.18.2.1", 6882) and datagram.payload == PAYLOAD


def test_pcapng(tmp_path):
    path = tmp_path / "a.pcapng"
    with open(path, "wb") as stream:
        writer = dpkt.pcapng.Writer(stream, linktype=LINKTYPE_ETHERNET, snaplen=65535)
        writer.writepkt(ethernet(udp_ipv4(b"hello")), ts=5.0)
    [datagram] = read_datagrams(path)
    assert datagram.payload == b"hello" and datagram.time == 5.0


def test_non_udp_and_fragments_are_skipped(tmp_path):
    tcp = dpkt.ip.IP(src=b"\x01\x02\x03\x04", dst=b"\x05\x06\x07\x08", p=dpkt.ip.IP_PROTO_TCP,
                     data=dpkt.tcp.TCP(sport=1, dport=2))
    fragment = udp_ipv4(mf=1)
    arp = ethernet(dpkt.arp.ARP(), ethertype=dpkt.ethernet.ETH_TYPE_ARP)
    path = tmp_path / "mixed.pcap"
    write_pcap(path, [ethernet(tcp), ethernet(fragment), arp, b"\x00\x01", ethernet(udp_ipv4())])
    assert [d.payload for d in read_datagrams(path)] == [PAYLOAD]


def test_not_a_capture_and_cut_short(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a capture")
    with pytest.raises(InvalidInput, match="not a pcap"):
        list(read_datagrams(text))
    with pytest.raises(InvalidInput, match="cannot read"):
        list(read_datagrams(tmp_path / "missing.pcap"))
    whole = tmp_path / "whole.pcap"
    write_pcap(whole, [ethernet(udp_ipv4())] * 3)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole.read_bytes()[:-10])  # tcpdump killed mid-write
    assert len(list(read_datagrams(cut))) == 2
    header_only = tmp_path / "header.pcap"
    header_only.write_bytes(whole.read_bytes()[:10])
    with pytest.raises(InvalidInput):
        list(read_datagrams(header_only))


def test_unsupported_link_type(tmp_path):
    path = tmp_path / "usb.pcap"
    write_pcap(path, [b"\x00" * 40], linktype=189)
    with pytest.raises(InvalidInput, match="link-layer type 189"):
        list(read_datagrams(path))
