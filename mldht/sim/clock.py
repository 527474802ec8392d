"""The simulator's clock: virtual time and one heap of scheduled calls.

Nothing waits: `run_until` pops the next call, moves the clock to its time and runs it, so
an hour of network life costs only the CPU its events need. Engines are driven from here
(`SimNode`), datagrams are delivered from here (`VirtualNetwork`), and the scenario's own
steps (joins, lookups, churn) are scheduled here too. Ties run in scheduling order, so a
run is a function of its seed.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable

START_TIME = 1_000_000.0
"""Where the virtual clock starts. A real monotonic clock is far from 0 too (seconds since
boot): code that treats 0.0 as "long ago" behaves as it does on a real host."""


class Scheduler:
    """Virtual time (`now`, seconds) and the calls due at given times."""

    def __init__(self, start: float = START_TIME) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._sequence = itertools.count()
        self.calls = 0
        """Calls run so far (a measure of the work a run did)."""

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` at virtual time `when` (now, if `when` has passed)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._sequence), callback, args))

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        self.call_at(self.now + delay, callback, *args)

    def run_until(self, done: Callable[[], bool] | None = None, until: float | None = None,
                  max_calls: int | None = None) -> bool:
        """Run calls in time order until `done()` is true (checked after each call), the
        clock would pass `until` (it is then set to `until`), or nothing is left. Returns
        whether `done()` became true."""
        heap = self._heap
        pop = heapq.heappop
        budget = max_calls if max_calls is not None else -1
        if done is not None and done():
            return True
        while heap:
            when = heap[0][0]
            if until is not None and when > until:
                break
            _, _, callback, args = pop(heap)
            self.now = when
            callback(*args)
            self.calls += 1
            if done is not None and done():
                return True
            budget -= 1
            if budget == 0:
                raise RuntimeError(f"the simulation did not settle within {max_calls} calls")
        if until is not None and until > self.now:
            self.now = until
        return done is not None and done()

    def advance(self, seconds: float) -> None:
        """Run everything due in the next `seconds` and leave the clock there."""
        self.run_until(until=self.now + seconds)

    def __len__(self) -> int:
        return len(self._heap)
