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
``sealed://[?revocations=<URL-encoded URL>]``    no server store: sessions sealed into cookies
                                                 (see :mod:`coatcheck.stores.sealed`)
===============================================  ==========================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

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
    if scheme == "sealed":
        return "sealed"
    if scheme in _REDIS:
        return "redis"
    if scheme.split("+")[0] in _SQL:
        return "sql"
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}")


# Pool and timeout settings that may ride in the URL's query string (so a CLI flag or an
# environment variable can carry them), with their types; they are taken out before the URL
# reaches the driver. Keyword arguments given in code win over the URL.
_URL_OPTIONS: dict[str, dict[str, type]] = {
    "sql": {
        "pool_size": int,
        "max_overflow": int,
        "pool_timeout": float,
        "connect_timeout": float,
        "statement_timeout": float,
    },
    "redis": {"max_connections": int, "socket_timeout": float, "socket_connect_timeout": float},
    "memory": {},
}


def _split_options(url: str, family: str) -> tuple[str, dict[str, Any]]:
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    known = _URL_OPTIONS[family]
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in known:
            try:
                options[name] = known[name](value)
            except ValueError:
                raise ConfigurationError(
                    f"store URL option {name}={value!r} is not a number"
                ) from None
        else:
            kept.append((name, value))
    return (f"{base}?{urlencode(kept)}" if kept else base), options


def async_store_from_url(url: str, **options: Any) -> AsyncStore:
    """An :class:`AsyncStore` for ``url``; the driver's extra must be installed.

    Pool and timeout settings may be given in the query string, e.g.
    ``postgresql://db/app?pool_size=20&statement_timeout=2`` or
    ``redis://cache:6379/0?prefix=app:&max_connections=50``; Redis URLs also take the client
    cache options ``client_cache=0|1``, ``client_cache_size`` and ``client_cache_ttl`` (see
    :func:`coatcheck.stores.redis.parse_redis_url`).
    """
    family = _family(url)
    if family == "sealed":
        from .sealed import AsyncSealedStore

        return AsyncSealedStore.from_url(url, **options)
    url, from_url = _split_options(url, family)
    options = {**from_url, **options}
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
    if family == "sealed":
        from .sealed import SealedStore

        return SealedStore.from_url(url, **options)
    url, from_url = _split_options(url, family)
    options = {**from_url, **options}
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
    if scheme.lower() == "sealed":
        from .sealed import parse_url

        try:
            inner = parse_url(url)
        except ConfigurationError:
            return "sealed://?…"  # unparseable: show nothing that could be a password
        return "sealed://" + (f"?revocations={redact(inner)}" if inner else "")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
