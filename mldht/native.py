"""Which optional C modules mldht uses: `mldht._batchio` (the transport's batched system
calls, recvmmsg and sendmmsg) and `mldht._krpc` (the quick path's codec: plain queries read
and the closest nodes picked without Python objects). `pip install` builds them where a C
compiler and Python's headers are; everything they do has a pure-Python path that gives
the same bytes (tests/test_batchio.py, tests/test_native_krpc.py).

`MLDHT_NATIVE=0` in the environment forces the pure-Python paths, `MLDHT_NATIVE=1` makes a
missing module an ImportError (for tests that must run it); unset, each module is used when
it imports. The choice is made when a transport, routing table or engine is made.
"""

from __future__ import annotations

import os
from types import ModuleType

ENVIRONMENT_VARIABLE = "MLDHT_NATIVE"
MODULES = {"_batchio": "recvmmsg/sendmmsg", "_krpc": "quick-path codec"}


def module(name: str) -> ModuleType | None:
    """The native module `name` (one of MODULES), or None where it is missing or turned
    off."""
    if name not in MODULES:
        raise ValueError(f"no native module {name!r}; there are {sorted(MODULES)}")
    wanted = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if wanted == "0":
        return None
    try:
        if name == "_batchio":
            from . import _batchio as found  # type: ignore[attr-defined]
        else:
            from . import _krpc as found  # type: ignore[attr-defined]
        return found
    except ImportError:
        if wanted == "1":
            raise
        return None


def describe() -> str:
    """One line for status output: which native parts a new node takes."""
    parts = [what for name, what in MODULES.items() if module(name) is not None]
    return f"native ({', '.join(parts)})" if parts else "pure Python"
