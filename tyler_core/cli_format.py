"""How the ``tyler-store`` command prints: plain-text tables of threads and stats, and sizes
in KiB, MiB, GiB."""

from __future__ import annotations

import json
from collections.abc import Sequence

from tyler_core.models import Thread

__all__ = ["human_size", "stat_text", "table", "thread_rows"]


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def thread_rows(threads: Sequence[Thread]) -> str:
    if not threads:
        return "(no threads)"
    rows = [
        (
            t.id[:36],
            (t.title or "")[:40],
            len(t.messages),
            (t.source or {}).get("name", ""),
            json.dumps(t.attributes, ensure_ascii=False)[:40],
            t.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for t in threads
    ]
    return table(rows, ("id", "title", "messages", "source", "attributes", "updated (UTC)"))


def stat_text(key: str, value: object) -> object:
    if isinstance(value, list):
        return ", ".join(value) or "-"
    if key == "size_bytes":
        return human_size(value) if isinstance(value, int) else "unknown (the backend cannot tell)"
    return value


def human_size(size: int) -> str:
    amount, unit = float(size), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, larger
    return f"{size} B" if unit == "B" else f"{amount:.1f} {unit} ({size:,} B)"
