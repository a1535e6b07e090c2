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

Each store's own options ride in the query string, typed and checked at start-up
(``?table_prefix=app_``, ``?prefix=app:&client_cache=0``; the tables are in
``docs/stores/*.md``). The query parameters a store does not know go to its driver, which must
take them: a parameter neither takes (a typo, an option meant for another store) is a
:class:`~coatcheck.errors.ConfigurationError` that names it, raised when the store is built,
never a failure on each request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl

from ..errors import ConfigurationError
from .base import AsyncStore, SyncStore

T = TypeVar("T")

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


# --- the stores' own options in a URL ----------------------------------------------------------
# Each store module lists its options ({name: parser}) and parses them out of its URL with
# take_options; what is left of the query string belongs to the driver, which the store asks
# whether it takes it (unknown_option_error when neither does).

Parser: TypeAlias = Callable[[str], Any]
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def parse_flag(text: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case)."""
    lowered = text.lower()
    if lowered not in _TRUE | _FALSE:
        raise ValueError("not 0 or 1 (true/false, yes/no, on/off)")
    return lowered in _TRUE


def parse_count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number of seconds")
    return value


def parse_seconds_or_none(text: str) -> float | None:
    """Seconds, or ``none``: no limit of ours (the server's own applies)."""
    return None if text.lower() == "none" else parse_seconds(text)


def parse_text(value: str) -> str:
    return value


def take_options(
    query: Iterable[tuple[str, str]], known: Mapping[str, Parser], store: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Split a URL's query pairs into the store's own options (typed by their parsers) and the
    rest, in order (the driver's). An option given twice, or with a value its parser refuses,
    is a :class:`~coatcheck.errors.ConfigurationError` naming it."""
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name not in known:
            rest.append((name, value))
            continue
        if name in options:
            raise ConfigurationError(f"a {store} store URL may give {name} once")
        try:
            options[name] = known[name](value)
        except ValueError as exc:
            raise ConfigurationError(
                f"bad {store} store URL option {name}={value!r}: {exc}"
            ) from None
    return options, rest


def unknown_option_error(
    names: Iterable[str], store: str, known: Iterable[str], rest: str = ""
) -> ConfigurationError:
    """The start-up error for options that neither the store nor its driver takes: it names
    them and lists the store's own; ``rest`` says where anything else may go."""
    unknown = ", ".join(repr(name) for name in sorted(names))
    listed = ", ".join(sorted(known))
    own = f"the store's own options are {listed}" if listed else f"the {store} store takes none"
    return ConfigurationError(f"unknown {store} store option {unknown} ({own}{rest})")


def pick(options: Mapping[str, Any], name: str, given: T, default: T, *, agree: bool = False) -> T:
    """One store option's value: the keyword argument ``given`` when it is not ``default``
    (code wins), else the URL's (``options``), else ``default``.

    With ``agree`` a keyword argument and a URL option that differ are a ConfigurationError
    instead: for the key and table prefixes, where the wrong one silently addresses another
    app's sessions.
    """
    if name not in options:
        return given
    from_url: T = options[name]
    if given in (default, from_url):
        return from_url
    if agree:
        raise ConfigurationError(
            f"two different values for {name}: {from_url!r} in the store URL, {given!r} as an "
            "argument"
        )
    return given


def async_store_from_url(url: str, **options: Any) -> AsyncStore:
    """An :class:`AsyncStore` for ``url``; the driver's extra must be installed.

    The store's own options may ride in the query string, typed and checked at start-up:
    ``sqlite:///s.db?table_prefix=app_``, ``postgresql://db/app?pool_size=20&statement_timeout=2``,
    ``redis://cache:6379/0?prefix=app:&max_connections=50&client_cache=0``. Other parameters go
    to the database driver when it takes them (``sslmode``, ``charset``, ``ssl_cert_reqs``...);
    a parameter neither takes is a :class:`~coatcheck.errors.ConfigurationError` naming it.
    ``options`` are the store's ``from_url`` keyword arguments; one that is not its default wins
    over the URL's (two different key or table prefixes are a ConfigurationError).
    """
    family = _family(url)
    if family == "sealed":
        from .sealed import AsyncSealedStore

        return AsyncSealedStore.from_url(url, **options)
    if family == "memory":
        from .memory import AsyncMemoryStore

        _check_memory_url(url, options)
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
    if family == "memory":
        from .memory import MemoryStore

        _check_memory_url(url, options)
        return MemoryStore()
    if family == "redis":
        from .redis import RedisStore

        return RedisStore.from_url(url, **options)
    from .sql import SQLStore

    return SQLStore.from_url(url, **options)


def _check_memory_url(url: str, options: Mapping[str, Any]) -> None:
    # The memory store has no option: anything given is a mistake (or meant for another store).
    names = [name for name, _value in parse_qsl(url.partition("?")[2], keep_blank_values=True)]
    if names or options:
        raise unknown_option_error({*names, *options}, "memory", ())


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
