"""Where tyler-store takes a store's URL and namespace from: the command's URL argument, else
``--url``, else ``$TYLER_STORE_URL``; ``--namespace`` when given, else the URL's
``?namespace=``, else the store's default. Root options work after the command too."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from tests.services import service_url
from tests.test_cli import SCRIPT, tyler_store
from tyler_core import ThreadStore


def stats(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    result = tyler_store("stats", "--json", *args, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_every_command_uses_the_namespace_of_the_url(tmp_path: Path) -> None:
    base = f"sqlite+aiosqlite:///{tmp_path}/ns.db"
    url = f"{base}?namespace=fixcli_a"
    assert tyler_store("--url", url, "demo", cwd=tmp_path).returncode == 0
    found = stats("--url", url, cwd=tmp_path)
    assert (found["namespace"], found["threads"]) == ("fixcli_a", 4)
    assert stats("--url", base, cwd=tmp_path)["threads"] == 0  # the default namespace: empty

    exported = tyler_store("export", url, str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert "exported 4 threads" in exported.stderr
    empty = tyler_store("export", f"{base}?namespace=fixcli_none", cwd=tmp_path)
    assert "exported 0 threads" in empty.stderr

    copied = tyler_store("copy", url, f"{base}?namespace=fixcli_b", cwd=tmp_path)
    assert copied.returncode == 0 and "copied 4 threads" in copied.stdout, copied.stderr
    assert stats("--url", f"{base}?namespace=fixcli_b", cwd=tmp_path)["threads"] == 4

    assert tyler_store("migrate", "--check", url, cwd=tmp_path).returncode == 0
    behind = tyler_store("migrate", "--check", f"{base}?namespace=fixcli_zz", cwd=tmp_path)
    assert behind.returncode == 1


def test_the_namespace_option_beats_the_url_everywhere(tmp_path: Path) -> None:
    base = f"sqlite+aiosqlite:///{tmp_path}/ns.db"
    url = f"{base}?namespace=fixcli_url"
    demo = tyler_store("--url", url, "--namespace", "fixcli_opt", "demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert stats("--url", url, cwd=tmp_path)["threads"] == 0
    assert stats("--url", base, "--namespace", "fixcli_opt", cwd=tmp_path)["threads"] == 4
    never = f"{base}?namespace=fixcli_never"
    assert tyler_store("migrate", "--check", never, cwd=tmp_path).returncode == 1
    check = tyler_store("migrate", "--check", never, "--namespace", "fixcli_opt", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr

    copied = tyler_store(
        "copy", base, url, "--namespace", "fixcli_opt", "--target-namespace", "fixcli_t",
        cwd=tmp_path,
    )  # fmt: skip
    assert "copied 4 threads" in copied.stdout, copied.stderr
    assert stats("--url", f"{base}?namespace=fixcli_t", cwd=tmp_path)["threads"] == 4


async def test_the_namespace_of_a_postgres_url_is_used(tmp_path: Path) -> None:
    namespace = "fixcli_" + uuid.uuid4().hex[:12]
    url = f"{service_url('postgres')}?namespace={namespace}"
    try:
        assert tyler_store("--url", url, "demo", cwd=tmp_path).returncode == 0
        found = stats("--url", url, cwd=tmp_path)
        assert (found["namespace"], found["threads"]) == (namespace, 4)
        listed = tyler_store(
            "list", "--url", service_url("postgres"), "--namespace", namespace, "--json",
            cwd=tmp_path,
        )  # fmt: skip
        assert len(json.loads(listed.stdout)) == 4
    finally:
        async with await ThreadStore.create(url) as store:
            await store.backend.drop()


def test_root_options_work_after_the_command(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/after.db"
    demo = tyler_store("demo", "--url", url, "--namespace", "fixcli_c", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    listed = tyler_store("list", "--json", "--url", url, "--namespace", "fixcli_c", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 4
    # Before the command and after it: the one after it does not erase the one before.
    mixed = tyler_store("--url", url, "list", "--namespace", "fixcli_c", "--json", cwd=tmp_path)
    assert len(json.loads(mixed.stdout)) == 4


def test_export_import_migrate_check_take_the_url_from_the_option_or_environment(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/env.db"
    env = {"TYLER_STORE_URL": url}
    assert tyler_store("demo", cwd=tmp_path, env=env).returncode == 0
    export = tmp_path / "threads.jsonl"
    exported = tyler_store("export", "--url", url, str(export), cwd=tmp_path)  # ARG is FILE
    assert exported.returncode == 0 and "exported 4 threads" in exported.stderr, exported.stderr
    assert len(export.read_text().splitlines()) == 5
    assert len(tyler_store("export", cwd=tmp_path, env=env).stdout.splitlines()) == 5

    into = f"sqlite+aiosqlite:///{tmp_path}/into.db"
    imported = tyler_store("import", "--url", into, str(export), cwd=tmp_path)
    assert imported.returncode == 0 and "imported 4 threads" in imported.stderr, imported.stderr
    environment = {k: v for k, v in os.environ.items() if k != "TYLER_STORE_URL"}
    with export.open() as stdin:
        piped = subprocess.run(
            [SCRIPT, "import", "--namespace", "fixcli_in"],
            stdin=stdin,
            cwd=tmp_path,
            env={**environment, "TYLER_STORE_URL": into},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "imported 4 threads" in piped.stderr, piped.stderr
    assert stats("--url", into, "--namespace", "fixcli_in", cwd=tmp_path)["threads"] == 4

    migrated = tyler_store("migrate", "--check", cwd=tmp_path, env=env)
    assert migrated.returncode == 0 and "up to date" in migrated.stdout
    checked = tyler_store("--url", "memory://x", "check", "-k", "round_trip", "-x", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr
    assert "Conformance of memory://x" in checked.stdout
    assert "deselected" in checked.stdout  # -k reached pytest


def test_a_url_given_twice_is_a_usage_error(tmp_path: Path) -> None:
    result = tyler_store("migrate", "--url", "memory://", "memory://", cwd=tmp_path)
    assert result.returncode == 2
    assert "as an argument or as --url, not both" in result.stderr
