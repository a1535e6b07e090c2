"""What the SQL stores promise beyond the store contract: schema, drivers, timeouts, failures.

Every test runs against real databases (a SQLite file, the PostgreSQL and MariaDB servers), on
both twins where the behaviour belongs to both.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from coatcheck._core.http import RequestView
from coatcheck._core.record import SessionRecord
from coatcheck._core.tokens import new_id
from coatcheck.errors import ConfigurationError, StoreUnavailableError
from coatcheck.manager import SessionManager
from coatcheck.stores import _sql_engine
from coatcheck.stores._sql_engine import peer_closed
from coatcheck.stores._sql_statements import row_values
from coatcheck.stores.base import AsyncStore
from coatcheck.stores.sql import AsyncSQLStore, SQLStore, schema_ddl
from coatcheck.testing import FakeClock, test_config
from tests.backends.adapt import AsyncOverSync
from tests.backends.sql import (
    PLACES,
    Kind,
    Place,
    async_sql_store,
    sync_sql_store,
)
from tests.services import MYSQL_HOST, MYSQL_PORT, PG_HOST, PG_PORT, free_port

from .test_contract import NOW, make

T = TypeVar("T")
Twin = Literal["async", "sync"]

_MARKS = {"sqlite": (), "postgres": (pytest.mark.postgres,), "mysql": (pytest.mark.mysql,)}
KINDS: list[Kind] = ["sqlite", "postgres", "mysql"]


def kinds(*chosen: Kind) -> list[Any]:
    """``chosen`` (default: all) as pytest params, marked with the server they need."""
    return [pytest.param(kind, marks=_MARKS[kind], id=kind) for kind in chosen or KINDS]


@dataclass
class Subject:
    """A SQL store under test: its contract face, the store itself, and raw SQL access."""

    kind: Kind
    store: AsyncStore
    raw: AsyncSQLStore | SQLStore

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a connection of the store's own engine, in a transaction."""
        if isinstance(self.raw, AsyncSQLStore):
            async with self.raw.engine.begin() as conn:
                return await conn.run_sync(work)
        engine = self.raw.engine

        def in_thread() -> T:
            with engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(in_thread)

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """The rows of one raw SQL statement (empty for statements that return none)."""

        def work(conn: Connection) -> list[tuple[Any, ...]]:
            result = conn.exec_driver_sql(statement)
            return [tuple(row) for row in result.all()] if result.returns_rows else []

        return await self.run(work)


@pytest.fixture(
    params=[
        pytest.param((kind, twin), marks=_MARKS[kind], id=f"{kind}-{twin}")
        for kind in KINDS
        for twin in ("async", "sync")
    ]
)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    """A fresh SQL store of every kind and twin."""
    kind, twin = request.param
    if twin == "async":
        async with async_sql_store(kind) as store:
            yield Subject(kind, store, store)
    else:
        async with sync_sql_store(kind) as sync_store:
            yield Subject(kind, AsyncOverSync(sync_store), sync_store)


def store_for(
    place: Place, twin: Twin, **options: Any
) -> tuple[AsyncStore, AsyncSQLStore | SQLStore]:
    """A store built by from_url on ``place``: (its contract face, the store itself)."""
    if twin == "async":
        store = AsyncSQLStore.from_url(place.url, table_prefix=place.table_prefix, **options)
        return store, store
    sync_store = SQLStore.from_url(place.url, table_prefix=place.table_prefix, **options)
    return AsyncOverSync(sync_store), sync_store


TWINS = [pytest.param("async", id="async"), pytest.param("sync", id="sync")]


# --- SQLite -----------------------------------------------------------------------------------


@pytest.mark.parametrize("twin", TWINS)
async def test_sqlite_connections_use_wal_and_a_busy_timeout(twin: Twin) -> None:
    """Every SQLite connection runs in WAL mode, waits statement_timeout for a busy writer and
    syncs at NORMAL."""
    async with PLACES["sqlite"]() as place:
        store, raw = store_for(place, twin, statement_timeout=3)
        try:
            await store.get(new_id())
            subject = Subject("sqlite", store, raw)
            assert await subject.sql("PRAGMA journal_mode") == [("wal",)]
            assert await subject.sql("PRAGMA busy_timeout") == [(3000,)]
            assert await subject.sql("PRAGMA synchronous") == [(1,)]  # 1 = NORMAL
        finally:
            await store.close()


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(
    ("query", "kwargs", "expected"),
    [
        ("", {}, _sql_engine.SQLITE_MMAP_SIZE),
        ("?mmap_size=0", {}, 0),
        ("?mmap_size=1048576", {}, 1048576),
        ("", {"mmap_size": 0}, 0),
    ],
    ids=["default", "off-in-url", "sized-in-url", "off-in-code"],
)
async def test_sqlite_reads_are_memory_mapped_unless_turned_off(
    twin: Twin, tmp_path: Path, query: str, kwargs: dict[str, Any], expected: int
) -> None:
    """Every connection a SQLite store opens, its pool's and its no-wait reader's, maps the file
    for reads (``PRAGMA mmap_size``, 2 GiB by default) unless the URL or code says otherwise;
    the store reads and writes the same either way."""
    url = f"sqlite:///{tmp_path / 'm.db'}{query}"
    if twin == "async":
        astore = AsyncSQLStore.from_url(url, **kwargs)
        store: AsyncStore = astore
        assert astore._threaded is not None
        sync = astore._threaded
    else:
        sync = SQLStore.from_url(url, **kwargs)
        store = AsyncOverSync(sync)
    try:
        record = make()
        assert await store.put(record, 0) is True
        assert await store.get(record.id) == record
        assert sync._reader is not None
        assert sync._reader._connection().execute("PRAGMA mmap_size").fetchall() == [(expected,)]
        with sync.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA mmap_size").fetchall() == [(expected,)]
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["postgresql://u@h/db?mmap_size=0", "mysql://u@h/db?mmap_size=1"])
def test_mmap_size_is_refused_for_a_server_database(url: str) -> None:
    """``mmap_size`` means nothing to PostgreSQL or MySQL: a start-up error, not a silent no-op."""
    with pytest.raises(ConfigurationError, match=r"unknown .* store option 'mmap_size'"):
        SQLStore.from_url(url)
    with pytest.raises(ConfigurationError, match="mmap_size is a SQLite store option"):
        SQLStore.from_url(url.split("?")[0], mmap_size=0)


@pytest.mark.parametrize("twin", TWINS)
async def test_sqlite_creates_its_schema_on_first_use(twin: Twin) -> None:
    """A new SQLite file needs no setup: the first operation creates the tables."""
    async with PLACES["sqlite"]() as place:
        store, _ = store_for(place, twin)
        try:
            record = make()
            assert await store.put(record, 0) is True
            assert await store.get(record.id) == record
        finally:
            await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_in_memory_sqlite_serves_concurrent_operations(twin: Twin) -> None:
    """``sqlite://`` keeps one database for the whole store and serves concurrent callers."""
    store, _ = store_for(Place(URL.create("sqlite")), twin)
    try:
        records = [make(user_id="u") for _ in range(20)]
        assert all(await asyncio.gather(*(store.put(r, 0) for r in records)))
        key = "login:" + new_id()
        hits = await asyncio.gather(*(store.hit(key, NOW, 60) for _ in range(10)))
        assert list(range(1, 11)) == sorted(count for count, _ in hits)
        assert sorted(r.id for r in records) == sorted(r.id for r in await store.sessions_of("u"))
    finally:
        await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_sqlite_file_that_cannot_be_opened_is_unavailable(twin: Twin, tmp_path: Path) -> None:
    """A SQLite path that cannot be opened raises StoreUnavailableError, not a driver error."""
    url = URL.create("sqlite", database=str(tmp_path / "missing-folder" / "sessions.db"))
    store, _ = store_for(Place(url), twin)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.get(new_id())
        assert caught.value.__cause__ is not None
    finally:
        await store.close()
        await _aiosqlite_workers_finished()


async def _aiosqlite_workers_finished() -> None:
    # After a failed connect aiosqlite stops its worker thread in the background, and the thread
    # crashes if the event loop has closed first (omnilib/aiosqlite#241): let it finish now.
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 5)


# --- schema -----------------------------------------------------------------------------------


async def test_session_and_hit_tables_are_indexed_for_their_queries(subject: Subject) -> None:
    """user_id and expires_at (and the hit windows' end) have indexes, so the user index and
    purging never scan the table."""
    await subject.store.get(new_id())  # SQLite creates its schema on first use
    tables = subject.raw.tables

    def indexed_columns(conn: Connection) -> dict[str, set[tuple[str, ...]]]:
        inspector = sa.inspect(conn)
        found: dict[str, set[tuple[str, ...]]] = {}
        for table in (tables.sessions, tables.hits):
            indexes = inspector.get_indexes(table.name)
            found[table.name] = {tuple(str(c) for c in ix["column_names"]) for ix in indexes}
        return found

    indexes = await subject.run(indexed_columns)
    assert {("user_id",), ("expires_at",)} <= indexes[tables.sessions.name]
    assert {("window_ends_at",)} <= indexes[tables.hits.name]


async def test_create_schema_is_idempotent(subject: Subject) -> None:
    """create_schema can run again on an existing schema without error or data loss."""
    record = make()
    await subject.store.put(record, 0)
    if isinstance(subject.raw, AsyncSQLStore):
        await subject.raw.create_schema()
    else:
        await asyncio.to_thread(subject.raw.create_schema)
    assert await subject.store.get(record.id) == record


@pytest.mark.parametrize(
    ("kind", "dialect_name"),
    [
        pytest.param("sqlite", "sqlite", id="sqlite"),
        pytest.param("postgres", "postgresql", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("mysql", "mysql", marks=pytest.mark.mysql, id="mysql"),
        pytest.param("mysql", "mariadb", marks=pytest.mark.mysql, id="mariadb"),
    ],
)
async def test_schema_ddl_builds_a_working_schema(kind: Kind, dialect_name: str) -> None:
    """The DDL from schema_ddl runs as is on its database and gives a store everything it
    needs."""
    async with PLACES[kind]() as place:
        store = AsyncSQLStore.from_url(
            place.url, table_prefix=place.table_prefix, create_schema=False
        )
        try:
            ddl = schema_ddl(dialect_name, table_prefix=place.table_prefix)
            async with store.engine.begin() as conn:
                for statement in ddl.split(";\n"):
                    if statement.strip():
                        await conn.exec_driver_sql(statement)
            record = make(user_id="u")
            assert await store.put(record, 0) is True
            assert await store.sessions_of("u") == [record]
            assert await store.hit("k", NOW, 60) == (1, NOW + 60)
            assert await store.purge_expired(NOW + 601) == 1
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("url", "dialect_name"),
    [
        ("sqlite:////var/lib/app/sessions.db", "sqlite"),
        ("postgres://u:p@db.example/app", "postgresql"),
        ("postgresql+asyncpg://u:p@db.example/app", "postgresql"),
        ("mariadb://u@db.example/app", "mariadb"),
        ("mysql+pymysql://u@db.example/app", "mysql"),
    ],
)
def test_schema_ddl_accepts_a_database_url(url: str, dialect_name: str) -> None:
    """schema_ddl given a store URL answers with the DDL of that URL's dialect."""
    assert schema_ddl(url) == schema_ddl(dialect_name)


def test_schema_ddl_names_tables_and_indexes_after_the_prefix() -> None:
    """schema_ddl uses the table prefix for every table and index it creates."""
    ddl = schema_ddl("postgresql", table_prefix="app_")
    assert "CREATE TABLE app_sessions" in ddl
    assert "CREATE TABLE app_hits" in ddl
    assert "CREATE INDEX ix_app_sessions_user_id ON app_sessions (user_id);" in ddl
    assert "CREATE INDEX ix_app_sessions_expires_at ON app_sessions (expires_at);" in ddl
    assert "coatcheck_" not in ddl


DOCS = Path(__file__).resolve().parents[2] / "docs" / "stores"


@pytest.mark.parametrize(
    ("page", "dialect_name"),
    [("sqlite.md", "sqlite"), ("postgresql.md", "postgresql"), ("mysql.md", "mysql")],
)
def test_the_docs_show_the_schema_the_code_creates(page: str, dialect_name: str) -> None:
    """Each store page quotes schema_ddl's output verbatim, so the docs cannot drift."""
    text = (DOCS / page).read_text(encoding="utf-8")
    assert f"```sql\n{schema_ddl(dialect_name)}```" in text


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
@pytest.mark.parametrize("twin", TWINS)
async def test_server_schema_is_created_only_when_asked(kind: Kind, twin: Twin) -> None:
    """On a server, a store makes no tables by default (a missing table is an outage whose
    message holds no session data); create_schema=True makes them on first use."""
    async with PLACES[kind]() as place:
        store, _ = store_for(place, twin)
        record = make()
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                await store.put(record, 0)
            assert record.secret_hash not in str(caught.value)
            assert record.secret_hash not in str(caught.value.__cause__)
        finally:
            await store.close()
        store, _ = store_for(place, twin, create_schema=True)
        try:
            assert await store.put(record, 0) is True
            assert await store.get(record.id) == record
        finally:
            await store.close()


# --- drivers and URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "async_driver", "sync_driver"),
    [
        ("sqlite:///{tmp}/s.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("sqlite://", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///{tmp}/s.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("sqlite+pysqlite:///{tmp}/s.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("postgresql://u@db.example/app", "postgresql+asyncpg", "postgresql+psycopg"),
        ("postgres://u@db.example/app", "postgresql+asyncpg", "postgresql+psycopg"),
        ("postgresql+asyncpg://u@db.example/app", "postgresql+asyncpg", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example/app", "postgresql+psycopg", "postgresql+psycopg"),
        ("mysql://u@db.example/app", "mysql+asyncmy", "mysql+pymysql"),
        ("mariadb://u@db.example/app", "mariadb+asyncmy", "mariadb+pymysql"),
        ("mysql+asyncmy://u@db.example/app", "mysql+asyncmy", "mysql+pymysql"),
        ("mysql+pymysql://u@db.example/app", "mysql+asyncmy", "mysql+pymysql"),
        ("mysql+aiomysql://u@db.example/app", None, "mysql+pymysql"),
    ],
)
async def test_from_url_picks_each_twins_driver(
    url: str, async_driver: str | None, sync_driver: str, tmp_path: Path
) -> None:
    """A bare scheme or a driver of the other kind maps to the twin's default driver; a driver
    the twin can use is kept. (Building the engine does not connect.)"""
    url = url.format(tmp=tmp_path)
    if async_driver is not None:
        async_store = AsyncSQLStore.from_url(url)
        assert async_driver == async_store.engine.url.drivername
        await async_store.close()
    sync_store = SQLStore.from_url(url)
    assert sync_driver == sync_store.engine.url.drivername
    sync_store.close()


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@db.example/app?sslmode=require", "postgresql://u@db.example/app?ssl=require"],
)
async def test_one_postgres_url_carries_its_tls_mode_to_both_twins(url: str) -> None:
    """The TLS mode reaches asyncpg as ``ssl`` and psycopg as ``sslmode``, however the URL
    spells it."""
    async_store = AsyncSQLStore.from_url(url)
    sync_store = SQLStore.from_url(url)
    try:
        assert dict(async_store.engine.url.query) == {"ssl": "require"}
        assert dict(sync_store.engine.url.query) == {"sslmode": "require"}
    finally:
        await async_store.close()
        sync_store.close()


async def test_a_store_on_your_own_engine_leaves_it_open(tmp_path: Path) -> None:
    """close() disposes only engines the store built; yours stays usable."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'own.db'}")
    try:
        store = AsyncSQLStore(engine)
        record = make()
        assert await store.put(record, 0) is True
        await store.close()
        assert await AsyncSQLStore(engine).get(record.id) == record
    finally:
        await engine.dispose()


def test_each_twin_refuses_the_other_kind_of_engine(tmp_path: Path) -> None:
    """Handing the async store a sync engine (or the reverse) fails at start-up, not per request."""
    sync_engine = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    with pytest.raises(ConfigurationError):
        AsyncSQLStore(sync_engine)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        SQLStore(async_engine)  # type: ignore[arg-type]


def test_a_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver named in the URL but not installed is a ConfigurationError with the fix."""
    monkeypatch.setitem(sys.modules, "aiomysql", None)  # importing it now raises ImportError
    with pytest.raises(ConfigurationError, match=r"install aiomysql.*coatcheck\[mysql\]"):
        AsyncSQLStore.from_url("mysql+aiomysql://u@db.example/app")


@pytest.mark.parametrize(
    "url", ["mssql+pyodbc://u@db.example/app", "redis://localhost", "not a url"]
)
def test_unsupported_urls_are_configuration_errors(url: str) -> None:
    """A URL for another kind of database, or no URL at all, fails at start-up."""
    with pytest.raises(ConfigurationError):
        SQLStore.from_url(url)
    with pytest.raises(ConfigurationError):
        AsyncSQLStore.from_url(url)


@pytest.mark.parametrize(
    "options",
    [
        {"table_prefix": "x; DROP TABLE users; --"},
        {"table_prefix": "1abc"},
        {"table_prefix": "p" * 41},
        {"pool_size": 0},
        {"max_overflow": -1},
        {"connect_timeout": 0},
        {"statement_timeout": -1},
        {"mmap_size": -1},
    ],
)
def test_bad_settings_fail_at_start_up(options: dict[str, Any]) -> None:
    """A table prefix that is not a plain identifier, or an impossible pool or timeout setting,
    is a ConfigurationError from from_url."""
    with pytest.raises(ConfigurationError):
        SQLStore.from_url("sqlite://", **options)


@pytest.mark.parametrize("kind", kinds())
async def test_session_timeouts_are_set_on_each_connection(kind: Kind) -> None:
    """statement_timeout reaches the database: PostgreSQL's statement_timeout, MariaDB's
    max_statement_time and lock wait, SQLite's busy_timeout."""
    async with PLACES[kind]() as place:
        store = AsyncSQLStore.from_url(
            place.url, table_prefix=place.table_prefix, statement_timeout=2.5
        )
        try:
            subject = Subject(kind, store, store)
            if kind == "postgres":
                assert await subject.sql("SHOW statement_timeout") == [("2500ms",)]
            elif kind == "mysql":
                assert await subject.sql(
                    "SELECT @@session.max_statement_time, @@session.innodb_lock_wait_timeout"
                ) == [(2.5, 3)]
            else:
                assert await subject.sql("PRAGMA busy_timeout") == [(2500,)]
        finally:
            await store.close()


# --- failures ---------------------------------------------------------------------------------

SERVER_URLS = {
    "postgres": lambda port: URL.create(
        "postgresql", username="postgres", host="127.0.0.1", port=port, database="x"
    ),
    "mysql": lambda port: URL.create(
        "mysql", username="root", host="127.0.0.1", port=port, database="x"
    ),
}


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
@pytest.mark.parametrize("twin", TWINS)
async def test_a_server_that_is_down_is_unavailable_at_once(kind: Kind, twin: Twin) -> None:
    """Nothing listening on the port: get and put raise StoreUnavailableError well within the
    connect timeout."""
    place = Place(SERVER_URLS[kind](free_port()))
    store, _ = store_for(place, twin, connect_timeout=2)
    try:
        for operation in (store.get(new_id()), store.put(make(), 0)):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as caught:
                await operation
            assert time.monotonic() - started < 2
            assert caught.value.__cause__ is not None
    finally:
        await store.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
@pytest.mark.parametrize("twin", TWINS)
async def test_a_server_that_never_answers_times_out(
    kind: Kind, twin: Twin, silent_server: int
) -> None:
    """A hung server raises StoreUnavailableError within connect_timeout + statement_timeout
    (libpq rounds the connect timeout up to 2 s)."""
    store, _ = store_for(
        Place(SERVER_URLS[kind](silent_server)), twin, connect_timeout=0.5, statement_timeout=0.5
    )
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.get(new_id())
        assert time.monotonic() - started < 3
    finally:
        await store.close()


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("twin", TWINS)
async def test_a_duplicate_insert_is_false_and_leaves_the_connection_usable(
    kind: Kind, twin: Twin
) -> None:
    """put(record, 0) on an existing id answers False, not an error, and the same (single)
    pooled connection goes on working (no aborted transaction left behind)."""
    async with PLACES[kind]() as place:
        store, _ = store_for(place, twin, pool_size=1, max_overflow=0, create_schema=True)
        try:
            first, clash, other = make(), make(), make()
            clash.id = first.id
            assert await store.put(first, 0) is True
            assert await store.put(clash, 0) is False
            assert await store.put(other, 0) is True
            assert await store.get(first.id) == first
            assert await store.get(other.id) == other
        finally:
            await store.close()


def _drop_server_connections(kind: Kind, database: str) -> int:
    """Kill every server connection to ``database`` (ours alone), as a server restart would,
    and return once they are gone."""
    if kind == "postgres":
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            # With a timeout, pg_terminate_backend waits until the backend has exited.
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            ).fetchall()
            return len(rows)
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="")
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s", (database,)
            )
            ids = [row[0] for row in cursor.fetchall()]
            for connection_id in ids:
                cursor.execute(f"KILL {int(connection_id)}")
            return len(ids)
    finally:
        conn.close()


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
@pytest.mark.parametrize("twin", TWINS)
async def test_connections_the_server_dropped_are_replaced(kind: Kind, twin: Twin) -> None:
    """After the server drops the pool's connections (a restart), the next operation succeeds
    on a fresh connection instead of failing."""
    async with PLACES[kind]() as place:
        store, _ = store_for(place, twin, create_schema=True)
        try:
            record = make()
            assert await store.put(record, 0) is True
            database = place.url.database
            assert database is not None
            assert await asyncio.to_thread(_drop_server_connections, kind, database) >= 1
            assert await store.get(record.id) == record
        finally:
            await store.close()


# --- data -------------------------------------------------------------------------------------


async def test_purge_deletes_at_most_a_batch_per_call(subject: Subject) -> None:
    """1200 expired sessions purge in batches of 500 as 500, 500, 200, 0, sparing live ones."""
    await subject.store.get(new_id())  # SQLite creates its schema on first use
    expired = [make(expires_at=NOW - 1 - i % 7) for i in range(1200)]
    live = [make(expires_at=NOW + 1), make(expires_at=NOW + 600)]
    sessions = subject.raw.tables.sessions
    await subject.run(
        lambda conn: conn.execute(sa.insert(sessions), [row_values(r) for r in expired + live])
    )
    counts = [await subject.store.purge_expired(NOW, 500) for _ in range(4)]
    assert counts == [500, 500, 200, 0]
    for record in live:
        assert await subject.store.get(record.id) == record
    remaining = await subject.run(
        lambda conn: conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one()
    )
    assert remaining == 2


async def test_purge_also_drops_finished_hit_windows_uncounted(subject: Subject) -> None:
    """purge_expired removes finished hit windows (they mean the same as none) but counts only
    sessions."""
    await subject.store.hit("finished", NOW - 120, 60)
    await subject.store.hit("running", NOW - 30, 60)
    assert await subject.store.purge_expired(NOW, 500) == 0
    hits = subject.raw.tables.hits
    keys = await subject.run(lambda conn: conn.execute(sa.select(hits.c.key)).scalars().all())
    assert keys == ["running"]
    assert await subject.store.hit("finished", NOW, 60) == (1, NOW + 60)


async def test_ids_and_user_ids_compare_exactly(subject: Subject) -> None:
    """Ids and user ids that differ only in letter case are different (MySQL's default
    collations would make them equal)."""
    lower = make(user_id="alice")
    upper = make(user_id="Alice")
    upper.id = lower.id.swapcase()
    assert upper.id != lower.id
    assert await subject.store.put(lower, 0) is True
    assert await subject.store.put(upper, 0) is True
    assert await subject.store.get(lower.id) == lower
    assert await subject.store.get(upper.id) == upper
    assert [lower] == await subject.store.sessions_of("alice")
    assert sorted(await subject.store.user_ids(NOW)) == ["Alice", "alice"]


@pytest.mark.parametrize("kind", kinds())
async def test_hits_are_shared_by_every_store_on_the_database(kind: Kind) -> None:
    """Stores of two app instances (one async, one sync) count into the same window atomically."""
    async with PLACES[kind]() as place:
        first, _ = store_for(place, "async", create_schema=True)
        second, _ = store_for(place, "sync", create_schema=True)
        try:
            key = "login:" + new_id()
            results = await asyncio.gather(*(s.hit(key, NOW, 60) for s in [first, second] * 5))
            assert list(range(1, 11)) == sorted(count for count, _ in results)
        finally:
            await first.close()
            await second.close()


async def test_a_record_keeps_its_json_exactly(subject: Subject) -> None:
    """The stored JSON column round-trips unicode, nesting and floats without change, and the
    indexed columns copy the record."""
    record = make(user_id="zoë", data={"π": 3.141592653589793, "nested": [{"a": None}]})
    await subject.store.put(record, 0)
    assert await subject.store.get(record.id) == record
    sessions = subject.raw.tables.sessions
    rows = await subject.run(
        lambda conn: conn.execute(
            sa.select(sessions.c.user_id, sessions.c.expires_at, sessions.c.version)
        ).all()
    )
    assert [("zoë", record.expires_at, record.version)] == [tuple(row) for row in rows]


# --- replace (login: a new id in place of the old one) ------------------------------------------


async def replace(subject: Subject, record: SessionRecord, old_id: str, old_version: int) -> bool:
    """``replace`` on the store under test, whichever twin it is."""
    if isinstance(subject.raw, AsyncSQLStore):
        return await subject.raw.replace(record, old_id, old_version)
    return await asyncio.to_thread(subject.raw.replace, record, old_id, old_version)


async def user_ids(subject: Subject, now: float) -> list[str]:
    """``user_ids(now)`` on the store under test, whichever twin it is."""
    if isinstance(subject.raw, AsyncSQLStore):
        return await subject.raw.user_ids(now)
    return await asyncio.to_thread(subject.raw.user_ids, now)


def successor(old: SessionRecord, user_id: str | None = "alice") -> SessionRecord:
    """What a login stores in place of ``old``: the same data under a new id and secret."""
    new = make(user_id=user_id, data=dict(old.data))
    new.version = old.version + 1
    return new


async def test_replace_moves_the_session_to_the_new_id(subject: Subject) -> None:
    """replace stores the new record and removes the old one, indexes included."""
    old = make(data={"cart": ["apple"]})
    assert await subject.store.put(old, 0) is True
    new = successor(old)
    assert await replace(subject, new, old.id, old.version) is True
    assert await subject.store.get(old.id) is None
    assert await subject.store.get(new.id) == new
    assert await subject.store.sessions_of("alice") == [new]


async def test_replace_of_a_changed_session_changes_nothing(subject: Subject) -> None:
    """A replace naming a version that is no longer stored is False: the newer old record stays
    and the new id is not stored."""
    old = make()
    await subject.store.put(old, 0)
    changed = old.copy()
    changed.version = 2
    changed.data = {"written": "meanwhile"}
    assert await subject.store.put(changed, 1) is True
    new = successor(old)
    assert await replace(subject, new, old.id, 1) is False
    assert await subject.store.get(old.id) == changed
    assert await subject.store.get(new.id) is None


async def test_replace_of_a_missing_session_stores_nothing(subject: Subject) -> None:
    """A replace whose old record was deleted (logout, revocation) is False and stores nothing."""
    old = make()
    await subject.store.put(old, 0)
    await subject.store.delete(old.id)
    new = successor(old)
    assert await replace(subject, new, old.id, old.version) is False
    assert await subject.store.get(new.id) is None
    assert await subject.store.get(old.id) is None


async def test_replace_onto_a_taken_id_changes_nothing(subject: Subject) -> None:
    """A new id that already exists is False: both records stay exactly as they were (the
    primary key violation undoes the whole statement, and the connection goes on working)."""
    old, taken = make(user_id="old"), make(user_id="taken")
    await subject.store.put(old, 0)
    await subject.store.put(taken, 0)
    new = successor(old)
    new.id = taken.id
    assert await replace(subject, new, old.id, old.version) is False
    assert await subject.store.get(old.id) == old
    assert await subject.store.get(taken.id) == taken
    same = successor(old)
    same.id = old.id  # not a new id either
    assert await replace(subject, same, old.id, old.version) is False
    assert await subject.store.get(old.id) == old


async def test_replace_racing_writers_has_one_consistent_outcome(subject: Subject) -> None:
    """20 replaces (naming version 1 or 2) race a put moving the old record from version 1 to 2:
    at most one replace wins, the version it named was the stored one (so the put won exactly
    when that version is 2), and only the winner's new record exists."""
    for _ in range(3):
        old = make()
        await subject.store.put(old, 0)
        moved = old.copy()
        moved.version = 2
        candidates = [(successor(old, user_id=f"u{i}"), 1 + i % 2) for i in range(20)]
        results = await asyncio.gather(
            subject.store.put(moved, 1),
            *(replace(subject, new, old.id, version) for new, version in candidates),
        )
        put_won, replaced = results[0], results[1:]
        winners = [c for c, won in zip(candidates, replaced, strict=True) if won]
        assert len(winners) <= 1
        stored = [new for new, _ in candidates if await subject.store.get(new.id) is not None]
        assert [new for new, _ in winners] == stored
        if winners:
            assert (winners[0][1] == 2) == put_won
            assert await subject.store.get(old.id) is None
        else:
            assert put_won  # with nothing in the way, the put must have won
            assert await subject.store.get(old.id) == moved


# --- user_ids(now): live users only ------------------------------------------------------------


async def test_user_ids_lists_only_users_with_a_live_session(subject: Subject) -> None:
    """A user whose only session has expired is not listed; one with a live and a dead session
    is, once; anonymous sessions name nobody."""
    await subject.store.put(make(user_id="gone", expires_at=NOW - 1), 0)
    await subject.store.put(make(user_id="mixed", expires_at=NOW - 1), 0)
    await subject.store.put(make(user_id="mixed", expires_at=NOW + 60), 0)
    await subject.store.put(make(user_id="live", expires_at=NOW + 1), 0)
    await subject.store.put(make(expires_at=NOW + 60), 0)
    assert await user_ids(subject, NOW) == ["live", "mixed"]
    assert await user_ids(subject, NOW + 1) == ["mixed"]  # expires_at == now is expired
    assert await user_ids(subject, NOW - 10) == ["gone", "live", "mixed"]


# --- round trips -------------------------------------------------------------------------------


class RoundTripCounter:
    """A TCP proxy in front of a database server that counts round trips.

    A round trip is the client speaking after the server has spoken (or first): a query and its
    answer is one, however many TCP segments carry them, and BEGIN or COMMIT sent on their own
    are one each. So is a ping.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.round_trips = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RoundTripCounter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        last = ["server"]  # who spoke last on this connection

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, side: str) -> None:
            try:
                while data := await r.read(65536):
                    if side == "client" and last[0] != "client":
                        self.round_trips += 1
                    last[0] = side
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        tasks = [
            asyncio.ensure_future(pump(client_r, server_w, "client")),
            asyncio.ensure_future(pump(server_r, client_w, "server")),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks)
        self._tasks.difference_update(tasks)


def count_statements(raw: AsyncSQLStore | SQLStore) -> list[str]:
    """The SQL text of every statement the store's engine sends from now on (first word)."""
    sent: list[str] = []
    engines = [raw.engine.sync_engine if isinstance(raw, AsyncSQLStore) else raw.engine]
    if isinstance(raw, AsyncSQLStore) and raw._threaded is not None:
        engines.append(raw._threaded.engine)  # a SQLite file: the sync twin does the work

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split()[0].upper())

    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", before)
    return sent


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
@pytest.mark.parametrize("twin", TWINS)
async def test_a_read_and_a_login_are_one_statement_and_one_round_trip(
    kind: Kind, twin: Twin
) -> None:
    """get is a single SELECT and replace a single UPDATE, outside any transaction: one round
    trip each on a pooled connection (no BEGIN, COMMIT, ROLLBACK or ping), counted on the wire."""
    async with PLACES[kind]() as place:
        host, port = place.url.host, place.url.port
        assert host is not None
        assert port is not None
        async with RoundTripCounter(host, port) as counter:
            url = place.url.set(host="127.0.0.1", port=counter.port)
            store, raw = store_for(Place(url, place.table_prefix), twin, create_schema=True)
            try:
                old, older = make(), make()
                for record in (old, older):
                    assert await store.put(record, 0) is True
                # Warm up: asyncpg prepares each statement on its first run on a connection,
                # psycopg on its sixth.
                for _ in range(6):
                    await store.get(old.id)
                assert await replace(Subject(kind, store, raw), successor(older), older.id, 1)
                statements = count_statements(raw)
                counter.round_trips = 0
                for _ in range(5):
                    assert await store.get(old.id) == old
                assert (statements, counter.round_trips) == (["SELECT"] * 5, 5)

                statements.clear()
                counter.round_trips = 0
                new = successor(old)
                assert await replace(Subject(kind, store, raw), new, old.id, 1) is True
                assert (statements, counter.round_trips) == (["UPDATE"], 1)
            finally:
                await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_sqlite_reads_and_writes_bypass_the_engine(twin: Twin) -> None:
    """SQLite session reads and writes, hit counts and logouts run on the store's own no-wait
    reader and writer: the engine sends no statement for them, and each sees what the other
    committed."""
    async with PLACES["sqlite"]() as place:
        store, raw = store_for(place, twin)
        try:
            record = make()
            assert await store.put(record, 0) is True
            statements = count_statements(raw)
            assert await store.get(record.id) == record
            assert await store.get(new_id()) is None
            changed = record.copy()
            changed.version = 2
            changed.data = {"seen": True}
            assert await store.put(changed, 1) is True
            assert await store.get(record.id) == changed
            assert await store.put(changed, 1) is False  # a stale version: compare-and-set
            assert await store.hit("k", NOW, 60) == (1, NOW + 60)
            assert await store.hit("k", NOW + 1, 60) == (2, NOW + 60)
            assert await store.hit("k", NOW + 61, 60) == (1, NOW + 121)  # a new window
            await store.clear_hits("k")
            assert await store.hit("k", NOW + 62, 60) == (1, NOW + 122)
            await store.delete(record.id)  # a logout
            assert await store.get(record.id) is None
            assert statements == []
        finally:
            await store.close()


def test_a_sync_manager_reads_and_writes_sqlite_in_the_callers_thread(tmp_path: Path) -> None:
    """The sync manager asks the SQLite store's recall() (its no-wait reader) before a get and
    write_now() (its no-wait writer) before a write, so neither starts a worker thread or a
    timer; a missing session falls back to get, and a write whose turn is taken goes through
    the worker pool under store_timeout."""
    store = SQLStore.from_url(f"sqlite:///{tmp_path / 'c.db'}")
    manager = SessionManager(store, test_config(), clock=FakeClock())
    record = make()
    assert store.put(record, 0) is True
    assert store.recall(record.id) == record
    assert store.recall(new_id()) is None
    calls: list[str] = []
    real_call = manager._call

    def spying(op: Any) -> Any:
        calls.append(op.method)
        return real_call(op)

    manager._call = spying  # type: ignore[method-assign]
    session = manager.open(RequestView("GET", "https", [], "192.0.2.1")).session
    session["n"] = 1
    committed = manager.commit(session)
    assert calls == []  # the new session's insert, in this thread
    cookie = "; ".join(h.split(";")[0] for name, h in committed.headers if name == "set-cookie")
    request = RequestView("GET", "https", [("cookie", cookie)], "192.0.2.1")
    for _ in range(3):
        opened = manager.open(request)
        assert opened.session["n"] == 1
        manager.commit(opened.session)
    assert calls == []  # three reads, none through the pool
    turns = store._turns
    assert turns is not None
    assert turns.acquire(1)  # another thread's write, say
    opened = manager.open(request)
    opened.session["n"] = 2
    threading.Timer(0.05, turns.release).start()
    manager.commit(opened.session)
    assert calls == ["put"]  # its turn was taken: through the pool, which waited for it
    assert manager.open(request).session["n"] == 2
    manager.close()


@pytest.mark.postgres
async def test_recall_never_answers_on_a_server_database() -> None:
    """Only SQLite has a no-wait reader: on PostgreSQL recall never answers (get does)."""
    async with sync_sql_store("postgres") as store:
        record = make()
        assert store.put(record, 0) is True
        assert store.recall(record.id) is None
        assert store.get(record.id) == record


# --- SQLite: reads that would wait, several processes on one file ------------------------------


async def test_sqlite_read_that_would_wait_leaves_the_event_loop_free(tmp_path: Path) -> None:
    """When another connection locks the file, an async read does not wait on the event loop:
    it waits in a worker thread, so the loop runs on (here: the coroutine that releases the
    lock) and the read then succeeds."""
    path = tmp_path / "locked.db"
    store = AsyncSQLStore.from_url(f"sqlite:///{path}", statement_timeout=5)
    record = make()
    assert await store.put(record, 0) is True
    await store.close()

    store = AsyncSQLStore.from_url(f"sqlite:///{path}", statement_timeout=5, create_schema=False)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
        blocker.execute("BEGIN EXCLUSIVE")  # held until the connection closes
        blocker.execute("DELETE FROM coatcheck_hits")
        blocker.execute("COMMIT")
        started = time.monotonic()
        reading = asyncio.ensure_future(store.get(record.id))
        for _ in range(3):
            await asyncio.sleep(0)  # the read's task runs here
        # Had the read waited on the loop, the loop would have stood still for the whole
        # busy timeout (5 s) before coming back here: a bound on correctness, not speed.
        assert time.monotonic() - started < 2.5
        assert not reading.done()  # it is waiting, in a worker thread
        blocker.close()
        assert await reading == record
    finally:
        blocker.close()
        await store.close()


async def test_sqlite_write_that_would_wait_leaves_the_event_loop_free(tmp_path: Path) -> None:
    """While another connection holds the file's write lock, an async write does not wait on
    the event loop (the direct writer never waits): it waits in a worker thread, the loop runs
    on, and once the lock is released the write lands, exactly once."""
    path = tmp_path / "locked.db"
    store = AsyncSQLStore.from_url(f"sqlite:///{path}", statement_timeout=5)
    record = make()
    try:
        assert await store.put(record, 0) is True
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # the write lock, held until COMMIT
            changed = record.copy()
            changed.version = 2
            changed.data = {"n": 1}
            started = time.monotonic()
            writing = asyncio.ensure_future(store.put(changed, 1))
            for _ in range(3):
                await asyncio.sleep(0)
            assert time.monotonic() - started < 2.5  # the loop never stood still for 5 s
            assert not writing.done()  # waiting, in a worker thread
            assert await store.get(record.id) == record  # reads go on meanwhile
            blocker.execute("COMMIT")
            assert await writing is True
        finally:
            blocker.close()
        assert await store.get(record.id) == changed
        assert await store.put(changed, 1) is False  # it landed once: version 1 is gone
    finally:
        await store.close()


@pytest.mark.parametrize("twin", TWINS)
async def test_sqlite_direct_writes_never_checkpoint_in_the_request(
    twin: Twin, tmp_path: Path
) -> None:
    """The direct writer's connections do not checkpoint on commit (a few ms of copying and
    fsync on the event loop): checkpoints run in the background, so the write-ahead log stays
    bounded however many writes go through."""
    path = tmp_path / "wal.db"
    url = f"sqlite:///{path}"
    raw = AsyncSQLStore.from_url(url) if twin == "async" else SQLStore.from_url(url)
    store: Any = raw if twin == "async" else AsyncOverSync(raw)
    try:
        record = make(data={"blob": "x" * 2000})
        assert await store.put(record, 0) is True
        writes = 10 * _sql_engine.CHECKPOINT_EVERY
        for version in range(1, writes):
            changed = record.copy()
            changed.version = version + 1
            changed.data = {"blob": "x" * 2000, "n": version}
            assert await store.put(changed, version) is True
        sync = raw._threaded if isinstance(raw, AsyncSQLStore) else raw
        assert sync is not None
        writer = sync._writer
        assert writer is not None
        checkpointer = writer._checkpointer
        if checkpointer is not None:
            checkpointer.join(timeout=10)
        assert writer.checkpoints >= 3
        conn = writer._connection()
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (0,)
        # 2,000 writes of a 2 KB record fill ~24 MB of log without checkpoints.
        assert (tmp_path / "wal.db-wal").stat().st_size < 8 * 2**20
        assert (await store.get(record.id)).data["n"] == writes - 1
    finally:
        await store.close()


async def test_a_log_that_grew_while_a_reader_held_it_back_is_cut_back(tmp_path: Path) -> None:
    """A reader that keeps a snapshot open (a paused process, a long admin query) stops the log
    from starting over, so it grows; once the reader is gone, the checkpoints start it over and
    cut the file back to WAL_SIZE_LIMIT instead of keeping its high-water mark."""
    path = tmp_path / "spike.db"
    store = AsyncSQLStore.from_url(f"sqlite:///{path}")
    record = make(data={"blob": "x" * 2000})
    wal = tmp_path / "spike.db-wal"
    try:
        assert await store.put(record, 0) is True
        version = 1

        async def write(times: int) -> None:
            nonlocal version
            for n in range(times):
                changed = record.copy()
                changed.version = version + 1
                changed.data = {"blob": "x" * 2000, "n": n}
                assert await store.put(changed, version) is True
                version += 1
                if n % 100 == 0:
                    await asyncio.sleep(0.02)  # the background checkpoints get to run

        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM coatcheck_sessions").fetchall()
            await write(3000)
            assert wal.stat().st_size > 2 * _sql_engine.WAL_SIZE_LIMIT
        finally:
            reader.close()
        await write(1000)
        assert wal.stat().st_size <= _sql_engine.WAL_SIZE_LIMIT
    finally:
        await store.close()


async def test_writes_of_one_process_await_their_turn_on_the_event_loop(tmp_path: Path) -> None:
    """While a thread of this process holds the write turn (a background checkpoint, a write
    handed to a worker), async writes wait for it without blocking the loop or going to
    threads themselves, and all land once it is released, in turn."""
    store = AsyncSQLStore.from_url(f"sqlite:///{tmp_path / 't.db'}", statement_timeout=5)
    try:
        records = [make(data={"n": 0}) for _ in range(5)]
        for record in records:
            assert await store.put(record, 0) is True
        threaded = store._threaded
        assert threaded is not None
        turns = threaded._turns
        assert turns is not None
        assert turns.acquire(1)  # as a worker thread would
        changed = [r.copy() for r in records]
        for record in changed:
            record.version, record.data = 2, {"n": 1}
        writing = [asyncio.ensure_future(store.put(r, 1)) for r in changed]
        for _ in range(5):
            await asyncio.sleep(0.01)  # the loop runs; the writes wait
        assert not any(w.done() for w in writing)
        assert len(turns._waiting) == 5
        threading.Timer(0.05, turns.release).start()  # released from another thread
        assert await asyncio.gather(*writing) == [True] * 5
        assert not turns._waiting
        for record in changed:
            assert await store.get(record.id) == record
        assert turns.try_acquire()  # nobody kept it
        turns.release()
    finally:
        await store.close()


async def test_a_write_turn_that_never_comes_is_unavailable_and_leaves_no_waiter(
    tmp_path: Path,
) -> None:
    """A write whose turn does not come within the statement timeout raises
    StoreUnavailableError (a 503), and a cancelled wait leaves nothing behind: the turn, once
    free, goes to the writers still waiting."""
    store = AsyncSQLStore.from_url(f"sqlite:///{tmp_path / 'n.db'}", statement_timeout=0.2)
    try:
        record = make()
        assert await store.put(record, 0) is True
        threaded = store._threaded
        assert threaded is not None
        turns = threaded._turns
        assert turns is not None
        assert turns.acquire(1)
        changed = record.copy()
        changed.version = 2
        with pytest.raises(StoreUnavailableError, match="no write turn"):
            await store.put(changed, 1)
        cancelled = asyncio.ensure_future(turns.turn())
        waiting = asyncio.ensure_future(store.put(changed, 1))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        turns.release()
        assert await waiting is True
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not turns._waiting
        assert turns.try_acquire()
        turns.release()
    finally:
        await store.close()


async def test_a_wake_that_meets_a_cancelled_waiter_goes_to_the_next() -> None:
    """A waiter woken and cancelled in the same loop pass hands the wake on: the next waiter
    gets the turn instead of waiting for a release that already happened."""
    turns = _sql_engine.WriteTurns()
    assert turns.acquire(1)
    first = asyncio.ensure_future(turns.turn())
    second = asyncio.ensure_future(turns.turn())
    await asyncio.sleep(0)
    assert len(turns._waiting) == 2
    turns.release()  # wakes first (scheduled) ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 2)  # second has the turn
    assert not turns.try_acquire()
    turns.release()
    assert turns.try_acquire()
    turns.release()


def test_a_write_plan_handed_off_midway_runs_each_statement_once(tmp_path: Path) -> None:
    """A plan the direct writer starts and cannot finish (here: a statement that is not
    prebuilt) goes on in the ordinary path from the statement it stopped at: every statement
    runs exactly once, the first on the direct writer, the rest on the engine."""
    store = SQLStore.from_url(f"sqlite:///{tmp_path / 'h.db'}")
    record = make(data={"n": 0})
    try:
        assert store.put(record, 0) is True
        changed = record.copy()
        changed.version = 2
        changed.data = {"n": 1}
        first = next(store._plans.put(changed, 1))
        seen: list[Any] = []

        def plan() -> Any:
            result = yield first
            seen.append(result.rowcount)
            result = yield sa.text("UPDATE coatcheck_sessions SET version = version + 1")
            seen.append(result.rowcount)
            return "done"

        statements = count_statements(store)
        assert store._run(plan()) == "done"
        assert seen == [1, 1]
        assert statements == ["UPDATE"]  # only the second went through the engine
        stored = store.get(record.id)
        assert stored is not None
        assert stored.data == {"n": 1}
        assert store._plans is not None
        assert store.put(changed, 1) is False  # the row is at version 3 now
    finally:
        store.close()


def test_sqlite_writes_wait_for_wal_mode_before_going_direct(tmp_path: Path) -> None:
    """A file in rollback-journal mode (made by another tool) is written the ordinary way,
    whose connections switch it to WAL; from then on writes go direct."""
    path = tmp_path / "journal.db"
    setup = SQLStore.from_url(f"sqlite:///{path}")
    setup.create_schema()
    setup.close()
    legacy = sqlite3.connect(path, isolation_level=None)
    assert legacy.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    legacy.close()
    store = SQLStore.from_url(f"sqlite:///{path}", create_schema=False)
    try:
        statements = count_statements(store)
        record = make()
        assert store.put(record, 0) is True
        assert statements == ["INSERT"]  # ordinary path: the writer refused a journal file
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        check.close()
        changed = record.copy()
        changed.version = 2
        assert store.put(changed, 1) is True
        assert statements == ["INSERT"]  # direct, now that the file is in WAL mode
        assert store.get(record.id) == changed
    finally:
        store.close()


def test_sqlite_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    """Three processes writing one SQLite file at once (compare-and-set increments and hit
    counts) all succeed: no "database is locked", no lost update."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = SQLStore.from_url(url)
    record = make(data={"n": 0})
    assert store.put(record, 0) is True
    times, workers = 30, 3
    try:
        argv = [sys.executable, "-m", "tests.stores.sqlite_writer", url, record.id, str(times)]
        root = Path(__file__).resolve().parents[2]
        writers = [
            subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(workers)
        ]
        outputs = [w.communicate(timeout=120) for w in writers]
        assert [(w.returncode, err) for w, (_, err) in zip(writers, outputs, strict=True)] == [
            (0, b"")
        ] * workers
        last_hits = [int(out.split()[1]) for out, _ in outputs]
        final = store.get(record.id)
        assert final is not None
        assert final.data == {"n": times * workers}
        assert max(last_hits) == times * workers
        assert store.hit("shared", NOW, 3600)[0] == times * workers + 1
    finally:
        store.close()


# --- dead pooled connections, found without a round trip ----------------------------------------


def _kill_server_connection(kind: Kind, connection_id: int) -> None:
    """End one server connection, as a restart or an idle timeout would, once it is gone."""
    if kind == "postgres":
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (connection_id,))
        return
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="")
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"KILL {int(connection_id)}")
    finally:
        conn.close()


async def _eventually(check: Callable[[], bool | None]) -> bool | None:
    """``check()`` once it is true, or its last answer after 5 s (a server needs a moment to
    hang up after it was told to)."""
    for _ in range(500):
        if answer := check():
            return answer
        await asyncio.sleep(0.01)
    return check()


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
@pytest.mark.parametrize("twin", TWINS)
async def test_a_connection_the_server_closed_is_seen_without_a_round_trip(
    kind: Kind, twin: Twin
) -> None:
    """peer_closed tells an idle driver connection whose server hung up (True) from a healthy
    one (False) by looking at its socket, and knows nothing of an unknown driver (None)."""
    async with PLACES[kind]() as place:
        store, raw = store_for(place, twin)
        whoami = "SELECT pg_backend_pid()" if kind == "postgres" else "SELECT CONNECTION_ID()"
        try:
            if isinstance(raw, AsyncSQLStore):
                conn = await raw.engine.connect()
                server_id = (await conn.exec_driver_sql(whoami)).scalar_one()
                driver = (await conn.get_raw_connection()).driver_connection
            else:
                sync_conn = await asyncio.to_thread(raw.engine.connect)
                server_id = sync_conn.exec_driver_sql(whoami).scalar_one()
                driver = sync_conn.connection.driver_connection
            assert peer_closed(driver) is False
            await asyncio.to_thread(_kill_server_connection, kind, server_id)
            assert await _eventually(lambda: peer_closed(driver)) is True
            if isinstance(raw, AsyncSQLStore):
                await conn.invalidate()
                await conn.close()
            else:
                sync_conn.invalidate()
                sync_conn.close()
        finally:
            await store.close()
    assert peer_closed(object()) is None


@pytest.mark.parametrize("kind", kinds("postgres", "mysql"))
async def test_a_driver_without_a_socket_check_is_pinged_instead(
    kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the socket cannot be looked at (a driver whose insides changed), the pool pings a
    connection before use, and replaces it when the ping fails."""
    monkeypatch.setattr(_sql_engine, "peer_closed", lambda driver: None)
    async with PLACES[kind]() as place:
        store, _ = store_for(place, "sync", create_schema=True)
        try:
            record = make()
            assert await store.put(record, 0) is True
            database = place.url.database
            assert database is not None
            assert await asyncio.to_thread(_drop_server_connections, kind, database) >= 1
            assert await store.get(record.id) == record
        finally:
            await store.close()
