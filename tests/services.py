"""Where the test servers are: a URL per service, from its variable, the local default, or
testcontainers; else the tests skip with the reason (and fail under TYLER_TEST_REQUIRE_ALL=1)."""

from __future__ import annotations

import os
import shutil
import socket
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

import pytest

REQUIRE_ALL = os.environ.get("TYLER_TEST_REQUIRE_ALL") == "1"


@dataclass(frozen=True)
class Service:
    variable: str
    default: str
    port: int
    container: str | None  # testcontainers module for users with Docker


SERVICES = {
    "postgres": Service(
        "TYLER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1/test", 5432, "postgres"
    ),
    "mysql": Service("TYLER_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1/test", 3306, "mysql"),
    "redis": Service("TYLER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", 6379, "redis"),
    "redis_cluster": Service(
        "TYLER_TEST_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7001", 7001, None
    ),
    "mongodb": Service("TYLER_TEST_MONGODB_URL", "mongodb://127.0.0.1:27017", 27017, "mongodb"),
}


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port within ``timeout``."""
    with suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _docker_runs() -> bool:
    if shutil.which("docker") is None:
        return False
    with suppress(Exception):
        import docker  # type: ignore[import-not-found,import-untyped,unused-ignore]

        docker.from_env().ping()
        return True
    return False


_containers: list[object] = []


def _from_container(name: str, service: Service) -> str | None:
    if service.container is None or not _docker_runs():
        return None
    try:
        if name == "postgres":
            from testcontainers.postgres import PostgresContainer

            pg = PostgresContainer("postgres:16", driver="asyncpg").start()
            _containers.append(pg)
            return str(pg.get_connection_url())
        if name == "mysql":
            from testcontainers.mysql import MySqlContainer

            my = MySqlContainer("mariadb:11", dialect="asyncmy").start()
            _containers.append(my)
            return str(my.get_connection_url())
        if name == "redis":
            from testcontainers.redis import RedisContainer

            rd = RedisContainer("redis:7").start()
            _containers.append(rd)
            return f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
        if name == "mongodb":
            from testcontainers.mongodb import MongoDbContainer

            mg = MongoDbContainer("mongo:7").start()
            _containers.append(mg)
            return str(mg.get_connection_url())
    except Exception:
        return None
    return None


@cache
def _resolve(name: str) -> tuple[str | None, str]:
    service = SERVICES[name]
    configured = os.environ.get(service.variable)
    if configured:
        return configured, ""
    host = urlsplit(service.default.replace("+cluster", "")).hostname or "127.0.0.1"
    if answers(host, service.port):
        return service.default, ""
    url = _from_container(name, service)
    if url:
        return url, ""
    return None, (
        f"no {name} server: set {service.variable}, start one on {host}:{service.port}"
        + (", or run Docker for testcontainers" if service.container else "")
    )


def service_url(name: str) -> str:
    """The URL of the named test service, or skip (fail under TYLER_TEST_REQUIRE_ALL=1)."""
    url, reason = _resolve(name)
    if url is None:
        if REQUIRE_ALL:
            pytest.fail(f"{reason} (TYLER_TEST_REQUIRE_ALL=1)", pytrace=False)
        pytest.skip(reason)
    return url
