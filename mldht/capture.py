"""UDP datagrams out of packet captures (pcap and pcapng files, as tcpdump or tshark write).

Parsing is left to dpkt, a small pure-Python packet library, rather than written again here.
Only what a DHT capture needs is extracted: the time, both addresses and the UDP payload of
every IPv4 or IPv6 datagram; anything else in the file (TCP, ARP, fragments) is skipped.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import dpkt

from .compact import Address
from .errors import InvalidInput

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

# Link-layer types (tcpdump's DLT_ numbers) whose frames carry IP datagrams.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276


@dataclass(frozen=True, slots=True)
class Datagram:
    """One captured UDP datagram."""

    time: float
    """Capture timestamp, seconds since the epoch."""
    source: Address
    destination: Address
    payload: bytes


def _ip_packet(link_type: int, frame: bytes):
    """The dpkt IP or IP6 object inside one frame, or None."""
    if link_type == LINKTYPE_ETHERNET:
        packet = dpkt.ethernet.Ethernet(frame).data
    elif link_type == LINKTYPE_LINUX_SLL:
        packet = dpkt.sll.SLL(frame).data
    elif link_type == LINKTYPE_LINUX_SLL2:
        packet = dpkt.sll2.SLL2(frame).data
    elif link_type in (LINKTYPE_NULL, LINKTYPE_LOOP):
        packet = dpkt.loopback.Loopback(frame).data
    elif link_type in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = frame[0] >> 4 if frame else 0
        packet = dpkt.ip.IP(frame) if version == 4 else dpkt.ip6.IP6(frame) if version == 6 else None
    else:
        raise AssertionError(link_type)  # _frames admits only the types above
    return packet if isinstance(packet, (dpkt.ip.IP, dpkt.ip6.IP6)) else None


def _datagram(link_type: int, timestamp: float, frame: bytes) -> Datagram | None:
    try:
        packet = _ip_packet(link_type, frame)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    if packet is None:
        return None
    if isinstance(packet, dpkt.ip.IP):
        if packet.offset or packet.mf:  # a fragment: DHT datagrams are never fragmented on purpose
            return None
        family = socket.AF_INET
    else:
        family = socket.AF_INET6
    udp = packet.data
    if not isinstance(udp, dpkt.udp.UDP) or len(udp.data) != udp.ulen - 8:
        return None  # not UDP, or cut short by the snap length or the end of the file
    source = (socket.inet_ntop(family, packet.src), udp.sport)
    destination = (socket.inet_ntop(family, packet.dst), udp.dport)
    return Datagram(timestamp, source, destination, bytes(udp.data))


SUPPORTED_LINK_TYPES = {LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP,
                        LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2}


def _frames(stream: BinaryIO) -> Iterator[tuple[int, float, bytes]]:
    magic = stream.read(4)
    stream.seek(0)
    reader: dpkt.pcap.Reader | dpkt.pcapng.Reader
    if magic in PCAP_MAGICS:
        reader = dpkt.pcap.Reader(stream)
    elif magic == PCAPNG_MAGIC:
        reader = dpkt.pcapng.Reader(stream)  # dpkt takes the first interface's link type
    else:
        raise InvalidInput("not a pcap or pcapng capture (unknown magic number)")
    link_type = reader.datalink()
    if link_type not in SUPPORTED_LINK_TYPES:
        raise InvalidInput(f"unsupported link-layer type {link_type} in capture")
    for timestamp, frame in reader:
        yield link_type, timestamp, frame


def read_datagrams(path: str | Path) -> Iterator[Datagram]:
    """Every UDP datagram of a pcap or pcapng file, in capture order.

    Raises InvalidInput when the file is not a capture or is cut short in a header.
    """
    try:
        with open(path, "rb") as stream:
            try:
                for link_type, timestamp, frame in _frames(stream):
                    datagram = _datagram(link_type, float(timestamp), frame)
                    if datagram is not None:
                        yield datagram
            except (dpkt.NeedData, dpkt.UnpackError, ValueError) as exc:
                raise InvalidInput(f"{path}: damaged capture: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read capture {path}: {exc.strerror or exc}") from None
