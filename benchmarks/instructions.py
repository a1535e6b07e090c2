#!/usr/bin/env python3
"""Instructions per request, in-process: coatcheck next to Starlette's signed cookie.

    python benchmarks/instructions.py [--requests 2000] [--cases read,write,...] [--jobs 2]

Wall-clock timings on a shared 2-core machine move by 20% from one run to the next; instruction
counts do not. Each case runs in its own ``valgrind --tool=callgrind`` process twice, once with
``--warmup`` requests and once with ``--warmup + --requests``; the difference divided by
``--requests`` is the cost of one request, start-up and imports cancelled out. The request is
the one ``run.py`` and ``profile_read.py`` make (a signed-in visitor with a 5-item cart, over
``https``, a GET through the ASGI middleware into a bare app), and the client keeps the cookies
it is sent, as a browser (and ``run.py``) does.

Printed: instructions per request for the bare app and each session layer, each layer's overhead
(minus the bare app), and the ratios the issues set targets for:

- memory read overhead / Starlette read overhead  (issue 9: at most 1.5)
- sealed read / Starlette read                    (issue 10: at most 1)
- sealed write / Starlette write                  (issue 10: at most 2)
- Redis cached read overhead / memory read overhead (issue 9: a hit costs barely more)

(Issue 10 compares whole reads and writes; the overhead ratios are printed too.) Instruction
counts are not time: a cache miss or a syscall costs more than its instruction count says. They
are repeatable, which is what a before/after decision needs. Not part of the test suite.

``--child CASE N`` is the inner run (what valgrind executes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CASES = {
    "bare": ("bare", "/anon"),
    "starlette-read": ("starlette", "/read"),
    "starlette-write": ("starlette", "/write"),
    "memory-read": ("memory", "/read"),
    "memory-write": ("memory", "/write"),
    "sealed-read": ("sealed", "/read"),
    "sealed-write": ("sealed", "/write"),
    "sqlite-read": ("sqlite", "/read"),
    "sqlite-write": ("sqlite", "/write"),
    "redis-read": ("redis", "/read"),
    "redis-write": ("redis", "/write"),
    "starsessions-read": ("starsessions", "/read"),
    "starsessions-write": ("starsessions", "/write"),
}
"""The cases; ``sqlite-read`` and ``sqlite-write`` (not in the ratios) are the embedded default
store's read and write (every thread is counted: a write handed to a worker thread, and the
background checkpoints, are part of its cost). ``redis-read`` is a read answered by the
Redis store's client-side cache (on by default), against a throwaway ``redis-server`` this
script starts: every measured request must be a cache hit (the child checks the cache's
counters, else fails). Only the request's thread is counted: the cache's channel thread wakes
every 50 ms of wall time, and under valgrind's ~50x slowdown that would charge it to requests.
The entries' maximum age is raised to 60 s (``client_cache_ttl``, its maximum) and the
heartbeat's tolerance to an hour for the same reason: at the default 5 s (1.5 s) of valgrind
time, entries would age out (the cache be dropped) mid-run and be re-read from Redis. A run of
2,200 requests takes ~45 s under valgrind; much larger ``--requests`` age entries out anyway,
which the hit check reports.

``redis-write`` sets one key per request, like ``memory-write``, on 64 seeded sessions in turn
(as the socket benchmark's many visitors do): each write's own invalidation comes back and the
cache reads the record again in the background, and a session's next request must find it
cached (the hit check again). ``starsessions-read`` and ``starsessions-write`` are starsessions
on the same Redis (redis-py's asyncio client, one ``GET`` and, on a write, one ``SET``): the peer
the Redis store is measured against over sockets."""

REDIS_ENV = "COATCHECK_BENCH_REDIS"
"""The throwaway Redis' URL, handed to the ``--child`` runs."""


async def child(case: str, n: int) -> None:
    from _harness import Jar
    from _targets import (
        asgi_baseline,
        coatcheck_target,
        starlette_cookie_target,
        starsessions_target,
    )

    layer, path = CASES[case]
    store: Any = None  # coatcheck's layers only
    if layer == "bare":
        target = asgi_baseline()
    elif layer == "starlette":
        target = starlette_cookie_target()
    elif layer == "starsessions":
        from redis.asyncio import Redis
        from starsessions.stores.redis import RedisStore

        connection = Redis.from_url(os.environ[REDIS_ENV])
        store = RedisStore(connection=connection, prefix=f"bench:{os.getpid()}:starsessions:")
        target = starsessions_target("Redis", "redis", store)
    else:
        from coatcheck import async_store_from_url

        urls = {
            "memory": "memory://",
            "sealed": "sealed://",
            "sqlite": f"sqlite:///{tempfile.mkdtemp()}/coatcheck.sqlite3",
            "redis": f"{os.environ.get(REDIS_ENV, '')}?prefix=bench:{os.getpid()}:coatcheck:"
            "&client_cache_ttl=60",
        }
        if layer == "redis":
            from coatcheck.stores import _redis_cache

            # valgrind runs the channel thread's heartbeat ~50x slower too: a late PING answer
            # would drop the cache mid-run (a hit checks the same bound either way).
            _redis_cache.STALE_AFTER = 3600.0
            # Nor does the channel thread read the channels every 50 ms: the requests' own
            # reads of them (every hit and write does one) then do all of that work, in the
            # counted thread, the same way in every run.
            _redis_cache.DRAIN_INTERVAL = 3600.0
        store = async_store_from_url(urls[layer])
        target = coatcheck_target(layer, layer, store)
    request = target.request
    visitors = 64 if case == "redis-write" else 1
    jars = [Jar() for _ in range(visitors)]
    if layer != "bare":
        cache = getattr(store, "cache", None)
        if cache is not None:
            await cache_live(cache)
        for jar in jars:
            status, set_cookies = await request("/seed", "")  # type: ignore[misc]
            jar.update(set_cookies)
            if status != 200:
                raise SystemExit(f"seeding failed: {status}")
    cookies = [jar.header if layer != "bare" else "" for jar in jars]
    cache = getattr(store, "cache", None) if layer == "redis" else None
    if cache is not None:
        for cookie in cookies:
            await cached(cache, request, path, cookie)
        hits, misses = cache.stats.hits, cache.stats.misses
    gc.collect()
    for i in range(n):
        # Cookies are kept as a browser keeps them (as run.py does): a signed or sealed write
        # sends a new cookie, and the next request carries it.
        turn = i % visitors
        status, set_cookies = await request(path, cookies[turn])  # type: ignore[misc]
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        if set_cookies:
            jars[turn].update(set_cookies)
            cookies[turn] = jars[turn].header
    if cache is not None and (cache.stats.hits - hits, cache.stats.misses - misses) != (n, 0):
        raise SystemExit(
            f"{n} reads made {cache.stats.hits - hits} cache hits and "
            f"{cache.stats.misses - misses} misses: not what {case} measures"
        )
    for close in target.closers:
        result = close()
        if result is not None:
            await result


async def cache_live(cache: Any) -> None:
    """Wait until the Redis client cache serves from memory (a first lookup starts it)."""
    cache.lookup("warm-up")
    deadline = time.monotonic() + 60
    while not cache.live:
        if time.monotonic() > deadline:
            raise SystemExit("the Redis client cache did not come up")
        await asyncio.sleep(0.05)


async def cached(cache: Any, request: Any, path: str, cookie: str) -> None:
    """Wait until ``path`` is answered from the cache 20 times in a row: the seeding write's own
    invalidation, and the re-read it causes, are then behind us."""
    deadline = time.monotonic() + 60
    streak = 0
    while streak < 20:
        if time.monotonic() > deadline:
            raise SystemExit("the seeded session is not answered from the Redis client cache")
        before = cache.stats.hits
        status, _ = await request(path, cookie)
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        streak = streak + 1 if cache.stats.hits == before + 1 else 0
        if not streak:
            await asyncio.sleep(0.05)


def count(case: str, n: int, redis_url: str | None) -> int:
    main_thread_only = CASES[case][0] == "redis"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        if redis_url is not None:
            env[REDIS_ENV] = redis_url
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                f"--log-file={Path(tmp) / 'valgrind.log'}",
                f"--separate-threads={'yes' if main_thread_only else 'no'}",
                sys.executable,
                __file__,
                "--child",
                case,
                str(n),
            ],
            check=False,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode:
            tail = "\n".join(done.stderr.splitlines()[-5:])
            raise SystemExit(f"{case} x {n} failed under valgrind:\n{tail}")
        if main_thread_only:  # thread 1's file: the request's thread
            out = out.with_name(out.name + "-01")
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise SystemExit(f"no totals in callgrind's output for {case}")
        return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child(args.child[0], int(args.child[1])))
        return 0

    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)} (known: {', '.join(CASES)})")
    jobs = [(c, n) for c in cases for n in (args.warmup, args.warmup + args.requests)]
    from _harness import ThrowawayRedis

    server: ThrowawayRedis | None = None
    if any(CASES[c][0] in ("redis", "starsessions") for c in cases):
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("the Redis cases need redis-server on PATH")
        server = ThrowawayRedis(executable)
    redis_url = None if server is None else server.url
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            counted = pool.map(lambda job: count(job[0], job[1], redis_url), jobs)
            totals = dict(zip(jobs, counted, strict=True))
    finally:
        if server is not None:
            server.stop()
    per = {
        c: (totals[(c, args.warmup + args.requests)] - totals[(c, args.warmup)]) / args.requests
        for c in cases
    }
    bare = per.get("bare", 0.0)
    print(f"Instructions per request ({args.requests} requests, callgrind):")
    for case in cases:
        overhead = "" if case == "bare" else f"   overhead {per[case] - bare:10,.0f}"
        print(f"  {case:16} {per[case]:10,.0f}{overhead}")

    def ratio(label: str, a: str, b: str, *, overhead: bool) -> None:
        if a in per and b in per and (not overhead or "bare" in per):
            num = per[a] - (bare if overhead else 0)
            den = per[b] - (bare if overhead else 0)
            print(f"  {label:48} {num / den:5.2f}x")

    print("Ratios:")
    ratio(
        "memory read overhead / Starlette read overhead",
        "memory-read",
        "starlette-read",
        overhead=True,
    )
    ratio(
        "memory write overhead / Starlette write overhead",
        "memory-write",
        "starlette-write",
        overhead=True,
    )
    ratio("sealed read / Starlette read", "sealed-read", "starlette-read", overhead=False)
    ratio(
        "Redis cached read overhead / memory read overhead",
        "redis-read",
        "memory-read",
        overhead=True,
    )
    ratio(
        "Redis cached read overhead / starsessions read overhead",
        "redis-read",
        "starsessions-read",
        overhead=True,
    )
    ratio(
        "Redis write overhead / starsessions write overhead",
        "redis-write",
        "starsessions-write",
        overhead=True,
    )
    ratio(
        "sealed read overhead / Starlette read overhead",
        "sealed-read",
        "starlette-read",
        overhead=True,
    )
    ratio("sealed write / Starlette write", "sealed-write", "starlette-write", overhead=False)
    ratio(
        "sealed write overhead / Starlette write overhead",
        "sealed-write",
        "starlette-write",
        overhead=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
