"""Everything the SQL stores say to a database, written once for both twins.

The async and sync SQL stores differ only in ``await``. So each store operation is written here as
a *plan*: a generator that yields SQLAlchemy statements, receives each statement's result, and
returns the operation's answer. A twin opens a transaction, feeds the plan's statements to
``conn.execute`` (awaited or not) and hands back what the plan returns; it decides nothing.

Rules of the schema:

- The whole record lives in one JSON text column (``record``); ``id``, ``secret_hash``,
  ``user_id``, ``expires_at`` and ``version`` are copies of record fields kept in columns so they
  can be indexed and compared. The JSON is what is read back.
- Compare-and-set is ``UPDATE ... WHERE id = :id AND version = :expected``: exactly one row changed
  means this request won. An insert (expected version 0) never overwrites.
- ``replace`` (a login's new session id) is one ``UPDATE`` that rewrites the old row under the new
  id, primary key included, on the same version condition: atomic by itself on every database.
  A taken new id is a unique violation, which undoes the whole statement.
- Every plan but MySQL's ``hit`` is a single statement, or statements that are each complete on
  their own (purge batches, delete chunks), so the twins run them in autocommit mode: one round
  trip each, no ``BEGIN``/``COMMIT`` around them. A plan that needs a transaction spells it out
  (:data:`BEGIN`, :data:`COMMIT`).
- On MySQL/MariaDB the tables use ``utf8mb4_bin`` so that ids and user ids compare exactly (the
  server default collations are case-insensitive, which would let ``abc`` find ``ABC``).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.base import Executable

from .._core.memo import DECODED
from .._core.record import SessionRecord, record_to_json
from .._core.stats import SessionStats, transport_pattern
from ..errors import ConfigurationError

T = TypeVar("T")

Family = Literal["sqlite", "postgresql", "mysql"]


@dataclass(frozen=True, slots=True)
class Bound:
    """A statement built once per store, with one call's parameters.

    Building a SQLAlchemy statement and computing its cache key costs more than running it on
    SQLite, so the hot operations reuse one statement object with bind parameters: SQLAlchemy
    finds it compiled in its cache at once, and the SQLite read path runs its compiled SQL
    directly.
    """

    statement: Executable
    params: dict[str, Any]


#: What a plan receives back for each statement it yielded (a constraint violation is thrown in).
Plan: TypeAlias = Generator[Executable | Bound, CursorResult[Any], T]
#: What a twin passes to :func:`advance`: nothing yet, a result, or a constraint violation.
Outcome: TypeAlias = CursorResult[Any] | IntegrityError | None

DEFAULT_TABLE_PREFIX = "coatcheck_"
# Index names are "ix_<prefix>sessions_expires_at": keep them under PostgreSQL's 63 characters.
_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
# Long id lists are deleted in chunks so no statement exceeds a driver's parameter limit.
_DELETE_CHUNK = 500
#: The statements a plan yields around work that must be one transaction (the twins run every
#: statement in autocommit mode, so these are what opens and ends one).
BEGIN = sa.text("BEGIN")
COMMIT = sa.text("COMMIT")

_FAMILIES: dict[str, Family] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}

# Table options for MySQL and MariaDB. SQLAlchemy reads them under the dialect's own name, and a
# `mariadb://` engine's dialect is named "mariadb", so each option is given under both names.
_MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    f"{name}_{option}": value
    for name in ("mysql", "mariadb")
    for option, value in (("engine", "InnoDB"), ("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}


@dataclass(frozen=True, slots=True)
class SQLTables:
    """The two tables of a SQL store, on their own :class:`~sqlalchemy.MetaData`.

    Hand ``metadata`` to Alembic (``target_metadata``) to manage the schema in your own
    migrations.
    """

    metadata: sa.MetaData
    sessions: sa.Table
    hits: sa.Table


def build_tables(table_prefix: str = DEFAULT_TABLE_PREFIX) -> SQLTables:
    """The ``<prefix>sessions`` and ``<prefix>hits`` tables, with their indexes.

    Raises :class:`~coatcheck.errors.ConfigurationError` for a prefix that is not a plain SQL
    identifier of at most 40 characters (it is spliced into table and index names).
    """
    if _PREFIX_RE.fullmatch(table_prefix) is None:
        raise ConfigurationError(
            f"table_prefix must be letters, digits and underscores (at most 40, not starting "
            f"with a digit), got {table_prefix!r}"
        )
    metadata = sa.MetaData()
    sessions = sa.Table(
        f"{table_prefix}sessions",
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        # MySQL's TEXT stops at 64 KiB; MEDIUMTEXT leaves room for large session data.
        sa.Column(
            "record",
            sa.Text().with_variant(mysql_dialect.MEDIUMTEXT(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Index(f"ix_{table_prefix}sessions_user_id", "user_id"),
        sa.Index(f"ix_{table_prefix}sessions_expires_at", "expires_at"),
        **_MYSQL_TABLE_OPTIONS,
    )
    hits = sa.Table(
        f"{table_prefix}hits",
        metadata,
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_ends_at", sa.Double(), nullable=False),
        sa.Index(f"ix_{table_prefix}hits_window_ends_at", "window_ends_at"),
        **_MYSQL_TABLE_OPTIONS,
    )
    return SQLTables(metadata=metadata, sessions=sessions, hits=hits)


def schema_metadata(table_prefix: str = DEFAULT_TABLE_PREFIX) -> sa.MetaData:
    """The store's tables as SQLAlchemy metadata, for Alembic's ``target_metadata``."""
    return build_tables(table_prefix).metadata


def _dialect_for(dialect_name: str) -> Dialect:
    dialects: dict[str, type[Dialect]] = {
        "sqlite": sqlite_dialect.dialect,
        "postgresql": postgresql_dialect.dialect,
        "mysql": mysql_dialect.dialect,
        "mariadb": sa.make_url("mariadb://").get_dialect(),
    }
    try:
        return dialects[dialect_name]()
    except KeyError:
        raise ConfigurationError(
            f"no SQL session store for dialect {dialect_name!r}; "
            f"use one of {', '.join(sorted(dialects))}"
        ) from None


def schema_ddl(dialect_name: str, table_prefix: str = DEFAULT_TABLE_PREFIX) -> str:
    """The ``CREATE TABLE`` and ``CREATE INDEX`` statements of the store for one dialect.

    ``dialect_name`` is ``"sqlite"``, ``"postgresql"``, ``"mysql"`` or ``"mariadb"``, or a
    database URL of one of them (only its scheme is used). The text is what
    :meth:`~coatcheck.stores.sql.AsyncSQLStore.create_schema` runs, as semicolon-terminated
    statements, for teams that apply schema changes through their own migrations.
    """
    if "://" in dialect_name:
        dialect_name = dialect_name.partition("://")[0].partition("+")[0].lower()
    dialect = _dialect_for("postgresql" if dialect_name == "postgres" else dialect_name)
    tables = build_tables(table_prefix)
    statements: list[str] = []
    for table in (tables.sessions, tables.hits):
        statements.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            statements.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip())
    # SQLAlchemy indents with tabs and leaves a space before each line break: tidy for docs.
    tidy = [
        "\n".join(line.rstrip().replace("\t", "    ") for line in statement.splitlines())
        for statement in statements
    ]
    return "\n\n".join(f"{statement};" for statement in tidy) + "\n"


def dialect_family(dialect_name: str) -> Family:
    """Which SQL flavour a SQLAlchemy dialect speaks, or ConfigurationError when unsupported."""
    try:
        return _FAMILIES[dialect_name]
    except KeyError:
        raise ConfigurationError(
            f"no SQL session store for dialect {dialect_name!r}; use SQLite, PostgreSQL, "
            f"MySQL or MariaDB"
        ) from None


def row_values(record: SessionRecord) -> dict[str, Any]:
    """The column values that store ``record`` (the indexed copies plus the whole JSON)."""
    return {
        "id": record.id,
        "secret_hash": record.secret_hash,
        "user_id": record.user_id,
        "expires_at": record.expires_at,
        "version": record.version,
        "record": record_to_json(record),
    }


_ROW_COLUMNS = ("id", "secret_hash", "user_id", "expires_at", "version", "record")


def _bind_values(record: SessionRecord) -> dict[str, Any]:
    return {f"v_{column}": value for column, value in row_values(record).items()}


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """A finished plan's answer."""

    value: T


def advance(plan: Plan[T], outcome: Outcome) -> Executable | Bound | Done[T]:
    """Run ``plan`` up to its next statement, or to its answer.

    ``outcome`` is what the previous statement gave: ``None`` before the first statement, its
    result, or the :class:`~sqlalchemy.exc.IntegrityError` it raised, which is thrown into the
    plan so the plan (not the twin) decides what a constraint violation means.
    """
    try:
        if outcome is None:
            return next(plan)
        if isinstance(outcome, IntegrityError):
            return plan.throw(outcome)
        return plan.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)


def execute_args(step: Executable | Bound) -> tuple[Executable, dict[str, Any] | None]:
    """The arguments of ``Connection.execute`` for a statement a plan yielded."""
    if isinstance(step, Bound):
        return step.statement, step.params
    return step, None


class SQLPlans:
    """The plans for every store operation, for one table prefix and one SQL dialect."""

    def __init__(self, tables: SQLTables, dialect_name: str) -> None:
        self.tables = tables
        self.family = dialect_family(dialect_name)
        self._s = s = tables.sessions
        self._h = tables.hits
        # The hot statements, built once (see Bound). Row values bind as "v_<column>".
        values: dict[str, Any] = {c: sa.bindparam(f"v_{c}") for c in _ROW_COLUMNS}
        self._get = sa.select(s.c.record).where(s.c.id == sa.bindparam("id"))
        self._update = (
            sa.update(s)
            .where(s.c.id == sa.bindparam("old_id"), s.c.version == sa.bindparam("old_version"))
            .values(values)
        )
        self._insert = self._insert_if_absent(values)
        self._delete_one = sa.delete(s).where(s.c.id == sa.bindparam("id"))
        self._hit = None if self.family == "mysql" else self._upsert_hit()
        self._clear_hits = sa.delete(self._h).where(self._h.c.key == sa.bindparam("key"))

    def get(self, session_id: str) -> Plan[SessionRecord | None]:
        result = yield Bound(self._get, {"id": session_id})
        raw: str | None = result.scalar_one_or_none()
        return None if raw is None else DECODED.decode(raw)

    def put(self, record: SessionRecord, expected_version: int) -> Plan[bool]:
        values = _bind_values(record)
        if expected_version == 0:
            try:
                result = yield Bound(self._insert, values)
            except IntegrityError:
                return False  # MySQL: another request created this id first
            return result.rowcount == 1
        result = yield Bound(
            self._update, {**values, "old_id": record.id, "old_version": expected_version}
        )
        # A missing row (deleted by logout) matches nothing, so an update never resurrects it.
        return result.rowcount == 1

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> Plan[bool]:
        """Store ``record`` (a new id) in place of ``old_id`` at ``old_version``, both or neither.

        One ``UPDATE`` moves the old row to the new id and every new value: it matches only while
        the old record still has ``old_version`` (so a request that changed or deleted it
        meanwhile wins), and a new id that is already taken violates the primary key, which
        undoes the statement. No transaction is needed around it, and it takes one round trip.
        """
        if record.id == old_id:
            return False  # not a new id: it is taken (by the old record itself)
        params = {**_bind_values(record), "old_id": old_id, "old_version": old_version}
        try:
            result = yield Bound(self._update, params)
        except IntegrityError:
            return False  # record.id exists: the statement changed nothing
        return result.rowcount == 1

    def _insert_if_absent(self, values: dict[str, Any]) -> Executable:
        # PostgreSQL aborts the whole transaction on a failed INSERT, so a duplicate id must not
        # raise there: ON CONFLICT DO NOTHING reports it as "0 rows". SQLite gets the same.
        # MySQL's closest form (INSERT IGNORE) also hides unrelated errors, and MySQL keeps the
        # transaction usable after a duplicate-key error, so a plain INSERT is caught in put().
        # preserve_rowcount: some drivers (psycopg) forget an INSERT's row count once SQLAlchemy
        # has closed the cursor, and the count is the answer here.
        if self.family == "mysql":
            return sa.insert(self._s).values(values).execution_options(preserve_rowcount=True)
        insert = postgresql_dialect.insert if self.family == "postgresql" else sqlite_dialect.insert
        return (
            insert(self._s)
            .values(values)
            .on_conflict_do_nothing(index_elements=[self._s.c.id])
            .execution_options(preserve_rowcount=True)
        )

    def delete(self, session_ids: tuple[str, ...]) -> Plan[None]:
        if len(session_ids) == 1:  # a logout: the prebuilt statement
            yield Bound(self._delete_one, {"id": session_ids[0]})
            return
        for start in range(0, len(session_ids), _DELETE_CHUNK):
            chunk = session_ids[start : start + _DELETE_CHUNK]
            yield sa.delete(self._s).where(self._s.c.id.in_(chunk))

    def sessions_of(self, user_id: str) -> Plan[list[SessionRecord]]:
        result = yield sa.select(self._s.c.record).where(self._s.c.user_id == user_id)
        return [DECODED.decode(raw) for raw in result.scalars()]

    def user_ids(self, now: float) -> Plan[list[str]]:
        """The users with a record that expires after ``now``."""
        signed_in = sa.and_(self._s.c.user_id.is_not(None), self._s.c.expires_at > now)
        result = yield sa.select(self._s.c.user_id).where(signed_in).distinct()
        # Sorted here: a database sorts by its collation (PostgreSQL's may put "alice" before
        # "Bob"), and the contract promises one order everywhere.
        return sorted(str(user_id) for user_id in result.scalars())

    def stats(self, now: float) -> Plan[SessionStats]:
        """One aggregate query over the sessions table (no JSON parsed: the transport is matched
        by the database's own regular expressions, see :mod:`coatcheck._core.stats`)."""
        s = self._s
        live = s.c.expires_at > now

        def count(*conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
            return sa.func.coalesce(sa.func.sum(sa.case((sa.and_(*conditions), 1), else_=0)), 0)

        # Each column is labelled with the SessionStats field it answers.
        result = yield sa.select(
            count(live).label("live"),
            count(live, s.c.user_id.is_not(None)).label("signed_in"),
            sa.func.count(sa.distinct(sa.case((live, s.c.user_id)))).label("users"),
            count(live, s.c.record.regexp_match(transport_pattern("cookie"))).label("cookie"),
            count(live, s.c.record.regexp_match(transport_pattern("bearer"))).label("bearer"),
            count(s.c.expires_at <= now).label("expired"),
        )
        return SessionStats(**{name: int(n) for name, n in result.one()._mapping.items()})

    def purge_expired(self, now: float, batch: int) -> Plan[int]:
        """Delete up to ``batch`` expired sessions and return how many went.

        Finished hit windows are dropped too, up to ``batch`` of them and not counted: a finished
        window means the same as no window, so they are dead weight.
        """
        if batch < 1:  # checked now, not when the plan first runs
            raise ValueError(f"batch must be at least 1, got {batch}")
        return self._purge(now, batch)

    def _purge(self, now: float, batch: int) -> Plan[int]:
        deleted = yield from self._delete_expired(
            self._s, self._s.c.id, self._s.c.expires_at, now, batch
        )
        yield from self._delete_expired(
            self._h, self._h.c.key, self._h.c.window_ends_at, now, batch
        )
        return deleted

    def _delete_expired(
        self,
        table: sa.Table,
        key: sa.Column[Any],
        deadline: sa.Column[Any],
        now: float,
        batch: int,
    ) -> Plan[int]:
        expired = deadline <= now
        if self.family == "mysql":
            # MySQL refuses LIMIT in an IN (subquery). Read a batch of ids without locking, then
            # delete those by primary key; re-checking the deadline spares a row that a request
            # refreshed in between, and deleting by key takes no range locks on the index.
            found = yield sa.select(key).where(expired).limit(batch)
            ids = list(found.scalars())
            if not ids:
                return 0
            result = yield sa.delete(table).where(key.in_(ids), expired)
            return result.rowcount
        doomed = sa.select(key).where(expired).limit(batch)
        if self.family == "postgresql":
            # Two purgers running at once (cron on several hosts) take different rows instead of
            # queueing on each other's locks.
            doomed = doomed.with_for_update(skip_locked=True)
        result = yield sa.delete(table).where(key.in_(doomed.scalar_subquery()))
        return result.rowcount

    def _upsert_hit(self) -> Executable:
        """``hit`` for PostgreSQL and SQLite: one upsert that returns the new count, prebuilt
        with bind parameters ``key``, ``now`` and ``ends`` (see :meth:`hit`). A finished window
        starts over at 1; a running one counts on (both assignments read the row's old
        ``window_ends_at``)."""
        h = self._h
        now, ends = sa.bindparam("now", type_=sa.Float), sa.bindparam("ends", type_=sa.Float)
        finished = h.c.window_ends_at <= now
        postgres = self.family == "postgresql"
        upsert = postgresql_dialect.insert(h) if postgres else sqlite_dialect.insert(h)
        return (
            upsert.values(key=sa.bindparam("key"), count=1, window_ends_at=ends)
            .on_conflict_do_update(
                index_elements=[h.c.key],
                set_={
                    "count": sa.case((finished, 1), else_=h.c.count + 1),
                    "window_ends_at": sa.case((finished, ends), else_=h.c.window_ends_at),
                },
            )
            .returning(h.c.count, h.c.window_ends_at)
        )

    def hit(self, key: str, now: float, window: float) -> Plan[tuple[int, float]]:
        ends = now + window
        if self._hit is not None:  # PostgreSQL, SQLite: one upsert with RETURNING
            result = yield Bound(self._hit, {"key": key, "now": now, "ends": ends})
        else:
            # MySQL has no RETURNING: the upsert and a read of what it wrote share a transaction.
            h = self._h
            finished = h.c.window_ends_at <= now
            # A finished window starts over at 1; a running one counts on. Both assignments read
            # the row's old window_ends_at (MySQL evaluates them in order, hence count first).
            count = sa.case((finished, 1), else_=h.c.count + 1)
            window_ends_at = sa.case((finished, ends), else_=h.c.window_ends_at)
            yield BEGIN
            yield (
                mysql_dialect.insert(h)
                .values({"key": key, "count": 1, "window_ends_at": ends})
                .on_duplicate_key_update([("count", count), ("window_ends_at", window_ends_at)])
            )
            # The upsert left this transaction holding the row's lock, so this read sees
            # exactly what the upsert wrote, whatever other requests are doing.
            result = yield sa.select(h.c.count, h.c.window_ends_at).where(h.c.key == key)
            yield COMMIT
        count_now, window_end = tuple(result.one())
        return int(count_now), float(window_end)

    def clear_hits(self, key: str) -> Plan[None]:
        yield Bound(self._clear_hits, {"key": key})
