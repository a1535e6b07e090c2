"""The ``replace`` store operation (a login's id regeneration), on every backend.

``replace(record, old_id, old_version)`` stores the brand-new ``record`` in place of ``old_id``
if that record is still at ``old_version``: both or neither.
"""

from __future__ import annotations

import asyncio

from coatcheck._core.record import SessionRecord
from coatcheck.stores.base import AsyncStore
from tests.stores.test_contract import NOW, make


def successor(old: SessionRecord, user_id: str | None = "u1") -> SessionRecord:
    """A new record (new id, version 1) carrying ``old``'s data, as a login makes it."""
    new = make(user_id=user_id)
    new.data = dict(old.data)
    return new


async def test_replace_swaps_the_old_record_for_the_new(store: AsyncStore) -> None:
    """On success the old id is gone, the new record reads back, and the user index lists it."""
    old = make(data={"cart": [1]})
    assert await store.put(old, 0)
    new = successor(old)
    assert await store.replace(new, old.id, old.version) is True
    assert await store.get(old.id) is None
    assert new == await store.get(new.id)
    assert [new.id] == [r.id for r in await store.sessions_of("u1")]
    assert await store.user_ids(NOW) == ["u1"]


async def test_replace_of_a_changed_record_changes_nothing(store: AsyncStore) -> None:
    """When another request wrote the old record since it was read, replace answers False, the
    old record keeps its newer version and the new id stays absent."""
    old = make(user_id="u0")
    assert await store.put(old, 0)
    newer = old.copy()
    newer.version, newer.data = 2, {"written": "meanwhile"}
    assert await store.put(newer, 1)
    new = successor(old)
    assert await store.replace(new, old.id, 1) is False
    assert newer == await store.get(old.id)
    assert await store.get(new.id) is None
    assert await store.sessions_of("u1") == []
    assert await store.user_ids(NOW) == ["u0"]


async def test_replace_of_a_missing_record_stores_nothing(store: AsyncStore) -> None:
    """A logout or revocation that deleted the old record wins: replace answers False and the new
    record is not stored."""
    old = make()
    assert await store.put(old, 0)
    await store.delete(old.id)
    new = successor(old)
    assert await store.replace(new, old.id, old.version) is False
    assert await store.get(new.id) is None
    assert await store.get(old.id) is None
    assert await store.sessions_of("u1") == []


async def test_replace_onto_a_taken_id_leaves_the_old_record(store: AsyncStore) -> None:
    """When the new id already exists, replace answers False, the old record is left exactly as
    it was (readable, same version, still indexed) and the existing record is untouched."""
    old = make(user_id="u0", data={"keep": True})
    taken = make(user_id="u2")
    assert await store.put(old, 0)
    assert await store.put(taken, 0)
    new = successor(old)
    new.id = taken.id
    assert await store.replace(new, old.id, old.version) is False
    assert old == await store.get(old.id)
    assert taken == await store.get(taken.id)
    assert [old.id] == [r.id for r in await store.sessions_of("u0")]
    # The old record can still be written at its version, and replaced afterwards.
    newer = old.copy()
    newer.version = 2
    assert await store.put(newer, 1)
    fresh = successor(old)
    assert await store.replace(fresh, old.id, 2) is True


async def test_replace_races_puts_consistently(store: AsyncStore) -> None:
    """20 replaces racing 20 puts on one record: at most one replace wins, a winning replace
    named the version that was really stored when it ran (no put landed on the old record after
    it), and every losing replace left no record behind."""
    old = make(user_id="u0")
    assert await store.put(old, 0)
    replacements = [successor(old) for _ in range(20)]
    writes: list[SessionRecord] = []
    for version in range(1, 21):
        write = old.copy()
        write.version, write.data = version + 1, {"v": version + 1}
        writes.append(write)

    async def replace_at(new: SessionRecord, version: int) -> bool:
        return await store.replace(new, old.id, version)

    async def put_at(write: SessionRecord) -> bool:
        return await store.put(write, write.version - 1)

    tasks = []
    for n in range(20):
        tasks.append(replace_at(replacements[n], 1 + n % 5))
        tasks.append(put_at(writes[n]))
    results = await asyncio.gather(*tasks)
    replaced = [replacements[n] for n in range(20) if results[2 * n]]
    put_versions = [writes[n].version for n in range(20) if results[2 * n + 1]]

    assert len(replaced) <= 1
    stored = [r for r in replacements if await store.get(r.id) is not None]
    assert [r.id for r in replaced] == [r.id for r in stored]
    # The puts that won form a chain 2, 3, ... k: each one found the version before it.
    assert list(range(2, 2 + len(put_versions))) == sorted(put_versions)
    remaining = await store.get(old.id)
    if replaced:
        winner = replaced[0]
        index = replacements.index(winner)
        named = 1 + index % 5
        assert remaining is None
        # The replace removed exactly the version it named: the last put before it.
        assert named == (max(put_versions) if put_versions else 1)
        assert [winner.id] == [r.id for r in await store.sessions_of("u1")]
    else:
        assert remaining is not None
        assert remaining.version == (max(put_versions) if put_versions else 1)
        assert await store.sessions_of("u1") == []
