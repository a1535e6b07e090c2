"""Store URLs: one string configures the store for the middleware, the CLI and the demo.

Every option of a store works in its URL, typed; what the store does not know goes to the
driver when the driver takes it; anything else fails at start-up, naming itself.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import pytest
import redis.asyncio

from coatcheck.errors import ConfigurationError
from coatcheck.stores import _sql_engine
from coatcheck.stores import redis as redis_module
from coatcheck.stores.base import AsyncStore
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.stores.redis import AsyncRedisStore, RedisStore
from coatcheck.stores.sql import AsyncSQLStore, SQLStore
from coatcheck.stores.url import async_store_from_url, redact, sync_store_from_url
from tests.backends.adapt import AsyncOverSync
from tests.backends.redis import delete_prefix_async, new_prefix, shared_url
from tests.backends.sql import PLACES, Kind

from .test_contract import make

ROOT = Path(__file__).resolve().parents[2]
Twin = Literal["async", "sync"]
TWINS: list[Twin] = ["async", "sync"]
SQL_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]
# A parameter each driver takes (kept in the URL) beside the store's own options.
DRIVER_PARAMETER = {
    "sqlite": {"timeout": "3"},
    "postgres": {"target_session_attrs": "any"},
    "mysql": {"charset": "utf8mb4"},
}


def open_store(twin: Twin, url: str, **options: Any) -> tuple[AsyncStore, Any]:
    """The store for ``url`` as an async store (the sync twin through threads), and itself."""
    if twin == "async":
        store = async_store_from_url(url, **options)
        return store, store
    sync = sync_store_from_url(url, **options)
    return AsyncOverSync(sync), sync


def both_twins(url: str, **options: Any) -> None:
    """Build ``url`` with both twins, closing what was built (for URLs that must fail)."""
    async_store_from_url(url, **options)
    sync_store_from_url(url, **options).close()


# --- every option in the URL ---------------------------------------------------------------------


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_sql_store_options_and_driver_parameters_ride_in_the_url(
    kind: Kind, twin: Twin
) -> None:
    """A SQL store URL's table_prefix, create_schema and pool options reach the store, and a
    parameter of the database driver beside them still reaches the driver: the store works on
    the real database, in tables named after the URL's prefix."""
    async with PLACES[kind]() as place:
        query = {
            "table_prefix": place.table_prefix,
            "create_schema": "1",
            "pool_size": "2",
            "statement_timeout": "4",
            **DRIVER_PARAMETER[kind],
        }
        url = place.url.update_query_dict(query).render_as_string(hide_password=False)
        store, inner = open_store(twin, url)
        try:
            assert isinstance(inner, AsyncSQLStore | SQLStore)
            assert inner.tables.sessions.name == f"{place.table_prefix}sessions"
            assert inner.engine.pool.size() == 2  # type: ignore[attr-defined]
            assert set(DRIVER_PARAMETER[kind]) <= set(inner.engine.url.query)
            assert not {"table_prefix", "pool_size"} & set(inner.engine.url.query)
            record = make(user_id="u1")
            assert await store.put(record, 0)
            assert await store.get(record.id) == record
            assert [r.id for r in await store.sessions_of("u1")] == [record.id]
        finally:
            await store.close()


async def test_redis_store_options_and_client_options_ride_in_the_url() -> None:
    """A Redis URL's prefix, pool, timeout and cache options reach the store, and redis-py's own
    connection options beside them reach redis-py; the store works on the real server."""
    prefix = new_prefix()
    url = (
        f"{shared_url()}?prefix={prefix}&max_connections=4&socket_timeout=1.5"
        "&client_cache=0&client_name=coatcheck-url-test&health_check_interval=5"
    )
    for twin in TWINS:
        store, inner = open_store(twin, url)
        try:
            assert isinstance(inner, AsyncRedisStore | RedisStore)
            assert inner.keys.prefix == prefix
            assert inner.cache is None
            pool = inner.client.connection_pool
            assert pool.max_connections == 4
            if isinstance(inner, AsyncRedisStore):  # the async store bounds round trips itself
                assert (inner.timeout, pool.connection_kwargs["socket_timeout"]) == (1.5, None)
            else:
                assert pool.connection_kwargs["socket_timeout"] == 1.5
            assert pool.connection_kwargs["client_name"] == "coatcheck-url-test"
            record = make(user_id="u1")
            assert await store.put(record, 0)
            assert await store.get(record.id) == record
        finally:
            await store.close()
    client = redis.asyncio.Redis.from_url(shared_url())
    await delete_prefix_async(client, prefix)
    await client.aclose()


def test_a_cluster_url_takes_the_store_options_too() -> None:
    """redis+cluster:// carries the same store options as a standalone URL."""
    parsed = redis_module.parse_redis_url(
        "redis+cluster://a:7000,b:7000?prefix=p:&max_connections=8&socket_timeout=1"
        "&socket_connect_timeout=0.5&client_cache=0"
    )
    assert (parsed.prefix, parsed.max_connections) == ("p:", 8)
    assert (parsed.socket_timeout, parsed.socket_connect_timeout) == (1.0, 0.5)
    assert parsed.client_cache == redis_module.ClientCacheConfig(enabled=False)


def test_every_from_url_keyword_is_a_url_option() -> None:
    """Each keyword option of the stores' from_url has its URL option, and the defaults the URL
    yields to are the signatures' own."""
    for store in (AsyncSQLStore, SQLStore):
        parameters = dict(inspect.signature(store.from_url).parameters)
        del parameters["url"]
        assert set(parameters) == set(_sql_engine.SQLITE_URL_OPTIONS)  # mmap_size: SQLite's
        assert {name: p.default for name, p in parameters.items()} == dict(_sql_engine._DEFAULTS)
    cache_options = {"client_cache", "client_cache_size", "client_cache_bytes", "client_cache_ttl"}
    for redis_store in (AsyncRedisStore, RedisStore):
        parameters = dict(inspect.signature(redis_store.from_url).parameters)
        names = set(parameters) - {"url", "client_options"}
        assert names | cache_options == set(redis_module.URL_OPTIONS)
        timeouts = {parameters[n].default for n in ("socket_timeout", "socket_connect_timeout")}
        assert timeouts == {redis_module.DEFAULT_TIMEOUT}


# --- what neither the store nor the driver takes ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "named", "listed"),
    [
        ("sqlite:///{tmp}/s.db?tabel_prefix=app_", "'tabel_prefix'", "table_prefix"),
        ("sqlite:///{tmp}/s.db?timeout=2&mode=ro", "'mode'", "pool_size"),
        ("postgresql://u@db.invalid/app?table_prefx=app_", "'table_prefx'", "table_prefix"),
        ("postgresql://u@db.invalid/app?sslmode=require&bogus=1", "'bogus'", "statement_timeout"),
        ("mysql://u@db.invalid/app?charset=utf8mb4&bogus=1", "'bogus'", "create_schema"),
        ("redis://127.0.0.1:1/0?prefx=app:", "'prefx'", "prefix"),
        ("unix:///tmp/redis.sock?host=x", "'host'", "client_cache"),
        ("redis+cluster://127.0.0.1:1?bogus=1", "'bogus'", "max_connections"),
        ("memory://?pool_size=3", "'pool_size'", "takes none"),
        ("sealed://?revocations=" + quote("sqlite:///x.db?bogus=1", safe=""), "'bogus'", "pool"),
    ],
)
def test_unknown_url_options_fail_at_start_up(
    url: str, named: str, listed: str, tmp_path: Path
) -> None:
    """An option neither the store nor its driver takes is a ConfigurationError from either
    twin, before anything connects, naming the option and listing the store's own."""
    for build in (async_store_from_url, sync_store_from_url):
        with pytest.raises(ConfigurationError, match=named) as raised:
            build(url.format(tmp=tmp_path))
        assert listed in str(raised.value)


def test_the_async_drivers_own_parameters_are_checked_against_it() -> None:
    """A libpq parameter asyncpg does not take fails at start-up for the async twin (it would
    fail every connection), while the sync twin's psycopg takes it."""
    url = "postgresql://u@db.invalid/app?application_name=shop"
    store = sync_store_from_url(url)
    assert store.engine.url.query["application_name"] == "shop"  # type: ignore[attr-defined]
    store.close()
    with pytest.raises(ConfigurationError, match=r"'application_name'.*asyncpg"):
        async_store_from_url(url)


async def test_unknown_options_in_code_fail_at_start_up() -> None:
    """A keyword option the store or its client does not take fails at start-up too."""
    with pytest.raises(ConfigurationError, match="'pool_size'"):
        async_store_from_url("memory://", pool_size=3)
    for build in (AsyncRedisStore.from_url, RedisStore.from_url):
        with pytest.raises(ConfigurationError, match="'client_nam'"):
            build("redis://127.0.0.1:1/0", client_nam="x")


@pytest.mark.parametrize(
    "query",
    [
        "pool_size=many",
        "pool_size=0",
        "max_overflow=-1",
        "pool_timeout=soon",
        "statement_timeout=nan",
        "create_schema=maybe",
        "table_prefix=1abc",
        "table_prefix=x;%20DROP%20TABLE%20users",
        "pool_size=2&pool_size=3",
    ],
)
def test_bad_sql_option_values_fail_at_start_up(query: str, tmp_path: Path) -> None:
    """A value an option cannot take, or an option given twice, is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        both_twins(f"sqlite:///{tmp_path}/s.db?{query}")


@pytest.mark.parametrize(
    "query",
    [
        "max_connections=x",
        "socket_timeout=inf",
        "client_cache=maybe",
        "client_cache_size=0",
        "prefix=a{b}:",
        "prefix=a:&prefix=b:",
    ],
)
def test_bad_redis_option_values_fail_at_start_up(query: str) -> None:
    """A bad value for a Redis store option is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        both_twins(f"redis://127.0.0.1:1/0?{query}")


# --- the URL and the keyword arguments together --------------------------------------------------


def test_a_keyword_argument_wins_over_the_url(tmp_path: Path) -> None:
    """A keyword argument other than its default wins over the URL's option; one left at its
    default lets the URL's apply."""
    url = f"sqlite:///{tmp_path}/s.db?pool_size=3"
    chosen = sync_store_from_url(url, pool_size=7)
    assert chosen.engine.pool.size() == 7  # type: ignore[attr-defined]
    chosen.close()
    from_url = sync_store_from_url(url, pool_size=5)
    assert from_url.engine.pool.size() == 3  # type: ignore[attr-defined]
    from_url.close()
    redis_store = RedisStore.from_url("redis://127.0.0.1:1/0?socket_timeout=1", socket_timeout=3)
    assert redis_store.client.connection_pool.connection_kwargs["socket_timeout"] == 3
    redis_store.close()


def test_two_different_prefixes_are_refused(tmp_path: Path) -> None:
    """A table or key prefix in the URL and a different one in code is a ConfigurationError
    (the wrong one would address another app's sessions); the same one twice is fine."""
    url = f"sqlite:///{tmp_path}/s.db?table_prefix=app_"
    with pytest.raises(ConfigurationError, match="two different values for table_prefix"):
        sync_store_from_url(url, table_prefix="other_")
    same = sync_store_from_url(url, table_prefix="app_")
    assert same.tables.sessions.name == "app_sessions"  # type: ignore[attr-defined]
    same.close()
    with pytest.raises(ConfigurationError, match="two different values for prefix"):
        async_store_from_url("redis://127.0.0.1:1/0?prefix=a:", prefix="b:")


def test_statement_timeout_none_in_the_url_leaves_the_servers_limits() -> None:
    """``statement_timeout=none`` is the URL's spelling of ``statement_timeout=None``."""
    assert (
        _sql_engine.store_url("sqlite://?statement_timeout=none").engine.statement_timeout is None
    )
    assert _sql_engine.store_url("sqlite://?statement_timeout=2").engine.statement_timeout == 2.0
    assert _sql_engine.store_url("sqlite://").engine.statement_timeout == 5.0


# --- families and redaction ----------------------------------------------------------------------


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
    """redact replaces a URL's password, and leaves a URL without one as it is."""
    assert redact("postgresql://app:hunter2@db/x") == "postgresql://app:***@db/x"
    assert redact("redis://cache:6379/0") == "redis://cache:6379/0"


# --- docs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "options"),
    [
        ("sqlite.md", _sql_engine.SQLITE_URL_OPTIONS),
        ("postgresql.md", _sql_engine.URL_OPTIONS),
        ("mysql.md", _sql_engine.URL_OPTIONS),
        ("redis.md", redis_module.URL_OPTIONS),
    ],
)
def test_each_store_page_has_a_row_for_every_url_option(page: str, options: Any) -> None:
    """The URL options table of each store page lists every option the store parses."""
    text = (ROOT / "docs" / "stores" / page).read_text()
    rows = set(re.findall(r"^\| `(\w+)=", text, flags=re.MULTILINE))
    assert set(options) == rows
