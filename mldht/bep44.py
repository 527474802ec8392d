"""BEP 44: arbitrary data in the DHT, as immutable and mutable items (sans-I/O).

An immutable item is stored under the SHA-1 of its bencoded value. A mutable item is stored
under SHA-1(public key + salt) and carries a sequence number and an ed25519 signature over
`[4:salt<len>:<salt>]3:seqi<seq>e1:v<bencoded value>`. `ItemStore` is the bounded, expiring
store a node serves `get` and `put` from; `KeyPair` signs mutable items.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# PyCA's ed25519 (OpenSSL underneath): signing is not something to write again.
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .ids import distance
from .bencoding import encode_bencode

MAX_VALUE_BYTES = 1000
"""Largest bencoded `v` stored or sent (the BEP lets nodes refuse more)."""
MAX_SALT_BYTES = 64
MAX_SEQ = 0x7FFF_FFFF_FFFF_FFFF
ITEM_LIFETIME = 2 * 60 * 60.0
"""Items not put again within this many seconds expire (the BEP's 2 hours)."""
MAX_ITEMS = 1000
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

# BEP 44 error codes.
VALUE_TOO_BIG = 205
INVALID_SIGNATURE = 206
SALT_TOO_BIG = 207
CAS_MISMATCH = 301
SEQ_TOO_LOW = 302

def bencode(value: Any) -> bytes:
    """Canonical bencode of an item value (str is taken as UTF-8 bytes)."""
    return encode_bencode(value.encode() if isinstance(value, str) else value)


def immutable_target(encoded_value: bytes) -> bytes:
    """Where an immutable item lives: SHA-1 of its bencoded value."""
    return hashlib.sha1(encoded_value).digest()


def mutable_target(public_key: bytes, salt: bytes = b"") -> bytes:
    """Where a mutable item lives: SHA-1 of the public key followed by the salt."""
    return hashlib.sha1(public_key + salt).digest()


def signable(encoded_value: bytes, seq: int, salt: bytes = b"") -> bytes:
    """The exact bytes a mutable item's signature covers (BEP 44, "Signature Verification")."""
    prefix = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return prefix + b"3:seqi%de1:v" % seq + encoded_value


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class KeyPair:
    """An ed25519 key pair for mutable items, made from (and saved as) its 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an ed25519 seed is 32 bytes")
        self.seed = seed
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = self._private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> "KeyPair":
        return cls(os.urandom(32))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> tuple["KeyPair", bool]:
        """The key pair whose seed `path` holds (64 hex digits); a new one, written there
        with mode 0600, when the file is missing. Returns (key pair, created)."""
        file = Path(path)
        try:
            text = file.read_text().strip()
        except FileNotFoundError:
            keys = cls.generate()
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(keys.seed.hex() + "\n")
            return keys, True
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise ValueError(f"{path}: expected an ed25519 seed as 64 hex digits")
        return cls(seed), False

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def expanded_secret(self) -> bytes:
        """The 64-byte secret key in the ref10/libtorrent layout (clamped SHA-512 of the
        seed): what `libtorrent.session.dht_put_mutable_item` takes."""
        digest = bytearray(hashlib.sha512(self.seed).digest())
        digest[0] &= 248
        digest[31] &= 127
        digest[31] |= 64
        return bytes(digest)


@dataclass(frozen=True, slots=True)
class Item:
    """One BEP 44 item: immutable when `public_key` is None."""

    value: Any
    encoded: bytes
    """The bencoded value, exactly as hashed and signed."""
    public_key: bytes | None = None
    salt: bytes = b""
    seq: int = 0
    signature: bytes | None = None

    @classmethod
    def immutable(cls, value: Any) -> "Item":
        value = value.encode() if isinstance(value, str) else value
        return cls(value=value, encoded=bencode(value))

    @classmethod
    def mutable(cls, keys: KeyPair, value: Any, seq: int, salt: bytes = b"") -> "Item":
        """A mutable item signed with `keys`."""
        value = value.encode() if isinstance(value, str) else value
        encoded = bencode(value)
        return cls(value=value, encoded=encoded, public_key=keys.public_key, salt=salt, seq=seq,
                   signature=keys.sign(signable(encoded, seq, salt)))

    @property
    def is_mutable(self) -> bool:
        return self.public_key is not None

    @property
    def target(self) -> bytes:
        if self.public_key is None:
            return immutable_target(self.encoded)
        return mutable_target(self.public_key, self.salt)

    def size_problem(self) -> tuple[int, str] | None:
        """A value or salt too big to store, as (KRPC error code, message): checked first,
        since it needs no token and no signature check."""
        if len(self.encoded) > MAX_VALUE_BYTES:
            return VALUE_TOO_BIG, f"message (v field) too big: {len(self.encoded)} bytes"
        if len(self.salt) > MAX_SALT_BYTES:
            return SALT_TOO_BIG, f"salt (salt field) too big: {len(self.salt)} bytes"
        return None

    def problem(self) -> tuple[int, str] | None:
        """Why a node must refuse to store this item, as (KRPC error code, message)."""
        too_big = self.size_problem()
        if too_big is not None or self.public_key is None:
            return too_big
        if not 0 <= self.seq <= MAX_SEQ:
            return 203, "seq must be from 0 to 2^63-1"
        if self.signature is None or not verify_signature(
                self.public_key, self.signature, signable(self.encoded, self.seq, self.salt)):
            return INVALID_SIGNATURE, "invalid signature"
        return None

    def is_valid_for(self, target: bytes) -> bool:
        """Whether a `get` reply's item is genuine for `target` (hash and signature)."""
        return self.target == target and self.problem() is None


class StoreRejected(Exception):
    """A put the store refused; `code` is the KRPC error to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Stored:
    item: Item
    stored_at: float


class ItemStore:
    """The items a node serves: at most `max_items`, each forgotten `lifetime` seconds after
    its last put. When full, the item farthest from our node id goes (the newcomer included):
    the nodes nearest to an item are the ones that must keep it. The `now` passed to its
    methods must not go backwards (the node passes its loop's clock)."""

    def __init__(self, max_items: int = MAX_ITEMS, lifetime: float = ITEM_LIFETIME) -> None:
        self.max_items = max_items
        self.lifetime = lifetime
        self._items: OrderedDict[bytes, _Stored] = OrderedDict()
        # Farthest first, so that a full store finds what to drop in O(log n): entries
        # of items gone since are skipped when popped, and the heap is rebuilt when they
        # outnumber the live ones or when our own id changes.
        self._by_distance: list[tuple[int, bytes]] = []
        self._heap_owner: bytes | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, target: bytes) -> bool:
        return target in self._items

    def get(self, target: bytes, now: float) -> Item | None:
        stored = self._items.get(target)
        if stored is None:
            return None
        if now - stored.stored_at >= self.lifetime:
            del self._items[target]
            return None
        return stored.item

    def put(self, item: Item, now: float, own_id: bytes, cas: int | None = None) -> None:
        """Store `item` (already checked with `Item.problem`); raises `StoreRejected` with
        301 for a `cas` that is not the stored seq, 302 for a seq not above the stored one."""
        target = item.target
        current = self.get(target, now)
        if current is not None and item.is_mutable:
            if cas is not None and cas != current.seq:
                raise StoreRejected(CAS_MISMATCH, f"CAS mismatch: stored seq is {current.seq}")
            if item.seq < current.seq or (item.seq == current.seq
                                          and item.encoded != current.encoded):
                raise StoreRejected(SEQ_TOO_LOW, f"sequence number less than current "
                                                 f"({current.seq})")
        if current is None and len(self._items) >= self.max_items:
            self.expire(now)
            if not self._items:
                return  # max_items 0: this node keeps no items
            if len(self._items) >= self.max_items:
                farthest = self._farthest(own_id)
                if distance(farthest, own_id) <= distance(target, own_id):
                    return  # the newcomer is the farthest: not ours to keep
                heapq.heappop(self._by_distance)
                del self._items[farthest]
        # The same item put again (same seq and value) only renews its lifetime.
        self._items[target] = _Stored(item, now)
        self._items.move_to_end(target)
        if current is None:
            self._remember_distance(target, own_id)

    def _remember_distance(self, target: bytes, own_id: bytes) -> None:
        if own_id != self._heap_owner or len(self._by_distance) > 2 * len(self._items) + 16:
            self._rebuild_heap(own_id)  # the new target is among the items already
        else:
            heapq.heappush(self._by_distance, (-distance(target, own_id), target))

    def _rebuild_heap(self, own_id: bytes) -> None:
        self._heap_owner = own_id
        self._by_distance = [(-distance(key, own_id), key) for key in self._items]
        heapq.heapify(self._by_distance)

    def _farthest(self, own_id: bytes) -> bytes:
        """The stored target farthest from `own_id`, left at the top of the heap."""
        if own_id != self._heap_owner:
            self._rebuild_heap(own_id)
        heap = self._by_distance
        while heap[0][1] not in self._items:
            heapq.heappop(heap)
        return heap[0][1]

    def expire(self, now: float) -> int:
        """Forget items not put again within `lifetime`; returns how many went."""
        # Items are kept in the order of their last put, so the expired ones come first.
        expired = 0
        while self._items:
            key, stored = next(iter(self._items.items()))
            if now - stored.stored_at < self.lifetime:
                break
            del self._items[key]
            expired += 1
        return expired

    def targets(self) -> list[bytes]:
        return list(self._items)
