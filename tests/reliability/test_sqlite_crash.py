"""SQLite crash consistency: a writer process killed with SIGKILL in the middle of saves and
appends, many times. After each kill the database opens, passes ``PRAGMA integrity_check``, every
thread is one whole version, and every write the writer saw return is there."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.reliability.conftest import record
from tests.reliability.sqlite_writer import THREADS
from tyler_core.models import Thread
from tyler_core.store import ThreadStore

ROUNDS = 15
ROOT = Path(__file__).resolve().parents[2]


def _generation(thread: Thread) -> int:
    """The generation a stored thread is at; fails if its parts come from different writes."""
    generation = int(thread.attributes["gen"])
    assert thread.title is not None
    title_gen, _, count = thread.title.removeprefix("gen ").partition(" n=")
    assert int(title_gen) == generation, thread.title
    saved = int(count)
    messages = thread.messages
    assert len(messages) in (saved, saved + 1), (thread.title, len(messages))
    for number, message in enumerate(messages[:saved]):
        assert message.content == f"gen {generation} #{number} " + "y" * 500, message.id
        assert message.attributes == {"gen": generation}
    if len(messages) == saved + 1:  # the append after that save
        assert messages[-1].id == f"a{generation}"
        assert messages[-1].content == f"gen {generation} +"
    sequences = [m.sequence for m in messages]
    assert sequences == sorted(set(sequences))  # type: ignore[type-var]
    return generation


def _state(pid: int) -> str:
    """The kernel's state line of a process (for the failure message), or "gone"."""
    status = Path(f"/proc/{pid}/status")
    return status.read_text().split("\n")[2] if pid and status.exists() else "gone"


async def _next_line(zygote: asyncio.subprocess.Process, seen: list[str], pid: int = 0) -> str:
    assert zygote.stdout is not None
    try:
        line = await asyncio.wait_for(zygote.stdout.readline(), 30)
    except TimeoutError:
        raise AssertionError(
            f"the zygote went silent after {seen[-5:]}; writer {pid}: {_state(pid)}; "
            f"zygote: {zygote.returncode}"
        ) from None
    return line.decode().strip()


async def _run_and_kill(
    zygote: asyncio.subprocess.Process, path: Path, start: int, rng: random.Random
) -> list[str]:
    """Have the zygote fork a writer, let it work for a random while after its first write,
    SIGKILL it; return the lines it printed (its acknowledged writes)."""
    assert zygote.stdin is not None
    zygote.stdin.write(f"{path} {start}\n".encode())
    await zygote.stdin.drain()
    head = (await _next_line(zygote, [])).split()
    assert head[0] == "child", head
    pid = int(head[1])
    lines = [await _next_line(zygote, head)]
    assert lines[0].split()[0] in ("save", "append"), lines  # the writer is at work
    await asyncio.sleep(rng.uniform(0.02, 0.3))
    os.kill(pid, signal.SIGKILL)
    while True:
        line = await _next_line(zygote, lines, pid)
        if line == f"dead {pid}":
            return lines
        if len(line.split()) == 3:  # not a blank, nor a line cut short by the kill
            lines.append(line)


@pytest.mark.slow
async def test_a_writer_killed_mid_save_leaves_old_or_new_threads(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(11)
    zygote = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.sqlite_writer",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await _rounds(zygote, path, rng)
    finally:
        if zygote.returncode is None:
            zygote.kill()
        await zygote.wait()


async def _rounds(zygote: asyncio.subprocess.Process, path: Path, rng: random.Random) -> None:
    acknowledged_saves: dict[str, int] = {}
    acknowledged_appends: dict[str, set[str]] = {thread_id: set() for thread_id in THREADS}
    writes = 0
    start = 0
    for _ in range(ROUNDS):
        lines = await _run_and_kill(zygote, path, start, rng)
        for line in lines:
            kind, thread_id, value = line.split()
            writes += 1
            if kind == "save":
                acknowledged_saves[thread_id] = int(value)
            else:
                acknowledged_appends[thread_id].add(value)

        with closing(sqlite3.connect(path)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        async with await ThreadStore.create(f"sqlite+aiosqlite:///{path}") as store:
            highest = 0
            for thread in await store.list_recent():
                generation = _generation(thread)
                # Each acknowledged save is there, or a later one replaced it.
                assert generation >= acknowledged_saves.get(thread.id, 0)
                # An acknowledged append is there unless a later save trimmed it.
                if f"a{generation}" in acknowledged_appends[thread.id]:
                    assert thread.messages[-1].id == f"a{generation}"
                highest = max(highest, generation)
                found = await store.find_by_attributes({"gen": generation})
                assert thread.id in [t.id for t in found]
            assert {t.id for t in await store.list_recent()} >= set(acknowledged_saves)
        start = highest  # the next writer goes on from what is stored
    assert writes > ROUNDS
    record(
        "sqlite crash",
        "sqlite",
        {
            "writer processes killed": ROUNDS,
            "acknowledged writes": writes,
            "acknowledged writes lost": 0,
            "integrity_check": "ok",
        },
    )
