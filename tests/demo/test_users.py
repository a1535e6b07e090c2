"""The demo's user table: a rehash on login never undoes a password change."""

from __future__ import annotations

from pathlib import Path

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
