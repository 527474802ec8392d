"""The wheel `pip wheel .` builds ships every package under mldht/ and imports on its own.

The build runs on a copy of pyproject.toml, README.md and mldht/ in a temporary folder, so
that it writes no build/ or egg-info into the work tree. Build isolation fetches setuptools
from the package index pip is configured with (pyproject.toml asks for setuptools>=77).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def package_folders() -> list[Path]:
    """Every folder under mldht/ with an __init__.py (a package the wheel must ship)."""
    return sorted(init.parent.relative_to(ROOT)
                  for init in (ROOT / "mldht").rglob("__init__.py")
                  if "__pycache__" not in init.parts)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, pip's verbose output)."""
    folder = tmp_path_factory.mktemp("packaging")
    source = folder / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for license_file in ROOT.glob("LICEN[CS]E*"):
        shutil.copy2(license_file, source / license_file.name)
    shutil.copytree(ROOT / "mldht", source / "mldht",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = folder / "dist"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    process = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-v", "-w", str(out)],
        cwd=source, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-5000:]
    wheels = list(out.glob("mldht-*.whl"))
    assert len(wheels) == 1, (wheels, output[-3000:])
    return wheels[0], output


def test_the_build_has_no_setuptools_deprecation_warning(built):
    _, output = built
    assert "SetuptoolsDeprecationWarning" not in output, [
        line for line in output.splitlines() if "Deprecat" in line]


def test_the_wheel_ships_every_package_and_py_typed(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = package_folders()
    assert Path("mldht/engine") in folders and Path("mldht/sim") in folders, folders
    for folder in folders:
        for module in (ROOT / folder).glob("*.py"):
            assert f"{folder.as_posix()}/{module.name}" in names, (module, sorted(names))
    assert "mldht/py.typed" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    metadata = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines(), metadata[:800]
    entry_points = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/entry_points.txt"))).decode()
    assert "mldht = mldht.cli:main" in entry_points


def test_every_package_imports_from_the_unpacked_wheel(built, tmp_path):
    wheel, _ = built
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    packages = [".".join(folder.parts) for folder in package_folders()]
    # -I -S: no PYTHONPATH, no current folder, no site-packages .pth (the editable install's
    # finder, which would serve mldht.* from the work tree). The dependencies come from this
    # interpreter's site-packages, added by hand after the unpacked wheel.
    site_folders = list(dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))
    code = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {[str(unpacked)] + site_folders!r}\n"
        f"root = {str(ROOT)!r}\n"
        "assert root not in sys.path and '' not in sys.path, sys.path\n"
        "found = {}\n"
        f"for name in {packages!r}:\n"
        "    found[name] = importlib.import_module(name).__file__\n"
        "import mldht.cli\n"
        "found['mldht.cli'] = mldht.cli.__file__\n"
        "print(json.dumps(found))\n"
    )
    process = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    found = json.loads(process.stdout)
    assert set(packages) <= set(found) and "mldht.engine" in found and "mldht.sim" in found
    for name, path in found.items():
        assert Path(path).is_relative_to(unpacked), (name, path)
