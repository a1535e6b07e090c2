"""The demo's user table (SQLAlchemy Core, any SQL URL). Not part of the library's API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = sa.MetaData()
users = sa.Table(
    "coatcheck_demo_users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
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
        self.engine: AsyncEngine = create_async_engine(async_url(url), pool_pre_ping=True)

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all, checkfirst=True)

    async def close(self) -> None:
        await self.engine.dispose()

    async def add(self, email: str, name: str, password_hash: str) -> User | None:
        user = User(str(uuid.uuid4()), email, name, password_hash)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    users.insert().values(
                        id=user.id, email=email, name=name, password_hash=password_hash
                    )
                )
        except IntegrityError:
            return None
        return user

    async def _one(self, clause: sa.ColumnElement[bool]) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(clause))).first()
        return User(row.id, row.email, row.name, row.password_hash) if row is not None else None

    async def by_id(self, user_id: str) -> User | None:
        return await self._one(users.c.id == user_id)

    async def by_email(self, email: str) -> User | None:
        return await self._one(users.c.email == email)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                users.update().where(users.c.id == user_id).values(password_hash=password_hash)
            )
