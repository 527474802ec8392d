"""The import graph of the mldht package, read from the source (every import, those inside
functions included): for the tests that hold the layering rules of shared/DESIGN.md."""

from __future__ import annotations

import ast
from pathlib import Path

import mldht
from mldht.native import MODULES

PACKAGE_DIR = Path(mldht.__file__).resolve().parent


def module_path(name: str) -> Path | None:
    """The file of module `mldht.x.y` (a package's __init__.py), or None."""
    parts = name.split(".")
    assert parts[0] == "mldht"
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imports(name: str, path: Path) -> tuple[list[tuple[str, list[str], int]], ast.Module]:
    """Every import in the module, anywhere in it (functions included), as (absolute module,
    imported names, line); relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found, tree


NATIVE_MODULES = {f"mldht.{name}" for name in MODULES}
"""The optional C modules (mldht/native.py)."""


def mldht_targets(module: str, names: list[str]) -> list[str]:
    """The mldht modules an import statement loads (a `from pkg import submodule` loads the
    submodule; a name that is no submodule comes from the package's __init__)."""
    if module != "mldht" and not module.startswith("mldht."):
        return []
    targets = []
    for imported in names or [""]:
        submodule = f"{module}.{imported}" if imported else module
        if submodule in NATIVE_MODULES:
            continue  # compiled from native/*.c: a leaf, importing nothing of mldht
        if imported and module_path(submodule) is not None:
            targets.append(submodule)
        else:
            targets.append(module)
    return targets


def mldht_imports(name: str) -> list[tuple[str, int]]:
    """The mldht modules that module `name` imports, anywhere in it, with the line."""
    path = module_path(name)
    assert path is not None, f"cannot find the file of {name}"
    return [(target, line) for module, names, line in imports(name, path)[0]
            for target in mldht_targets(module, names)]
