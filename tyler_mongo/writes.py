"""The write side of :class:`~tyler_mongo.backend.MongoBackend`: write, append and delete.

:class:`_Writes`, a mixin the backend inherits, carries out the plans of
:mod:`tyler_mongo.plans` (messages first, then the commit, then the clean-up), in a transaction
or without one, and tries again when another writer committed first.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError
from typing_extensions import override

from tyler_core.backend import StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError
from tyler_core.models import Message, utc_now
from tyler_mongo.plans import WritePlan, plan_append, plan_write
from tyler_mongo.reads import Document, _live

__all__ = ["_Writes"]

logger = logging.getLogger("tyler_mongo")

T = TypeVar("T")

# Optimistic writers retry when another writer committed first; concurrent appends to one
# thread each win in turn, so the bound is generous.
_ATTEMPTS = 200


# Message documents that have an expiry (the TTL index deletes them once it passes).
_MORTAL: Document = {"expires_at": {"$type": "date"}}


class _Conflict(Exception):
    """Another writer committed between this attempt's read and its commit: try again."""


def _warn_leftovers(count: int, thread_id: str) -> None:
    # Only an interrupted or failed writer leaves these: worth an operator's attention.
    logger.warning(
        "removed %d message documents left by an interrupted write of thread %s", count, thread_id
    )


class _Writes(StorageBackend):
    """The write methods of :class:`~tyler_mongo.backend.MongoBackend` (a mixin: the backend
    holds the client and the two collections, and says whether writes use transactions)."""

    _client: AsyncMongoClient[Document] | None
    transactions: bool

    if TYPE_CHECKING:

        def _collections(
            self,
        ) -> tuple[AsyncCollection[Document], AsyncCollection[Document]]: ...

    async def _in_transaction(self, step: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        """Run ``step`` once: in a transaction (retried by the driver on transient errors) or
        without one."""
        if not self.transactions:
            return await step(None)
        assert self._client is not None
        async with self._client.start_session() as session:
            return await session.with_transaction(step)

    async def _retrying(self, step: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        for attempt in range(_ATTEMPTS):
            try:
                return await self._in_transaction(step)
            except _Conflict:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("another writer committed first: retry %d", attempt + 1)
                # Jittered back-off, so that contending writers do not retry in lockstep.
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 25)))
        logger.warning("gave up a write after %d attempts: too many concurrent writers", _ATTEMPTS)
        raise ConcurrencyError("gave up after too many concurrent writes to the same thread")

    @override
    async def write(self, changes: ThreadChanges) -> None:
        threads, _ = self._collections()
        # A save that creates the thread, or writes it unchecked (copies, imports), first
        # assumes that none is stored and reads nothing: inserting the thread document is the
        # check. If one is stored after all, the insert fails and the next attempt reads it.
        assume_absent = not changes.expected_version

        async def attempt(session: AsyncClientSession | None) -> None:
            nonlocal assume_absent
            now = utc_now()
            document = None
            if not assume_absent:
                document = await threads.find_one({"_id": changes.thread.id}, session=session)
            assume_absent = False
            await self._execute(plan_write(changes, document, now), session)

        await self._retrying(attempt)

    @override
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        threads, _ = self._collections()

        async def attempt(session: AsyncClientSession | None) -> list[Message]:
            now = utc_now()
            document = await threads.find_one({"_id": thread_id}, session=session)
            plan, added = plan_append(thread_id, messages, document, updated_at=updated_at, now=now)
            await self._execute(plan, session)
            return added

        added = await self._retrying(attempt)
        return [message.model_copy(deep=True) for message in added]

    async def _execute(self, plan: WritePlan, session: AsyncClientSession | None) -> None:
        """Carry out ``plan``: messages first, then the commit, then the clean-up."""
        _, messages = self._collections()
        if plan.expiry_update is not None:
            await messages.update_many(
                {"t": plan.thread_id, "e": {"$lt": plan.epoch}, **_MORTAL},
                plan.expiry_update,
                session=session,
            )
        if plan.inserts:
            await messages.insert_many(plan.inserts, session=session)
        try:
            committed = await self._commit(plan, session)
        except DuplicateKeyError:
            committed = False  # the thread was created meanwhile
        if not committed:
            if session is None and plan.inserts:
                await messages.delete_many({"_id": {"$in": plan.inserted_ids}})
            raise _Conflict
        if plan.immortal_after:
            await messages.update_many(
                {"t": plan.thread_id, **_MORTAL}, {"$unset": {"expires_at": ""}}, session=session
            )
        if plan.mortal_after is not None:
            await self._make_mortal(plan, plan.mortal_after, session)
        if plan.whole:
            await self._clean_up_after_replace(plan, session)
            return
        if plan.replaced:
            await messages.delete_many({"_id": {"$in": plan.replaced}}, session=session)
        await self._clean_leftovers(plan, session)

    async def _make_mortal(
        self, plan: WritePlan, expiry: datetime, session: AsyncClientSession | None
    ) -> None:
        """After a commit that gave a thread without TTL one: give its older message documents
        ``expiry``. A writer that committed after this one read the thread with this commit's
        ``msg_expires_at`` and left documents without expiry alone, so if one did, its needs
        are applied here too: none (its thread has no TTL) or a later expiry."""
        threads, messages = self._collections()
        await messages.update_many(
            {"t": plan.thread_id, "e": {"$lt": plan.epoch}, "expires_at": None},
            {"$set": {"expires_at": expiry}},
            session=session,
        )
        current = await threads.find_one(
            {"_id": plan.thread_id}, projection={"epoch": 1, "msg_expires_at": 1}, session=session
        )
        if current is None or current.get("epoch") == plan.epoch:
            return
        needed = current.get("msg_expires_at")
        update = (
            {"$unset": {"expires_at": ""}} if needed is None else {"$max": {"expires_at": needed}}
        )
        await messages.update_many({"t": plan.thread_id, **_MORTAL}, update, session=session)

    async def _commit(self, plan: WritePlan, session: AsyncClientSession | None) -> bool:
        """The commit point: one atomic write of the thread document. ``False`` if another
        writer committed since ``plan`` was read."""
        threads, _ = self._collections()
        if plan.read_epoch is None:
            await threads.insert_one(plan.thread_document(), session=session)
            return True
        update: Document = {"$set": plan.thread_set}
        if plan.thread_unset:
            update["$unset"] = plan.thread_unset
        if plan.thread_inc:
            update["$inc"] = plan.thread_inc
        # ``incarnation: None`` also matches a document written before tokens existed.
        query = {
            "_id": plan.thread_id,
            "epoch": plan.read_epoch,
            "incarnation": plan.read_incarnation,
        }
        result = await threads.update_one(query, update, session=session)
        return result.matched_count == 1

    async def _clean_up_after_replace(
        self, plan: WritePlan, session: AsyncClientSession | None
    ) -> None:
        """After a commit that replaced every message: delete every older message document.

        The commit references only documents of this writer's epoch, and later writers only
        those and their own, so no document of a lower epoch can be referenced any more: the
        replaced documents and any leftovers go in one step, without counting first.
        """
        _, messages = self._collections()
        result = await messages.delete_many(
            {"t": plan.thread_id, "e": {"$lt": plan.epoch}}, session=session
        )
        leftovers = result.deleted_count - len(plan.replaced)
        if leftovers > 0 and plan.after_expiry:
            logger.debug(
                "removed %d message documents of an expired thread %s", leftovers, plan.thread_id
            )
        elif leftovers > 0:
            _warn_leftovers(leftovers, plan.thread_id)

    async def _clean_leftovers(self, plan: WritePlan, session: AsyncClientSession | None) -> None:
        """Delete message documents of writers that can no longer commit (an interrupted or
        failed save, a delete cut short), if there are any: counting is cheap, scanning not."""
        _, messages = self._collections()
        stored = await messages.count_documents({"t": plan.thread_id}, session=session)
        if stored <= len(plan.refs):
            return
        result = await messages.delete_many(
            {
                "t": plan.thread_id,
                "e": {"$lt": plan.epoch},
                "_id": {"$nin": [ref["o"] for ref in plan.refs.values()]},
            },
            session=session,
        )
        if result.deleted_count:
            _warn_leftovers(result.deleted_count, plan.thread_id)

    @override
    async def delete(self, thread_id: str) -> bool:
        threads, messages = self._collections()

        async def attempt(session: AsyncClientSession | None) -> bool:
            document = await threads.find_one_and_delete(
                {"_id": thread_id, **_live(utc_now())}, session=session
            )
            if document is None:
                return False
            # Writers that started later have a higher epoch: their documents stay.
            await messages.delete_many(
                {"t": thread_id, "e": {"$lte": document["epoch"]}}, session=session
            )
            return True

        return await self._in_transaction(attempt)
