"""The Python contenders, each wired the way its documentation recommends for production.

Every app answers the same five paths with the same session work:

- ``/seed``  store a signed-in visitor: user id ``"42"`` and a 5-item cart (set-up, not timed);
- ``/read``  read the user id and the cart, write nothing (the common case);
- ``/write`` set one key (a counter) on that session;
- ``/login`` regenerate the session id, keeping the data (what a login does);
- ``/anon``  a visitor with no cookie asks "who is signed in?" (nobody).

A handler answers 409 when the session it expected is not there, so a benchmark can never
silently measure the wrong thing. Deviations from each library's defaults are listed in
``NOTES`` and printed with the results.
"""

from __future__ import annotations

import importlib.util
import itertools
import secrets
import sys
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    ASGI_BODY,
    AsyncRequest,
    SyncRequest,
    asgi_client,
    asgi_response_start,
    wsgi_client,
)

USER_ID = "42"
SCENARIOS = ("read", "write", "login", "anon")
COOKIE_ONLY = ("read", "write", "anon")  # no server-side id to regenerate
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


@dataclass
class Target:
    """One library on one back-end, ready to serve the benchmark paths."""

    library: str
    backend: str
    family: str
    """The coatcheck back-end it is compared with: ``memory``, ``cookie`` (coatcheck's sealed
    cookie), ``sqlite`` or ``redis``."""
    framework: str
    """Whose bare baseline is subtracted: ``asgi``, ``flask`` or ``django``."""
    request: AsyncRequest | SyncRequest
    is_async: bool
    scenarios: tuple[str, ...] = SCENARIOS
    uses_redis: bool = False
    closers: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.library} ({self.backend})"


NOTES: list[str] = [
    "All apps are driven over `https` (scheme in the ASGI scope / `wsgi.url_scheme`; "
    "`X-Forwarded-Proto` for Express) so that Secure cookies are issued as in production. Every "
    "request is a GET: no framework's CSRF middleware is involved, and coatcheck's own CSRF "
    "check only runs on unsafe methods.",
    "coatcheck: `SessionConfig(secret=...)` defaults (30 min idle, 12 h absolute, "
    "`__Host-session` cookie, CSRF on) and no `user_loader`. Its login also rotates the CSRF "
    "token, so a login response sets two cookies.",
    "coatcheck (sealed cookie): `sealed://`, no revocation record: the session is sealed with "
    "AES-256-GCM into the cookie (no store call); its login regenerates the id inside the seal.",
    "Starlette `SessionMiddleware`: `https_only=True`; a signed cookie (itsdangerous), so there "
    "is no id to regenerate.",
    "starsessions: `SessionMiddleware(lifetime=1800, rolling=True)` + "
    "`SessionAutoloadMiddleware`, as in its README. It writes the whole session back to the "
    "store on every request that has one (reads included), and `regenerate_session_id` does "
    "not delete the old record.",
    "Flask (built-in signed cookie) and Flask-Session 0.8 `SESSION_TYPE='redis'` with an "
    "explicit client; Flask-Session's defaults (`SESSION_PERMANENT=True`, "
    "`SESSION_REFRESH_EACH_REQUEST=True`) make it write every request, reads included. Login "
    "uses `session_interface.regenerate()`. Flask-Login is not used: it adds a user loader, "
    "not session storage, and does not regenerate the id.",
    "Django: `SessionMiddleware` with the `db` engine on SQLite (the WAL + "
    "`synchronous=NORMAL` that coatcheck's SQLite store also sets, via "
    "`OPTIONS.init_command`; `transaction_mode=IMMEDIATE`; persistent connections, "
    "`CONN_MAX_AGE=None`), the `cache` engine on Django's built-in `RedisCache`, and "
    "`signed_cookies`. Login is `request.session.cycle_key()`, what `auth.login` does to the "
    "session.",
    "Node anchors (another runtime: compare their overhead, not their totals): Express 5 driven "
    "in-process by light-my-request, whose mock request/response is in the Express baseline. "
    "express-session with `resave: false, saveUninitialized: false` (its README's advice) on "
    "`MemoryStore` (which its README says is not for production) and on connect-redis, which "
    "touches (`EXPIRE`) on every read; login is `req.session.regenerate()` with the cart copied "
    "over. iron-session seals the whole session into the cookie (no id, no login row).",
]


def _ops_for_mapping(
    login: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Callable[[Any], bool]]:
    """Handlers for dict-like sessions (everything but coatcheck). ``login(scope)`` regenerates."""

    def seed(session: Any) -> bool:
        session["user_id"] = USER_ID
        session["cart"] = cart()
        return True

    def read(session: Any) -> bool:
        return session.get("user_id") == USER_ID and len(session.get("cart") or ()) == 5

    def write(session: Any) -> bool:
        session["counter"] = next(_counter)
        return session.get("user_id") == USER_ID

    def anon(session: Any) -> bool:
        return session.get("user_id") is None

    ops: dict[str, Callable[[Any], bool]] = {
        "/seed": seed,
        "/read": read,
        "/write": write,
        "/anon": anon,
    }
    if login is not None:
        regenerate = login

        def do_login(session: Any) -> bool:
            had_cart = len(session.get("cart") or ()) == 5
            regenerate(session)
            session["user_id"] = USER_ID
            return had_cart

        ops["/login"] = do_login
    return ops


# -- ASGI ---------------------------------------------------------------------------------------


def _asgi_app(
    ops: dict[str, Callable[[Any], bool]], *, pass_scope: bool = False
) -> Callable[..., Awaitable[None]]:
    """A bare ASGI app: one dict lookup, the session work, a 2-byte response."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        op = ops.get(scope["path"])
        ok = True if op is None else op(scope if pass_scope else scope["session"])
        await send(asgi_response_start(200 if ok else 409))
        await send(ASGI_BODY)

    return app


def asgi_baseline() -> Target:
    return Target(
        "(no sessions)", "bare ASGI app", "-", "asgi", asgi_client(_asgi_app({})), True, ("anon",)
    )


def _coatcheck_ops() -> dict[str, Callable[[Any], bool]]:
    """The benchmark paths' handlers on a coatcheck session (ASGI and Flask alike)."""
    from coatcheck import login

    def seed(session: Any) -> bool:
        login(session, USER_ID)
        session["cart"] = cart()
        return True

    def read(session: Any) -> bool:
        return session.user_id == USER_ID and len(session.get("cart") or ()) == 5

    def write(session: Any) -> bool:
        session["counter"] = next(_counter)
        return session.user_id == USER_ID

    def do_login(session: Any) -> bool:
        had_cart = len(session.get("cart") or ()) == 5
        login(session, USER_ID)
        return had_cart

    def anon(session: Any) -> bool:
        return session.user_id is None

    ops = {"/seed": seed, "/read": read, "/write": write, "/login": do_login, "/anon": anon}
    return ops


def coatcheck_target(backend: str, family: str, store: Any) -> Target:
    from coatcheck import AsyncSessionManager, SessionConfig
    from coatcheck.asgi import SessionMiddleware

    ops = _coatcheck_ops()
    manager = AsyncSessionManager(store, SessionConfig(secret=secrets.token_urlsafe(32)))
    app = SessionMiddleware(_asgi_app(ops), manager=manager)
    return Target(
        "coatcheck",
        backend,
        family,
        "asgi",
        asgi_client(app),
        True,
        uses_redis=family == "redis",
        closers=[manager.close],
    )


def starlette_cookie_target() -> Target:
    from starlette.middleware.sessions import SessionMiddleware

    app = SessionMiddleware(
        _asgi_app(_ops_for_mapping(None)), secret_key=secrets.token_urlsafe(32), https_only=True
    )
    return Target(
        "Starlette SessionMiddleware",
        "signed cookie",
        "cookie",
        "asgi",
        asgi_client(app),
        True,
        COOKIE_ONLY,
    )


def starsessions_target(backend: str, family: str, store: Any) -> Target:
    from starlette.requests import HTTPConnection
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware, regenerate_session_id

    def login(scope: dict[str, Any]) -> bool:
        # regenerate_session_id takes the connection, so this handler gets the whole scope.
        session = scope["session"]
        had_cart = len(session.get("cart") or ()) == 5
        regenerate_session_id(HTTPConnection(scope))
        session["user_id"] = USER_ID
        return had_cart

    ops: dict[str, Callable[[Any], bool]] = {
        path: (lambda scope, op=op: op(scope["session"]))
        for path, op in _ops_for_mapping(None).items()
    }
    ops["/login"] = login
    inner = SessionAutoloadMiddleware(_asgi_app(ops, pass_scope=True))
    app = SessionMiddleware(inner, store=store, lifetime=1800, rolling=True)
    return Target(
        "starsessions",
        backend,
        family,
        "asgi",
        asgi_client(app),
        True,
        uses_redis=family == "redis",
    )


# -- Flask --------------------------------------------------------------------------------------


def flask_target(kind: str, redis_url: str | None = None, prefix: str = "") -> Target:
    """``kind``: ``base`` (views ignore the session), ``cookie`` (built-in) or ``redis``."""
    from flask import Flask, session

    app = Flask(f"coatcheck_bench_flask_{kind}")
    app.config.update(
        SECRET_KEY=secrets.token_urlsafe(32),
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    closers: list[Callable[[], Awaitable[None] | None]] = []
    regenerate = None
    if kind == "redis":
        import redis
        from flask_session import Session as FlaskSession

        client = redis.Redis.from_url(redis_url or "")
        app.config.update(
            SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix + "flask:"
        )
        FlaskSession(app)
        interface = app.session_interface

        def regenerate(current: Any) -> None:
            interface.regenerate(current._get_current_object())

        closers.append(client.close)

    ops = {} if kind == "base" else _ops_for_mapping(regenerate)
    for path in ("/seed", "/read", "/write", "/login", "/anon"):
        op = ops.get(path)

        def view(op: Callable[[Any], bool] | None = op) -> tuple[str, int]:
            return ("ok", 200) if op is None or op(session) else ("missing session", 409)

        app.add_url_rule(path, endpoint=path, view_func=view)

    if kind == "base":
        return Target(
            "(no sessions)", "bare Flask app", "-", "flask", wsgi_client(app), False, ("anon",)
        )
    if kind == "cookie":
        return Target(
            "Flask", "signed cookie", "cookie", "flask", wsgi_client(app), False, COOKIE_ONLY
        )
    return Target(
        "Flask-Session",
        "Redis",
        "redis",
        "flask",
        wsgi_client(app),
        False,
        uses_redis=True,
        closers=closers,
    )


def coatcheck_flask_target(backend: str, family: str, store: Any) -> Target:
    """coatcheck's Flask extension (WSGI middleware, sync manager) with the same handlers as
    :func:`coatcheck_target`."""
    from flask import Flask

    from coatcheck import SessionConfig, SessionManager
    from coatcheck.integrations.flask import Coatcheck, get_session

    app = Flask(f"coatcheck_bench_flask_{family}")
    manager = SessionManager(store, SessionConfig(secret=secrets.token_urlsafe(32)))
    Coatcheck(app, manager=manager)
    for path, op in _coatcheck_ops().items():

        def view(op: Callable[[Any], bool] = op) -> tuple[str, int]:
            return ("ok", 200) if op(get_session()) else ("missing session", 409)

        app.add_url_rule(path, endpoint=path, view_func=view)
    return Target(
        "coatcheck on Flask",
        backend,
        family,
        "flask",
        wsgi_client(app),
        False,
        closers=[store.close],
    )


# -- Django -------------------------------------------------------------------------------------


def django_targets(workdir: Path, redis_url: str | None, prefix: str) -> list[Target]:
    """Django's bare baseline and its session engines (settings are process-global: once only)."""
    import django
    from django.conf import settings

    urls = types.ModuleType("coatcheck_bench_urls")
    sys.modules[urls.__name__] = urls
    caches: dict[str, Any] = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    if redis_url is not None:
        caches = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": prefix + "django",
            }
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=urls.__name__,
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=[],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(workdir / "django.sqlite3"),
                "CONN_MAX_AGE": None,
                "OPTIONS": {
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
                    "transaction_mode": "IMMEDIATE",
                },
            }
        },
        CACHES=caches,
        SESSION_COOKIE_SECURE=True,
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.http import HttpResponse
    from django.urls import path

    call_command("migrate", "sessions", verbosity=0, interactive=False)

    ops = _ops_for_mapping(lambda session: session.cycle_key())

    def make_view(op: Callable[[Any], bool]) -> Callable[[Any], HttpResponse]:
        def view(request: Any) -> HttpResponse:
            session = getattr(request, "session", None)
            if session is None or op(session):
                return HttpResponse(b"ok", content_type="text/plain")
            return HttpResponse(b"missing session", status=409, content_type="text/plain")

        return view

    urls.urlpatterns = [path(p.lstrip("/"), make_view(op)) for p, op in ops.items()]

    def handler(engine: str | None) -> WSGIHandler:
        # Middleware and the engine are read when the handler is built.
        settings.MIDDLEWARE = (
            [] if engine is None else ["django.contrib.sessions.middleware.SessionMiddleware"]
        )
        if engine is not None:
            settings.SESSION_ENGINE = f"django.contrib.sessions.backends.{engine}"
        return WSGIHandler()

    targets = [
        Target(
            "(no sessions)",
            "bare Django app",
            "-",
            "django",
            wsgi_client(handler(None)),
            False,
            ("anon",),
        ),
        Target("Django", "db on SQLite", "sqlite", "django", wsgi_client(handler("db")), False),
    ]
    if redis_url is not None:
        targets.append(
            Target(
                "Django",
                "cache on Redis",
                "redis",
                "django",
                wsgi_client(handler("cache")),
                False,
                uses_redis=True,
            )
        )
    targets.append(
        Target(
            "Django",
            "signed_cookies",
            "cookie",
            "django",
            wsgi_client(handler("signed_cookies")),
            False,
            COOKIE_ONLY,
        )
    )
    return targets


# -- all of them --------------------------------------------------------------------------------


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_targets(
    workdir: Path, redis_url: str | None, prefix: str
) -> tuple[list[Target], list[str]]:
    """Every target that can run here, and a line for each one that cannot."""
    skipped: list[str] = []
    targets: list[Target] = [asgi_baseline()]

    from coatcheck import ConfigurationError, async_store_from_url

    coatcheck_urls = [("memory", "memory", "memory://"), ("sealed cookie", "cookie", "sealed://")]
    coatcheck_urls.append(("SQLite", "sqlite", f"sqlite:///{workdir / 'coatcheck.sqlite3'}"))
    if redis_url is not None:
        coatcheck_urls.append(("Redis", "redis", f"{redis_url}?prefix={prefix}coatcheck:"))
    for backend, family, url in coatcheck_urls:
        try:
            store = async_store_from_url(url)
        except (ImportError, ConfigurationError) as exc:  # a store not written or not installed
            skipped.append(f"coatcheck ({backend}): {exc!r}")
            continue
        targets.append(coatcheck_target(backend, family, store))
    if redis_url is None:
        skipped.append("all Redis back-ends: no Redis server")

    if have("starlette"):
        targets.append(starlette_cookie_target())
    else:
        skipped.append("Starlette SessionMiddleware: starlette not installed")
    if have("starsessions"):
        from starsessions import InMemoryStore

        targets.append(starsessions_target("memory", "memory", InMemoryStore()))
        if redis_url is not None:
            from redis.asyncio import Redis
            from starsessions.stores.redis import RedisStore

            connection = Redis.from_url(redis_url)
            target = starsessions_target(
                "Redis", "redis", RedisStore(connection=connection, prefix=prefix + "starsessions:")
            )
            target.closers.append(connection.aclose)
            targets.append(target)
    else:
        skipped.append("starsessions: not installed (pip install -r benchmarks/requirements.txt)")

    if have("flask"):
        targets.append(flask_target("base"))
        targets.append(flask_target("cookie"))
        from coatcheck import sync_store_from_url

        sqlite_url = f"sqlite:///{workdir / 'coatcheck-flask.sqlite3'}"
        targets.append(coatcheck_flask_target("SQLite", "sqlite", sync_store_from_url(sqlite_url)))
        if redis_url is not None and have("flask_session"):
            targets.append(flask_target("redis", redis_url, prefix))
        elif redis_url is not None:
            skipped.append("Flask-Session: not installed")
    else:
        skipped.append("Flask, Flask-Session: not installed")

    if have("django"):
        targets.extend(django_targets(workdir, redis_url, prefix))
    else:
        skipped.append("Django: not installed")
    return targets, skipped
