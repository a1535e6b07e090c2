"""The Redis store's ``stats`` plan: count every session its expiry shards name.

Every stored record has an entry in its expiry shard (an indexing write adds it before the record
is written, and only ``delete``, ``purge_expired`` and the lapse sweep, once Redis's TTL has
certainly dropped the record, take it out), so the 16 shards together name every record. Stale
entries (a record deleted, replaced or dropped by its TTL) are met and skipped: the records, not
the indexes, are counted. A record that ``purge_expired`` is re-indexing at that very moment may
be missed; ``stats`` is a snapshot for operators, not a transaction.

Round trips: one per 1000 entries of the largest shard (the 16 ``ZSCAN`` run side by side), then
one per :data:`READ_BATCH` records (``HMGET`` of the expiry, the user and the JSON, whose
transport :mod:`coatcheck._core.stats` reads).
"""

from __future__ import annotations

from .._core.stats import SessionStats, Tally
from ._redis_keys import KeyLayout
from ._redis_plans import _SCAN_COUNT, Plan, _batch, _text

READ_BATCH = 500
"""Records read per round trip."""


def stats_plan(keys: KeyLayout, now: float) -> Plan[SessionStats]:
    """Count the records the expiry shards name, by the rules of :mod:`coatcheck._core.stats`."""
    ids: set[str] = set()
    cursors = {shard.expiry: 0 for shard in keys.expiry_shards}
    while cursors:
        scanning = sorted(cursors)
        pages = yield from _batch(
            [("ZSCAN", key, cursors[key], "COUNT", _SCAN_COUNT) for key in scanning]
        )
        for key, (cursor, page) in zip(scanning, pages, strict=True):
            ids.update(_text(member) for member, _score in page)
            if int(cursor) == 0:
                del cursors[key]
            else:
                cursors[key] = int(cursor)
    tally = Tally(now)
    ordered = sorted(ids)
    for start in range(0, len(ordered), READ_BATCH):
        chunk = ordered[start : start + READ_BATCH]
        rows = yield from _batch([("HMGET", keys.record(i), "x", "u", "d") for i in chunk])
        for expires_at, user_id, record_json in rows:
            if expires_at is None or record_json is None:
                continue  # a stale entry: the record is gone
            owner = None if user_id is None else _text(user_id)
            tally.add(owner, float(_text(expires_at)), record_json)
    return tally.result()
