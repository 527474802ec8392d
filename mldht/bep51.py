"""BEP 51 infohash sampling: the sample a node serves, and reading one from a reply.

Sans-I/O. A node storing no more infohashes than fit in a reply returns them all with an
interval of 0; above that it returns a random subset it keeps for `interval` seconds, so
that an indexer gains nothing by asking again sooner (libtorrent's defaults: 20 samples,
6 hours).
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Callable

from .compact import NodeInfo
from .ids import ID_LENGTH, InfoHash
from .krpc import Response

MAX_SAMPLES = 20
SAMPLE_INTERVAL = 6 * 3600
"""Seconds a precomputed sample is kept; BEP 51 allows 0 to 21600."""


class InvalidSample(ValueError):
    """A reply that claims to be a BEP 51 sample but is not one."""


@dataclass(slots=True)
class Sample:
    """What a node answered to `sample_infohashes`."""

    samples: list[InfoHash]
    num: int
    """How many infohashes the node stores (may exceed len(samples))."""
    interval: int
    """Seconds before asking this node again gains anything."""
    nodes: list[NodeInfo] = field(default_factory=list)
    nodes6: list[NodeInfo] = field(default_factory=list)

    @classmethod
    def from_response(cls, response: Response) -> "Sample":
        extra = response.extra
        samples = extra.get(b"samples")
        num, interval = extra.get(b"num"), extra.get(b"interval")
        if not isinstance(samples, bytes) or len(samples) % ID_LENGTH:
            raise InvalidSample("'samples' must be a string of 20-byte infohashes")
        if not isinstance(num, int) or num < 0:
            raise InvalidSample("'num' must be a non-negative integer")
        if not isinstance(interval, int) or not 0 <= interval <= 21600:
            raise InvalidSample("'interval' must be an integer from 0 to 21600")
        hashes = [InfoHash(samples[i:i + ID_LENGTH]) for i in range(0, len(samples), ID_LENGTH)]
        return cls(hashes, num, interval, response.nodes or [], response.nodes6 or [])


class Sampler:
    """The server side: which sample to give, recomputed at most every `interval` seconds."""

    def __init__(self, stored: Callable[[], list[bytes]], rng: _random.Random,
                 max_samples: int = MAX_SAMPLES, interval: int = SAMPLE_INTERVAL) -> None:
        self.stored = stored
        self.rng = rng
        self.max_samples = max_samples
        self.interval = interval
        self._sample: list[bytes] = []
        self._computed: float | None = None

    def sample(self, now: float) -> tuple[list[bytes], int, int]:
        """(samples, num, interval) for a reply at time `now`."""
        stored = self.stored()
        if len(stored) <= self.max_samples:
            return list(stored), len(stored), 0
        if self._computed is None or now - self._computed >= self.interval:
            self._sample = self.rng.sample(stored, self.max_samples)
            self._computed = now
        left = int(self.interval - (now - self._computed))
        return list(self._sample), len(stored), max(0, left)
