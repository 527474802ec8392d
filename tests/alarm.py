"""A wall-clock limit for a block of a test: it fails instead of hanging the suite."""

from __future__ import annotations

import contextlib
import signal


class TookTooLong(BaseException):
    """Raised by `time_limit` (a BaseException, so that no `except Exception` in the code
    under test swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "the block"):
    """Raise `TookTooLong` when the block runs longer than `seconds` (SIGALRM: the main
    thread only)."""

    def on_alarm(signum, frame):
        raise TookTooLong(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
