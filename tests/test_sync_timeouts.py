"""``store_timeout`` holds on the sync twin too (WSGI, Flask, scripts): a store call that does not
answer in time is a 503, on every sync store, hung for real (SIGSTOP of a throwaway server, a
SQLite write lock held elsewhere) or slow through a bug.

The bounds asserted are correctness bounds (a request must not hang), with generous slack for a
busy machine: the point is that the answer comes near ``store_timeout``, not after the driver's
own timeouts (seconds to minutes).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from coatcheck._core.http import RequestView
from coatcheck._core.record import SessionRecord
from coatcheck.errors import StoreUnavailableError
from coatcheck.manager import SessionManager
from coatcheck.stores.base import SyncStore
from coatcheck.stores.memory import MemoryStore
from coatcheck.stores.redis import RedisStore
from coatcheck.stores.sql import SQLStore
from coatcheck.testing import FakeClock, test_config
from tests.redis_servers import redis_server
from tests.sql_servers import Kind, sql_server

STORE_TIMEOUT = 0.5
SLACK = 1.0


def request(token: str | None = None) -> RequestView:
    headers = [("cookie", f"coatcheck_session={token}")] if token else []
    return RequestView("GET", "https", headers, "192.0.2.1")


def new_session(manager: SessionManager) -> str:
    session = manager.open(request()).session
    session["cart"] = ["apple"]
    token = manager.commit(session).token
    assert token is not None
    return token


def assert_times_out(manager: SessionManager, token: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        manager.open(request(token))
    elapsed = time.monotonic() - started
    assert elapsed < STORE_TIMEOUT + SLACK, f"answered after {elapsed:.2f} s"


class SlowStore(MemoryStore):
    """A store with a bug: every read takes 1.5 s (and says it may block)."""

    blocking = True

    def get(self, session_id: str) -> SessionRecord | None:
        time.sleep(1.5)
        return super().get(session_id)


class BrokenStore(MemoryStore):
    """A store with a bug: reads raise TypeError."""

    def get(self, session_id: str) -> SessionRecord | None:
        raise TypeError("bug in a custom store")


def test_slow_custom_store_times_out() -> None:
    """A sync store that takes 1.5 s under store_timeout=0.5 is a 503 within the bound."""
    store = SlowStore()
    manager = SessionManager(store, test_config(store_timeout=STORE_TIMEOUT), clock=FakeClock())
    token = new_session(manager)
    assert_times_out(manager, token)
    manager.close()


def test_unexpected_store_exception_is_logged_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a store (a TypeError) still answers 503, and is logged at ERROR with its
    traceback, not as a one-line warning."""
    manager = SessionManager(BrokenStore(), test_config(), clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="coatcheck"), pytest.raises(StoreUnavailableError):
        manager.open(request("a" * 24 + "." + "b" * 43))
    [entry] = [r for r in caplog.records if r.name == "coatcheck"]
    assert entry.levelno == logging.ERROR
    assert entry.exc_info is not None
    assert entry.exc_info[0] is TypeError


def _manager(store: SyncStore) -> SessionManager:
    return SessionManager(store, test_config(store_timeout=STORE_TIMEOUT), clock=FakeClock())


def works_again(manager: SessionManager, token: str) -> None:
    """Wait until the resumed store answers again: the call that timed out has then finished in
    its worker thread and given its connection back, so closing the store closes it."""
    deadline = time.monotonic() + 15
    while True:
        try:
            assert manager.open(request(token)).session["cart"] == ["apple"]
            return
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_hung_redis_times_out(tmp_path: Path) -> None:
    """A sync Redis store on a hung (SIGSTOP) server answers 503 within the bound, and works
    again once the server is resumed."""
    with redis_server(tmp_path) as server:
        store = RedisStore.from_url(server.url)
        manager = _manager(store)
        token = new_session(manager)
        server.pause()
        try:
            assert_times_out(manager, token)
        finally:
            server.resume()
        works_again(manager, token)
        manager.close()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mysql),
    ],
)
def test_hung_sql_server_times_out(kind: Kind) -> None:
    """A sync SQL store on a hung (SIGSTOP) PostgreSQL or MariaDB answers 503 within the bound."""
    with sql_server(kind) as server:
        store = SQLStore.from_url(server.url)
        store.create_schema()
        manager = _manager(store)
        token = new_session(manager)
        server.pause()
        try:
            assert_times_out(manager, token)
        finally:
            server.resume()
        works_again(manager, token)
        manager.close()


@contextmanager
def sqlite_write_lock(path: Path) -> Iterator[Any]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_locked_sqlite_times_out(tmp_path: Path) -> None:
    """A sync SQLite store whose file another process holds the write lock on still serves
    reads (WAL readers never wait), and a write answers 503 within the bound instead of waiting
    out its busy timeout."""
    path = tmp_path / "sessions.db"
    store = SQLStore.from_url(f"sqlite:///{path}")
    manager = _manager(store)
    token = new_session(manager)
    with sqlite_write_lock(path):
        session = manager.open(request(token)).session
        assert session["cart"] == ["apple"]
        session["cart"].append("pear")
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            manager.commit(session)
        elapsed = time.monotonic() - started
        assert elapsed < STORE_TIMEOUT + SLACK, f"answered after {elapsed:.2f} s"
    # A 503 leaves the write's outcome unknown: the call may still land once the lock is gone.
    assert manager.open(request(token)).session["cart"] in (["apple"], ["apple", "pear"])
    manager.close()
