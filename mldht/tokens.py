"""Write tokens for announce_peer (BEP 5): bound to the requester's IP and the infohash.

A token is a hash of a secret, the IP and the infohash. The secret is replaced every
`rotation` seconds and the previous one is still accepted, so a token lives between one
and two rotation periods (5 to 10 minutes by default).
"""

from __future__ import annotations

import hashlib
import hmac
import random as _random

ROTATION_INTERVAL = 5 * 60.0
TOKEN_LENGTH = 8


class TokenManager:
    """Issues and checks tokens; time is passed in, randomness comes from `rng`."""

    def __init__(self, now: float, rng: _random.Random | None = None,
                 rotation: float = ROTATION_INTERVAL) -> None:
        self._rng = rng or _random.SystemRandom()
        self.rotation = rotation
        self._current = self._new_secret()
        self._previous = self._new_secret()
        self._rotated_at = now

    def _new_secret(self) -> bytes:
        return self._rng.getrandbits(128).to_bytes(16, "big")

    def _advance(self, now: float) -> None:
        # Rotations follow a fixed schedule (every `rotation` seconds from the start), not the
        # time of the call that notices them: otherwise a late call would delay the next
        # rotation and let tokens live up to three periods instead of two.
        periods = int((now - self._rotated_at) // self.rotation)
        if periods < 1:
            return
        if periods >= 2:
            self._previous = self._new_secret()  # both secrets have aged out
        else:
            self._previous = self._current
        self._current = self._new_secret()
        self._rotated_at += periods * self.rotation

    @staticmethod
    def _token(secret: bytes, ip: str, info_hash: bytes) -> bytes:
        return hashlib.sha1(secret + ip.encode() + info_hash).digest()[:TOKEN_LENGTH]

    def issue(self, ip: str, info_hash: bytes, now: float) -> bytes:
        """The token to hand to `ip` in a get_peers reply for `info_hash`."""
        self._advance(now)
        return self._token(self._current, ip, info_hash)

    def is_valid(self, token: bytes, ip: str, info_hash: bytes, now: float) -> bool:
        """Whether `token` was issued to `ip` for `info_hash` under the current or previous secret."""
        self._advance(now)
        return any(hmac.compare_digest(token, self._token(secret, ip, info_hash))
                   for secret in (self._current, self._previous))
