"""BEP 42 node ids and the external-IP vote (mldht.bep42)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, strategies as st

from mldht.bep42 import ExternalIpVoter, crc_for, is_exempt, is_secure_id, secure_node_id
from mldht.ids import NodeId

VECTORS = [  # from BEP 42: IP, r byte, a valid node id
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401", 0x5FBFBDB2),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256", 0x5A3CE9B0),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616", 0xA5D4344A),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41", 0x1B03217B),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a", 0xE56F6972),
]


@pytest.mark.parametrize("ip, r, node_id, crc", VECTORS)
def test_bep42_vectors(ip, r, node_id, crc):
    raw = bytes.fromhex(node_id)
    assert raw[-1] == r
    assert crc_for(ip, r & 0x07) == crc
    assert is_secure_id(raw, ip)
    # One flipped bit among the first 21 breaks it; bits after them do not matter.
    for bit in (0, 7, 20):
        broken = bytearray(raw)
        broken[bit // 8] ^= 0x80 >> (bit % 8)
        assert not is_secure_id(bytes(broken), ip)
    loose = bytearray(raw)
    loose[2] ^= 0x07
    loose[10] ^= 0xFF
    assert is_secure_id(bytes(loose), ip)


public_ipv4 = st.ip_addresses(v=4).filter(lambda a: a.is_global).map(str)
public_ipv6 = st.ip_addresses(v=6).filter(lambda a: a.is_global).map(str)


@given(ip=st.one_of(public_ipv4, public_ipv6), seed=st.integers(0, 2**32))
def test_generated_ids_verify_for_their_ip(ip, seed):
    node_id = secure_node_id(ip, random.Random(seed))
    assert len(node_id) == 20 and is_secure_id(node_id, ip)


def test_an_id_for_one_ip_rarely_fits_another():
    rng = random.Random(7)
    node_id = secure_node_id("203.0.113.9", rng)
    others = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.1"
              for _ in range(500)]
    fits = sum(is_secure_id(node_id, ip) for ip in others if not is_exempt(ip))
    assert fits <= 3  # 21 bits: about one in two million by chance (masked bits collide more)


def test_exempt_local_addresses():
    any_id = bytes(20)
    for ip in ("10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.0.9",
               "127.0.0.1", "::1", "fe80::1", "fd00::5"):
        assert is_exempt(ip) and is_secure_id(any_id, ip), ip
    for ip in ("172.32.0.1", "198.18.1.1", "8.8.8.8", "2001:db8::1"):
        assert not is_exempt(ip), ip
    assert not is_secure_id(any_id, "not an ip")


def test_one_voter_never_decides():
    voter = ExternalIpVoter(min_votes=3)
    for _ in range(20):
        assert voter.vote("198.51.100.1", "203.0.113.5") is None
    # Voters of one /24 count once, however many they are.
    for host in range(2, 50):
        assert voter.vote(f"198.51.100.{host}", "203.0.113.5") is None
    assert voter.external_ip is None


def test_agreement_of_three_subnets_decides_and_a_new_majority_moves_it():
    voter = ExternalIpVoter(min_votes=3)
    assert voter.vote("198.51.100.1", "203.0.113.5") is None
    assert voter.vote("198.51.101.1", "203.0.113.5") is None
    assert voter.vote("198.51.102.1", "203.0.113.5") == "203.0.113.5"
    assert voter.vote("198.51.103.1", "203.0.113.5") is None  # no change, no news
    # The address changes: the new one must lead, not merely reach three votes.
    for subnet in range(110, 113):
        assert voter.vote(f"198.51.{subnet}.1", "203.0.113.77") is None
    assert voter.external_ip == "203.0.113.5"
    # A voter that changes its mind moves its one vote: 4 against 3 now leads.
    assert voter.vote("198.51.100.1", "203.0.113.77") == "203.0.113.77"
    assert voter.tally() == {"203.0.113.77": 4, "203.0.113.5": 3}


def test_voter_memory_is_bounded_and_ignores_nonsense():
    voter = ExternalIpVoter(min_votes=2, max_voters=10)
    for i in range(100):
        voter.vote(str(ipaddress.IPv4Address(0x0A000000 + (i << 8))), "203.0.113.5")
    assert sum(voter.tally().values()) == 10
    assert voter.vote("not-an-ip", "203.0.113.5") is None
    assert voter.vote("198.51.100.1", "0.0.0.0") is None
    assert voter.vote("198.51.100.1", "224.0.0.1") is None


def _vote_through_pings(engine, voters, reported_ip: str, now: float) -> None:
    """Each voter answers one of our pings with `ip` = reported_ip (BEP 42's key)."""
    from mldht.compact import pack_address
    from mldht.krpc import Response, decode_message, encode_message

    for voter in voters:
        engine.start_ping(voter, now)
        for data, address in engine.datagrams_to_send(now):
            query = decode_message(data)
            reply = Response(transaction_id=query.transaction_id, sender_id=NodeId.random(),
                             requester=(reported_ip, 6881))
            engine.receive_datagram(encode_message(reply), address, now)


def test_node_moves_to_a_secure_id_unless_its_id_was_given():
    from mldht.engine import Engine, ExternalIpChanged, NodeIdChanged

    voters = [("198.51.100.1", 1), ("198.51.101.1", 1), ("198.51.102.1", 1)]
    engine = Engine(100.0)
    engine.set_address(("127.0.0.1", 6881))
    engine.observing = True
    before = engine.node_id
    _vote_through_pings(engine, voters, "203.0.113.5", 100.0)
    family = engine.families[0]
    assert engine.external_ip() == "203.0.113.5"
    assert engine.node_id != before and is_secure_id(engine.node_id, "203.0.113.5")
    assert family.table.own_id == engine.node_id == family.handler.own_id
    assert family.handler.table is family.table
    assert engine.stats.id_changes == 1
    events = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    assert [type(e) for e in events if isinstance(e, (ExternalIpChanged, NodeIdChanged))] == [
        ExternalIpChanged, NodeIdChanged]
    fixed = NodeId(b"\x01" * 20)
    engine = Engine(100.0, node_ids={"ipv4": fixed})
    engine.set_address(("127.0.0.1", 6881))
    _vote_through_pings(engine, voters, "203.0.113.5", 100.0)
    assert engine.external_ip() == "203.0.113.5" and engine.node_id == fixed
