"""The documentation: the site builds with warnings as errors, every Python example in the
README and the docs runs (against a loopback network standing in for the default routers),
and every command they show exists with every option they name (`--help` of each).

The examples run as written; the only change is where the default routers point: the
runner sets `DEFAULT_BOOTSTRAP` to a loopback node before the example starts, so that a
page can show `Node()` as a user would write it and the test still sends only to loopback.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netguard import guarded_env
from toolrun import LoopbackNetwork

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w-]*)\s*$")
EXAMPLE_INFOHASH = "dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c"
"""The swarm the examples look up: the runner's network stores a peer for it."""
PEER_IP = "127.0.89.13"

RUNNER = textwrap.dedent("""
    import runpy, sys
    import mldht, mldht.cli, mldht.config, mldht.node
    routers = (sys.argv[2],)
    for module in (mldht, mldht.cli, mldht.config, mldht.node):
        module.DEFAULT_BOOTSTRAP = routers   # the example's default routers: loopback
    path = sys.argv[1]
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
""")


def fenced_blocks(languages: set[str]) -> list[tuple[str, int, str]]:
    """(page, line, code) of every fenced block in one of `languages`, dedented."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            match = FENCE.match(lines[index])
            if not match or not match["language"]:
                index += 1
                continue
            start, indent = index, len(match["indent"])
            index += 1
            body = []
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index][indent:])
                index += 1
            index += 1
            if match["language"] in languages:
                found.append((page.relative_to(ROOT).as_posix(), start + 1, "\n".join(body) + "\n"))
    return found


PYTHON_EXAMPLES = fenced_blocks({"python"})


def test_the_pages_have_python_examples():
    pages = {page for page, _, _ in PYTHON_EXAMPLES}
    assert {"README.md", "docs/index.md", "docs/library.md", "docs/design.md",
            "docs/crawler.md"} <= pages, pages


@pytest.mark.network
@pytest.mark.parametrize("page,line,code", PYTHON_EXAMPLES,
                         ids=[f"{page}:{line}" for page, line, _ in PYTHON_EXAMPLES])
async def test_every_python_example_runs(page, line, code, tmp_path):
    net = LoopbackNetwork(16, 89)
    await net.start()
    try:
        await net.nodes[3].announce(bytes.fromhex(EXAMPLE_INFOHASH), 7000)
        script = tmp_path / "example.py"
        script.write_text(code, encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RUNNER, str(script), net.bootstrap, cwd=tmp_path,
            env=guarded_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), 150)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    finally:
        await net.close()
    output, errors = out.decode(), err.decode()
    assert process.returncode == 0, f"{page}:{line}\n{errors[-3000:]}"
    assert output.strip(), f"{page}:{line} printed nothing"
    if EXAMPLE_INFOHASH in code and "peers" in code:
        assert PEER_IP in output, f"{page}:{line} did not print the peer:\n{output[-2000:]}"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-5000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # The reference is generated from the docstrings: one of them, word for word.
    assert "A kept announce or item" in api  # Keeper's docstring
    assert "get_peers_many" in api and "keep_announced" in api


# --- every command shown exists, with every option named ----------------------------------

PROGRAMS = {
    "mldht": [sys.executable, "-m", "mldht"],
    "mldht-crawler": [sys.executable, str(ROOT / "tools" / "crawler.py")],
    "mldht-peer-finder": [sys.executable, str(ROOT / "tools" / "peer_finder.py")],
}
SUBCOMMANDS = {
    "mldht": {"get-peers", "announce", "put", "get", "ping", "find-node", "serve", "replay",
              "sample"},
    "mldht-crawler": {"crawl", "estimate", "report", "export"},
}
FILE_ONLY = "file-named-in-the-text"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def _program(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The program a command line runs (a key of PROGRAMS, or a tools/ script) and the
    tokens after it; None for anything else (pip, curl, apt-get...)."""
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
        tokens = tokens[1:]  # VAR=value before the command
    if not tokens:
        return None
    first = tokens[0].removeprefix(".venv/bin/")
    if first in ("python", "python3") and len(tokens) > 1 and tokens[1].startswith("tools/"):
        script = tokens[1]
        if script in ("tools/crawler.py", "tools/peer_finder.py"):
            return ("mldht-crawler" if script == "tools/crawler.py" else "mldht-peer-finder",
                    tokens[2:])
        return script, tokens[2:]
    if first in PROGRAMS:
        return first, tokens[1:]
    if first.startswith("tools/") and first.endswith(".sh"):
        return first, tokens[1:]
    if first.startswith("tools/") and first.endswith(".py") and len(tokens) == 1:
        return first, [FILE_ONLY]  # a file named in the text: it must exist
    return None


def paragraphs() -> list[tuple[str, int, str]]:
    """(page, first line, text joined on one line) of every paragraph outside fenced blocks:
    a code span may be broken across lines."""
    found = []
    for page in PAGES:
        fenced, start, lines = False, 0, []
        for number, line in enumerate([*page.read_text(encoding="utf-8").splitlines(), ""], 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                continue
            if line.strip():
                start = start or number
                lines.append(line.strip())
            elif lines:
                found.append((page.relative_to(ROOT).as_posix(), start, " ".join(lines)))
                start, lines = 0, []
    return found


def shown_commands() -> list[tuple[str, str | None, set[str], str]]:
    """(program, subcommand, options named, where) for every command line in a sh block or
    an inline code span of the README and the docs."""
    texts: list[tuple[str, str]] = []
    for page, line, code in fenced_blocks({"sh", "bash", "console"}):
        joined = code.replace("\\\n", " ")
        texts += [(f"{page}:{line}", text) for text in joined.splitlines()
                  if not text.lstrip().startswith("#")]
    for page, number, paragraph in paragraphs():
        texts += [(f"{page}:{number}", span) for span in INLINE_CODE.findall(paragraph)]
    commands = []
    for where, text in texts:
        for segment in re.split(r"&&|\|\||[|;]", text.split(" # ")[0]):
            try:
                tokens = shlex.split(segment)
            except ValueError:
                tokens = segment.split()
            found = _program(tokens)
            if found is None:
                continue
            program, rest = found
            words = [token for token in rest if not token.startswith(("-", "<", "[", "("))]
            sub = words[0] if words and (words[0] in SUBCOMMANDS.get(program, ())
                                         or words[0] == FILE_ONLY) else None
            commands.append((program, sub, set(OPTION.findall(segment)), where))
    return commands


@functools.cache
def help_text(program: str, sub: str | None) -> str:
    if program in PROGRAMS:
        command = PROGRAMS[program]
    else:
        command = [sys.executable, str(ROOT / program)]
    process = subprocess.run([*command, *([sub] if sub else []), "--help"], cwd=ROOT,
                             env=guarded_env(), capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, (program, sub, process.stderr[-2000:])
    return process.stdout


def test_every_command_the_docs_show_exists():
    commands = shown_commands()
    programs = {program for program, _, _, _ in commands}
    assert {"mldht", "mldht-crawler", "mldht-peer-finder"} <= programs, programs
    assert len(commands) > 50, len(commands)
    missing = []
    for program, sub, options, where in commands:
        if program.endswith(".sh") or sub == FILE_ONLY:
            if not (ROOT / program).is_file():
                missing.append(f"{where}: {program} does not exist")
            continue
        if program.startswith("tools/") and not (ROOT / program).is_file():
            missing.append(f"{where}: {program} does not exist")
            continue
        text = help_text(program, sub)
        for option in sorted(options - {"--help"}):
            if not re.search(re.escape(option) + r"(?![a-z0-9-])", text):
                missing.append(f"{where}: {program} {sub or ''} has no {option}")
    assert not missing, "\n".join(missing)
