"""SQL store factories: SQLite (a temporary file), PostgreSQL and MariaDB, each async and sync.

Every store gets a place of its own: on SQLite, a file in a temporary folder; on PostgreSQL and
MariaDB, a table prefix of its own inside a ``coatcheck_t_<random hex>`` database that this test
process created (and drops at exit); the test's tables are dropped after it. Nothing else on the
shared servers is touched. A server that does not answer skips the test, or fails it under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import psycopg
import pymysql
from sqlalchemy.engine import URL

from coatcheck.stores.base import AsyncStore
from coatcheck.stores.sql import AsyncSQLStore, SQLStore
from tests.services import MYSQL_HOST, MYSQL_PORT, PG_HOST, PG_PORT, require_service

from .adapt import AsyncOverSync

Kind = Literal["sqlite", "postgres", "mysql"]


def _unique_name() -> str:
    return f"coatcheck_t_{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Place:
    """Where a test's store lives: a database URL (no driver) and the table prefix to use."""

    url: URL
    table_prefix: str = "coatcheck_"


@asynccontextmanager
async def sqlite_place() -> AsyncIterator[Place]:
    """A SQLite file in a temporary folder of our own, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="coatcheck-sql-"))
    try:
        yield Place(URL.create("sqlite", database=str(folder / "sessions.db")))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _postgres_admin(statement: str, database: str | None) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction, hence autocommit.
    with psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user="postgres",
        dbname=database or "postgres",
        autocommit=True,
    ) as conn:
        conn.execute(statement.encode())


def _mysql_admin(statement: str, database: str | None) -> None:
    conn = pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database=database
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


@dataclass(frozen=True)
class _Server:
    label: str
    host: str
    port: int
    backend: str
    username: str
    quote: str
    admin: Callable[[str, str | None], None]
    drop_database: str


_SERVERS: dict[Kind, _Server] = {
    "postgres": _Server(
        "PostgreSQL",
        PG_HOST,
        PG_PORT,
        "postgresql",
        "postgres",
        '"',
        _postgres_admin,
        # FORCE ends any connection a failed test left open, so the drop cannot hang.
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    ),
    "mysql": _Server(
        "MariaDB",
        MYSQL_HOST,
        MYSQL_PORT,
        "mysql",
        "root",
        "`",
        _mysql_admin,
        "DROP DATABASE IF EXISTS `{name}`",
    ),
}
_databases: dict[Kind, str] = {}
_databases_lock = threading.Lock()


def _process_database(kind: Kind) -> str:
    """This test process's own database on the ``kind`` server: made on first use, dropped at
    exit.

    Creating a database takes up to 0.3 s on a busy PostgreSQL (it copies a template) and
    ~0.1 s on MariaDB with its drop, too slow for one per test; so tests share this database,
    each under a table prefix of its own.
    """
    server = _SERVERS[kind]
    with _databases_lock:
        if kind not in _databases:
            name = _unique_name()
            q = server.quote
            server.admin(f"CREATE DATABASE {q}{name}{q}", None)
            atexit.register(server.admin, server.drop_database.format(name=name), None)
            _databases[kind] = name
        return _databases[kind]


@asynccontextmanager
async def server_place(kind: Kind) -> AsyncIterator[Place]:
    """A table prefix of our own in this process's database on the ``kind`` server; the tables
    under it are dropped afterwards."""
    server = _SERVERS[kind]
    require_service(server.label, server.host, server.port)
    database = await asyncio.to_thread(_process_database, kind)
    prefix = f"{_unique_name()}_"
    try:
        yield Place(
            URL.create(
                server.backend,
                username=server.username,
                host=server.host,
                port=server.port,
                database=database,
            ),
            prefix,
        )
    finally:
        q = server.quote
        tables = f"{q}{prefix}sessions{q}, {q}{prefix}hits{q}"
        await asyncio.to_thread(server.admin, f"DROP TABLE IF EXISTS {tables}", database)


PLACES: dict[Kind, Callable[[], AbstractAsyncContextManager[Place]]] = {
    "sqlite": sqlite_place,
    "postgres": partial(server_place, "postgres"),
    "mysql": partial(server_place, "mysql"),
}


@asynccontextmanager
async def async_sql_store(kind: Kind) -> AsyncIterator[AsyncSQLStore]:
    """An empty async SQL store on a fresh database of ``kind``, closed afterwards."""
    async with PLACES[kind]() as place:
        store = AsyncSQLStore.from_url(place.url, table_prefix=place.table_prefix)
        try:
            if kind != "sqlite":  # SQLite creates its schema on first use by default
                await store.create_schema()
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def sync_sql_store(kind: Kind) -> AsyncIterator[SQLStore]:
    """An empty sync SQL store on a fresh database of ``kind``, closed afterwards."""
    async with PLACES[kind]() as place:
        store = SQLStore.from_url(place.url, table_prefix=place.table_prefix)
        try:
            if kind != "sqlite":
                await asyncio.to_thread(store.create_schema)
            yield store
        finally:
            await asyncio.to_thread(store.close)


def _async_factory(kind: Kind) -> Callable[[], AbstractAsyncContextManager[AsyncStore]]:
    @asynccontextmanager
    async def factory() -> AsyncIterator[AsyncStore]:
        async with async_sql_store(kind) as store:
            yield store

    return factory


def _sync_factory(kind: Kind) -> Callable[[], AbstractAsyncContextManager[AsyncStore]]:
    @asynccontextmanager
    async def factory() -> AsyncIterator[AsyncStore]:
        async with sync_sql_store(kind) as store:
            yield AsyncOverSync(store)

    return factory


FACTORIES: dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]] = {
    "sqlite": _async_factory("sqlite"),
    "sqlite-sync": _sync_factory("sqlite"),
    "postgres": _async_factory("postgres"),
    "postgres-sync": _sync_factory("postgres"),
    "mysql": _async_factory("mysql"),
    "mysql-sync": _sync_factory("mysql"),
}
