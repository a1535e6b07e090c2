"""The ASGI middleware end to end through a small Starlette app (httpx in-process transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import auth
from coatcheck._core.config import CookieConfig, SessionConfig
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import get_session, issue_token, require_user
from coatcheck.manager import AsyncSessionManager
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import CountingStore, FakeClock, test_config

COOKIE = "coatcheck_session"


def build(config: SessionConfig | None = None) -> tuple[Starlette, CountingStore, FakeClock]:
    store = CountingStore(AsyncMemoryStore())
    clock = FakeClock()
    manager = AsyncSessionManager(store, config or test_config(), clock=clock)

    async def read(request: Request) -> Response:
        s = get_session(request)
        return JSONResponse({"user": s.user_id, "data": dict(s), "flashes": s.flashes})

    async def write(request: Request) -> Response:
        body = await request.json()
        get_session(request).update(body)
        return JSONResponse({"ok": True})

    async def login(request: Request) -> Response:
        auth.login(get_session(request), "u1")
        return JSONResponse({"ok": True})

    async def logout(request: Request) -> Response:
        auth.logout(get_session(request))
        return Response(status_code=204)

    async def flash(request: Request) -> Response:
        get_session(request).flash("hello")
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        user = await require_user(request)
        return JSONResponse({"user": user})

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
    return app, store, clock


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, CountingStore, FakeClock]]:
    app, store, clock = build()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, store, clock


def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-XSRF-TOKEN": client.cookies.get("XSRF-TOKEN", "")}


async def test_anonymous_read_sets_no_cookie_and_stores_nothing(env) -> None:  # type: ignore[no-untyped-def]
    """An empty anonymous session is never stored and gets no cookie."""
    client, store, _ = env
    response = await client.get("/read")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert store.calls == {}


async def test_read_only_request_makes_no_store_write(env) -> None:  # type: ignore[no-untyped-def]
    """After the session exists, a request that only reads it performs one get and no write."""
    client, store, clock = env
    await client.post("/write", json={"a": 1})
    store.reset()
    clock.advance(1)
    response = await client.get("/read")
    assert response.json()["data"] == {"a": 1}
    assert dict(store.calls) == {"get": 1}
    assert "set-cookie" not in response.headers
    assert response.headers["vary"] == "Cookie"


async def test_touch_is_throttled_by_touch_interval(env) -> None:  # type: ignore[no-untyped-def]
    """last_seen_at is written at most once per touch_interval, and steady activity keeps the
    session alive past the idle timeout."""
    client, store, clock = env
    await client.post("/write", json={"a": 1})
    writes = 0
    for _ in range(120):  # 120 requests 30 s apart = one hour, twice the idle timeout
        clock.advance(30)
        store.reset()
        assert (await client.get("/read")).json()["data"] == {"a": 1}
        writes += store.writes
    assert writes == 60  # touch_interval is 60 s: every other request writes


async def test_idle_timeout_expires_session(env) -> None:  # type: ignore[no-untyped-def]
    """A session idle for the idle timeout is gone: fresh anonymous session, cookie cleared."""
    client, _, clock = env
    await client.post("/write", json={"a": 1})
    clock.advance(30 * 60)
    response = await client.get("/read")
    assert response.json()["data"] == {}
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


async def test_absolute_timeout_expires_an_active_session(env) -> None:  # type: ignore[no-untyped-def]
    """Even a constantly active session ends at the absolute timeout."""
    client, _, clock = env
    await client.post("/write", json={"a": 1})
    for _ in range(12 * 60 - 1):
        clock.advance(60)
        assert (await client.get("/read")).json()["data"] == {"a": 1}
    clock.advance(60)
    assert (await client.get("/read")).json()["data"] == {}


async def test_login_regenerates_id_and_keeps_data(env) -> None:  # type: ignore[no-untyped-def]
    """Login issues a new token, deletes the old record and keeps the anonymous data."""
    client, store, _ = env
    await client.post("/write", json={"cart": ["apple"]})
    before = client.cookies[COOKIE]
    response = await client.post("/login", headers=csrf(client))
    assert response.status_code == 200
    after = client.cookies[COOKIE]
    assert after != before
    assert (await client.get("/read")).json() == {
        "user": "u1",
        "data": {"cart": ["apple"]},
        "flashes": [],
    }
    old = await store.get(before.split(".")[0])
    assert old is None


async def test_logout_destroys_and_old_cookie_no_longer_works(env) -> None:  # type: ignore[no-untyped-def]
    """After logout, replaying the old cookie yields an anonymous session."""
    client, _, _ = env
    await client.post("/write", json={"x": 1})
    await client.post("/login", headers=csrf(client))
    stolen = client.cookies[COOKIE]
    response = await client.post("/logout", headers=csrf(client))
    assert response.status_code == 204
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    replay = await client.get("/me", headers={"cookie": f"{COOKIE}={stolen}"})
    assert replay.status_code == 401
    assert replay.json() == {"error": "unauthenticated"}


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "a" * 24 + "." + "b" * 43,
        "",
        "x" * 5000,
        "\x00\x01",
        "AAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        "💥" * 10,
    ],
)
async def test_bad_cookie_gives_anonymous_session_and_is_cleared(env, value: str) -> None:  # type: ignore[no-untyped-def]
    """Malformed, forged, oversized and non-ASCII cookies never 500 and never authenticate."""
    client, _store, _ = env
    response = await client.get("/read", headers={"cookie": f"{COOKIE}={value}".encode()})
    assert response.status_code == 200
    assert response.json()["user"] is None


async def test_tampered_secret_is_not_adopted(env) -> None:  # type: ignore[no-untyped-def]
    """A real id with a wrong secret is refused (the secret hash is checked)."""
    client, _, _ = env
    await client.post("/write", json={"a": 1})
    await client.post("/login", headers=csrf(client))
    sid, secret = client.cookies[COOKIE].split(".")
    forged = sid + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    response = await client.get("/me", headers={"cookie": f"{COOKIE}={forged}"})
    assert response.status_code == 401


async def test_flash_is_delivered_on_the_next_request_only(env) -> None:  # type: ignore[no-untyped-def]
    """A flashed message is readable on the next request and never again."""
    client, _, _ = env
    await client.post("/write", json={"a": 1})
    await client.post("/flash", headers=csrf(client))
    first = await client.get("/read")
    assert first.json()["flashes"] == [{"message": "hello", "category": "info"}]
    second = await client.get("/read")
    assert second.json()["flashes"] == []


async def test_bearer_token_works_and_bad_ones_get_rfc6750_errors(env) -> None:  # type: ignore[no-untyped-def]
    """Bearer tokens authenticate; invalid → 401 invalid_token; malformed header → 400."""
    client, _, _ = env
    token = (await client.post("/token")).json()["token"]
    ok = await client.get("/me", headers={"authorization": f"Bearer {token}"})
    assert ok.json() == {"user": "u1"}
    assert ok.headers["vary"] == "Authorization"
    bad = await client.get("/me", headers={"authorization": "Bearer " + token[:-1] + "x"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    for header in ("Bearer", "Bearer  two spaces", "Bearer a b", "Bearer \x7f", "Bearer\ttab"):
        malformed = await client.get("/me", headers={"authorization": header})
        assert malformed.status_code == 400, header
        assert malformed.json() == {"error": "invalid_request"}


async def test_bearer_token_is_not_a_cookie(env) -> None:  # type: ignore[no-untyped-def]
    """A bearer token presented as a cookie is not adopted (tokens are bound to a transport)."""
    client, _, _ = env
    token = (await client.post("/token")).json()["token"]
    response = await client.get("/me", headers={"cookie": f"{COOKIE}={token}"})
    assert response.status_code == 401


async def test_csrf_token_required_for_cookie_unsafe_requests(env) -> None:  # type: ignore[no-untyped-def]
    """With a stored session, an unsafe request without the CSRF token is 403."""
    client, _, _ = env
    await client.post("/write", json={"a": 1})
    missing = await client.post("/write", json={"a": 2})
    assert missing.status_code == 403
    assert missing.json()["error"] == "csrf"
    wrong = await client.post("/write", json={"a": 2}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    ok = await client.post("/write", json={"a": 2}, headers=csrf(client))
    assert ok.status_code == 200


async def test_cross_site_request_refused_before_token(env) -> None:  # type: ignore[no-untyped-def]
    """Sec-Fetch-Site: cross-site or a foreign Origin is refused even with a valid token."""
    client, _, _ = env
    await client.post("/write", json={"a": 1})
    for headers in (
        {"sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ):
        response = await client.post("/write", json={"a": 2}, headers={**csrf(client), **headers})
        assert response.status_code == 403, headers
    same = await client.post(
        "/write",
        json={"a": 3},
        headers={**csrf(client), "origin": "http://testserver", "sec-fetch-site": "same-origin"},
    )
    assert same.status_code == 200


async def test_csrf_form_field_accepted(env) -> None:  # type: ignore[no-untyped-def]
    """The token may come in a _csrf urlencoded form field; the body still reaches the app."""
    client, _, _ = env
    await client.post("/write", json={"a": 1})
    token = client.cookies["XSRF-TOKEN"]
    response = await client.post("/logout", data={"_csrf": token, "other": "x"})
    assert response.status_code == 204


async def test_static_response_untouched(env) -> None:  # type: ignore[no-untyped-def]
    """A response that never touched the session gets no Vary or Cache-Control from coatcheck."""
    client, _, _ = env
    response = await client.get("/static")
    assert "vary" not in response.headers
    assert "cache-control" not in response.headers


async def test_secure_default_cookie_attributes() -> None:
    """Library defaults: __Host- name, Secure, HttpOnly, SameSite=Lax, Path=/; no-store."""
    app, _, _ = build(SessionConfig(secret="k" * 10 + "abcdefghijklmnopqrstuvwxyz"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.post("/write", json={"a": 1})
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("__Host-session="))
    assert session_cookie.endswith("; Path=/; Secure; HttpOnly; SameSite=Lax")
    xsrf = next(c for c in cookies if c.startswith("XSRF-TOKEN="))
    assert "HttpOnly" not in xsrf
    assert response.headers["cache-control"] == "no-store"


async def test_store_down_gives_503_with_retry_after() -> None:
    """A store that raises gives 503 + Retry-After, never a 500."""

    class Broken(AsyncMemoryStore):
        async def get(self, session_id: str):  # type: ignore[no-untyped-def]
            raise ConnectionError("down")

    manager = AsyncSessionManager(Broken(), test_config(cookie=CookieConfig(secure=False)))

    async def endpoint(request: Request) -> Response:
        return Response("hi")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(SessionMiddleware, manager=manager)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/", headers={"cookie": f"{COOKIE}={'A' * 24}.{'B' * 43}"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"error": "store_unavailable"}
