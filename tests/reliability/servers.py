"""Servers the fault tests start and break themselves: a TCP proxy whose connections can be cut,
and a Redis server of our own that can be restarted on its port and data directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for_port(port: int, *, up: bool = True, attempts: int = 200) -> None:
    """Wait until something listens on ``port`` (or, with ``up=False``, nothing does)."""
    for _ in range(attempts):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if not up:
                return
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if up:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'}")


class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`cut` closes every open connection
    (both sides), as a network failure or a server closing its sockets would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for side in (writer, upstream_writer):
            side.close()
            self._writers.discard(side)
        self._tasks.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def cut(self) -> int:
        """Close every connection through the proxy now; return how many were cut."""
        writers = list(self._writers)
        for writer in writers:
            transport = writer.transport
            transport.abort()  # a reset, not a polite close: nothing more gets through
        self._writers.clear()
        if writers:
            self.cuts += 1
        return len(writers) // 2

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.cut()
            for task in list(self._tasks):
                task.cancel()
            await self._server.wait_closed()


class OwnRedis:
    """A redis-server on its own port and data directory, with an fsync-always AOF, so a write
    it acknowledged survives a restart."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *[
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=asyncio.subprocess.DEVNULL,
        )
        await wait_for_port(self.port)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 30)
        self.process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
        self.restarts += 1


class OwnPostgres:
    """A PostgreSQL cluster of our own (``initdb`` in a temporary directory, its own port),
    stopped the hard way (``pg_ctl -m immediate``: no checkpoint, recovery from the WAL on
    start) and started again. Runs as the ``postgres`` OS user when the tests run as root,
    which PostgreSQL refuses."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = found[-1].parent
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres and shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        # Not pytest's tmp_path: the postgres user cannot traverse root's 0700 directories.
        self.directory = Path(tempfile.mkdtemp(prefix="tyler-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        subprocess.run(
            [*prefix, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def init(self) -> None:
        if self.as_postgres:
            shutil.chown(self.directory, "postgres")
        await asyncio.to_thread(
            self._run,
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",  # the cluster's creation need not survive a power cut; its WAL does
        )
        await self.start()

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        await asyncio.to_thread(
            self._run,
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    async def stop(self, mode: str = "immediate") -> None:
        await asyncio.to_thread(
            self._run, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
        )

    async def restart(self) -> None:
        await self.stop()
        await self.start()
        self.restarts += 1

    async def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            await self.stop("fast")
        shutil.rmtree(self.directory, ignore_errors=True)
