"""Redis session stores, standalone or Cluster (Valkey compatible): async and sync twins.

:class:`AsyncRedisStore` runs on :mod:`redis.asyncio` and :class:`RedisStore` on :mod:`redis`.
Both run the same plans from :mod:`coatcheck.stores._redis_plans` (on the key layout of
``_redis_keys`` and the Lua scripts of ``_redis_scripts``); the twins only send each batch of
commands and differ by ``await``.

Round trips per method (a round trip is one pipeline; on Cluster a pipeline is split per node and
the nodes answer in parallel):

=================  ====================================================================
``get``            0 when the client cache holds the record (on by default), else 1 (``HGET``)
``put``            1: the CAS script alone while the session's index entries cover the write,
                   else its index scripts then the CAS script (rarely 2: see ``_redis_plans``)
``replace``        1 (the new record's insert and the old one's conditional delete), +1 for
                   the cache's barrier when the old record was signed in; 2 when one half
                   has to be undone
``delete``         1 on one server when this process read the session first; else 1, plus 1
                   when a deleted session was signed in (its user index); always 2 with the
                   cache on (the barrier: see ``_redis_cache``)
``sessions_of``    2, plus 1 when stale index entries were met
``user_ids``       1 per 1000 users (``ZSCAN``), plus 2
``purge_expired``  2 or 3 per pass; passes repeat until ``batch`` deleted or nothing is due
``stats``          1 per 1000 entries of the largest expiry shard, plus 1 per 500 records
``hit``            1; ``clear_hits`` 1
=================  ====================================================================

After a server restart the first command using a Lua script pays one more round trip (NOSCRIPT,
then EVAL). Every Redis failure becomes :class:`~coatcheck.errors.StoreUnavailableError`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Self, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from .._core.record import SessionRecord
from .._core.stats import SessionStats
from .._deadline import Deadlines
from .._patience import CALLER
from ..errors import ConfigurationError, StoreUnavailableError
from . import _redis_plans as plans
from ._redis_cache import ClientCache, ClientCacheConfig, Target
from ._redis_keys import DEFAULT_PREFIX, KeyLayout
from ._redis_scripts import Command
from ._redis_stats import stats_plan
from .url import (
    Parser,
    parse_count,
    parse_flag,
    parse_seconds,
    parse_text,
    pick,
    take_options,
    unknown_option_error,
)

__all__ = [
    "AsyncRedisStore",
    "ClientCache",
    "ClientCacheConfig",
    "ClientCacheTarget",
    "RedisStore",
    "RedisURL",
    "parse_redis_url",
]

ClientCacheTarget = Target
"""Where a :class:`ClientCache` opens its channels (for stores built on a client you pass in)."""

T = TypeVar("T")

AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"

DEFAULT_TIMEOUT = 2.0
_STANDALONE_SCHEMES = frozenset({"redis", "rediss", "unix"})
_CLUSTER_SCHEMES = {
    "redis+cluster": False,
    "redis-cluster": False,
    "rediss+cluster": True,
    "rediss-cluster": True,
}
# RedisClusterException (and CrossSlotTransactionError, SlotNotCoveredError) is not a RedisError;
# in Python 3.11 asyncio.TimeoutError is TimeoutError, an OSError, listed for clarity.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    asyncio.TimeoutError,
)


def _unavailable(method: str, exc: BaseException) -> StoreUnavailableError:
    # redis-py 8's exception reprs name only a category ("network:ConnectionError").
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return StoreUnavailableError(f"Redis session store failed on {method}: {detail}")


# --- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RedisURL:
    """A parsed store URL.

    ``client_url`` is the URL handed to redis-py for a standalone server (our own ``prefix``
    parameter removed); ``nodes`` are the startup nodes of a cluster.
    """

    cluster: bool
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None
    prefix: str | None
    client_url: str
    unix_path: str | None = None
    client_cache: ClientCacheConfig | None = None
    """The ``client_cache*`` parameters of the URL, or ``None`` when it names none."""
    max_connections: int | None = None
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = None


URL_OPTIONS: Mapping[str, Parser] = MappingProxyType(
    {
        "prefix": parse_text,
        "client_cache": parse_flag,
        "client_cache_size": parse_count,
        "client_cache_bytes": parse_count,
        "client_cache_ttl": parse_seconds,
        "max_connections": parse_count,
        "socket_timeout": parse_seconds,
        "socket_connect_timeout": parse_seconds,
    }
)
"""The Redis stores' own options in a store URL (every form); a standalone URL's other
parameters go to redis-py as connection options, when redis-py takes them."""

# The client cache options in a URL, and the ClientCacheConfig field each sets.
_CACHE_FIELDS = {
    "client_cache": "enabled",
    "client_cache_size": "size",
    "client_cache_bytes": "max_bytes",
    "client_cache_ttl": "max_age",
}


def _cache_config(options: Mapping[str, Any]) -> ClientCacheConfig | None:
    settings = {field: options[name] for name, field in _CACHE_FIELDS.items() if name in options}
    return ClientCacheConfig(**settings) if settings else None


def parse_redis_url(url: str) -> RedisURL:
    """Parse ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` store URLs.

    Forms: ``redis://[user:password@]host[:port][/db][?prefix=app:]``, ``rediss://`` for TLS, and
    ``redis+cluster://[user:password@]host:port[,host2:port2...][?prefix=app:]`` for a cluster
    (also spelled ``redis-cluster://``; ``rediss+cluster://`` for TLS). Every form also takes
    ``client_cache=0|1``, ``client_cache_size=<records>``, ``client_cache_bytes=<bytes>`` and
    ``client_cache_ttl=<seconds>``
    (:class:`ClientCacheConfig`), ``max_connections``, ``socket_timeout`` and
    ``socket_connect_timeout`` (:data:`URL_OPTIONS`). A standalone URL's other parameters stay
    in ``client_url`` for redis-py; a cluster URL takes no other query parameters (pass client
    options to ``from_url`` instead). Raises :class:`~coatcheck.errors.ConfigurationError` for
    anything else.
    """
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if not rest or (scheme not in _STANDALONE_SCHEMES and scheme not in _CLUSTER_SCHEMES):
        raise ConfigurationError(
            f"unsupported Redis URL {_redact(url)!r}: use redis://, rediss://, unix:// "
            "or redis+cluster://"
        )
    parts = urlsplit(url)
    options, others = take_options(
        parse_qsl(parts.query, keep_blank_values=True), URL_OPTIONS, "Redis"
    )
    ours: dict[str, Any] = {
        "prefix": options.get("prefix"),
        "client_cache": _cache_config(options),
        "max_connections": options.get("max_connections"),
        "socket_timeout": options.get("socket_timeout"),
        "socket_connect_timeout": options.get("socket_connect_timeout"),
    }
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)

    if scheme in _CLUSTER_SCHEMES:
        if others:
            raise unknown_option_error(
                {name for name, _ in others},
                "Redis Cluster",
                URL_OPTIONS,
                "; a cluster URL takes no other: pass redis-py client options to from_url",
            )
        if parts.path not in ("", "/", "/0"):
            raise ConfigurationError("Redis Cluster has only database 0")
        nodes = tuple(_host_port(node) for node in hosts.split(","))
        return RedisURL(
            cluster=True,
            tls=_CLUSTER_SCHEMES[scheme],
            nodes=nodes,
            db=0,
            username=username,
            password=password,
            client_url="",
            **ours,
        )

    # Keep the URL's own text (urlunsplit would turn unix:///path into unix:/path).
    base = url.split("?", 1)[0].split("#", 1)[0]
    client_url = f"{base}?{urlencode(others)}" if others else base
    # The database: ?db= wins (as in redis-py), then the path; a unix:// path is the socket's.
    db_values = [value for name, value in others if name == "db"]
    path_db = "" if scheme == "unix" else parts.path.strip("/")
    raw_db = db_values[0] if db_values else path_db or "0"
    if not raw_db.isdigit():
        raise ConfigurationError(f"Redis database must be a number, not {raw_db!r}")
    nodes = () if scheme == "unix" else (_host_port(hosts),)
    return RedisURL(
        cluster=False,
        tls=scheme == "rediss",
        nodes=nodes,
        db=int(raw_db),
        username=username,
        password=password,
        client_url=client_url,
        unix_path=parts.path if scheme == "unix" else None,
        **ours,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(node: str) -> tuple[str, int]:
    node = node.strip()
    if node.startswith("["):  # [ipv6]:port
        host, _, tail = node[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = node.rpartition(":") if ":" in node else (node, "", "")
    if not host:
        raise ConfigurationError(f"a Redis URL node needs a host, not {node!r}")
    if not port_text:
        return host, 6379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"bad port in Redis URL node {node!r}")
    return host, int(port_text)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


# Retry once, at once, on a broken connection only (a pooled socket the server closed). redis-py's
# default (10 retries with backoff, timeouts included) turns an outage into seconds of hanging and
# can run a non-idempotent command twice after a timeout.
def _async_retry() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(NoBackoff(), 1, (RedisConnectionError,))


def _sync_retry() -> redis.retry.Retry:
    return redis.retry.Retry(NoBackoff(), 1, (RedisConnectionError,))


@dataclass(frozen=True, kw_only=True, slots=True)
class _ClientSettings:
    """What ``from_url`` builds its client from: the URL's options settled against the keyword
    arguments (one that is not its default wins; two different prefixes are an error)."""

    target: RedisURL
    prefix: str
    max_connections: int | None
    socket_timeout: float
    socket_connect_timeout: float
    options: dict[str, Any]
    """Keyword arguments for the cluster client, or for the standalone connection pool."""


def _client_settings(
    url: str,
    *,
    prefix: str | None,
    socket_timeout: float,
    socket_connect_timeout: float,
    max_connections: int | None,
    client_options: Mapping[str, Any],
) -> _ClientSettings:
    target = parse_redis_url(url)
    from_url = {
        name: value
        for name, value in (
            ("prefix", target.prefix),
            ("max_connections", target.max_connections),
            ("socket_timeout", target.socket_timeout),
            ("socket_connect_timeout", target.socket_connect_timeout),
        )
        if value is not None
    }
    store_prefix = pick(from_url, "prefix", prefix, None, agree=True)
    max_connections = pick(from_url, "max_connections", max_connections, None)
    socket_timeout = pick(from_url, "socket_timeout", socket_timeout, DEFAULT_TIMEOUT)
    socket_connect_timeout = pick(
        from_url, "socket_connect_timeout", socket_connect_timeout, DEFAULT_TIMEOUT
    )
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    if target.cluster:
        options.update(username=target.username, password=target.password, ssl=target.tls)
        if max_connections is not None:
            options["max_connections"] = max_connections
    elif max_connections is not None:
        # A blocking pool: at the limit, wait up to socket_timeout for a free connection rather
        # than fail at once.
        options.update(max_connections=max_connections, timeout=socket_timeout)
    options.update(client_options)
    return _ClientSettings(
        target=target,
        prefix=DEFAULT_PREFIX if store_prefix is None else store_prefix,
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        options=options,
    )


def _connection_parameters(connection_class: type) -> frozenset[str]:
    """The keyword arguments a redis-py connection class takes: the parameters named along its
    ``__init__`` chain (each passes what it does not name on to the next)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(
        parameter.name
        for cls in connection_class.__mro__
        if cls is not object and "__init__" in cls.__dict__
        for parameter in inspect.signature(cls.__dict__["__init__"]).parameters.values()
        if parameter.kind in kinds
    )


def _check_connection_options(connection_class: type, connection_kwargs: Mapping[str, Any]) -> None:
    """Refuse, at start-up, a URL parameter or client option that redis-py would pass to every
    new connection and that the connection does not take (it would fail each request)."""
    refused = set(connection_kwargs) - _connection_parameters(connection_class)
    if refused:
        raise unknown_option_error(
            refused,
            "Redis",
            URL_OPTIONS,
            "; anything else must be a redis-py connection option: ssl_cert_reqs, client_name, "
            "health_check_interval, ...",
        )


def _client_cache(
    target: RedisURL,
    option: bool | ClientCacheConfig | None,
    prefix: str,
    socket_connect_timeout: float,
) -> ClientCache | None:
    """The store's cache: on by default, except over TLS (the channel speaks plain TCP or a Unix
    socket only, for now); ``option`` (code) wins over the URL."""
    if isinstance(option, ClientCacheConfig):
        config = option
    elif option is not None:
        base = target.client_cache or ClientCacheConfig()
        config = ClientCacheConfig(enabled=option, size=base.size, max_age=base.max_age)
    elif target.client_cache is not None:
        config = target.client_cache
    else:
        config = ClientCacheConfig(enabled=not target.tls)
    if not config.enabled:
        return None
    if target.tls:
        raise ConfigurationError(
            "the Redis client cache does not work over TLS yet: add client_cache=0 to the URL"
        )
    channel_target = Target(
        nodes=target.nodes,
        unix_path=target.unix_path,
        cluster=target.cluster,
        username=target.username,
        password=target.password,
        connect_timeout=socket_connect_timeout,
    )
    # BCAST tracks every key under this prefix: exactly the session records.
    return ClientCache(config, channel_target, KeyLayout(prefix).record_prefix)


def _checked_cache(cache: ClientCache | None, keys: KeyLayout) -> ClientCache | None:
    # A cache tracking another prefix would never hear of this store's writes: refuse it.
    if cache is not None and cache.prefix != keys.record_prefix:
        raise ConfigurationError(
            f"the client cache tracks {cache.prefix!r}, but this store's records are under "
            f"{keys.record_prefix!r}"
        )
    return cache


# --- the stores ----------------------------------------------------------------------------------


class _RedisFromURL:
    """The ``from_url`` of both Redis twins: each builds its own client from the settings."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        socket_connect_timeout: float = DEFAULT_TIMEOUT,
        max_connections: int | None = None,
        client_cache: bool | ClientCacheConfig | None = None,
        **client_options: Any,
    ) -> Self:
        """A store on a new client for ``url`` (see :func:`parse_redis_url`).

        No connection is made until the first command. ``max_connections`` caps the pool (per
        node on a cluster); ``client_cache`` overrides the URL's client cache settings (on by
        default, off over TLS); other keyword arguments go to the redis-py client as they are.
        Every option but ``client_options`` may ride in the URL instead (:data:`URL_OPTIONS`);
        a keyword argument other than its default wins over the URL's, and two different
        prefixes are an error. A URL parameter or client option the connections would not take
        is a :class:`~coatcheck.errors.ConfigurationError` here, not an error on each request.
        """
        return cls._from_settings(
            _client_settings(
                url,
                prefix=prefix,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                max_connections=max_connections,
                client_options=client_options,
            ),
            client_cache,
        )

    @classmethod
    def _from_settings(
        cls, settings: _ClientSettings, client_cache: bool | ClientCacheConfig | None
    ) -> Self:
        raise NotImplementedError  # each twin builds its own client


class AsyncRedisStore(_RedisFromURL):
    """Sessions in Redis or Redis Cluster, for asyncio (``redis.asyncio``).

    Pass a ready client (``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``; the
    caller keeps owning it and closes it) or use :meth:`from_url` (the store owns that client and
    :meth:`close` closes it). ``prefix`` namespaces every key, so several apps can share a server.
    ``client_cache`` serves records this process has seen from memory (see
    :mod:`coatcheck.stores._redis_cache`); :meth:`from_url` builds one by default, and a store
    built on your own client gets one only if you pass
    ``ClientCache(ClientCacheConfig(), ClientCacheTarget(nodes=...), f"{prefix}s:")``.

    ``timeout`` bounds every round trip to Redis, in seconds, in the store itself: one timer per
    event loop for all the calls in flight (:class:`~coatcheck._deadline.Deadlines`), where
    redis-py's own ``socket_timeout`` costs a task and a timer per command (a quarter of the
    instructions of a cached session write). :meth:`from_url` passes its ``socket_timeout``
    here and builds its client without one; a store on your own client keeps that client's
    timeouts and adds none (``timeout=None``).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = False,
        client_cache: ClientCache | None = None,
        timeout: float | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self._deadlines = None if timeout is None else Deadlines(timeout)
        self.keys = KeyLayout(prefix)
        self._owns_client = owns_client
        self._hints = plans.Hints()
        self.cache = _checked_cache(client_cache, self.keys)
        # A process caching records relies on every deleter's barrier (see _redis_cache).
        self._barrier = client_cache is not None
        # One server runs a pipeline in order; a cluster runs its per-node parts side by side.
        self._in_order = not isinstance(client, redis.asyncio.cluster.RedisCluster)

    @classmethod
    def _from_settings(
        cls, settings: _ClientSettings, client_cache: bool | ClientCacheConfig | None
    ) -> Self:
        target = settings.target
        client: AsyncClient
        # The store bounds each round trip itself (see the class docstring), not redis-py.
        options = {**settings.options, "socket_timeout": None}
        if target.cluster:
            try:
                client = redis.asyncio.cluster.RedisCluster(
                    startup_nodes=[
                        redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.nodes
                    ],
                    retry=_async_retry(),
                    **options,
                )
            except TypeError as exc:  # an option the cluster client does not take
                raise ConfigurationError(f"bad Redis Cluster client option: {exc}") from None
        else:
            pool_class = (
                redis.asyncio.ConnectionPool
                if settings.max_connections is None
                else redis.asyncio.BlockingConnectionPool
            )
            pool = pool_class.from_url(target.client_url, retry=_async_retry(), **options)
            _check_connection_options(pool.connection_class, pool.connection_kwargs)
            client = redis.asyncio.Redis.from_pool(pool)
        cache = _client_cache(
            target, client_cache, settings.prefix, settings.socket_connect_timeout
        )
        return cls(
            client,
            prefix=settings.prefix,
            owns_client=True,
            client_cache=cache,
            timeout=settings.socket_timeout,
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self._run(
            "get", plans.get_plan(self.keys, session_id, self._hints, self.cache)
        )

    def recall(self, session_id: str) -> SessionRecord | None:
        """The record from the client-side cache, without I/O; ``None``: call :meth:`get`."""
        cache = self.cache  # plans.recall, inlined: the read of every cached request
        return None if cache is None else cache.recall(self.keys.record(session_id))

    async def put(self, record: SessionRecord, expected_version: int) -> bool:
        return await self._run(
            "put", plans.put_plan(self.keys, record, expected_version, self._hints, self.cache)
        )

    async def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return await self._run(
            "replace",
            plans.replace_plan(
                self.keys,
                record,
                old_id,
                old_version,
                self._hints,
                self.cache,
                barrier=self._barrier,
            ),
        )

    async def delete(self, *session_ids: str) -> None:
        await self._run(
            "delete",
            plans.delete_plan(
                self.keys,
                session_ids,
                self._hints,
                in_order=self._in_order,
                cache=self.cache,
                barrier=self._barrier,
            ),
        )

    async def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return await self._run("sessions_of", plans.sessions_of_plan(self.keys, user_id))

    async def user_ids(self, now: float) -> list[str]:
        return await self._run("user_ids", plans.user_ids_plan(self.keys, now))

    async def purge_expired(self, now: float, batch: int = 500) -> int:
        return await self._run("purge_expired", plans.purge_plan(self.keys, now, batch, self.cache))

    async def stats(self, now: float) -> SessionStats:
        return await self._run("stats", stats_plan(self.keys, now))

    async def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return await self._run("hit", plans.hit_plan(self.keys, key, now, window))

    async def clear_hits(self, key: str) -> None:
        await self._run("clear_hits", plans.clear_hits_plan(self.keys, key))

    async def close(self) -> None:
        """Close the client if the store created it (:meth:`from_url`), and the cache."""
        if self.cache is not None:
            await asyncio.to_thread(self.cache.close)
        if self._owns_client:
            await self.client.aclose()

    async def _run(self, method: str, plan: plans.Plan[T]) -> T:
        deadlines = self._deadlines
        try:
            commands = next(plan)
            while True:
                # Yield to the event loop once before sending: the commands of every request
                # that got this far in the same loop pass then go out together, Redis serves
                # them in one pass of its own (one wake-up, one batch of invalidations for the
                # client caches), and their replies come back together. Measured over sockets
                # on a saturated server (benchmarks/sockets.py): 13 % more cached writes per
                # second than sending at once, and half the Redis CPU per write.
                await asyncio.sleep(0)
                if deadlines is None:
                    replies = await self._execute(commands)
                else:
                    # On expiry the call is cancelled, as redis-py's socket_timeout would be:
                    # redis-py then drops the connection mid-reply (never reused with an answer
                    # pending), and TimeoutError is raised.
                    replies = await deadlines.run(self._execute(commands))
                commands = plan.send(replies)
        except StopIteration as stop:
            result: T = stop.value
            return result
        except _UNAVAILABLE as exc:  # TimeoutError included
            raise _unavailable(method, exc) from exc

    async def _execute(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip; error replies come back as values (connection errors raise)."""
        if isinstance(self.client, redis.asyncio.cluster.RedisCluster):
            # redis-py 8.1 races when commands start concurrently on a cluster client that is not
            # initialised yet (first use, or after an error reset it): some fail with
            # ConnectionError after running, and are retried. initialize() takes the client's own
            # lock and returns at once once it is initialised.
            await self.client.initialize()
        if len(commands) == 1:
            try:
                return [await self.client.execute_command(*commands[0])]
            except ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


class RedisStore(_RedisFromURL):
    """The sync twin of :class:`AsyncRedisStore` (``redis`` and ``redis.cluster``), thread-safe.

    A sync ``RedisCluster`` client reads the cluster topology when it is created, so
    :meth:`from_url` with a cluster URL connects at once and raises
    :class:`~coatcheck.errors.StoreUnavailableError` if no node answers.
    """

    def __init__(
        self,
        client: SyncClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = False,
        client_cache: ClientCache | None = None,
    ) -> None:
        self.client = client
        self.keys = KeyLayout(prefix)
        self._owns_client = owns_client
        self._hints = plans.Hints()
        self.cache = _checked_cache(client_cache, self.keys)
        # A process caching records relies on every deleter's barrier (see _redis_cache).
        self._barrier = client_cache is not None
        self._in_order = not isinstance(client, redis.cluster.RedisCluster)

    @classmethod
    def _from_settings(
        cls, settings: _ClientSettings, client_cache: bool | ClientCacheConfig | None
    ) -> Self:
        target = settings.target
        client: SyncClient
        if target.cluster:
            try:
                # redis-py leaves the sync ClusterNode untyped.
                nodes = [
                    redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                    for h, p in target.nodes
                ]
                client = redis.cluster.RedisCluster(
                    startup_nodes=nodes,
                    retry=_sync_retry(),
                    **settings.options,
                )
            except _UNAVAILABLE as exc:
                raise _unavailable("connect", exc) from exc
        else:
            pool_class = (
                redis.ConnectionPool
                if settings.max_connections is None
                else redis.BlockingConnectionPool
            )
            pool = pool_class.from_url(target.client_url, retry=_sync_retry(), **settings.options)
            _check_connection_options(pool.connection_class, pool.connection_kwargs)
            client = redis.Redis.from_pool(pool)
        cache = _client_cache(
            target, client_cache, settings.prefix, settings.socket_connect_timeout
        )
        return cls(client, prefix=settings.prefix, owns_client=True, client_cache=cache)

    def get(self, session_id: str) -> SessionRecord | None:
        return self._run("get", plans.get_plan(self.keys, session_id, self._hints, self.cache))

    def recall(self, session_id: str) -> SessionRecord | None:
        """The record from the client-side cache, without I/O; ``None``: call :meth:`get`."""
        cache = self.cache  # plans.recall, inlined: the read of every cached request
        return None if cache is None else cache.recall(self.keys.record(session_id))

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        return self._run(
            "put", plans.put_plan(self.keys, record, expected_version, self._hints, self.cache)
        )

    def replace(self, record: SessionRecord, old_id: str, old_version: int) -> bool:
        return self._run(
            "replace",
            plans.replace_plan(
                self.keys,
                record,
                old_id,
                old_version,
                self._hints,
                self.cache,
                barrier=self._barrier,
            ),
        )

    def delete(self, *session_ids: str) -> None:
        self._run(
            "delete",
            plans.delete_plan(
                self.keys,
                session_ids,
                self._hints,
                in_order=self._in_order,
                cache=self.cache,
                barrier=self._barrier,
            ),
        )

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return self._run("sessions_of", plans.sessions_of_plan(self.keys, user_id))

    def user_ids(self, now: float) -> list[str]:
        return self._run("user_ids", plans.user_ids_plan(self.keys, now))

    def purge_expired(self, now: float, batch: int = 500) -> int:
        return self._run("purge_expired", plans.purge_plan(self.keys, now, batch, self.cache))

    def stats(self, now: float) -> SessionStats:
        return self._run("stats", stats_plan(self.keys, now))

    def hit(self, key: str, now: float, window: float) -> tuple[int, float]:
        return self._run("hit", plans.hit_plan(self.keys, key, now, window))

    def clear_hits(self, key: str) -> None:
        self._run("clear_hits", plans.clear_hits_plan(self.keys, key))

    def close(self) -> None:
        """Close the client if the store created it (:meth:`from_url`), and the cache."""
        if self.cache is not None:
            self.cache.close()
        if self._owns_client:
            self.client.close()

    def _run(self, method: str, plan: plans.Plan[T]) -> T:
        patience = CALLER.get()  # set when the sync manager runs this in a worker thread
        try:
            commands = next(plan)
            while True:
                if patience is not None:
                    patience.check()  # no round trip once the caller stopped waiting
                commands = plan.send(self._execute(commands))
        except StopIteration as stop:
            result: T = stop.value
            return result
        except _UNAVAILABLE as exc:
            raise _unavailable(method, exc) from exc

    def _execute(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip; error replies come back as values (connection errors raise)."""
        if len(commands) == 1:
            try:
                # redis-py leaves RedisCluster.execute_command untyped.
                return [self.client.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies
