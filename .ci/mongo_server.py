"""Run mongoeco's MongoDB-wire-compatible server until SIGTERM or SIGINT (tests only).

No MongoDB server can be installed on the project's machines, so the Mongo tests talk, through
the real PyMongo driver, to ``mongoeco.wire.proxy.AsyncMongoEcoProxyServer`` backed by its
in-memory engine. Needs Python 3.13 and ``mongoeco`` (see ``mongo-requirements.txt``); started
and stopped by ``mongo-server.sh``. Before serving, it patches a few mongoeco behaviours where
they differ from MongoDB's in results or in cost (each function below says which and why).

Usage: python mongo_server.py [--host 127.0.0.1] [--port 27017]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import signal
from typing import Any

from bson import ObjectId
from bson.regex import Regex as BsonRegex
from mongoeco._types import Regex
from mongoeco.core.query_plan import AndCondition, InCondition
from mongoeco.engines.memory import MemoryEngine, _MemoryIndexedCandidates
from mongoeco.engines.virtual_indexes import document_in_virtual_index, query_can_use_index
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


def check_compound_unique_by_key() -> None:
    """Check compound unique indexes through their index data, as mongoeco does for one field.

    mongoeco checks a single-field unique index by looking the new document's keys up in the
    index, but a compound one (``(thread_id, seq)`` of the benchmark's baseline) by comparing
    the document with every document of the collection, and its wire ``insert`` command inserts
    one document at a time: 600 documents took 10 s, W3's 5,000 about ten minutes, during which
    the server answered nothing (not even the driver's heartbeats), so every later operation
    failed. MongoDB looks the keys up in the index's B-tree.

    mongoeco's compound index data holds only the first value of each field, and nothing
    queries it (its planner uses single-field indexes), so here it holds every key the unique
    check derives from a document (one per element of an indexed array, missing as null, BSON
    equality: ``1`` and ``1.0`` are one key), kept up to date by mongoeco's own index
    maintenance (inserts, updates, deletes, transactions, index builds). The check then looks
    each key of the new document up, and still ignores the document being replaced. Indexes with
    a collation, or without index data, keep the full comparison. The documents refused are the
    same; when one breaks several unique indexes, a compound one is named last.
    """
    original_keys = MemoryEngine._index_keys
    original_check = MemoryEngine._ensure_unique_indexes

    def index_keys(self: MemoryEngine, document: Any, fields: list[str]) -> Any:
        if len(fields) == 1:
            return original_keys(self, document, fields)
        return self._unique_index_keys(document, fields)

    def ensure_unique_indexes(
        self: MemoryEngine, db_name: str, coll_name: str, candidate: Any, **kwargs: Any
    ) -> Any:
        indexes_view = kwargs.get("indexes_view")
        index_data_view = kwargs.get("index_data_view")
        indexes = (
            (self._indexes if indexes_view is None else indexes_view)
            .get(db_name, {})
            .get(coll_name, [])
        )
        index_data = (
            (self._index_data if index_data_view is None else index_data_view)
            .get(db_name, {})
            .get(coll_name, {})
        )
        by_key = [
            (index, index_data[index.name])
            for index in indexes
            if index.unique
            and len(index.fields) > 1
            and index.collation is None
            and index_data.get(index.name) is not None
        ]
        if not by_key:
            return original_check(self, db_name, coll_name, candidate, **kwargs)
        # mongoeco's own checks (``_id``, other indexes, index shapes) without these uniques.
        relaxed = {id(index) for index, _ in by_key}
        kwargs["indexes_view"] = {
            db_name: {
                coll_name: [
                    dataclasses.replace(index, unique=False) if id(index) in relaxed else index
                    for index in indexes
                ]
            }
        }
        result = original_check(self, db_name, coll_name, candidate, **kwargs)
        storage_view = kwargs.get("storage_view")
        coll = (
            (self._storage if storage_view is None else storage_view)
            .get(db_name, {})
            .get(coll_name, {})
        )
        exclude = kwargs.get("exclude_storage_key")
        if exclude is not None and exclude not in coll:
            exclude = self._storage_key(exclude)
        for index, index_map in by_key:
            if not document_in_virtual_index(candidate, index):
                continue
            for key in self._unique_index_keys(candidate, index.fields):
                matches = index_map.get(key)
                if matches and (exclude is None or any(m != exclude for m in matches)):
                    raise self._unique_key_error(  # type: ignore[no-untyped-call]
                        f"Duplicate key for unique index '{index.name}': {index.fields}={key!r}",
                        f"{db_name}.{coll_name}",
                        candidate,
                        index=index,
                        conflict=key,
                    )
        return result

    MemoryEngine._index_keys = index_keys  # type: ignore[method-assign]
    MemoryEngine._ensure_unique_indexes = ensure_unique_indexes  # type: ignore[method-assign]


def serve_in_from_indexes() -> None:
    """Find the candidates of ``field: {$in: [...]}`` through an index, as mongoeco does for
    ``field: value``.

    mongoeco serves an equality from a single-field index (and ``_id: value`` by key), but
    tests every document of the collection against a ``$in``. The backend's writers undo an
    attempt that lost a race by deleting ``{_id: {$in: [its message documents]}}``, so each
    lost attempt scanned every message of every thread: 16 concurrent appenders to one thread
    managed 1.5 appends/s beside W3's 5,000 messages (10/s on an empty server), and reads of
    several threads (``t: {$in: [...]}``) scanned all messages too. MongoDB looks each value up
    in the index.

    Here the candidates are the union of what the equality path would find for each value:
    from the field's ascending single-field index (the same usability checks: not hidden,
    sparse and partial indexes only where the query implies them, no collation), or for
    ``_id`` the documents stored under each value, when every value is a string or an ObjectId
    (the types whose storage key is their BSON equality). The query's filter still runs on
    every candidate, so the documents matched are the same. A ``$in`` with a regular
    expression or ``null`` (which also matches a missing field) still scans the collection.
    """
    original = MemoryEngine._indexed_candidate_storage_keys_for_plan_locked

    def plain(values: tuple[Any, ...]) -> bool:
        patterns = (re.Pattern, Regex, BsonRegex)
        return all(v is not None and not isinstance(v, patterns) for v in values)

    def indexed_candidates(
        self: MemoryEngine,
        indexes: list[Any],
        index_data: dict[str, Any],
        query_plan: Any,
        *,
        dialect: Any,
        collation: Any,
    ) -> Any:
        found = original(
            self, indexes, index_data, query_plan, dialect=dialect, collation=collation
        )
        if found is not None or collation is not None:
            return found
        clauses = query_plan.clauses if isinstance(query_plan, AndCondition) else (query_plan,)
        for node in clauses:
            if (
                not isinstance(node, InCondition)
                or node.null_matches_undefined
                or not plain(node.values)
            ):
                continue
            if node.field == "_id":
                if all(type(v) is str or isinstance(v, ObjectId) for v in node.values):
                    return _MemoryIndexedCandidates({self._storage_key(v) for v in node.values})
                continue
            for index in indexes:
                if index["key"] != [(node.field, 1)] or not query_can_use_index(
                    index, query_plan, dialect=dialect, collation=collation
                ):
                    continue
                index_map = index_data.get(index["name"])
                if index_map is None:
                    continue
                storage_keys: set[Any] = set()
                for value in node.values:
                    storage_keys.update(index_map.get((self._index_equality_key(value),), ()))
                return _MemoryIndexedCandidates(storage_keys)
        return None

    MemoryEngine._indexed_candidate_storage_keys_for_plan_locked = indexed_candidates  # type: ignore[method-assign]


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
    check_compound_unique_by_key()
    serve_in_from_indexes()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
