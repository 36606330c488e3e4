"""``tyler-store check URL``: the conformance suite against a live store, then a report per
capability, through the real console script."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tests.test_cli import tyler_store
from tyler_core.check_report import GroupResult, format_report


def _rows(report: str) -> dict[str, list[str]]:
    """The report's table: capability -> [declared, passed, failed, skipped, verdict]."""
    table = report.split("Conformance of ", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = line.split(maxsplit=5)  # the verdict may be two words
        if cells and cells[0] in ("core", "search", "ttl", "shared_across_instances"):
            rows[cells[0]] = cells[1:]
    return rows


def test_check_memory_reports_every_capability_passing(tmp_path: Path) -> None:
    result = tyler_store("check", "memory://x", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "Conformance of memory://x" in result.stdout
    rows = _rows(result.stdout)
    assert list(rows) == ["core", "search", "ttl", "shared_across_instances"]
    for name, (declared, passed, failed, _skipped, verdict) in rows.items():
        assert declared == ("required" if name == "core" else "yes"), name
        assert int(passed) > 0 and failed == "0" and verdict == "ok", name


def test_check_sqlite_file_reports_ttl_as_not_declared_and_leaves_no_tables(
    tmp_path: Path,
) -> None:
    database = tmp_path / "check.db"
    # The stateful test is deselected to keep this test short; the groups are all still there.
    result = tyler_store(
        "check", f"sqlite+aiosqlite:///{database}", "-k", "not stateful", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    rows = _rows(result.stdout)
    assert rows["ttl"][0] == "no" and rows["ttl"][1] == "0" and rows["ttl"][4] == "not tested"
    assert int(rows["ttl"][3]) > 0
    assert rows["search"][0] == "yes" and rows["search"][4] == "ok"
    assert rows["shared_across_instances"][4] == "ok"
    assert rows["core"][2] == "0" and int(rows["core"][1]) > 50
    # Throwaway namespaces: every test dropped its tables afterwards.
    with sqlite3.connect(database) as connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master")]
    assert not [t for t in tables if re.match(r"t_[0-9a-f]{20}_", t)], tables


def test_check_with_an_unknown_scheme_fails_with_the_installed_ones(tmp_path: Path) -> None:
    result = tyler_store("check", "nosuchdb://x", cwd=tmp_path)
    assert result.returncode == 1
    assert "tyler-store: error:" in result.stderr and "memory" in result.stderr
    assert "Conformance of" not in result.stdout


def test_check_masks_the_password_in_its_report(tmp_path: Path) -> None:
    # A Redis server without a password accepts a URL that carries one.
    from tests.services import service_url

    url = service_url("redis").replace("://", "://:hunter2-secret@", 1)
    result = tyler_store("check", url, "-k", "round_trips or roundtrip", cwd=tmp_path)
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert ":***@" in result.stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_check_selecting_no_test_reports_the_declared_capabilities(tmp_path: Path) -> None:
    database = tmp_path / "none.db"
    result = tyler_store(
        "check", f"sqlite+aiosqlite:///{database}", "-k", "no_test_is_called_this", cwd=tmp_path
    )
    assert result.returncode == 5, result.stdout[-3000:] + result.stderr  # pytest: none ran
    rows = _rows(result.stdout)
    assert rows["ttl"][0] == "no" and rows["search"][0] == "yes"
    assert all(row[1:4] == ["0", "0", "0"] for row in rows.values())
    assert "No test ran" in result.stdout
    with sqlite3.connect(database) as connection:  # the probe's namespace was dropped
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master")]
    assert not [t for t in tables if re.match(r"t_[0-9a-f]{20}_", t)], tables


def test_the_documented_pytest_arguments_select_tests(tmp_path: Path) -> None:
    # docs/operations.md: tyler-store check URL -k round_trip -x
    result = tyler_store("check", "memory://x", "-k", "round_trip", "-x", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert int(_rows(result.stdout)["core"][1]) > 0
    assert "No test ran" not in result.stdout


def test_a_run_stopped_early_is_reported_as_incomplete() -> None:
    results = {
        "core": GroupResult(failed=1, failures=["test_x"], selected=80),
        "search": GroupResult(selected=10),
        "ttl": GroupResult(skipped=3, not_declared=3, selected=3),
    }
    report = format_report("memory://", results, {"search": True, "ttl": False})
    rows = _rows(report)
    assert rows["core"][4] == "FAIL" and rows["search"][4] == "incomplete"
    assert rows["search"][0] == "yes" and rows["ttl"][0] == "no"
    assert rows["ttl"][4] == "not tested"
    assert "Only 4 of 93 selected tests ran" in report
    assert _rows(format_report("memory://", {"search": GroupResult()}))["search"][0] == "?"
