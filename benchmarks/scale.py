"""Scale: a session read with a million live sessions stored vs a near-empty store, and live reads
while a hundred thousand expired sessions are purged (issue 9 item 7).

    .venv/bin/python benchmarks/scale.py [--stores sqlite,postgres,mariadb,redis]
                                         [--sessions 1000000] [--expired 100000] [--reads 3000]

For each store it starts a throwaway server (the test suite's helpers: PostgreSQL with
``shared_buffers`` of 128 MB (``--shared-buffers``), MariaDB with a 512 MB buffer pool
(``--buffer-pool``), Redis; SQLite is a file in a temporary folder), so the shared servers carry
none of the load. Then:

1. stores 1000 sessions through the store API in a near-empty store (another SQLite file,
   another table prefix on the SQL servers, another Redis database, on the same server) and
   1000 in the store under test;
2. bulk-loads ``--sessions`` live and ``--expired`` expired sessions into the store under test
   (SQLite: one transaction of ``executemany``; PostgreSQL: ``COPY``; MariaDB: multi-row
   ``INSERT``; Redis: the store's own ``put``, 64 at a time), then times, in turn for
   ``--rounds`` rounds, ``--reads`` reads (the async store, as an app uses it, one at a time)
   of: the near-empty store's 1000 sessions; 1000 of the million picked at random (the same
   working set in a bigger store); any of the million (a bigger working set too); and the
   near-empty store and any of the million again with the process's decoded-record memory off
   (every read decodes its record, as a random read of a million always does). Each ratio is
   the median of the rounds' ratios to the near-empty read, so the machine's moods fall on
   both sides of it;
3. runs 4 concurrent readers for a few seconds (quiet), then again while another process purges
   the expired sessions in batches of 500 (``purge_expired``, as ``coatcheck purge`` does), and
   reports the readers' p50/p99 in both periods and the purge's duration.

Needs the binaries the test suite's throwaway servers need. Not part of the test suite; it takes
a few minutes per store. Compare the ratios of one run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test suite's throwaway-server helpers

from coatcheck._core.memo import DECODED  # noqa: E402
from coatcheck._core.record import SessionRecord, record_from_json, record_to_json  # noqa: E402
from coatcheck._core.tokens import hash_secret, new_id, new_secret  # noqa: E402
from coatcheck.stores.url import async_store_from_url, sync_store_from_url  # noqa: E402

NEAR_EMPTY = 1000
CHUNK = 20_000
PURGE_BATCH = 500
READERS = 4
TABLE = "coatcheck_sessions"


def cart() -> list[dict[str, Any]]:
    return [
        {"sku": f"SKU-{1000 + i}", "qty": i + 1, "price_cents": 1999 + 250 * i} for i in range(5)
    ]


def record(now: float, expires_at: float, user: str) -> SessionRecord:
    return SessionRecord(
        id=new_id(),
        secret_hash=hash_secret(new_secret()),
        created_at=now - 60,
        last_seen_at=now - 60,
        expires_at=expires_at,
        absolute_expires_at=max(expires_at, now + 3600),
        version=1,
        user_id=user,
        data={"cart": cart()},
        csrf_token=secrets.token_urlsafe(32),
        user_agent="Mozilla/5.0 (X11; Linux x86_64) bench",
        ip="203.0.113.7",
    )


def rows(count: int, now: float, expires_at: float) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of table rows for ``count`` sessions: one template record, a fresh id and user per
    row (the JSON copy of each row carries its own id, as the store writes it)."""
    template = record(now, expires_at, "USER")
    text = record_to_json(template)
    for start in range(0, count, CHUNK):
        chunk = []
        for n in range(start, min(start + CHUNK, count)):
            session_id, user = new_id(), f"user{n % 200_000}"
            raw = text.replace(template.id, session_id).replace('"USER"', json.dumps(user))
            chunk.append((session_id, template.secret_hash, user, expires_at, 1, raw))
        yield chunk


# --- the stores -------------------------------------------------------------------------------


@contextlib.contextmanager
def place(
    kind: str, folder: Path, buffer_pool: str = "512M", shared_buffers: str = "128MB"
) -> Iterator[str]:
    """A store URL of ``kind`` on a throwaway server (or file), gone afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'sessions.db'}"
        return
    if kind == "redis":
        from tests.redis_servers import redis_server

        with redis_server(folder / "redis") as server:
            yield server.url
        return
    import tests.sql_servers as servers

    # A production-like buffer pool: the helper's 32 MB default is sized for tests.
    servers._MARIADB_SIZES = [
        "--innodb-log-file-size=256M",
        f"--innodb-buffer-pool-size={buffer_pool}",
    ]
    postgres_argv = servers.PostgresServer._argv

    def with_shared_buffers(self: servers.PostgresServer) -> list[str]:
        return [*postgres_argv(self), "-c", f"shared_buffers={shared_buffers}"]

    servers.PostgresServer._argv = with_shared_buffers  # type: ignore[method-assign]
    with servers.sql_server("postgres" if kind == "postgres" else "mariadb") as server:
        yield server.url


def bulk_load(kind: str, url: str, chunks: Iterator[list[tuple[Any, ...]]]) -> None:
    columns = "id, secret_hash, user_id, expires_at, version, record"
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN")
        for chunk in chunks:
            insert = f"INSERT INTO {TABLE} ({columns}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608 - constants
            conn.executemany(insert, chunk)
        conn.execute("COMMIT")
        conn.close()
    elif kind == "postgres":
        import psycopg

        with psycopg.connect(url.replace("postgresql://", "postgresql://", 1)) as conn:
            with conn.cursor() as cur, cur.copy(f"COPY {TABLE} ({columns}) FROM STDIN") as copy:
                for chunk in chunks:
                    for row in chunk:
                        copy.write_row(row)
            conn.execute(f"ANALYZE {TABLE}")
    else:
        import pymysql

        rest = url.split("://", 1)[1]
        user, _, hostpart = rest.partition("@")
        hostport, _, database = hostpart.partition("/")
        host, _, port = hostport.partition(":")
        conn = pymysql.connect(host=host, port=int(port), user=user, password="", database=database)
        try:
            with conn.cursor() as cur:
                values = ", ".join(["%s"] * 6)
                insert = f"INSERT INTO {TABLE} ({columns}) VALUES ({values})"  # noqa: S608 - constants
                for chunk in chunks:
                    cur.executemany(insert, chunk)
                    conn.commit()
                cur.execute(f"ANALYZE TABLE {TABLE}")
        finally:
            conn.close()


async def load_through_api(store: Any, count: int, now: float, expires_at: float) -> list[str]:
    ids: list[str] = []
    pending: list[Any] = []
    for n in range(count):
        item = record(now, expires_at, f"user{n % 200_000}")
        ids.append(item.id)
        pending.append(store.put(item, 0))
        if len(pending) == 64:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    return ids


# --- measuring --------------------------------------------------------------------------------


async def read_cost(
    store: Any, ids: list[str], reads: int, *, memo: bool = True
) -> tuple[float, float]:
    """Median and p99 (µs) of ``reads`` sequential reads of random ids from ``ids``; with
    ``memo=False``, every read decodes its record (the process's decoded-record memory off)."""
    times = []
    if not memo:
        DECODED.decode = record_from_json  # type: ignore[method-assign]
    try:
        for session_id in random.choices(ids, k=reads):
            started = time.perf_counter()
            found = await store.get(session_id)
            times.append((time.perf_counter() - started) * 1e6)
            if found is None:
                raise RuntimeError(f"session {session_id} is missing")
    finally:
        if not memo:
            del DECODED.decode
    return statistics.median(times), statistics.quantiles(times, n=100)[98]


@contextlib.asynccontextmanager
async def readers(store: Any, ids: list[str]) -> AsyncIterator[list[float]]:
    """Read random sessions from ``READERS`` coroutines while the block runs; yields the list
    the latencies (ms) land in."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            session_id = random.choice(ids)
            started = time.perf_counter()
            if await store.get(session_id) is None:
                raise RuntimeError(f"session {session_id} is missing")
            latencies.append((time.perf_counter() - started) * 1e3)
            await asyncio.sleep(0)  # a SQLite read completes without yielding to the loop

    tasks = [asyncio.ensure_future(reader()) for _ in range(READERS)]
    try:
        yield latencies
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def near_empty_url(kind: str, url: str) -> str:
    """Where the near-empty store lives, next to the full one and read in turn with it: another
    SQLite file, another table prefix on the SQL servers, another Redis database."""
    if kind == "sqlite":
        return url.replace("sessions.db", "near-empty.db")
    if kind == "redis":
        return url.rsplit("/", 1)[0] + "/1"
    return url + ("&" if "?" in url else "?") + "table_prefix=near_empty_"


def open_store(kind: str, url: str) -> Any:
    if kind == "redis":
        # Every read goes to Redis: what a million keys cost the server (the client-side cache
        # answers a session read twice the same however many keys Redis holds).
        return async_store_from_url(url, client_cache=False)
    from coatcheck.stores.sql import AsyncSQLStore

    return AsyncSQLStore.from_url(url, create_schema=True)


async def measure(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    now = time.time()
    mapped = (
        f"?mmap_size={args.mmap_size}" if kind == "sqlite" and args.mmap_size is not None else ""
    )
    store = open_store(kind, url + mapped)
    small = open_store(kind, near_empty_url(kind, url) + mapped)
    result: dict[str, Any] = {"store": kind}
    try:
        few = await load_through_api(small, NEAR_EMPTY, now, now + 86_400)
        await load_through_api(store, NEAR_EMPTY, now, now + 86_400)  # as if it grew from few

        started = time.monotonic()
        if kind == "redis":
            many = await load_through_api(store, args.sessions - NEAR_EMPTY, now, now + 86_400)
            await load_through_api(store, args.expired, now, now + 5)
        else:
            ids_seen: list[str] = []

            def live() -> Iterator[list[tuple[Any, ...]]]:
                for chunk in rows(args.sessions - NEAR_EMPTY, now, now + 86_400):
                    ids_seen.extend(row[0] for row in chunk)
                    yield chunk

            await asyncio.to_thread(bulk_load, kind, url, live())
            await asyncio.to_thread(bulk_load, kind, url, rows(args.expired, now, now - 5))
            many = ids_seen
        result["load_s"] = time.monotonic() - started
        if kind == "redis":
            await asyncio.sleep(max(0.0, now + 6 - time.time()))  # let the last ones expire

        # The near-empty reads cycle through 1,000 sessions, as an app's active visitors do;
        # the same reads among a million stored: 1,000 of them, at random; and reads of any of
        # the million. The three are read in turn, round after round, so that the machine's
        # moods fall on all of them alike; each ratio is the median of the rounds' ratios.
        # The process's decoded-record memory (DECODED: 1,024 texts, kept once read twice)
        # serves the near-empty store's sessions, read again and again, and no random one of a
        # million. It is shared by the kinds read in turn, so each kind with it on first reads
        # its ids twice (its steady state: 1,000 active sessions answered from memory, a
        # million mostly not). The last two kinds read with it off, every read decoding its
        # record: what the store's size costs, apart from the working set's.
        active = random.sample(many, NEAR_EMPTY)
        kinds = {
            "empty_us": (small, few, True),
            "active_us": (store, active, True),
            "full_us": (store, many, True),
            "empty_cold_us": (small, few, False),
            "full_cold_us": (store, many, False),
        }
        for target, ids, memo in kinds.values():
            await read_cost(target, ids, 500, memo=memo)  # warm up
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in kinds}
        for _ in range(args.rounds):
            for name, (target, ids, memo) in kinds.items():
                if memo:
                    for session_id in ids * 2 if len(ids) <= NEAR_EMPTY else ():
                        await target.get(session_id)
                rounds[name].append(await read_cost(target, ids, args.reads, memo=memo))
        for name, costs in rounds.items():
            result[name] = (
                statistics.median(c[0] for c in costs),
                statistics.median(c[1] for c in costs),
            )
        for name, base in (
            ("active_us", "empty_us"),
            ("full_us", "empty_us"),
            ("full_cold_us", "empty_cold_us"),
        ):
            ratios = [r[0] / e[0] for r, e in zip(rounds[name], rounds[base], strict=True)]
            result[name.replace("_us", "_ratio")] = (statistics.median(ratios), ratios)

        async with readers(store, many) as quiet:
            await asyncio.sleep(args.window)
        result["quiet_ms"] = (pct(quiet, 50), pct(quiet, 99), len(quiet))
        async with readers(store, many) as busy:
            purger = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--purge", url, str(time.time()),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await purger.communicate()
            if purger.returncode != 0:
                raise RuntimeError(f"the purger failed ({purger.returncode})")
            purged, seconds = out.decode().split()
            result["purged"], result["purge_s"] = int(purged), float(seconds)
        result["purge_ms"] = (pct(busy, 50), pct(busy, 99), len(busy))
    finally:
        await store.close()
        await small.close()
    return result


def purge(url: str, now: float) -> tuple[int, float]:
    """The purger process: purge_expired in batches until nothing is left; (count, seconds)."""
    store = sync_store_from_url(url)
    total = 0
    started = time.monotonic()
    try:
        while True:
            deleted = store.purge_expired(now, PURGE_BATCH)
            total += deleted
            if deleted < PURGE_BATCH:
                return total, time.monotonic() - started
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres,mariadb,redis")
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--expired", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=3000, help="reads per round and kind")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the three reads")
    parser.add_argument(
        "--mmap-size", type=int, default=None, help="SQLite's mmap_size (default: the store's)"
    )
    parser.add_argument("--window", type=float, default=5.0, help="quiet reading, seconds")
    parser.add_argument("--buffer-pool", default="512M", help="MariaDB's innodb_buffer_pool_size")
    parser.add_argument("--shared-buffers", default="128MB", help="PostgreSQL's shared_buffers")
    parser.add_argument("--purge", nargs=2, metavar=("URL", "NOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.purge:
        print(*purge(args.purge[0], float(args.purge[1])))
        return 0

    results = []
    for kind in args.stores.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="coatcheck-scale-") as tmp,
            place(kind, Path(tmp), args.buffer_pool, args.shared_buffers) as url,
        ):
            print(
                f"{kind}: loading {args.sessions:,} live + {args.expired:,} expired ...", flush=True
            )
            results.append(asyncio.run(measure(kind, url, args)))
            print(f"  {results[-1]}", flush=True)

    print(
        f"\n{args.sessions:,} live sessions vs {NEAR_EMPTY:,}; {args.expired:,} expired purged "
        f"in batches of {PURGE_BATCH} by another process; {READERS} concurrent readers; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"| store | read, {NEAR_EMPTY:,} stored (p50 / p99 µs) "
        f"| read of {NEAR_EMPTY:,} active among {args.sessions:,} | ratio (p50; rounds) "
        f"| read of any of {args.sessions:,} | ratio (p50; rounds) "
        "| every read decoding: near-empty / any | ratio (p50; rounds) "
        "| bulk load | readers quiet p50 / p99 ms | during purge p50 / p99 ms | purge |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        (e50, e99), (f50, f99), (a50, a99) = r["empty_us"], r["full_us"], r["active_us"]
        (active_ratio, active_rounds), (full_ratio, full_rounds) = (
            r["active_ratio"],
            r["full_ratio"],
        )
        cold_ratio, cold_rounds = r["full_cold_ratio"]
        c50, f_c50 = r["empty_cold_us"][0], r["full_cold_us"][0]
        spread = " ({:.2f}-{:.2f})"
        q50, q99, _ = r["quiet_ms"]
        b50, b99, _ = r["purge_ms"]
        print(
            f"| {r['store']} | {e50:.0f} / {e99:.0f} | {a50:.0f} / {a99:.0f} "
            f"| {active_ratio:.2f}{spread.format(min(active_rounds), max(active_rounds))} "
            f"| {f50:.0f} / {f99:.0f} "
            f"| {full_ratio:.2f}{spread.format(min(full_rounds), max(full_rounds))} "
            f"| {c50:.0f} / {f_c50:.0f} "
            f"| {cold_ratio:.2f}{spread.format(min(cold_rounds), max(cold_rounds))} "
            f"| {r['load_s']:.0f} s | {q50:.2f} / {q99:.2f} | {b50:.2f} / {b99:.2f} "
            f"| {r['purged']:,} in {r['purge_s']:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
