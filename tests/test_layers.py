"""The layering of shared/DESIGN.md, held against the source: a module imports only modules
on lower layers (lazy imports inside functions included), so that the lowest modules never
reach up and no two modules import each other."""

from __future__ import annotations

import pytest

import importgraph
from importgraph import mldht_imports

WIRE_LAYERS = {
    "mldht.errors": 0,
    "mldht.ids": 1,
    "mldht.bencoding": 1,
    "mldht.compact": 2,
    "mldht.krpc": 3,
    "mldht.magnet": 4,
}
"""The wire modules, bottom-up: the errors; ids and the bencode codec; compact node and
peer info; KRPC messages; magnet links and infohash parsing. Each may import only the
modules of lower layers (and no other mldht module)."""


@pytest.mark.parametrize("module", sorted(WIRE_LAYERS))
def test_a_wire_module_imports_only_lower_wire_modules(module):
    layer = WIRE_LAYERS[module]
    wrong = [f"{module}:{line} imports {target}" for target, line in mldht_imports(module)
             if WIRE_LAYERS.get(target, layer) >= layer]
    assert wrong == []


def test_the_layering_check_sees_lazy_and_relative_imports():
    """Not vacuous: krpc's relative imports resolve, and core's imports inside functions
    (of status, for the status snapshot) are seen, with their lines."""
    assert {"mldht.bencoding", "mldht.compact", "mldht.errors", "mldht.ids"} == {
        target for target, _ in mldht_imports("mldht.krpc")}
    source = open(importgraph.module_path("mldht.engine.core")).read().splitlines()
    lazy = [line for target, line in mldht_imports("mldht.engine.core")
            if target == "mldht.engine.status" and source[line - 1].startswith(" ")]
    assert lazy, "the imports inside core's functions were not seen"
