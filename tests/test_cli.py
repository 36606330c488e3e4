"""The tyler-store command, through its real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = shutil.which("tyler-store", path=str(Path(sys.executable).parent)) or "tyler-store"


def tyler_store(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TYLER_STORE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [SCRIPT, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_backends_lists_schemes_extras_and_driver_status(tmp_path: Path) -> None:
    result = tyler_store("backends", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["scheme", "install"]
    memory = next(line for line in lines if line.startswith("memory "))
    assert "yes" in memory
    postgres = next(line for line in lines if line.startswith("postgresql+psycopg "))
    assert "tyler-threadstore[psycopg]" in postgres


def test_backends_json(tmp_path: Path) -> None:
    result = tyler_store("backends", "--json", cwd=tmp_path)
    rows = {row["scheme"]: row for row in json.loads(result.stdout)}
    assert rows["mongodb"]["install"] == "tyler-threadstore[mongo]"


def test_demo_in_memory_prints_the_three_queries(tmp_path: Path) -> None:
    result = tyler_store("--url", "memory://", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Saved 4 sample threads" in out
    acme = out.split('find_by_attributes({"customer": "acme", "priority": "high"}):')[1]
    acme = acme.split("find_by_source")[0]
    assert "Refund for order 1042" in acme and "Nightly report failed" in acme
    assert "Onboarding questions" not in acme
    slack = out.split('find_by_source("slack", {"channel": "C-support"}):')[1]
    assert "Refund for order 1042" in slack and "Onboarding questions" not in slack
    assert "holds 4 threads" in out


def test_default_store_is_the_embedded_sqlite_file(tmp_path: Path) -> None:
    result = tyler_store("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tyler-threads.db").exists()
    again = tyler_store("list", cwd=tmp_path)  # persistent: a second process sees the threads
    assert again.stdout.count("Refund for order 1042") == 1


def test_list_show_delete_on_a_store_url_from_the_environment(tmp_path: Path) -> None:
    env = {"TYLER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db"}
    assert tyler_store("demo", cwd=tmp_path, env=env).returncode == 0
    listed = tyler_store("list", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    threads = json.loads(listed.stdout)
    assert len(threads) == 4
    first = threads[0]["id"]
    shown = tyler_store("show", first, cwd=tmp_path, env=env)
    assert shown.returncode == 0 and threads[0]["title"] in shown.stdout
    assert "assistant" in shown.stdout and "👍x2" in shown.stdout
    assert tyler_store("delete", first, cwd=tmp_path, env=env).returncode == 0
    missing = tyler_store("show", first, cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no thread" in missing.stderr
    assert tyler_store("delete", first, cwd=tmp_path, env=env).returncode == 1


def test_errors_are_one_line_and_masked(tmp_path: Path) -> None:
    result = tyler_store("--url", "postgress://u:hunter2@h/db", "list", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("tyler-store: error: no backend for the URL scheme")
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_unreachable_store_is_reported_without_password(tmp_path: Path) -> None:
    result = tyler_store(
        "--url", "redis://:hunter2@127.0.0.1:1/0?connect_timeout=2", "list", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "tyler-store: error:" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert tyler_store(cwd=tmp_path).returncode == 2
    assert tyler_store("frobnicate", cwd=tmp_path).returncode == 2


@pytest.mark.parametrize("command", ["list", "show", "delete"])
def test_bad_namespace_is_reported(tmp_path: Path, command: str) -> None:
    extra = [] if command == "list" else ["some-id"]
    result = tyler_store(
        "--namespace", "Bad-NS", "--url", "memory://", command, *extra, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "namespace" in result.stderr


def test_migrate_check_then_upgrade_a_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/migrate.db"
    behind = tyler_store("migrate", "--check", url, cwd=tmp_path)
    assert behind.returncode == 1, behind.stdout + behind.stderr
    upgraded = tyler_store("migrate", url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "up to date" in upgraded.stdout
    current = tyler_store("migrate", "--check", url, cwd=tmp_path)
    assert current.returncode == 0, current.stdout + current.stderr


def test_migrate_refuses_a_store_that_is_not_sql(tmp_path: Path) -> None:
    result = tyler_store("migrate", "redis://:hunter2@127.0.0.1:6379/0", cwd=tmp_path)
    assert result.returncode == 2
    assert "SQL" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_copy_export_import_through_the_console_script(tmp_path: Path) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path}/source.db"
    target = f"sqlite+aiosqlite:///{tmp_path}/target.db"
    assert tyler_store("--url", source, "demo", cwd=tmp_path).returncode == 0
    copied = tyler_store("copy", source, target, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert "copied 4 threads" in copied.stdout and "verified" in copied.stdout
    again = tyler_store("copy", source, target, cwd=tmp_path)
    assert "copied 0 threads" in again.stdout and "skipped 4" in again.stdout
    export = tmp_path / "threads.jsonl"
    exported = tyler_store("export", target, str(export), cwd=tmp_path)
    assert exported.returncode == 0 and "exported 4 threads" in exported.stderr
    lines = export.read_text().splitlines()
    assert len(lines) == 5
    imported_url = f"sqlite+aiosqlite:///{tmp_path}/imported.db"
    imported = tyler_store("import", imported_url, str(export), cwd=tmp_path)
    assert imported.returncode == 0 and "imported 4 threads" in imported.stderr
    verify = tyler_store("copy", imported_url, source, cwd=tmp_path)
    assert "skipped 4" in verify.stdout and "verified" in verify.stdout
    export.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n")
    broken = tyler_store(
        "import", f"sqlite+aiosqlite:///{tmp_path}/b.db", str(export), cwd=tmp_path
    )
    assert broken.returncode == 1
    assert "line 4" in broken.stderr


def test_find_and_stats(tmp_path: Path) -> None:
    env = {"TYLER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/find.db"}
    assert tyler_store("demo", cwd=tmp_path, env=env).returncode == 0
    found = tyler_store(
        "find", "--attr", "customer=acme", "--source", "slack", "--json", cwd=tmp_path, env=env
    )
    assert found.returncode == 0, found.stderr
    assert [t["title"] for t in json.loads(found.stdout)] == ["Refund for order 1042"]
    typed = tyler_store("find", "--attr", "priority=1", cwd=tmp_path, env=env)
    assert "(no threads)" in typed.stdout
    stats = json.loads(tyler_store("stats", "--json", cwd=tmp_path, env=env).stdout)
    assert stats["threads"] == 4 and stats["messages"] == 12
    assert stats["backend"] == "SQLBackend"
    bad = tyler_store("find", cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "--attr" in bad.stderr


async def test_find_with_limit_returns_the_first_threads_matching_both_filters(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime, timedelta

    from tyler_core import Thread, ThreadStore

    url = f"sqlite+aiosqlite:///{tmp_path}/find.db"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    # Newest first: C matches both, then more source-only threads than a page, then A.
    async with await ThreadStore.create(url) as store:
        for minute, (thread_id, customer) in enumerate(
            [("A", "acme"), *((f"B{n:03d}", "other") for n in range(120)), ("C", "acme")]
        ):
            thread = Thread(
                id=thread_id,
                attributes={"customer": customer},
                source={"name": "slack"},
                updated_at=start + timedelta(minutes=minute),
            )
            await store.save(thread, touch=False)

    def found(*limit: str) -> list[str]:
        result = tyler_store(
            "find", "--url", url, "--attr", "customer=acme", "--source", "slack", "--json",
            *limit, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return [t["id"] for t in json.loads(result.stdout)]

    assert found("--limit", "1") == ["C"]
    assert found("--limit", "2") == ["C", "A"]
    assert found() == ["C", "A"]
    assert found("--limit", "0") == []


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_copy_batch_below_one_is_a_usage_error(tmp_path: Path, batch: str) -> None:
    result = tyler_store("copy", "memory://", "memory://", "--batch", batch, cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --batch: must be at least 1" in result.stderr


async def test_copy_keeps_newer_target_threads_unless_overwrite(tmp_path: Path) -> None:
    from tyler_core import ThreadStore

    source = f"sqlite+aiosqlite:///{tmp_path}/source.db"
    target = f"sqlite+aiosqlite:///{tmp_path}/target.db"
    assert tyler_store("--url", source, "demo", cwd=tmp_path).returncode == 0
    assert tyler_store("copy", source, target, cwd=tmp_path).returncode == 0
    async with await ThreadStore.create(target) as store:
        edited = (await store.list_recent(1))[0]
        edited.title = "changed in the target"
        await store.save(edited)

    kept = tyler_store("copy", source, target, cwd=tmp_path)
    assert kept.returncode == 1
    assert "copied 0 threads" in kept.stdout and "skipped 3" in kept.stdout
    assert "kept 1 threads the target holds at a newer version" in kept.stderr
    shown = tyler_store("show", "--url", target, edited.id, "--json", cwd=tmp_path)
    assert json.loads(shown.stdout)["title"] == "changed in the target"

    forced = tyler_store("copy", source, target, "--overwrite", cwd=tmp_path)
    assert forced.returncode == 0 and "verified" in forced.stdout, forced.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'big.db'}"
    fill = (
        "import asyncio\n"
        "from tyler_core import Message, Thread, ThreadStore\n"
        "async def main():\n"
        f"    async with await ThreadStore.create({url!r}) as store:\n"
        "        for i in range(40):\n"
        "            thread = Thread(id=f't{i}')\n"
        "            thread.add_message(Message(role='user', content='x' * 10_000))\n"
        "            await store.save(thread)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", fill], check=True, timeout=120)
    # 400 kB of JSON Lines: far more than a pipe holds, so the export writes after it closed.
    command = subprocess.Popen(
        [SCRIPT, "--url", url, "export", "-"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert command.stdout is not None and command.stderr is not None
    with command.stderr:
        assert command.stdout.read(100)
        command.stdout.close()
        assert command.wait(timeout=120) == 141
        assert command.stderr.read() == b""
