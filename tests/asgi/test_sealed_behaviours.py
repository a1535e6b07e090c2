"""Session behaviours that make sense without a store, run unchanged on a server store and on
sealed cookies (with and without a revocation record), through the ASGI middleware and a small
Starlette app. Then the adversarial cookies of the sealed mode: never a 500.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import async_store_from_url, auth
from coatcheck._core.config import CookieConfig, SessionConfig
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import get_session, issue_token, require_user
from coatcheck.manager import AsyncSessionManager
from coatcheck.testing import FakeClock, test_config

COOKIE = "coatcheck_session"
SEALED = "sealed://"
SEALED_REVOKING = f"sealed://?revocations={quote('memory://', safe='')}"
STORES = ["memory://", SEALED, SEALED_REVOKING]
SECRET = "behaviours-secret-0123456789-abcdefghij"


def build(url: str, config: SessionConfig | None = None) -> tuple[Starlette, FakeClock]:
    clock = FakeClock()
    config = config or test_config(secret=SECRET)
    manager = AsyncSessionManager(async_store_from_url(url), config, clock=clock)

    async def read(request: Request) -> Response:
        s = get_session(request)
        return JSONResponse({"user": s.user_id, "data": dict(s), "flashes": s.flashes})

    async def write(request: Request) -> Response:
        get_session(request).update(await request.json())
        return JSONResponse({"ok": True})

    async def login(request: Request) -> Response:
        auth.login(get_session(request), "u1")
        return JSONResponse({"ok": True})

    async def logout(request: Request) -> Response:
        auth.logout(get_session(request))
        if request.query_params.get("say"):
            get_session(request).flash(request.query_params["say"])
        return Response(status_code=204)

    async def flash(request: Request) -> Response:
        get_session(request).flash("hello")
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        return JSONResponse({"user": await require_user(request)})

    async def token(request: Request) -> Response:
        return JSONResponse({"token": await issue_token(request, "u1")})

    async def static(request: Request) -> Response:
        return Response("plain")

    app = Starlette(
        routes=[
            Route("/read", read),
            Route("/write", write, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/flash", flash, methods=["POST"]),
            Route("/me", me),
            Route("/token", token, methods=["POST"]),
            Route("/static", static),
        ]
    )
    app.add_middleware(SessionMiddleware, manager=manager)
    return app, clock


@dataclass
class Env:
    client: httpx.AsyncClient
    clock: FakeClock
    url: str

    def csrf(self) -> dict[str, str]:
        return {"X-XSRF-TOKEN": self.client.cookies.get("XSRF-TOKEN", "")}

    def session_cookies(self, response: httpx.Response) -> list[str]:
        return [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")]


@pytest.fixture(params=STORES, ids=["memory", "sealed", "sealed-revocations"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    app, clock = build(request.param)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Env(client, clock, request.param)


async def test_anonymous_read_sets_no_cookie(env: Env) -> None:
    """An empty anonymous session gets no cookie."""
    response = await env.client.get("/read")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers


async def test_read_only_request_sets_no_session_cookie(env: Env) -> None:
    """A request that only reads an existing session writes nothing and varies on Cookie."""
    await env.client.post("/write", json={"a": 1})
    env.clock.advance(1)
    response = await env.client.get("/read")
    assert response.json()["data"] == {"a": 1}
    assert env.session_cookies(response) == []
    assert response.headers["vary"] == "Cookie"
    assert response.headers["cache-control"] == "private, no-store"


async def test_touch_is_throttled_and_keeps_the_session_alive(env: Env) -> None:
    """last_seen_at moves at most once per touch_interval; steady activity outlives the idle
    timeout (two hours of requests 30 s apart)."""
    await env.client.post("/write", json={"a": 1})
    refreshed = 0
    for _ in range(240):
        env.clock.advance(30)
        response = await env.client.get("/read")
        assert response.json()["data"] == {"a": 1}
        refreshed += bool(env.session_cookies(response))
    if env.url != "memory://":
        assert refreshed == 120  # a server store writes its record instead of the cookie


async def test_idle_timeout_expires_and_clears(env: Env) -> None:
    """After the idle timeout the session is gone and its cookie cleared."""
    await env.client.post("/write", json={"a": 1})
    env.clock.advance(30 * 60)
    response = await env.client.get("/read")
    assert response.json()["data"] == {}
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


async def test_absolute_timeout_ends_an_active_session(env: Env) -> None:
    """Even a constantly active session ends at the absolute timeout."""
    await env.client.post("/write", json={"a": 1})
    for _ in range(12 * 60 - 1):
        env.clock.advance(60)
        assert (await env.client.get("/read")).json()["data"] == {"a": 1}
    env.clock.advance(60)
    assert (await env.client.get("/read")).json()["data"] == {}


async def test_login_regenerates_and_keeps_data(env: Env) -> None:
    """Login issues a new cookie and keeps the anonymous data."""
    await env.client.post("/write", json={"cart": ["apple"]})
    before = env.client.cookies[COOKIE]
    assert (await env.client.post("/login", headers=env.csrf())).status_code == 200
    assert env.client.cookies[COOKIE] != before
    assert (await env.client.get("/read")).json() == {
        "user": "u1",
        "data": {"cart": ["apple"]},
        "flashes": [],
    }


async def test_logout_clears_and_a_replayed_cookie_is_refused_when_revocable(env: Env) -> None:
    """Logout clears the cookies; replaying the old one is refused on a server store and with a
    revocation record, and still works until it expires on plain sealed://."""
    await env.client.post("/write", json={"x": 1})
    await env.client.post("/login", headers=env.csrf())
    stolen = env.client.cookies[COOKIE]
    response = await env.client.post("/logout", headers=env.csrf())
    assert response.status_code == 204
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    replay = await env.client.get("/me", headers={"cookie": f"{COOKIE}={stolen}"})
    if env.url == SEALED:
        assert replay.json() == {"user": "u1"}
        env.clock.advance(30 * 60)
        replay = await env.client.get("/me", headers={"cookie": f"{COOKIE}={stolen}"})
    assert replay.status_code == 401
    assert replay.json() == {"error": "unauthenticated"}


async def test_flash_once(env: Env) -> None:
    """A flashed message is read on the next request and never again."""
    await env.client.post("/write", json={"a": 1})
    await env.client.post("/flash", headers=env.csrf())
    assert (await env.client.get("/read")).json()["flashes"] == [
        {"message": "hello", "category": "info"}
    ]
    assert (await env.client.get("/read")).json()["flashes"] == []


async def test_a_logout_flash_is_carried_and_earlier_unread_ones_are_not(env: Env) -> None:
    """The "signed out" flash of the logout request is shown on the next page, on every store
    (sealed cookies lost it: found by an attack). A message stored earlier for the signed-in user
    and never shown ends with the session: the next person on the browser must not read it."""
    await env.client.post("/login")
    await env.client.post("/flash", headers=env.csrf())  # stored, never shown
    out = await env.client.post("/logout", params={"say": "bye"}, headers=env.csrf())
    assert out.status_code == 204
    after = (await env.client.get("/read")).json()
    assert after["user"] is None
    assert after["flashes"] == [{"message": "bye", "category": "info"}]
    assert (await env.client.get("/read")).json()["flashes"] == []


async def test_csrf_token_required(env: Env) -> None:
    """With a session, an unsafe request without the right CSRF token is 403."""
    await env.client.post("/write", json={"a": 1})
    assert (await env.client.post("/write", json={"a": 2})).status_code == 403
    wrong = await env.client.post("/write", json={"a": 2}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert (await env.client.post("/write", json={"a": 2}, headers=env.csrf())).status_code == 200


async def test_cross_site_refused_before_token(env: Env) -> None:
    """A cross-site unsafe request is refused even with a valid token."""
    await env.client.post("/write", json={"a": 1})
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}):
        response = await env.client.post("/write", json={}, headers={**env.csrf(), **headers})
        assert response.status_code == 403


async def test_csrf_form_field(env: Env) -> None:
    """The token may come in a _csrf form field."""
    await env.client.post("/write", json={"a": 1})
    token = env.client.cookies["XSRF-TOKEN"]
    assert (await env.client.post("/logout", data={"_csrf": token})).status_code == 204


async def test_static_response_untouched(env: Env) -> None:
    """A response that never touched the session gets no Vary or Cache-Control."""
    response = await env.client.get("/static")
    assert "vary" not in response.headers
    assert "cache-control" not in response.headers


async def test_bearer_rules(env: Env) -> None:
    """Server stores issue bearer tokens; sealed sessions refuse them clearly (501 to issue,
    401 invalid_token to present); malformed headers are 400 either way."""
    issued = await env.client.post("/token")
    if env.url == "memory://":
        token = issued.json()["token"]
        ok = await env.client.get("/me", headers={"authorization": f"Bearer {token}"})
        assert ok.json() == {"user": "u1"}
    else:
        assert issued.status_code == 501
        assert issued.json()["error"] == "not_supported"
        refused = await env.client.get("/me", headers={"authorization": "Bearer x.y"})
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    malformed = await env.client.get("/me", headers={"authorization": "Bearer a b"})
    assert malformed.status_code == 400


@pytest.mark.parametrize("url", STORES)
async def test_secure_default_cookie_attributes(url: str) -> None:
    """Library defaults hold for every store: __Host- name, Secure, HttpOnly, SameSite=Lax."""
    app, _ = build(url, SessionConfig(secret="k" * 10 + "abcdefghijklmnopqrstuvwxyz"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.post("/write", json={"a": 1})
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("__Host-session="))
    assert session_cookie.endswith("; Path=/; Secure; HttpOnly; SameSite=Lax")
    assert response.headers["cache-control"] == "no-store"


# -- sealed only: adversarial cookies -----------------------------------------------------------


@pytest.fixture(params=[SEALED, SEALED_REVOKING], ids=["sealed", "sealed-revocations"])
async def sealed(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    app, clock = build(request.param)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Env(client, clock, request.param)


async def signed_in_cookie(env: Env) -> str:
    await env.client.post("/write", json={"cart": ["apple"]})
    await env.client.post("/login", headers=env.csrf())
    value: str = env.client.cookies[COOKIE]
    return value


def variants(value: str) -> list[str]:
    """Flipped characters at several places, truncations, and appended bytes."""
    out = []
    for position in (0, 1, 5, 10, 22, len(value) // 2, len(value) - 2, len(value) - 1):
        c = value[position]
        out.append(value[:position] + ("A" if c != "A" else "B") + value[position + 1 :])
    out += [value[:-1], value[:-4], value[: len(value) // 2], value[1:], value + "A", value + "AA"]
    return out


async def test_tampered_real_cookies_are_anonymous_and_cleared(sealed: Env) -> None:
    """Any flipped byte, truncation or appended bytes of a real signed-in cookie gives an
    anonymous session (401 on /me, the cookie cleared), never a 500."""
    value = await signed_in_cookie(sealed)
    assert (await sealed.client.get("/me")).status_code == 200
    for forged in variants(value):
        response = await sealed.client.get("/me", headers={"cookie": f"{COOKIE}={forged}"})
        assert response.status_code == 401, forged
        assert f'{COOKIE}=""' in response.headers["set-cookie"]
        read = await sealed.client.get("/read", headers={"cookie": f"{COOKIE}={forged}"})
        assert (read.status_code, read.json()["user"]) == (200, None)


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        "x" * 5000,
        "\x00\x01",
        "A" * 24 + "." + "B" * 43,
        "💥" * 10,
        base64.urlsafe_b64encode(b'{"i":"x"}').decode(),
        "AQ" + "A" * 60,
    ],
)
async def test_junk_cookies_never_500(sealed: Env, value: str) -> None:
    """Non-base64, oversized, non-ASCII, server-token-shaped and plaintext-JSON cookies are
    anonymous sessions."""
    response = await sealed.client.get("/read", headers={"cookie": f"{COOKIE}={value}".encode()})
    assert (response.status_code, response.json()["user"]) == (200, None)


async def test_wrong_key_and_removed_key_and_wrong_name(sealed: Env) -> None:
    """A cookie from an app with another secret, or after its secret was removed, or moved to
    another cookie name, is anonymous."""
    value = await signed_in_cookie(sealed)
    rotated, _ = build(sealed.url, test_config(secret="another-secret-0123456789-abcdefghij"))
    same_secret_other_name = test_config(
        secret=SECRET, cookie=CookieConfig(secure=False, name="sid")
    )
    renamed, _ = build(sealed.url, same_secret_other_name)
    for app, name in ((rotated, COOKIE), (renamed, "sid")):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            response = await c.get("/me", headers={"cookie": f"{name}={value}"})
            assert response.status_code == 401


async def test_expired_seal_is_anonymous(sealed: Env) -> None:
    """A seal past its idle timeout is anonymous (401) and cleared."""
    value = await signed_in_cookie(sealed)
    sealed.clock.advance(31 * 60)
    response = await sealed.client.get("/me", headers={"cookie": f"{COOKIE}={value}"})
    assert response.status_code == 401


async def test_oversized_data_is_a_413_and_the_cookie_is_kept(sealed: Env) -> None:
    """A write that would not fit in 4096 bytes answers 413 session_too_large, sets no cookie,
    and the previous session still works."""
    await signed_in_cookie(sealed)
    before = sealed.client.cookies[COOKIE]
    response = await sealed.client.post("/write", json={"blob": "x" * 5000}, headers=sealed.csrf())
    assert response.status_code == 413
    assert response.json()["error"] == "session_too_large"
    assert "set-cookie" not in response.headers
    assert sealed.client.cookies[COOKIE] == before
    assert (await sealed.client.get("/me")).json() == {"user": "u1"}


@pytest.mark.parametrize("url", [SEALED, SEALED_REVOKING])
async def test_a_long_flash_is_dropped_rather_than_the_sign_in(url: str) -> None:
    """Found by an attack on the demo's pages: a login whose welcome flash (with the user's
    name) did not fit beside a full cart answered 413, after a registration had created the
    account. The flash is dropped (and logged); the sign-in goes through."""
    config = test_config(secret=SECRET)
    manager = AsyncSessionManager(async_store_from_url(url), config, clock=FakeClock())

    async def fill(request: Request) -> Response:
        get_session(request)["blob"] = request.query_params["data"]
        return Response(status_code=204)

    async def login(request: Request) -> Response:
        session = get_session(request)
        auth.login(session, "u1", credential="hash")
        session.flash("Welcome, " + "x" * 600)
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        s = get_session(request)
        return JSONResponse({"user": s.user_id, "flashes": s.flashes})

    app = Starlette(
        routes=[
            Route("/fill", fill, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/me", me),
        ]
    )
    app.add_middleware(SessionMiddleware, manager=manager)
    transport = httpx.ASGITransport(app=app)
    data = secrets.token_urlsafe(3000)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as c:
        size = len(data)
        while (await c.post("/fill", params={"data": data[:size]})).status_code != 204:
            size -= 50
        signed_in = await c.post("/login", headers={"x-xsrf-token": c.cookies["XSRF-TOKEN"]})
        assert signed_in.status_code == 204
        assert (await c.get("/me")).json() == {"user": "u1", "flashes": []}


@pytest.mark.parametrize("url", [SEALED, SEALED_REVOKING])
async def test_a_full_anonymous_session_can_always_sign_in(url: str) -> None:
    """Found by an attack on the demo: an anonymous cart filled right up to the cookie limit made
    the login answer 413 (and registration 413 after creating the account). An anonymous seal is
    refused 256 bytes early; signing the fullest one in with a 64-character user id, remember-me
    and a credential fingerprint fits in 4096 bytes."""
    config = test_config(secret=SECRET)
    manager = AsyncSessionManager(async_store_from_url(url), config, clock=FakeClock())

    async def fill(request: Request) -> Response:
        get_session(request)["blob"] = request.query_params["data"]
        return Response(status_code=204)

    async def login(request: Request) -> Response:
        auth.login(get_session(request), "u" * 64, remember=True, credential="hash")
        return Response(status_code=204)

    app = Starlette(
        routes=[Route("/fill", fill, methods=["POST"]), Route("/login", login, methods=["POST"])]
    )
    app.add_middleware(SessionMiddleware, manager=manager)
    data = secrets.token_urlsafe(3000)  # incompressible
    low, high = 0, len(data)  # the longest prefix an anonymous seal accepts
    transport = httpx.ASGITransport(app=app)
    while low < high:
        middle = (low + high + 1) // 2
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as c:
            status = (await c.post("/fill", params={"data": data[:middle]})).status_code
        assert status in (204, 413)
        low, high = (middle, high) if status == 204 else (low, middle - 1)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as c:
        assert (await c.post("/fill", params={"data": data[:low]})).status_code == 204
        csrf = {"x-xsrf-token": c.cookies["XSRF-TOKEN"]}
        signed_in = await c.post("/login", headers=csrf)
        assert signed_in.status_code == 204
        cookie = next(
            v for v in signed_in.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")
        )
        assert 4096 - 256 < len(cookie) <= 4096
