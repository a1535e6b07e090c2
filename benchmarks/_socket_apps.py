"""The apps that ``benchmarks/sockets.py`` serves, one uvicorn process each.

uvicorn imports this module and calls :func:`create` (``--factory``); the environment says which
app to build:

- ``BENCH_APP``: ``bare`` (Starlette, no sessions), ``starlette`` (Starlette's signed-cookie
  ``SessionMiddleware``), ``starsessions`` (starsessions on Redis) or ``coatcheck``;
- ``BENCH_STORE_URL``: the coatcheck store URL, or the Redis URL for starsessions;
- ``BENCH_PREFIX``: a Redis key prefix for starsessions.

Every app is a Starlette app with the same routes and the same session work as the in-process
benchmark (``_targets.py``):

- ``/seed``   sign a visitor in as user ``"42"`` with a 5-item cart (set-up, not timed);
- ``/read``   read the user id and the cart and write nothing (an authenticated page);
- ``/write``  set one key (a counter) on that session;
- ``/health`` no session work (the runner's readiness probe).

A handler answers 409 when the session it expects is missing, so a run can never time anonymous
requests without the runner noticing (wrk counts every non-2xx answer).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

USER_ID = "42"
_counter = itertools.count()


def cart() -> list[dict[str, Any]]:
    """The payload every library stores: five line items (about 300 bytes of JSON)."""
    return [
        {
            "sku": f"SKU-{1000 + i}",
            "name": f"Item number {i}",
            "qty": i + 1,
            "price_cents": 1999 + 250 * i,
        }
        for i in range(5)
    ]


def _answer(ok: bool) -> Response:
    return PlainTextResponse("ok") if ok else PlainTextResponse("missing session", status_code=409)


def _mapping_routes() -> list[Route]:
    """Routes for dict-like sessions (``request.session``): Starlette and starsessions."""

    async def seed(request: Request) -> Response:
        request.session["user_id"] = USER_ID
        request.session["cart"] = cart()
        return _answer(True)

    async def read(request: Request) -> Response:
        session = request.session
        return _answer(session.get("user_id") == USER_ID and len(session.get("cart") or ()) == 5)

    async def write(request: Request) -> Response:
        request.session["counter"] = next(_counter)
        return _answer(request.session.get("user_id") == USER_ID)

    return _routes(seed, read, write)


def _routes(
    seed: Callable[[Request], Any], read: Callable[[Request], Any], write: Callable[[Request], Any]
) -> list[Route]:
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return [
        Route("/seed", seed),
        Route("/read", read),
        Route("/write", write),
        Route("/health", health),
    ]


def bare() -> Starlette:
    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=_routes(ok, ok, ok))


def starlette_cookie() -> Starlette:
    from starlette.middleware.sessions import SessionMiddleware

    middleware = [
        Middleware(SessionMiddleware, secret_key=secrets.token_urlsafe(32), https_only=True)
    ]
    return Starlette(routes=_mapping_routes(), middleware=middleware)


def starsessions_redis(redis_url: str, prefix: str) -> Starlette:
    from redis.asyncio import Redis
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from starsessions.stores.redis import RedisStore

    connection = Redis.from_url(redis_url)
    store = RedisStore(connection=connection, prefix=prefix + "starsessions:")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await connection.aclose()

    # As starsessions' README sets it up: a rolling 30-minute lifetime, sessions loaded by the
    # autoload middleware.
    middleware = [
        Middleware(SessionMiddleware, store=store, lifetime=1800, rolling=True),
        Middleware(SessionAutoloadMiddleware),
    ]
    return Starlette(routes=_mapping_routes(), middleware=middleware, lifespan=lifespan)


def coatcheck_app(store_url: str) -> Starlette:
    from coatcheck import AsyncSessionManager, SessionConfig, async_store_from_url, login
    from coatcheck.asgi import SessionMiddleware
    from coatcheck.integrations.starlette import get_session

    manager = AsyncSessionManager(
        async_store_from_url(store_url), SessionConfig(secret=secrets.token_urlsafe(32))
    )

    async def seed(request: Request) -> Response:
        session = get_session(request)
        login(session, USER_ID)
        session["cart"] = cart()
        return _answer(True)

    async def read(request: Request) -> Response:
        session = get_session(request)
        return _answer(session.user_id == USER_ID and len(session.get("cart") or ()) == 5)

    async def write(request: Request) -> Response:
        session = get_session(request)
        session["counter"] = next(_counter)
        return _answer(session.user_id == USER_ID)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await manager.close()

    # coatcheck's defaults (Secure __Host- cookie, CSRF on), as behind a TLS proxy in production;
    # wrk sends the cookie over plain HTTP anyway.
    return Starlette(
        routes=_routes(seed, read, write),
        middleware=[Middleware(SessionMiddleware, manager=manager)],
        lifespan=lifespan,
    )


def create() -> Starlette:
    """The app named by ``BENCH_APP`` (uvicorn's ``--factory`` entry point)."""
    # Warnings (a store failure answered 503, say) reach the server log with their level, where
    # the runner looks for them.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    kind = os.environ["BENCH_APP"]
    url = os.environ.get("BENCH_STORE_URL", "")
    if kind == "bare":
        return bare()
    if kind == "starlette":
        return starlette_cookie()
    if kind == "starsessions":
        return starsessions_redis(url, os.environ.get("BENCH_PREFIX", "bench:"))
    if kind == "coatcheck":
        return coatcheck_app(url)
    raise SystemExit(f"unknown BENCH_APP {kind!r}")
