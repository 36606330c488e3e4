"""Entry-point target of the Redis backend. Imports no driver."""

from __future__ import annotations

from tyler_core.registry import BackendSpec

redis = BackendSpec(
    target="tyler_redis.backend:RedisBackend",
    requires=("redis",),
    install="tyler-threadstore[redis]",
    driver="redis-py",
)
