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

import asyncio
import collections
import contextlib
import dataclasses
import functools
import importlib
import inspect
import math
import os
import select
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event, pool
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, CursorResult, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .._patience import Patience
from ..errors import ConfigurationError, StoreUnavailableError
from ._sql_statements import DEFAULT_TABLE_PREFIX, Bound, Done, Plan, advance, dialect_family
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
T = TypeVar("T")


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


SQLITE_MMAP_SIZE = 2**31 - 2**16
"""Bytes of a SQLite file each connection reads through memory-mapped I/O (``PRAGMA
mmap_size``; SQLite caps it at its build's maximum, 0x7fff0000 by default). A read of a page
that is mapped is a memory access instead of a ``pread`` into SQLite's own page cache: with a
million sessions (a 1.1 GB file) a primary-key read stays as fast as on a near-empty file."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineSettings:
    """Pool and timeout settings for an engine the store builds itself (validated once)."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 5.0
    connect_timeout: float = 2.0
    statement_timeout: float | None = 5.0
    mmap_size: int = SQLITE_MMAP_SIZE

    def __post_init__(self) -> None:
        if self.mmap_size < 0:
            raise ConfigurationError(f"mmap_size must be >= 0 (0: off), got {self.mmap_size}")
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

SQLITE_URL_OPTIONS: Mapping[str, Parser] = MappingProxyType(
    {**URL_OPTIONS, "mmap_size": parse_count}
)
"""A SQLite store's: the SQL stores' and ``mmap_size`` (bytes; ``0`` turns memory-mapped reads
off)."""

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
    sqlite = parsed.get_backend_name() == "sqlite"
    known = SQLITE_URL_OPTIONS if sqlite else URL_OPTIONS
    options, _driver_pairs = take_options(pairs, known, parsed.get_backend_name())
    chosen = {
        name: pick(options, name, given.get(name, default), default, agree=name == "table_prefix")
        for name, default in _DEFAULTS.items()
    }
    if chosen["mmap_size"] != SQLITE_MMAP_SIZE and not sqlite:
        raise ConfigurationError(
            f"mmap_size is a SQLite store option; a {parsed.get_backend_name()} store takes none"
        )
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
        # Every statement commits by itself: a read is one statement with no BEGIN/COMMIT
        # round trips around it (plans that need a transaction say BEGIN and COMMIT), and
        # closing a connection sends no ROLLBACK.
        "isolation_level": "AUTOCOMMIT",
        "skip_autocommit_rollback": True,
        # A connection the server dropped (restart, idle timeout) is replaced before use, so
        # the store recovers from a database restart by itself: by a look at its socket where
        # the driver allows (see install_connection_checks), by a ping round trip otherwise.
        "pool_pre_ping": driver not in _SOCKET_CHECKED,
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
        busy, mmap = _ms(settings.statement_timeout), settings.mmap_size
        return lambda dbapi_connection, _record: _sqlite_setup(dbapi_connection, busy, mmap)
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


def _sqlite_setup(dbapi_connection: Any, busy_ms: int | None, mmap_size: int) -> None:
    """Per-connection SQLite settings: busy timeout, WAL, synchronous=NORMAL, mmap_size.

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
        cursor.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
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
    install_connection_checks(sync_engine, pre_ping=bool(kwargs["pool_pre_ping"]))
    timeout = settings.statement_timeout
    if final_url.get_driver_name() == "psycopg" and not asynchronous and timeout is not None:
        # libpq has no read timeout: a hung server would hold a sync caller forever.
        _StatementDeadlines(settings.connect_timeout + timeout).install(sync_engine)
    return engine


# --- dead and hung connections ----------------------------------------------------------------

# Drivers whose idle connections can be checked for a closed peer without a round trip.
_SOCKET_CHECKED = frozenset({"asyncpg", "psycopg", "pymysql", "asyncmy"})


def install_connection_checks(engine: sa.Engine, *, pre_ping: bool) -> None:
    """Make ``engine``'s pool replace dead connections for free and drop failed ones at once.

    - On checkout (unless the pool pings), a connection whose server closed it (a restart, an
      idle timeout, ``pg_terminate_backend``) is swapped for a new one: an idle connection has
      nothing to read, so a readable (or closed) socket means the peer is gone. This costs no
      round trip, unlike a ping, and catches what a ping catches except a silent network
      partition, which the statement timeout turns into a 503 like any hang.
    - A connection invalidated after an error or a cancellation (the store timeout) is closed
      at once, without the goodbye SQLAlchemy would otherwise await: asyncpg waits up to 2 s
      for a hung server to acknowledge it, shielded from cancellation. No other close waits on
      the server either (see below), so a hung server costs an operation its timeout, no more.

    Idempotent per engine. The stores install it on engines they build; call it on your own
    engine to get the same behaviour.
    """
    if getattr(engine, _INSTALLED, False) or engine.dialect.name == "sqlite":
        return  # (a SQLite file has no server to hang or go away)
    setattr(engine, _INSTALLED, True)
    dialect = engine.dialect
    # Closing a connection in autocommit mode sends a ROLLBACK that can change nothing, and
    # SQLAlchemy runs that close shielded from cancellation: after a statement that ended just
    # as the server hung, it would wait for the server to come back. (Connections in a
    # transaction are still rolled back.)
    dialect.skip_autocommit_rollback = True
    # The pool terminates a connection after an error, a cancellation, or a connect whose setup
    # was interrupted, each by dialect.do_terminate: abort the transport first, so that the
    # dialect's own goodbye finds it closed and returns at once.
    graceful_terminate = dialect.do_terminate

    def terminate_at_once(dbapi_connection: Any) -> None:
        _close_now(dbapi_connection)
        graceful_terminate(dbapi_connection)

    dialect.do_terminate = terminate_at_once  # type: ignore[method-assign]
    if dialect.driver == "asyncpg":
        # asyncpg's graceful close (a pool closing an overflow connection on its return, or
        # dispose) waits, with no timeout, for the server to hang up, and SQLAlchemy shields
        # it from cancellation: a request returning its connection to a hung server would hang
        # with it. PostgreSQL takes a client that just goes away from an idle connection
        # silently (it logs that at DEBUG level only).
        graceful_close = dialect.do_close

        def close_at_once(dbapi_connection: Any) -> None:
            _close_now(dbapi_connection)
            graceful_close(dbapi_connection)

        dialect.do_close = close_at_once  # type: ignore[method-assign]
    if pre_ping:
        return

    def refuse_if_peer_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        closed = peer_closed(getattr(dbapi_connection, "driver_connection", dbapi_connection))
        if closed is None:  # a driver version whose insides we do not know: ping instead
            try:
                closed = not dialect.do_ping(dbapi_connection)
            except Exception:  # a failed ping is the answer, not an error
                closed = True
        if closed:
            # The pool discards this connection and checks out (or opens) another.
            raise sa.exc.DisconnectionError("the database closed this pooled connection")

    event.listen(engine, "checkout", refuse_if_peer_closed)


_INSTALLED = "_coatcheck_connection_checks"


def _close_now(dbapi_connection: Any) -> None:
    """Drop an asyncio driver's connection on the spot (sync drivers close without waiting)."""
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    terminate = getattr(driver, "terminate", None)
    if callable(terminate):  # asyncpg: abort the transport
        terminate()
    elif getattr(driver, "_transport", None) is not None:  # asyncmy: close() is the abort
        driver.close()


def peer_closed(driver: Any) -> bool | None:
    """Whether an idle driver connection's server has gone (closed, reset, or sent something
    unasked), found without a round trip; None for a driver this does not know."""
    if hasattr(driver, "_transport"):  # asyncpg, asyncmy: an event loop reads their sockets
        transport = driver._transport
        if transport is None or transport.is_closing():
            return True
        is_closed = getattr(driver, "is_closed", None)
        if (callable(is_closed) and is_closed()) or getattr(driver, "_stream_broken", False):
            return True
        # What the server sent may not have been read by the loop yet: look at the socket.
        sock = transport.get_extra_info("socket")
        return sock is None or _readable(sock.fileno())
    if hasattr(driver, "pgconn"):  # psycopg
        return bool(driver.closed) or _readable(driver.pgconn.socket)
    if hasattr(driver, "_sock"):  # pymysql
        return driver._sock is None or _readable(driver._sock.fileno())
    return None


def _readable(fd: int) -> bool:
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))  # POLLHUP and POLLERR are reported whatever was asked


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


class _StatementDeadlines:
    """A client-side deadline on every statement of a sync engine whose driver reads without one.

    psycopg waits for an answer as long as it takes: the server's statement_timeout stops a
    slow statement, but a server that hangs (stopped, or its machine frozen) answers never, and
    its kernel keeps acknowledging packets, so TCP timeouts do not fire either. So each
    statement is armed with a deadline when it starts and disarmed when it ends; a thread shuts
    the socket of one that overruns down, its read ends at once, and the connection is
    discarded as broken (the MySQL drivers get the same bound from their read_timeout).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # id(cursor) -> (deadline, socket descriptor, socket inode)
        self._armed: dict[int, tuple[float, int, int]] = {}
        self._changed = threading.Condition()
        self._watching = False

    def install(self, engine: sa.Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._arm)
        event.listen(engine, "after_cursor_execute", self._disarm)
        event.listen(engine, "handle_error", self._disarm_failed)

    def _arm(self, _conn: sa.Connection, cursor: Any, *_args: Any) -> None:
        fd = cursor.connection.pgconn.socket
        # The socket's inode tells it from a later socket that reuses the descriptor number.
        deadline = (time.monotonic() + self.seconds, fd, os.fstat(fd).st_ino)
        with self._changed:
            self._armed[id(cursor)] = deadline
            if not self._watching:
                self._watching = True
                watcher = threading.Thread(target=self._watch, name="coatcheck-sql", daemon=True)
                watcher.start()
            elif len(self._armed) == 1:
                self._changed.notify()  # the watcher sleeps with nothing armed

    def _disarm(self, _conn: sa.Connection, cursor: Any, *_args: Any) -> None:
        with self._changed:
            self._armed.pop(id(cursor), None)

    def _disarm_failed(self, context: sa.engine.ExceptionContext) -> None:
        # (ExceptionContext.cursor is declared but left unset by SQLAlchemy 2.1.)
        execution = context.execution_context
        cursor = getattr(execution, "cursor", None) or getattr(context, "cursor", None)
        if cursor is not None:
            with self._changed:
                self._armed.pop(id(cursor), None)

    def _watch(self) -> None:
        with self._changed:
            while True:
                if not self._armed:
                    # Idle: wait for a statement, and leave after a while without one (the next
                    # statement starts a watcher again), so idle stores keep no thread.
                    if not self._changed.wait(_IDLE_WATCHER_SECONDS) and not self._armed:
                        self._watching = False
                        return
                    continue
                # Deadlines are armed in increasing order, so the first one is the earliest.
                key, (deadline, fd, inode) = next(iter(self._armed.items()))
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                del self._armed[key]
                _shut_down(fd, inode)


_IDLE_WATCHER_SECONDS = 30.0


def _shut_down(fd: int, inode: int) -> None:
    """End every read and write on socket ``fd`` (if it is still the socket ``inode``) without
    closing the descriptor, which stays its owner's: a duplicate is shut down, which acts on
    the socket itself."""
    try:
        if os.fstat(fd).st_ino != inode:
            return  # closed meanwhile, and the number reused
        duplicate = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # closed meanwhile
    with duplicate, contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


# --- SQLite reads and writes that never wait --------------------------------------------------


class WouldWait(Exception):
    """The read cannot be served at once; run it the ordinary way (it may wait there)."""


class Handoff(Exception):
    """A write plan the direct writer cannot finish at once: ``step`` is its next statement, not
    yet run. Every statement before it has committed (each runs in autocommit mode), so the
    ordinary path goes on from ``step``, and the plan runs exactly once. ``started``: whether
    the plan got the outcome of any statement before (if not, it may as well be built again)."""

    def __init__(
        self, step: Any, reason: str, *, started: bool = False, busy: bool = False
    ) -> None:
        super().__init__(reason)
        self.step = step
        self.started = started
        self.busy = busy
        """The file's write lock was taken (another process's writer): try ``step`` again."""


_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6

BUSY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025)
"""Seconds between tries of a write that finds the file's write lock taken: SQLite's own busy
handler's steps, capped at 25 ms (it goes on to 50 and 100 ms)."""


class Busy:
    """The tries of one write that finds the file's write lock taken, within ``seconds``.

    The direct writer never waits inside SQLite (busy timeout zero): a statement that finds the
    lock taken did nothing, and is tried again after a delay. Waiting out here rather than in
    SQLite's busy handler lets the caller give up between tries, and then nothing is written
    (see :mod:`coatcheck._patience`)."""

    __slots__ = ("deadline", "seconds", "tries")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.tries = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def delay(self) -> float | None:
        """Seconds to wait before the next try; ``None`` once the time is spent."""
        left = self.left()
        if left <= 0:
            return None
        delay = BUSY_DELAYS[min(self.tries, len(BUSY_DELAYS) - 1)]
        self.tries += 1
        return min(delay, left)


class _Direct:
    """Statements run on a SQLite file through :mod:`sqlite3` itself, one connection per
    thread (opened on first use, busy timeout zero), with SQLAlchemy's compiled SQL of each
    prebuilt statement (:class:`~coatcheck.stores._sql_statements.Bound`)."""

    def __init__(self, database: str, mmap_size: int = SQLITE_MMAP_SIZE) -> None:
        self.database = database
        self.mmap_size = mmap_size
        # mode=rw: never create the file (the ordinary path does, with its schema).
        self._uri = f"{Path(database).absolute().as_uri()}?mode=rw"
        self._local = threading.local()
        # Weak: a connection lives as long as its thread (a server may start a thread per
        # request); close() reaches those still alive.
        self._opened: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._dialect = sqlite_dialect.dialect()
        self._compiled: dict[int, tuple[Any, str, tuple[str, ...], dict[str, Any]]] = {}
        self._closed = False

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA mmap_size = {int(self.mmap_size)}")

    def _execute(self, step: Bound) -> sqlite3.Cursor:
        statement: Any = step.statement
        found = self._compiled.get(id(statement))
        if found is None:
            compiled = statement.compile(dialect=self._dialect)
            # Literals in the statement (a "+ 1") are bind parameters with their own values.
            fixed = {n: b.value for n, b in compiled.binds.items() if b.value is not None}
            # The statement is kept alongside, so its id cannot be reused by another object.
            found = (statement, compiled.string, tuple(compiled.positiontup or ()), fixed)
            self._compiled[id(statement)] = found
        params, fixed = step.params, found[3]
        values = [params[n] if n in params else fixed[n] for n in found[2]]
        return self._connection().execute(found[1], values)

    def _connection(self) -> sqlite3.Connection:
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid():  # never one from before a fork
            return held.conn
        if self._closed:
            raise sqlite3.OperationalError("the store is closed")
        conn = sqlite3.connect(
            self._uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
        )
        try:
            self._setup(conn)  # a connection is used only once it is fully set up
            with self._lock:
                if self._closed:
                    raise sqlite3.OperationalError("the store is closed")
                held = self._local.held = _Held(conn)
                self._opened.add(held)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close every connection opened here (in threads still alive)."""
        with self._lock:
            self._closed = True
            opened = list(self._opened)
        for held in opened:
            held.conn.close()


class SQLiteReader(_Direct):
    """Runs read plans on a SQLite file without SQLAlchemy, a pool, or ever waiting.

    A WAL read never waits for writers, and a primary-key read takes microseconds: less than
    handing it to a worker thread, and far less than SQLAlchemy's per-call machinery. So the
    async store runs its reads right on the event loop through this reader, and the sync store
    in the calling thread. Each thread gets a connection of its own (opened on first use,
    ``query_only``) whose busy timeout is zero: in the rare case that a read would have to wait
    (recovery after a crash, a schema change) or cannot run (no table yet), :class:`WouldWait`
    sends it down the ordinary path, which waits for its turn or reports the failure.

    Plans run here may only yield :class:`~coatcheck.stores._sql_statements.Bound` statements
    that return rows, and read only ``scalar_one_or_none`` from the result.
    """

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA query_only = 1")
        super()._setup(conn)

    def run(self, plan: Plan[T]) -> T:
        """The plan's answer, or :class:`WouldWait`."""
        outcome: Any = None
        while not isinstance(step := advance(plan, outcome), Done):
            if not isinstance(step, Bound):
                raise WouldWait("not a prebuilt statement")
            try:
                rows = self._execute(step).fetchall()
            except sqlite3.Error as exc:  # busy, no such table, cannot open...
                raise WouldWait(str(exc)) from exc
            outcome = cast("CursorResult[Any]", _Rows(rows))
        return step.value


CHECKPOINT_EVERY = 200
"""Commits of the direct writer between two background checkpoints (about 700 pages of a
sessions table: SQLite's own automatic checkpoint runs at 1,000)."""


class WriteTurns:
    """One SQLite file's write turns within this process, for threads and event loops alike.

    SQLite takes one writer at a time. A writer that finds the file locked sleeps in SQLite's
    busy handler (1, 2, 5, 10 ... 100 ms steps) and tries again, so the writers of one process
    take turns here instead, each starting the moment the last one ends. A thread waits for its
    turn (:meth:`acquire`); a coroutine awaits it (:meth:`turn`) and keeps its event loop
    running meanwhile: it is woken when the holder (a worker thread, the background
    checkpoint) releases. Writers in other processes still meet on ``busy_timeout``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """The turn if it is free now, else ``False`` at once."""
        return self._lock.acquire(blocking=False)

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the turn (in a thread); ``False`` if it never came."""
        return self._lock.acquire(timeout=timeout)

    async def turn(self) -> None:
        """Wait for the turn without blocking the event loop (cancel to give up)."""
        if self._lock.acquire(blocking=False):
            return
        loop = asyncio.get_running_loop()
        while True:
            woken = loop.create_future()
            with self._guard:
                # Tried again under the guard: a release that came before the append woke nobody.
                if self._lock.acquire(blocking=False):
                    return
                self._waiting.append(woken)
            try:
                await woken
            except asyncio.CancelledError:
                with self._guard:
                    if woken in self._waiting:
                        self._waiting.remove(woken)
                        raise
                self._wake_next()  # woken and cancelled at once: the wake goes to the next
                raise
            if self._lock.acquire(blocking=False):
                return

    def release(self) -> None:
        self._lock.release()
        self._wake_next()

    def _wake_next(self) -> None:
        with self._guard:
            if not self._waiting:
                return
            woken = self._waiting.popleft()
        woken.get_loop().call_soon_threadsafe(_wake, woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


WAL_SIZE_LIMIT = 8 * 2**20
"""Bytes the write-ahead log is cut back to when it starts over after a spike (``PRAGMA
journal_size_limit``); its usual size between two checkpoints is 2-6 MB."""

CHECKPOINT_RETRY = 20
"""Commits before the next try when a checkpoint could not start the log over."""

CHECKPOINT_WAIT = 0.1
"""Seconds a background checkpoint waits for this process's write turn, and for readers and
writers of other processes, before it gives up until the next one."""


class SQLiteWriter(_Direct):
    """Runs write plans on a SQLite file without SQLAlchemy, a pool, or ever waiting.

    A session write is one short statement (an ``UPDATE`` by primary key, an ``INSERT``): about
    20-40 µs on SQLite itself, against ~200 µs through SQLAlchemy's connection pool, events and
    result objects, plus a hop to a worker thread. So the async store runs its writes right on
    the event loop through this writer, and the sync store in the calling thread, always in a
    write turn (:class:`WriteTurns`). The connection's busy timeout is zero: when the file's
    write lock is taken (a writer in another process, a purge), nothing was written (a
    statement is atomic) and :meth:`tries` tries it again after a short wait, which the caller
    spends outside SQLite (an ``await`` on the event loop), so a caller that stops waiting
    writes nothing later. When a statement fails for any other reason, :class:`Handoff` sends
    the rest of the plan down the ordinary path, which reports failures as the store always
    has.

    SQLite checkpoints the write-ahead log in the commit that takes it past 1,000 pages: a few
    milliseconds of copying and ``fsync`` that would stall the event loop. This writer's
    connections turn that off (``wal_autocheckpoint = 0``), and every :data:`CHECKPOINT_EVERY`
    commits a background thread checkpoints instead: a ``PASSIVE`` pass while writes go on,
    then a ``RESTART`` of the remainder in a write turn of its own (:class:`WriteTurns`, which
    every direct write holds), so the log starts over instead of growing.

    Plans run here may yield only :class:`~coatcheck.stores._sql_statements.Bound` statements,
    and read ``rowcount``, ``one`` or ``scalar_one_or_none`` from the result; a constraint
    violation is thrown into the plan as SQLAlchemy's ``IntegrityError``, as on the ordinary
    path.
    """

    def __init__(self, database: str, turns: WriteTurns, mmap_size: int = SQLITE_MMAP_SIZE) -> None:
        super().__init__(database, mmap_size)
        self.turns = turns
        self._commits = 0
        self._due = CHECKPOINT_EVERY  # commits until the next checkpoint (sooner after a miss)
        self._checkpointer: threading.Thread | None = None
        self.checkpoints = 0
        """Background checkpoints that ran to the end (for tests and operators)."""

    def _setup(self, conn: sqlite3.Connection) -> None:
        # The ordinary path's connections put the file in WAL mode; until one has, writes go
        # that way (a rollback journal would make readers wait on this writer).
        mode = conn.execute("PRAGMA journal_mode").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode and mode[0]}, not wal")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # A log that grew past this while a reader held it back (a paused process, a long
        # admin query) is cut back when it starts over, not kept at its high-water mark.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        super()._setup(conn)

    def run(self, plan: Plan[T], step: Any = None, *, started: bool = False) -> T:
        """The plan's answer, or :class:`Handoff` with the statement to go on from. ``step``:
        the plan's next statement when it was started before (``started``: and has run some)."""
        outcome: Any = None
        if step is None:
            step = advance(plan, None)
        while not isinstance(step, Done):
            if not isinstance(step, Bound):
                raise Handoff(step, "not a prebuilt statement", started=started)
            try:
                cursor = self._execute(step)
                rows = cursor.fetchall()
            except sqlite3.IntegrityError as exc:
                # The plan decides what a constraint violation means (as on the ordinary path).
                outcome = sa.exc.IntegrityError(str(step.statement), step.params, exc)
            except sqlite3.Error as exc:  # busy, no such table, read-only, closed...
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                busy = code in (_SQLITE_BUSY, _SQLITE_LOCKED)
                raise Handoff(step, str(exc), started=started, busy=busy) from exc
            else:
                outcome = cast("CursorResult[Any]", _Rows(rows, cursor.rowcount))
                self._committed()
            started = True
            step = advance(plan, outcome)
        return cast("T", step.value)

    def tries(
        self,
        plan: Plan[T],
        busy: Busy,
        step: Any = None,
        *,
        started: bool = False,
        patience: Patience | None = None,
    ) -> Generator[float, None, T]:
        """:meth:`run` until the file's write lock is free: yields the seconds to wait before
        each next try (the caller sleeps, or awaits), returns the plan's answer. Raises
        :class:`Handoff` for the ordinary path (any other failure; a statement that is not
        prebuilt), :class:`StoreUnavailableError` when ``busy`` runs out, and
        :class:`~coatcheck._patience.GaveUp` once ``patience``'s caller stopped waiting."""
        while True:
            try:
                if patience is None:
                    return self.run(plan, step, started=started)
                return patience.attempt(functools.partial(self.run, plan, step, started=started))
            except Handoff as handoff:
                if not handoff.busy:
                    raise
                step, started = handoff.step, handoff.started
            delay = busy.delay()
            if delay is None:
                raise StoreUnavailableError(
                    f"SQLite {self.database}: database is locked (another process held its "
                    f"write lock for {busy.seconds} s)"
                )
            yield delay

    def _committed(self) -> None:
        self._commits += 1
        if self._commits < self._due:
            return
        running = self._checkpointer
        if running is not None and running.is_alive():  # (a thread from before a fork is not)
            return
        self._commits = 0
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="coatcheck-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        try:
            conn = sqlite3.connect(
                self._uri, uri=True, timeout=CHECKPOINT_WAIT, isolation_level=None
            )
            try:
                # The bulk of the copying while writes go on; then, with this process's writes
                # held back (they queue in worker threads, never on the event loop), the few
                # frames written meanwhile, so that the next write starts the log over. A
                # PASSIVE checkpoint alone never catches up with a steady stream of writes, and
                # the log would grow without end.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                busy = 1
                if self.turns.acquire(CHECKPOINT_WAIT):
                    try:
                        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                    finally:
                        self.turns.release()
            finally:
                conn.close()
        except sqlite3.Error:
            busy = 1  # the next one tries again; SQLite checkpoints when the last connection closes
        if busy:
            # Another process's checkpoint or writer held the file (attack round 11: with two
            # processes writing, the log reached 31 MB waiting 200 commits between tries).
            self._due = CHECKPOINT_RETRY
        else:
            self._due = CHECKPOINT_EVERY
            self.checkpoints += 1

    def close(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.join(timeout=5)
        super().close()


class _Held:
    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()


class _Rows:
    """The part of a CursorResult that the plans run here use, over rows sqlite3 fetched."""

    def __init__(self, rows: list[Any], rowcount: int = -1) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise sa.exc.NoResultFound(f"{len(self._rows)} rows where exactly one was expected")
        return self._rows[0]

    def scalar_one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound("more than one row where at most one was expected")
        return self._rows[0][0] if self._rows else None
