"""One small app on both stacks, driven by the same synchronous httpx client API.

- ``asgi``: a Starlette app behind :class:`coatcheck.asgi.SessionMiddleware` on an
  :class:`~coatcheck.AsyncSessionManager`, through :class:`ASGIOnLoop` (httpx's ASGI transport,
  run on an event loop in a thread of its own, so a plain ``httpx.Client`` drives it).
- ``wsgi``: a plain WSGI app behind :class:`coatcheck.wsgi.SessionMiddleware` on a
  :class:`~coatcheck.SessionManager`, through :class:`WSGITransport`.

Both apps answer the same routes the same way, so one test runs unchanged against both; the
behaviours in ``tests/middleware/test_http.py`` are the contract the two middlewares share.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import auth
from coatcheck._core.config import SessionConfig
from coatcheck.admin import AsyncSessionAdmin, SessionAdmin
from coatcheck.asgi import SessionMiddleware as ASGIMiddleware
from coatcheck.errors import HTTPError, PasswordError
from coatcheck.hooks import Hooks
from coatcheck.integrations.starlette import get_session, issue_token, require_user
from coatcheck.manager import AsyncSessionManager, SessionManager
from coatcheck.stores.base import AsyncStore, SyncStore
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.stores.sealed import AsyncSealedStore, SealedStore
from coatcheck.testing import CountingStore, FakeClock, SyncCountingStore, test_config
from coatcheck.throttling import AsyncLoginGuard, LoginGuard, ThrottleConfig
from coatcheck.wsgi import SessionMiddleware as WSGIMiddleware

STACKS = ("asgi", "wsgi")
COOKIE = "coatcheck_session"
BASE = "http://testserver"
THROTTLE = ThrottleConfig(account_threshold=1, ip_threshold=None)


class Counting(Protocol):
    calls: Counter[str]

    @property
    def writes(self) -> int: ...
    def reset(self) -> None: ...


@dataclass
class Stack:
    """One stack's app, client, store and clock."""

    name: str
    app: Any
    client: httpx.Client
    store: Counting
    """Counts the manager's store calls."""
    records: MemoryStore
    """The records themselves, read directly (not counted)."""
    clock: FakeClock
    manager: AsyncSessionManager | SessionManager
    ip: str
    """The client address the app sees."""
    _exits: ExitStack

    def fresh(self) -> httpx.Client:
        """Another client of the same app, with an empty cookie jar (closed with the stack)."""
        return self._exits.enter_context(_client(self.name, self.app))

    def csrf(self, client: httpx.Client | None = None) -> dict[str, str]:
        jar = (client or self.client).cookies
        return {"X-XSRF-TOKEN": jar.get("XSRF-TOKEN") or ""}

    def cookie(self, name: str = COOKIE) -> str:
        value = self.client.cookies.get(name)
        assert value is not None, name
        return value


def _client(name: str, app: Any, base_url: str = BASE) -> httpx.Client:
    transport = ASGIOnLoop(app) if name == "asgi" else WSGITransport(app)
    return httpx.Client(transport=transport, base_url=base_url)


@contextmanager
def stack(
    name: str,
    config: SessionConfig | None = None,
    *,
    hooks: Hooks | None = None,
    sync_store: SyncStore | None = None,
    async_store: AsyncStore | None = None,
    records: MemoryStore | None = None,
    base_url: str = BASE,
    error_page: Callable[[str, HTTPError], str | None] | None = None,
) -> Iterator[Stack]:
    """The app on stack ``name`` over a memory store (``records``, or a new one), or over the
    store given for that stack. ``error_page(path, error)`` is given to the middleware as its
    ``error_renderer``, the path read from the stack's own request object (scope or environ)."""
    config = config or test_config()
    clock = FakeClock()
    records = records if records is not None else MemoryStore()
    manager: AsyncSessionManager | SessionManager
    counting: Counting
    # A sealed:// store is passed as it is (the manager recognises it by its type), uncounted.
    if name == "asgi":
        inner = async_store or AsyncMemoryStore(records)
        counting = CountingStore(inner)
        sealed = isinstance(inner, AsyncSealedStore)
        async_manager = AsyncSessionManager(
            inner if sealed else counting, config, clock=clock, hooks=hooks
        )
        app: Any = asgi_app(
            async_manager,
            error_renderer=(
                (lambda scope, error: error_page(scope["path"], error)) if error_page else None
            ),
        )
        manager = async_manager
    else:
        sync_inner = sync_store or records
        sync_counting = SyncCountingStore(sync_inner)
        sealed = isinstance(sync_inner, SealedStore)
        sync_manager = SessionManager(
            sync_inner if sealed else sync_counting, config, clock=clock, hooks=hooks
        )
        app = WSGIMiddleware(
            wsgi_app(sync_manager),
            manager=sync_manager,
            error_renderer=(
                (lambda environ, error: error_page(environ["PATH_INFO"], error))
                if error_page
                else None
            ),
        )
        manager, counting = sync_manager, sync_counting
    ip = "127.0.0.1"
    with ExitStack() as exits:
        client = exits.enter_context(_client(name, app, base_url))
        yield Stack(name, app, client, counting, records, clock, manager, ip, exits)


# -- the ASGI app ---------------------------------------------------------------------------------


def asgi_app(manager: AsyncSessionManager, error_renderer: Any = None) -> Starlette:
    admin = AsyncSessionAdmin(manager)
    guard = AsyncLoginGuard(manager, THROTTLE)

    async def read(request: Request) -> Response:
        s = get_session(request)
        return JSONResponse({"user": s.user_id, "data": dict(s), "flashes": s.flashes})

    async def write(request: Request) -> Response:
        get_session(request).update(await request.json())
        return JSONResponse({"ok": True})

    async def login(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        auth.login(get_session(request), body.get("user", "u1"), remember=body.get("remember"))
        return JSONResponse({"ok": True})

    async def attempt(request: Request) -> Response:
        """A login attempt with a wrong password, counted by the login guard."""
        await guard.check((await request.json())["user"], get_session(request).ip)
        raise HTTPError(401, {"error": "invalid_credentials"})

    async def logout(request: Request) -> Response:
        auth.logout(get_session(request))
        return Response(status_code=204)

    async def flash(request: Request) -> Response:
        get_session(request).flash("hello")
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        return JSONResponse({"user": await require_user(request)})

    async def token(request: Request) -> Response:
        return JSONResponse({"token": await issue_token(request, "u1")})

    async def form(request: Request) -> Response:
        return JSONResponse({"form": dict(parse_qsl((await request.body()).decode()))})

    async def password(request: Request) -> Response:
        raise PasswordError("too long")

    async def cached(request: Request) -> Response:
        get_session(request)["seen"] = True
        headers = {"cache-control": "public, max-age=60", "vary": "Accept-Encoding"}
        return JSONResponse({}, headers=headers)

    async def cached_read(request: Request) -> Response:
        headers = {"cache-control": "private, max-age=60", "vary": "accept-encoding, cookie"}
        return JSONResponse({"user": get_session(request).user_id}, headers=headers)

    async def static(request: Request) -> Response:
        return Response("plain")

    async def boom(request: Request) -> Response:
        raise KeyError("bug")

    async def password_change(request: Request) -> Response:
        return JSONResponse({"ended": await admin.password_changed(get_session(request))})

    async def revoke(request: Request) -> Response:
        return JSONResponse({"revoked": await admin.revoke(request.path_params["sid"])})

    async def revoke_all(request: Request) -> Response:
        user = await require_user(request)
        return JSONResponse({"revoked": await admin.revoke_all(user)})

    async def purge(request: Request) -> Response:
        return JSONResponse({"purged": await admin.purge_expired()})

    async def sessions(request: Request) -> Response:
        listed = await admin.sessions_of(await require_user(request))
        return JSONResponse([info.id for info in listed])

    app = Starlette(
        routes=[
            Route("/read", read),
            Route("/write", write, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/attempt", attempt, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/flash", flash, methods=["POST"]),
            Route("/me", me),
            Route("/token", token, methods=["POST"]),
            Route("/form", form, methods=["POST"]),
            Route("/password", password, methods=["POST"]),
            Route("/cached", cached),
            Route("/cached-read", cached_read),
            Route("/static", static),
            Route("/boom", boom),
            Route("/password-change", password_change, methods=["POST"]),
            Route("/revoke/{sid}", revoke, methods=["POST"]),
            Route("/revoke-all", revoke_all, methods=["POST"]),
            Route("/purge", purge, methods=["POST"]),
            Route("/sessions", sessions),
        ]
    )
    app.add_middleware(ASGIMiddleware, manager=manager, error_renderer=error_renderer)
    return app


# -- the WSGI app ---------------------------------------------------------------------------------

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def wsgi_app(manager: SessionManager) -> WSGIApp:
    admin = SessionAdmin(manager)
    guard = LoginGuard(manager, THROTTLE)

    def respond(start_response: Any, status: int, body: Any, headers: Any = ()) -> list[bytes]:
        raw = b"" if body is None else json.dumps(body).encode()
        content = [("Content-Type", "application/json")] if body is not None else []
        line = {200: "200 OK", 204: "204 No Content"}[status]
        start_response(line, [*content, *headers])
        return [raw]

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        s = environ["coatcheck.session"]
        path = environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""

        def user() -> str:
            if s.user_id is None:
                raise HTTPError(401, {"error": "unauthenticated"})
            return str(s.user_id)

        if path == "/read":
            return respond(
                start_response, 200, {"user": s.user_id, "data": dict(s), "flashes": s.flashes}
            )
        if path == "/write":
            s.update(json.loads(raw))
            return respond(start_response, 200, {"ok": True})
        if path == "/login":
            body = json.loads(raw or b"{}")
            auth.login(s, body.get("user", "u1"), remember=body.get("remember"))
            return respond(start_response, 200, {"ok": True})
        if path == "/attempt":  # a login attempt with a wrong password, counted by the guard
            guard.check(json.loads(raw)["user"], s.ip)
            raise HTTPError(401, {"error": "invalid_credentials"})
        if path == "/logout":
            auth.logout(s)
            return respond(start_response, 204, None)
        if path == "/flash":
            s.flash("hello")
            return respond(start_response, 204, None)
        if path == "/me":
            return respond(start_response, 200, {"user": user()})
        if path == "/token":
            return respond(start_response, 200, {"token": manager.issue_token("u1")})
        if path == "/form":
            return respond(start_response, 200, {"form": dict(parse_qsl(raw.decode()))})
        if path == "/password":
            raise PasswordError("too long")
        if path == "/cached":
            s["seen"] = True
            headers = [("Cache-Control", "public, max-age=60"), ("Vary", "Accept-Encoding")]
            return respond(start_response, 200, {}, headers)
        if path == "/cached-read":
            headers = [
                ("Cache-Control", "private, max-age=60"),
                ("Vary", "accept-encoding, cookie"),
            ]
            return respond(start_response, 200, {"user": s.user_id}, headers)
        if path == "/boom":
            raise KeyError("bug")
        if path == "/password-change":
            return respond(start_response, 200, {"ended": admin.password_changed(s)})
        if path.startswith("/revoke/"):
            return respond(start_response, 200, {"revoked": admin.revoke(path[8:])})
        if path == "/revoke-all":
            return respond(start_response, 200, {"revoked": admin.revoke_all(user())})
        if path == "/purge":
            return respond(start_response, 200, {"purged": admin.purge_expired()})
        if path == "/sessions":
            return respond(start_response, 200, [info.id for info in admin.sessions_of(user())])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain"]

    return app


class ASGIOnLoop(httpx.BaseTransport):
    """``httpx.ASGITransport`` for a sync client: each request runs on one event loop that lives
    in its own thread while the client is open (as an ASGI server's loop would)."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, content=content, request=request
            )

        return asyncio.run_coroutine_threadsafe(send(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class WSGITransport(httpx.BaseTransport):
    """Runs a WSGI app in process for an ``httpx.Client``.

    Unlike ``httpx.WSGITransport`` it passes header bytes through as PEP 3333 says (latin-1 both
    ways, so a cookie holding UTF-8 bytes arrives as the server would hand it over), and it
    reads the whole body before looking at the status, so an app that calls ``start_response``
    from its body iterator works too. Exceptions of the app propagate to the test.
    """

    def __init__(self, app: WSGIApp, remote_addr: str = "127.0.0.1") -> None:
        self.app = app
        self.remote_addr = remote_addr

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        url = request.url
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query.decode("latin-1"),
            "SERVER_NAME": url.host,
            "SERVER_PORT": str(url.port or {"http": 80, "https": 443}[url.scheme]),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.remote_addr,
        }
        for key, value in request.headers.raw:
            name = key.decode("latin-1").upper().replace("-", "_")
            if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                name = "HTTP_" + name
            environ[name] = value.decode("latin-1")
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started.append((status, headers))
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started[-1]
        return httpx.Response(
            int(status.split()[0]),
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            content=content,
            request=request,
        )
