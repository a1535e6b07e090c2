"""SQL session stores through SQLAlchemy Core: SQLite, PostgreSQL, MySQL and MariaDB.

:class:`AsyncSQLStore` runs on an async engine, :class:`SQLStore` (its sync twin) on a sync one.
Both execute the same plans from :mod:`coatcheck.stores._sql_statements`; they only open a
transaction, run each statement the plan yields and translate failures.

- ``put`` is a versioned compare-and-set (``UPDATE ... WHERE id = :id AND version = :expected``),
  so of two requests writing the same session from the same version exactly one wins, on every
  database; an insert never overwrites an existing id.
- ``hit`` is one atomic upsert per call (``ON CONFLICT DO UPDATE`` / ``ON DUPLICATE KEY UPDATE``).
- ``purge_expired`` deletes a bounded batch per call, so it never holds long locks.
- ``stats`` is one aggregate query (the transport matched by the database's regular expressions).
- Any database or network failure raises :class:`~coatcheck.errors.StoreUnavailableError`.

Schema: SQLite databases get their tables on first use by default; on PostgreSQL and MySQL the
schema is created explicitly, with :meth:`AsyncSQLStore.create_schema` or by running
:func:`schema_ddl` in your own migrations (or ``create_schema=True``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._core.record import SessionRecord
from .._core.stats import SessionStats
from ..errors import ConfigurationError
from . import _sql_statements
from ._sql_engine import (
    StoreURL,
    build_engine,
    driver_url,
    store_url,
    unavailable_on_failure,
)
from ._sql_statements import (
    DEFAULT_TABLE_PREFIX,
    Done,
    Outcome,
    Plan,
    SQLPlans,
    SQLTables,
    advance,
    build_tables,
    schema_metadata,
)

__all__ = ["AsyncSQLStore", "SQLStore", "SQLTables", "schema_ddl", "schema_metadata"]

T = TypeVar("T")


def _create_schema_on(conn: Connection, tables: SQLTables) -> None:
    """Create the missing tables and indexes, tolerating another process doing the same.

    Two app instances starting together both see no table, both create it, and one fails
    (PostgreSQL: a duplicate type; elsewhere: table exists). The loser rolls back and looks
    again, and now finds the tables. A real problem (no permission) fails the second time too.
    """
    for attempt in (1, 2):
        try:
            tables.metadata.create_all(conn)
            conn.commit()
            return
        except DBAPIError:
            conn.rollback()
            if attempt == 2:
                raise


def schema_ddl(dialect_name: str, table_prefix: str = DEFAULT_TABLE_PREFIX) -> str:
    """The ``CREATE TABLE`` and ``CREATE INDEX`` statements of the store for one dialect.

    ``dialect_name`` is ``"sqlite"``, ``"postgresql"``, ``"mysql"`` or ``"mariadb"``, or a store
    URL of one of them: then its ``table_prefix`` option names the tables (as in ``from_url``),
    and an option neither the store nor the driver takes is a ConfigurationError. The text is
    what :meth:`AsyncSQLStore.create_schema` runs, as semicolon-terminated statements, for teams
    that apply schema changes through their own migrations.
    """
    if "://" in dialect_name:
        target = store_url(dialect_name, table_prefix=table_prefix)
        driver_url(target.url, target.engine, asynchronous=False)
        table_prefix = target.table_prefix
    return _sql_statements.schema_ddl(dialect_name, table_prefix)


def _wants_schema(create_schema: bool | None, dialect_name: str) -> bool:
    # SQLite is the zero-setup default: its file is created on first use, so are its tables.
    # On a server, DDL is an operator's decision (permissions, migrations), so never implicit.
    return create_schema if create_schema is not None else dialect_name == "sqlite"


class _FromURL:
    """The ``from_url`` of both SQL twins: each builds its own engine from the settled URL."""

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_schema: bool | None = None,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        statement_timeout: float | None = 5.0,
    ) -> Self:
        """A store on a new engine for ``url``, with the twin's driver for its database.

        ``sqlite:///path.db``, ``sqlite://`` (in memory), ``postgresql://...``, ``mysql://...``
        and ``mariadb://...`` use aiosqlite, asyncpg and asyncmy in :class:`AsyncSQLStore`, and
        pysqlite, psycopg (3) and pymysql in :class:`SQLStore`; ``postgresql+psycopg://`` and
        ``mysql+aiomysql://`` are kept by the async twin; a driver the twin cannot use is
        replaced by its default. Timeouts are in seconds; ``statement_timeout=None`` leaves the
        server's own limits.

        Every keyword option may ride in the URL's query string instead
        (``?table_prefix=app_&pool_size=20&statement_timeout=none``); a keyword argument other
        than its default wins over the URL's, and two different table prefixes are an error.
        The URL's other parameters go to the driver, which must take them.
        Raises :class:`~coatcheck.errors.ConfigurationError` for an unsupported URL, a missing
        driver, a bad setting or a parameter neither the store nor the driver takes.
        """
        return cls._from_store_url(
            store_url(
                url,
                table_prefix=table_prefix,
                create_schema=create_schema,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                connect_timeout=connect_timeout,
                statement_timeout=statement_timeout,
            )
        )

    @classmethod
    def _from_store_url(cls, target: StoreURL) -> Self:
        raise NotImplementedError  # each twin builds its own engine


class AsyncSQLStore(_FromURL):
    """A session store on an SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine`.

    Pass your own engine, or build one with :meth:`from_url`. Tables are named
    ``<table_prefix>sessions`` and ``<table_prefix>hits``. With ``create_schema=True`` the tables
    are created (if missing) before the first operation; the default (``None``) does that for
    SQLite only. :meth:`close` disposes the engine only when :meth:`from_url` built it.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_schema: bool | None = None,
    ) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                "AsyncSQLStore needs an AsyncEngine (create_async_engine); use SQLStore for a "
                "sync Engine"
            )
        self.engine = engine
        self.tables = build_tables(table_prefix)
        self._plans = SQLPlans(self.tables, engine.dialect.name)
        self._schema_pending = _wants_schema(create_schema, engine.dialect.name)
        self._schema_lock = asyncio.Lock()
        self._owns_engine = False
        self._threaded: SQLStore | None = None

    @classmethod
    def _from_store_url(cls, target: StoreURL) -> Self:
        engine = build_engine(create_async_engine, target.url, target.engine, asynchronous=True)
        store = cls(engine, table_prefix=target.table_prefix, create_schema=target.create_schema)
        store._owns_engine = True
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            # SQLite runs in-process: aiosqlite hops to its worker thread for every cursor call
            # (about ten hops per read), while the sync twin in a worker thread costs one hop per
            # operation -- measured 4-5x faster per read. Same plans, same transactions.
            store._threaded = SQLStore._from_store_url(target)
        return store

    async def create_schema(self) -> None:
        """Create the tables and indexes that do not exist yet (safe to call again)."""
        if self._threaded is not None:
            await asyncio.to_thread(self._threaded.create_schema)
            self._schema_pending = False
            return
        with unavailable_on_failure(self.engine.url):
            async with self.engine.connect() as conn:
                await conn.run_sync(_create_schema_on, self.tables)
        self._schema_pending = False

    async def _run(self, plan: Plan[T]) -> T:
        if self._threaded is not None:
            return await asyncio.to_thread(self._threaded._run, plan)
        if self._schema_pending:
            async with self._schema_lock:
                if self._schema_pending:
                    await self.create_schema()
        with unavailable_on_failure(self.engine.url):
            async with self.engine.begin() as conn:
                outcome: Outcome = None
                while not isinstance(step := advance(plan, outcome), Done):
                    try:
                        outcome = await conn.execute(step)
                    except IntegrityError as exc:
                        outcome = exc  # the plan decides what a constraint violation means
        return step.value

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self._run(self._plans.get(session_id))

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        return await self._run(self._plans.put(record, expected_version))

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return await self._run(self._plans.replace(record, old_id, old_version))

    async def delete(self, *session_ids: str) -> None:
        await self._run(self._plans.delete(session_ids))

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return await self._run(self._plans.sessions_of(user_id))

    async def user_ids(self, now: float) -> list[str]:
        return await self._run(self._plans.user_ids(now))

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        return await self._run(self._plans.purge_expired(now, batch))

    async def stats(self, now: float) -> SessionStats:
        return await self._run(self._plans.stats(now))

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return await self._run(self._plans.hit(key, now, window))

    async def clear_hits(self, key: str) -> None:
        await self._run(self._plans.clear_hits(key))

    async def close(self) -> None:
        """Close the engine's connections, if this store built the engine."""
        if self._threaded is not None:
            await asyncio.to_thread(self._threaded.close)
        if self._owns_engine:
            await self.engine.dispose()


class SQLStore(_FromURL):
    """The sync twin of :class:`AsyncSQLStore`, on an SQLAlchemy :class:`~sqlalchemy.Engine`.

    Thread-safe: each operation checks a connection out of the engine's pool for its own
    transaction.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_schema: bool | None = None,
    ) -> None:
        if not isinstance(engine, Engine):
            raise ConfigurationError(
                "SQLStore needs a sync Engine (create_engine); use AsyncSQLStore for an AsyncEngine"
            )
        self.engine = engine
        self.tables = build_tables(table_prefix)
        self._plans = SQLPlans(self.tables, engine.dialect.name)
        self._schema_pending = _wants_schema(create_schema, engine.dialect.name)
        self._schema_lock = threading.Lock()
        self._owns_engine = False

    @classmethod
    def _from_store_url(cls, target: StoreURL) -> Self:
        engine = build_engine(create_engine, target.url, target.engine, asynchronous=False)
        store = cls(engine, table_prefix=target.table_prefix, create_schema=target.create_schema)
        store._owns_engine = True
        return store

    def create_schema(self) -> None:
        """Create the tables and indexes that do not exist yet (safe to call again)."""
        with unavailable_on_failure(self.engine.url), self.engine.connect() as conn:
            _create_schema_on(conn, self.tables)
        self._schema_pending = False

    def _run(self, plan: Plan[T]) -> T:
        if self._schema_pending:
            with self._schema_lock:
                if self._schema_pending:
                    self.create_schema()
        with unavailable_on_failure(self.engine.url), self.engine.begin() as conn:
            outcome: Outcome = None
            while not isinstance(step := advance(plan, outcome), Done):
                try:
                    outcome = conn.execute(step)
                except IntegrityError as exc:
                    outcome = exc  # the plan decides what a constraint violation means
        return step.value

    def get(self, session_id: str) -> SessionRecord | None:
        return self._run(self._plans.get(session_id))

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        return self._run(self._plans.put(record, expected_version))

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return self._run(self._plans.replace(record, old_id, old_version))

    def delete(self, *session_ids: str) -> None:
        self._run(self._plans.delete(session_ids))

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return self._run(self._plans.sessions_of(user_id))

    def user_ids(self, now: float) -> list[str]:
        return self._run(self._plans.user_ids(now))

    def purge_expired(self, now: float, batch: int = 500) -> int:
        return self._run(self._plans.purge_expired(now, batch))

    def stats(self, now: float) -> SessionStats:
        return self._run(self._plans.stats(now))

    def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return self._run(self._plans.hit(key, now, window))

    def clear_hits(self, key: str) -> None:
        self._run(self._plans.clear_hits(key))

    def close(self) -> None:
        """Close the engine's connections, if this store built the engine."""
        if self._owns_engine:
            self.engine.dispose()
