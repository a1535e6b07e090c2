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
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
}
"""The cases; ``sqlite-read`` (not in the ratios) is the embedded default store's read, a store
call run in a worker thread under ``store_timeout``."""


async def child(case: str, n: int) -> None:
    from _harness import Jar
    from _targets import asgi_baseline, coatcheck_target, starlette_cookie_target

    layer, path = CASES[case]
    if layer == "bare":
        target = asgi_baseline()
    elif layer == "starlette":
        target = starlette_cookie_target()
    else:
        from coatcheck import async_store_from_url

        urls = {"memory": "memory://", "sealed": "sealed://"}
        url = urls.get(layer) or f"sqlite:///{tempfile.mkdtemp()}/coatcheck.sqlite3"
        store = async_store_from_url(url)
        target = coatcheck_target(layer, layer, store)
    request = target.request
    jar = Jar()
    if layer != "bare":
        status, set_cookies = await request("/seed", "")  # type: ignore[misc]
        jar.update(set_cookies)
        if status != 200:
            raise SystemExit(f"seeding failed: {status}")
    cookie = jar.header if layer != "bare" else ""
    gc.collect()
    for _ in range(n):
        # Cookies are kept as a browser keeps them (as run.py does): a signed or sealed write
        # sends a new cookie, and the next request carries it.
        status, set_cookies = await request(path, cookie)  # type: ignore[misc]
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        if set_cookies:
            jar.update(set_cookies)
            cookie = jar.header


def count(case: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                case,
                str(n),
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
    jobs = [(c, n) for c in cases for n in (args.warmup, args.warmup + args.requests)]
    with ThreadPoolExecutor(args.jobs) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: count(*job), jobs), strict=True))
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
