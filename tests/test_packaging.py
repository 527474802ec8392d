"""The wheel `pip wheel .` builds ships every package under mldht/, and the peer finder and
crawler of tools/ as `mldht_tools`, imports on its own, and installs the tools' commands.

The build runs on a copy of pyproject.toml, README.md, mldht/, tools/ and native/ (the C of
the optional native transport) in a temporary folder, so that it writes no build/ or
egg-info into the work tree. Build isolation fetches setuptools from the package index pip
is configured with (pyproject.toml asks for setuptools>=77).
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
    """Every folder under mldht/ and tools/ with an __init__.py (a package the wheel must
    ship), but the benchmarks' (tools/bench/), which stay in the clone."""
    return sorted(init.parent.relative_to(ROOT)
                  for top in ("mldht", "tools") for init in (ROOT / top).rglob("__init__.py")
                  if "__pycache__" not in init.parts and "bench" not in init.parts)


def wheel_name(folder: Path) -> str:
    """The package a source folder is in the wheel: tools/ ships as mldht_tools."""
    parts = folder.parts
    return ".".join(("mldht_tools", *parts[1:]) if parts[0] == "tools" else parts)


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
    for top in ("mldht", "tools", "native"):
        shutil.copytree(ROOT / top, source / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
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
    assert Path("mldht/engine") in folders and Path("tools/crawling") in folders, folders
    for folder in folders:
        for module in (ROOT / folder).glob("*.py"):
            assert f"{wheel_name(folder).replace('.', '/')}/{module.name}" in names, (
                module, sorted(names))
    assert not [name for name in names if name.startswith(("tools/", "mldht_tools/bench/"))]
    assert "mldht/py.typed" in names
    # The optional native modules (native/batchio.c, native/krpc.c), built here: Linux,
    # gcc, Python's headers.
    for module in ("_batchio", "_krpc"):
        assert [name for name in names if name.startswith(f"mldht/{module}.") and
                name.endswith(".so")], (module, sorted(names))
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    metadata = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines(), metadata[:800]
    entry_points = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/entry_points.txt"))).decode()
    assert "mldht = mldht.cli:main" in entry_points
    assert "mldht-crawler = mldht_tools.crawler:main" in entry_points
    assert "mldht-peer-finder = mldht_tools.peer_finder:main" in entry_points


def test_the_package_list_names_every_package():
    """pyproject.toml lists the packages by hand (tools/ is renamed): none may be missing."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == {wheel_name(folder) for folder in package_folders()}


def test_every_package_imports_from_the_unpacked_wheel(built, tmp_path):
    wheel, _ = built
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    packages = [wheel_name(folder) for folder in package_folders()]
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
        "import mldht.cli, mldht_tools.crawler, mldht_tools.peer_finder\n"
        "found['mldht.cli'] = mldht.cli.__file__\n"
        "found['mldht_tools.crawler'] = mldht_tools.crawler.__file__\n"
        "print(json.dumps(found))\n"
    )
    process = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    found = json.loads(process.stdout)
    assert set(packages) <= set(found) and "mldht.engine" in found and "mldht_tools.crawling" in found
    for name, path in found.items():
        assert Path(path).is_relative_to(unpacked), (name, path)


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """A fresh venv with the wheel installed as a user would (not editable). The wheel's
    dependencies come from this interpreter's site-packages through a .pth line (no index
    here); its own .pth files (the editable install's finder) are not run from there."""
    wheel, _ = built
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    site_folders = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(purelib, "zz_test_dependencies.pth").write_text("".join(f"{f}\n" for f in site_folders))
    process = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return venv


def test_the_installed_commands_run_outside_the_clone(installed, tmp_path):
    for command in ("mldht", "mldht-crawler", "mldht-peer-finder"):
        process = subprocess.run([str(installed / "bin" / command), "--help"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60)
        assert process.returncode == 0, (command, process.stderr)
        assert f"usage: {command}" in process.stdout, process.stdout[:300]
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import mldht, mldht_tools.crawler as c; print(mldht.__file__, c.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(Path(path).is_relative_to(installed) for path in where.stdout.split()), where.stdout


@pytest.mark.network
async def test_the_installed_crawler_crawls_a_loopback_network(installed, tmp_path):
    import asyncio

    from netguard import guarded_env
    from toolrun import LoopbackNetwork

    net = LoopbackNetwork(12, 77)
    await net.start()
    try:
        db = tmp_path / "crawl.sqlite"
        process = await asyncio.create_subprocess_exec(
            str(installed / "bin" / "mldht-crawler"), "crawl", "--db", str(db), "--bootstrap",
            net.bootstrap, "--bind", "127.0.77.250:0", "--sweeps", "1", "--json",
            "--timeout", "2", cwd=tmp_path, env=guarded_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await net.close()
    assert process.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["status"] == "complete" and summary["sweeps_done"] == 1
    estimates = {e["name"]: e for e in summary["estimates"][-1]}
    assert estimates["nodes that answered"]["value"] == 12, estimates
    assert err.decode().startswith("mldht-crawler: "), err.decode()[:300]
