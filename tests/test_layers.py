"""The layering of shared/DESIGN.md, held against the source: a module imports only modules
on lower layers (lazy imports inside functions included), so that the lowest modules never
reach up and no two modules import each other."""

from __future__ import annotations

import ast

import pytest

import importgraph
from importgraph import mldht_imports
from mldht.engine import Engine
from mldht.engine.interface import EngineParts

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


# --- the engine and its parts ------------------------------------------------------------

ENGINE_PARTS = ("operations", "upkeep", "traversal", "store", "status")
"""The modules of mldht.engine that core imports and that reach back into the engine."""


def _engine_uses(module: str) -> dict[str, int]:
    """The attributes a part takes from the engine (`engine.x` or `self.engine.x`), with a
    line where each is used."""
    path = importgraph.module_path(module)
    tree = ast.parse(path.read_text(), str(path))
    uses: dict[str, int] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if (isinstance(value, ast.Name) and value.id == "engine") or (
                isinstance(value, ast.Attribute) and value.attr == "engine"
                and isinstance(value.value, ast.Name) and value.value.id == "self"):
            uses.setdefault(node.attr, node.lineno)
    return uses


def _declared() -> set[str]:
    members = set(EngineParts.__annotations__)
    members |= {name for name, value in vars(EngineParts).items()
                if callable(value) and not name.startswith("_")}
    return members


@pytest.mark.parametrize("part", ENGINE_PARTS)
def test_an_engine_part_imports_the_interface_never_core(part):
    targets = {target for target, _ in mldht_imports(f"mldht.engine.{part}")}
    assert "mldht.engine.core" not in targets and "mldht.engine" not in targets
    assert "mldht.engine.interface" in targets


@pytest.mark.parametrize("part", ENGINE_PARTS)
def test_an_engine_part_uses_only_what_the_interface_declares(part):
    uses = _engine_uses(f"mldht.engine.{part}")
    assert uses, f"{part} uses nothing of the engine: the check looks at the wrong names"
    undeclared = {name: line for name, line in uses.items() if name not in _declared()}
    assert undeclared == {}, f"mldht/engine/{part}.py uses undeclared engine members"


def test_the_engine_has_every_member_the_interface_declares():
    engine = Engine(0.0)
    missing = sorted(name for name in _declared() if not hasattr(engine, name))
    assert missing == []
    # The parts' own names are public: no part reaches for an underscore name.
    for part in ENGINE_PARTS:
        assert not [name for name in _engine_uses(f"mldht.engine.{part}") if name.startswith("_")]
