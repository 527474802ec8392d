"""A blocklist of IP ranges, read from a file.

One range per line, in any of these forms (blank lines and `#` comments are skipped):

    203.0.113.0/24            CIDR, IPv4 or IPv6
    198.51.100.7              one address
    10.0.0.1-10.0.0.255       first-last
    some name:1.2.3.0-1.2.3.9 the PeerGuardian (P2P) text format used by public lists

Lookups are a binary search over merged ranges, so a list of a few hundred thousand ranges
stays fast and small.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from pathlib import Path

from .errors import InvalidInput


_P2P_LINE = re.compile(r"^.*:(\d+\.\d+\.\d+\.\d+\s*-\s*\d+\.\d+\.\d+\.\d+)$")


def _parse_range(text: str) -> tuple[int, int, int]:
    """(version, first, last) as integers."""
    p2p = _P2P_LINE.match(text)
    if p2p:
        text = p2p.group(1)  # PeerGuardian: "name:first-last" (IPv4 only)
    if "-" in text:
        first_text, last_text = (part.strip() for part in text.split("-", 1))
        first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
        if first.version != last.version or int(first) > int(last):
            raise ValueError("bad range")
        return first.version, int(first), int(last)
    network = ipaddress.ip_network(text.strip(), strict=False)
    return network.version, int(network.network_address), int(network.broadcast_address)


class Blocklist:
    """IP ranges to ignore: no datagram from them is processed, none is sent to them."""

    def __init__(self, ranges: list[tuple[int, int, int]] = ()) -> None:  # type: ignore[assignment]
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        for version in (4, 6):
            merged: list[list[int]] = []
            for _, first, last in sorted(r for r in ranges if r[0] == version):
                if merged and first <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], last)
                else:
                    merged.append([first, last])
            self._starts[version] = [first for first, _ in merged]
            self._ends[version] = [last for _, last in merged]

    @classmethod
    def from_lines(cls, lines, source: str = "blocklist") -> "Blocklist":
        ranges = []
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                ranges.append(_parse_range(text))
            except ValueError:
                raise InvalidInput(f"{source}:{number}: not an IP range: {text!r}") from None
        return cls(ranges)

    @classmethod
    def from_file(cls, path: str | Path) -> "Blocklist":
        try:
            with open(path, encoding="utf-8", errors="replace") as stream:
                return cls.from_lines(stream, str(path))
        except OSError as exc:
            raise InvalidInput(f"cannot read blocklist {path}: {exc.strerror or exc}") from None

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])

    def __contains__(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        starts = self._starts[address.version]
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= self._ends[address.version][index]
