"""Run a sync store through the async contract, one thread per call (real parallelism)."""

from __future__ import annotations

import asyncio
from typing import Any

from coatcheck._core.record import SessionRecord
from coatcheck._core.stats import SessionStats
from coatcheck.stores.base import SyncStore


class AsyncOverSync:
    def __init__(self, store: SyncStore) -> None:
        self.sync = store

    async def _call(self, name: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args)

    async def get(self, session_id: str) -> SessionRecord | None:
        result: SessionRecord | None = await self._call("get", session_id)
        return result

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        return bool(await self._call("put", record, expected_version))

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return bool(await self._call("replace", record, old_id, old_version))

    async def delete(self, *session_ids: str) -> None:
        await self._call("delete", *session_ids)

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        result: list[SessionRecord] = await self._call("sessions_of", user_id)
        return result

    async def user_ids(self, now: float) -> list[str]:
        result: list[str] = await self._call("user_ids", now)
        return result

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        return int(await self._call("purge_expired", now, batch))

    async def stats(self, now: float) -> SessionStats:
        result: SessionStats = await self._call("stats", now)
        return result

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        result: tuple[int, float] = await self._call("hit", key, now, window)
        return result

    async def clear_hits(self, key: str) -> None:
        await self._call("clear_hits", key)

    async def close(self) -> None:
        await self._call("close")
