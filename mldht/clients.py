"""Naming DHT clients by the `v` key of their messages.

BEP 5 leaves `v` free; in practice clients send two ASCII letters (the BEP 20 client code)
then two bytes of version (major, minor), as libtorrent, µTorrent, Transmission, aria2,
WebTorrent and mldht do. Anything else is kept raw: the status page and the crawler show
what they cannot name rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass

CLIENT_NAMES: dict[str, str] = {
    "LT": "libtorrent",
    "lt": "libtorrent (old)",
    "UT": "µTorrent",
    "UM": "µTorrent Mac",
    "UW": "µTorrent Web",
    "BT": "BitTorrent",
    "TR": "Transmission",
    "A2": "aria2",
    "WW": "WebTorrent",
    "ML": "mldht (Python)",
    "ml": "mldht (the8472, Java)",
    "Az": "Vuze",
    "KT": "KTorrent",
    "BC": "BitComet",
    "GR": "GetRight",
    "XL": "Xunlei",
    "SD": "Thunder",
    "qB": "qBittorrent",
    "DE": "Deluge",
    "TX": "Tixati",
    "LH": "LH-ABC",
    "FW": "FrostWire",
    "BL": "BitLord",
    "RT": "rTorrent",
    "lb": "libtorrent (rakshasa)",
}


@dataclass(frozen=True, slots=True)
class ClientVersion:
    """What a `v` value says: `code` ("LT"), `name` ("libtorrent", or None when the code
    is unknown), `version` ("2.0"; None when `v` is not two letters and two bytes) and
    `raw` (the bytes, as hex)."""

    code: str | None
    name: str | None
    version: str | None
    raw: str

    def __str__(self) -> str:
        if self.code is None:
            return f"unknown ({self.raw})"
        label = self.name or f"unknown client {self.code!r}"
        return f"{label} {self.version}" if self.version else label

    def as_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "version": self.version, "raw": self.raw,
                "label": str(self)}


def describe_version(v: bytes | None) -> ClientVersion | None:
    """Name the client behind a `v` key (None for a message without one).

    >>> str(describe_version(b"LT\\x02\\x00"))
    'libtorrent 2.0'
    """
    if v is None:
        return None
    raw = v.hex()
    if len(v) >= 2 and all(0x20 < byte < 0x7F for byte in v[:2]):
        code = v[:2].decode("ascii")
        version = f"{v[2]}.{v[3]}" if len(v) == 4 else None
        return ClientVersion(code, CLIENT_NAMES.get(code), version, raw)
    return ClientVersion(None, None, None, raw)
