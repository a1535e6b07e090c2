#!/usr/bin/env python3
"""Soak: two ``coatcheck demo`` processes on one store, minutes of mixed traffic, a purge of
expired sessions and a store restart in the middle, invariants checked on every answer.

    .venv/bin/python benchmarks/soak.py --minutes 2                    # every store in turn
    .venv/bin/python benchmarks/soak.py --minutes 5 --stores redis --visitors 24

Each server store runs as a throwaway server started here from the installed binaries, on a free
loopback port (never the shared servers on the standard ports): PostgreSQL and MariaDB through
``tests/sql_servers.py``, Redis through ``tests/redis_servers.py`` with an append-only file
(``appendfsync always``), so that a restart keeps what was acknowledged. The restart is a crash:
SIGKILL, ``--down`` seconds away, then the same server on the same port and data. SQLite has no
server: for it, one of the two demo processes is killed and started again instead.

Traffic: ``--visitors`` browsers, each registered once, then in a loop (with ``--think`` seconds
between requests) reading ``/api/me``, adding to and reading the cart, listing sessions, and
now and then logging out and in again; each request goes to either process at random (the
cookie works on both). Before the traffic starts, ``--purge`` expired sessions are written to the
store; a quarter of the way in, ``coatcheck purge`` deletes them while the traffic runs; the restart
comes at 60 %, or once the purge is done (at the latest at 90 %).

Invariants, checked on every answer and once more at the end:

- no answer is a 5xx other than 503 (``500s``);
- a signed-in browser is never answered as anonymous (``silent logouts``) nor as another user;
- every cart item the app acknowledged (201) is in the cart afterwards (``lost writes``).

Connection errors (a demo process restarting) are counted as ``conn errors``. Latency is from
the client's side, including the client's own scheduling on a busy machine, over the session
requests (logins and registrations wait for an argon2 hash and are left out): ``p99`` is over all
of them, ``p99 steady`` leaves out the restart window (kill to recovery + 1 s), and
``p99 purging`` is over the requests made while the purge ran. Nothing here asserts on a time;
the script exits non-zero when an invariant was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The throwaway servers and the demo launcher are the test suite's own helpers.
import tests.redis_servers  # noqa: E402
import tests.sql_servers  # noqa: E402
from tests.demo.server import demo_server  # noqa: E402
from tests.redis_servers import (  # noqa: E402
    RedisServer,
    require_redis_binaries,
    start_on_a_free_port,
)
from tests.sql_servers import SQLServer, sql_server  # noqa: E402

from coatcheck._core.record import SessionRecord  # noqa: E402
from coatcheck._core.tokens import hash_secret, new_id, new_secret  # noqa: E402

# A crashed server replays its log when it starts again (Redis its append-only file, InnoDB its
# redo log): on a busy machine that takes longer than the tests' start timeouts allow.
tests.redis_servers.START_TIMEOUT = 120.0
tests.sql_servers.START_TIMEOUT = 120.0

STORES = ("sqlite", "postgres", "mariadb", "redis")
LOGOUT_EVERY = 30.0  # seconds a browser stays signed in, on average, before logging out
FULL_CART = 90  # the demo takes 100 items; a browser logs out before that
PASSWORD = "correct horse battery"
SECRET = "soak-secret-" + secrets.token_urlsafe(24)
PURGE_AT = 0.25
RESTART_AT = 0.6
LATEST_RESTART = 0.9


_addresses = iter(
    f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(0x010101, 0xFFFFFF)
)


def browser() -> httpx.AsyncClient:
    """A new browser on a loopback address of its own: the demo throttles logins per address
    (30 per 15 minutes, successes included), and real visitors come from many addresses."""
    transport = httpx.AsyncHTTPTransport(local_address=next(_addresses))
    return httpx.AsyncClient(timeout=30, transport=transport)


@dataclass
class Visitor:
    """One person (an account), their current browser, and what the app must hold for them."""

    http: httpx.AsyncClient
    email: str
    user_id: str = ""
    signed_in: bool = False
    cart: list[str] = field(default_factory=list)
    """Items the app acknowledged with a 201, in order."""
    maybe: set[str] = field(default_factory=set)
    """Items whose request failed (503 or a broken connection): the write may or may not have
    happened, so they may appear in the cart but need not."""
    logout_at: float = 0.0


@dataclass
class Figures:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    conn_errors: int = 0
    silent_logouts: int = 0
    wrong_user: int = 0
    lost_writes: int = 0
    acknowledged_writes: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(started, seconds) of every request that got an answer."""
    problems: list[str] = field(default_factory=list)
    killed_at: float | None = None
    restarted_at: float | None = None
    recovered_at: float | None = None
    purge: tuple[float, float] | None = None
    purged: str = ""
    first_503: float | None = None
    last_503: float | None = None
    unavailable: list[float] = field(default_factory=list)
    """When each 503 came."""
    started: float = 0.0
    start_took: float | None = None
    """Seconds the restarted server took to accept connections (crash recovery included)."""
    store_failures: Counter[str] = field(default_factory=Counter)

    def note(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)


class Traffic:
    """The visitors' loop against two demo processes."""

    def __init__(self, bases: list[str], figures: Figures, think: float) -> None:
        self.bases = bases
        self.figures = figures
        self.think = think
        self.items = 0

    async def send(
        self, visitor: Visitor, method: str, path: str, **kwargs: object
    ) -> httpx.Response | None:
        base = random.choice(self.bases)
        headers = {}
        if method != "GET" and "XSRF-TOKEN" in visitor.http.cookies:
            headers["x-xsrf-token"] = visitor.http.cookies["XSRF-TOKEN"]
        started = time.monotonic()
        self.figures.requests += 1
        try:
            response = await visitor.http.request(
                method,
                base + path,
                headers=headers,
                **kwargs,  # type: ignore[arg-type]
            )
        except httpx.TransportError:
            self.figures.conn_errors += 1
            return None
        now = time.monotonic()
        if path not in ("/api/register", "/api/login"):  # these wait for an argon2 hash
            self.figures.latencies.append((started, now - started))
        status = response.status_code
        self.figures.statuses[status] += 1
        if status == 503:
            self.figures.unavailable.append(now)
            if self.figures.killed_at is not None and now >= self.figures.killed_at:
                self.figures.first_503 = self.figures.first_503 or now
                self.figures.last_503 = now
            return None
        if status >= 500:
            self.figures.note(f"{method} {path}: {status} {response.text[:200]}")
            return None
        if (
            self.figures.restarted_at is not None
            and self.figures.recovered_at is None
            and status < 400
        ):
            self.figures.recovered_at = now
        return response

    async def sign_in(self, visitor: Visitor, register: bool) -> None:
        path = "/api/register" if register else "/api/login"
        body = {"email": visitor.email, "password": PASSWORD}
        for _ in range(100):
            response = await self.send(visitor, "POST", path, json=body)
            if response is not None and response.status_code == 409 and register:
                path = "/api/login"  # registered by a request whose answer was lost
                continue
            if response is not None and response.status_code in (200, 201):
                visitor.user_id = response.json()["id"]
                visitor.signed_in = True
                visitor.logout_at = time.monotonic() + random.uniform(0.5, 1.5) * LOGOUT_EVERY
                return
            if response is not None and response.status_code not in (429,):
                self.figures.note(f"sign in: {response.status_code} {response.text[:200]}")
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{visitor.email} could not sign in")

    def check_cart(self, visitor: Visitor, items: list[str]) -> None:
        missing = [item for item in visitor.cart if item not in items]
        unexpected = [i for i in items if i not in visitor.cart and i not in visitor.maybe]
        if missing:
            self.figures.lost_writes += len(missing)
            self.figures.note(f"{visitor.email} lost {missing}")
        if unexpected:
            self.figures.wrong_user += 1
            self.figures.note(f"{visitor.email} sees items it never added: {unexpected}")
        visitor.cart = list(items)
        visitor.maybe.clear()

    async def me(self, visitor: Visitor) -> None:
        response = await self.send(visitor, "GET", "/api/me")
        if response is None:
            return
        if response.status_code == 401:
            self.figures.silent_logouts += 1
            self.figures.note(f"{visitor.email} answered as anonymous")
            visitor.signed_in = False
            await self.sign_in(visitor, register=False)
        elif response.json().get("id") != visitor.user_id:
            self.figures.wrong_user += 1
            self.figures.note(f"{visitor.email} answered as {response.json()}")

    async def add(self, visitor: Visitor) -> None:
        self.items += 1
        item = f"item-{self.items}"
        response = await self.send(visitor, "POST", "/api/cart", json={"item": item})
        if response is None:
            visitor.maybe.add(item)
            return
        if response.status_code != 201:
            self.figures.note(f"cart add: {response.status_code} {response.text[:200]}")
            return
        self.figures.acknowledged_writes += 1
        visitor.cart.append(item)
        self.check_cart(visitor, response.json()["items"])

    async def read_cart(self, visitor: Visitor) -> None:
        response = await self.send(visitor, "GET", "/api/cart")
        if response is not None:
            self.check_cart(visitor, response.json()["items"])

    async def sessions(self, visitor: Visitor) -> None:
        response = await self.send(visitor, "GET", "/api/sessions")
        if response is not None and response.status_code != 200:
            self.figures.note(f"sessions: {response.status_code} {response.text[:200]}")

    async def logout(self, visitor: Visitor) -> None:
        """Log out, then sign in again from a new browser (an empty cart)."""
        response = await self.send(visitor, "POST", "/api/logout")
        if response is None:
            return  # not logged out (or logged out with the answer lost): carry on signed in
        visitor.signed_in = False
        visitor.cart, visitor.maybe = [], set()
        await visitor.http.aclose()
        visitor.http = browser()
        await self.sign_in(visitor, register=False)

    async def run(self, visitor: Visitor, until: float) -> None:
        await self.sign_in(visitor, register=True)
        actions = [self.me, self.add, self.read_cart, self.sessions]
        weights = [0.5, 0.25, 0.15, 0.1]
        while time.monotonic() < until:
            if time.monotonic() > visitor.logout_at or len(visitor.cart) >= FULL_CART:
                await self.logout(visitor)
            else:
                (action,) = random.choices(actions, weights)
                await action(visitor)
            await asyncio.sleep(random.uniform(0, 2 * self.think))

    async def final_check(self, visitor: Visitor) -> None:
        for _ in range(20):
            response = await self.send(visitor, "GET", "/api/cart")
            if response is not None:
                self.check_cart(visitor, response.json()["items"])
                return
            await asyncio.sleep(0.5)
        self.figures.note(f"{visitor.email}: no final answer")


# --- stores --------------------------------------------------------------------------------------


@dataclass
class Place:
    url: str
    restart: Callable[[Figures, float], None]
    what_restarts: str
    users: str | None = None


def store_failures(data_dir: Path) -> Counter[str]:
    """Why the demo processes answered 503: the managers log each store failure (a warning),
    counted here by operation and exception type."""
    reasons: Counter[str] = Counter()
    for log in data_dir.glob("demo-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "coatcheck store" in line and "failed" in line:
                # "coatcheck store get failed: StoreUnavailableError('... ConnectionError: ...')"
                words = line.split("coatcheck store", 1)[1].split()
                operation = words[0]
                detail = line.split("failed:", 1)[1].strip()
                kind = detail.split("(", 1)[0]
                inner = detail.split(": ", 1)[1].split(":", 1)[0] if ": " in detail else ""
                reasons[f"{operation} {kind} {inner}".strip()] += 1
    return reasons


def _crash_and_restart(server: RedisServer | SQLServer, figures: Figures, down: float) -> None:
    figures.killed_at = time.monotonic()
    server.kill()
    time.sleep(down)
    starting = time.monotonic()
    server.start()
    figures.restarted_at = time.monotonic()
    figures.start_took = figures.restarted_at - starting


@contextlib.contextmanager
def store_place(kind: str, folder: Path) -> Iterator[Place]:
    if kind in ("postgres", "mariadb"):
        with sql_server(kind) as server:  # type: ignore[arg-type]
            yield Place(
                server.url,
                lambda f, d: _crash_and_restart(server, f, d),
                f"{kind} server (SIGKILL, then restarted)",
            )
    elif kind == "redis":
        require_redis_binaries()
        server = start_on_a_free_port(
            folder / "redis", "--appendonly", "yes", "--appendfsync", "always"
        )
        try:
            yield Place(
                server.url + "?prefix=soak:",
                lambda f, d: _crash_and_restart(server, f, d),
                "redis-server with AOF (SIGKILL, then restarted)",
                users=f"sqlite:///{folder / 'users.db'}",
            )
        finally:
            server.stop()
    else:
        yield Place(
            f"sqlite:///{folder / 'sessions.db'}",
            lambda f, d: None,  # replaced by a demo restart below
            "demo process A (SIGKILL, then restarted; SQLite has no server)",
        )


def seed_expired(kind: str, url: str, count: int) -> float:
    """Write ``count`` sessions that are already expired (by ``expires_at``) straight into the
    store, quickly; return the seconds it took."""
    started = time.monotonic()
    now = time.time()
    if count <= 0:
        return 0.0

    def record() -> SessionRecord:
        return SessionRecord(
            id=new_id(),
            secret_hash=hash_secret(new_secret()),
            created_at=now - 20 * 86400,
            # Long ago, so Redis's relative TTL (expires_at - last_seen_at + margin) keeps the
            # record long enough for purge_expired, not Redis, to remove it.
            last_seen_at=now - 10 * 86400,
            expires_at=now - 60,
            absolute_expires_at=now - 60,
            version=1,
            user_id=f"expired-{secrets.token_hex(4)}",
            data={"cart": ["old"]},
        )

    if kind == "redis":
        import redis

        from coatcheck.stores._redis_keys import KeyLayout
        from coatcheck.stores._redis_plans import put_plan
        from coatcheck.stores._redis_scripts import SCRIPTS

        keys = KeyLayout("soak:")
        client = redis.Redis.from_url(url.split("?")[0])
        try:
            for script in SCRIPTS:
                client.script_load(script.source)
            for start in range(0, count, 2000):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(2000, count - start)):
                    # The first batch of a put plan is the whole write for a new session: its
                    # index entries and the compare-and-set, sent here in bulk.
                    for command in next(put_plan(keys, record(), 0)):
                        pipe.execute_command(*command)
                pipe.execute()
        finally:
            client.close()
    else:
        from coatcheck.stores._sql_statements import row_values
        from coatcheck.stores.sql import SQLStore

        store = SQLStore.from_url(url)
        try:
            store.create_schema()
            table = store.tables.sessions
            with store.engine.begin() as conn:
                for start in range(0, count, 5000):
                    rows = [row_values(record()) for _ in range(min(5000, count - start))]
                    conn.execute(table.insert(), rows)
        finally:
            store.close()
    return time.monotonic() - started


def run_purge(url: str, data_dir: Path, figures: Figures) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "coatcheck", "--data-dir", str(data_dir), "purge"),
            *("--store", url, "--secret", SECRET, "--batch", "1000"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    figures.purge = (started, time.monotonic())
    figures.purged = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:][0]


# --- one store -----------------------------------------------------------------------------------


async def soak(kind: str, args: argparse.Namespace, folder: Path) -> Figures:
    figures = Figures()
    with store_place(kind, folder) as place:
        extra = ["--users", place.users] if place.users else []
        data_dir = folder / "demo"
        data_dir.mkdir()
        with (
            demo_server(data_dir, *extra, store=place.url, secret=SECRET) as a,
            demo_server(data_dir, *extra, store=place.url, secret=SECRET) as b,
        ):
            seeded = seed_expired(kind, place.url, args.purge)
            print(f"  {kind}: seeded {args.purge} expired sessions in {seeded:.1f} s", flush=True)
            traffic = Traffic([a, b], figures, args.think)
            duration = args.minutes * 60
            started = figures.started = time.monotonic()
            until = started + duration
            visitors = [
                Visitor(browser(), f"soak-{kind}-{n}-{secrets.token_hex(3)}@example.com")
                for n in range(args.visitors)
            ]
            tasks = [asyncio.create_task(traffic.run(v, until)) for v in visitors]
            loop = asyncio.get_running_loop()
            await asyncio.sleep(duration * PURGE_AT)
            if args.purge:
                purge = loop.run_in_executor(None, run_purge, place.url, data_dir, figures)
            await asyncio.sleep(max(0.0, started + duration * RESTART_AT - time.monotonic()))
            if args.purge:
                # The restart waits for the purge (up to 90 % of the run), so that each is
                # measured on its own; a purge cut by a crash is only reported as failed.
                latest = started + duration * LATEST_RESTART - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(purge), max(0.0, latest))
            if kind == "sqlite":
                await loop.run_in_executor(None, restart_demo, a, data_dir, figures, args.down)
            else:
                await loop.run_in_executor(None, place.restart, figures, args.down)
            print(f"  {kind}: restarted {place.what_restarts}", flush=True)
            await asyncio.gather(*tasks)
            if args.purge:
                await purge
            await asyncio.gather(*(traffic.final_check(v) for v in visitors))
            for visitor in visitors:
                await visitor.http.aclose()
    figures.store_failures = store_failures(data_dir)
    return figures


# The SQLite restart needs the demo process: demo_server keeps it private, so find it by port.
def restart_demo(base: str, data_dir: Path, figures: Figures, down: float) -> None:
    port = int(base.rsplit(":", 1)[1])
    pid = _pid_listening_on(port)
    figures.killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    time.sleep(down)
    url = f"sqlite:///{data_dir.parent / 'sessions.db'}"
    log = open(data_dir / f"demo-{port}-restarted.log", "wb")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "coatcheck", "--data-dir", str(data_dir), "demo"),
            *("--port", str(port), "--secret", SECRET, "--log-level", "warning"),
            *("--store", url),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _RESTARTED.append(process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base + "/api/me", timeout=1).status_code in (200, 401):
                break
        time.sleep(0.05)
    figures.restarted_at = time.monotonic()


_RESTARTED: list[subprocess.Popen[bytes]] = []


def _pid_listening_on(port: int) -> int:
    """The pid of the process listening on a loopback TCP port (from /proc, no extra tools)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid)
    raise LookupError(f"nothing listens on port {port}")


# --- report --------------------------------------------------------------------------------------


def timeline(f: Figures) -> list[str]:
    """When things happened, in seconds from the start of the traffic, and where 503s fell."""
    lines = []
    if f.purge:
        lines.append(
            f"purge from {f.purge[0] - f.started:.0f} s to {f.purge[1] - f.started:.0f} s "
            f"({f.purged})"
        )
    if f.killed_at is not None and f.restarted_at is not None:
        took = f" (its start took {f.start_took:.1f} s)" if f.start_took is not None else ""
        lines.append(
            f"killed at {f.killed_at - f.started:.0f} s, serving again at "
            f"{f.restarted_at - f.started:.1f} s{took}"
        )
    outage_end = (f.recovered_at or f.restarted_at or 0) + 1
    outside = [t for t in f.unavailable if not (f.killed_at or 0) <= t <= outage_end]
    if outside:
        purging = sum(1 for t in outside if f.purge and f.purge[0] <= t <= f.purge[1])
        when = ", ".join(f"{t - f.started:.1f}" for t in outside[:8])
        lines.append(
            f"{len(outside)} 503s outside the restart, {purging} of them during the purge "
            f"(at {when}{', ...' if len(outside) > 8 else ''} s)"
        )
    if f.store_failures:
        top = ", ".join(f"{reason}: {n}" for reason, n in f.store_failures.most_common(4))
        lines.append(f"store failures the demos logged: {top}")
    return lines


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def row(kind: str, f: Figures) -> list[str]:
    every = [s for _, s in f.latencies]
    outage_end = (f.recovered_at or f.restarted_at or 0) + 1
    steady = [s for t, s in f.latencies if not (f.killed_at or 0) <= t <= outage_end]
    purging = [s for t, s in f.latencies if f.purge and f.purge[0] <= t <= f.purge[1]]
    five_hundreds = sum(n for s, n in f.statuses.items() if s >= 500 and s != 503)
    window = (
        f"{f.last_503 - f.killed_at:.1f}"
        if f.last_503 is not None and f.killed_at is not None and f.last_503 > f.killed_at
        else "-"
    )
    recovery = (
        f"{f.recovered_at - f.restarted_at:.2f}"
        if f.recovered_at is not None and f.restarted_at is not None
        else "-"
    )
    purge = f"{f.purge[1] - f.purge[0]:.1f}" if f.purge else "-"
    elsewhere = sum(1 for t in f.unavailable if not (f.killed_at or 0) <= t <= outage_end)
    return [
        kind,
        str(f.requests),
        f"{f.statuses[503]} ({elsewhere})",
        str(five_hundreds),
        str(f.conn_errors),
        str(f.silent_logouts),
        str(f.wrong_user),
        f"{f.lost_writes}/{f.acknowledged_writes}",
        _pct(every, 0.5),
        _pct(every, 0.99),
        _pct(steady, 0.99),
        _pct(purging, 0.99),
        purge,
        window,
        recovery,
    ]


HEADER = [
    "store",
    "requests",
    "503s (outside restart)",
    "500s",
    "conn errors",
    "silent logouts",
    "wrong user",
    "lost writes",
    "p50 ms",
    "p99 ms",
    "p99 steady ms",
    "p99 purging ms",
    "purge s",
    "503 window s",
    "recovery s",
]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="traffic per store")
    parser.add_argument(
        "--stores", default=",".join(STORES), help="comma-separated: " + ", ".join(STORES)
    )
    parser.add_argument("--visitors", type=int, default=16)
    parser.add_argument("--think", type=float, default=0.02, help="mean seconds between requests")
    parser.add_argument("--down", type=float, default=3.0, help="seconds the store stays down")
    parser.add_argument("--purge", type=int, default=100_000, help="expired sessions to purge")
    parser.add_argument("--output", type=Path, help="also write the report here")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    unknown = set(kinds) - set(STORES)
    if unknown:
        parser.error(f"unknown stores: {', '.join(sorted(unknown))}")

    rows: list[list[str]] = []
    broken = False
    notes: list[str] = []
    for kind in kinds:
        folder = Path(tempfile.mkdtemp(prefix=f"coatcheck-soak-{kind}-"))
        print(f"soak {kind}: {args.minutes} min, {args.visitors} visitors", flush=True)
        try:
            figures = asyncio.run(soak(kind, args, folder))
        except Exception as exc:  # one store failing must not lose the others' figures
            rows.append([kind, f"failed: {type(exc).__name__}: {exc}"[:200]] + [""] * 13)
            notes.append(f"- {kind}: the run failed: {exc!r}"[:500])
            broken = True
            continue
        finally:
            for process in _RESTARTED:
                process.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
                if process.poll() is None:
                    process.kill()
                    process.wait()
            _RESTARTED.clear()
            shutil.rmtree(folder, ignore_errors=True)
        rows.append(row(kind, figures))
        print(table([rows[-1]]), flush=True)
        notes.extend(f"- {kind}: {line}" for line in timeline(figures))
        for problem in figures.problems:
            notes.append(f"- {kind}: {problem}")
        five_hundreds = sum(n for s, n in figures.statuses.items() if s >= 500 and s != 503)
        broken |= bool(
            five_hundreds or figures.silent_logouts or figures.wrong_user or figures.lost_writes
        )
    report = "\n".join(
        [
            f"Soak: {args.minutes} min per store, {args.visitors} visitors over two demo "
            f"processes, {args.purge} expired sessions purged at {PURGE_AT:.0%}, store "
            f"restarted (SIGKILL, {args.down:.0f} s down) at {RESTART_AT:.0%} or once the purge "
            f"was done; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[1]:.1f} at the end (5 min), "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            table(rows),
            "",
            *notes,
        ]
    )
    print("\n" + report)
    if args.output:
        args.output.write_text(report + "\n")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
