"""Tests of mldht.tokens: announce_peer write tokens bound to IP and infohash, with rotation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mldht.tokens import ROTATION_INTERVAL, TOKEN_LENGTH, TokenManager

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)

IP = "192.0.2.7"
OTHER_IP = "192.0.2.8"
HASH = bytes(range(20))
OTHER_HASH = bytes(range(1, 21))
R = ROTATION_INTERVAL


def manager(now: float = 0.0, seed: int = 1) -> TokenManager:
    return TokenManager(now, random.Random(seed))


def test_rotation_interval_is_five_minutes():
    assert R == 300.0


def test_token_is_short_bytes_and_deterministic_with_a_seed():
    token = manager().issue(IP, HASH, 0.0)
    assert isinstance(token, bytes) and len(token) == TOKEN_LENGTH
    assert manager().issue(IP, HASH, 0.0) == token
    assert manager(seed=2).issue(IP, HASH, 0.0) != token


def test_valid_for_same_ip_and_infohash_only():
    tokens = manager()
    token = tokens.issue(IP, HASH, 10.0)
    assert tokens.is_valid(token, IP, HASH, 11.0)
    assert not tokens.is_valid(token, OTHER_IP, HASH, 11.0)
    assert not tokens.is_valid(token, IP, OTHER_HASH, 11.0)
    assert not tokens.is_valid(token, OTHER_IP, OTHER_HASH, 11.0)
    assert tokens.issue(OTHER_IP, HASH, 11.0) != token
    assert tokens.issue(IP, OTHER_HASH, 11.0) != token
    # Issuing more tokens does not invalidate earlier ones.
    assert tokens.is_valid(token, IP, HASH, 12.0)


@pytest.mark.parametrize("garbage", [b"", b"x", b"\x00" * TOKEN_LENGTH, b"\xff" * 20, b"aoeusnth"])
def test_garbage_is_invalid(garbage):
    tokens = manager()
    tokens.issue(IP, HASH, 0.0)
    assert not tokens.is_valid(garbage, IP, HASH, 1.0)


def test_prefix_or_extension_of_a_token_is_invalid():
    tokens = manager()
    token = tokens.issue(IP, HASH, 0.0)
    assert not tokens.is_valid(token[:-1], IP, HASH, 1.0)
    assert not tokens.is_valid(token + b"\x00", IP, HASH, 1.0)
    assert not tokens.is_valid(bytes([token[0] ^ 1]) + token[1:], IP, HASH, 1.0)


def test_ipv6_requesters():
    tokens = manager()
    token = tokens.issue("2001:db8::1", HASH, 0.0)
    assert tokens.is_valid(token, "2001:db8::1", HASH, 0.0)
    assert not tokens.is_valid(token, "2001:db8::2", HASH, 0.0)


def test_another_manager_does_not_accept_foreign_tokens():
    token = manager(seed=1).issue(IP, HASH, 0.0)
    assert not manager(seed=2).is_valid(token, IP, HASH, 0.0)


def test_valid_after_one_rotation_invalid_after_two():
    tokens = manager()
    token = tokens.issue(IP, HASH, 0.0)
    assert tokens.is_valid(token, IP, HASH, R - 1)
    assert tokens.is_valid(token, IP, HASH, R + 1)       # one rotation: previous secret
    assert tokens.issue(IP, HASH, R + 2) != token       # new tokens use the new secret
    assert tokens.is_valid(token, IP, HASH, 2 * R - 1)
    assert not tokens.is_valid(token, IP, HASH, 2 * R + 1)
    assert not tokens.is_valid(token, IP, HASH, 3 * R)


@pytest.mark.parametrize("later", [2 * R, 2 * R + 1, 10 * R, 1e9])
def test_invalid_after_ten_minutes_without_intermediate_calls(later):
    tokens = manager()
    token = tokens.issue(IP, HASH, 0.0)
    assert not tokens.is_valid(token, IP, HASH, later)


def test_token_issued_just_before_a_rotation_lives_at_least_one_interval():
    tokens = manager()
    token = tokens.issue(IP, HASH, R - 1)
    assert tokens.is_valid(token, IP, HASH, R + 1)
    assert tokens.is_valid(token, IP, HASH, 2 * R - 2)


def test_no_more_than_ten_minutes_even_with_a_late_rotation():
    # A call late in the first period must not push the rotation schedule back.
    tokens = manager()
    token = tokens.issue(IP, HASH, 0.0)
    assert tokens.is_valid(token, IP, HASH, 1.9 * R)
    assert not tokens.is_valid(token, IP, HASH, 2.1 * R)


def test_custom_rotation():
    tokens = TokenManager(100.0, random.Random(3), rotation=10.0)
    token = tokens.issue(IP, HASH, 100.0)
    assert tokens.is_valid(token, IP, HASH, 115.0)
    assert not tokens.is_valid(token, IP, HASH, 121.0)


@given(st.floats(min_value=0, max_value=1e6),
       st.lists(st.tuples(st.floats(min_value=0, max_value=2.5 * R), st.booleans()),
                min_size=1, max_size=12),
       st.integers(min_value=0, max_value=2**32))
@SETTINGS
def test_token_lifetime_is_between_one_and_two_rotations(start, steps, seed):
    """Whatever the pattern of calls, a token is accepted while it is younger than one
    rotation period and refused once it is two periods old (BEP 5: up to 10 minutes)."""
    tokens = TokenManager(start, random.Random(seed))
    now = start
    issued: list[tuple[float, bytes]] = []
    for gap, issue in steps:
        now += gap
        if issue:
            issued.append((now, tokens.issue(IP, HASH, now)))
        for when, token in issued:
            age = now - when
            valid = tokens.is_valid(token, IP, HASH, now)
            if age < R:
                assert valid, f"token {age:.1f} s old refused"
            elif age >= 2 * R:
                assert not valid, f"token {age:.1f} s old accepted"
            assert not tokens.is_valid(token, OTHER_IP, HASH, now)
