"""What to look up, from the forms people hold: magnet links and .torrent files.

- A magnet link (BEP 9): `xt=urn:btih:` with 40 hex digits or 32 base32 characters (v1), or
  `xt=urn:btmh:1220...` (BEP 52, a SHA-256 multihash): the DHT looks v2 swarms up by the
  first 20 bytes of the v2 infohash. `dn` is the display name.
- A .torrent file (BEP 3, BEP 52): the infohash is the SHA-1 of the bencoded `info`
  dictionary exactly as the file holds it (v1 and hybrid torrents), or for a v2-only
  torrent the SHA-256 of it, truncated to 20 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from .errors import InvalidInput
from .ids import InfoHash
from .bencoding import decode_bencode

SHA256_MULTIHASH = "1220"  # multihash code 0x12 (sha2-256), length 0x20


@dataclass(frozen=True, slots=True)
class Torrent:
    """What to look up: the 20-byte DHT infohash, and a name when one is known."""

    info_hash: InfoHash
    name: str | None = None
    version: int = 1
    """1 (v1 or hybrid: the SHA-1 infohash) or 2 (v2 only: SHA-256 truncated)."""


def _v1_infohash(text: str) -> InfoHash | None:
    if re.fullmatch(r"[0-9a-fA-F]{40}", text):
        return InfoHash(bytes.fromhex(text))
    if re.fullmatch(r"[A-Za-z2-7]{32}", text):
        return InfoHash(base64.b32decode(text.upper()))
    return None


def parse_magnet(text: str) -> Torrent:
    """The infohash and name (`dn`) of a magnet link; InvalidInput naming what is wrong.
    A hybrid link (`btih` and `btmh`) is looked up by its v1 infohash, as clients do."""
    query = parse_qs(urlsplit(text.strip()).query)
    names = query.get("dn")
    name = names[0] if names else None
    v2 = None
    for xt in query.get("xt", []):
        lowered = xt.lower()
        if lowered.startswith("urn:btih:"):
            info_hash = _v1_infohash(xt[len("urn:btih:"):])
            if info_hash is None:
                raise InvalidInput(f"magnet link: urn:btih: needs 40 hex digits or 32 base32 "
                                   f"characters, not {xt[len('urn:btih:'):]!r}")
            return Torrent(info_hash, name, 1)
        if lowered.startswith("urn:btmh:"):
            multihash = xt[len("urn:btmh:"):].lower()
            if not re.fullmatch(SHA256_MULTIHASH + r"[0-9a-f]{64}", multihash):
                raise InvalidInput("magnet link: urn:btmh: needs a SHA-256 multihash "
                                   "(1220 then 64 hex digits)")
            v2 = InfoHash(bytes.fromhex(multihash[4:])[:20])
    if v2 is not None:
        return Torrent(v2, name, 2)
    raise InvalidInput("magnet link has no xt=urn:btih: or xt=urn:btmh: infohash")


def _skip_value(data: bytes, at: int) -> int:
    """Where the bencoded value starting at `at` ends. The decoder gives values, not their
    bytes, and the infohash is the hash of the info dictionary's bytes as the file has
    them (a re-encoding would differ for a file that is not canonical)."""
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return end + 1
    if kind in (b"l", b"d"):
        at += 1
        while data[at:at + 1] != b"e":
            if at >= len(data):
                raise ValueError("truncated")
            at = _skip_value(data, at)
        return at + 1
    if kind.isdigit():
        colon = data.index(b":", at)
        return colon + 1 + int(data[at:colon])
    raise ValueError(f"unexpected byte {kind!r} at {at}")


def _info_span(data: bytes) -> tuple[int, int]:
    if data[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    at = 1
    while data[at:at + 1] != b"e":
        key_end = _skip_value(data, at)
        colon = data.index(b":", at)
        key = data[colon + 1:key_end]
        value_end = _skip_value(data, key_end)
        if key == b"info":
            return key_end, value_end
        at = value_end
    raise ValueError("no info dictionary")


def parse_torrent(data: bytes) -> Torrent:
    """The DHT infohash and name of a .torrent file's contents; InvalidInput when it is not
    one."""
    try:
        start, end = _info_span(data)
        info = decode_bencode(data[start:end])
    except (ValueError, IndexError, TypeError) as exc:
        raise InvalidInput(f"not a torrent file ({exc})") from None
    if not isinstance(info, dict):
        raise InvalidInput("not a torrent file (info is not a dictionary)")
    raw_name = info.get(b"name.utf-8") or info.get(b"name")
    name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else None
    if info.get(b"meta version") == 2 and b"pieces" not in info:
        return Torrent(InfoHash(hashlib.sha256(data[start:end]).digest()[:20]), name, 2)
    return Torrent(InfoHash(hashlib.sha1(data[start:end]).digest()), name, 1)


def parse_target(text: str) -> Torrent:
    """An infohash (40 hex digits or 32 base32 characters) or a magnet link."""
    text = text.strip()
    if text.lower().startswith("magnet:"):
        return parse_magnet(text)
    info_hash = _v1_infohash(text)
    if info_hash is None:
        raise InvalidInput(f"{text[:60]!r} is not an infohash (40 hex digits or 32 base32 "
                           f"characters), a magnet link or a .torrent file")
    return Torrent(info_hash)


def parse_infohash(text: str) -> InfoHash:
    """An infohash from 40 hex digits, 32 base32 characters or a magnet link (`xt=urn:btih:`,
    or `xt=urn:btmh:` for a v2 swarm, looked up by the first 20 bytes of its hash)."""
    return parse_target(text).info_hash
