"""A third-party backend, for real: the example package is installed the way a stranger would
install it, found through its entry point alone, and run through the shipped conformance suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_backend"
UV = shutil.which("uv")

pytestmark = pytest.mark.skipif(UV is None, reason="installing the example package needs uv")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the example package is installed into (with its entry point metadata)."""
    target = tmp_path_factory.mktemp("site")
    assert UV is not None
    result = subprocess.run(
        [UV, "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return target


def python(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("TYLER_STORE_URL", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_the_scheme_comes_from_the_entry_point_only(site: Path, tmp_path: Path) -> None:
    result = python(
        site,
        "-c",
        "from tyler_core import available_backends as a;"
        "print([(b.scheme, b.provider) for b in a() if b.scheme == 'jsonfile'])",
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "[('jsonfile', 'tyler-jsonfile')]", result.stderr


def test_the_shipped_suite_passes_against_it(site: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "threads"
    result = python(
        site,
        "-m",
        "pytest",
        "--pyargs",
        "tyler_core.testing",
        "--tyler-url",
        f"jsonfile://{store_dir}",
        "-q",
        "-p",
        "no:cacheprovider",
        cwd=tmp_path,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None, summary
    assert int(passed.group(1)) >= 40, summary
    assert "failed" not in summary and "error" not in summary
    # Every test's namespace was purged and dropped: no directory of one is left.
    assert sorted(p.name for p in store_dir.iterdir()) == [], "namespaces left behind"
