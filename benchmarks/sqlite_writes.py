#!/usr/bin/env python3
"""Session writes on SQLite in-process: the sync manager (as under Flask) and the async store.

    python benchmarks/sqlite_writes.py [--rounds 5] [--writes 1000] [--threads 8]
    PYTHONPATH=/path/to/older/checkout/src python benchmarks/sqlite_writes.py   # a baseline

Three figures, each the median of ``--rounds`` rounds, on a SQLite file in a temporary folder:

- ``sync, one thread``: a write request through ``SessionManager`` (open a signed-in session
  with a 5-item cart, set one key, commit), one after another;
- ``sync, N threads``: the same from ``--threads`` threads at once (a threaded WSGI server),
  per write;
- ``async store, 32 tasks``: ``AsyncSQLStore.put`` from 32 concurrent tasks on 64 sessions
  (every write a compare-and-set of the next version), writes per second, and how many of them
  went to a worker thread (``Handoff``) instead of running on the event loop.

Nothing here asserts on a time; run it before and after a change, on the same machine, and
compare. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from coatcheck import SessionConfig, async_store_from_url, sync_store_from_url
from coatcheck._core.http import RequestView
from coatcheck._core.record import SessionRecord
from coatcheck.manager import SessionManager


def cart() -> list[dict[str, Any]]:
    return [
        {"sku": f"SKU-{1000 + i}", "name": f"Item number {i}", "qty": i + 1, "price_cents": 1999}
        for i in range(5)
    ]


def sync_rounds(folder: Path, rounds: int, writes: int, threads: int) -> tuple[float, float]:
    store = sync_store_from_url(f"sqlite:///{folder / 'sync.db'}")
    manager = SessionManager(store, SessionConfig(secret=secrets.token_urlsafe(32)))
    try:
        session = manager.open(RequestView("GET", "https", [], "192.0.2.1")).session
        session["cart"] = cart()
        committed = manager.commit(session)
        cookie = "; ".join(v.split(";")[0] for n, v in committed.headers if n == "set-cookie")
        request = RequestView("GET", "https", [("cookie", cookie)], "192.0.2.1")

        def write(n: int) -> None:
            for i in range(n):
                opened = manager.open(request)
                opened.session["n"] = i
                manager.commit(opened.session)

        write(writes // 4)  # warm-up
        alone, together = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            write(writes)
            alone.append((time.perf_counter() - started) / writes)
            each = max(1, writes // threads)
            workers = [threading.Thread(target=write, args=(each,)) for _ in range(threads)]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            together.append((time.perf_counter() - started) / (each * threads))
        return statistics.median(alone), statistics.median(together)
    finally:
        manager.close()


def record(number: int, version: int, now: float) -> SessionRecord:
    return SessionRecord(
        id=f"{number:032x}",
        secret_hash="0" * 64,
        created_at=now,
        last_seen_at=now,
        expires_at=now + 3600,
        absolute_expires_at=now + 86400,
        version=version,
        user_id="42",
        data={"cart": cart(), "n": version},
    )


async def async_rounds(folder: Path, rounds: int, writes: int) -> tuple[float, int]:
    from coatcheck.stores import _sql_engine

    handoffs = 0
    handoff = getattr(_sql_engine, "Handoff", None)
    if handoff is not None:  # an older checkout has none
        original = handoff.__init__

        def counted(self: Any, *args: Any, **kwargs: Any) -> None:
            nonlocal handoffs
            handoffs += 1
            original(self, *args, **kwargs)

        handoff.__init__ = counted
    store = async_store_from_url(f"sqlite:///{folder / 'async.db'}")
    now = time.time()
    versions = dict.fromkeys(range(64), 1)
    try:
        for number in versions:
            assert await store.put(record(number, 1, now), 0)

        async def task(first: int, n: int) -> None:
            for i in range(n):
                number = (first + i * 32) % 64
                version = versions[number]
                versions[number] = version + 1
                assert await store.put(record(number, version + 1, now), version)

        rates = []
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(task(t, writes // 32) for t in range(32)))
            rates.append((writes // 32) * 32 / (time.perf_counter() - started))
        return statistics.median(rates), handoffs
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        alone, together = sync_rounds(Path(folder), args.rounds, args.writes, args.threads)
        rate, handoffs = asyncio.run(async_rounds(Path(folder), args.rounds, args.writes * 4))
    print(f"sync, one thread:        {alone * 1e6:7.0f} µs per write request")
    print(f"sync, {args.threads} threads:         {together * 1e6:7.0f} µs per write request")
    print(f"async store, 32 tasks:   {rate:7.0f} writes/s ({handoffs} handed to a thread)")


if __name__ == "__main__":
    main()
