"""The writer the SQLite crash test kills: saves and appends forever, printing each one that
returned (``save THREAD GEN`` / ``append THREAD MESSAGE_ID``) before starting the next.

Run as a zygote: it imports everything once (seconds on a busy machine), then for every
``PATH START`` line on stdin forks a writer, prints ``child PID``, waits for it to die (the test
kills it) and prints ``dead PID``. Forking here is safe: the zygote runs no threads or loop.

Every save stamps one generation number into the thread's title and attributes and into every
message, so a reader can tell a whole old or new version from a mix.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore

THREADS = [f"crash-{number}" for number in range(4)]


def stamp(thread: Thread, generation: int) -> None:
    """Make every part of ``thread`` say ``generation``; add one message and drop the oldest
    beyond eight, so every save rewrites a thread of the same size."""
    thread.messages = thread.messages[-7:]
    thread.add_message(Message(id=f"s{generation}", role="assistant", content=""))
    thread.title = f"gen {generation} n={len(thread.messages)}"
    thread.attributes = {"gen": generation, "filler": "x" * 2000}
    for number, message in enumerate(thread.messages):
        message.content = f"gen {generation} #{number} " + "y" * 500
        message.attributes = {"gen": generation}


async def write(path: str, start: int) -> None:
    async with await ThreadStore.create(f"sqlite+aiosqlite:///{path}") as store:
        generation = start
        while True:
            generation += 1
            for thread_id in THREADS:
                thread = await store.get(thread_id) or Thread(id=thread_id)
                stamp(thread, generation)
                await store.save(thread)
                print(f"save {thread_id} {generation}", flush=True)
                message_id = f"a{generation}"
                await store.append(
                    thread_id, Message(id=message_id, role="user", content=f"gen {generation} +")
                )
                print(f"append {thread_id} {message_id}", flush=True)


async def warm_up() -> None:
    """Open and close a store once, so the children start with everything imported (the first
    store of a process imports the migrations: seconds, on a busy machine)."""
    with tempfile.TemporaryDirectory() as directory:
        async with await ThreadStore.create(f"sqlite+aiosqlite:///{directory}/warm.db") as store:
            await store.count()


def zygote() -> None:
    """Fork one writer per request line; report its pid and its death."""
    asyncio.run(warm_up())
    for line in sys.stdin:
        path, start = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(write(path, int(start)))
            finally:
                os._exit(1)
        print(f"child {pid}", flush=True)
        os.waitpid(pid, 0)
        # On a line of its own even if the writer died half-way through printing one.
        print(f"\ndead {pid}", flush=True)


if __name__ == "__main__":
    zygote()
