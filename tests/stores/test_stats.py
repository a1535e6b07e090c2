"""The store contract's ``stats(now)``: one suite, run unchanged against every backend."""

from __future__ import annotations

import asyncio
import random

from coatcheck._core.record import SessionRecord, record_to_json
from coatcheck._core.stats import SessionStats, Tally
from coatcheck._core.tokens import new_id
from coatcheck.stores.base import AsyncStore
from tests.stores.test_contract import NOW, make

EMPTY = SessionStats(live=0, signed_in=0, users=0, cookie=0, bearer=0, expired=0)


async def test_an_empty_store_counts_nothing(store: AsyncStore) -> None:
    """A store with no records answers zero for every count."""
    expected = EMPTY
    assert expected == await store.stats(NOW)


async def test_counts_live_signed_in_users_transports_and_expired(store: AsyncStore) -> None:
    """Live records are counted by user and transport; records at or past their deadline are
    counted only as expired, whoever they belong to."""
    for record in (
        make(user_id="alice"),
        make(user_id="alice", transport="bearer"),
        make(user_id="bob"),
        make(),  # an anonymous cart
        make(user_id="carol", expires_at=NOW - 5),
        make(expires_at=NOW),  # the deadline is "expired", as purge_expired sees it
    ):
        assert await store.put(record, 0)
    expected = SessionStats(live=4, signed_in=3, users=2, cookie=3, bearer=1, expired=2)
    stats = await store.stats(NOW)
    assert (expected, 1) == (stats, stats.anonymous)


async def test_now_decides_what_is_live(store: AsyncStore) -> None:
    """The same records counted at another ``now`` move between live and expired."""
    await store.put(make(user_id="u", expires_at=NOW + 10), 0)
    await store.put(make(user_id="u", expires_at=NOW + 100), 0)
    early = SessionStats(live=2, signed_in=2, users=1, cookie=2, bearer=0, expired=0)
    later = SessionStats(live=1, signed_in=1, users=1, cookie=1, bearer=0, expired=1)
    gone = SessionStats(live=0, signed_in=0, users=0, cookie=0, bearer=0, expired=2)
    assert (early, later, gone) == (
        await store.stats(NOW),
        await store.stats(NOW + 10),
        await store.stats(NOW + 100),
    )


async def test_deleted_replaced_purged_and_moved_records_count_as_they_are(
    store: AsyncStore,
) -> None:
    """Stats follow the records, not stale index entries: a deleted record, the old half of a
    replace and a purged record are gone; a record moved to another user counts for that one."""
    deleted, old, expired, moved = (
        make(user_id="a"),
        make(user_id="a"),
        make(user_id="a", expires_at=NOW - 1),
        make(user_id="a"),
    )
    for record in (deleted, old, expired, moved):
        assert await store.put(record, 0)
    await store.delete(deleted.id)
    new = make(user_id="a", transport="bearer")
    assert await store.replace(new, old.id, old.version)
    assert await store.purge_expired(NOW, 10) == 1
    changed = moved.copy()
    changed.user_id = "b"
    changed.version = moved.version + 1
    assert await store.put(changed, moved.version)
    expected = SessionStats(live=2, signed_in=2, users=2, cookie=1, bearer=1, expired=0)
    assert expected == await store.stats(NOW)


async def test_transport_inside_session_data_does_not_fool_the_count(store: AsyncStore) -> None:
    """Session data, flash messages and a user agent that spell out a bearer record's tail are
    data: the record is counted by its own transport."""
    tail = {"transport": "bearer", "user_agent": "x", "user_id": None, "version": 1}
    record = make(
        user_id='u"\\',
        data={"z": tail, "zz": '"transport":"bearer","user_agent":"","user_id":null,"version":1}'},
        flash=[tail],
        user_agent='ua \\" "transport":"bearer","user_agent":"","user_id":null,"version":1}',
    )
    assert await store.put(record, 0)
    expected = SessionStats(live=1, signed_in=1, users=1, cookie=1, bearer=0, expired=0)
    assert expected == await store.stats(NOW)


async def test_many_records_are_all_counted(store: AsyncStore) -> None:
    """More records than one read batch (Redis reads 500 per round trip) are all counted."""
    records = [
        make(user_id=f"user-{n % 7}", transport="bearer" if n % 5 == 0 else "cookie")
        for n in range(510)
    ]
    records.append(make(user_id=new_id(), expires_at=NOW - 1))
    await put_all(store, records)
    expected = SessionStats(live=510, signed_in=510, users=7, cookie=408, bearer=102, expired=1)
    assert expected == await store.stats(NOW)


async def put_all(store: AsyncStore, records: list[SessionRecord]) -> None:
    for start in range(0, len(records), 50):
        chunk = records[start : start + 50]
        assert all(await asyncio.gather(*(store.put(r, 0) for r in chunk)))


NASTY = 'ab"\\{}[]:,/ \n\t\u00e9\u2713\U0001f600'
KEYS = ("transport", "user_agent", "user_id", "version", "x")


def nasty_text(rng: random.Random) -> str:
    pieces = [rng.choice(NASTY) for _ in range(rng.randrange(12))]
    if rng.random() < 0.3:
        pieces.append('"transport":"bearer","user_agent":"","user_id":null,"version":1}')
    return "".join(pieces)


def nasty_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        return {rng.choice(KEYS): nasty_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if depth < 3 and roll < 0.45:
        return [nasty_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return rng.choice([None, True, 1, 2.5, "bearer", "cookie", nasty_text(rng)])


async def test_counts_agree_with_the_reference_rule_on_hostile_records(store: AsyncStore) -> None:
    """On records full of quotes, backslashes, braces, non-ASCII text and fake transport tails,
    the store counts exactly what the reference tally (Python, on the written JSON) counts: the
    databases' regular expressions read the transport as Python's does."""
    rng = random.Random(1306)
    records = []
    for n in range(60):
        record = make(
            user_id=None if n % 4 == 0 else nasty_text(rng) or "u",
            transport=rng.choice(["cookie", "bearer"]),
            expires_at=NOW + rng.choice([-5, 0, 30, 600]),
            data={rng.choice(KEYS): nasty_value(rng) for _ in range(rng.randrange(4))},
            flash=[nasty_value(rng)],
            user_agent=nasty_text(rng),
            ip=nasty_text(rng),
            label=nasty_text(rng),
        )
        records.append(record)
    await put_all(store, records)
    rows = [(r.user_id, r.expires_at, record_to_json(r)) for r in records]
    reference = Tally(NOW).add_all(rows).result()
    live = [r for r in records if r.expires_at > NOW]
    by_transport = sum(1 for r in live if r.transport == "bearer")
    assert (reference.bearer, reference.cookie) == (by_transport, len(live) - by_transport)
    assert reference == await store.stats(NOW)


async def test_the_counting_stores_pass_stats_through() -> None:
    """coatcheck.testing's CountingStore and SyncCountingStore answer stats from the store they
    wrap and count the call."""
    from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
    from coatcheck.testing import CountingStore, SyncCountingStore

    inner = MemoryStore()
    inner.put(make(user_id="u", transport="bearer"), 0)
    counting, sync_counting = CountingStore(AsyncMemoryStore(inner)), SyncCountingStore(inner)
    expected = SessionStats(live=1, signed_in=1, users=1, cookie=0, bearer=1, expired=0)
    assert (expected, expected) == (await counting.stats(NOW), sync_counting.stats(NOW))
    assert (counting.calls["stats"], sync_counting.calls["stats"]) == (1, 1)
