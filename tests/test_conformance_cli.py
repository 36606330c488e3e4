"""The shipped suite as a stranger runs it: ``pytest --pyargs tyler_core.testing --tyler-url URL``
in a directory without our pytest configuration; and proof that it fails a wrong backend."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tyler_core.testing import ThreadStoreConformance, requires

BROKEN_BACKEND = textwrap.dedent(
    """
    import json
    from collections.abc import Mapping
    from typing import Any

    from tyler_core import register_backend
    from tyler_core.memory import MemoryBackend

    CALLS = {"open": 0, "purge": 0, "close": 0}


    class BrokenBackend(MemoryBackend):
        '''Two classic bugs: pages ignore the offset; attributes compare as str().
        It also counts opens, purges and closes, to show that the suite cleans up.'''

        async def list_page(self, *, limit, offset):
            return await super().list_page(limit=limit, offset=0)

        @staticmethod
        def _contains(document: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
            return all(k in document and str(document[k]) == str(v) for k, v in wanted.items())

        async def open(self):
            CALLS["open"] += 1
            await super().open()

        async def purge(self):
            CALLS["purge"] += 1
            await super().purge()

        async def close(self):
            CALLS["close"] += 1
            await super().close()


    register_backend("broken", BrokenBackend)


    def pytest_sessionfinish(session, exitstatus):
        with open("calls.json", "w") as file:
            json.dump(CALLS, file)
    """
)


def run_suite(
    directory: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run the shipped suite in ``directory`` (no project config applies there); return the
    process and the counts of its summary line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    process = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "--pyargs", "tyler_core.testing"),
            *("-p", "no:cacheprovider", "-q", "-rfEs", *args),
        ],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = process.stdout.strip().splitlines()[-1] if process.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    return process, counts


@pytest.mark.slow
def test_suite_passes_on_memory_from_the_command_line(tmp_path: Path) -> None:
    process, counts = run_suite(tmp_path, "--tyler-url", "memory://shared")
    assert process.returncode == 0, process.stdout + process.stderr
    assert counts.get("passed", 0) >= 40, process.stdout
    assert "failed" not in counts and "error" not in counts and "errors" not in counts


@pytest.mark.slow
def test_suite_fails_a_broken_backend(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(BROKEN_BACKEND)
    process, counts = run_suite(tmp_path, "--tyler-url", "broken://", "-k", "not ttl")
    assert process.returncode == 1, process.stdout + process.stderr
    assert counts.get("failed", 0) >= 3, process.stdout
    for test in ("test_pages_never_overlap_or_skip", "test_find_by_attributes_is_type_strict"):
        assert re.search(rf"FAILED \S+::{test}\[", process.stdout), f"{test} did not fail"
    assert counts.get("passed", 0) >= 40, "the rest of the suite still passes"
    calls = json.loads((tmp_path / "calls.json").read_text())
    assert calls["open"] >= 50, calls
    assert calls["close"] == calls["open"], f"every store opened must be closed: {calls}"
    assert calls["purge"] >= calls["open"], f"every store opened must be purged: {calls}"


def test_suite_without_a_url_skips_with_the_reason(tmp_path: Path) -> None:
    process, counts = run_suite(tmp_path, "-k", "round_trips or get_missing")
    assert process.returncode == 0, process.stdout + process.stderr
    assert counts.get("skipped", 0) >= 2 and "passed" not in counts, process.stdout
    assert "no store URL: pass --tyler-url URL" in process.stdout


def test_expected_failures_are_strict(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(BROKEN_BACKEND)
    (tmp_path / "test_known_bugs.py").write_text(
        textwrap.dedent(
            """
            from tyler_core.testing import ThreadStoreConformance


            class TestKnownBugs(ThreadStoreConformance):
                url = "broken://"
                expected_failures = {
                    "test_find_by_attributes_is_type_strict": "compares str()",
                    "test_get_missing_thread_returns_none": "not actually broken",
                }
            """
        )
    )
    process = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rxXf"),
            *("-k", "type_strict or get_missing", "test_known_bugs.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 1, process.stdout + process.stderr
    assert re.search(r"\b1 failed\b.*\b1 xfailed\b", process.stdout), process.stdout
    assert "[XPASS(strict)] not actually broken" in process.stdout, process.stdout


def test_test_ids_carry_no_credentials(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(BROKEN_BACKEND)
    process, _ = run_suite(
        tmp_path, "--collect-only", "--tyler-url", "broken://user:s3cr3t@host/db?token=t0k3n"
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "broken://user:***@host/db" in process.stdout
    assert "s3cr3t" not in process.stdout and "t0k3n" not in process.stdout


def test_plugin_imports_only_pytest() -> None:
    code = (
        "import sys, tyler_core.pytest_plugin; "
        "print([m for m in ('pytest_asyncio', 'hypothesis', 'tyler_core.testing') "
        "if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_unknown_names_fail_at_import() -> None:
    with pytest.raises(ValueError, match="unknown capabilities"):
        requires("tll")
    with pytest.raises(TypeError, match="names no test"):
        type("TestTypo", (ThreadStoreConformance,), {"expected_failures": {"test_nope": "x"}})
