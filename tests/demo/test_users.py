"""The demo's user table: a rehash on login never undoes a password change."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from coatcheck.demo.users import UserRepository


async def test_a_rehash_on_login_does_not_bring_back_the_old_password(tmp_path: Path) -> None:
    """Found by reading the demo during an attack: a login checks the old hash, the password
    changes meanwhile, then the login stores its rehash of the *old* password. Stored only over
    the hash it checked, the change wins."""
    users = UserRepository(f"sqlite:///{tmp_path / 'users.db'}")
    await users.create_schema()
    try:
        user = await users.add("ann@example.com", "Ann", "old-hash")
        assert user is not None
        await users.set_password_hash(user.id, "new-hash")  # the password change
        stored = await users.set_password_hash(user.id, "rehash-of-old", replacing="old-hash")
        assert stored is False
        after = await users.by_id(user.id)
        assert after is not None
        assert after.password_hash == "new-hash"
        assert await users.set_password_hash(user.id, "rehash-of-new", replacing="new-hash")
        again = await users.by_id(user.id)
        assert again is not None
        assert again.password_hash == "rehash-of-new"
    finally:
        await users.close()


async def test_two_demos_creating_the_user_table_at_once_both_start(tmp_path: Path) -> None:
    """Found by attack round 11: two demo processes started together on a new file both saw no
    users table; the one that lost the race died on "table already exists". Here the other
    process wins between this one's look and its CREATE TABLE; the loser looks again and
    starts."""
    path = tmp_path / "users.db"
    users = UserRepository(f"sqlite:///{path}")
    winner = UserRepository(f"sqlite:///{path}")
    raced: list[str] = []

    def other_process_first(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE") and not raced:
            raced.append(statement)
            with sqlite3.connect(path) as other:
                other.execute(statement)  # the same table, created first by "another process"

    sa.event.listen(users.engine.sync_engine, "before_cursor_execute", other_process_first)
    try:
        await users.create_schema()
        assert raced  # the race happened
        await winner.create_schema()
        user = await users.add("ann@example.com", "Ann", "hash")
        assert user is not None
        assert await winner.by_id(user.id) == user
    finally:
        await users.close()
        await winner.close()
