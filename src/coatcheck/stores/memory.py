"""In-process stores for tests and single-process development. Data lives in a dict."""

from __future__ import annotations

import threading

from .._core.record import RecordImage, SessionRecord, record_from_json, record_to_json
from .._core.stats import SessionStats, Tally


class MemoryStore:
    """A thread-safe in-memory store (the sync twin). Records are kept as JSON, as a real store
    would keep them, so callers never share mutable state with the store."""

    blocking = False
    """Never waits on I/O: managers call it directly, without a timeout or a worker thread."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[int, str | None, float, str]] = {}
        """id -> (version, user_id, expires_at, record JSON)"""
        self._images: dict[str, tuple[str, RecordImage | None]] = {}
        """id -> (record JSON, its image): a record read back from the image costs a fraction of
        decoding its JSON. Made on the second read of a version (the first only notes it: a
        session written on every request would never use one); ignored (by identity of the
        JSON) once the record changes."""
        self._hits: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            stored = self._records.get(session_id)
            image = self._images.get(session_id)
        if stored is None:
            return None
        text = stored[3]
        seen = False  # this version read before
        if image is not None and image[0] is text:
            if image[1] is not None:
                return image[1].copy()
            seen = True
        record = record_from_json(text)  # checked: a corrupt row raises as from any store
        with self._lock:
            self._images[session_id] = (text, RecordImage(record) if seen else None)
        return record

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        row = (record.version, record.user_id, record.expires_at, record_to_json(record))
        with self._lock:
            current = self._records.get(record.id)
            if expected_version == 0:
                if current is not None:
                    return False
            elif current is None or current[0] != expected_version:
                return False
            self._records[record.id] = row
            return True

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        row = (record.version, record.user_id, record.expires_at, record_to_json(record))
        with self._lock:
            old = self._records.get(old_id)
            if old is None or old[0] != old_version or record.id in self._records:
                return False
            del self._records[old_id]
            self._images.pop(old_id, None)
            self._records[record.id] = row
            return True

    def delete(self, *session_ids: str) -> None:
        with self._lock:
            for session_id in session_ids:
                self._records.pop(session_id, None)
                self._images.pop(session_id, None)

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        with self._lock:
            rows = [row[3] for row in self._records.values() if row[1] == user_id]
        return [record_from_json(raw) for raw in rows]

    def user_ids(self, now: float) -> list[str]:
        with self._lock:
            return sorted(
                {row[1] for row in self._records.values() if row[1] is not None and row[2] > now}
            )

    def purge_expired(self, now: float, batch: int = 500) -> int:
        with self._lock:
            doomed = [k for k, row in self._records.items() if row[2] <= now][:batch]
            for key in doomed:
                del self._records[key]
                self._images.pop(key, None)
            # Counters whose window ended are forgotten here too, so attacker-chosen keys
            # (one per guessed email) cannot pile up in a long-running process.
            for key in [k for k, (_, ends) in self._hits.items() if ends <= now]:
                del self._hits[key]
            return len(doomed)

    def stats(self, now: float) -> SessionStats:
        """Counts this process's records only: every process has its own memory store."""
        with self._lock:
            rows = [(row[1], row[2], row[3]) for row in self._records.values()]
        return Tally(now).add_all(rows).result()

    def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        with self._lock:
            count, ends = self._hits.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + window
            self._hits[key] = (count + 1, ends)
            return count + 1, ends

    def clear_hits(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)

    def close(self) -> None:
        pass


class AsyncMemoryStore:
    """The async face of :class:`MemoryStore` (no awaits needed: everything is in memory)."""

    blocking = False

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.sync = store if store is not None else MemoryStore()

    async def get(self, session_id: str) -> SessionRecord | None:
        return self.sync.get(session_id)

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        return self.sync.put(record, expected_version)

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return self.sync.replace(record, old_id, old_version)

    async def delete(self, *session_ids: str) -> None:
        self.sync.delete(*session_ids)

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return self.sync.sessions_of(user_id)

    async def user_ids(self, now: float) -> list[str]:
        return self.sync.user_ids(now)

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        return self.sync.purge_expired(now, batch)

    async def stats(self, now: float) -> SessionStats:
        return self.sync.stats(now)

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return self.sync.hit(key, now, window)

    async def clear_hits(self, key: str) -> None:
        self.sync.clear_hits(key)

    async def close(self) -> None:
        self.sync.close()
