"""The library's answers to the attacks of issue 8, in process: every hostile input gives a clear
4xx (or an anonymous session), never a 500, on the ASGI and the WSGI side alike.

Bodies (nested, surrogates, wrong media type, oversized while streaming), Cookie headers over
8 KiB, tokens in response bodies, revoking one's own session, remember-me within the operator's
timeouts, and the login guard's device cookies. The same attacks over HTTP against the running
demo are in ``tests/demo/test_demo_attacks.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import (
    AsyncLoginGuard,
    AsyncSessionManager,
    LoginGuard,
    SessionConfig,
    SessionManager,
    ThrottleConfig,
    auth,
)
from coatcheck._core.cookies import MAX_COOKIE_HEADER_BYTES
from coatcheck.asgi import SessionMiddleware
from coatcheck.errors import HTTPError
from coatcheck.integrations import flask as flask_helpers
from coatcheck.integrations.starlette import get_session, issue_token, read_json, revoke_session
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.testing import FakeClock, test_config
from coatcheck.throttling import Attempt

COOKIE = "coatcheck_session"
SECRET = "Zq3-lR9xT2pV8mK4nB7cW1yH6dF0sJ5g"
DAY = 24 * 60 * 60.0
LIMIT = 256 * 1024  # the test endpoint's body limit


# -- an app over the ASGI middleware ----------------------------------------------------------


@dataclasses.dataclass
class Env:
    app: Starlette
    clock: FakeClock
    received: list[int]
    """Body bytes the app took from ``receive``, per request that read one."""


def build(config: SessionConfig | None = None) -> Env:
    clock = FakeClock()
    manager = AsyncSessionManager(AsyncMemoryStore(), config or test_config(), clock=clock)
    received: list[int] = []

    async def login(request: Request) -> Response:
        remember = request.query_params.get("remember") == "1"
        auth.login(get_session(request), request.path_params["uid"], remember=remember)
        return JSONResponse({"ok": True})

    async def me(request: Request) -> Response:
        session = get_session(request)
        return JSONResponse({"user": session.user_id})

    async def echo(request: Request) -> Response:
        counted = CountingReceive(request)
        try:
            body = await read_json(counted.request, max_bytes=LIMIT)
        finally:
            received.append(counted.bytes)
        get_session(request)["body"] = body
        return JSONResponse(body)

    async def token(request: Request) -> Response:
        issued = await issue_token(request, request.path_params["uid"])
        return JSONResponse({"token": issued}, headers={"cache-control": "public, max-age=600"})

    async def revoke(request: Request) -> Response:
        session = get_session(request)
        owner = session.user_id or ""
        ok = await revoke_session(request, request.path_params["sid"], owner=owner)
        return Response(status_code=204 if ok else 404)

    app = Starlette(
        routes=[
            Route("/login/{uid}", login, methods=["POST"]),
            Route("/me", me),
            Route("/echo", echo, methods=["POST"]),
            Route("/token/{uid}", token, methods=["POST"]),
            Route("/sessions/{sid}", revoke, methods=["DELETE"]),
        ]
    )
    app.add_middleware(SessionMiddleware, manager=manager)
    return Env(app=app, clock=clock, received=received)


class CountingReceive:
    """Wraps a request's ``receive`` to count the body bytes the app really pulled."""

    def __init__(self, request: Request) -> None:
        self.bytes = 0
        inner = request.receive

        async def receive() -> Any:
            message = await inner()
            self.bytes += len(message.get("body", b""))
            return message

        self.request = Request(request.scope, receive)


@pytest.fixture
def env() -> Env:
    return build()


@asynccontextmanager
async def client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def xsrf(c: httpx.AsyncClient) -> dict[str, str]:
    return {"X-XSRF-TOKEN": c.cookies.get("XSRF-TOKEN", "")}


JSON = {"content-type": "application/json"}
HOSTILE_BODIES = [
    pytest.param(b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}", id="1500-nested-arrays"),
    pytest.param(b'{"a":' * 1500 + b"1" + b"}" * 1500, id="1500-nested-objects"),
    pytest.param(b"[" * 100_000, id="100k-open-brackets"),
    pytest.param(b'{"email": "a\\ud800@example.com"}', id="surrogate-value"),
    pytest.param(b'{"\\udfff": 1}', id="surrogate-key"),
    pytest.param(b'{"a": ["x", {"b": "\\ud83d"}]}', id="surrogate-nested"),
    pytest.param(b'{"a": NaN}', id="nan"),
    pytest.param(b'{"a": 1' + b"0" * 5000 + b"}", id="huge-integer"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b"[1, 2]", id="not-an-object"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("raw", HOSTILE_BODIES)
async def test_hostile_json_bodies_are_422_never_500(env: Env, raw: bytes) -> None:
    """Deep nesting, lone surrogates, NaN, huge integers, bad UTF-8 and non-objects are 422
    invalid_input from read_json; nothing reaches the session (which would fail later)."""
    async with client(env) as c:
        response = await c.post("/echo", content=raw, headers=JSON)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_input")


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "multipart/form-data; boundary=x", "application/jsonx"]
)
async def test_json_endpoints_refuse_other_media_types(env: Env, content_type: str | None) -> None:
    """A JSON endpoint answers 415 to text/plain (a CORS-simple type) and anything else."""
    headers = {"content-type": content_type} if content_type else {}
    async with client(env) as c:
        response = await c.post("/echo", content=b'{"a": 1}', headers=headers)
    assert (response.status_code, response.json()["error"]) == (415, "unsupported_media_type")


async def test_json_media_type_with_parameters_and_suffix_is_read(env: Env) -> None:
    """application/json with a charset, and application/*+json, are read."""
    async with client(env) as c:
        plain = await c.post(
            "/echo",
            content=b'{"a": 1}',
            headers={"content-type": "Application/JSON; charset=utf-8"},
        )
        suffix = await c.post(
            "/echo",
            content=b'{"a": 2}',
            headers={"content-type": "application/merge-patch+json", **xsrf(c)},
        )
    assert (plain.json(), suffix.json()) == ({"a": 1}, {"a": 2})


async def test_announced_oversized_body_is_refused_unread(env: Env) -> None:
    """A Content-Length over the limit is a 413 before a single body byte is read."""
    async with client(env) as c:
        response = await c.post("/echo", content=b"x" * (LIMIT + 1), headers=JSON)
    assert (response.status_code, env.received) == (413, [0])


async def test_streamed_oversized_body_stops_being_read_at_the_limit(env: Env) -> None:
    """A chunked body with no Content-Length is read only until it passes the limit: 413, and
    the rest of a 4 MB stream is never taken from the server."""

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(1024):
            yield b"[" * 4096

    async with client(env) as c:
        response = await c.post("/echo", content=stream(), headers=JSON)
    assert response.status_code == 413
    assert LIMIT < env.received[0] <= LIMIT + 4096


async def test_a_bad_content_length_is_400(env: Env) -> None:
    """A Content-Length that is not a number is a 400, not a 500."""
    scope_headers = [(b"content-type", b"application/json"), (b"content-length", b"12x")]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": scope_headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "root_path": "",
        "http_version": "1.1",
    }
    await env.app(scope, receive, send)
    assert sent[0]["status"] == 400


# -- Cookie headers -------------------------------------------------------------------------


def padding(total: int) -> str:
    """Many ordinary cookies, ``total`` bytes or a little more."""
    pairs = [f"tracker{i}={'v' * 150}" for i in range(total // 160 + 1)]
    return "; ".join(pairs)


async def test_session_is_found_in_a_cookie_header_over_8_kib(env: Env) -> None:
    """With 9.6 KB of other cookies the session cookie is still found: the user stays signed in
    and an unsafe request does not replace the session cookie."""
    async with client(env) as c:
        await c.post("/login/u1", headers=xsrf(c))
        token, csrf = c.cookies[COOKIE], c.cookies["XSRF-TOKEN"]
        cookie = f"{padding(9600)}; {COOKIE}={token}; XSRF-TOKEN={csrf}"
        c.cookies.clear()
        me = await c.get("/me", headers={"cookie": cookie})
        post = await c.post(
            "/echo", content=b'{"a": 1}', headers={"cookie": cookie, "x-xsrf-token": csrf, **JSON}
        )
    assert (len(cookie) > 8192, me.json(), post.status_code) == (True, {"user": "u1"}, 200)
    assert not any(v.startswith(COOKIE) for v in post.headers.get_list("set-cookie"))


async def test_cookie_headers_over_the_cap_are_431_never_a_new_session(env: Env) -> None:
    """Beyond 32 KiB of Cookie headers the request is refused with 431 and sets no cookie, so
    a live session is never silently replaced by an anonymous one."""
    async with client(env) as c:
        await c.post("/login/u1", headers=xsrf(c))
        token = c.cookies[COOKIE]
        cookie = f"{padding(MAX_COOKIE_HEADER_BYTES)}; {COOKIE}={token}"
        c.cookies.clear()
        response = await c.post("/echo", content=b"{}", headers={"cookie": cookie, **JSON})
        after = await c.get("/me", headers={"cookie": f"{COOKIE}={token}"})
    assert (response.status_code, response.json()["error"]) == (431, "cookie_too_large")
    assert (response.headers.get_list("set-cookie"), after.json()) == ([], {"user": "u1"})


async def test_a_websocket_handshake_with_oversized_cookies_is_closed(env: Env) -> None:
    """A WebSocket handshake carrying Cookie headers over the cap is closed (1008) before the
    app runs, as an HTTP request would get 431."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "scheme": "ws",
        "path": "/me",
        "headers": [(b"cookie", padding(MAX_COOKIE_HEADER_BYTES).encode())],
        "client": ("203.0.113.7", 50000),
    }
    await env.app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_wsgi_answers_431_for_cookie_headers_over_the_cap() -> None:
    """The WSGI middleware refuses oversized Cookie headers the same way."""
    app = Flask(__name__)
    manager = SessionManager(MemoryStore(), test_config())
    flask_helpers.Coatcheck(app, manager=manager)

    @app.get("/me")
    def me() -> Any:
        return jsonify({"user": flask_helpers.get_session().user_id})

    c = app.test_client(use_cookies=False)  # with its jar, the test client drops the header
    response = c.get("/me", headers={"cookie": padding(MAX_COOKIE_HEADER_BYTES + 100)})
    assert (response.status_code, response.get_json()["error"]) == (431, "cookie_too_large")


# -- tokens in bodies, revoking one's own session -------------------------------------------


async def test_a_response_carrying_a_token_is_no_store(env: Env) -> None:
    """issue_token makes the response no-store, even when the endpoint asked for caching."""
    async with client(env) as c:
        response = await c.post("/token/u1")
    assert (response.status_code, response.headers["cache-control"]) == (200, "no-store")


async def test_revoking_the_current_session_clears_its_cookies(env: Env) -> None:
    """Revoking one's own current session by id is a logout: both cookies are cleared and the
    old token is dead."""
    async with client(env) as c:
        await c.post("/login/u1", headers=xsrf(c))
        token = c.cookies[COOKIE]
        response = await c.delete(f"/sessions/{token.split('.')[0]}", headers=xsrf(c))
        cleared = [v for v in response.headers.get_list("set-cookie") if "Max-Age=0" in v]
        c.cookies.clear()
        after = await c.get("/me", headers={"cookie": f"{COOKIE}={token}"})
    assert (response.status_code, len(cleared), after.json()) == (204, 2, {"user": None})


async def test_revoking_another_of_my_sessions_leaves_my_cookies_alone(env: Env) -> None:
    """Revoking another device's session ends it and sets no cookie on this response; another
    user's session id is not found."""
    async with client(env) as laptop, client(env) as phone, client(env) as other:
        await laptop.post("/login/u1", headers=xsrf(laptop))
        await phone.post("/login/u1", headers=xsrf(phone))
        await other.post("/login/u2", headers=xsrf(other))
        phone_id = phone.cookies[COOKIE].split(".")[0]
        other_id = other.cookies[COOKIE].split(".")[0]
        response = await laptop.delete(f"/sessions/{phone_id}", headers=xsrf(laptop))
        foreign = await laptop.delete(f"/sessions/{other_id}", headers=xsrf(laptop))
        states = [(await c.get("/me")).json()["user"] for c in (laptop, phone, other)]
    assert (response.status_code, response.headers.get_list("set-cookie")) == (204, [])
    assert (foreign.status_code, states) == (404, ["u1", None, "u2"])


def test_flask_helpers_match_the_starlette_ones() -> None:
    """Flask: read_json refuses nesting (422) and text/plain (415); issue_token's response is
    no-store; revoke_session of the current session clears the cookies."""
    app = Flask(__name__)
    manager = SessionManager(MemoryStore(), test_config())
    flask_helpers.Coatcheck(app, manager=manager)

    @app.post("/echo")
    def echo() -> Any:
        return jsonify(flask_helpers.read_json(max_bytes=4096))

    @app.post("/login")
    def login() -> Any:
        auth.login(flask_helpers.get_session(), "u1")
        return jsonify({})

    @app.post("/token")
    def token() -> Any:
        return jsonify({"token": flask_helpers.issue_token("u1")})

    @app.delete("/sessions/<sid>")
    def revoke(sid: str) -> Any:
        return ("", 204 if flask_helpers.revoke_session(sid, owner="u1") else 404)

    c = app.test_client()
    nested = c.post("/echo", data=b'{"a":' + b"[" * 1500 + b"}", content_type="application/json")
    plain = c.post("/echo", data=b'{"a": 1}', content_type="text/plain")
    large = c.post("/echo", data=b" " * 5000, content_type="application/json")
    ok = c.post("/echo", data=b'{"a": 1}', content_type="application/json")
    issued = c.post("/token")
    c.post("/login")
    csrf = {"X-XSRF-TOKEN": c.get_cookie("XSRF-TOKEN").value}  # type: ignore[union-attr]
    sid = c.get_cookie(COOKIE).value.split(".")[0]  # type: ignore[union-attr]
    revoked = c.delete(f"/sessions/{sid}", headers=csrf)
    assert [r.status_code for r in (nested, plain, large, ok)] == [422, 415, 413, 200]
    assert issued.headers["cache-control"] == "no-store"
    cleared = [v for v in revoked.headers.getlist("set-cookie") if "Max-Age=0" in v]
    assert (revoked.status_code, len(cleared)) == (204, 2)


# -- remember-me within the operator's policy -----------------------------------------------


def test_remember_me_defaults_are_kept_with_default_timeouts() -> None:
    """Left alone, remember-me sessions get 14 days idle and 30 days in all."""
    assert SessionConfig(secret=SECRET).timeouts(remember=True) == (14 * DAY, 30 * DAY)


def test_an_operators_absolute_timeout_bounds_remember_me() -> None:
    """absolute_timeout=20 bounds remember-me too, unless remember-me lifetimes are set."""
    bounded = SessionConfig(secret=SECRET, idle_timeout=10, absolute_timeout=20)
    longer = SessionConfig(secret=SECRET, absolute_timeout=2 * DAY)
    explicit = SessionConfig(
        secret=SECRET, idle_timeout=10, absolute_timeout=20, remember_absolute_timeout=DAY
    )
    assert [c.timeouts(remember=True) for c in (bounded, longer, explicit)] == [
        (20, 20),
        (2 * DAY, 2 * DAY),
        (DAY, DAY),
    ]
    assert bounded.remember_absolute_timeout == 20  # the cookie's Max-Age follows


def test_remember_me_can_be_turned_off() -> None:
    """allow_remember=False: a remember-me login gets the ordinary timeouts."""
    config = SessionConfig(secret=SECRET, allow_remember=False)
    assert config.timeouts(remember=True) == config.timeouts(remember=False)


def test_replace_bounds_remember_me_again() -> None:
    """dataclasses.replace with a shorter absolute timeout bounds the default remember-me
    lifetimes again (they stay defaults), while explicit ones stay as set."""
    shorter = dataclasses.replace(SessionConfig(secret=SECRET), idle_timeout=5, absolute_timeout=9)
    explicit = dataclasses.replace(
        SessionConfig(secret=SECRET, remember_idle_timeout=DAY, remember_absolute_timeout=DAY),
        idle_timeout=5,
        absolute_timeout=9,
    )
    assert (shorter.timeouts(remember=True), explicit.timeouts(remember=True)) == (
        (9, 9),
        (DAY, DAY),
    )


async def test_remember_me_session_ends_at_the_operators_absolute_timeout() -> None:
    """Over the middleware: with absolute_timeout=20, a remember-me session is refused at 21 s
    and its cookie's Max-Age is 20."""
    env = build(test_config(idle_timeout=20, absolute_timeout=20))
    async with client(env) as c:
        response = await c.post("/login/u1?remember=1", headers=xsrf(c))
        cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(COOKIE))
        env.clock.advance(19)
        at_19 = (await c.get("/me")).json()
        env.clock.advance(2)
        at_21 = (await c.get("/me")).json()
    assert ("Max-Age=20" in cookie, at_19, at_21) == (True, {"user": "u1"}, {"user": None})


# -- the login guard: device cookies, failures per address ---------------------------------


def guard_env(
    config: ThrottleConfig | None = None,
) -> tuple[AsyncLoginGuard, FakeClock]:
    clock = FakeClock()
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config(), clock=clock)
    return AsyncLoginGuard(manager, config), clock


def device_of(headers: list[tuple[str, str]]) -> str:
    (name, value), *_ = headers
    assert name == "set-cookie"
    return value.split(";")[0].split("=", 1)[1]


async def attack(guard: AsyncLoginGuard, account: str, identity: str, times: int) -> list[int]:
    """``times`` wrong guesses from as many addresses; the statuses (401 stands for allowed)."""
    statuses = []
    for n in range(times):
        try:
            await guard.check(account, f"198.51.100.{n}", identity=identity)
            statuses.append(401)
        except HTTPError as refused:
            statuses.append(refused.status_code)
    return statuses


async def test_the_owners_browser_gets_in_while_an_attacker_is_locked_out() -> None:
    """OWASP device cookies: after an attack from many addresses locks the account, the owner's
    browser (holding the device cookie from its last login) is allowed; a browser without one,
    or with a forged one, is refused."""
    guard, _ = guard_env()
    first = await guard.check("ann@example.com", "192.0.2.1", identity="u1")
    device = device_of(await guard.succeeded(first))
    statuses = await attack(guard, "ann@example.com", "u1", 20)
    owner = await guard.check("ann@example.com", "192.0.2.9", identity="u1", device=device)
    with pytest.raises(HTTPError) as new_browser:
        await guard.check("ann@example.com", "192.0.2.9", identity="u1")
    with pytest.raises(HTTPError) as forged:
        await guard.check("ann@example.com", "192.0.2.9", identity="u1", device=device[:-2] + "AA")
    assert statuses[:5] == [401] * 5
    assert 429 in statuses
    assert isinstance(owner, Attempt)
    assert (new_browser.value.status_code, forged.value.status_code) == (429, 429)


async def test_a_device_cookie_for_one_account_does_not_help_against_another() -> None:
    """The attacker's own device cookie (from their own account) counts for nothing on the
    victim's account."""
    guard, _ = guard_env()
    mine = await guard.check("mallory@example.com", "192.0.2.1", identity="u-mallory")
    device = device_of(await guard.succeeded(mine))
    await attack(guard, "ann@example.com", "u-ann", 20)
    with pytest.raises(HTTPError) as refused:
        await guard.check("ann@example.com", "192.0.2.1", identity="u-ann", device=device)
    assert refused.value.status_code == 429


async def test_device_cookie_is_spelled_like_the_session_cookie() -> None:
    """The device cookie is HttpOnly, carries the session cookie's attributes and a Max-Age of
    the configured lifetime."""
    guard, _ = guard_env(ThrottleConfig(device_lifetime=30 * DAY))
    headers = await guard.succeeded(await guard.check("a@example.com", None, identity="u1"))
    (_, cookie), *_ = headers
    assert cookie.startswith("coatcheck_device=")
    assert cookie.endswith("; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax")


async def test_device_cookies_off_issue_none() -> None:
    """device_threshold=None: no device cookie is issued."""
    guard, _ = guard_env(ThrottleConfig(device_threshold=None))
    assert await guard.succeeded(await guard.check("a@example.com", None)) == []


async def test_an_office_behind_one_address_is_never_refused() -> None:
    """Forty colleagues signing in from one NAT address within the window all get in: the
    address counts failures only."""
    guard, _ = guard_env()
    for n in range(40):
        attempt = await guard.check(f"user{n}@example.com", "203.0.113.1", identity=f"u{n}")
        await guard.succeeded(attempt)


async def test_lone_surrogates_and_nul_in_names_are_throttled_not_crashed() -> None:
    """A name with a lone surrogate or NUL (valid JSON) is counted like any other."""
    guard, _ = guard_env()
    for name in ("\ud800@example.com", "a\x00b", "\udfff" * 300):
        await guard.check(name, "192.0.2.1", identity=name)


async def test_registration_probing_is_limited_per_address_new_accounts_are_not() -> None:
    """A guard with purpose="register": taken-email hits (no success) are refused after the
    threshold, while any number of new accounts (successes) from one address pass."""
    guard, _ = guard_env(ThrottleConfig(ip_threshold=3))
    for _ in range(30):
        await guard.succeeded(await guard.check(None, "203.0.113.1"))
    for _ in range(3):
        await guard.check(None, "203.0.113.1")  # three taken emails
    with pytest.raises(HTTPError) as refused:
        await guard.check(None, "203.0.113.1")
    login_guard = AsyncLoginGuard(guard.manager)
    assert refused.value.status_code == 429
    await login_guard.check("a@example.com", "203.0.113.1")  # the login counts are apart


def test_sync_guard_issues_and_honours_device_cookies() -> None:
    """The sync twin: an owner's device cookie gets through an account locked by others."""
    manager = SessionManager(MemoryStore(), test_config(), clock=FakeClock())
    guard = LoginGuard(manager, purpose="login")
    device = device_of(guard.succeeded(guard.check("a@example.com", "192.0.2.1", identity="u")))
    for n in range(20):
        with suppress(HTTPError):
            guard.check("a@example.com", f"198.51.100.{n}", identity="u")
    assert isinstance(
        guard.check("a@example.com", "192.0.2.1", identity="u", device=device), Attempt
    )


def test_purpose_must_be_a_word() -> None:
    """A purpose is a key label: anything but an identifier is refused at start-up."""
    with pytest.raises(ValueError, match="purpose"):
        LoginGuard(SessionManager(MemoryStore(), test_config()), purpose="a:b")


async def test_a_client_hanging_up_mid_body_ends_the_request_without_an_error() -> None:
    """Found by an attack on the demo: a client that sent half a JSON body and closed the
    connection made ``read_json`` raise Starlette's ``ClientDisconnect``, logged as an application
    error (a 500 to every monitor). It is a 400 ``incomplete_body`` now, answered to nobody."""
    env = build()
    messages = [
        {"type": "http.request", "body": b'{"item":', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "https", "path": "/echo", "raw_path": b"/echo", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 443),
        "headers": [
            (b"host", b"testserver"), (b"content-type", b"application/json"),
            (b"content-length", b"100"),
        ],
    }  # fmt: skip
    await env.app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"incomplete_body" in sent[1]["body"]
