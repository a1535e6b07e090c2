"""Tail latency of a session read over real sockets: coatcheck on SQLite next to bare Starlette.

    .venv/bin/python benchmarks/sqlite_latency.py [--rounds 3] [--duration 10] [--connections 32]
                                                  [--workers 1] [--store URL]

Starts two uvicorn servers (uvloop + httptools when installed: ``pip install uvloop httptools``)
on free loopback ports: a bare Starlette app, and the same app behind coatcheck's
``SessionMiddleware`` on a SQLite file in a temporary folder (or on ``--store``). It signs a
visitor in once, then loads ``GET /read`` (the handler reads the signed-in user id and a 5-item
cart; nothing is written) with ``wrk -t1 -c<connections> --latency``, alternating the two
servers round after round. It prints per round and as medians: requests/s, the ratio to bare
Starlette in the same round, p50 and p99, and p99/p50. Any non-2xx answer aborts the run.

``--workers 2`` runs the coatcheck server as two processes on the one database file (the
multi-process setup SQLite must stay correct in). Needs ``wrk`` (``apt-get install -y wrk``).
Not part of the test suite: the machine is shared, so compare the ratios of one run only.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP_ENV = "COATCHECK_BENCH_APP"  # "bare" or a store URL
SECRET_ENV = "COATCHECK_BENCH_SECRET"
COOKIE = "coatcheck_session"


# --- the app (imported by uvicorn in the server processes) -------------------------------------


def create_app() -> Any:
    """The ASGI app uvicorn serves: bare Starlette, or Starlette behind coatcheck on a store."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    target = os.environ[APP_ENV]
    if target == "bare":

        async def bare(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/read", bare), Route("/seed", bare)])

    from coatcheck import AsyncSessionManager, SessionConfig, login
    from coatcheck._core.config import CookieConfig
    from coatcheck.asgi import SessionMiddleware
    from coatcheck.integrations.starlette import get_session
    from coatcheck.stores.url import async_store_from_url

    async def seed(request: Request) -> PlainTextResponse:
        session = get_session(request)
        login(session, "42")
        session["cart"] = [{"sku": f"SKU-{i}", "qty": i + 1, "price_cents": 1999} for i in range(5)]
        return PlainTextResponse("ok")

    async def read(request: Request) -> PlainTextResponse:
        session = get_session(request)
        ok = session.user_id == "42" and len(session.get("cart") or ()) == 5
        return PlainTextResponse("ok" if ok else "no session", status_code=200 if ok else 409)

    manager = AsyncSessionManager(
        async_store_from_url(target),
        SessionConfig(secret=os.environ[SECRET_ENV], cookie=CookieConfig(secure=False)),
    )
    app = Starlette(routes=[Route("/read", read), Route("/seed", seed)])
    app.add_middleware(SessionMiddleware, manager=manager)
    return app


# --- the runner ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


class Server:
    """A uvicorn process serving :func:`create_app` for ``target`` on a free port."""

    def __init__(
        self, target: str, secret: str, workers: int, log: Path, src: str | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable, "-m", "uvicorn", "sqlite_latency:create_app", "--factory",
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
            "--loop", "uvloop" if _has("uvloop") else "asyncio",
            "--http", "httptools" if _has("httptools") else "h11",
        ]  # fmt: skip
        env = {**os.environ, APP_ENV: target, SECRET_ENV: secret}
        if src is not None:  # another coatcheck (an older checkout's src/) for this server
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn did not listen on {self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def seed_cookie(base: str) -> str:
    """Sign a visitor in through ``/seed`` and return the Cookie header that carries it."""
    with urllib.request.urlopen(base + "/seed", timeout=10) as response:  # noqa: S310 - loopback
        cookies = response.headers.get_all("set-cookie") or []
    for raw in cookies:
        name, _, rest = raw.partition("=")
        if name.strip() == COOKIE:
            return f"{COOKIE}={rest.split(';', 1)[0]}"
    return ""  # the bare app sets no cookie


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Run:
    rps: float
    p50: float  # ms
    p99: float  # ms
    errors: int


def run_wrk(base: str, cookie: str, duration: float, connections: int) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", base + "/read"]
    if cookie:
        argv[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        latency[pct] = float(value) * _UNITS[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    socket_errors = re.search(r"Socket errors:.*", out)
    if socket_errors:
        print("  wrk:", socket_errors.group(0))
    return Run(rps, latency["50"], latency["99"], errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for coatcheck")
    parser.add_argument(
        "--store",
        action="append",
        help="a store URL to measure (repeatable; default: a SQLite file in a temp folder); "
        "sqlite is that temp file",
    )
    parser.add_argument(
        "--baseline-src",
        help="also measure SQLite on the coatcheck in this src/ folder (e.g. an older commit: "
        "git archive <rev> src | tar -x -C /tmp/old; --baseline-src /tmp/old/src)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    folder = Path(tempfile.mkdtemp(prefix="coatcheck-sqlite-latency-"))
    sqlite_url = f"sqlite:///{folder / 'sessions.db'}"
    stores = [sqlite_url if s == "sqlite" else s for s in args.store or ["sqlite"]]
    baseline_url = f"sqlite:///{folder / 'baseline.db'}"
    if args.baseline_src:
        stores.append(baseline_url)
    secret = secrets.token_urlsafe(32)
    servers: list[Server] = []
    try:
        bare = Server("bare", secret, 1, folder / "bare.log")
        servers.append(bare)
        targets: list[tuple[str, Server, str]] = []
        for n, store in enumerate(stores):
            src = args.baseline_src if store == baseline_url else None
            server = Server(store, secret, args.workers, folder / f"coatcheck-{n}.log", src)
            servers.append(server)
            cookie = seed_cookie(server.base)
            if not cookie:
                raise RuntimeError(f"the coatcheck server on {store} set no session cookie")
            targets.append((store, server, cookie))
        # Warm every server up (connections, caches, the SQLite file) before anything is timed.
        run_wrk(bare.base, "", 2, args.connections)
        for _, server, cookie in targets:
            run_wrk(server.base, cookie, 2, args.connections)
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds, "
            f"coatcheck on {args.workers} worker(s); load {os.getloadavg()[0]:.2f}"
        )
        print(
            f"{'round':>5} {'store':<28} {'req/s':>7} {'x bare':>7} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'p99/p50':>8}"
        )
        results: dict[str, list[tuple[Run, Run]]] = {store: [] for store in stores}
        for n in range(args.rounds):
            # Rotate the order every round, so a burst of load on the shared machine does not
            # always land on the same server.
            order: list[tuple[str, Server, str]] = [("bare", bare, ""), *targets]
            shift = n % len(order)
            order = order[shift:] + order[:shift]
            runs = {
                name: run_wrk(server.base, cookie, args.duration, args.connections)
                for name, server, cookie in order
            }
            b = runs["bare"]
            print(
                f"{n + 1:>5} {'bare Starlette':<28} {b.rps:>7.0f} {1:>7.2f} {b.p50:>7.2f}"
                f" {b.p99:>7.2f} {b.p99 / b.p50:>8.1f}"
            )
            for store in stores:
                c = runs[store]
                # A non-2xx answer means the run did not measure what it says (no session: 409),
                # except on the baseline, whose 503s (store timeouts) are part of its story.
                if b.errors or (c.errors and store != baseline_url):
                    raise RuntimeError(f"non-2xx answers: {store} {c.errors}, bare {b.errors}")
                results[store].append((b, c))
                print(
                    f"{'':>5} {_label(store, sqlite_url, baseline_url):<28} {c.rps:>7.0f}"
                    f" {c.rps / b.rps:>7.2f}"
                    f" {c.p50:>7.2f} {c.p99:>7.2f} {c.p99 / c.p50:>8.1f}"
                    + (f"  ({c.errors} non-2xx)" if c.errors else "")
                )
        print(f"medians over {args.rounds} rounds (load {os.getloadavg()[0]:.2f}):")
        for store, rows in results.items():
            ratios = [c.rps / b.rps for b, c in rows]
            label = _label(store, sqlite_url, baseline_url)
            print(
                f"  {label:<28} x bare {statistics.median(ratios):.2f} "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f}), "
                f"p50 {statistics.median(c.p50 for _, c in rows):.2f} ms, "
                f"p99 {statistics.median(c.p99 for _, c in rows):.2f} ms, "
                f"p99/p50 {statistics.median(c.p99 / c.p50 for _, c in rows):.1f}"
            )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _label(store: str, sqlite_url: str, baseline_url: str) -> str:
    if store == sqlite_url:
        return "coatcheck sqlite (temp file)"
    if store == baseline_url:
        return "baseline-src sqlite"
    return "coatcheck " + store.split("?")[0].replace("postgres@", "").replace("root@", "")[:18]


if __name__ == "__main__":
    raise SystemExit(main())
