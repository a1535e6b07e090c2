"""Helpers for testing apps that use coatcheck (and for coatcheck's own tests).

- :func:`sign_in` / :func:`async_sign_in`: sign a test client in as a user without a password
  round trip (httpx and Starlette's ``TestClient``, or Flask's test client).
- :func:`session_data` / :func:`set_session_data` (and ``async_`` twins): read or change the
  data of a client's session, as stored.
- :func:`csrf_headers`: the header an unsafe request of a signed-in client needs.
- :class:`FakeClock`: pass ``clock=FakeClock()`` to a manager and move time with ``advance``.
- :class:`CountingStore` / :class:`SyncCountingStore`: wrap a store and count calls per method,
  to pin down "this request wrote nothing".
- :func:`test_config`: a valid :class:`SessionConfig` with a random secret, insecure cookies
  allowed for ``http://testserver``.

See ``docs/testing.md``.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any, Protocol

from ._core import lifecycle, tokens
from ._core.config import CookieConfig, SessionConfig
from ._core.ops import Flow, Get, Put
from ._core.record import SessionRecord
from ._core.stats import SessionStats
from .errors import ConflictError
from .manager import AsyncSessionManager, SessionManager
from .stores.base import AsyncStore, SyncStore

__all__ = [
    "CountingStore",
    "FakeClock",
    "SyncCountingStore",
    "async_session_data",
    "async_set_session_data",
    "async_sign_in",
    "csrf_headers",
    "session_data",
    "set_session_data",
    "sign_in",
    "test_config",
]


# -- signing test clients in ------------------------------------------------------------------


class _Jar(Protocol):
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...


class _HttpxJar:
    """The cookies of an httpx client (``httpx.Client``, ``AsyncClient``, Starlette's
    ``TestClient``)."""

    def __init__(self, client: Any) -> None:
        self.cookies = client.cookies

    def get(self, name: str) -> str | None:
        value: str | None = self.cookies.get(name)
        return value

    def set(self, name: str, value: str) -> None:
        self.cookies.delete(name)
        self.cookies.set(name, value)


class _WerkzeugJar:
    """The cookies of a Flask (Werkzeug) test client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, name: str) -> str | None:
        cookie = self.client.get_cookie(name)
        return None if cookie is None else str(cookie.value)

    def set(self, name: str, value: str) -> None:
        self.client.set_cookie(name, value)


def _jar(client: Any) -> _Jar:
    if hasattr(client, "get_cookie") and hasattr(client, "set_cookie"):
        return _WerkzeugJar(client)
    if hasattr(client, "cookies") and hasattr(client.cookies, "set"):
        return _HttpxJar(client)
    raise TypeError(f"{type(client).__name__} is not an httpx or a Flask test client")


def _signed_in(client: Any, config: SessionConfig, record: SessionRecord, token: str) -> str:
    jar = _jar(client)
    jar.set(config.cookie.effective_name, token)
    if config.csrf.enabled:
        jar.set(config.csrf.cookie_name, record.csrf_token)
    return token


def _sign_in_flow(
    manager: SessionManager | AsyncSessionManager,
    user_id: str,
    remember: bool,
    data: dict[str, Any] | None,
) -> Flow[tuple[SessionRecord, str]]:
    return lifecycle.create_session(
        manager.config,
        manager.clock(),
        user_id=str(user_id),
        transport="cookie",
        data=data,
        remember=remember,
        user_agent="coatcheck.testing",
    )


def sign_in(
    client: Any,
    manager: SessionManager,
    user_id: str,
    *,
    remember: bool = False,
    data: dict[str, Any] | None = None,
) -> str:
    """Sign ``client`` in as ``user_id``: a new session in the manager's store, its cookie (and
    the CSRF cookie) set in the client's jar. Returns the token. No password, no request."""
    record, token = manager.run(_sign_in_flow(manager, user_id, remember, data))
    return _signed_in(client, manager.config, record, token)


async def async_sign_in(
    client: Any,
    manager: AsyncSessionManager,
    user_id: str,
    *,
    remember: bool = False,
    data: dict[str, Any] | None = None,
) -> str:
    """:func:`sign_in` for an :class:`~coatcheck.AsyncSessionManager`."""
    record, token = await manager.run(_sign_in_flow(manager, user_id, remember, data))
    return _signed_in(client, manager.config, record, token)


def csrf_headers(client: Any, config: SessionConfig) -> dict[str, str]:
    """The header carrying the client's CSRF cookie, for its unsafe requests."""
    value = _jar(client).get(config.csrf.cookie_name) or ""
    return {config.csrf.header_names[0]: value}


# -- reading and changing a client's session -----------------------------------------------


def _session_id(client: Any, config: SessionConfig) -> str | None:
    token = _jar(client).get(config.cookie.effective_name)
    parsed = tokens.parse_token(token) if token else None
    return parsed[0] if parsed is not None else None


def _read_flow(session_id: str | None) -> Flow[dict[str, Any] | None]:
    if session_id is None:
        return None
    record = yield Get(session_id)
    return None if record is None else dict(record.data)


def _update_flow(
    session_id: str | None, values: dict[str, Any], attempts: int
) -> Flow[dict[str, Any]]:
    if session_id is None:
        raise LookupError("the client has no session cookie (sign it in first)")
    for _ in range(attempts):
        record: SessionRecord | None = yield Get(session_id)
        if record is None:
            raise LookupError(f"session {session_id} is not in the store")
        expected = record.version
        record.data.update(values)
        record.version = expected + 1
        if (yield Put(record, expected)):
            return dict(record.data)
    raise ConflictError(f"session {session_id} kept changing")


def session_data(client: Any, manager: SessionManager) -> dict[str, Any] | None:
    """The stored data of the client's session, or ``None`` when it has none."""
    return manager.run(_read_flow(_session_id(client, manager.config)))


async def async_session_data(client: Any, manager: AsyncSessionManager) -> dict[str, Any] | None:
    """:func:`session_data` for an :class:`~coatcheck.AsyncSessionManager`."""
    return await manager.run(_read_flow(_session_id(client, manager.config)))


def set_session_data(client: Any, manager: SessionManager, **values: Any) -> dict[str, Any]:
    """Set keys of the client's stored session (a conditional write); returns all its data."""
    flow = _update_flow(
        _session_id(client, manager.config), values, manager.config.max_write_retries
    )
    return manager.run(flow)


async def async_set_session_data(
    client: Any, manager: AsyncSessionManager, **values: Any
) -> dict[str, Any]:
    """:func:`set_session_data` for an :class:`~coatcheck.AsyncSessionManager`."""
    flow = _update_flow(
        _session_id(client, manager.config), values, manager.config.max_write_retries
    )
    return await manager.run(flow)


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
        self.blocking = getattr(inner, "blocking", True)

    @property
    def writes(self) -> int:
        return self.calls["put"] + self.calls["replace"] + self.calls["delete"]

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

    async def stats(self, now: float) -> SessionStats:
        self.calls["stats"] += 1
        return await self.inner.stats(now)

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        self.calls["hit"] += 1
        return await self.inner.hit(key, now, window)

    async def clear_hits(self, key: str) -> None:
        self.calls["clear_hits"] += 1
        await self.inner.clear_hits(key)

    async def close(self) -> None:
        await self.inner.close()


class SyncCountingStore:
    """The sync twin of :class:`CountingStore`, for WSGI apps and the sync manager."""

    def __init__(self, inner: SyncStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.blocking = getattr(inner, "blocking", True)

    @property
    def writes(self) -> int:
        return self.calls["put"] + self.calls["replace"] + self.calls["delete"]

    def reset(self) -> None:
        self.calls.clear()

    def get(self, session_id: str) -> SessionRecord | None:
        self.calls["get"] += 1
        return self.inner.get(session_id)

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        self.calls["put"] += 1
        return self.inner.put(record, expected_version)

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        self.calls["replace"] += 1
        return self.inner.replace(record, old_id, old_version)

    def delete(self, *session_ids: str) -> None:
        self.calls["delete"] += 1
        self.inner.delete(*session_ids)

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        self.calls["sessions_of"] += 1
        return self.inner.sessions_of(user_id)

    def user_ids(self, now: float) -> list[str]:
        self.calls["user_ids"] += 1
        return self.inner.user_ids(now)

    def purge_expired(self, now: float, batch: int = 500) -> int:
        self.calls["purge_expired"] += 1
        return self.inner.purge_expired(now, batch)

    def stats(self, now: float) -> SessionStats:
        self.calls["stats"] += 1
        return self.inner.stats(now)

    def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        self.calls["hit"] += 1
        return self.inner.hit(key, now, window)

    def clear_hits(self, key: str) -> None:
        self.calls["clear_hits"] += 1
        self.inner.clear_hits(key)

    def close(self) -> None:
        self.inner.close()


def test_config(**overrides: Any) -> SessionConfig:
    """A valid config for tests: a random secret unless ``secret`` is given; plain-HTTP cookies
    unless ``cookie`` is given."""
    overrides.setdefault("cookie", CookieConfig(secure=False))
    overrides.setdefault("secret", secrets.token_urlsafe(32))
    return SessionConfig(**overrides)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
