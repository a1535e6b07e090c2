"""Redis reads with and without coatcheck's client cache, next to starsessions on Redis.

    python benchmarks/redis_cache.py [--rounds 3] [--seconds 8] [--connections 32]

Starts a throwaway ``redis-server`` on a free port, then, per round and in a shuffled order,
serves each app below with uvicorn (1 worker, uvloop + httptools) and loads ``GET /read`` (a
signed-in session read by the handler, nothing written) with ``wrk -t1 -cN``; it also times the
same apps in-process (direct ASGI calls, no sockets). Prints req/s, p50 and p99, and each app's
ratio to the bare app in the same round. Needs ``wrk`` (``apt-get install wrk``) and the
packages of benchmarks/requirements.txt plus uvloop and httptools. Not part of the tests.

Apps: ``bare`` (no sessions), ``cached`` (coatcheck, Redis, client cache on: the default),
``uncached`` (coatcheck, Redis, ``client_cache=0``), ``starsessions`` (starsessions 2
``RedisStore``, rolling lifetime, as its docs recommend).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

APPS = ("bare", "cached", "uncached", "starsessions")
CART = [{"sku": f"sku-{n}", "qty": n, "price": 9.99 + n} for n in range(5)]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the apps ------------------------------------------------------------------------------------


def inner_app(read: Callable[[dict[str, Any]], bool], seed: Callable[[dict[str, Any]], None]):
    """A bare ASGI app: ``/seed`` signs a visitor in, ``/read`` reads the session."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = 200
        if scope["path"] == "/seed":
            seed(scope)
        elif scope["path"] == "/read" and not read(scope):
            status = 409
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def build(kind: str, redis_url: str) -> ASGIApp:
    prefix = f"bench-cache:{secrets.token_hex(4)}:"
    if kind == "bare":
        return inner_app(lambda scope: True, lambda scope: None)
    if kind in ("cached", "uncached"):
        from coatcheck import AsyncSessionManager, SessionConfig, login
        from coatcheck.asgi import SessionMiddleware
        from coatcheck.stores.redis import AsyncRedisStore

        def seed(scope: dict[str, Any]) -> None:
            login(scope["session"], "42")
            scope["session"]["cart"] = CART

        def read(scope: dict[str, Any]) -> bool:
            session = scope["session"]
            return session.user_id == "42" and len(session.get("cart") or ()) == 5

        flag = "1" if kind == "cached" else "0"
        store = AsyncRedisStore.from_url(f"{redis_url}?prefix={prefix}&client_cache={flag}")
        manager = AsyncSessionManager(store, SessionConfig(secret=secrets.token_urlsafe(32)))
        return SessionMiddleware(inner_app(read, seed), manager=manager)
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from starsessions.stores.redis import RedisStore

    def seed_star(scope: dict[str, Any]) -> None:
        scope["session"].update({"user_id": "42", "cart": CART})

    def read_star(scope: dict[str, Any]) -> bool:
        session = scope["session"]
        return session.get("user_id") == "42" and len(session.get("cart") or ()) == 5

    star = SessionAutoloadMiddleware(inner_app(read_star, seed_star))
    return SessionMiddleware(
        star,
        store=RedisStore(url=redis_url, prefix=prefix + "starsessions:"),
        lifetime=1800,
        rolling=True,
        cookie_https_only=False,
    )


# --- in-process ----------------------------------------------------------------------------------


async def call(app: ASGIApp, path: str, cookie: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    headers = [(b"host", b"bench"), (b"cookie", cookie.encode())] if cookie else [(b"host", b"b")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("bench", 80),
    }
    started: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)

    await app(scope, receive, send)
    return started["status"], started.get("headers", [])


def cookie_of(headers: list[tuple[bytes, bytes]]) -> str:
    pairs = [
        value.decode().split(";", 1)[0] for name, value in headers if name.lower() == b"set-cookie"
    ]
    return "; ".join(pairs)


async def in_process(kind: str, redis_url: str, requests: int) -> float:
    """Mean microseconds per ``GET /read`` called directly (no sockets)."""
    app = build(kind, redis_url)
    _status, headers = await call(app, "/seed", "")
    cookie = cookie_of(headers)
    for _ in range(200):
        status, _ = await call(app, "/read", cookie)
        assert status == 200, (kind, status)
    started = time.perf_counter()
    for _ in range(requests):
        await call(app, "/read", cookie)
    return (time.perf_counter() - started) / requests * 1e6


# --- over sockets --------------------------------------------------------------------------------


def serve(kind: str, redis_url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build(kind, redis_url),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def wrk(kind: str, redis_url: str, seconds: int, connections: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--redis-url", redis_url, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/seed", timeout=2) as reply:
                    cookie = "; ".join(
                        value.split(";", 1)[0]
                        for value in reply.headers.get_all("set-cookie") or []
                    )
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if cookie:
            command += ["-H", f"Cookie: {cookie}"]
        subprocess.run(
            [*command[:3], "-d2s", *command[4:], f"http://127.0.0.1:{port}/read"],
            check=True,
            capture_output=True,
        )  # warm-up
        out = subprocess.run(
            [*command, f"http://127.0.0.1:{port}/read"], check=True, capture_output=True, text=True
        ).stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if "Non-2xx" in out:
        raise RuntimeError(f"{kind}: non-2xx answers\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
    }


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# --- driver --------------------------------------------------------------------------------------


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    folder = tempfile.mkdtemp(prefix="coatcheck-bench-redis-")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0", folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000, help="in-process requests per app")
    parser.add_argument("--serve", choices=APPS)
    parser.add_argument("--redis-url")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.redis_url, args.port)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    redis_process, redis_url, folder = start_redis()
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in APPS}
    try:
        for round_number in range(args.rounds):
            order = list(APPS)
            random.shuffle(order)
            for kind in order:
                measured = wrk(kind, redis_url, args.seconds, args.connections)
                measured["us"] = asyncio.run(in_process(kind, redis_url, args.requests))
                results[kind].append(measured)
                print(f"round {round_number + 1} {kind:12} {measured}", file=sys.stderr)
    finally:
        redis_process.terminate()
        redis_process.wait()
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s GET /read; {args.rounds} rounds; medians"
    )
    print()
    print("| app | req/s | x bare | x starsessions | p50 ms | p99 ms | in-process µs/req |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in APPS:
        rows = results[kind]
        ratio_bare = statistics.median(
            row["rps"] / bare["rps"] for row, bare in zip(rows, results["bare"], strict=True)
        )
        ratio_star = statistics.median(
            row["rps"] / star["rps"]
            for row, star in zip(rows, results["starsessions"], strict=True)
        )
        print(
            f"| {kind} | {statistics.median(r['rps'] for r in rows):.0f} | {ratio_bare:.2f} | "
            f"{ratio_star:.2f} | {statistics.median(r['p50'] for r in rows):.2f} | "
            f"{statistics.median(r['p99'] for r in rows):.2f} | "
            f"{statistics.median(r['us'] for r in rows):.0f} |"
        )


if __name__ == "__main__":
    main()
