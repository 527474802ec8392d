"""Which UDP batch path the transport uses: the native one (`mldht._batchio`, recvmmsg and
sendmmsg, built by `pip install` where a C compiler and Linux's headers are) or Python's
socket calls, one datagram each. `MLDHT_NATIVE` chooses as for every native part
(mldht/native.py). Both give the same datagrams (tests/test_batchio.py).
"""

from __future__ import annotations

from types import ModuleType

from . import native

ENVIRONMENT_VARIABLE = native.ENVIRONMENT_VARIABLE


def native_module() -> ModuleType | None:
    """The native batch module, or None where it is missing or turned off."""
    return native.module("_batchio")


def describe() -> str:
    """One line for status output: which path a new transport takes."""
    return "native (recvmmsg/sendmmsg)" if native_module() is not None else "pure Python"
