"""ManualClock: a clock for ``ThreadStore.create(..., clock=...)`` that tests drive by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """A :data:`~tyler_core.store.Clock` that returns the time it is told.

    Each call returns the current time and then moves it ``step`` forward, so consecutive saves
    get strictly increasing ``updated_at`` values without sleeping. A frozen clock returns the
    same instant on every call (to force ties in ordering tests); :meth:`set` and
    :meth:`advance` move it explicitly.

    Args:
        start: the first instant returned (naive means UTC); default: now.
        step: how far each call moves the clock when it is not frozen.
        frozen: start frozen.
    """

    def __init__(
        self,
        start: datetime | None = None,
        *,
        step: timedelta = timedelta(milliseconds=1),
        frozen: bool = False,
    ) -> None:
        self._now = _utc(start if start is not None else datetime.now(UTC))
        self.step = step
        self.frozen = frozen
        #: How many times the clock was read.
        self.calls = 0

    def __call__(self) -> datetime:
        now = self._now
        self.calls += 1
        if not self.frozen:
            self._now = now + self.step
        return now

    @property
    def now(self) -> datetime:
        """The instant the next call returns."""
        return self._now

    def set(self, when: datetime) -> None:
        """Make ``when`` (naive means UTC) the instant the next call returns."""
        self._now = _utc(when)

    def advance(self, delta: timedelta | None = None) -> datetime:
        """Move the clock forward by ``delta`` (default: one ``step``); return the new instant."""
        self._now += self.step if delta is None else delta
        return self._now

    def freeze(self) -> None:
        """Return the same instant on every call until :meth:`unfreeze`."""
        self.frozen = True

    def unfreeze(self) -> None:
        """Move ``step`` forward on every call again."""
        self.frozen = False

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else f"step={self.step}"
        return f"ManualClock({self._now.isoformat()}, {state})"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
