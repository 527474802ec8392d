"""The engine's one clock-driven structure: a heap of timers, run when the caller says the
time has come (sans-I/O: nothing here reads a clock or sleeps).

    timers.at(now + 4.0, transaction_expired, tx)
    ...
    timers.run_due(now)        # from Engine.handle_timer(now)
    timers.next_time()         # what Engine.get_timer() reports
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable


class Timer:
    """One scheduled call; `cancel()` makes it a no-op (it leaves the heap lazily)."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _nothing  # what it would have called may be freed now
        self.args = ()


def _nothing(*args: Any) -> None:
    pass


class Timers:
    """A min-heap of `Timer`s. Cancelled timers are dropped when they reach the top, and the
    heap is rebuilt when they outnumber the live ones (most transactions are answered, so
    most deadline timers end cancelled)."""

    __slots__ = ("_heap", "_sequence", "_cancelled")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Call `callback(*args, now)` once `run_due(now)` is given a time >= `when`."""
        timer = Timer(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._sequence), timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is None or timer.cancelled:
            return
        timer.cancel()
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def next_time(self) -> float | None:
        """When the earliest live timer is due; None when there is none."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Run every timer due at `now` (in time order, ties in scheduling order), including
        timers that the callbacks schedule for `now` or earlier. Returns how many ran."""
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True  # fired: a later cancel() is a no-op, not counted
            ran += 1
            timer.callback(*timer.args, now)
        return ran
