"""The store contract: what every backend implements, async with a sync twin.

Small and exact, so a new backend takes an afternoon:

- ``get(id)`` -> the record or ``None``.
- ``put(record, expected_version)`` -> ``True`` when written. ``expected_version == 0`` inserts
  only if no record has that id; otherwise the write happens only if the stored version equals
  ``expected_version`` (compare-and-set). ``False`` means another request won, or the record is
  gone; the caller re-reads.
- ``replace(record, old_id, old_version)`` -> ``True`` when done: ``record`` (a brand-new id,
  inserted exactly like ``put(record, 0)``) is stored in place of the record ``old_id``, provided
  that record's stored version is still ``old_version``; both or neither. ``False`` when
  ``old_id`` is missing or its version differs (another request changed it, or logout or
  revocation deleted it), or ``record.id`` already exists: then ``old_id`` is left exactly as it
  was and ``record`` is not stored. One round trip on the success path. It is what a login
  (session id regeneration) does, so that a write landing on the old record meanwhile is noticed
  (the core re-reads, merges and retries) instead of lost.
- ``delete(*ids)`` removes records (missing ids are fine).
- ``sessions_of(user_id)``: the user's records. Stores may return expired records; the core
  filters (expiry is policy, and stores hold no policy).
- ``user_ids(now)``: the sorted ids of the users having at least one stored record with
  ``expires_at > now``, exactly (a store with approximate indexes checks its candidates).
- ``purge_expired(now, batch)`` deletes records whose ``expires_at <= now``, at most ``batch`` per
  call, and returns how many it deleted (call again while it returns ``batch``).
- ``stats(now)`` -> :class:`~coatcheck._core.stats.SessionStats`: how many records are live
  (``expires_at > now``), signed in, for how many distinct users, by transport, and expired but
  not purged yet, by the rules of :mod:`coatcheck._core.stats` (which also holds ``Tally``, the
  counting a store that walks its records can reuse). Exact for what the store holds while it
  counts; its cost grows with the number of records (one aggregate query on SQL, a read of every
  record on Redis), so it is an operator's tool, not something to call per request.
- ``hit(key, now, window)`` atomically counts an event in a fixed window that starts at the first
  hit and returns ``(count, window_ends_at)``; ``clear_hits(key)`` forgets it. Login throttling
  uses these so counts are shared by every app instance on the store.
- ``close()`` releases connections.
- Optional, sync: ``recall(id)`` -> the record from the store's own process memory (a client-side
  cache) or from a read that cannot wait (SQLite's no-wait reader), or ``None`` when it has none
  or the record is missing; never a network call, never waiting for a lock. The managers ask it
  before a ``get`` and skip the store call (its worker thread and its timeout) when it answers.
  Whatever it answers must be what ``get`` would answer now.

A store raises :class:`~coatcheck.errors.StoreUnavailableError` when its backend cannot be
reached; the managers also turn timeouts and unexpected driver errors into it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._core.record import SessionRecord
from .._core.stats import SessionStats


@runtime_checkable
class AsyncStore(Protocol):
    async def get(self, session_id: str) -> SessionRecord | None: ...
    async def put(self, record: SessionRecord, expected_version: int) -> bool: ...
    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool: ...
    async def delete(self, *session_ids: str) -> None: ...
    async def sessions_of(self, user_id: str) -> list[SessionRecord]: ...
    async def user_ids(self, now: float) -> list[str]: ...
    async def purge_expired(self, now: float, batch: int = 500) -> int: ...
    async def stats(self, now: float) -> SessionStats: ...
    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]: ...
    async def clear_hits(self, key: str) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class SyncStore(Protocol):
    def get(self, session_id: str) -> SessionRecord | None: ...
    def put(self, record: SessionRecord, expected_version: int) -> bool: ...
    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool: ...
    def delete(self, *session_ids: str) -> None: ...
    def sessions_of(self, user_id: str) -> list[SessionRecord]: ...
    def user_ids(self, now: float) -> list[str]: ...
    def purge_expired(self, now: float, batch: int = 500) -> int: ...
    def stats(self, now: float) -> SessionStats: ...
    def hit(self, key: str, now: float, window: float) -> tuple[int, float]: ...
    def clear_hits(self, key: str) -> None: ...
    def close(self) -> None: ...
