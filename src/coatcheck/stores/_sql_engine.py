"""Building SQLAlchemy engines for the SQL stores, and turning driver failures into outages.

One URL serves both twins: a bare scheme (``postgresql://``) or a driver the twin cannot use
(``postgresql+asyncpg://`` for the sync store) is mapped to the twin's default driver, so an app
configures its store once and uses it from async and sync code alike.

Timeouts are set where each driver allows, so a stuck database turns into
:class:`~coatcheck.errors.StoreUnavailableError` (HTTP 503) quickly instead of hanging requests:

- connect timeout: on every driver (libpq rounds it up to whole seconds, at least 2);
- statement timeout: PostgreSQL's ``statement_timeout``; MariaDB's ``max_statement_time``
  (MySQL: ``max_execution_time``, which covers reads only) plus InnoDB's lock wait timeout;
  SQLite's ``busy_timeout`` (how long a write waits for another writer). The MySQL drivers also
  get a client read timeout of connect + statement timeout, since their connect timeout does
  not cover the server's greeting;
- pool timeout: how long a request waits for a free pooled connection.

A store URL may carry the store's own options (:data:`URL_OPTIONS`: ``?table_prefix=app_``,
``?pool_size=20``...); :func:`store_url` takes them out, typed, before the URL reaches
SQLAlchemy. Every other query parameter must be one the driver takes (``sslmode``, ``charset``,
SQLite's ``timeout``...): :func:`build_engine` asks the driver, without connecting, and refuses
the others at start-up, where they would otherwise fail every connection (or be ignored).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, pool
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigurationError, StoreUnavailableError
from ._sql_statements import DEFAULT_TABLE_PREFIX, dialect_family
from .url import (
    Parser,
    parse_count,
    parse_flag,
    parse_seconds,
    parse_seconds_or_none,
    parse_text,
    pick,
    take_options,
    unknown_option_error,
)

E = TypeVar("E", Engine, AsyncEngine)


@dataclass(frozen=True, slots=True)
class _Drivers:
    async_default: str
    sync_default: str
    async_capable: frozenset[str]
    sync_capable: frozenset[str]
    extra: str


_DRIVERS: dict[str, _Drivers] = {
    "sqlite": _Drivers(
        "aiosqlite", "pysqlite", frozenset({"aiosqlite"}), frozenset({"pysqlite"}), "sqlite"
    ),
    "postgresql": _Drivers(
        "asyncpg",
        "psycopg",
        # psycopg 3 has an async mode, so postgresql+psycopg:// stays psycopg in the async twin.
        frozenset({"asyncpg", "psycopg"}),
        frozenset({"psycopg", "psycopg2", "pg8000"}),
        "postgres",
    ),
    "mysql": _Drivers(
        "asyncmy",
        "pymysql",
        frozenset({"asyncmy", "aiomysql"}),
        frozenset({"pymysql", "mysqldb"}),
        "mysql",
    ),
}
# Backend names as users write them -> the SQLAlchemy dialect name to use.
_BACKENDS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",  # the Heroku-style spelling SQLAlchemy no longer accepts
    "mysql": "mysql",
    "mariadb": "mariadb",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineSettings:
    """Pool and timeout settings for an engine the store builds itself (validated once)."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 5.0
    connect_timeout: float = 2.0
    statement_timeout: float | None = 5.0

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, got {self.pool_size}")
        if self.max_overflow < 0:
            raise ConfigurationError(f"max_overflow must be >= 0, got {self.max_overflow}")
        for name in ("pool_timeout", "connect_timeout", "statement_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")


URL_OPTIONS: Mapping[str, Parser] = MappingProxyType(
    {
        "table_prefix": parse_text,
        "create_schema": parse_flag,
        "pool_size": parse_count,
        "max_overflow": parse_count,
        "pool_timeout": parse_seconds,
        "connect_timeout": parse_seconds,
        "statement_timeout": parse_seconds_or_none,
    }
)
"""The SQL stores' own options in a store URL (``statement_timeout=none``: the server's limits)."""

_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "table_prefix": DEFAULT_TABLE_PREFIX,
        "create_schema": None,
        **{f.name: f.default for f in dataclasses.fields(EngineSettings)},
    }
)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreURL:
    """A SQL store URL taken apart: the database URL without the store's options, and the
    store's settings from the URL and the ``from_url`` keyword arguments."""

    url: URL
    table_prefix: str
    create_schema: bool | None
    engine: EngineSettings


def _parse(url: str | URL) -> URL:
    try:
        return sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"not a database URL: {exc}") from None


def store_url(url: str | URL, **given: Any) -> StoreURL:
    """Take the store's own options out of ``url`` and settle each against the keyword argument
    ``given`` for it: one that is not its default wins, else the URL's; a ``table_prefix`` in
    both that differs is a ConfigurationError (the wrong one addresses other tables)."""
    parsed = _parse(url)
    pairs = [
        (name, value)
        for name, values in parsed.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    options, _driver_pairs = take_options(pairs, URL_OPTIONS, parsed.get_backend_name())
    chosen = {
        name: pick(options, name, given.get(name, default), default, agree=name == "table_prefix")
        for name, default in _DEFAULTS.items()
    }
    engine_fields = {f.name for f in dataclasses.fields(EngineSettings)}
    return StoreURL(
        url=parsed.difference_update_query(list(options)),
        table_prefix=chosen["table_prefix"],
        create_schema=chosen["create_schema"],
        engine=EngineSettings(**{name: chosen[name] for name in engine_fields}),
    )


def resolve_url(url: str | URL, *, asynchronous: bool) -> URL:
    """``url`` with the driver the async (or sync) twin should use.

    A driver the twin can use is kept; a bare scheme or a driver of the other kind becomes the
    twin's default: aiosqlite/asyncpg/asyncmy for async, pysqlite/psycopg/pymysql for sync.
    """
    parsed = _parse(url)
    backend, _, driver = parsed.drivername.partition("+")
    dialect = _BACKENDS.get(backend)
    if dialect is None:
        raise ConfigurationError(
            f"no SQL session store for {backend!r} URLs; use sqlite://, postgresql:// or "
            f"mysql:// (mariadb://)"
        )
    drivers = _DRIVERS[dialect_family(dialect)]
    capable = drivers.async_capable if asynchronous else drivers.sync_capable
    if driver not in capable:
        driver = drivers.async_default if asynchronous else drivers.sync_default
    return parsed.set(drivername=f"{dialect}+{driver}")


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def engine_arguments(
    url: URL, settings: EngineSettings, *, asynchronous: bool
) -> tuple[URL, dict[str, Any]]:
    """The URL and keyword arguments for ``create_engine``/``create_async_engine``."""
    family = dialect_family(url.get_backend_name())
    driver = url.get_driver_name()
    connect_args: dict[str, Any] = {}
    kwargs: dict[str, Any] = {
        # A connection the server dropped (restart, idle timeout) is replaced before use, so
        # the store recovers from a database restart by itself.
        "pool_pre_ping": True,
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        # Errors must not carry statement parameters: they hold session data and secret hashes,
        # and error messages end up in logs.
        "hide_parameters": True,
        "connect_args": connect_args,
    }
    if family == "sqlite":
        # A local file has no server to restart or idle connections to drop: no ping needed.
        kwargs["pool_pre_ping"] = False
        if _is_memory_sqlite(url):
            # Every connection to :memory: is a new, empty database, so the pool holds exactly
            # one, and concurrent requests queue for it. (StaticPool would share that one
            # connection between concurrent transactions, which SQLite cannot keep apart.)
            kwargs["poolclass"] = pool.AsyncAdaptedQueuePool if asynchronous else pool.QueuePool
            kwargs["pool_size"], kwargs["max_overflow"] = 1, 0
        if driver == "pysqlite":
            # The pool hands connections to whichever thread asks; each is used by one at a time.
            connect_args["check_same_thread"] = False
    elif family == "postgresql":
        url = _translate_sslmode(url, driver)
        timeout_ms = _ms(settings.statement_timeout)
        if driver == "asyncpg":
            connect_args["timeout"] = settings.connect_timeout
            if timeout_ms is not None and "server_settings" not in url.query:
                connect_args["server_settings"] = {"statement_timeout": str(timeout_ms)}
        elif driver in ("psycopg", "psycopg2"):
            # libpq counts whole seconds and treats anything under 2 as 2.
            connect_args["connect_timeout"] = max(2, math.ceil(settings.connect_timeout))
            if timeout_ms is not None and "options" not in url.query:
                connect_args["options"] = f"-c statement_timeout={timeout_ms}"
        elif driver == "pg8000":
            connect_args["timeout"] = settings.connect_timeout
    else:
        connect_args["connect_timeout"] = max(1, math.ceil(settings.connect_timeout))
        if settings.statement_timeout is not None and driver in ("pymysql", "asyncmy", "mysqldb"):
            # These drivers' connect timeout covers only the TCP connect: the server's greeting
            # and every answer are read under read_timeout, so without one a server that
            # accepts but never answers hangs the caller. The server stops a statement after
            # statement_timeout, so a healthy answer never takes longer than this.
            connect_args["read_timeout"] = math.ceil(
                settings.connect_timeout + settings.statement_timeout
            )
            if driver == "pymysql":
                connect_args["write_timeout"] = connect_args["read_timeout"]
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    return url, kwargs


def _translate_sslmode(url: URL, driver: str) -> URL:
    """Let one PostgreSQL URL carry its TLS mode to both twins: libpq drivers call it
    ``sslmode``, asyncpg calls it ``ssl`` (with the same values: require, verify-full, ...)."""
    query = url.query
    if driver == "asyncpg" and "sslmode" in query and "ssl" not in query:
        return url.difference_update_query(["sslmode"]).update_query_dict({"ssl": query["sslmode"]})
    if driver in ("psycopg", "psycopg2") and "ssl" in query and "sslmode" not in query:
        return url.difference_update_query(["ssl"]).update_query_dict({"sslmode": query["ssl"]})
    return url


# What SQLAlchemy's pysqlite dialect (aiosqlite's too) takes from the query string; with
# uri=true the rest goes to SQLite's own URI parameters (https://sqlite.org/uri.html).
_SQLITE_PARAMETERS = frozenset(
    {"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"}
)
_SQLITE_URI_PARAMETERS = frozenset(
    {"vfs", "mode", "cache", "psow", "nolock", "immutable", "modeof"}
)
# The module whose connect() each driver's dialect calls.
_DRIVER_MODULES = {
    "asyncpg": "asyncpg",
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "pg8000": "pg8000",
    "asyncmy": "asyncmy",
    "aiomysql": "aiomysql",
    "pymysql": "pymysql",
    "mysqldb": "MySQLdb",
}
# Taken by SQLAlchemy's adapter before it calls the driver's connect().
_ADAPTER_PARAMETERS = {
    "asyncpg": frozenset({"prepared_statement_cache_size", "prepared_statement_name_func"})
}
# These pass the keyword arguments they do not name on to libpq as connection parameters.
_LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2"})


def _libpq_keywords() -> frozenset[str] | None:
    try:
        from psycopg import pq
    except ImportError:
        return None
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _driver_parameters(driver: str) -> frozenset[str] | None:
    """The parameters ``driver``'s connect() takes, from its signature (and libpq's list for the
    libpq drivers); None when that cannot be told (not installed, or any keyword accepted)."""
    try:
        module = importlib.import_module(_DRIVER_MODULES[driver])
        parameters = list(inspect.signature(module.connect).parameters.values())
    except (KeyError, ImportError, TypeError, ValueError):
        return None
    named = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        libpq = _libpq_keywords() if driver in _LIBPQ_DRIVERS else None
        if libpq is None:
            return None
        named |= libpq
    return frozenset(named | _ADAPTER_PARAMETERS.get(driver, frozenset()))


def _check_driver_parameters(url: URL) -> None:
    """Refuse the query parameters of ``url`` that its driver does not take (a typo, or an
    option meant for another store), at start-up: the driver would fail every connection on
    them, or SQLAlchemy would ignore them with a warning. Nothing connects."""
    if not url.query:
        return
    driver = url.get_driver_name()
    if dialect_family(url.get_backend_name()) == "sqlite":
        takes = _SQLITE_PARAMETERS
        if str(url.query.get("uri", "")).lower() in ("1", "true", "yes", "on"):
            takes |= _SQLITE_URI_PARAMETERS
        refused = set(url.query) - takes
    else:
        known = _driver_parameters(driver)
        if known is None:
            return
        # What the dialect will hand to connect(), after its own translations (MySQL's ssl_*).
        _args, params = url.get_dialect()().create_connect_args(url)
        refused = set(params) - known
    if refused:
        raise unknown_option_error(
            refused,
            url.get_backend_name(),
            URL_OPTIONS,
            f"; anything else in its URL must be a connection parameter of the {driver} driver",
        )


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, math.ceil(seconds * 1000))


def _session_setup(
    url: URL, settings: EngineSettings, dialect: sa.Dialect
) -> Callable[[Any, Any], None] | None:
    """What to run on each new connection, as a pool ``connect`` listener (None: nothing)."""
    family = dialect_family(url.get_backend_name())
    if family == "sqlite":
        busy = _ms(settings.statement_timeout)
        return lambda dbapi_connection, _record: _sqlite_setup(dbapi_connection, busy)
    if family == "mysql" and settings.statement_timeout is not None:
        seconds = settings.statement_timeout
        lock_wait = max(1, math.ceil(seconds))

        def mysql_timeouts() -> list[str]:
            # The dialect meets the server on the first connection, before this listener runs,
            # so it knows by now which of the two it is talking to.
            if getattr(dialect, "is_mariadb", False):
                limit = f"SET SESSION max_statement_time = {seconds:.3f}"
            else:
                limit = f"SET SESSION max_execution_time = {_ms(seconds)}"
            return [f"SET SESSION innodb_lock_wait_timeout = {lock_wait}", limit]

        return _run_on_connect(mysql_timeouts)
    return None


def _sqlite_setup(dbapi_connection: Any, busy_ms: int | None) -> None:
    """Per-connection SQLite settings: busy timeout, WAL, synchronous=NORMAL.

    busy_timeout comes first (without a statement timeout, Python's sqlite3 default of 5 s
    stays). Switching a fresh file to WAL needs a lock that SQLite does not wait for on the busy
    handler, so several processes or threads opening a new database at once can see "database is
    locked" there: the mode is only set when not already WAL, and a locked switch is retried.
    """
    cursor = dbapi_connection.cursor()
    try:
        if busy_ms is not None:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        deadline = time.monotonic() + (busy_ms or 5000) / 1000
        while True:
            try:
                cursor.execute("PRAGMA journal_mode")
                if str(cursor.fetchone()[0]).lower() != "wal":
                    # WAL: readers never block the writer and the writer never blocks readers.
                    cursor.execute("PRAGMA journal_mode = WAL")
                break
            except Exception as exc:  # sqlite3 or the aiosqlite adapter's OperationalError
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        # With WAL, NORMAL is safe against application crashes and avoids an fsync per commit;
        # a power loss may forget the last commits, which a session store tolerates.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _run_on_connect(statements: Callable[[], list[str]]) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements():
                cursor.execute(statement)
        finally:
            cursor.close()

    return on_connect


def driver_url(
    url: str | URL, settings: EngineSettings, *, asynchronous: bool
) -> tuple[URL, dict[str, Any]]:
    """The URL with the twin's driver and the ``create_engine`` keyword arguments for ``url``;
    a query parameter the driver would not take is a ConfigurationError (nothing connects)."""
    resolved = resolve_url(url, asynchronous=asynchronous)
    final_url, kwargs = engine_arguments(resolved, settings, asynchronous=asynchronous)
    _check_driver_parameters(final_url)
    return final_url, kwargs


def build_engine(
    create: Callable[..., E],
    url: str | URL,
    settings: EngineSettings,
    *,
    asynchronous: bool,
) -> E:
    """Create the engine for ``url`` with ``create`` (``create_engine`` or ``create_async_engine``)
    and install the per-connection setup (SQLite pragmas, MySQL timeouts)."""
    final_url, kwargs = driver_url(url, settings, asynchronous=asynchronous)
    try:
        engine = create(final_url, **kwargs)
    except ImportError as exc:
        backend, driver = final_url.get_backend_name(), final_url.get_driver_name()
        drivers = _DRIVERS[dialect_family(backend)]
        default = drivers.async_default if asynchronous else drivers.sync_default
        hint = f"pip install 'coatcheck[{drivers.extra}]'"
        if driver != default:
            hint = f"install {driver}, or use {backend}:// for {default} ({hint})"
        raise ConfigurationError(
            f"the {driver} driver for {backend} is not installed ({exc}): {hint}"
        ) from exc
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    setup = _session_setup(final_url, settings, sync_engine.dialect)
    if setup is not None:
        event.listen(sync_engine, "connect", setup)
    if dialect_family(final_url.get_backend_name()) == "sqlite":
        _begin_immediate(sync_engine)
    return engine


def _begin_immediate(engine: sa.Engine) -> None:
    """Start every SQLite transaction with ``BEGIN IMMEDIATE``.

    The driver's own implicit ``BEGIN`` is deferred: the transaction reads from a WAL snapshot
    and upgrades to a writer at its first write. If another connection committed in between, that
    upgrade fails at once with SQLITE_BUSY_SNAPSHOT ("database is locked"), without waiting on
    busy_timeout -- under concurrent writes from threads or processes. Taking the write lock up
    front makes writers queue on busy_timeout instead. Session operations are short, so the
    cost (transactions on one file run one at a time) is small; readers outside a transaction
    are unaffected by WAL.
    """

    def autocommit_driver(dbapi_connection: Any, _connection_record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN

    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", autocommit_driver)
    event.listen(engine, "begin", begin)


@contextmanager
def unavailable_on_failure(url: URL) -> Iterator[None]:
    """Raise :class:`~coatcheck.errors.StoreUnavailableError` for any database or network failure.

    Driver errors (wrapped by SQLAlchemy), pool timeouts, socket errors and timeouts all mean
    the same to a request: the store cannot answer now (HTTP 503).
    """
    try:
        yield
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        where = url.render_as_string(hide_password=True)
        raise StoreUnavailableError(
            f"SQL session store {where} failed: {type(exc).__name__}: {exc}"
        ) from exc
