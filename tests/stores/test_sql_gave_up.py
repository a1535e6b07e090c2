"""A write its caller stopped waiting for (``store_timeout``, a 503) is never written later.

Attack round 11 (F3): while another process held a SQLite file's write lock, a cart add timed
out with 503, and its worker thread went on waiting in SQLite's busy handler and wrote it when
the lock came free; the client, retrying after ``Retry-After``, added the item a second time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from coatcheck._core.http import RequestView
from coatcheck._patience import CALLER, GaveUp, Patience
from coatcheck.errors import StoreUnavailableError
from coatcheck.manager import SessionManager
from coatcheck.stores import _sql_engine
from coatcheck.stores.sql import AsyncSQLStore, SQLStore
from coatcheck.testing import FakeClock, test_config
from tests.middleware.stacks import STACKS, stack

from .test_contract import make


def _locked(path: Path) -> sqlite3.Connection:
    """Another process's writer, as SQLite sees it: a connection holding the write lock."""
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def _stored_version(path: Path) -> list[Any]:
    check = sqlite3.connect(path)
    try:
        return check.execute("SELECT version FROM coatcheck_sessions").fetchall()
    finally:
        check.close()


@pytest.mark.parametrize("name", STACKS)
def test_a_write_answered_503_is_not_written_when_the_lock_comes_free(
    name: str, tmp_path: Path
) -> None:
    """Over HTTP, on both stacks: while another connection holds the file's write lock, a
    session write gets 503 after ``store_timeout``; once the lock is free the stored session is
    still the one from before (the old code wrote it then, from its worker thread), and the
    client's retry is written once."""
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    config = test_config(store_timeout=0.3)
    stores: dict[str, Any] = (
        {"async_store": AsyncSQLStore.from_url(url, statement_timeout=5)}
        if name == "asgi"
        else {"sync_store": SQLStore.from_url(url, statement_timeout=5)}
    )
    with stack(name, config, **stores) as env:
        assert env.client.post("/write", json={"cart": ["apple"]}).status_code == 200
        before = _stored_version(path)
        assert len(before) == 1
        blocker = _locked(path)
        try:
            started = time.monotonic()
            refused = env.client.post(
                "/write", json={"cart": ["apple", "pear"]}, headers=env.csrf()
            )
            assert refused.status_code == 503
            assert refused.json() == {"error": "store_unavailable"}
            assert time.monotonic() - started < 3  # store_timeout, not the 5 s busy wait
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        time.sleep(1)  # what a write still waiting for the lock would have used to land
        assert _stored_version(path) == before
        assert env.client.get("/read").json()["data"] == {"cart": ["apple"]}
        retried = env.client.post("/write", json={"cart": ["apple", "pear"]}, headers=env.csrf())
        assert retried.status_code == 200
        assert env.client.get("/read").json()["data"] == {"cart": ["apple", "pear"]}
        assert _stored_version(path) == [(before[0][0] + 1,)]
        closing = stores.get("sync_store")
        if closing is not None:
            closing.close()
    if name == "asgi":
        asyncio.run(stores["async_store"].close())


async def test_a_write_that_finds_the_lock_taken_lands_once_it_is_free(tmp_path: Path) -> None:
    """Waiting is not giving up: a write that finds the lock taken is tried again until it is
    free (within the statement timeout) and lands exactly once, while the loop runs on."""
    path = tmp_path / "w.db"
    store = AsyncSQLStore.from_url(f"sqlite:///{path}", statement_timeout=5)
    record = make()
    try:
        assert await store.put(record, 0) is True
        blocker = _locked(path)
        changed = record.copy()
        changed.version = 2
        writing = asyncio.ensure_future(store.put(changed, 1))
        await asyncio.sleep(0.2)
        assert not writing.done()
        blocker.execute("COMMIT")
        blocker.close()
        assert await asyncio.wait_for(writing, 2) is True
        assert await store.put(changed, 1) is False
        assert _stored_version(path) == [(2,)]
    finally:
        await store.close()


@pytest.mark.parametrize("twin", ["async", "sync"])
async def test_a_lock_held_past_the_statement_timeout_is_unavailable(
    twin: str, tmp_path: Path
) -> None:
    """A write that never finds the lock free within the statement timeout raises
    StoreUnavailableError, having written nothing."""
    path = tmp_path / "t.db"
    url = f"sqlite:///{path}"
    record = make()
    changed = record.copy()
    changed.version = 2
    if twin == "async":
        store = AsyncSQLStore.from_url(url, statement_timeout=0.3)
        assert await store.put(record, 0) is True
        blocker = _locked(path)
        with pytest.raises(StoreUnavailableError, match="database is locked"):
            await store.put(changed, 1)
        await store.close()
    else:
        sync = SQLStore.from_url(url, statement_timeout=0.3)
        assert sync.put(record, 0) is True
        blocker = _locked(path)
        with pytest.raises(StoreUnavailableError, match="database is locked"):
            sync.put(changed, 1)
        sync.close()
    blocker.execute("COMMIT")
    blocker.close()
    assert _stored_version(path) == [(1,)]


def test_a_thread_whose_caller_gave_up_starts_no_statement(tmp_path: Path) -> None:
    """The sync store, in a worker thread whose caller has given up (Patience), stops at its
    next try: waiting for its turn, or for the file's lock; it writes nothing either way."""
    path = tmp_path / "p.db"
    store = SQLStore.from_url(f"sqlite:///{path}", statement_timeout=5)
    record = make()
    assert store.put(record, 0) is True
    changed = record.copy()
    changed.version = 2
    turns = store._turns
    assert turns is not None
    try:
        for hold in ("turn", "lock"):
            blocker = _locked(path) if hold == "lock" else None
            if hold == "turn":
                assert turns.acquire(1)
            patience = Patience()
            outcome: list[BaseException] = []

            worker = threading.Thread(target=_put_as, args=(store, changed, patience, outcome))
            worker.start()
            time.sleep(0.2)
            assert worker.is_alive()  # waiting
            assert patience.give_up() is False  # nothing landed
            worker.join(2)
            assert not worker.is_alive()
            assert [type(exc) for exc in outcome] == [GaveUp]
            if blocker is not None:
                blocker.execute("COMMIT")
                blocker.close()
            else:
                turns.release()
            assert _stored_version(path) == [(1,)]
    finally:
        store.close()


def _put_as(store: SQLStore, record: Any, patience: Patience, outcome: list[BaseException]) -> None:
    CALLER.set(patience)
    try:
        store.put(record, record.version - 1)
    except BaseException as exc:
        outcome.append(exc)


def test_the_sync_manager_answers_a_write_that_landed_as_it_gave_up(tmp_path: Path) -> None:
    """A no-wait write holds Patience's lock while it runs, so the sync manager, giving up at
    that moment, learns that it landed and answers with its result (not a 503 for a write that
    was made). Here the statement is slowed down to straddle store_timeout."""
    path = tmp_path / "m.db"
    store = SQLStore.from_url(f"sqlite:///{path}", statement_timeout=5)
    manager = SessionManager(store, test_config(store_timeout=0.2), clock=FakeClock())
    session = manager.open(RequestView("GET", "https", [], "192.0.2.1")).session
    session["n"] = 1
    committed = manager.commit(session)
    cookie = "; ".join(h.split(";")[0] for name, h in committed.headers if name == "set-cookie")
    writer = store._writer
    assert writer is not None
    real_run = writer.run

    def slow_run(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)  # past store_timeout, holding Patience's lock
        return real_run(*args, **kwargs)

    turns = store._turns
    assert turns is not None
    assert turns.acquire(1)  # write_now cannot take the turn: the write goes to the pool
    threading.Timer(0.05, turns.release).start()
    writer.run = slow_run  # type: ignore[method-assign]
    try:
        opened = manager.open(RequestView("GET", "https", [("cookie", cookie)], "192.0.2.1"))
        opened.session["n"] = 2
        manager.commit(opened.session)  # no StoreUnavailableError: it landed
    finally:
        writer.run = real_run  # type: ignore[method-assign]
    assert _stored_version(path) == [(2,)]
    manager.close()


def test_busy_waits_follow_sqlites_steps_within_the_budget() -> None:
    busy = _sql_engine.Busy(0.05)
    delays = []
    while (delay := busy.delay()) is not None:
        delays.append(delay)
        time.sleep(delay)
    assert delays[:5] == [0.001, 0.002, 0.005, 0.01, 0.015]
    assert max(delays) <= 0.025
    assert sum(delays) <= 0.05 + 0.001
