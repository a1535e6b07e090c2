#!/usr/bin/env python3
"""Where a coatcheck read spends its time, in-process, next to Starlette's signed cookie.

    python benchmarks/profile_read.py [--requests 20000] [--top 25] [--save read.prof]
    python benchmarks/profile_read.py --path /write [--store redis://127.0.0.1:6379/0?prefix=p:]

The request is the one ``run.py`` and ``sockets.py`` call ``read``: a signed-in visitor (user
``"42"``, a 5-item cart) opens a page that reads the session and changes nothing, through
coatcheck's ASGI ``SessionMiddleware`` on the memory store. That is the per-request work of the
session layer alone: cookie parse, token check, record decode, change detection and response
headers, with no network and no store latency.

1. **Timing**, no profiler attached: batches of reads through a bare ASGI app (the baseline),
   coatcheck (memory store) and Starlette's ``SessionMiddleware`` (a signed cookie), interleaved
   in rounds. Each session layer's overhead is its batch mean minus the bare batch next to it;
   the ratio is coatcheck's overhead over Starlette's (the target in issue 9 is at most 1.5).
2. **Profile**: the same coatcheck reads under ``cProfile``; the top functions by own time, and
   own time summed per source file, so the stages above can be read off (``_core/cookies.py``,
   ``_core/tokens.py``, ``_core/record.py``, ``_core/session.py``, ``_core/responses.py`` ...).
   cProfile slows small functions down more than large ones: use it to find hot spots, and the
   timing above for the real cost.

``--path /write`` measures the benchmark's write instead (one key set on the same session, so
a new cookie-less response for coatcheck and a re-signed cookie for Starlette), and ``--store``
profiles coatcheck on another store URL (the timing stays on the memory store).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import AsyncRequest, BenchError, Jar
from _targets import asgi_baseline, coatcheck_target, starlette_cookie_target


async def seed(request: AsyncRequest) -> Jar:
    jar = Jar()
    status, set_cookies = await request("/seed", "")
    jar.update(set_cookies)
    if status != 200 or not jar.cookies:
        raise BenchError(f"seeding a session failed (status {status})")
    return jar


PATH = "/read"


async def batch(request: AsyncRequest, cookie: str, n: int, path: str | None = None) -> float:
    """µs per request over ``n`` requests to ``path`` (``/read`` unless ``--path``)."""
    path = path or PATH
    start = time.perf_counter_ns()
    for _ in range(n):
        status, _ = await request(path, cookie)
        if status != 200:
            raise BenchError(f"{path} answered {status}")
    return (time.perf_counter_ns() - start) / n / 1000


async def timing(rounds: int, n: int) -> dict[str, float]:
    from coatcheck import async_store_from_url

    bare = asgi_baseline().request
    coatcheck = coatcheck_target("memory", "memory", async_store_from_url("memory://"))
    starlette = starlette_cookie_target()
    cookies = {
        "coatcheck": (await seed(coatcheck.request)).header,  # type: ignore[arg-type]
        "starlette": (await seed(starlette.request)).header,  # type: ignore[arg-type]
    }
    layers: dict[str, AsyncRequest] = {
        "coatcheck": coatcheck.request,  # type: ignore[dict-item]
        "starlette": starlette.request,  # type: ignore[dict-item]
    }
    for name, request in layers.items():  # warm-up
        await batch(request, cookies[name], n // 4)
    await batch(bare, "", n // 4, "/anon")  # type: ignore[arg-type]
    totals: dict[str, list[float]] = defaultdict(list)
    overheads: dict[str, list[float]] = defaultdict(list)
    gc.collect()
    gc.freeze()
    for round_no in range(rounds):
        for name, request in layers.items() if round_no % 2 else reversed(layers.items()):
            before = await batch(bare, "", n, "/anon")  # type: ignore[arg-type]
            mine = await batch(request, cookies[name], n)
            after = await batch(bare, "", n, "/anon")  # type: ignore[arg-type]
            totals[name].append(mine)
            totals["bare"].append((before + after) / 2)
            overheads[name].append(mine - (before + after) / 2)
    for close in coatcheck.closers:
        result = close()
        if result is not None:
            await result
    summary = {f"{k} total": statistics.median(v) for k, v in totals.items()}
    summary.update({f"{k} overhead": statistics.median(v) for k, v in overheads.items()})
    summary["spread"] = max(statistics.pstdev(v) / statistics.median(v) for v in overheads.values())
    return summary


async def profiled(n: int, store_url: str) -> cProfile.Profile:
    from coatcheck import async_store_from_url

    target = coatcheck_target("memory", "memory", async_store_from_url(store_url))
    request: AsyncRequest = target.request  # type: ignore[assignment]
    cookie = (await seed(request)).header
    await batch(request, cookie, 1000)  # warm-up
    profile = cProfile.Profile()
    profile.enable()
    await batch(request, cookie, n)
    profile.disable()
    for close in target.closers:
        result = close()
        if result is not None:
            await result
    return profile


def by_file(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time summed per source file (shortened), largest first."""
    totals: dict[str, float] = defaultdict(float)
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, own, _, _) in raw.items():
        marker = "/coatcheck/"
        if marker in filename:
            short = "coatcheck/" + filename.split(marker, 1)[1]
        elif filename.startswith("~") or filename == "<built-in>":
            short = "(builtins: C functions)"
        else:
            parts = Path(filename).parts
            short = "/".join(parts[-2:]) if len(parts) > 1 else filename
        totals[short] += own
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000, help="profiled reads (20000)")
    parser.add_argument("--batch", type=int, default=2_000, help="reads per timed batch (2000)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (10)")
    parser.add_argument("--top", type=int, default=25, help="functions to list (25)")
    parser.add_argument(
        "--sort", default="tottime", choices=("tottime", "cumulative"), help="function order"
    )
    parser.add_argument("--save", type=Path, help="also write the raw profile (for snakeviz)")
    parser.add_argument("--no-timing", action="store_true", help="profile only")
    parser.add_argument("--path", default="/read", choices=("/read", "/write"), help="request")
    parser.add_argument("--store", default="memory://", help="store URL to profile (memory://)")
    args = parser.parse_args(argv)
    global PATH
    PATH = args.path
    kind = "read" if PATH == "/read" else "write"

    if not args.no_timing:
        t = asyncio.run(timing(args.rounds, args.batch))
        ratio = t["coatcheck overhead"] / t["starlette overhead"]
        print(
            f"In-process {kind}, µs per request (median of {args.rounds} rounds of "
            f"{args.batch}; load average {os.getloadavg()[0]:.2f}):"
        )
        print(f"  bare ASGI app                          {t['bare total']:7.1f}")
        print(
            f"  Starlette SessionMiddleware (cookie)   {t['starlette total']:7.1f}"
            f"   overhead {t['starlette overhead']:6.1f}"
        )
        print(
            f"  coatcheck, memory store                {t['coatcheck total']:7.1f}"
            f"   overhead {t['coatcheck overhead']:6.1f}"
        )
        print(
            f"  coatcheck / Starlette overhead: {ratio:.2f}x  (target <= 1.5x; "
            f"total {t['coatcheck total'] / t['starlette total']:.2f}x; round-to-round spread "
            f"of the overheads up to {100 * t['spread']:.0f}%)"
        )
        print()

    profile = asyncio.run(profiled(args.requests, args.store))
    if args.save is not None:
        profile.dump_stats(str(args.save))
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"cProfile of {args.requests} coatcheck {kind}s on {args.store}: "
        f"{1e6 * total / args.requests:.1f} µs per "
        "request under the profiler"
    )
    print()
    print("Own time per source file:")
    for name, own in by_file(stats)[:15]:
        print(f"  {100 * own / total:5.1f}%  {1e6 * own / args.requests:6.2f} µs  {name}")
    print()
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    print("\n".join(out.getvalue().splitlines()[3:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
