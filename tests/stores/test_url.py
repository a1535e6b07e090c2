"""Store URLs: one string configures the store for the middleware, the CLI and the demo."""

from __future__ import annotations

import pytest

from coatcheck.errors import ConfigurationError
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.stores.redis import AsyncRedisStore
from coatcheck.stores.sql import AsyncSQLStore, SQLStore
from coatcheck.stores.url import _split_options, async_store_from_url, redact, sync_store_from_url


def test_pool_options_are_taken_from_the_query() -> None:
    """Known pool/timeout options are parsed and removed; other parameters stay in the URL."""
    url, options = _split_options(
        "postgresql://h/db?pool_size=20&sslmode=require&pool_timeout=1.5", "sql"
    )
    assert url == "postgresql://h/db?sslmode=require"
    assert options == {"pool_size": 20, "pool_timeout": 1.5}
    url, options = _split_options("redis://h:6379/0?prefix=app:&max_connections=7", "redis")
    assert url == "redis://h:6379/0?prefix=app%3A"
    assert options == {"max_connections": 7}


def test_bad_option_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        _split_options("sqlite:///x.db?pool_size=many", "sql")


async def test_sqlite_url_builds_a_sized_pool(tmp_path: object) -> None:
    """A SQLite URL with pool options gives a SQL store whose engine uses them."""
    store = async_store_from_url(f"sqlite:///{tmp_path}/s.db?pool_size=3")
    assert isinstance(store, AsyncSQLStore)
    await store.close()
    sync = sync_store_from_url(f"sqlite:///{tmp_path}/s.db?pool_size=3&max_overflow=1")
    assert isinstance(sync, SQLStore)
    assert sync.engine.pool.size() == 3  # type: ignore[attr-defined]
    sync.close()


async def test_families() -> None:
    """memory://, redis:// and SQL schemes pick their store; unknown schemes are refused."""
    assert isinstance(async_store_from_url("memory://"), AsyncMemoryStore)
    assert isinstance(sync_store_from_url("memory://"), MemoryStore)
    redis_store = async_store_from_url("redis://127.0.0.1:6379/0?prefix=t:&max_connections=2")
    assert isinstance(redis_store, AsyncRedisStore)
    await redis_store.close()
    for bad in ("ftp://x", "nothing", "mongodb://x"):
        with pytest.raises(ConfigurationError):
            async_store_from_url(bad)


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://app:hunter2@db/x") == "postgresql://app:***@db/x"
    assert redact("redis://cache:6379/0") == "redis://cache:6379/0"
