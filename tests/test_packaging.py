"""The built wheel is complete: a new virtual environment installs it and the demo runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv")

pytestmark = pytest.mark.skipif(UV is None, reason="building the wheel needs uv on PATH")


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    assert UV is not None
    run(UV, "build", "--out-dir", out, "--quiet")
    return out


def test_build_makes_a_wheel_and_an_sdist(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert any(n.endswith(".whl") for n in names), names
    assert any(n.endswith(".tar.gz") for n in names), names


def test_wheel_carries_entry_points_and_every_package(dist: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        entry_points = next(f for f in files if f.endswith(".dist-info/entry_points.txt"))
        text = archive.read(entry_points).decode()
    assert "[tyler.thread_stores]" in text and "memory = tyler_core.memory:MemoryBackend" in text
    assert "tyler-store = tyler_core.cli:main" in text
    assert "tyler = tyler_core.pytest_plugin" in text
    for package in ("tyler_core", "tyler_sql", "tyler_redis", "tyler_mongo", "tyler_core/testing"):
        assert f"{package}/__init__.py" in files, package
    assert "tyler_core/py.typed" in files
    assert not any(f.startswith("tests/") for f in files)


def test_fresh_environment_installs_the_wheel_with_all_extras_and_runs_the_demo(
    dist: Path, tmp_path: Path
) -> None:
    assert UV is not None
    wheel = next(dist.glob("*.whl"))
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv)
    run(UV, "pip", "install", "--quiet", "--python", venv / "bin" / "python", f"{wheel}[all]")
    work = tmp_path / "work"
    work.mkdir()
    demo = run(venv / "bin" / "tyler-store", "demo", cwd=work)
    assert "find_by_source" in demo.stdout and "holds 4 threads" in demo.stdout
    backends = run(venv / "bin" / "tyler-store", "backends", cwd=work)
    assert "postgresql+asyncpg" in backends.stdout
