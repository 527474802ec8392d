"""Tests of mldht.ids: identifiers, the XOR metric and parsing of user-given infohashes."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mldht.errors import InvalidInput, MldhtError
from mldht.ids import (
    ID_BITS, ID_LENGTH, InfoHash, NodeId, common_prefix_bits, distance, random_id_in_bucket,
)
from mldht.magnet import parse_infohash

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)
ids = st.binary(min_size=ID_LENGTH, max_size=ID_LENGTH)

SAMPLE = bytes(range(20))
SAMPLE_HEX = SAMPLE.hex()


# --- construction and validation -----------------------------------------------------------


def test_node_id_accepts_20_bytes_and_is_bytes():
    node_id = NodeId(SAMPLE)
    assert node_id == SAMPLE
    assert isinstance(node_id, bytes)
    assert len(node_id) == 20
    assert NodeId(bytearray(SAMPLE)) == SAMPLE
    assert NodeId(memoryview(SAMPLE)) == SAMPLE


@pytest.mark.parametrize("length", [0, 1, 19, 21, 40])
def test_node_id_wrong_length_is_invalid_input(length):
    with pytest.raises(InvalidInput) as info:
        NodeId(b"\x01" * length)
    # InvalidInput is both an MldhtError and a ValueError.
    assert isinstance(info.value, MldhtError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidInput):
        InfoHash(b"\x01" * length)


@pytest.mark.parametrize("value", ["a" * 20, 12345, None, [0] * 20])
def test_node_id_rejects_non_bytes(value):
    with pytest.raises(TypeError):
        NodeId(value)


def test_node_id_identity_and_subclass_conversion():
    node_id = NodeId(SAMPLE)
    assert NodeId(node_id) is node_id
    info_hash = InfoHash(node_id)
    assert type(info_hash) is InfoHash
    assert info_hash == node_id
    back = NodeId(info_hash)
    assert type(back) is NodeId
    assert repr(node_id) == f"NodeId({SAMPLE_HEX})"
    assert repr(info_hash) == f"InfoHash({SAMPLE_HEX})"


def test_from_hex():
    assert NodeId.from_hex(SAMPLE_HEX) == SAMPLE
    assert NodeId.from_hex(SAMPLE_HEX.upper()) == SAMPLE
    assert NodeId.from_hex(f"  {SAMPLE_HEX}\n") == SAMPLE
    assert type(InfoHash.from_hex(SAMPLE_HEX)) is InfoHash


@pytest.mark.parametrize("text", [
    "",
    "00" * 19,                      # 38 digits
    "00" * 21,                      # 42 digits
    "0" * 39 + "g",                 # not hex
    "0x" + "00" * 19,               # prefix
    "00" * 10 + " " + "00" * 10,    # inner whitespace
    "\u0661" * 40,                  # non-ASCII digits
])
def test_from_hex_errors(text):
    with pytest.raises(InvalidInput):
        NodeId.from_hex(text)


@given(ids)
@SETTINGS
def test_from_hex_round_trip(raw):
    assert NodeId.from_hex(raw.hex()) == raw
    assert NodeId.from_hex(raw.hex().upper()) == raw


def test_random_is_deterministic_with_seeded_rng():
    a = NodeId.random(random.Random(7))
    b = NodeId.random(random.Random(7))
    c = NodeId.random(random.Random(8))
    assert a == b != c
    assert len(a) == 20 and type(a) is NodeId
    assert len(NodeId.random()) == 20  # OS randomness


# --- parse_infohash --------------------------------------------------------------------------


def test_parse_infohash_hex():
    parsed = parse_infohash(SAMPLE_HEX)
    assert parsed == SAMPLE
    assert type(parsed) is InfoHash
    assert parse_infohash(" " + SAMPLE_HEX.upper() + " ") == SAMPLE


def test_parse_infohash_base32():
    text = base64.b32encode(SAMPLE).decode()
    assert len(text) == 32
    assert parse_infohash(text) == SAMPLE
    assert parse_infohash(text.lower()) == SAMPLE


@pytest.mark.parametrize("template", [
    "magnet:?xt=urn:btih:{}",
    "magnet:?xt=urn:btih:{}&dn=Some+Name&tr=udp%3A%2F%2Ftracker.example%3A80",
    "magnet:?dn=name&xt=urn:btih:{}",
    "MAGNET:?xt=URN:BTIH:{}",
    "magnet:?xt=urn:sha1:AAAA&xt=urn:btih:{}",
    "  magnet:?xt=urn:btih:{}  ",
])
@pytest.mark.parametrize("encode", [bytes.hex, lambda raw: base64.b32encode(raw).decode()])
def test_parse_infohash_magnet(template, encode):
    assert parse_infohash(template.format(encode(SAMPLE))) == SAMPLE


@pytest.mark.parametrize("text", [
    "",
    "hello",
    SAMPLE_HEX[:-1],
    SAMPLE_HEX + "0",
    "1" * 32,                                   # base32 has no 0/1/8/9
    base64.b32encode(SAMPLE).decode()[:-1],
    "magnet:?dn=no+hash",
    "magnet:?xt=urn:btih:",
    "magnet:?xt=urn:btih:1234",
    "magnet:?xt=urn:btmh:1114" + "00" * 20,    # a SHA-1 multihash: not v2
    "magnet:",
    "urn:btih:" + SAMPLE_HEX,                   # not a magnet link
])
def test_parse_infohash_bad_input(text):
    with pytest.raises(InvalidInput):
        parse_infohash(text)


@given(ids)
@SETTINGS
def test_parse_infohash_round_trips(raw):
    assert parse_infohash(raw.hex()) == raw
    assert parse_infohash(base64.b32encode(raw).decode()) == raw
    assert parse_infohash(f"magnet:?xt=urn:btih:{raw.hex()}&dn=x") == raw


@given(st.text(max_size=80))
@SETTINGS
def test_parse_infohash_only_raises_invalid_input(text):
    try:
        result = parse_infohash(text)
    except InvalidInput:
        return
    assert type(result) is InfoHash and len(result) == 20


# --- the XOR metric --------------------------------------------------------------------------


def test_distance_examples():
    zero = bytes(20)
    assert distance(zero, zero) == 0
    assert distance(zero, b"\x00" * 19 + b"\x01") == 1
    assert distance(zero, b"\x80" + b"\x00" * 19) == 1 << 159
    assert distance(b"\xff" * 20, zero) == (1 << 160) - 1
    assert NodeId(zero).distance(b"\x00" * 19 + b"\x03") == 3


@given(ids, ids, ids)
@SETTINGS
def test_xor_metric_properties(a, b, c):
    assert distance(a, a) == 0
    assert distance(a, b) == distance(b, a)
    assert NodeId(a).distance(b) == distance(a, b)
    if a != b:
        assert distance(a, b) > 0
    else:
        assert distance(a, b) == 0
    # Triangle inequality, and the stronger XOR identity behind it.
    assert distance(a, c) <= distance(a, b) + distance(b, c)
    assert distance(a, b) ^ distance(b, c) == distance(a, c)
    assert 0 <= distance(a, b) < 1 << ID_BITS


@given(ids, ids, ids)
@SETTINGS
def test_xor_unidirectional(a, b, c):
    # For a given point and distance there is exactly one other point.
    if b != c:
        assert distance(a, b) != distance(a, c)


# --- prefixes and bucket ids -----------------------------------------------------------------


def test_common_prefix_bits_examples():
    zero = bytes(20)
    assert common_prefix_bits(zero, zero) == 160
    assert common_prefix_bits(zero, b"\x80" + bytes(19)) == 0
    assert common_prefix_bits(zero, b"\x40" + bytes(19)) == 1
    assert common_prefix_bits(zero, b"\x01" + bytes(19)) == 7
    assert common_prefix_bits(zero, b"\x00\x80" + bytes(18)) == 8
    assert common_prefix_bits(zero, bytes(19) + b"\x01") == 159


@given(ids, ids)
@SETTINGS
def test_common_prefix_bits_matches_bit_strings(a, b):
    bits_a = format(int.from_bytes(a, "big"), "0160b")
    bits_b = format(int.from_bytes(b, "big"), "0160b")
    expected = 0
    while expected < 160 and bits_a[expected] == bits_b[expected]:
        expected += 1
    assert common_prefix_bits(a, b) == expected
    assert common_prefix_bits(b, a) == expected


@given(ids, st.integers(min_value=0, max_value=ID_BITS), st.integers(min_value=0, max_value=2**32))
@SETTINGS
def test_random_id_in_bucket_shares_exactly_the_prefix(own, prefix_bits, seed):
    result = random_id_in_bucket(own, prefix_bits, random.Random(seed))
    assert type(result) is NodeId
    assert common_prefix_bits(own, result) == prefix_bits
    if prefix_bits == ID_BITS:
        assert result == own


def test_random_id_in_bucket_is_random_below_the_prefix():
    own = bytes(20)
    rng = random.Random(1)
    results = {random_id_in_bucket(own, 3, rng) for _ in range(50)}
    assert len(results) == 50
    for result in results:
        assert result[0] >> 4 == 0b0001  # 3 shared zero bits, then the flipped bit
    # The bits below the flipped one are not all zero (they really are random).
    assert any(int.from_bytes(result, "big") & ((1 << 156) - 1) for result in results)
