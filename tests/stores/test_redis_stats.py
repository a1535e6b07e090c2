"""The Redis ``stats`` plan driven by hand (it is sans-I/O): paging through the expiry shards
and reading records in batches, which the contract suite's small stores never reach."""

from __future__ import annotations

from typing import Any

from coatcheck._core.record import SessionRecord, record_to_json
from coatcheck._core.stats import SessionStats
from coatcheck.stores._redis_keys import KeyLayout
from coatcheck.stores._redis_stats import READ_BATCH, stats_plan

NOW = 1_000.0


def _json(session_id: str, user_id: str | None, transport: str = "cookie") -> bytes:
    record = SessionRecord(
        id=session_id, secret_hash="h", created_at=1.0, last_seen_at=1.0, expires_at=2000.0,
        absolute_expires_at=3000.0, user_id=user_id, transport=transport,  # type: ignore[arg-type]
    )  # fmt: skip
    return record_to_json(record).encode()


def test_every_shard_is_paged_to_its_end_and_records_are_read_in_batches() -> None:
    """A shard whose ZSCAN answers a cursor is asked again (alone) until it answers 0; every
    member met, duplicates included once, is read in batches of READ_BATCH; stale entries (no
    record) are skipped."""
    keys = KeyLayout("p:")
    first = keys.expiry_shards[3].expiry
    ids = [f"id{n:04d}" for n in range(READ_BATCH + 10)]
    plan = stats_plan(keys, NOW)

    commands = next(plan)
    assert [c[0] for c in commands] == ["ZSCAN"] * 16
    replies: list[Any] = [
        (b"17", [(i.encode(), 2000.0) for i in ids[:300]]) if c[1] == first else (0, [])
        for c in commands
    ]
    commands = plan.send(replies)
    assert [(c[0], c[1], c[2]) for c in commands] == [("ZSCAN", first, 17)]
    commands = plan.send([(0, [(i.encode(), 2000.0) for i in [*ids[290:], "stale"]])])

    read: list[str] = []
    stats: SessionStats | None = None
    try:
        while True:
            assert len(commands) <= READ_BATCH
            assert {c[0] for c in commands} == {"HMGET"}
            batch = [str(c[1]).removeprefix("p:s:{").removesuffix("}") for c in commands]
            read += batch
            commands = plan.send(
                [
                    [None, None, None]
                    if i == "stale"
                    else [b"2000.0", b"u1" if i < "id0100" else None, _json(i, "u1")]
                    for i in batch
                ]
            )
    except StopIteration as done:
        stats = done.value
    assert sorted([*ids, "stale"]) == read
    expected = SessionStats(live=len(ids), signed_in=100, users=1, cookie=len(ids), bearer=0,
                            expired=0)  # fmt: skip
    assert expected == stats
