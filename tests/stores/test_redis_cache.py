"""The Redis stores' client-side cache: reads served from process memory, and never a record that
another process has deleted, changed or let expire (see ``coatcheck/stores/_redis_cache.py``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coatcheck import auth
from coatcheck._core.http import RequestView
from coatcheck._core.record import SessionRecord
from coatcheck.asgi import SessionMiddleware
from coatcheck.errors import ConfigurationError, StoreUnavailableError
from coatcheck.integrations.starlette import get_session
from coatcheck.manager import AsyncSessionManager
from coatcheck.stores import _redis_cache as cache_module
from coatcheck.stores._redis_cache import (
    ClientCache,
    ClientCacheConfig,
    Push,
    Resp3Reader,
    RespError,
    Target,
)
from coatcheck.stores.redis import AsyncRedisStore, RedisStore, parse_redis_url
from coatcheck.testing import test_config
from tests.backends.redis import delete_prefix_async, new_prefix, shared_url
from tests.redis_servers import (
    Cluster,
    RedisServer,
    redis_server,
    require_redis_binaries,
    send,
    shared_cluster,
    start_on_a_free_port,
)
from tests.stores.test_contract import NOW, make
from tests.stores.test_redis import CountingConnection, Delta, command_calls, later

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
REPEATS = 200


async def wait_until(condition: Any, what: str, seconds: float = 10.0) -> None:
    """Poll ``condition()`` (a no-argument callable) until it is true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def live(store: AsyncRedisStore) -> AsyncRedisStore:
    """``store`` once its cache serves from memory (the first lookup starts its channel)."""
    assert store.cache is not None
    store.cache.lookup(store.keys.record("warm-up"))
    await wait_until(lambda: store.cache is not None and store.cache.live, "the cache channel")
    return store


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server this test owns (it may count commands, kill or pause it)."""
    with redis_server(tmp_path / "redis") as started:
        yield started


@pytest.fixture
async def inspect(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(port=server.port)
    yield client
    await client.aclose()


async def hgets(inspect: redis.asyncio.Redis) -> int:
    return (await command_calls(inspect)).get("hget", 0)


# --- the rules, on one server --------------------------------------------------------------------


async def test_a_read_of_a_seen_session_costs_no_round_trip(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """The first read of a session goes to Redis; the next ones are answered from memory, each
    as a fresh object that the caller may change without changing what the next read gets."""
    store = await live(AsyncRedisStore.from_url(server.url))
    writer = AsyncRedisStore.from_url(server.url, client_cache=False)
    record = make(user_id="u1", data={"cart": [1, 2]})
    assert await writer.put(record, 0)
    await writer.close()
    before = await hgets(inspect)
    first = await store.get(record.id)
    assert first == record
    assert await hgets(inspect) == before + 1
    for _ in range(5):
        again = await store.get(record.id)
        assert again == record
        assert again is not first
        assert again is not None
        again.data["cart"].append(3)
    assert await hgets(inspect) == before + 1
    assert store.cache is not None
    assert store.cache.stats.hits == 5
    await store.close()


async def test_changes_by_another_process_reach_the_cache(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """A write, a touch, a TTL expiry and a FLUSHDB by anyone else drop the cached record: the
    next read (once the invalidation arrived) sees the change."""
    reader = await live(AsyncRedisStore.from_url(server.url))
    writer = AsyncRedisStore.from_url(server.url, client_cache=False)
    record = make(user_id="u1")
    assert await writer.put(record, 0)
    assert await reader.get(record.id) == record
    newer = later(record, 5)
    assert await writer.put(newer, record.version)
    await wait_until(lambda: reader.cache is not None and len(reader.cache) == 0, "invalidation")
    assert await reader.get(record.id) == newer

    # A change behind the store's back (a touch of its TTL) invalidates too.
    assert await reader.get(record.id) == newer
    await inspect.pexpire(reader.keys.record(record.id), 100)
    await wait_until(lambda: reader.cache is not None and len(reader.cache) == 0, "a touch")
    assert await reader.get(record.id) == newer
    await asyncio.sleep(0.3)  # Redis expires the key: its invalidation drops the entry
    await wait_until(lambda: reader.cache is not None and len(reader.cache) == 0, "expiry")
    assert await reader.get(record.id) is None

    other = make()
    assert await writer.put(other, 0)
    assert await reader.get(other.id) == other
    await inspect.flushdb()  # our own throwaway server
    await wait_until(lambda: reader.cache is not None and len(reader.cache) == 0, "flush")
    assert await reader.get(other.id) is None
    await reader.close()
    await writer.close()


async def test_a_delete_elsewhere_is_seen_by_the_very_next_read(server: RedisServer) -> None:
    """A delete in another store (its own cache channel, as in another process) is refused by
    this store's next read, with no waiting: the deleter's barrier round trip makes sure the
    invalidation arrived first."""
    reader = await live(AsyncRedisStore.from_url(server.url))
    deleter = await live(AsyncRedisStore.from_url(server.url))
    stale = 0
    for _ in range(50):
        record = make(user_id="u1")
        assert await deleter.put(record, 0)
        assert await reader.get(record.id) == record
        assert await reader.get(record.id) == record
        await deleter.delete(record.id)
        stale += await reader.get(record.id) is not None
    assert reader.cache is not None
    assert reader.cache.stats.hits >= 45
    assert stale == 0
    await reader.close()
    await deleter.close()


async def test_this_process_reads_its_own_writes(server: RedisServer) -> None:
    """A write by this store is never followed by an older cached read, even before Redis's
    invalidation of it arrives."""
    store = await live(AsyncRedisStore.from_url(server.url))
    record = make()
    assert await store.put(record, 0)
    current = record
    for step in range(30):
        assert await store.get(current.id) == current
        assert await store.get(current.id) == current
        newer = later(current, 1)
        assert await store.put(newer, current.version)
        current = newer
        if step % 10 == 9:
            replacement = make(user_id="u1")
            assert await store.replace(replacement, current.id, current.version)
            assert await store.get(current.id) is None
            current = replacement
    await store.delete(current.id)
    assert await store.get(current.id) is None
    await store.close()


async def test_concurrent_writes_are_read_back_in_batches_and_all_cached(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes sent in one event-loop pass reach Redis together, so their invalidations come back
    in one message; the cache re-reads those keys in batches of at most REFILL_BATCH per write on
    the channel, and then answers every one of them from memory, as written."""
    sizes: list[int] = []
    send_all = cache_module._Channel.send_all

    def counting(channel: Any, waiting: list[Any], data: bytes) -> None:
        sizes.append(sum(isinstance(what, cache_module.Fill) for what in waiting))
        send_all(channel, waiting, data)

    monkeypatch.setattr(cache_module._Channel, "send_all", counting)
    store = await live(AsyncRedisStore.from_url(server.url))
    assert store.cache is not None
    records = [make(user_id=f"u{n}") for n in range(100)]
    assert all(await asyncio.gather(*(store.put(r, 0) for r in records)))
    keys = [store.keys.record(r.id) for r in records]
    await wait_until(
        lambda: all(key in store.cache for key in keys), "every written record cached again"
    )
    misses = store.cache.stats.misses
    assert [store.recall(r.id) for r in records] == records
    assert store.cache.stats.misses == misses
    assert 1 < max(sizes) <= cache_module.REFILL_BATCH, sizes
    assert sum(sizes) == len(records)
    await store.close()


async def test_an_entry_keeps_an_image_from_its_second_hit_and_copies_stay_independent(
    server: RedisServer,
) -> None:
    """The first hit of a cached entry decodes its JSON and keeps nothing more (a session
    written on every request is read once per version); the second keeps an image, and every
    later hit is a copy of it: equal to what was written, and never sharing what a caller may
    change."""
    store = await live(AsyncRedisStore.from_url(server.url))
    assert store.cache is not None
    record = make(user_id="u1", data={"cart": [{"sku": "A", "qty": 1}], "n": 1})
    assert await store.put(record, 0)
    key = store.keys.record(record.id)
    await wait_until(lambda: key in store.cache, "the written record cached again")
    entry = store.cache._entries.get(key)
    assert entry is not None
    assert entry.image is None
    first = store.recall(record.id)
    assert first == record
    assert entry.image is None
    assert entry.head == (record.version, "u1", record.expires_at, record.last_seen_at)
    first.data["cart"].append({"sku": "B"})  # the caller's copy, not the cache's
    second = store.recall(record.id)
    assert second == record
    assert entry.image is not None
    second.data["cart"].clear()
    third = store.recall(record.id)
    assert third == record
    assert third.snapshots is not None
    await store.close()


async def test_a_killed_channel_drops_the_cache_until_it_is_back(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """When the invalidation channel is closed, the cache is emptied and every read goes to
    Redis; the channel reconnects by itself and caching resumes."""
    store = await live(AsyncRedisStore.from_url(server.url))
    writer = AsyncRedisStore.from_url(server.url, client_cache=False)
    record = make()
    assert await writer.put(record, 0)
    await writer.close()
    assert await store.get(record.id) == record
    assert await store.get(record.id) == record
    clients = await inspect.client_list()
    channels = [c for c in clients if c["name"] == cache_module.CHANNEL_NAME]
    assert len(channels) == 1
    await inspect.client_kill_filter(_id=channels[0]["id"])
    await asyncio.sleep(0.05)

    before = await hgets(inspect)
    assert await store.get(record.id) == record  # the closed channel is seen: a real read
    assert await hgets(inspect) == before + 1
    assert store.cache is not None
    assert store.cache.stats.drops == 1
    await live(store)
    # A read that starts once the channel is back may fill the cache again.
    assert await store.get(record.id) == record
    assert await store.get(record.id) == record
    assert await hgets(inspect) <= before + 2
    await store.close()


async def test_a_hung_server_is_never_answered_from_memory(server: RedisServer) -> None:
    """Once the channel's heartbeat goes unanswered the cache is dropped: reads of a hung server
    fail (503) instead of serving what may have been revoked meanwhile."""
    store = await live(AsyncRedisStore.from_url(server.url, socket_timeout=0.3))
    record = make()
    assert await store.put(record, 0)
    assert await store.get(record.id) == record
    server.pause()
    try:
        await asyncio.sleep(cache_module.STALE_AFTER + 0.2)
        assert store.cache is not None
        assert not store.cache.live
        with pytest.raises(StoreUnavailableError):
            await store.get(record.id)
    finally:
        server.resume()
    await live(store)
    assert await store.get(record.id) == record
    await store.close()


async def test_entries_have_a_maximum_age_and_the_cache_a_size(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """An entry older than client_cache_ttl is read again from Redis, and past
    client_cache_size records the least recently used one goes."""
    store = await live(
        AsyncRedisStore.from_url(f"{server.url}?client_cache_ttl=0.2&client_cache_size=2")
    )
    writer = AsyncRedisStore.from_url(server.url, client_cache=False)
    a, b, c = make(), make(), make()
    for record in (a, b, c):
        assert await writer.put(record, 0)
    await writer.close()
    before = await hgets(inspect)
    for record in (a, b, a, c):  # c pushes out b, the least recently used
        assert await store.get(record.id) == record
    assert await hgets(inspect) == before + 3
    assert await store.get(a.id) == a
    assert await hgets(inspect) == before + 3
    assert await store.get(b.id) == b
    assert await hgets(inspect) == before + 4
    await asyncio.sleep(0.25)
    assert await store.get(b.id) == b
    assert await hgets(inspect) == before + 5
    await store.close()


async def test_an_injected_clock_ages_the_entries_and_a_closed_cache_serves_nothing(
    server: RedisServer,
) -> None:
    """A hit reads the heartbeat's monotonic clock once, and reuses it for the entry's age only
    when the ages are on that clock: an injected clock still decides them. Once closed, the
    cache answers nothing from memory, even before its channel thread has stopped."""
    now = [1000.0]
    cache = ClientCache(
        ClientCacheConfig(max_age=5.0),
        Target(nodes=(("127.0.0.1", server.port),)),
        "coatcheck:s:",
        clock=lambda: now[0],
    )
    store = await live(
        AsyncRedisStore(redis.asyncio.Redis(port=server.port), owns_client=True, client_cache=cache)
    )
    record = make(user_id="u1")
    assert await store.put(record, 0)
    key = store.keys.record(record.id)
    await wait_until(lambda: key in cache, "the re-read after the insert")
    assert store.recall(record.id) == record
    now[0] += 4.9  # the monotonic clock has barely moved; this one says the entry is 4.9 s old
    assert store.recall(record.id) == record
    now[0] += 0.2
    assert store.recall(record.id) is None
    assert key not in cache
    assert await store.get(record.id) == record  # read again from Redis, cached again
    assert store.recall(record.id) == record
    hits = cache.stats.hits
    with cache._lock:  # as close() begins: closed, the channels not yet dropped
        cache._closed = True
    assert cache.lookup(key) is None
    assert store.recall(record.id) is None
    assert cache.stats.hits == hits
    await store.close()


async def test_the_cache_is_bounded_in_bytes_and_never_holds_an_oversized_record(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """client_cache_bytes bounds what the entries hold, whatever the number of records (an
    outside attack grew a process by 0.38 MiB per 240 KB anonymous cart read, up to the 10,000
    records of client_cache_size); a record longer than a 64th of it is never cached; and
    entries past their age are swept out without being read again."""
    budget = 256 * 1024
    store = await live(
        AsyncRedisStore.from_url(f"{server.url}?client_cache_bytes={budget}&client_cache_ttl=0.3")
    )
    cache = store.cache
    assert cache is not None
    writer = AsyncRedisStore.from_url(server.url, client_cache=False)
    records = [make(data={"cart": ["x" * 3000]}) for _ in range(60)]  # ~3.5 KB of JSON each
    oversized = make(data={"cart": ["y" * (budget // 64)]})
    for record in [*records, oversized]:
        assert await writer.put(record, 0)
    await writer.close()
    for record in records:
        assert await store.get(record.id) == record
        assert store.recall(record.id) == record  # cached (as the most recently used)
    assert cache._entries.bytes <= budget
    assert 0 < len(cache) < len(records)  # the oldest went, by bytes: 60 x ~7 KB > 256 KiB
    before = await hgets(inspect)
    for _ in range(3):
        assert await store.get(oversized.id) == oversized
    assert await hgets(inspect) == before + 3  # read from Redis each time
    assert store.keys.record(oversized.id) not in cache
    await wait_until(lambda: len(cache) == 0, "the sweep of entries past their age")
    assert cache._entries.bytes == 0
    await store.close()


async def test_the_sync_store_caches_too(server: RedisServer, inspect: redis.asyncio.Redis) -> None:
    """The sync twin serves repeated reads from memory and drops a deleted record at once."""
    store = RedisStore.from_url(server.url)
    other = RedisStore.from_url(server.url)
    for s in (store, other):
        assert s.cache is not None
        s.cache.lookup("warm-up")
        await wait_until(lambda s=s: s.cache is not None and s.cache.live, "the sync channel")
    record = make()
    assert await asyncio.to_thread(other.put, record, 0)
    before = await hgets(inspect)
    for _ in range(3):
        assert await asyncio.to_thread(store.get, record.id) == record
    assert await hgets(inspect) == before + 1
    await asyncio.to_thread(other.delete, record.id)
    assert await asyncio.to_thread(store.get, record.id) is None
    store.close()
    other.close()


# --- configuration -------------------------------------------------------------------------------


def test_cache_url_options_parse_and_validate() -> None:
    """client_cache, client_cache_size, client_cache_bytes and client_cache_ttl ride in any Redis
    URL; bad values and a cache over TLS fail at start-up."""
    parsed = parse_redis_url(
        "redis://h/0?client_cache=1&client_cache_size=50&client_cache_ttl=2"
        "&client_cache_bytes=1048576"
    )
    assert parsed.client_cache == ClientCacheConfig(
        enabled=True, size=50, max_age=2.0, max_bytes=1048576
    )
    assert parsed.client_url == "redis://h/0"
    cluster = parse_redis_url("redis+cluster://h:7000?client_cache=off")
    assert cluster.client_cache == ClientCacheConfig(enabled=False)
    assert parse_redis_url("redis://h/0").client_cache is None
    for bad in (
        "redis://h/0?client_cache=maybe",
        "redis://h/0?client_cache_size=0",
        "redis://h/0?client_cache_bytes=1000",
        "redis://h/0?client_cache_ttl=0",
        "redis://h/0?client_cache_ttl=600",
        "redis://h/0?client_cache=1&client_cache=0",
    ):
        with pytest.raises(ConfigurationError):
            parse_redis_url(bad)
    with pytest.raises(ConfigurationError, match="TLS"):
        AsyncRedisStore.from_url("rediss://h/0?client_cache=1")
    assert AsyncRedisStore.from_url("rediss://h/0").cache is None
    assert AsyncRedisStore.from_url("redis://h/0?client_cache=0").cache is None
    assert AsyncRedisStore.from_url("redis://h/0").cache is not None
    forced = AsyncRedisStore.from_url("redis://h/0?client_cache=0", client_cache=True)
    assert forced.cache is not None
    elsewhere = ClientCache(ClientCacheConfig(), Target(nodes=(("h", 6379),)), "other:s:")
    with pytest.raises(ConfigurationError, match="tracks"):
        RedisStore(redis.Redis(), prefix="app:", client_cache=elsewhere)


def test_resp3_reader_handles_split_frames_and_pushes() -> None:
    """Frames split at any byte come out whole: replies, errors, maps, nulls and pushes."""
    wire = (
        b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n+OK\r\n-ERR bad\r\n:7\r\n_\r\n,1.5\r\n#t\r\n"
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nk:1\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n"
        b"=7\r\ntxt:abc\r\n$-1\r\n*-1\r\n"
    )
    reader = Resp3Reader()
    frames: list[Any] = []
    for n in range(len(wire)):
        reader.feed(wire[n : n + 1])
        frames += list(reader.frames())
    assert frames[:2] == [[b"server", b"redis"], "OK"]
    assert isinstance(frames[2], RespError)
    assert frames[3:7] == [7, None, 1.5, True]
    assert frames[7] == Push([b"invalidate", [b"k:1"]])
    assert frames[8] == Push([b"invalidate", None])
    assert frames[9:] == [b"abc", None, None]


# --- two processes -------------------------------------------------------------------------------


class Peer:
    """Process B: a store with its cache in a separate OS process (tests/stores/cache_peer.py)."""

    def __init__(self, url: str, prefix: str, twin: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.stores.cache_peer", url, prefix, twin],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().strip()
        if not reply:
            raise AssertionError(f"the peer process died (exit code {self.process.wait()})")
        return reply

    def get(self, session_id: str) -> tuple[bool, bool]:
        found, hit = self.ask(f"get {session_id}").split()
        return found == "1", hit == "1"

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


async def revoke_race(url: str, twin: str) -> None:
    """Process A (this one) logs a session out (delete) or logs it in anew (replace: the old id
    goes) while process B keeps it cached; B's next read, started after A's call returned, must
    refuse the old id. 200 times, no stale accept."""
    prefix = new_prefix()
    store = await live(AsyncRedisStore.from_url(url, prefix=prefix))
    peer = await asyncio.to_thread(Peer, url, prefix, twin)
    try:
        assert await asyncio.to_thread(peer.ask, "live") == "live"
        stale: list[int] = []
        cached = 0
        for n in range(REPEATS):
            record: SessionRecord = make(user_id=f"u{n % 7}")
            assert await store.put(record, 0)
            assert await asyncio.to_thread(peer.get, record.id) == (True, False)
            found, hit = await asyncio.to_thread(peer.get, record.id)
            assert found
            cached += hit
            if n % 2:
                await store.delete(record.id)
            else:
                assert await store.replace(make(user_id="u1"), record.id, record.version)
            found, _hit = await asyncio.to_thread(peer.get, record.id)
            if found:
                stale.append(n)
        assert stale == []
        assert cached >= REPEATS * 0.9  # B really answered from memory before the revocation
    finally:
        await asyncio.to_thread(peer.close)
        await delete_prefix_async(store.client, prefix)
        await store.close()


@pytest.mark.parametrize("twin", ["async", "sync"])
async def test_a_revocation_in_one_process_is_refused_at_once_by_another(twin: str) -> None:
    """On the shared Redis server, two OS processes: zero stale accepts in 200 revocations."""
    await revoke_race(shared_url(), twin)


@pytest.mark.parametrize("twin", ["async", "sync"])
async def test_a_revocation_on_the_cluster_is_refused_at_once_by_another_process(
    twin: str,
) -> None:
    """The same race on the 3-master cluster (one cache channel per primary)."""
    cluster: Cluster = await asyncio.to_thread(shared_cluster)
    await revoke_race(cluster.url, twin)


async def test_the_cluster_store_reads_from_memory() -> None:
    """On the cluster too, a seen session is answered from memory, and a delete elsewhere is
    refused by the next read."""
    cluster: Cluster = await asyncio.to_thread(shared_cluster)
    prefix = new_prefix()
    reader = await live(AsyncRedisStore.from_url(cluster.url, prefix=prefix))
    writer = AsyncRedisStore.from_url(cluster.url, prefix=prefix)
    assert reader.cache is not None
    records = [make(user_id="u1") for _ in range(10)]
    for record in records:
        assert await writer.put(record, 0)
        assert await reader.get(record.id) == record
    hits = reader.cache.stats.hits
    for record in records:
        assert await reader.get(record.id) == record
    assert reader.cache.stats.hits == hits + len(records)
    for record in records:
        await writer.delete(record.id)
        assert await reader.get(record.id) is None
    assert await reader.user_ids(NOW) == []
    await delete_prefix_async(reader.client, prefix)
    await reader.close()
    await writer.close()


# --- round trips of a request --------------------------------------------------------------------


async def counted_cached_store(server: RedisServer) -> tuple[AsyncRedisStore, ClientCache]:
    """A cached store whose client counts round trips, its scripts loaded by a first write."""
    pool = redis.asyncio.ConnectionPool(port=server.port, connection_class=CountingConnection)
    cache = ClientCache(
        ClientCacheConfig(), Target(nodes=(("127.0.0.1", server.port),)), "coatcheck:s:"
    )
    store = await live(
        AsyncRedisStore(redis.asyncio.Redis.from_pool(pool), owns_client=True, client_cache=cache)
    )
    warm_up = make(user_id="warm-up")
    assert await store.put(warm_up, 0)  # loads the scripts (the first EVALSHA falls back)
    key = store.keys.record(warm_up.id)
    # Its own invalidation and the re-read it causes are behind us before anything is counted.
    await wait_until(lambda: key in cache, "the re-read after the warm-up")
    return store, cache


async def test_a_write_request_on_a_cached_session_is_one_round_trip(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """A request that reads and writes a session this process has seen costs one round trip:
    the read is answered from memory and the covered write is the CAS script alone. Redis
    reports the write back to the cache channel, which then reads the record again in the
    background (one HGET, off the request's path), so the next request finds it cached."""
    store, cache = await counted_cached_store(server)
    record = make(user_id="u1")
    key = store.keys.record(record.id)
    assert await store.put(record, 0)  # an insert: indexes, then the CAS
    await wait_until(lambda: key in cache, "the re-read after the insert")
    current = record
    for step in range(20):
        delta = await Delta(inspect).start()
        assert await store.get(current.id) == current  # the request's read
        newer = later(current, 1)
        assert await store.put(newer, current.version)  # the request's write
        trips = CountingConnection.writes - delta.writes
        await wait_until(lambda: key in cache, "the background re-read")
        _trips, commands = await delta.stop()
        commands.pop("ping", None)  # the channel's heartbeat, every 0.5 s, may fall in here
        assert (trips, commands) == (
            1,
            {"evalsha": 1, "hmget": 1, "time": 1, "hset": 1, "pexpire": 1, "hget": 1},
        ), step
        current = newer
    assert cache.stats.hits == 20
    assert await store.get(current.id) == current
    await store.close()


async def test_a_write_after_a_cached_read_of_anothers_write_is_the_cas_script_alone(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """A read answered from the cache leaves no hint (a read-only request pays for none); the
    write that follows guesses what is stored from the cache's copy. Here the record was
    written by another process, so this one has no hint of its own: still one round trip, the
    CAS script alone."""
    store, _cache = await counted_cached_store(server)
    other = AsyncRedisStore.from_url(server.url, client_cache=False)
    record = make(user_id="u1")
    assert await other.put(record, 0)
    await other.close()
    assert await store.get(record.id) == record  # a miss: read from Redis, cached
    assert store._hints.take(record.id) is not None  # (the miss left a hint: taken away here)
    assert store.recall(record.id) == record  # a hit
    assert store._hints.take(record.id) is None  # left no hint
    newer = later(record, 1)
    delta = await Delta(inspect).start()
    assert await store.put(newer, record.version)
    trips = CountingConnection.writes - delta.writes
    _trips, commands = await delta.stop()
    assert trips == 1
    assert commands.get("zadd", 0) == 0, commands  # no index write
    assert commands["evalsha"] == 1, commands
    await store.close()


async def test_a_login_from_an_anonymous_session_is_one_round_trip_with_the_cache_on(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """replace sends the barrier only when the old session was signed in: an ordinary login
    (anonymous -> signed in) is one round trip, a second login (signed in -> signed in) two, the
    second an EXISTS of the old key. Either way the old id is gone for this process at once, and
    the new record is cached for the session's next request."""
    store, cache = await counted_cached_store(server)
    first = make(user_id="first")
    assert await store.put(first, 0)
    assert await store.replace(make(), first.id, first.version)  # loads TAKE_IF_VERSION
    for old_user, expected in ((None, 1), ("u1", 2)):
        old = make(user_id=old_user)
        assert await store.put(old, 0)
        assert await store.get(old.id) == old
        new = make(user_id="u2")
        delta = await Delta(inspect).start()
        assert await store.replace(new, old.id, old.version)
        trips = CountingConnection.writes - delta.writes
        _trips, commands = await delta.stop()
        assert trips == expected, old_user
        assert commands.get("exists", 0) == expected - 1, commands
        assert await store.get(old.id) is None
        key = store.keys.record(new.id)
        await wait_until(
            lambda key=key: key in cache, "the new record cached as written, or re-read"
        )
        hits = cache.stats.hits
        assert await store.get(new.id) == new
        assert cache.stats.hits == hits + 1  # the session's next request: no round trip
    await store.close()


# --- other ways to reach Redis -------------------------------------------------------------------


async def test_the_cache_works_over_a_unix_socket_with_a_password(tmp_path: Path) -> None:
    """The channel follows the store's URL: a Unix socket, and the password it carries."""
    require_redis_binaries()
    socket_path = tmp_path / "redis.sock"
    server = start_on_a_free_port(tmp_path / "redis", "--unixsocket", str(socket_path))
    try:
        send(server.port, "CONFIG", "SET", "requirepass", "s3cret")
        for url in (f"unix://:s3cret@{socket_path}", f"redis://:s3cret@127.0.0.1:{server.port}/0"):
            reader = await live(AsyncRedisStore.from_url(url))
            deleter = AsyncRedisStore.from_url(url)
            record = make()
            assert await deleter.put(record, 0)
            assert await reader.get(record.id) == record
            assert await reader.get(record.id) == record
            assert reader.cache is not None
            assert reader.cache.stats.hits == 1
            await deleter.delete(record.id)
            assert await reader.get(record.id) is None
            await reader.close()
            await deleter.close()
    finally:
        server.stop()


async def test_a_wrong_password_leaves_the_cache_off(tmp_path: Path) -> None:
    """A channel the server refuses never goes live: reads go to Redis (and fail like them)."""
    require_redis_binaries()
    server = start_on_a_free_port(tmp_path / "redis")
    try:
        send(server.port, "CONFIG", "SET", "requirepass", "s3cret")
        store = AsyncRedisStore.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        assert store.cache is not None
        store.cache.lookup("warm-up")
        await asyncio.sleep(0.3)
        assert not store.cache.live
        with pytest.raises(StoreUnavailableError):
            await store.get("any")
        await store.close()
    finally:
        server.stop()


async def test_a_new_cluster_primary_drops_the_cache_and_gets_a_channel(tmp_path: Path) -> None:
    """When a slot moves to a primary the cache had no channel to, the heartbeat sees the new
    primary: the cache is dropped, a channel is opened to it, and a delete there is refused by
    the next read."""
    require_redis_binaries()
    cluster = Cluster(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    extra = None
    try:
        extra = await asyncio.to_thread(
            start_on_a_free_port,
            tmp_path / "extra",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000",
        )  # fmt: skip
        first = f"127.0.0.1:{cluster.ports[0]}"
        await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "--cluster", "add-node", f"127.0.0.1:{extra.port}", first],
            check=True,
            capture_output=True,
            timeout=60,
        )
        reader = await live(AsyncRedisStore.from_url(cluster.url))
        writer = AsyncRedisStore.from_url(cluster.url, client_cache=False)
        assert reader.cache is not None
        assert len(reader.cache._channels) == 3
        source = send(cluster.ports[0], "CLUSTER", "MYID").split("\r\n")[1]
        target = send(extra.port, "CLUSTER", "MYID").split("\r\n")[1]
        ports = [*cluster.ports, extra.port]
        await wait_until(
            lambda: all("cluster_known_nodes:4" in send(p, "CLUSTER", "INFO") for p in ports),
            "the new node to join",
            seconds=30,
        )

        def cluster_agrees() -> bool:
            # Right after add-node, `--cluster check` can fail ("Nodes don't agree about
            # configuration") until gossip has spread the new node's view: retried, not failed.
            checked = subprocess.run(
                ["redis-cli", "--cluster", "check", first], capture_output=True, timeout=60
            )
            return checked.returncode == 0

        await wait_until(cluster_agrees, "the cluster's nodes to agree", seconds=30)
        await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "--cluster", "reshard", first, "--cluster-from", source,
             "--cluster-to", target, "--cluster-slots", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        await wait_until(
            lambda: (
                reader.cache is not None and len(reader.cache._channels) == 4 and reader.cache.live
            ),
            "a channel to the new primary",
        )
        assert reader.cache.stats.drops >= 1
        await wait_until(
            lambda: all("cluster_state:ok" in send(p, "CLUSTER", "INFO") for p in ports),
            "the cluster to settle",
            seconds=30,
        )
        # A session whose slot now lives on the new primary.
        direct = redis.asyncio.Redis(port=extra.port)
        ranges = await direct.execute_command("CLUSTER", "SLOTS")
        await direct.aclose()
        # [start, end, [host, port, id], replicas...] per range; keep the new primary's.
        owned = [(int(r[0]), int(r[1])) for r in ranges if int(r[2][1]) == extra.port]
        assert owned
        record = make()
        while not owned[0][0] <= key_slot(reader.keys.record(record.id).encode()) <= owned[0][1]:
            record = make()
        assert await writer.put(record, 0)
        assert await reader.get(record.id) == record
        assert await reader.get(record.id) == record
        await writer.delete(record.id)
        await asyncio.sleep(0.05)  # the writer has no cache, hence sends no barrier
        assert await reader.get(record.id) is None
        await reader.close()
        await writer.close()
    finally:
        if extra is not None:
            extra.stop()
        cluster.stop()


async def test_over_http_a_write_request_is_one_round_trip(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """Through the ASGI middleware: once a session is cached, a request that changes it reads
    it from memory and writes it in one round trip, and a read-only request sends nothing."""
    pool = redis.asyncio.ConnectionPool(port=server.port, connection_class=CountingConnection)
    cache = ClientCache(
        ClientCacheConfig(), Target(nodes=(("127.0.0.1", server.port),)), "coatcheck:s:"
    )
    store = await live(
        AsyncRedisStore(redis.asyncio.Redis.from_pool(pool), owns_client=True, client_cache=cache)
    )
    manager = AsyncSessionManager(store, test_config())

    async def sign_in(request: Request) -> Response:
        auth.login(get_session(request), "u1")
        return Response("in")

    async def bump(request: Request) -> Response:
        session = get_session(request)
        session["n"] = int(session.get("n", 0)) + 1
        return Response(str(session["n"]))

    async def read(request: Request) -> Response:
        return Response(str(get_session(request).get("n")))

    app = Starlette(
        routes=[Route("/in", sign_in), Route("/bump", bump), Route("/read", read)],
        middleware=[Middleware(SessionMiddleware, manager=manager)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/in")).status_code == 200
        token = client.cookies.get("coatcheck_session") or ""
        key = store.keys.record(token.split(".")[0])
        await wait_until(lambda: key in cache, "the session to be cached")
        for n in range(1, 11):
            trips, hits = CountingConnection.writes, cache.stats.hits
            assert (await client.get("/bump")).text == str(n)
            assert (CountingConnection.writes - trips, cache.stats.hits - hits) == (1, 1)
            await wait_until(lambda: key in cache, "the background re-read")
            trips = CountingConnection.writes
            assert (await client.get("/read")).text == str(n)
            assert CountingConnection.writes - trips == 0
    await manager.close()


async def test_the_manager_answers_a_cached_read_without_calling_the_store(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of a cached session is answered by ``recall``: the store's ``get`` (and the
    ``store_timeout`` timer around it) is skipped. A session that is not cached, or a cache that
    is down, still goes to ``get``."""
    store = await live(AsyncRedisStore.from_url(server.url))
    manager = AsyncSessionManager(store, test_config())
    token = await manager.issue_token("u1")
    request = RequestView.from_asgi_headers(
        "GET", "https", [(b"authorization", f"Bearer {token}".encode())], "127.0.0.1"
    )
    key = store.keys.record(token.split(".")[0])
    await wait_until(lambda: key in (store.cache or ()), "the session to be cached")
    real_get = store.get
    calls: list[str] = []

    async def counted_get(session_id: str) -> Any:
        calls.append(session_id)
        return await real_get(session_id)

    monkeypatch.setattr(store, "get", counted_get)
    for _ in range(3):
        opened = await manager.open(request)
        assert (opened.error, opened.session.user_id) == (None, "u1")
    assert calls == []
    assert store.cache is not None
    store.cache.forget([key])
    opened = await manager.open(request)
    assert (opened.session.user_id, len(calls)) == ("u1", 1)
    await manager.close()
