"""Run mongoeco's MongoDB-wire-compatible server until SIGTERM or SIGINT (tests only).

No MongoDB server can be installed on the project's machines, so the Mongo tests talk, through
the real PyMongo driver, to ``mongoeco.wire.proxy.AsyncMongoEcoProxyServer`` backed by its
in-memory engine. Needs Python 3.13 and ``mongoeco`` (see ``mongo-requirements.txt``); started
and stopped by ``mongo-server.sh``.

Usage: python mongo_server.py [--host 127.0.0.1] [--port 27017]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from mongoeco.engines.memory import MemoryEngine
from mongoeco.errors import OperationFailure
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer
from mongoeco.wire.sessions import WireSessionStore

# MongoDB's code for a write conflict; the driver retries a transaction that fails with the
# TransientTransactionError label (``ClientSession.with_transaction``).
WRITE_CONFLICT = 112


def abort_conflicting_commits() -> None:
    """Make mongoeco's commit-time write conflicts behave like MongoDB's.

    mongoeco refuses to commit a transaction when anything was written since its snapshot, with
    an error that has neither a code nor the ``TransientTransactionError`` label, and leaves the
    failed transaction open, so the session's next transaction silently continues it (with its
    writes). MongoDB aborts the transaction and labels the error (code 112), and drivers retry.
    Without this the backend would see a hard error, or its own uncommitted writes, where
    MongoDB's clients see a clean retry.
    """
    original = WireSessionStore.commit_transaction

    def commit_transaction(self: WireSessionStore, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return original(self, body)
        except OperationFailure as exc:
            if getattr(exc, "code", None) is not None or "write conflict" not in str(exc).lower():
                raise
            session = self._require_session(body)
            if session.transaction_active:
                session.abort_transaction()
            raise OperationFailure(
                str(exc), code=WRITE_CONFLICT, error_labels=("TransientTransactionError",)
            ) from exc

    WireSessionStore.commit_transaction = commit_transaction  # type: ignore[method-assign]


def check_ids_by_key() -> None:
    """Check a lone inserted document's ``_id`` by key lookup, as mongoeco does for batches.

    mongoeco compares the ``_id`` of a document inserted on its own with the ``_id`` of every
    document in the collection, and its wire ``insert`` command inserts one document at a
    time, so filling a collection took time growing with the square of its size (the copy
    chain's 2,000 threads spent 80-90 s there). MongoDB checks ``_id`` through its unique
    index. Duplicates (``"a"``, ``1``, ``1.0``) are still refused.
    """
    original = MemoryEngine._ensure_unique_indexes

    def ensure_unique_indexes(self: MemoryEngine, *args: Any, **kwargs: Any) -> Any:
        kwargs["scan_payload_id"] = False
        return original(self, *args, **kwargs)

    MemoryEngine._ensure_unique_indexes = ensure_unique_indexes  # type: ignore[method-assign]


async def serve(host: str, port: int) -> None:
    """Serve on host:port until a termination signal arrives, then close cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncMongoEcoProxyServer(host=host, port=port) as server:
        address = server.address
        print(f"mongoeco wire server listening on {address.host}:{address.port}", flush=True)
        await stop.wait()
    print("mongoeco wire server stopped", flush=True)


def main() -> None:
    """Parse the address and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    args = parser.parse_args()
    abort_conflicting_commits()
    check_ids_by_key()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
