"""The store contract: one suite, run unchanged against every backend in tests/backends/."""

from __future__ import annotations

import asyncio

from coatcheck._core.record import SessionRecord
from coatcheck._core.tokens import hash_secret, new_id, new_secret
from coatcheck.stores.base import AsyncStore

NOW = 1_800_000_000.0


def make(
    *, user_id: str | None = None, version: int = 1, expires_at: float = NOW + 600, **extra: object
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
        **extra,  # type: ignore[arg-type]
    )


async def test_get_missing_returns_none(store: AsyncStore) -> None:
    """An id that was never stored reads as None."""
    assert await store.get(new_id()) is None


async def test_put_then_get_round_trips_every_field(store: AsyncStore) -> None:
    """Everything written comes back equal, including nested JSON data and unicode."""
    record = make(
        user_id="42",
        data={"cart": ["a", {"b": [1, 2.5, None, True]}], "name": "Zoë ✓"},
        flash=[{"message": "hi", "category": "info"}],
        csrf_token="tok",
        auth_time=NOW - 5,
        transport="bearer",
        remember=True,
        user_agent="Mozilla/5.0",
        ip="2001:db8::1",
        label="laptop",
    )
    assert await store.put(record, 0) is True
    assert await store.get(record.id) == record


async def test_insert_refuses_existing_id(store: AsyncStore) -> None:
    """put(..., 0) inserts only when the id is free."""
    record = make()
    assert await store.put(record, 0) is True
    other = make()
    other.id = record.id
    assert await store.put(other, 0) is False
    assert await store.get(record.id) == record


async def test_conditional_update_needs_the_current_version(store: AsyncStore) -> None:
    """An update with a stale expected version is refused and changes nothing."""
    record = make()
    await store.put(record, 0)
    newer = record.copy()
    newer.version = 2
    newer.data = {"k": "v"}
    assert await store.put(newer, 1) is True
    stale = record.copy()
    stale.version = 2
    stale.data = {"k": "stale"}
    assert await store.put(stale, 1) is False
    assert (await store.get(record.id)) == newer


async def test_update_of_deleted_record_is_refused(store: AsyncStore) -> None:
    """A conditional update never recreates a deleted record (no resurrection)."""
    record = make()
    await store.put(record, 0)
    await store.delete(record.id)
    later = record.copy()
    later.version = 2
    assert await store.put(later, 1) is False
    assert await store.get(record.id) is None


async def test_concurrent_updates_exactly_one_wins(store: AsyncStore) -> None:
    """Of many writers racing from the same version, exactly one succeeds."""
    record = make()
    await store.put(record, 0)
    attempts = []
    for i in range(10):
        candidate = record.copy()
        candidate.version = 2
        candidate.data = {"writer": i}
        attempts.append(store.put(candidate, 1))
    results = await asyncio.gather(*attempts)
    assert sum(results) == 1
    stored = await store.get(record.id)
    assert stored is not None
    assert stored.data == {"writer": results.index(True)}


async def test_delete_many_and_missing(store: AsyncStore) -> None:
    """delete removes every named id and ignores ids that do not exist."""
    a, b, c = make(), make(), make()
    for r in (a, b, c):
        await store.put(r, 0)
    await store.delete(a.id, b.id, new_id())
    assert await store.get(a.id) is None
    assert await store.get(b.id) is None
    assert await store.get(c.id) == c
    await store.delete()


async def test_sessions_of_lists_only_that_users_sessions(store: AsyncStore) -> None:
    """The user index returns a user's records and follows user changes and deletes."""
    u1a, u1b, u2, anon = make(user_id="u1"), make(user_id="u1"), make(user_id="u2"), make()
    for r in (u1a, u1b, u2, anon):
        await store.put(r, 0)
    assert sorted(r.id for r in await store.sessions_of("u1")) == sorted([u1a.id, u1b.id])
    assert [r.id for r in await store.sessions_of("u2")] == [u2.id]
    assert await store.sessions_of("nobody") == []

    moved = u1b.copy()
    moved.user_id = "u2"
    moved.version = 2
    assert await store.put(moved, 1)
    assert [r.id for r in await store.sessions_of("u1")] == [u1a.id]
    assert sorted(r.id for r in await store.sessions_of("u2")) == sorted([u2.id, u1b.id])

    await store.delete(u1a.id)
    assert await store.sessions_of("u1") == []

    logged_in = anon.copy()
    logged_in.user_id = "u3"
    logged_in.version = 2
    assert await store.put(logged_in, 1)
    assert [r.id for r in await store.sessions_of("u3")] == [anon.id]


async def test_user_ids_lists_signed_in_users(store: AsyncStore) -> None:
    """user_ids returns each user with at least one live stored session, once, sorted."""
    for uid in ("b", "a", "a", None):
        await store.put(make(user_id=uid), 0)
    assert await store.user_ids(NOW) == ["a", "b"]


async def test_user_ids_leaves_out_users_whose_sessions_all_expired(store: AsyncStore) -> None:
    """A user whose only session expired by ``now`` is not listed; one with a live and an
    expired session is; ``now`` decides, not the store's own clock."""
    await store.put(make(user_id="gone", expires_at=NOW - 1), 0)
    await store.put(make(user_id="mixed", expires_at=NOW - 1), 0)
    await store.put(make(user_id="mixed", expires_at=NOW + 600), 0)
    await store.put(make(user_id="edge", expires_at=NOW), 0)
    assert await store.user_ids(NOW) == ["mixed"]
    assert await store.user_ids(NOW - 10) == ["edge", "gone", "mixed"]
    assert await store.user_ids(NOW + 600) == []


async def test_purge_expired_in_batches(store: AsyncStore) -> None:
    """purge_expired deletes only expired records, at most `batch` per call."""
    expired = [make(expires_at=NOW - i - 1, user_id="p") for i in range(5)]
    live = make(expires_at=NOW + 10, user_id="p")
    for r in (*expired, live):
        await store.put(r, 0)
    assert await store.purge_expired(NOW, 2) == 2
    assert await store.purge_expired(NOW, 2) == 2
    assert await store.purge_expired(NOW, 2) == 1
    assert await store.purge_expired(NOW, 2) == 0
    assert await store.get(live.id) == live
    assert [r.id for r in await store.sessions_of("p")] == [live.id]
    for r in expired:
        assert await store.get(r.id) is None


async def test_hit_counts_within_a_window(store: AsyncStore) -> None:
    """hit counts atomically inside a window that starts at the first hit, then starts over."""
    key = "login:" + new_id()
    results = await asyncio.gather(*(store.hit(key, NOW, 60) for _ in range(10)))
    assert sorted(count for count, _ in results) == list(range(1, 11))
    assert {ends for _, ends in results} == {NOW + 60}
    count, ends = await store.hit(key, NOW + 61, 60)
    assert (count, ends) == (1, NOW + 121)
    await store.clear_hits(key)
    assert await store.hit(key, NOW + 62, 60) == (1, NOW + 122)


async def test_records_are_not_shared_with_the_caller(store: AsyncStore) -> None:
    """Mutating a record after put, or after get, never changes what is stored."""
    record = make(data={"a": [1]})
    await store.put(record, 0)
    record.data["a"].append(2)
    got = await store.get(record.id)
    assert got is not None
    assert got.data == {"a": [1]}
    got.data["a"].append(3)
    # Stores that keep records in process memory (the memory store, the Redis client cache)
    # decode once and hand out copies afterwards: every later copy is independent too.
    seen = []
    for _ in range(3):
        again = await store.get(record.id)
        assert again is not None
        seen.append(again.data)
        again.data["a"].append(4)
        again.data["b"] = {"c": 1}
        again.flash.append("x")
    assert seen == [{"a": [1, 4], "b": {"c": 1}}] * 3
    final = await store.get(record.id)
    assert final is not None
    assert (final.data, final.flash) == ({"a": [1]}, [])
