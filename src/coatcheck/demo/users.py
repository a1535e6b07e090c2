"""The demo's user table (SQLAlchemy Core, any SQL URL). Not part of the library's API.

Emails are stored in their canonical form (:func:`coatcheck.throttling.canonical_login_name`:
trimmed, NFKC, case-folded) and compared byte for byte on every database: MariaDB/MySQL's
default collations are case- and accent-insensitive (``àlice`` = ``alice``), SQLite's and
PostgreSQL's are not, so the column is ``utf8mb4_bin`` there. One spelling is then one account,
and the unique index means the same thing, on all three.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import StoreUnavailableError
from ..stores.sql import create_all_racing, install_connection_checks

TIMEOUT = 2.0  # seconds, like the session store's default


@asynccontextmanager
async def _unavailable_on_failure() -> AsyncIterator[None]:
    """Database trouble in the user table is an outage (503), never a 500."""
    try:
        async with asyncio.timeout(TIMEOUT):
            yield
    except IntegrityError:
        raise
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise StoreUnavailableError(f"the demo's user table failed: {type(exc).__name__}") from exc


metadata = sa.MetaData()
users = sa.Table(
    "coatcheck_demo_users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "email",
        sa.String(320).with_variant(
            mysql.VARCHAR(320, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
        ),
        nullable=False,
        unique=True,
    ),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("password_hash", sa.String(512), nullable=False),
)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    password_hash: str

    def public(self) -> dict[str, str]:
        return {"id": self.id, "email": self.email, "name": self.name}


def async_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+")[0]
    driver = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "mysql": "mysql+asyncmy",
        "mariadb": "mysql+asyncmy",
    }.get(base)
    if driver is None:
        raise ValueError(f"the demo's users need a SQL URL, not {url!r}")
    if "+" in scheme and base != "postgres":
        return url
    return f"{driver}{sep}{rest}"


class UserRepository:
    def __init__(self, url: str) -> None:
        # Like the session store's engine: single statements in autocommit mode (no ROLLBACK
        # to wait for after a timeout; asyncpg's pre-ping otherwise wraps its ping in a
        # transaction whose rollback waits on a hung server), and a connection that timed out
        # dropped at once, so a hung database costs a request TIMEOUT and no more.
        self.engine: AsyncEngine = create_async_engine(
            async_url(url), pool_pre_ping=True, hide_parameters=True, isolation_level="AUTOCOMMIT"
        )
        install_connection_checks(self.engine.sync_engine, pre_ping=True)

    async def create_schema(self) -> None:
        # Two demo processes started at once on a new file both find no table (attack round
        # 11: one of them died on "table already exists"): the loser looks again.
        async with self.engine.connect() as conn:
            await conn.run_sync(create_all_racing, metadata)

    async def close(self) -> None:
        await self.engine.dispose()

    async def add(self, email: str, name: str, password_hash: str) -> User | None:
        """Insert a user; ``None`` when the (canonical) email is taken."""
        user = User(str(uuid.uuid4()), email, name, password_hash)
        try:
            async with _unavailable_on_failure(), self.engine.begin() as conn:
                await conn.execute(
                    users.insert().values(
                        id=user.id, email=email, name=name, password_hash=password_hash
                    )
                )
        except IntegrityError:
            return None
        return user

    async def _one(self, clause: sa.ColumnElement[bool]) -> User | None:
        async with _unavailable_on_failure(), self.engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(clause))).first()
        return User(row.id, row.email, row.name, row.password_hash) if row is not None else None

    async def by_id(self, user_id: str) -> User | None:
        return await self._one(users.c.id == user_id)

    async def by_email(self, email: str) -> User | None:
        """The user with this canonical email, or ``None``."""
        return await self._one(users.c.email == email)

    async def set_password_hash(
        self, user_id: str, password_hash: str, *, replacing: str | None = None
    ) -> bool:
        """Store ``password_hash``; with ``replacing``, only while the stored hash is still that
        one (a rehash on login must not undo a password change made meanwhile). True if stored."""
        clause = users.c.id == user_id
        if replacing is not None:
            clause = sa.and_(clause, users.c.password_hash == replacing)
        async with _unavailable_on_failure(), self.engine.begin() as conn:
            result = await conn.execute(
                users.update().where(clause).values(password_hash=password_hash)
            )
        return bool(result.rowcount)
