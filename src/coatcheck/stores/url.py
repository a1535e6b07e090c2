"""Build a store from a URL: the one configuration shared by the middleware, the CLI and the demo.

===============================================  ==========================================
URL                                              store
===============================================  ==========================================
``memory://``                                    in-process (tests, one process only)
``sqlite:///path.db``                            SQLite file (the embedded default)
``postgresql://…``, ``postgresql+asyncpg://…``   PostgreSQL
``mysql://…``, ``mariadb://…``, ``mysql+asyncmy://…``  MySQL / MariaDB
``redis://host:port/db``, ``rediss://…``         Redis (standalone)
``redis+cluster://host:port[,host:port…]``       Redis Cluster
===============================================  ==========================================
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .base import AsyncStore, SyncStore

_SQL = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
_REDIS = ("redis", "rediss", "unix", "redis+cluster", "redis-cluster", "rediss+cluster")


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(f"store URL {url!r} has no scheme (e.g. sqlite:///sessions.db)")
    return scheme.lower()


def _family(url: str) -> str:
    scheme = _scheme(url)
    if scheme == "memory":
        return "memory"
    if scheme in _REDIS:
        return "redis"
    if scheme.split("+")[0] in _SQL:
        return "sql"
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}")


def async_store_from_url(url: str, **options: Any) -> AsyncStore:
    """An :class:`AsyncStore` for ``url``; the driver's extra must be installed."""
    family = _family(url)
    if family == "memory":
        from .memory import AsyncMemoryStore

        return AsyncMemoryStore()
    if family == "redis":
        from .redis import AsyncRedisStore

        return AsyncRedisStore.from_url(url, **options)
    from .sql import AsyncSQLStore

    return AsyncSQLStore.from_url(url, **options)


def sync_store_from_url(url: str, **options: Any) -> SyncStore:
    """The sync twin of :func:`async_store_from_url`."""
    family = _family(url)
    if family == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if family == "redis":
        from .redis import RedisStore

        return RedisStore.from_url(url, **options)
    from .sql import SQLStore

    return SQLStore.from_url(url, **options)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and CLI output)."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
