"""``sealed://``: sessions sealed into cookies; an optional revocation record in a server store.

::

    sealed://                                              no server store at all
    sealed://?revocations=redis%3A%2F%2Fcache%3A6379%2F0   logout really ends copies of the cookie

A manager given one of these stores runs the sealed flows (:mod:`coatcheck._core.sealed_flow`)
instead of the server-store ones. The object itself keeps no session: ``get``/``put``/``delete``
reach the revocation store (the only records it holds are revocation records), login throttling
counts (``hit``/``clear_hits``) live there too or, without one, in this process's memory, and the
user index (``sessions_of``, ``user_ids``) and ``stats`` raise
:class:`~coatcheck.errors.NotSupportedError`: no list of sealed sessions exists anywhere.

This module does not import ``cryptography``; the manager imports the codec when it meets a
sealed store (the ``sealed`` extra).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from .._core.record import SessionRecord
from .._core.stats import SessionStats
from ..errors import ConfigurationError, NotSupportedError
from .base import AsyncStore, SyncStore
from .memory import AsyncMemoryStore, MemoryStore

SCHEME = "sealed"
_NO_LIST = (
    "sealed sessions live in browsers' cookies, so no list of them exists; use a server store "
    "(sqlite://, postgresql://, redis://...) to list a user's sessions"
)
_NO_COUNT = (
    "sealed sessions live in browsers' cookies, so they cannot be counted; use a server store "
    "(sqlite://, postgresql://, redis://...) for session statistics"
)
_NO_RECORD = "this sealed:// store has no revocation store (sealed://?revocations=<store URL>)"


def parse_url(url: str) -> str | None:
    """The revocation store URL inside a ``sealed://`` URL (``None`` when there is none).

    The inner URL must be URL-encoded (``%3A%2F%2F``...); it is decoded with ``unquote``, so a
    ``+`` stays a ``+`` (``redis+cluster://``).
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != SCHEME or not sep:
        raise ConfigurationError(f"not a sealed:// URL: {url!r}")
    location, _, query = rest.partition("?")
    if location not in ("", "/"):
        raise ConfigurationError(
            f"a sealed:// URL names no host or path (got {location!r}); "
            "its only option is ?revocations=<URL-encoded store URL>"
        )
    revocations: str | None = None
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name != "revocations":
            raise ConfigurationError(
                f"unknown sealed:// option {name!r}; the only one is revocations=<store URL>"
            )
        if revocations is not None:
            raise ConfigurationError("sealed:// takes one revocations= store")
        revocations = unquote(value)
        if "://" not in revocations:
            raise ConfigurationError(
                f"revocations={value!r} is not a store URL; URL-encode it, e.g. "
                "sealed://?revocations=redis%3A%2F%2F127.0.0.1%3A6379%2F0"
            )
        if revocations.partition("://")[0].lower() == SCHEME:
            raise ConfigurationError("the revocation store must be a server store, not sealed://")
    return revocations


class AsyncSealedStore:
    """The store ``sealed://`` selects (async). ``revocations``: the server store that keeps
    revocation records, or ``None`` (then a copied cookie lives until it expires)."""

    def __init__(self, revocations: AsyncStore | None = None) -> None:
        self.revocations = revocations
        self._hits: AsyncStore = revocations if revocations is not None else AsyncMemoryStore()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncSealedStore:
        """``sealed://[?revocations=<URL-encoded store URL>]``; ``options`` go to that store."""
        inner = parse_url(url)
        if inner is None:
            if options:
                raise ConfigurationError("store options need a revocation store (sealed://)")
            return cls()
        from .url import async_store_from_url

        return cls(async_store_from_url(inner, **options))

    def _records(self) -> AsyncStore:
        if self.revocations is None:
            raise NotSupportedError(_NO_RECORD)
        return self.revocations

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self._records().get(session_id)

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        return await self._records().put(record, expected_version)

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return await self._records().replace(record, old_id, old_version)

    async def delete(self, *session_ids: str) -> None:
        await self._records().delete(*session_ids)

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        raise NotSupportedError(_NO_LIST)

    async def user_ids(self, now: float) -> list[str]:
        raise NotSupportedError(_NO_LIST)

    async def stats(self, now: float) -> SessionStats:
        raise NotSupportedError(_NO_COUNT)

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        """Purge expired revocation records (and throttling counts); 0 without a store."""
        if self.revocations is None:
            await self._hits.purge_expired(now, batch)
            return 0
        return await self.revocations.purge_expired(now, batch)

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return await self._hits.hit(key, now, window)

    async def clear_hits(self, key: str) -> None:
        await self._hits.clear_hits(key)

    async def create_schema(self) -> None:
        """Create the revocation store's schema, when it has one (SQL)."""
        create = getattr(self.revocations, "create_schema", None)
        if create is not None:
            await create()

    async def close(self) -> None:
        if self.revocations is not None:
            await self.revocations.close()


class SealedStore:
    """The sync twin of :class:`AsyncSealedStore`."""

    def __init__(self, revocations: SyncStore | None = None) -> None:
        self.revocations = revocations
        self._hits: SyncStore = revocations if revocations is not None else MemoryStore()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SealedStore:
        inner = parse_url(url)
        if inner is None:
            if options:
                raise ConfigurationError("store options need a revocation store (sealed://)")
            return cls()
        from .url import sync_store_from_url

        return cls(sync_store_from_url(inner, **options))

    def _records(self) -> SyncStore:
        if self.revocations is None:
            raise NotSupportedError(_NO_RECORD)
        return self.revocations

    def get(self, session_id: str) -> SessionRecord | None:
        return self._records().get(session_id)

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        return self._records().put(record, expected_version)

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return self._records().replace(record, old_id, old_version)

    def delete(self, *session_ids: str) -> None:
        self._records().delete(*session_ids)

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        raise NotSupportedError(_NO_LIST)

    def user_ids(self, now: float) -> list[str]:
        raise NotSupportedError(_NO_LIST)

    def stats(self, now: float) -> SessionStats:
        raise NotSupportedError(_NO_COUNT)

    def purge_expired(self, now: float, batch: int = 500) -> int:
        if self.revocations is None:
            self._hits.purge_expired(now, batch)
            return 0
        return self.revocations.purge_expired(now, batch)

    def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return self._hits.hit(key, now, window)

    def clear_hits(self, key: str) -> None:
        self._hits.clear_hits(key)

    def create_schema(self) -> None:
        create = getattr(self.revocations, "create_schema", None)
        if create is not None:
            create()

    def close(self) -> None:
        if self.revocations is not None:
            self.revocations.close()
