"""How the Redis backend reaches its server: the URLs it accepts and the redis-py client it builds.

redis-py reads a URL leniently (``/abc`` is database 0, ``/1/2`` database 12, and a query
parameter overrides the keyword of the same name), so :func:`parse_url` refuses what it would
misread. :func:`make_client` builds the client so that a call waits for a free connection, up to
``pool_timeout``, instead of failing while more tasks than connections run: the standalone client
through a blocking pool, the cluster client, whose nodes fail at once when their pool is
exhausted, through a :class:`_Gate` that lets at most as many calls run as a node has
connections.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import MaxConnectionsError, RedisClusterException

from tyler_core.errors import BackendNotFoundError
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url

__all__ = ["make_client", "parse_url"]

_SCHEMES = {"redis": False, "rediss": False, "redis+cluster": True, "rediss+cluster": True}
_DATABASE_PATH = re.compile(r"(/\d*)?")
#: redis-py's defaults: the cluster client's connections per node, and how long its blocking
#: pool waits.
_CLUSTER_CONNECTIONS = 100
_POOL_TIMEOUT = 20.0


def _malformed(url: str, reason: str) -> BackendNotFoundError:
    return BackendNotFoundError(f"malformed store URL {mask_url(url)!r}: {reason}")


def parse_url(url: str) -> tuple[str, bool]:
    """The URL redis-py gets, and whether it names a cluster.

    Raises:
        BackendNotFoundError: not a Redis URL, no host, a bad port or a database path that is
            not a number.
        ValueError: a cluster URL names a database other than 0, or the URL sets
            ``decode_responses`` (the backend reads bytes).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise _malformed(url, f"a Redis URL starts with one of {', '.join(_SCHEMES)}")
    if not parts.hostname:
        raise _malformed(url, "no host, e.g. redis://localhost:6379/0")
    try:
        _ = parts.port
    except ValueError:
        raise _malformed(url, "the port is not a number from 0 to 65535") from None
    if not _DATABASE_PATH.fullmatch(parts.path):
        raise _malformed(url, "the path is a database number, e.g. /0")
    cluster = _SCHEMES[scheme]
    if cluster and int(parts.path.strip("/") or 0) != 0:
        raise ValueError("a Redis Cluster has only database 0")
    if "decode_responses" in parse_qs(parts.query, keep_blank_values=True):
        raise ValueError(
            "the Redis backend reads replies as bytes: remove decode_responses from the URL"
        )
    # redis-py knows redis:// and rediss:// only; the cluster client is chosen here.
    return urlunsplit(parts._replace(scheme=scheme.removesuffix("+cluster"))), cluster


def make_client(url: str, *, cluster: bool, options: StoreOptions) -> Any:
    """The redis-py client. Keyword options the facade does not know go to redis-py."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": options.connect_timeout,
        # Every script is safe to run again (a write whose reply was lost finds its own
        # token and reports success), so a dropped connection is retried, not reported.
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3),
    }
    if options.pool_size is not None:
        kwargs["max_connections"] = options.pool_size + (options.max_overflow or 0)
    kwargs.update(options.extra)
    kwargs["decode_responses"] = False  # members and ids are bytes; decoded here
    timeout = _POOL_TIMEOUT if options.pool_timeout is None else options.pool_timeout
    if cluster:
        kwargs.setdefault("max_connections", _CLUSTER_CONNECTIONS)
        gate = _Gate(kwargs["max_connections"], timeout)
        return _GatedCluster.from_url(url, gate=gate, **kwargs)
    # Its default size is redis-py's (50) unless pool_size says.
    kwargs.setdefault("timeout", timeout)
    return Redis.from_pool(BlockingConnectionPool.from_url(url, **kwargs))


#: The gate whose slot the current task holds: the calls a gated call makes inside itself (a
#: pipeline resending a redirected command) run in that slot.
_HOLDING: ContextVar[_Gate | None] = ContextVar("tyler_redis_holding", default=None)


class _Gate:
    """At most ``limit`` calls of a cluster client at once; the others wait up to ``timeout``.

    A call uses at most one connection per node, so no node's pool is ever exhausted.
    """

    def __init__(self, limit: int, timeout: float) -> None:
        self._limit = limit
        self._timeout = timeout
        self._free = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the slots for the duration of a call."""
        if _HOLDING.get() is self:
            yield
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._free.acquire()
        except TimeoutError:
            raise MaxConnectionsError(
                f"no free connection after waiting {self._timeout:g}s (pool_timeout): all "
                f"{self._limit} are busy; raise pool_size or pool_timeout"
            ) from None
        holding = _HOLDING.set(self)
        try:
            yield
        finally:
            _HOLDING.reset(holding)
            self._free.release()


class _GatedCluster(RedisCluster):
    """A cluster client whose commands and pipelines each take a slot of its gate."""

    def __init__(self, *args: Any, gate: _Gate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate.slot():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # mypy takes ClusterPipeline for abstract; RedisCluster.pipeline builds one the same way.
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]


class _GatedPipeline(ClusterPipeline):
    """A pipeline that holds a slot of its client's gate while it runs."""

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, _GatedCluster)
        async with client.gate.slot():
            return await super().execute(raise_on_error, allow_redirections)
