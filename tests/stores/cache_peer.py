"""Process B of the two-process cache tests: a Redis store with its client cache, driven by lines
on stdin, answering on stdout.

    python -m tests.stores.cache_peer <url> <prefix> <async|sync>

Commands: ``live`` (waits until the cache serves from memory, answers ``live``), ``get <id>``
(answers ``<found 0|1> <hit 0|1>``: whether a record came back, and whether from the cache),
``quit``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from coatcheck.stores.redis import AsyncRedisStore, RedisStore


def main() -> None:
    url, prefix, twin = sys.argv[1:4]
    if twin == "async":
        asyncio.run(serve_async(url, prefix))
    else:
        serve_sync(url, prefix)


def answer(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def wait_live(store: AsyncRedisStore | RedisStore) -> None:
    assert store.cache is not None
    deadline = time.monotonic() + 20
    while not store.cache.live:
        if time.monotonic() > deadline:
            raise SystemExit("the cache never went live")
        store.cache.lookup(store.keys.record("warm-up"))  # starts the channel thread
        time.sleep(0.01)


async def serve_async(url: str, prefix: str) -> None:
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    assert store.cache is not None
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "live":
            await asyncio.to_thread(wait_live, store)
            answer("live")
        elif command == "get":
            hits = store.cache.stats.hits
            # As the managers read: the cache first (no I/O), then the store.
            record = store.recall(arg) or await store.get(arg)
            answer(f"{int(record is not None)} {int(store.cache.stats.hits > hits)}")
        else:
            break
    await store.close()


def serve_sync(url: str, prefix: str) -> None:
    store = RedisStore.from_url(url, prefix=prefix)
    assert store.cache is not None
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "live":
            wait_live(store)
            answer("live")
        elif command == "get":
            hits = store.cache.stats.hits
            record = store.recall(arg) or store.get(arg)
            answer(f"{int(record is not None)} {int(store.cache.stats.hits > hits)}")
        else:
            break
    store.close()


if __name__ == "__main__":
    main()
