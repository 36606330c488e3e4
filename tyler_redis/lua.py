"""A Lua script of the Redis backend by its SHA1, and how one is run (``EVALSHA``, loaded again
when the server has forgotten it). The scripts themselves are in :mod:`tyler_redis.scripts`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["Script", "run"]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


async def run(client: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` by its SHA; load it when the server has forgotten it (restart, flush)."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # Normal once per script after a server restart or SCRIPT FLUSH, so not a warning.
        logging.getLogger("tyler_redis").debug(
            "the server had forgotten the %s script: loading it again", script.name
        )
        # EVAL runs the script and caches it on the node that owns the keys.
        return await client.eval(script.source, len(keys), *keys, *args)
