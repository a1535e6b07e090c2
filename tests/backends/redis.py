"""Redis stores for the contract suite: the shared server on 6379 and the test session's cluster.

Each store gets its own random key prefix and, at the end, deletes exactly the keys under that
prefix (found with SCAN, never KEYS, never FLUSHDB: the server is shared).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from coatcheck.stores.base import AsyncStore
from coatcheck.stores.redis import AsyncRedisStore, RedisStore
from tests.redis_servers import shared_cluster
from tests.services import REDIS_HOST, REDIS_PORT, require_service

from .adapt import AsyncOverSync


def new_prefix() -> str:
    """A key prefix no other test uses (no glob characters, so SCAN MATCH finds exactly it)."""
    return f"cc-test:{uuid.uuid4().hex[:12]}:"


def shared_url() -> str:
    """The URL of the shared server, after skipping (laptop) or failing (CI) when it is down."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


async def cluster_url() -> str:
    """The URL of the session's test cluster, started on first use."""
    cluster = await asyncio.to_thread(shared_cluster)
    return cluster.url


async def delete_prefix_async(
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster, prefix: str
) -> None:
    """Delete every key under ``prefix`` (SCAN walks every primary of a cluster)."""
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        await client.delete(key)


def delete_prefix_sync(client: redis.Redis | redis.cluster.RedisCluster, prefix: str) -> None:
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


@asynccontextmanager
async def _async_store(url: str) -> AsyncIterator[AsyncStore]:
    prefix = new_prefix()
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    try:
        yield store
    finally:
        try:
            await delete_prefix_async(store.client, prefix)
        finally:
            await store.close()


@asynccontextmanager
async def _sync_store(url: str) -> AsyncIterator[AsyncStore]:
    prefix = new_prefix()
    store = await asyncio.to_thread(RedisStore.from_url, url, prefix=prefix)
    try:
        yield AsyncOverSync(store)
    finally:
        try:
            await asyncio.to_thread(delete_prefix_sync, store.client, prefix)
        finally:
            await asyncio.to_thread(store.close)


@asynccontextmanager
async def redis_async() -> AsyncIterator[AsyncStore]:
    async with _async_store(shared_url()) as store:
        yield store


@asynccontextmanager
async def redis_sync() -> AsyncIterator[AsyncStore]:
    async with _sync_store(shared_url()) as store:
        yield store


@asynccontextmanager
async def redis_cluster_async() -> AsyncIterator[AsyncStore]:
    async with _async_store(await cluster_url()) as store:
        yield store


@asynccontextmanager
async def redis_cluster_sync() -> AsyncIterator[AsyncStore]:
    async with _sync_store(await cluster_url()) as store:
        yield store


FACTORIES: dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]] = {
    "redis": redis_async,
    "redis-sync": redis_sync,
    "redis-cluster": redis_cluster_async,
    "redis-cluster-sync": redis_cluster_sync,
}
