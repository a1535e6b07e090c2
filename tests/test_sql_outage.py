"""The SQL store's database failing under load, over real HTTP: a throwaway PostgreSQL or MariaDB
is hung (SIGSTOP), resumed, killed and restarted on the same port and data folder while the demo
serves requests. The app must answer 503 with Retry-After within the store timeout (HANG_BOUND)
while the database is away (never 500, never 401 for a valid session) and serve again by itself
when it is back.

The demo's user table lives in the same database (the demo's default), so both the session store
and the app's own user lookups (which turn database errors into 503s too) go down together.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from coatcheck.errors import StoreUnavailableError
from coatcheck.stores.sql import SQLStore
from tests.demo.server import demo_server
from tests.demo.test_demo_http import COOKIE, client, register
from tests.sql_servers import Kind, SQLServer, sql_server
from tests.stores.test_contract import make

STORE_TIMEOUT = 2.0  # SessionConfig.store_timeout, which the demo keeps (its user table too)
# The promise: a request that meets a hung database answers 503 within store_timeout + 0.5 s,
# because the connection that timed out is dropped at once (no ROLLBACK, no goodbye awaited from
# the hung server) and a request meets the hang at most once: its first operation to time out
# ends it. That is a correctness property (a bound, not a speed), so it is asserted here, with
# slack for a machine shared by parallel test runs: scheduling can delay any answer by a second
# without the bound being broken in the code. Measured on an idle machine: slowest 2.03-2.1 s.
HANG_BOUND = STORE_TIMEOUT + 1.5
REFUSED_BOUND = 1.5  # a dead server resets and refuses connections: no timeout is involved
KINDS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
]


@dataclass
class Load:
    """Status codes (0: transport error) and the slowest answer seen by the hammering threads."""

    seen: Counter[int] = field(default_factory=Counter)
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, elapsed: float) -> None:
        with self.lock:
            self.seen[status] += 1
            self.slowest = max(self.slowest, elapsed)


def _hammer(base: str, cookie: str, stop: threading.Event, load: Load) -> None:
    with httpx.Client(base_url=base, timeout=15) as c:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = c.get("/api/me", headers={"cookie": cookie}).status_code
            except httpx.TransportError:
                status = 0
            load.record(status, time.monotonic() - started)


@contextmanager
def _under_load(base: str, cookie: str, threads: int = 4) -> Iterator[Load]:
    load = Load()
    stop = threading.Event()
    workers = [
        threading.Thread(target=_hammer, args=(base, cookie, stop, load)) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    try:
        yield load
    finally:
        stop.set()
        for w in workers:
            w.join()


def _me(base: str, cookie: str) -> tuple[httpx.Response, float]:
    with httpx.Client(base_url=base, timeout=15) as probe:
        started = time.monotonic()
        response = probe.get("/api/me", headers={"cookie": cookie})
        return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json() == {"error": "store_unavailable"}


def _until_ok(base: str, cookie: str, within: float) -> tuple[float, Counter[int]]:
    """Poll /api/me until it answers 200; return how long that took and what came before."""
    before: Counter[int] = Counter()
    started = time.monotonic()
    while True:
        response, _ = _me(base, cookie)
        if response.status_code == 200:
            return time.monotonic() - started, before
        before[response.status_code] += 1
        assert time.monotonic() - started < within, (response.status_code, before)
        time.sleep(0.05)


@contextmanager
def _demo_on(kind: Kind, tmp_path: Path) -> Iterator[tuple[SQLServer, str, str]]:
    """A throwaway database, the demo on it (users there too) and a registered user's cookie."""
    with sql_server(kind) as server, demo_server(tmp_path, store=server.url) as base:
        with client(base) as c:
            user = register(c)
            cookie = f"{COOKIE}={c.cookies[COOKIE]}"
            assert c.get("/api/me").json() == user
        yield server, base, cookie


@pytest.mark.parametrize("kind", KINDS)
def test_sql_outage_under_load_gives_503_then_recovers(kind: Kind, tmp_path: Path) -> None:
    """The database hung, resumed, killed and restarted under load: 503 with Retry-After within
    store_timeout (+ slack, see HANG_BOUND) for every request, in flight or new, while it is
    away, never 500 or 401, and 200 again by itself as soon as it is back."""
    with _demo_on(kind, tmp_path) as (server, base, cookie), _under_load(base, cookie) as load:
        time.sleep(0.5)

        server.pause()  # hung: connections stay open, nothing answers
        response, elapsed = _me(base, cookie)
        _assert_unavailable(response)
        assert elapsed < HANG_BOUND, elapsed
        time.sleep(1)
        response, elapsed = _me(base, cookie)  # still hung: a fresh connect times out too
        _assert_unavailable(response)
        assert elapsed < HANG_BOUND, elapsed
        server.resume()
        resumed_in, _ = _until_ok(base, cookie, within=HANG_BOUND)
        assert _concurrently(base, cookie, 4) == [200] * 4  # the pool is healthy again

        server.kill()  # crashed: connections reset, new ones refused
        response, elapsed = _me(base, cookie)
        _assert_unavailable(response)
        assert elapsed < REFUSED_BOUND, elapsed
        time.sleep(0.5)
        server.start()  # same port, same data folder: the session is still there
        restarted_in, before = _until_ok(base, cookie, within=5)
        time.sleep(0.5)
    print(
        f"\n{kind}: {dict(load.seen)} slowest {load.slowest:.2f} s; 200 again "
        f"{resumed_in:.2f} s after SIGCONT, {restarted_in:.2f} s after restart {dict(before)}"
    )
    assert load.seen[500] == 0, load.seen
    assert load.seen[0] == 0, load.seen
    assert load.seen[503] > 0, load.seen
    assert load.seen[200] > 0, load.seen
    assert set(load.seen) <= {200, 503}, load.seen  # never 401: the session survives the outage
    assert load.slowest < HANG_BOUND, load.slowest  # in-flight requests included


def _concurrently(base: str, cookie: str, n: int) -> list[int]:
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(_me(base, cookie)[0].status_code))
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.parametrize("kind", KINDS)
def test_sql_restart_between_requests_loses_no_request(kind: Kind, tmp_path: Path) -> None:
    """A database restarted (crash, then clean shutdown) while the app's pool holds idle
    connections to it: the very first requests afterwards, concurrent or not, are served (200)."""
    with _demo_on(kind, tmp_path) as (server, base, cookie):
        for crash in (True, False):
            assert _concurrently(base, cookie, 4) == [200] * 4  # several pooled connections
            if crash:
                server.restart()  # SIGKILL, then start on the same port and data folder
            else:
                server.stop()  # the clean (fast) shutdown
                server.start()
            # Every pooled connection is stale now. pool_pre_ping finds that out before use;
            # without it, each request that picks one up answers 503 (measured: 1 of 4).
            assert _concurrently(base, cookie, 4) == [200] * 4
            assert [_me(base, cookie)[0].status_code for _ in range(3)] == [200] * 3


@pytest.mark.parametrize("kind", KINDS)
def test_sync_store_on_a_hung_database_fails_within_its_timeouts(kind: Kind) -> None:
    """The sync store (WSGI, no store timeout of its own) gives up on a hung database after
    connect_timeout + statement_timeout (psycopg by a client-side deadline, the MySQL driver by
    its read timeout) instead of holding the worker, and works again once the database is back.
    The bound is asserted with the same slack as HANG_BOUND, for the same reason."""
    with sql_server(kind) as server:
        store = SQLStore.from_url(
            server.url, create_schema=True, connect_timeout=1, statement_timeout=1
        )
        try:
            record = make()
            assert store.put(record, 0) is True
            assert store.get(record.id) == record
            outcome: list[object] = []

            def read() -> None:
                started = time.monotonic()
                try:
                    outcome.append(store.get(record.id))
                except StoreUnavailableError as exc:
                    outcome.append(exc)
                outcome.append(time.monotonic() - started)

            server.pause()
            reader = threading.Thread(target=read)
            reader.start()
            reader.join(timeout=2 + 1.5)
            server.resume()  # a read still blocked (the bug) ends here, and fails below
            reader.join()
            assert isinstance(outcome[0], StoreUnavailableError), outcome
            assert outcome[1] < 2 + 1.5, outcome
            assert store.get(record.id) == record
        finally:
            store.close()
