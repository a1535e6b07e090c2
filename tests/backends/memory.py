from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from coatcheck.stores.base import AsyncStore
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore

from .adapt import AsyncOverSync


@asynccontextmanager
async def memory() -> AsyncIterator[AsyncStore]:
    yield AsyncMemoryStore()


@asynccontextmanager
async def memory_sync() -> AsyncIterator[AsyncStore]:
    yield AsyncOverSync(MemoryStore())


FACTORIES: dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]] = {
    "memory": memory,
    "memory-sync": memory_sync,
}
