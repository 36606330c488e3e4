"""The pytest plugin behind ``tyler-store check``: test outcomes per capability.

``tyler-store check URL`` runs the conformance suite in a pytest subprocess with
``-p tyler_core.check_report --tyler-check-report FILE``. This plugin files every test under the
capability it exercises (``core`` for the mandatory contract, else ``search``, ``ttl`` or
``shared_across_instances``), counts passed, failed and skipped tests per group and writes them
to ``FILE`` as JSON when the run ends; the command prints the report from it with
:func:`format_report`.

Like :mod:`tyler_core.pytest_plugin` it imports only pytest and the standard library at module
level: nothing is imported from the suite before pytest has set up assertion rewriting.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["GROUPS", "REPORT_OPTION", "GroupResult", "format_report", "read_report"]

#: The report's groups, in the order it prints them.
GROUPS = ("core", "search", "ttl", "shared_across_instances")
#: The ``dest`` of ``--tyler-check-report``.
REPORT_OPTION = "tyler_check_report"

# What base.requires() sets on a test function; read by name so the suite is not imported here.
_REQUIRES = "__tyler_requires__"
_NOT_DECLARED = "backend does not declare capability: "


@dataclass(slots=True)
class GroupResult:
    """Outcomes of one capability's tests."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    #: Tests skipped because the backend does not declare the capability.
    not_declared: int = 0
    #: Names of the failed tests (without the URL parameter).
    failures: list[str] = field(default_factory=list)
    #: Tests selected to run; more than the outcomes when the run stopped early (``-x``).
    selected: int = 0

    @property
    def reported(self) -> int:
        """Tests with an outcome: passed, failed or skipped."""
        return self.passed + self.failed + self.skipped


def group_of(item: pytest.Item) -> str:
    """The capability a test exercises: what it ``requires``, else a second instance's
    ``shared_across_instances``, else ``core``."""
    required: frozenset[str] = getattr(getattr(item, "function", None), _REQUIRES, frozenset())
    for name in GROUPS[1:]:
        if name in required:
            return name
    if "second_store" in getattr(item, "fixturenames", ()):
        return "shared_across_instances"
    return "core"


class _Collector:
    """Counts one outcome per test; setup and teardown errors count as failures."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: dict[str, str] = {}
        self.outcomes: dict[str, tuple[str, str]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # After -k and -m deselected theirs: what is left is what was meant to run.
        self.groups = {item.nodeid: group_of(item) for item in session.items}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        if report.failed:
            self.outcomes[nodeid] = ("failed", "")
        elif report.skipped and nodeid not in self.outcomes:
            reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
            # A strict expected failure that failed is the suite working as told: a pass.
            outcome = "passed" if hasattr(report, "wasxfail") else "skipped"
            self.outcomes[nodeid] = (outcome, reason)
        elif report.when == "call" and report.passed:
            self.outcomes[nodeid] = ("passed", "")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        results = {name: GroupResult() for name in GROUPS}
        for group in self.groups.values():
            results[group].selected += 1
        for nodeid, (outcome, reason) in self.outcomes.items():
            result = results[self.groups.get(nodeid, "core")]
            if outcome == "failed":
                result.failed += 1
                result.failures.append(nodeid.rpartition("::")[2].partition("[")[0])
            elif outcome == "skipped":
                result.skipped += 1
                if _NOT_DECLARED in reason:
                    result.not_declared += 1
            else:
                result.passed += 1
        self.path.write_text(json.dumps({k: asdict(v) for k, v in results.items()}))


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--tyler-check-report FILE``."""
    parser.getgroup("tyler").addoption(
        "--tyler-check-report",
        dest=REPORT_OPTION,
        metavar="FILE",
        default=None,
        help="write passed/failed/skipped counts per capability to FILE (JSON)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the collector when ``--tyler-check-report`` is given."""
    path = getattr(config.option, REPORT_OPTION, None)
    if path:
        config.pluginmanager.register(_Collector(Path(path)), "tyler-check-report-collector")


def read_report(path: Path) -> dict[str, GroupResult]:
    """The per-capability results a run wrote to ``path``."""
    raw: dict[str, Any] = json.loads(path.read_text())
    return {name: GroupResult(**raw[name]) for name in GROUPS if name in raw}


def format_report(
    store: str, results: dict[str, GroupResult], declared: dict[str, bool] | None = None
) -> str:
    """The one-screen report: a line per capability, then the failed tests (ten at most).

    ``declared`` holds the backend's capabilities; without it the column says ``?`` unless
    a test was skipped for want of the capability: outcomes cannot show what is declared
    when ``-k`` selects no test of a group or ``-x`` stops before it.
    """
    lines = [f"Conformance of {store}", ""]
    rows = [("capability", "declared", "passed", "failed", "skipped", "verdict")]
    for name in GROUPS:
        result = results.get(name, GroupResult())
        rows.append(
            (
                name,
                _declared_text(name, result, declared),
                str(result.passed),
                str(result.failed),
                str(result.skipped),
                _verdict(result),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += _coverage_notes(list(results.values()))
    failures = [(n, f) for n in GROUPS for f in results.get(n, GroupResult()).failures]
    if failures:
        lines += ["", f"failed ({len(failures)}):"]
        lines += [f"  {name}: {test}" for name, test in failures[:10]]
        if len(failures) > 10:
            lines.append(f"  ... and {len(failures) - 10} more (see the pytest output above)")
    return "\n".join(lines)


def _declared_text(name: str, result: GroupResult, declared: dict[str, bool] | None) -> str:
    if name == "core":
        return "required"
    if declared is not None and name in declared:
        return "yes" if declared[name] else "no"
    return "no" if result.not_declared else "?"


def _verdict(result: GroupResult) -> str:
    if result.failed:
        return "FAIL"
    if result.reported < result.selected:
        return "incomplete"
    return "ok" if result.passed else "not tested"


def _coverage_notes(results: list[GroupResult]) -> list[str]:
    """Say so when the run proves less than the table suggests: no test ran, or some were
    selected but never reached."""
    reported = sum(r.reported for r in results)
    selected = sum(r.selected for r in results)
    if reported == 0:
        return ["", "No test ran: the pytest arguments selected none, or the run stopped first."]
    if reported < selected:
        return ["", f"Only {reported} of {selected} selected tests ran (the run stopped early)."]
    return []
