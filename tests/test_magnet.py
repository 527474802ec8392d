"""Magnet links and .torrent files (mldht.magnet): v1, v2 (BEP 52) and hybrid."""

from __future__ import annotations

import base64
import hashlib

import bencodepy
import pytest

from mldht.errors import InvalidInput
from mldht.magnet import parse_magnet, parse_target, parse_torrent

ENCODE = bencodepy.Bencode(encoding=None).encode
V1_INFO = {b"name": b"ubuntu.iso", b"length": 1000, b"piece length": 16384,
           b"pieces": b"\x01" * 20}
V2_INFO = {b"name": b"v2 only", b"meta version": 2, b"piece length": 16384,
           b"file tree": {b"a": {b"": {b"length": 10, b"pieces root": b"\x02" * 32}}}}


def test_a_v1_torrent_is_the_sha1_of_its_info_dictionary():
    data = ENCODE({b"announce": b"http://tracker.invalid/", b"info": V1_INFO})
    torrent = parse_torrent(data)
    assert torrent.info_hash == hashlib.sha1(ENCODE(V1_INFO)).digest()
    assert torrent.name == "ubuntu.iso" and torrent.version == 1


def test_a_hybrid_torrent_is_looked_up_by_its_v1_infohash():
    hybrid = {**V1_INFO, **V2_INFO, b"name": b"hybrid"}
    torrent = parse_torrent(ENCODE({b"info": hybrid}))
    assert torrent.info_hash == hashlib.sha1(ENCODE(hybrid)).digest()
    assert torrent.version == 1 and torrent.name == "hybrid"


def test_a_v2_torrent_is_its_sha256_truncated():
    torrent = parse_torrent(ENCODE({b"info": V2_INFO}))
    assert torrent.info_hash == hashlib.sha256(ENCODE(V2_INFO)).digest()[:20]
    assert torrent.version == 2


def test_the_info_bytes_are_hashed_as_the_file_holds_them():
    # Keys out of order (not canonical): a re-encoding would sort them and hash otherwise.
    raw_info = b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:" + b"\x01" * 20 + b"e"
    unsorted = b"d6:pieces20:" + b"\x01" * 20 + b"4:name1:x6:lengthi5e12:piece lengthi16384ee"
    for info in (raw_info, unsorted):
        data = b"d8:announce3:abc4:info" + info + b"e"
        assert parse_torrent(data).info_hash == hashlib.sha1(info).digest()


@pytest.mark.parametrize("data", [b"", b"not bencode", b"d3:foo3:bare", b"le",
                                  b"d4:info3:abce", b"d4:infod4:name"])
def test_what_is_not_a_torrent_is_invalid_input(data):
    with pytest.raises(InvalidInput, match="not a torrent file"):
        parse_torrent(data)


def test_magnet_links_v1_hex_base32_and_name():
    info_hash = bytes(range(20))
    hex_link = f"magnet:?xt=urn:btih:{info_hash.hex()}&dn=My+File&tr=udp://x"
    assert parse_magnet(hex_link).info_hash == info_hash
    assert parse_magnet(hex_link).name == "My File"
    b32 = base64.b32encode(info_hash).decode()
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32.lower()}").info_hash == info_hash


def test_magnet_links_v2_and_hybrid():
    digest = hashlib.sha256(b"v2").digest()
    v2 = parse_magnet(f"magnet:?xt=urn:btmh:1220{digest.hex()}&dn=two")
    assert v2.info_hash == digest[:20] and v2.version == 2 and v2.name == "two"
    v1 = bytes(range(20))
    hybrid = parse_magnet(f"magnet:?xt=urn:btmh:1220{digest.hex()}&xt=urn:btih:{v1.hex()}")
    assert hybrid.info_hash == v1 and hybrid.version == 1


@pytest.mark.parametrize("text, message", [
    ("magnet:?dn=x", "no xt"),
    ("magnet:?xt=urn:btih:123", "40 hex digits"),
    ("magnet:?xt=urn:btmh:1220abc", "SHA-256 multihash"),
    ("0123", "not an infohash"),
])
def test_bad_targets_say_what_is_wrong(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_target(text)
