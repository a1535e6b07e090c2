"""SQL session stores through SQLAlchemy Core: SQLite, PostgreSQL, MySQL and MariaDB.

:class:`AsyncSQLStore` runs on an async engine, :class:`SQLStore` (its sync twin) on a sync one.
Both execute the same plans from :mod:`coatcheck.stores._sql_statements`; they only check a
connection out, run each statement the plan yields and translate failures.

- Every operation is one statement in autocommit mode (MySQL's ``hit`` excepted): a read is one
  round trip, with no ``BEGIN``/``COMMIT`` around it.
- ``put`` is a versioned compare-and-set (``UPDATE ... WHERE id = :id AND version = :expected``),
  so of two requests writing the same session from the same version exactly one wins, on every
  database; an insert never overwrites an existing id. ``replace`` (login) is one ``UPDATE``
  that moves the old row to the new id on the same condition.
- A connection that fails or is cancelled (the store timeout) mid-operation is closed at once,
  never rolled back or reused: a hung server costs a request the store timeout, no more.
- SQLite: reads take no lock (WAL), and the writes of one process queue on a lock of their own
  instead of SQLite's busy handler, which sleeps in steps of up to 100 ms. Session reads and
  writes run on :mod:`sqlite3` directly, in the calling thread (the event loop for the async
  store), and go the ordinary way only when they would have to wait.
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
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar, cast

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._core.record import SessionRecord
from .._core.stats import SessionStats
from .._patience import CALLER, Patience
from ..errors import ConfigurationError, StoreUnavailableError
from . import _sql_statements
from ._sql_engine import (
    SQLITE_MMAP_SIZE,
    Busy,
    Handoff,
    SQLiteReader,
    SQLiteWriter,
    StoreURL,
    WouldWait,
    WriteTurns,
    build_engine,
    driver_url,
    install_connection_checks,
    store_url,
    unavailable_on_failure,
)
from ._sql_statements import (
    DEFAULT_TABLE_PREFIX,
    Bound,
    Done,
    Outcome,
    Plan,
    SQLPlans,
    SQLTables,
    advance,
    build_tables,
    execute_args,
    schema_metadata,
)

_TURN_POLL = 0.05
"""Seconds between two looks at whether the caller of a write waiting for its turn gave up."""

__all__ = [
    "AsyncSQLStore",
    "SQLStore",
    "SQLTables",
    "create_all_racing",
    "install_connection_checks",
    "schema_ddl",
    "schema_metadata",
]

T = TypeVar("T")
E = TypeVar("E", Engine, AsyncEngine)


def _create_schema_on(conn: Connection, tables: SQLTables) -> None:
    create_all_racing(conn, tables.metadata)


def create_all_racing(conn: Connection, metadata: MetaData) -> None:
    """Create the missing tables and indexes, tolerating other processes doing the same.

    App instances starting together all see no table and all create it: each object goes to
    whoever creates it first, and the others fail on it (PostgreSQL: a duplicate type;
    elsewhere: it exists). A loser looks again and creates only what is still missing, so each
    attempt gets further. A real problem (no permission) fails every attempt.
    """
    for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
        try:
            metadata.create_all(conn)
            conn.commit()
            return
        except DBAPIError:
            conn.rollback()
            if attempt == _SCHEMA_ATTEMPTS:
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


# Two tables and three indexes: more attempts than objects, so racing creators always finish.
_SCHEMA_ATTEMPTS = 8


def _autocommit(engine: E) -> E:
    """``engine`` with every statement in autocommit mode (the stores' own engines are built
    that way, so from_url swaps this for the engine itself and pays nothing per checkout)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


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
        mmap_size: int = SQLITE_MMAP_SIZE,
    ) -> Self:
        """A store on a new engine for ``url``, with the twin's driver for its database.

        ``sqlite:///path.db``, ``sqlite://`` (in memory), ``postgresql://...``, ``mysql://...``
        and ``mariadb://...`` use aiosqlite, asyncpg and asyncmy in :class:`AsyncSQLStore`, and
        pysqlite, psycopg (3) and pymysql in :class:`SQLStore`; ``postgresql+psycopg://`` and
        ``mysql+aiomysql://`` are kept by the async twin; a driver the twin cannot use is
        replaced by its default. Timeouts are in seconds; ``statement_timeout=None`` leaves the
        server's own limits. ``mmap_size`` (SQLite only): bytes of the file each connection reads
        through memory-mapped I/O, ``0`` for none (see the SQLite store's docs).

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
                mmap_size=mmap_size,
            )
        )

    @classmethod
    def _from_store_url(cls, target: StoreURL) -> Self:
        raise NotImplementedError  # each twin builds its own engine


class AsyncSQLStore(_FromURL):
    """A session store on an SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine`.

    Pass your own engine, or build one with :meth:`from_url`. The store runs its statements on
    your engine in autocommit mode, and makes its pool close a connection that failed or timed
    out at once instead of waiting for a hung server to say goodbye. Tables are named
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
        self._autocommit = _autocommit(engine)
        self.tables = build_tables(table_prefix)
        self._plans = SQLPlans(self.tables, engine.dialect.name)
        install_connection_checks(engine.sync_engine, pre_ping=True)
        self._schema_pending = _wants_schema(create_schema, engine.dialect.name)
        self._schema_lock = asyncio.Lock()
        self._owns_engine = False
        self._threaded: SQLStore | None = None

    @classmethod
    def _from_store_url(cls, target: StoreURL) -> Self:
        engine = build_engine(create_async_engine, target.url, target.engine, asynchronous=True)
        store = cls(engine, table_prefix=target.table_prefix, create_schema=target.create_schema)
        store._owns_engine = True
        store._autocommit = engine  # built in autocommit mode
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

    async def _run(self, plan: Plan[T], *, write: bool = True) -> T:
        if self._threaded is not None:
            return await self._in_thread(plan, write=write)
        if self._schema_pending:
            async with self._schema_lock:
                if self._schema_pending:
                    await self.create_schema()
        with unavailable_on_failure(self.engine.url):
            async with self._autocommit.connect() as conn:
                outcome: Outcome = None
                try:
                    while not isinstance(step := advance(plan, outcome), Done):
                        try:
                            outcome = await conn.execute(*execute_args(step))
                        except IntegrityError as exc:
                            outcome = exc  # the plan decides what a constraint violation means
                except BaseException:
                    # Failed or cancelled mid-plan: a statement may still be running and a
                    # transaction may be open. Close the connection (the server rolls back)
                    # rather than send a ROLLBACK that would wait on a hung server.
                    await conn.invalidate()
                    raise
        return step.value

    def recall(self, session_id: str) -> SessionRecord | None:
        """A SQLite read on the event loop itself (see :meth:`SQLStore.recall`)."""
        if self._threaded is None:
            return None
        return self._threaded.recall(session_id)

    async def get(self, session_id: str) -> SessionRecord | None:
        if self._threaded is not None:
            try:
                # On the event loop itself: a SQLite read never waits (see SQLiteReader).
                return self._threaded._read_at_once(self._plans.get(session_id))
            except WouldWait:
                pass
        return await self._run(self._plans.get(session_id), write=False)

    async def _write(self, plan: Plan[T]) -> T:
        """Run a write plan; on a SQLite file, on the event loop itself through the sync twin's
        no-wait writer, in its turn (awaited: the loop runs on while another writer of this
        process has it). While another process holds the file's write lock, the write is tried
        again after short sleeps on the loop, so a cancelled write (the store timeout) is never
        written later. What the writer cannot do goes on in a worker thread (see
        SQLiteWriter)."""
        threaded = self._threaded
        if threaded is None:
            return await self._run(plan)
        writer, turns = threaded._writer, threaded._turns
        if writer is None or turns is None or threaded._schema_pending:
            return await self._in_thread(plan)
        busy = Busy(threaded._write_wait)
        if not turns.try_acquire():
            try:
                async with asyncio.timeout(busy.left()):
                    await turns.turn()
            except TimeoutError:
                raise threaded._no_turn() from None
        tries = writer.tries(plan, busy)
        try:
            delay = next(tries)
            while True:
                await asyncio.sleep(delay)
                delay = tries.send(None)
        except StopIteration as done:
            return cast("T", done.value)
        except Handoff as handoff:
            step, started = handoff.step, handoff.started
        finally:
            turns.release()
        return await self._in_thread(plan, step=step, started=started)

    async def _in_thread(self, plan: Plan[T], **how: Any) -> T:
        """The sync twin's ``_run(plan, **how)`` in a worker thread, which starts no statement
        once this call is cancelled (see :mod:`coatcheck._patience`)."""
        assert self._threaded is not None
        patience = Patience()
        try:
            run = functools.partial(self._threaded._run, plan, patience=patience, **how)
            return await asyncio.to_thread(run)
        except asyncio.CancelledError:
            patience.give_up()
            raise

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        return await self._write(self._plans.put(record, expected_version))

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return await self._write(self._plans.replace(record, old_id, old_version))

    async def delete(self, *session_ids: str) -> None:
        await self._write(self._plans.delete(session_ids))

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return await self._run(self._plans.sessions_of(user_id), write=False)

    async def user_ids(self, now: float) -> list[str]:
        return await self._run(self._plans.user_ids(now), write=False)

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        return await self._run(self._plans.purge_expired(now, batch))

    async def stats(self, now: float) -> SessionStats:
        return await self._run(self._plans.stats(now))

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return await self._write(self._plans.hit(key, now, window))

    async def clear_hits(self, key: str) -> None:
        await self._write(self._plans.clear_hits(key))

    async def close(self) -> None:
        """Close the engine's connections, if this store built the engine."""
        if self._threaded is not None:
            await asyncio.to_thread(self._threaded.close)
        if self._owns_engine:
            await self.engine.dispose()


class SQLStore(_FromURL):
    """The sync twin of :class:`AsyncSQLStore`, on an SQLAlchemy :class:`~sqlalchemy.Engine`.

    Thread-safe: each operation checks a connection out of the engine's pool for its one
    statement (on SQLite, a session read uses the calling thread's own reader connection).
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
        self._autocommit = _autocommit(engine)
        self.tables = build_tables(table_prefix)
        self._plans = SQLPlans(self.tables, engine.dialect.name)
        install_connection_checks(engine, pre_ping=True)
        self._schema_pending = _wants_schema(create_schema, engine.dialect.name)
        self._schema_lock = threading.Lock()
        self._owns_engine = False
        # SQLite takes one writer at a time per file: this process's writers take turns here
        # (see WriteTurns). Readers never wait.
        self._turns = WriteTurns() if engine.dialect.name == "sqlite" else None
        self._write_plans: dict[str, Callable[..., Plan[Any]]] = {
            "put": self._plans.put,
            "replace": self._plans.replace,
            "delete": lambda *ids: self._plans.delete(ids),
        }
        self._write_wait = 5.0  # seconds; from_url makes it the statement timeout
        self._reader: SQLiteReader | None = None
        self._writer: SQLiteWriter | None = None
        database = engine.url.database
        # A file named plainly (URL options such as uri=true or mode=...: the ordinary path only).
        sqlite_file = engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        if sqlite_file and not engine.url.query and self._turns is not None:
            self._reader = SQLiteReader(str(database))
            self._writer = SQLiteWriter(str(database), self._turns)

    @classmethod
    def _from_store_url(cls, target: StoreURL) -> Self:
        engine = build_engine(create_engine, target.url, target.engine, asynchronous=False)
        store = cls(engine, table_prefix=target.table_prefix, create_schema=target.create_schema)
        store._owns_engine = True
        store._autocommit = engine  # built in autocommit mode
        store._write_wait = target.engine.statement_timeout or store._write_wait
        for direct in (store._reader, store._writer):
            if direct is not None:
                direct.mmap_size = target.engine.mmap_size
        return store

    def create_schema(self) -> None:
        """Create the tables and indexes that do not exist yet (safe to call again)."""
        with unavailable_on_failure(self.engine.url), self.engine.connect() as conn:
            _create_schema_on(conn, self.tables)
        self._schema_pending = False

    def _run(
        self,
        plan: Plan[T],
        *,
        write: bool = True,
        step: Any = None,
        started: bool = False,
        patience: Patience | None = None,
    ) -> T:
        """Run ``plan`` (from ``step``, its next statement, when it was started elsewhere;
        ``started``: and some statements have run). ``patience``: its caller's, if the caller
        may stop waiting (else the one the sync manager set for this thread, if any)."""
        if patience is None:
            patience = CALLER.get()
        if self._schema_pending:
            with self._schema_lock:
                if self._schema_pending:
                    self.create_schema()
        if write and self._turns is not None:
            return self._write_in_turn(plan, step, started, patience)
        return self._run_now(plan, step, patience)

    def _write_in_turn(
        self, plan: Plan[T], step: Any, started: bool, patience: Patience | None
    ) -> T:
        """A write in this process's write turn: on the no-wait writer, tried again after short
        sleeps while another process holds the file's write lock (never once ``patience``'s
        caller has stopped waiting); what the writer cannot do, the ordinary way."""
        turns = self._turns
        assert turns is not None
        busy = Busy(self._write_wait)
        if patience is None:
            if not turns.acquire(busy.left()):
                raise self._no_turn()
        else:
            while not turns.acquire(max(0.0, min(busy.left(), _TURN_POLL))):
                patience.check()
                if busy.left() <= 0:
                    raise self._no_turn()
        try:
            if self._writer is not None and (step is None or isinstance(step, Bound)):
                tries = self._writer.tries(plan, busy, step, started=started, patience=patience)
                try:
                    while True:
                        time.sleep(next(tries))
                        if patience is not None:
                            patience.check()
                except StopIteration as done:
                    return cast("T", done.value)
                except Handoff as handoff:
                    step = handoff.step
            return self._run_now(plan, step, patience)
        finally:
            turns.release()

    def _no_turn(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"SQL session store {self.engine.url}: no write turn in {self._write_wait} s"
        )

    def _run_now(self, plan: Plan[T], step: Any = None, patience: Patience | None = None) -> T:
        with unavailable_on_failure(self.engine.url), self._autocommit.connect() as conn:
            if patience is not None:
                patience.check()  # it may have given up while this waited for a connection
            try:
                if step is None:
                    step = advance(plan, None)
                while not isinstance(step, Done):
                    outcome: Outcome
                    try:
                        outcome = conn.execute(*execute_args(step))
                    except IntegrityError as exc:
                        outcome = exc  # the plan decides what a constraint violation means
                    step = advance(plan, outcome)
            except BaseException:
                conn.invalidate()  # unknown state: close it, never roll back and reuse it
                raise
        return cast("T", step.value)

    def write_now(self, method: str, args: tuple[Any, ...]) -> tuple[Any] | None:
        """A session write (``put``, ``replace``, ``delete``) in the caller's own thread, if it
        can be done without waiting: ``(its answer,)``. ``None`` when its write turn is taken or
        SQLite's write lock is (nothing was written): call the method, which waits. On other
        databases, always ``None``. The sync manager asks this before it sends a write to its
        worker threads, as it asks :meth:`recall` before a read."""
        build = self._write_plans.get(method)
        if build is None or self._writer is None or self._turns is None or self._schema_pending:
            return None
        if not self._turns.try_acquire():
            return None
        plan = build(*args)
        try:
            return (self._writer.run(plan),)
        except Handoff as handoff:
            if not handoff.started:
                return None
            step = handoff.step
        finally:
            self._turns.release()
        # Part of the plan has run (not one of the single-statement session writes): the rest
        # here, waiting as the ordinary path does.
        return (self._run(plan, step=step, started=True),)

    def _read_at_once(self, plan: Plan[T]) -> T:
        """Run a read plan on SQLite's no-wait reader, or raise WouldWait (see SQLiteReader)."""
        if self._reader is None or self._schema_pending:
            raise WouldWait("no reader")
        return self._reader.run(plan)

    def recall(self, session_id: str) -> SessionRecord | None:
        """A SQLite read in the caller's own thread: it never waits (see SQLiteReader), so the
        managers need no worker thread or timer for it. ``None`` when the read would wait or
        found nothing (the manager then calls :meth:`get`), and always on other databases."""
        if self._reader is None:
            return None
        try:
            return self._read_at_once(self._plans.get(session_id))
        except WouldWait:
            return None

    def get(self, session_id: str) -> SessionRecord | None:
        try:
            return self._read_at_once(self._plans.get(session_id))
        except WouldWait:
            return self._run(self._plans.get(session_id), write=False)

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        return self._run(self._plans.put(record, expected_version))

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return self._run(self._plans.replace(record, old_id, old_version))

    def delete(self, *session_ids: str) -> None:
        self._run(self._plans.delete(session_ids))

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return self._run(self._plans.sessions_of(user_id), write=False)

    def user_ids(self, now: float) -> list[str]:
        return self._run(self._plans.user_ids(now), write=False)

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
        for direct in (self._reader, self._writer):
            if direct is not None:
                direct.close()
        if self._owns_engine:
            self.engine.dispose()
