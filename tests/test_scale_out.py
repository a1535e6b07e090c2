"""Scaling out, over real HTTP with real processes: two demo instances on one shared store, on
every server store; and the store failing under load (503, never 500) then recovering."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.backends.sql import _mysql_admin, _postgres_admin
from tests.demo.server import demo_server
from tests.demo.test_demo_http import COOKIE, client, register, unsafe
from tests.redis_servers import redis_server, shared_cluster
from tests.services import (
    MYSQL_HOST,
    MYSQL_PORT,
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    require_service,
)


@contextlib.contextmanager
def shared_store(kind: str, tmp_path: Path) -> Iterator[str]:
    """A store URL of ``kind`` owned by this test, removed afterwards."""
    name = "coatcheck_so_" + uuid.uuid4().hex[:10]
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    elif kind == "postgres":
        require_service("PostgreSQL", PG_HOST, PG_PORT)
        _postgres_admin(f'CREATE DATABASE "{name}"', None)
        try:
            yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', None)
    elif kind == "mysql":
        require_service("MariaDB", MYSQL_HOST, MYSQL_PORT)
        _mysql_admin(f"CREATE DATABASE `{name}`", None)
        try:
            yield f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
        finally:
            _mysql_admin(f"DROP DATABASE IF EXISTS `{name}`", None)
    elif kind == "redis":
        require_service("Redis", REDIS_HOST, REDIS_PORT)
        prefix = f"{name}:"
        try:
            yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"
        finally:
            with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as r:
                keys = list(r.scan_iter(match=f"{prefix}*", count=500))
                if keys:
                    r.delete(*keys)
    elif kind == "redis-cluster":
        yield shared_cluster().url + f"?prefix={name}:"
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql", "redis", "redis-cluster"])
def test_two_instances_share_sessions_and_revocations(kind: str, tmp_path: Path) -> None:
    """Two app processes on one store: a session from one works on the other, and a revoke or
    logout on one is seen by the other on its very next request."""
    with (
        shared_store(kind, tmp_path) as url,
        demo_server(tmp_path, store=url) as a,
        demo_server(tmp_path, store=url) as b,
        client(a) as laptop,
        client(a) as phone,
    ):
        user = register(laptop)
        response = unsafe(
            phone,
            "POST",
            "/api/login",
            json={"email": user["email"], "password": "correct horse battery"},
        )
        assert response.status_code == 200
        phone_token = phone.cookies[COOKIE]
        with client(b) as phone_on_b:
            cookie = {"cookie": f"{COOKIE}={phone_token}"}
            assert phone_on_b.get("/api/me", headers=cookie).json() == user
            phone_id = phone_token.split(".")[0]
            assert unsafe(laptop, "DELETE", f"/api/sessions/{phone_id}").status_code == 204
            assert phone_on_b.get("/api/me", headers=cookie).status_code == 401
        laptop_token = laptop.cookies[COOKIE]
        assert unsafe(laptop, "POST", "/api/logout").status_code == 204
        with client(b) as replay:
            assert (
                replay.get("/api/me", headers={"cookie": f"{COOKIE}={laptop_token}"}).status_code
                == 401
            )


def _hammer(base: str, cookie: str, stop: threading.Event, seen: Counter[int]) -> None:
    with httpx.Client(base_url=base, timeout=10) as c:
        while not stop.is_set():
            try:
                seen[c.get("/api/me", headers={"cookie": cookie}).status_code] += 1
            except httpx.TransportError:
                seen[0] += 1


def test_redis_outage_under_load_gives_503_then_recovers(tmp_path: Path) -> None:
    """Redis hung (SIGSTOP) then killed and restarted under load: the app answers 503 with
    Retry-After while it is down, never 500, never 401 for a valid session, and serves again
    by itself when Redis is back."""
    with (
        redis_server(tmp_path / "redis") as server,
        demo_server(tmp_path, store=server.url) as base,
    ):
        with client(base) as c:
            user = register(c)
            cookie = f"{COOKIE}={c.cookies[COOKIE]}"
            assert c.get("/api/me").json() == user

        seen: Counter[int] = Counter()
        stop = threading.Event()
        workers = [
            threading.Thread(target=_hammer, args=(base, cookie, stop, seen)) for _ in range(4)
        ]
        for w in workers:
            w.start()
        try:
            time.sleep(0.5)
            server.pause()  # hung: every call runs into the store timeout
            time.sleep(3)
            with httpx.Client(base_url=base, timeout=10) as probe:
                down = probe.get("/api/me", headers={"cookie": cookie})
                assert down.status_code == 503
                assert down.headers["retry-after"].isdigit()
                assert down.json() == {"error": "store_unavailable"}
            server.resume()
            time.sleep(1)
            with httpx.Client(base_url=base, timeout=10) as probe:
                assert probe.get("/api/me", headers={"cookie": cookie}).status_code == 200
            server.kill()  # crashed: connections refused
            time.sleep(1)
            with httpx.Client(base_url=base, timeout=10) as probe:
                assert probe.get("/api/me", headers={"cookie": cookie}).status_code == 503
            server.start()  # back, empty (no persistence): the service works again by itself
            time.sleep(1)
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert seen[500] == 0, seen
        assert seen[0] == 0, seen
        assert seen[503] > 0, seen
        assert seen[200] > 0, seen
        assert set(seen) <= {200, 401, 503}, seen
        with client(base) as again:
            register(again)
            assert again.get("/api/me").status_code == 200


def _commandstats(port: int) -> dict[str, int]:
    with redis.Redis(host="127.0.0.1", port=port) as r:
        stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_read_only_requests_cost_one_redis_command_and_no_write(tmp_path: Path) -> None:
    """Over HTTP with the client cache off, each read-only request within the touch interval is
    one HGET on Redis and nothing else (INFO commandstats on a Redis only this test uses); with
    it on (the default), see tests/stores/test_redis_cache.py."""
    with (
        redis_server(tmp_path / "redis") as server,
        demo_server(tmp_path, store=f"{server.url}?client_cache=0") as base,
        client(base) as c,
    ):
        register(c)
        c.get("/api/me")
        before = _commandstats(server.port)
        for _ in range(20):
            assert c.get("/api/me").status_code == 200
        after = _commandstats(server.port)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    probe = {"info", "hello", "client|setinfo"}  # what _commandstats's own connection sends
    delta = {k: v for k, v in delta.items() if v and k not in probe}
    assert delta == {"hget": 20}
