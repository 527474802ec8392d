"""How a sweep paces its visits and chooses its queries, learned from what it sees: when a
silent node gives its slot away (`StallTimer`), and who is asked for BEP 51 samples
(`SamplePolicy`)."""

from __future__ import annotations

from array import array


class StallTimer:
    """When a visit gives its slot away: the8472's adaptive stall timeout, max(p10 + 100 ms,
    p90) of the round trips seen lately, at least `floor`, at most `ceiling`; 1 s
    (libtorrent's short timeout) until 32 round trips are known."""

    SIZE = 512
    EVERY = 64

    def __init__(self, floor: float = 0.25, ceiling: float = 5.0,
                 fixed: float | None = None) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.fixed = fixed
        self._seen = array("f")
        self._next = 0
        self._count = 0
        self._value = min(1.0, ceiling)

    def observe(self, rtt: float | None) -> None:
        if rtt is None:
            return
        if len(self._seen) < self.SIZE:
            self._seen.append(rtt)
        else:
            self._seen[self._next] = rtt
            self._next = (self._next + 1) % self.SIZE
        self._count += 1
        if self._count >= 32 and self._count % self.EVERY == 0:
            ordered = sorted(self._seen)
            p10 = ordered[len(ordered) // 10]
            p90 = ordered[len(ordered) * 9 // 10]
            self._value = min(self.ceiling, max(self.floor, p10 + 0.1, p90))

    @property
    def value(self) -> float:
        return self.fixed if self.fixed is not None else self._value


class SamplePolicy:
    """Who is asked `sample_infohashes`, learned during the crawl (shared by its sweeps):
    per client version (`v`), how often it answered; a version is asked while it has been
    tried fewer than `TRIAL` times or answered at least `WORTH` of them. `first` (asking
    it before find_node) turns on where most answering nodes answer it."""

    TRIAL = 4
    WORTH = 0.2
    MAX_VERSIONS = 4096

    def __init__(self) -> None:
        self.by_version: dict[bytes | None, list[int]] = {}
        self.first = False
        self.answering = 0
        self.supporting = 0

    def _entry(self, version: bytes | None) -> list[int]:
        entry = self.by_version.get(version)
        if entry is None:
            if len(self.by_version) >= self.MAX_VERSIONS:
                version = b"other"
                entry = self.by_version.get(version)
            if entry is None:
                entry = self.by_version[version] = [0, 0]
        return entry

    def worth_asking(self, version: bytes | None) -> bool:
        tries, answers = self._entry(version)
        return tries < self.TRIAL or answers >= self.WORTH * tries

    def record(self, version: bytes | None, answered: bool) -> None:
        entry = self._entry(version)
        entry[0] += 1
        entry[1] += answered

    def answered_visit(self, supports: bool) -> None:
        """One more node answered; `supports`: it answered sample_infohashes."""
        self.answering += 1
        self.supporting += supports
        if self.answering >= 200 and self.answering % 100 == 0:
            share = self.supporting / self.answering
            self.first = share >= 0.7 if not self.first else share >= 0.5


__all__ = ["SamplePolicy", "StallTimer"]
