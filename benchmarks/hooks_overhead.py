#!/usr/bin/env python3
"""What hooks and the session cap cost a request, on the memory store, through the async manager.

    python benchmarks/hooks_overhead.py

Per scenario, CPU time (``time.process_time_ns``) per request, median of 7 batches, for: no
hooks; every hook set to an ``async def`` that does nothing; ``max_sessions_per_user=5`` with no
hook. ``read`` opens and commits a signed-in session that needs no write; ``login`` opens an
anonymous session, signs it in and commits (the cap's listing happens here). The user holds 3
other sessions. Not part of the test suite; nothing here asserts on a time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from coatcheck import AsyncSessionManager, Hooks, SessionConfig, SessionEvent, login
from coatcheck._core.http import RequestView
from coatcheck._core.lifecycle import create_session
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import test_config


async def nothing(event: SessionEvent) -> None:
    pass


def request(cookie: str = "") -> RequestView:
    headers = [(b"host", b"testserver"), (b"user-agent", b"bench")]
    if cookie:
        headers.append((b"cookie", f"coatcheck_session={cookie}".encode()))
    return RequestView.from_asgi_headers("GET", "http", headers, "127.0.0.1")


async def build(config: SessionConfig, hooks: Hooks | None) -> tuple[AsyncSessionManager, str]:
    manager = AsyncSessionManager(AsyncMemoryStore(), config, hooks=hooks)
    token = ""
    for _ in range(4):
        _, token = await manager.run(
            create_session(config, manager.clock(), user_id="42", transport="cookie")
        )
    return manager, token


def scenarios(
    manager: AsyncSessionManager, signed_in: RequestView, anonymous: RequestView
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    async def read() -> None:
        opened = await manager.open(signed_in)
        await manager.commit(opened.session)

    async def sign_in() -> None:
        opened = await manager.open(anonymous)
        login(opened.session, "42")
        committed = await manager.commit(opened.session)
        assert committed.record is not None
        await manager.store.delete(committed.record.id)  # keep the user's list steady

    return read, sign_in


async def timed(call: Callable[[], Awaitable[Any]], n: int = 3000) -> float:
    samples = []
    for _ in range(7):
        started = time.process_time_ns()
        for _ in range(n):
            await call()
        samples.append((time.process_time_ns() - started) / n / 1000)
    return sorted(samples)[len(samples) // 2]


async def main() -> None:
    secret = secrets.token_urlsafe(32)
    variants = {
        "no hooks": (test_config(secret=secret), None),
        "all five hooks (async no-ops)": (
            test_config(secret=secret),
            Hooks(
                on_login=nothing,
                on_logout=nothing,
                on_revoke=nothing,
                on_new_device=nothing,
                on_throttled=nothing,
            ),
        ),
        "max_sessions_per_user=5, no hooks": (
            test_config(secret=secret, max_sessions_per_user=5),
            None,
        ),
    }
    print("| variant | read | ratio | login | ratio |")
    print("|---|---|---|---|---|")
    base: tuple[float, float] | None = None
    for label, (config, hooks) in variants.items():
        manager, token = await build(config, hooks)
        read, sign_in = scenarios(manager, request(token), request())
        times = (await timed(read), await timed(sign_in))
        base = base or times
        print(
            f"| {label} | {times[0]:.1f} µs | {times[0] / base[0]:.2f} "
            f"| {times[1]:.1f} µs | {times[1] / base[1]:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
