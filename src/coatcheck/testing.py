"""Helpers for testing apps that use coatcheck (and for coatcheck's own tests).

- :class:`FakeClock`: pass ``clock=FakeClock()`` to a manager and move time with ``advance``.
- :class:`CountingStore`: wraps any async store and counts calls per method, to pin down
  "this request wrote nothing".
- :func:`test_config`: a valid :class:`SessionConfig` with a random secret, insecure cookies
  allowed for ``http://testserver``.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

from ._core.config import CookieConfig, SessionConfig
from ._core.record import SessionRecord
from .stores.base import AsyncStore


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingStore:
    """An async store wrapper that counts every call by method name in ``calls``."""

    def __init__(self, inner: AsyncStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def writes(self) -> int:
        return self.calls["put"] + self.calls["delete"]

    def reset(self) -> None:
        self.calls.clear()

    async def get(self, session_id: str) -> SessionRecord | None:
        self.calls["get"] += 1
        return await self.inner.get(session_id)

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        self.calls["put"] += 1
        return await self.inner.put(record, expected_version)

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        self.calls["replace"] += 1
        return await self.inner.replace(record, old_id, old_version)

    async def delete(self, *session_ids: str) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(*session_ids)

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        self.calls["sessions_of"] += 1
        return await self.inner.sessions_of(user_id)

    async def user_ids(self, now: float) -> list[str]:
        self.calls["user_ids"] += 1
        return await self.inner.user_ids(now)

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        self.calls["purge_expired"] += 1
        return await self.inner.purge_expired(now, batch)

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        self.calls["hit"] += 1
        return await self.inner.hit(key, now, window)

    async def clear_hits(self, key: str) -> None:
        self.calls["clear_hits"] += 1
        await self.inner.clear_hits(key)

    async def close(self) -> None:
        await self.inner.close()


def test_config(**overrides: Any) -> SessionConfig:
    """A valid config for tests: random secret; plain-HTTP cookies unless ``cookie`` is given."""
    overrides.setdefault("cookie", CookieConfig(secure=False))
    return SessionConfig(secret=secrets.token_urlsafe(32), **overrides)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
