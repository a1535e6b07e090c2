"""What the Redis stores promise beyond the contract suite: key layout, TTLs, index upkeep,
round trips, Cluster slots, outages and recovery, and URL configuration."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection

from coatcheck._core.record import SessionRecord, record_to_json
from coatcheck._core.tokens import hash_secret, new_id, new_secret
from coatcheck.errors import ConfigurationError, StoreUnavailableError
from coatcheck.stores._redis_keys import TTL_MARGIN, KeyLayout, index_horizon
from coatcheck.stores._redis_plans import Hint, Hints, sessions_of_plan
from coatcheck.stores._redis_scripts import (
    CAS,
    EXPIRY_ADD,
    HIT,
    INDEX_ADD,
    PURGE_RECORD,
    PUT_BACK,
    SCRIPTS,
    TAKE_IF_VERSION,
    UNINDEX_DUE,
    Command,
)
from coatcheck.stores.base import AsyncStore
from coatcheck.stores.redis import AsyncRedisStore, RedisStore, RedisURL, parse_redis_url
from tests.backends.adapt import AsyncOverSync
from tests.backends.redis import delete_prefix_async, new_prefix, shared_url
from tests.redis_servers import Cluster, RedisServer, redis_server, shared_cluster

pytestmark = pytest.mark.redis

NOW = 1_800_000_000.0
TWINS = ["async", "sync"]


def make(
    *, user_id: str | None = None, version: int = 1, expires_at: float = NOW + 600
) -> SessionRecord:
    return SessionRecord(
        id=new_id(),
        secret_hash=hash_secret(new_secret()),
        created_at=NOW,
        last_seen_at=NOW,
        expires_at=expires_at,
        absolute_expires_at=NOW + 3600,
        version=version,
        user_id=user_id,
    )


def open_store(
    twin: str, url: str, **options: Any
) -> tuple[AsyncStore, AsyncRedisStore | RedisStore]:
    """The async store, or the sync one run through threads; also the store itself."""
    if twin == "async":
        store = AsyncRedisStore.from_url(url, **options)
        return store, store
    sync = RedisStore.from_url(url, **options)
    return AsyncOverSync(sync), sync


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server this test owns: it may kill it, and may read its whole keyspace."""
    with redis_server(tmp_path / "redis") as started:
        yield started


@pytest.fixture
async def inspect(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the throwaway server, to look behind the store's back."""
    client = redis.asyncio.Redis(port=server.port)
    yield client
    await client.aclose()


@pytest.fixture
async def shared() -> AsyncIterator[tuple[str, redis.asyncio.Redis, list[str]]]:
    """The shared server's URL, a client on it, and a list of prefixes to clean up afterwards."""
    url = shared_url()
    client = redis.asyncio.Redis.from_url(url)
    prefixes: list[str] = []
    yield url, client, prefixes
    for prefix in prefixes:
        await delete_prefix_async(client, prefix)
    await client.aclose()


@pytest.fixture
def cluster() -> Cluster:
    """The test session's 3-master cluster (started on first use)."""
    return shared_cluster()


async def members(client: redis.asyncio.Redis, key: str) -> list[str]:
    found: list[Any] = await client.zrange(key, 0, -1)
    return [m.decode() for m in found]


async def command_calls(client: redis.asyncio.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


# --- key layout and TTLs -------------------------------------------------------------------------


async def test_keys_carry_the_prefix_and_a_ttl(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """Every key a store writes starts with its prefix and has a TTL, indexes outliving records."""
    store = AsyncRedisStore.from_url(server.url, prefix="app:")
    record = make(user_id="u1")
    assert await store.put(record, 0)
    await store.hit("login:1.2.3.4", NOW, 60)

    keys = sorted([key.decode() async for key in inspect.scan_iter(count=1000)])
    expected = [
        f"app:s:{{{record.id}}}",
        "app:u:{u1}",
        "app:users",
        *store.keys.expiry_shard(record.id).keys,
        "app:h:{login:1.2.3.4}",
    ]
    assert sorted(expected) == keys
    ttls = {key: await inspect.pttl(key) for key in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    record_ttl = ttls[f"app:s:{{{record.id}}}"]
    # put has no `now`: the TTL is the record's own remaining life plus the margin.
    assert (600 + TTL_MARGIN) * 1000 - 5000 < record_ttl <= (600 + TTL_MARGIN) * 1000
    assert ttls["app:u:{u1}"] >= record_ttl - 1000
    assert 0 < ttls["app:h:{login:1.2.3.4}"] <= 60_000
    await store.close()


async def test_records_expired_at_write_time_still_get_a_ttl(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """A record written already expired keeps a short TTL (the margin) for purge to find."""
    store = AsyncRedisStore.from_url(server.url)
    record = make(expires_at=NOW - 3600)
    assert await store.put(record, 0)
    ttl = await inspect.pttl(store.keys.record(record.id))
    assert 0 < ttl <= TTL_MARGIN * 1000
    await store.close()


async def test_two_prefixes_do_not_see_each_other(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """Stores with different prefixes on one server share no records, users, hits or purges."""
    url, _client, prefixes = shared
    a_prefix, b_prefix = new_prefix(), new_prefix()
    prefixes += [a_prefix, b_prefix]
    a = AsyncRedisStore.from_url(url, prefix=a_prefix)
    b = AsyncRedisStore.from_url(url, prefix=b_prefix)
    record = make(user_id="same-user")
    twin = record.copy()
    twin.data = {"store": "b"}
    expired = make(user_id="same-user", expires_at=NOW - 1)
    assert await a.put(record, 0)
    assert await b.put(twin, 0)
    assert await b.put(expired, 0)

    assert await a.get(record.id) == record
    assert await b.get(record.id) == twin
    assert await a.get(expired.id) is None
    assert [r.id for r in await a.sessions_of("same-user")] == [record.id]
    assert await a.purge_expired(NOW) == 0
    assert await b.get(expired.id) == expired
    await a.hit("k", NOW, 60)
    assert await b.hit("k", NOW, 60) == (1, NOW + 60)
    await a.delete(record.id)
    assert await b.get(record.id) == twin
    assert await a.user_ids(NOW) == []
    assert await b.user_ids(NOW) == ["same-user"]
    await a.close()
    await b.close()


def test_a_prefix_with_braces_is_refused() -> None:
    """A brace in the prefix would become a Cluster hash tag, so it is refused at start-up."""
    with pytest.raises(ConfigurationError, match="may not contain"):
        AsyncRedisStore.from_url("redis://127.0.0.1:1/0", prefix="app{1}:")
    with pytest.raises(ConfigurationError, match="may not contain"):
        RedisStore(redis.Redis(), prefix="{")


# --- index upkeep --------------------------------------------------------------------------------


async def test_stale_index_entries_are_removed_when_met(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """sessions_of drops index entries whose record now belongs to someone else, and skips (but
    keeps) those whose record is missing: that may be a session whose record is being written
    (see test_a_session_being_created_keeps_its_index_entry)."""
    url, client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    gone, moved, kept = make(user_id="u1"), make(user_id="u1"), make(user_id="u1")
    for record in (gone, moved, kept):
        assert await store.put(record, 0)
    await client.delete(store.keys.record(gone.id))  # as Redis's TTL would
    moved_on = moved.copy()
    moved_on.user_id, moved_on.version = "u2", 2
    assert await store.put(moved_on, 1)
    index = store.keys.user_index("u1")
    assert sorted([gone.id, moved.id, kept.id]) == sorted(await members(client, index))

    assert [r.id for r in await store.sessions_of("u1")] == [kept.id]
    assert sorted([gone.id, kept.id]) == sorted(await members(client, index))
    assert [r.id for r in await store.sessions_of("u2")] == [moved.id]
    await store.close()


async def test_a_session_being_created_keeps_its_index_entry(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """A sessions_of that meets the index entry of a session whose record is not written yet
    (a put in flight: the entry goes first) does not remove it, so once the record is written
    the session is listed; dropping it hid such sessions from revoke_all and the session cap."""
    url, client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    record = make(user_id="u1")
    await client.zadd(store.keys.user_index("u1"), {record.id: 1})  # the put's first step
    listing = sessions_of_plan(store.keys, "u1")  # a sessions_of, run one round trip at a time
    batch: list[Any] | None = next(listing)
    listed = None
    while batch is not None:
        replies = [await client.execute_command(*command) for command in batch]
        if batch[0][0] == "HGET":
            assert replies == [None]  # the record is not written yet...
            assert await store.put(record, 0)  # ...and now it is, before the listing ends
        try:
            batch = listing.send(replies)
        except StopIteration as stop:
            batch, listed = None, stop.value
    assert listed == []
    assert [r.id for r in await store.sessions_of("u1")] == [record.id]
    await store.close()


async def test_delete_and_purge_clean_the_indexes(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """delete and purge_expired remove what they delete from the user, users and expiry indexes."""
    url, client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    logged_out, expired, live = (
        make(user_id="leaver"),
        make(user_id="sleeper", expires_at=NOW - 10),
        make(user_id="stayer"),
    )
    for record in (logged_out, expired, live):
        assert await store.put(record, 0)
    assert await store.user_ids(NOW - 60) == ["leaver", "sleeper", "stayer"]

    await store.delete(logged_out.id)
    assert await store.purge_expired(NOW) == 1
    for record in (logged_out, expired):
        assert await client.exists(store.keys.user_index(record.user_id or "")) == 0
        assert await client.zscore(store.keys.expiry_shard(record.id).expiry, record.id) is None
    assert await client.zscore(store.keys.users, "sleeper") is None
    assert await store.user_ids(NOW) == ["stayer"]
    assert await store.get(live.id) == live
    await store.close()


async def test_purge_restores_an_index_entry_that_lagged(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """A live record whose expiry entry says it expired is kept, and its entries are rescored."""
    url, client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    record = make(user_id="u1")
    assert await store.put(record, 0)
    # What a lost index update on Cluster would leave behind: an entry scored below the record.
    await client.zadd(store.keys.expiry_shard(record.id).expiry, {record.id: NOW - 5})
    await client.zadd(store.keys.user_index("u1"), {record.id: NOW - 5})

    assert await store.purge_expired(NOW) == 0
    assert await store.get(record.id) == record
    assert (
        await client.zscore(store.keys.expiry_shard(record.id).expiry, record.id)
        == record.expires_at
    )
    assert await client.zscore(store.keys.user_index("u1"), record.id) == index_horizon(record)
    await store.close()


def same_shard(keys: KeyLayout, other: SessionRecord, record: SessionRecord) -> SessionRecord:
    """``record`` with a new id that lands in the same expiry shard as ``other``."""
    while keys.expiry_shard(record.id) != keys.expiry_shard(other.id):
        record.id = new_id()
    return record


async def test_writes_sweep_expiry_entries_whose_record_redis_dropped(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """Expiry entries clean themselves without purge: a later write to the shard drops those
    whose record Redis's TTL has surely removed, judged by Redis's clock."""
    url, client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    old = make()
    assert await store.put(old, 0)
    shard = store.keys.expiry_shard(old.id)
    # As if its TTL had run out an hour ago: Redis dropped the record, the entries stayed.
    await client.delete(store.keys.record(old.id))
    server_ms = int((await client.time())[0]) * 1000
    await client.zadd(shard.lapse, {old.id: server_ms - 3_600_000})

    assert await store.put(same_shard(store.keys, old, make()), 0)
    assert await client.zscore(shard.expiry, old.id) is None
    assert await client.zscore(shard.lapse, old.id) is None
    await store.close()


async def test_purge_counts_exactly_after_a_fake_clock_jump(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """A write a fake day later does not sweep an expired record that is still stored, so
    purge_expired still finds and counts it."""
    url, _client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    expired = make(user_id="u1", expires_at=NOW - 1)
    assert await store.put(expired, 0)
    day_later = same_shard(store.keys, expired, make(user_id="u1", expires_at=NOW + 86_400 + 600))
    day_later.last_seen_at = NOW + 86_400
    assert await store.put(day_later, 0)

    assert await store.purge_expired(NOW + 86_400) == 1
    assert await store.get(expired.id) is None
    assert await store.get(day_later.id) == day_later
    await store.close()


async def test_a_client_with_decoded_responses_works(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """A caller's client built with decode_responses=True works as well, and is left open."""
    url, _client, prefixes = shared
    prefix = new_prefix()
    prefixes.append(prefix)
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    store = AsyncRedisStore(client, prefix=prefix)
    record = make(user_id="u1", expires_at=NOW - 1)
    assert await store.put(record, 0)
    assert await store.get(record.id) == record
    assert [r.id for r in await store.sessions_of("u1")] == [record.id]
    assert await store.user_ids(NOW - 60) == ["u1"]
    assert await store.hit("k", NOW, 60) == (1, NOW + 60)
    assert await store.purge_expired(NOW) == 1
    await store.close()
    assert await client.ping()
    await client.aclose()


def test_record_and_counter_scripts_name_one_key() -> None:
    """Scripts on a record, a counter or a user index touch KEYS[1] only: atomic on Cluster
    whatever the key; the two shard scripts are checked against a real cluster below."""
    single = {
        CAS,
        INDEX_ADD,
        PURGE_RECORD,
        HIT,
        TAKE_IF_VERSION,
        PUT_BACK,
    }
    assert single | {EXPIRY_ADD, UNINDEX_DUE} == set(SCRIPTS)
    for script in single:
        assert {"KEYS[1]"} == set(re.findall(r"KEYS\[\w+\]", script.source)), script.name


# --- round trips ---------------------------------------------------------------------------------


class CountingConnection(redis.asyncio.Connection):
    """Counts socket writes: one per round trip (a pipeline is written at once)."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


def later(record: SessionRecord, seconds: float) -> SessionRecord:
    """The next version of ``record``, written ``seconds`` later (its idle expiry moved along)."""
    newer = record.copy()
    newer.version += 1
    newer.last_seen_at += seconds
    newer.expires_at += seconds
    newer.data = {"n": newer.version}
    return newer


async def counted_store(server: RedisServer) -> AsyncRedisStore:
    """A store on the throwaway server whose client counts round trips, scripts already loaded."""
    pool = redis.asyncio.ConnectionPool(port=server.port, connection_class=CountingConnection)
    client = redis.asyncio.Redis.from_pool(pool)
    store = AsyncRedisStore(client, owns_client=True)
    await client.ping()  # connect (and handshake) before counting
    warm_up = make(user_id="warm-up")
    assert await store.put(warm_up, 0)  # loads the scripts: the first EVALSHAs fall back to EVAL
    await store.delete(warm_up.id)
    return store


class Delta:
    """Round trips and server commands (``INFO commandstats``) from creation to :meth:`stop`."""

    def __init__(self, inspect: redis.asyncio.Redis) -> None:
        self.inspect = inspect

    async def start(self) -> Delta:
        self.before, self.writes = await command_calls(self.inspect), CountingConnection.writes
        return self

    async def stop(self) -> tuple[int, dict[str, int]]:
        after = await command_calls(self.inspect)
        changed = {
            name: calls - self.before.get(name, 0)
            for name, calls in after.items()
            if calls != self.before.get(name, 0) and name != "info"
        }
        return CountingConnection.writes - self.writes, changed


async def test_a_read_is_one_command_and_an_insert_one_round_trip_with_its_index_scripts(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """get is one HMGET in one round trip; a new signed-in session is one round trip: its three
    index scripts, then the CAS."""
    store = await counted_store(server)
    record = make(user_id="u1")
    delta = await Delta(inspect).start()
    assert await store.put(record, 0)
    trips, commands = await delta.stop()
    assert trips == 1
    assert commands["evalsha"] == 4
    assert commands["zadd"] == 4  # user index, users, expiry and lapse
    assert "eval" not in commands

    delta = await Delta(inspect).start()
    assert await store.get(record.id) == record
    assert await delta.stop() == (1, {"hget": 1})
    await store.close()


@pytest.mark.parametrize("user_id", ["u1", None])
async def test_a_write_within_the_index_horizon_is_the_cas_script_alone(
    server: RedisServer, inspect: redis.asyncio.Redis, user_id: str | None
) -> None:
    """The saving: writing a session again, its expires_at still within the horizon its indexes
    were written for, runs the CAS script alone (HMGET, TIME, HSET, PEXPIRE) and no ZADD, in one
    round trip; the write that moves expires_at past the horizon indexes it again, in one round
    trip too."""
    store = await counted_store(server)
    record = make(user_id=user_id)
    assert await store.put(record, 0)
    # expires_at (NOW + 600) rounded up to a bucket of 64 s (10% of 600 s, at least 64 s)
    assert index_horizon(record) == record.expires_at + 40

    current = record
    for step in (1, 10, 20):  # expires_at moves 31 s in all: still covered
        assert await store.get(current.id) == current
        newer = later(current, step)
        delta = await Delta(inspect).start()
        assert await store.put(newer, current.version)
        assert await delta.stop() == (
            1,
            {"evalsha": 1, "hmget": 1, "time": 1, "hset": 1, "pexpire": 1},
        )
        current = newer
    assert await store.get(current.id) == current

    beyond = later(current, 10)  # 41 s past the indexed expires_at: a new bucket
    delta = await Delta(inspect).start()
    assert await store.put(beyond, current.version)
    trips, commands = await delta.stop()
    assert trips == 1
    assert commands["evalsha"] == (4 if user_id else 2)
    assert await store.get(beyond.id) == beyond
    shard = store.keys.expiry_shard(record.id)
    assert await inspect.zscore(shard.expiry, record.id) == beyond.expires_at
    if user_id is not None:
        horizon = index_horizon(beyond)
        assert await inspect.zscore(store.keys.user_index(user_id), record.id) == horizon
        assert await inspect.zscore(store.keys.users, user_id) == horizon
    await store.close()


async def index_state(
    inspect: redis.asyncio.Redis, keys: KeyLayout, record: SessionRecord
) -> dict[str, float]:
    """Every index score and TTL of ``record``, and its own, as the server sees them now."""
    shard = keys.expiry_shard(record.id)
    pipe = inspect.pipeline(transaction=False)
    pipe.time()
    pipe.pttl(keys.record(record.id))
    pipe.zscore(shard.expiry, record.id)
    pipe.zscore(shard.lapse, record.id)
    pipe.pttl(shard.expiry)
    pipe.pttl(shard.lapse)
    if record.user_id is not None:
        pipe.zscore(keys.user_index(record.user_id), record.id)
        pipe.zscore(keys.users, record.user_id)
        pipe.pttl(keys.user_index(record.user_id))
        pipe.pttl(keys.users)
    (seconds, micros), record_ttl, *rest = await pipe.execute()
    names = ["expiry", "lapse", "expiry_ttl", "lapse_ttl", "user", "users", "user_ttl", "users_ttl"]
    state = dict(zip(names, rest, strict=False))
    state["record_ttl"] = record_ttl
    state["now_ms"] = seconds * 1000 + micros // 1000
    return state


async def test_index_entries_never_fall_below_their_record(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """The safety: through inserts, covered writes, writes past the horizon, writes without a
    hint, big jumps, a change of user and a logout, a user index and users never score a session
    below its record's expires_at, the expiry shard never above it (so purge finds it), and the
    index keys and the lapse entry outlive the record's TTL."""
    store = await counted_store(server)
    record = make(user_id="u1")
    assert await store.put(record, 0)
    current = record
    steps = [0.5, 5, 30, 30, 59, 61, 1, 120, 0, 3, 400, 10, 10, 10, 10, 10, 10, 10, 2000, 7]
    for n, step in enumerate(steps):
        if n % 4 == 3:  # now and then a write by a process that did not read the session
            store._hints.take(current.id)
        else:
            assert await store.get(current.id) == current
        newer = later(current, step)
        if n == 9:
            newer.user_id = "u2"  # the same id handed to another user
        if n == 14:
            newer.user_id = None
        if n == 16:
            newer.user_id = "u3"
        assert await store.put(newer, current.version)
        current = newer
        state = await index_state(inspect, store.keys, current)
        assert state["expiry"] <= current.expires_at, n
        assert state["lapse"] >= state["now_ms"] + state["record_ttl"], n
        assert min(state["expiry_ttl"], state["lapse_ttl"]) >= state["record_ttl"], n
        if current.user_id is not None:
            assert state["user"] >= current.expires_at, n
            assert state["users"] >= current.expires_at, n
            assert min(state["user_ttl"], state["users_ttl"]) >= state["record_ttl"], n
            assert [r.id for r in await store.sessions_of(current.user_id)] == [record.id], n
    for user in ("u1", "u2"):
        assert await store.sessions_of(user) == []
    await store.close()


async def test_a_stale_hint_costs_a_round_trip_not_an_index_entry(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """When this process's hint says covered but the stored hash says otherwise (here: its
    coverage end was moved behind our back), the CAS script writes nothing and the write is sent
    again with its index scripts."""
    store = await counted_store(server)
    record = make(user_id="u1")
    assert await store.put(record, 0)
    assert await store.get(record.id) == record
    await inspect.hset(store.keys.record(record.id), "l", "0")
    await inspect.zrem(store.keys.user_index("u1"), record.id)
    newer = later(record, 1)
    delta = await Delta(inspect).start()
    assert await store.put(newer, record.version)
    trips, commands = await delta.stop()
    assert trips == 2
    assert commands["evalsha"] == 5
    assert [r.id for r in await store.sessions_of("u1")] == [record.id]
    await store.close()


async def test_records_without_index_fields_are_indexed_by_their_next_write(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """A record written by an earlier coatcheck (no i/b/l fields), or whose user was changed by
    one (``u`` and ``i`` disagree), is indexed again by its next write."""
    store = await counted_store(server)
    record = make(user_id="u1")
    assert await store.put(record, 0)
    key = store.keys.record(record.id)
    await inspect.hdel(key, "i", "b", "l")
    assert await store.get(record.id) == record
    newer = later(record, 1)
    assert await store.put(newer, record.version)
    assert await inspect.hget(key, "i") == b"@u1"
    assert await inspect.hget(key, "b") == repr(index_horizon(newer)).encode()

    # An older app server moves the session to u2 (writing `u`, indexing u2, leaving `i`).
    moved = later(newer, 1)
    moved.user_id = "u2"
    await inspect.hset(key, mapping={"v": moved.version, "u": "u2", "d": record_to_json(moved)})
    assert await store.get(record.id) == moved
    again = later(moved, 1)
    delta = await Delta(inspect).start()
    assert await store.put(again, moved.version)
    trips, commands = await delta.stop()
    assert (trips, commands["evalsha"]) == (2, 5)  # the CAS refused, then indexed for u2
    assert await inspect.hget(key, "i") == b"@u2"
    assert [r.id for r in await store.sessions_of("u2")] == [record.id]
    await store.close()


async def test_a_failed_index_write_drops_the_records_claim(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """If an index script fails while the CAS succeeds, put raises and removes the record's
    horizon, so that its next write indexes it again instead of trusting the claim."""
    store = await counted_store(server)
    record = make(user_id="u1")
    await inspect.set(store.keys.user_index("u1"), "not a sorted set")
    with pytest.raises(StoreUnavailableError):
        await store.put(record, 0)
    key = store.keys.record(record.id)
    assert await inspect.hget(key, "v") == b"1"
    assert await inspect.hget(key, "b") is None
    await inspect.delete(store.keys.user_index("u1"))

    assert await store.get(record.id) == record
    newer = later(record, 1)
    assert await store.put(newer, record.version)
    assert [r.id for r in await store.sessions_of("u1")] == [record.id]
    await store.close()


async def test_purge_finds_a_record_whose_writes_did_not_index_it_again(
    server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """Writes within the horizon leave the expiry entry at an earlier expires_at: purge meets the
    record early, keeps it and rescores it, and deletes it once it has really expired."""
    store = await counted_store(server)
    record = make(user_id="u1")
    assert await store.put(record, 0)
    assert await store.get(record.id) == record
    newer = later(record, 30)
    assert await store.put(newer, record.version)
    shard = store.keys.expiry_shard(record.id)
    assert await inspect.zscore(shard.expiry, record.id) == record.expires_at

    assert await store.purge_expired(record.expires_at + 1) == 0
    assert await store.get(record.id) == newer
    assert await inspect.zscore(shard.expiry, record.id) == newer.expires_at
    assert [r.id for r in await store.sessions_of("u1")] == [record.id]
    assert await store.purge_expired(newer.expires_at) == 1
    assert await store.get(record.id) is None
    assert await inspect.exists(store.keys.user_index("u1")) == 0
    await store.close()


@pytest.mark.parametrize("read_first", [True, False])
async def test_delete_after_a_read_is_one_round_trip(
    server: RedisServer, inspect: redis.asyncio.Redis, read_first: bool
) -> None:
    """On one server, deleting a session this process has read (logout, the old id at login) is
    one round trip: the record, its expiry entries, then its user index entry. Without the read,
    or when the session changed hands since, a second round trip cleans the right user index."""
    store = await counted_store(server)
    record, moved = make(user_id="u1"), make(user_id="u1")
    for r in (record, moved):
        assert await store.put(r, 0)
        if read_first:
            assert await store.get(r.id) == r
    await inspect.hset(store.keys.record(moved.id), "u", "u2")  # as another process would
    # Another process (its own hints) on the same server, which has read nothing.
    deleter = store if read_first else AsyncRedisStore(store.client)
    delta = await Delta(inspect).start()
    await deleter.delete(record.id)
    trips, _commands = await delta.stop()
    assert trips == (1 if read_first else 2)
    delta = await Delta(inspect).start()
    await deleter.delete(moved.id)
    trips, _commands = await delta.stop()
    assert trips == 2
    assert await inspect.exists(store.keys.user_index("u2")) == 0
    assert await store.sessions_of("u1") == []
    for r in (record, moved):
        assert await inspect.exists(store.keys.record(r.id)) == 0
        assert await inspect.zscore(store.keys.expiry_shard(r.id).expiry, r.id) is None
    await store.close()


def test_index_horizons_round_up_to_nested_buckets() -> None:
    """A horizon is expires_at rounded up to a power-of-two bucket near 10% of the remaining
    lifetime (64 s to 4096 s); a record written already expired is indexed at its expires_at."""
    record = make()
    for lifetime, bucket in [(600, 64), (1800, 128), (12 * 3600, 4096), (14 * 86400, 4096)]:
        record.expires_at = NOW + lifetime
        horizon = index_horizon(record)
        assert horizon % bucket == 0
        assert record.expires_at <= horizon < record.expires_at + bucket
    record.expires_at = NOW - 1
    assert index_horizon(record) == NOW - 1
    # A horizon on a coarse grid lies on every finer one: a record whose lifetime shrank since
    # its last indexing write still guesses its coverage on the safe side.
    record.expires_at = 1_800_000_001.0
    assert index_horizon(record) % 64 == 0


def test_hints_are_bounded_and_taken_once() -> None:
    """The hint map drops its oldest entries past its size, and a hint is used once."""
    hints = Hints(size=3)
    for n in range(5):
        hints.remember(f"id{n}", Hint(n, None, float(n)))
    assert len(hints) == 3
    assert hints.take("id0") is None
    assert hints.take("id4") == Hint(4, None, 4.0)
    assert hints.take("id4") is None


# --- Cluster -------------------------------------------------------------------------------------


class RecordingStore(AsyncRedisStore):
    """An AsyncRedisStore that keeps every batch of commands it sends."""

    batches: list[list[Command]]

    async def _execute(self, commands: Sequence[Command]) -> list[Any]:
        self.batches.append(list(commands))
        return await super()._execute(commands)


async def test_every_script_call_stays_in_one_slot_on_the_cluster(cluster: Cluster) -> None:
    """On the cluster, each script call and each multi-key command names keys of one slot."""
    prefix = new_prefix()
    store = RecordingStore.from_url(cluster.url, prefix=prefix)
    store.batches = []
    signed_in, anonymous, expired = make(user_id="u1"), make(), make(user_id="u2", expires_at=NOW)
    for record in (signed_in, anonymous, expired):
        assert await store.put(record, 0)
    moved = signed_in.copy()
    moved.user_id, moved.version = "u3", 2
    assert await store.put(moved, 1)
    await store.get(signed_in.id)
    await store.sessions_of("u1")
    await store.user_ids(NOW)
    await store.hit("login:x", NOW, 60)
    await store.clear_hits("login:x")
    assert await store.purge_expired(NOW) == 1
    await store.delete(signed_in.id, anonymous.id)

    client = store.client
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    for shard in store.keys.expiry_shards:
        assert len({await client.cluster_keyslot(key) for key in shard.keys}) == 1
    checked = multi_key = 0
    for command in (c for batch in store.batches for c in batch):
        name = str(command[0])
        assert name not in {"KEYS", "FLUSHDB", "FLUSHALL"}
        if name in {"EVALSHA", "EVAL"}:
            keys = [str(k) for k in command[3 : 3 + int(command[2])]]
        elif name == "DEL":
            keys = [str(k) for k in command[1:]]
        else:
            continue
        slots = {await client.cluster_keyslot(key) for key in keys}
        assert len(slots) == 1, command
        checked += 1
        multi_key += len(keys) > 1
    assert checked > 10
    assert multi_key > 3
    await delete_prefix_async(client, prefix)
    await store.close()


async def test_cluster_url_aliases_reach_the_cluster(cluster: Cluster) -> None:
    """redis-cluster:// works like redis+cluster://, for both twins."""
    url = cluster.url.replace("redis+cluster://", "redis-cluster://")
    for twin in TWINS:
        prefix = new_prefix()
        store, _inner = open_store(twin, url, prefix=prefix)
        record = make(user_id="u1")
        assert await store.put(record, 0)
        assert await store.get(record.id) == record
        await store.delete(record.id)
        await store.close()


# --- outages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("twin", TWINS)
async def test_a_killed_redis_is_unavailable_then_recovers_after_restart(
    twin: str, server: RedisServer, inspect: redis.asyncio.Redis
) -> None:
    """A killed server raises StoreUnavailableError at once; after a restart on the same port
    the store works again, re-sending the scripts the new server never saw."""
    store, _inner = open_store(twin, server.url, socket_timeout=1, socket_connect_timeout=1)
    record = make(user_id="u1")
    assert await store.put(record, 0)
    assert await store.hit("k", NOW, 60) == (1, NOW + 60)

    server.kill()
    for call in (store.get(record.id), store.put(make(), 0), store.hit("k", NOW, 60)):
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            await call
        assert time.monotonic() - started < 1.0
        assert caught.value.__cause__ is not None

    server.start()
    assert await store.get(record.id) is None  # the new server starts empty
    fresh = make(user_id="u1")
    assert await store.put(fresh, 0)  # a pipeline of EVALSHAs, all answered NOSCRIPT
    assert await store.get(fresh.id) == fresh
    assert await store.hit("k", NOW, 60) == (1, NOW + 60)  # a single EVALSHA, NOSCRIPT too
    stats = await inspect.info("commandstats")
    # The put's 3 index scripts and CAS, then the hit: each answered NOSCRIPT once, then EVAL.
    assert stats["cmdstat_evalsha"]["failed_calls"] == 5
    assert stats["cmdstat_eval"]["calls"] == 5
    await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_a_hung_redis_times_out_within_the_socket_timeout(
    twin: str, server: RedisServer
) -> None:
    """A server that stops answering raises StoreUnavailableError after socket_timeout, no later,
    and the store works again once the server answers."""
    store, _inner = open_store(twin, server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    record = make()
    assert await store.put(record, 0)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.get(record.id)
        assert 0.4 < time.monotonic() - started < 1.5
    finally:
        server.resume()
    assert await store.get(record.id) == record
    await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_calls_cut_off_while_waiting_for_a_capped_pool_leak_no_connection(
    twin: str, server: RedisServer
) -> None:
    """With ``max_connections``, calls beyond the cap wait for a free connection; when the
    timeout cuts them off there (the server paused, every pooled connection busy), no
    connection is lost: once the server answers, as many calls as ever go through, and the pool
    still holds at most the cap (found by reading redis-py during attack round 10)."""
    store, inner = open_store(
        twin,
        server.url,
        socket_timeout=0.4,
        socket_connect_timeout=0.5,
        max_connections=2,
        client_cache=False,
    )
    records = [make(user_id=f"u{n}") for n in range(6)]
    for record in records:
        assert await store.put(record, 0)
    for _ in range(3):
        server.pause()
        try:
            outcomes = await asyncio.gather(
                *(store.get(r.id) for r in records * 2), return_exceptions=True
            )
            assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
        finally:
            server.resume()
        # A leaked connection would leave the cap of 2 short: these would wait and time out.
        got = await asyncio.gather(*(store.get(r.id) for r in records * 2))
        assert got == records * 2
    assert inner.client.connection_pool.max_connections == 2
    await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_calls_cut_off_by_the_timeout_leave_no_answer_behind(
    twin: str, server: RedisServer
) -> None:
    """Reads, writes and pipelines cut off mid-flight by the timeout (the server paused with
    their commands sent) never leave an answer pending on a pooled connection: once the server
    answers again, every call gets its own answer, never the late one of a call that timed out."""
    store, _inner = open_store(
        twin, server.url, socket_timeout=0.3, socket_connect_timeout=0.5, client_cache=False
    )
    records = [make(user_id=f"u{n}") for n in range(8)]
    for record in records:
        assert await store.put(record, 0)
    server.pause()
    try:
        cut_off = [store.get(r.id) for r in records] + [store.put(make(user_id="late"), 0)]
        cut_off.append(store.sessions_of("u1"))  # a pipeline
        outcomes = await asyncio.gather(*cut_off, return_exceptions=True)
        assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
    finally:
        server.resume()
    for _ in range(3):  # each pooled connection, whichever the pool hands out
        got = await asyncio.gather(*(store.get(r.id) for r in records))
        assert got == records
        assert [s.id for s in await store.sessions_of("u3")] == [records[3].id]
    await store.close()


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://cache.internal:6380/2",
            RedisURL(
                cluster=False,
                tls=False,
                nodes=(("cache.internal", 6380),),
                db=2,
                username=None,
                password=None,
                prefix=None,
                client_url="redis://cache.internal:6380/2",
            ),
        ),
        (
            "rediss://app:p%40ss@cache.internal/0?prefix=shop:&ssl_cert_reqs=required",
            RedisURL(
                cluster=False,
                tls=True,
                nodes=(("cache.internal", 6379),),
                db=0,
                username="app",
                password="p@ss",
                prefix="shop:",
                client_url="rediss://app:p%40ss@cache.internal/0?ssl_cert_reqs=required",
            ),
        ),
        (
            "unix:///run/redis/redis.sock?db=4&prefix=app:",
            RedisURL(
                cluster=False,
                tls=False,
                nodes=(),
                db=4,
                username=None,
                password=None,
                prefix="app:",
                client_url="unix:///run/redis/redis.sock?db=4",
                unix_path="/run/redis/redis.sock",
            ),
        ),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,10.0.0.3?prefix=app:",
            RedisURL(
                cluster=True,
                tls=False,
                nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 6379)),
                db=0,
                username=None,
                password=None,
                prefix="app:",
                client_url="",
            ),
        ),
        (
            "redis-cluster://:secret@[::1]:7000/0",
            RedisURL(
                cluster=True,
                tls=False,
                nodes=(("::1", 7000),),
                db=0,
                username=None,
                password="secret",
                prefix=None,
                client_url="",
            ),
        ),
        (
            "rediss+cluster://node-a:7000",
            RedisURL(
                cluster=True,
                tls=True,
                nodes=(("node-a", 7000),),
                db=0,
                username=None,
                password=None,
                prefix=None,
                client_url="",
            ),
        ),
    ],
)
def test_parse_redis_url(url: str, expected: RedisURL) -> None:
    """Each URL form parses into its nodes, database, TLS flag, credentials and prefix."""
    assert expected == parse_redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://cache:6379",
        "redis:/cache",
        "redis+cluster://a:7000/3",
        "redis+cluster://a:7000?db=1",
        "redis+cluster://a:70000",
        "redis://cache/zero",
        "redis://cache?prefix=a:&prefix=b:",
    ],
)
def test_bad_redis_urls_are_refused(url: str) -> None:
    """URLs that cannot work fail at start-up with ConfigurationError."""
    with pytest.raises(ConfigurationError):
        parse_redis_url(url)


async def test_from_url_builds_a_standalone_client() -> None:
    """from_url sets TLS, database, timeouts and prefix, and connects only when first used."""
    store = AsyncRedisStore.from_url("rediss://cache.invalid:6390/3?prefix=p:")
    assert store.keys.prefix == "p:"
    assert isinstance(store.client, redis.asyncio.Redis)
    pool = store.client.connection_pool
    assert pool.connection_class is AsyncSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.invalid", 6390, 3)
    # redis-py's per-command timeout is off: the store bounds each round trip (store.timeout).
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (None, 2.0)
    assert store.timeout == 2.0
    await store.close()

    sync = RedisStore.from_url("redis://cache.invalid/1", prefix="q:", max_connections=5)
    assert sync.keys.prefix == "q:"
    assert isinstance(sync.client, redis.Redis)
    assert isinstance(sync.client.connection_pool, redis.BlockingConnectionPool)
    assert sync.client.connection_pool.max_connections == 5
    sync.close()


def test_from_url_refuses_two_different_prefixes() -> None:
    """A prefix in the URL and another as an option is a configuration mistake."""
    with pytest.raises(ConfigurationError, match="two different"):
        RedisStore.from_url("redis://cache.invalid/0?prefix=a:", prefix="b:")


def test_a_sync_cluster_store_without_a_cluster_is_unavailable() -> None:
    """The sync cluster client connects when created: no reachable node is StoreUnavailableError."""
    with pytest.raises(StoreUnavailableError):
        RedisStore.from_url("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.2)


async def test_close_leaves_a_callers_client_open(
    shared: tuple[str, redis.asyncio.Redis, list[str]],
) -> None:
    """A store given a client does not close it: the caller owns it."""
    _url, client, _prefixes = shared
    store = AsyncRedisStore(client, prefix=new_prefix())
    await store.close()
    assert await client.ping()
