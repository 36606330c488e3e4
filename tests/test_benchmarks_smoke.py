"""The benchmark runs end to end in --quick mode on the memory backend (numbers not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCENARIOS = (
    "W1 append+save",
    "W1 growth",
    "W2 get",
    "W3 list_recent(20)",
    "W3 list(20, offset=",
    "W4 find_by_attributes",
    "W4 find_by_source",
    "W4 growth",
    "W5 4 tasks save",
    "W5 lost appends",
    "memory: peak loading",
)


def test_quick_benchmark_writes_a_table_with_every_workload(tmp_path: Path) -> None:
    output = tmp_path / "performance.md"
    command = [sys.executable, "-m", "benchmarks", "--backend", "memory", "--quick"]
    result = subprocess.run(
        [*command, "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text(encoding="utf-8")
    assert "| scenario | ours | baseline | ratio | target | met? |" in report
    table = [line for line in report.splitlines() if line.startswith("| ")]
    for scenario in SCENARIOS:
        assert any(line.startswith(f"| {scenario}") for line in table), scenario
    assert "failed:" not in report, report
    assert "python -m benchmarks --backend memory --quick" in report
    assert (tmp_path / "performance-w1.png").stat().st_size > 0
