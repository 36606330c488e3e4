"""The Redis backend of tyler-threadstore: :class:`tyler_redis.backend.RedisBackend`.

Registered for ``redis://``, ``rediss://``, ``redis+cluster://`` and ``rediss+cluster://``
through entry points (see :mod:`tyler_redis._spec`); importing this package imports no driver.
"""
