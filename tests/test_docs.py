"""The README's runnable examples run, so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def runnable_blocks() -> list[tuple[str, int, str]]:
    """Python blocks that run on their own: those calling ``asyncio.run``."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
            code = match.group(1)
            if "asyncio.run(" in code:
                line = text[: match.start()].count("\n") + 2
                found.append((path.name, line, code))
    return found


BLOCKS = runnable_blocks()


def test_the_readme_has_a_runnable_quickstart() -> None:
    assert any(name == "README.md" for name, _, _ in BLOCKS)


@pytest.mark.parametrize(("name", "line", "code"), BLOCKS, ids=[f"{n}:{ln}" for n, ln, _ in BLOCKS])
def test_example_runs(name: str, line: int, code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{name}:{line}\n{result.stdout}\n{result.stderr}"
