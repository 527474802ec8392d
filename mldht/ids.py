"""160-bit identifiers: node ids and infohashes, the XOR metric, and parsing of user input."""

from __future__ import annotations

import random as _random
import re

from .errors import InvalidInput

ID_LENGTH = 20
ID_BITS = ID_LENGTH * 8


class NodeId(bytes):
    """A 20-byte identifier in the DHT keyspace (node ids, infohashes, lookup targets)."""

    __slots__ = ()

    def __new__(cls, value: bytes) -> "NodeId":
        if isinstance(value, NodeId) and type(value) is cls:
            return value
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{cls.__name__} needs bytes, not {type(value).__name__}")
        if len(value) != ID_LENGTH:
            raise InvalidInput(f"{cls.__name__} must be {ID_LENGTH} bytes, got {len(value)}")
        return super().__new__(cls, value)

    @classmethod
    def from_hex(cls, text: str) -> "NodeId":
        """Parse 40 hexadecimal digits."""
        text = text.strip()
        if not re.fullmatch(r"[0-9a-fA-F]{40}", text):
            raise InvalidInput(f"{text!r} is not 40 hexadecimal digits")
        return cls(bytes.fromhex(text))

    @classmethod
    def random(cls, rng: _random.Random | None = None) -> "NodeId":
        """A uniformly random id (from `rng` when given, else from the OS)."""
        if rng is None:
            rng = _random.SystemRandom()
        return cls(rng.getrandbits(ID_BITS).to_bytes(ID_LENGTH, "big"))

    def distance(self, other: bytes) -> int:
        """The XOR distance to `other`, as an integer."""
        return int.from_bytes(self, "big") ^ int.from_bytes(other, "big")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()})"


class InfoHash(NodeId):
    """The SHA-1 infohash of a torrent (BEP 3), a key in the DHT keyspace."""

    __slots__ = ()


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two 20-byte ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def common_prefix_bits(a: bytes, b: bytes) -> int:
    """How many leading bits `a` and `b` share (160 when they are equal)."""
    return ID_BITS - distance(a, b).bit_length()


def random_id_in_bucket(own: bytes, prefix_bits: int, rng: _random.Random) -> NodeId:
    """A random id that shares exactly `prefix_bits` leading bits with `own`.

    With `prefix_bits` = 160 the id is `own` itself.
    """
    if prefix_bits >= ID_BITS:
        return NodeId(own)
    own_int = int.from_bytes(own, "big")
    flip = 1 << (ID_BITS - 1 - prefix_bits)
    low_mask = flip - 1
    value = (own_int ^ flip) & ~low_mask | (rng.getrandbits(ID_BITS) & low_mask)
    return NodeId(value.to_bytes(ID_LENGTH, "big"))


def random_id_with_prefix(prefix: bytes | int, bits: int, rng: _random.Random | None = None) -> NodeId:
    """A random id whose first `bits` bits are those of `prefix` (an id-length bytes value
    or an integer holding just the `bits` leading bits): keyspace partitioning, e.g.
    crawler `I` of `N` walking ids with prefix I. `bits` from 0 (any id) to 160."""
    if not 0 <= bits <= ID_BITS:
        raise InvalidInput(f"a prefix is 0 to {ID_BITS} bits, not {bits}")
    if isinstance(prefix, (bytes, bytearray)):
        value = int.from_bytes(bytes(prefix).ljust(ID_LENGTH, b"\0")[:ID_LENGTH], "big")
        high = value >> (ID_BITS - bits) if bits else 0
    else:
        if prefix < 0 or prefix >> bits:
            raise InvalidInput(f"prefix {prefix} does not fit in {bits} bits")
        high = prefix
    rng = rng or _random.SystemRandom()
    low_bits = ID_BITS - bits
    low = rng.getrandbits(low_bits) if low_bits else 0
    return NodeId(((high << low_bits) | low).to_bytes(ID_LENGTH, "big"))
