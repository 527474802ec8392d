"""Interop scenarios run as separate processes, each in its own network namespace.

Every scenario that a collected test asks for (with `@pytest.mark.lab("name")`) is started
at once when the first of them is needed, so the slow ones (Transmission waits about a minute
before it announces) overlap; each test then waits for its own scenario's JSON report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lab

SCENARIOS: dict[str, tuple[str, str, float]] = {
    # name: (script, scenario, timeout in seconds)
    "libtorrent": ("scenario_libtorrent.py", "all", 180),
    "webtorrent": ("scenario_webtorrent.py", "all", 180),
    "aria2": ("scenario_aria2.py", "all", 240),
    "transmission": ("scenario_transmission.py", "all", 360),
    "mixed": ("scenario_mixed.py", "all", 420),
    "bep42": ("scenario_bep42.py", "all", 180),
    "extensions": ("scenario_extensions.py", "all", 180),
    "browser": ("scenario_browser.py", "all", 180),
}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "lab(name): the test reads the report of a lab scenario")


class LabRuns:
    def __init__(self, needed: list[str], captures: Path) -> None:
        self.captures = captures
        self.processes = {name: lab.run_scenario(SCENARIOS[name][0], SCENARIOS[name][1],
                                                 capture=captures / name)
                          for name in needed}
        self.reports: dict[str, dict] = {}
        self.failures: dict[str, str] = {}

    def result(self, name: str) -> dict:
        """The scenario's report; AssertionError with its output when it failed."""
        if name not in self.reports and name not in self.failures:
            try:
                self.reports[name] = lab.scenario_report(self.processes[name], SCENARIOS[name][2])
            except AssertionError as exc:
                self.failures[name] = str(exc)
        if name in self.failures:
            raise AssertionError(f"lab scenario {name!r} failed:\n{self.failures[name]}")
        return self.reports[name]

    def outcome(self, name: str, missing: str | None = None) -> dict:
        """The report, or {"failure": why} so that each test of a module fails (rather than
        errors) with the reason: `missing` (a reference implementation not installed), the
        scenario's own failure, or the `error` its report carries."""
        if missing is not None:
            return {"failure": missing}
        try:
            report = self.result(name)
        except AssertionError as exc:
            return {"failure": str(exc)}
        return {"failure": report["error"]} if "error" in report else report

    def report(self, name: str) -> dict:
        """The scenario's report; the calling test fails when the scenario did."""
        try:
            return self.result(name)
        except AssertionError as exc:
            pytest.fail(str(exc), pytrace=False)

    def capture(self, name: str, file_name: str) -> Path:
        self.report(name)
        return self.captures / name / file_name

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture(scope="session")
def lab_runs(request, tmp_path_factory):
    needed = sorted({mark.args[0] for item in request.session.items
                     for mark in item.iter_markers("lab")})
    runs = LabRuns(needed, tmp_path_factory.mktemp("lab-captures"))
    yield runs
    runs.close()


@pytest.fixture
def lab_report(request, lab_runs) -> dict:
    """The report of the scenario named by the test's `lab` mark."""
    return lab_runs.report(request.node.get_closest_marker("lab").args[0])
