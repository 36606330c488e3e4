"""Result rows: one scenario's number for the store and for its baseline, and the target."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BackendResult", "Check", "Row", "interleaved"]

#: How a row is judged: ratio at most ``limit``, ratio at least ``limit``, the store's value is
#: zero, or not judged (informational).
Check = Literal["le", "ge", "zero", "info"]


@dataclass(slots=True)
class Row:
    """One line of a backend's table."""

    scenario: str
    ours: float | None
    baseline: float | None
    unit: str
    target: str = ""
    check: Check = "info"
    limit: float | None = None
    note: str = ""
    reference: str = "baseline"  # what the "baseline" column holds when it is not the baseline

    @property
    def ratio(self) -> float | None:
        """``ours / baseline``, when both are known and the baseline is not zero."""
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the target is met (``None``: no target, or no number)."""
        if self.check == "zero":
            return None if self.ours is None else self.ours == 0
        ratio = self.ratio
        if self.check == "info" or ratio is None or self.limit is None:
            return None
        return ratio <= self.limit if self.check == "le" else ratio >= self.limit


@dataclass(slots=True)
class BackendResult:
    """Everything measured on one backend."""

    name: str
    url: str = ""
    status: str = "ok"  # "ok", or "skipped: <reason>"
    server: str = ""
    representative: bool = True
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    # W1 per-save cost: thread length -> (ours, baseline) in seconds.
    w1: dict[int, tuple[float, float]] = field(default_factory=dict)
    # The same growth through store.append: thread length -> seconds.
    w1_append: dict[int, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def interleaved(
    ours: Callable[[], Awaitable[Any]],
    baseline: Callable[[], Awaitable[Any]],
    repeats: int,
    *,
    warmup: bool = True,
) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``baseline``, called alternately ``repeats`` times each
    (which one goes first alternates too), after one untimed call of each."""
    if warmup:
        await ours()
        await baseline()
    mine: list[float] = []
    theirs: list[float] = []
    for n in range(max(repeats, 1)):
        if n % 2:
            theirs.append(await _timed(baseline))
            mine.append(await _timed(ours))
        else:
            mine.append(await _timed(ours))
            theirs.append(await _timed(baseline))
        await asyncio.sleep(0)
    return statistics.median(mine), statistics.median(theirs)
