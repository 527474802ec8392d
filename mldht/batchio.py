"""Which UDP batch path the transport uses: the native one (`mldht._batchio`, recvmmsg and
sendmmsg, built by `pip install` where a C compiler and Linux's headers are) or Python's
socket calls, one datagram each.

`MLDHT_NATIVE=0` in the environment forces the pure-Python path, `MLDHT_NATIVE=1` makes a
missing native module an ImportError (for tests that must run it); unset, the native path
is used when it imports. Both give the same datagrams (tests/test_batchio.py).
"""

from __future__ import annotations

import os
from types import ModuleType

ENVIRONMENT_VARIABLE = "MLDHT_NATIVE"


def native_module() -> ModuleType | None:
    """The native batch module, or None where it is missing or turned off."""
    wanted = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if wanted == "0":
        return None
    try:
        from . import _batchio  # type: ignore[attr-defined]
    except ImportError:
        if wanted == "1":
            raise
        return None
    return _batchio


def describe() -> str:
    """One line for status output: which path a new transport takes."""
    return "native (recvmmsg/sendmmsg)" if native_module() is not None else "pure Python"
