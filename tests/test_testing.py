"""The helpers of coatcheck.testing, used as docs/testing.md shows, on httpx (async and sync,
a sync httpx client over WSGI) and on Flask's test client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import AsyncSessionManager, SessionManager, logout
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations import flask as cc_flask
from coatcheck.integrations.starlette import get_session, require_user, require_user_page
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.testing import (
    CountingStore,
    FakeClock,
    SyncCountingStore,
    async_session_data,
    async_set_session_data,
    async_sign_in,
    csrf_headers,
    session_data,
    set_session_data,
    sign_in,
    test_config,
)
from coatcheck.wsgi import SessionMiddleware as WSGISessionMiddleware


async def load_user(user_id: str) -> dict[str, str]:
    return {"id": user_id}


def starlette_app(manager: AsyncSessionManager) -> Starlette:
    async def me(request: Request) -> Response:
        return JSONResponse(await require_user(request))

    async def account(request: Request) -> Response:
        return JSONResponse(await require_user_page(request))

    async def cart(request: Request) -> Response:
        session = get_session(request)
        session["cart"] = [*session.get("cart", []), (await request.json())["item"]]
        return JSONResponse(session["cart"])

    async def do_logout(request: Request) -> Response:
        logout(get_session(request))
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/me", me),
            Route("/account", account),
            Route("/cart", cart, methods=["POST"]),
            Route("/logout", do_logout, methods=["POST"]),
        ]
    )
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)
    return app


@pytest.fixture
def manager() -> AsyncSessionManager:
    return AsyncSessionManager(AsyncMemoryStore(), test_config(), clock=FakeClock())


@pytest.fixture
async def client(manager: AsyncSessionManager) -> Any:
    transport = httpx.ASGITransport(app=starlette_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_me_shows_the_signed_in_user(
    client: httpx.AsyncClient, manager: AsyncSessionManager
) -> None:
    """async_sign_in signs an httpx client in: /me answers the user, no password involved."""
    await async_sign_in(client, manager, "42")
    response = await client.get("/me")
    assert response.json()["id"] == "42"


async def test_logout_needs_the_csrf_header(
    client: httpx.AsyncClient, manager: AsyncSessionManager
) -> None:
    """The signed-in client has the CSRF cookie; csrf_headers makes its unsafe requests pass."""
    await async_sign_in(client, manager, "42")
    assert (await client.post("/logout")).status_code == 403
    headers = csrf_headers(client, manager.config)
    assert (await client.post("/logout", headers=headers)).status_code == 204
    assert (await client.get("/me")).status_code == 401


async def test_adding_to_the_cart(client: httpx.AsyncClient, manager: AsyncSessionManager) -> None:
    """Session data is arranged and asserted through the helpers."""
    await async_sign_in(client, manager, "42")
    await async_set_session_data(client, manager, cart=["tea"])
    headers = csrf_headers(client, manager.config)
    await client.post("/cart", json={"item": "cake"}, headers=headers)
    data = await async_session_data(client, manager)
    assert data is not None
    assert data["cart"] == ["tea", "cake"]


async def test_no_session_reads_as_none_and_cannot_be_set(
    client: httpx.AsyncClient, manager: AsyncSessionManager
) -> None:
    """A client with no session cookie has no data; setting data asks to sign it in first."""
    assert await async_session_data(client, manager) is None
    with pytest.raises(LookupError):
        await async_set_session_data(client, manager, cart=[])


async def test_signed_in_session_expires_with_the_fake_clock() -> None:
    """FakeClock moves time: past the idle timeout the signed-in client is anonymous again; a
    read-only request wrote nothing (CountingStore)."""
    clock = FakeClock()
    store = CountingStore(AsyncMemoryStore())
    manager = AsyncSessionManager(store, test_config(), clock=clock)
    transport = httpx.ASGITransport(app=starlette_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        await async_sign_in(c, manager, "42")
        store.reset()
        assert (await c.get("/me")).status_code == 200
        assert store.writes == 0
        clock.advance(31 * 60)
        assert (await c.get("/me")).status_code == 401


def test_sync_httpx_client_on_a_wsgi_app() -> None:
    """A sync httpx.Client (over WSGI here) is signed in by sign_in with the sync manager; a
    read-only request wrote nothing (SyncCountingStore)."""
    store = SyncCountingStore(MemoryStore())
    manager = SessionManager(store, test_config(), clock=FakeClock())

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ["coatcheck.session"]
        start_response("200 OK", [("content-type", "text/plain")])
        return [f"{session.user_id}:{session.get('cart')}".encode()]

    app = WSGISessionMiddleware(wsgi_app, manager=manager)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as c:
        sign_in(c, manager, "7", data={"cart": ["x"]})
        store.reset()
        assert c.get("/").text == "7:['x']"
        assert store.writes == 0
        assert session_data(c, manager) == {"cart": ["x"]}


def test_account_page_on_flask() -> None:
    """sign_in works on Flask's test client, with remember-me and initial data."""
    app = Flask(__name__)
    manager = SessionManager(MemoryStore(), test_config(), clock=FakeClock())
    cc_flask.Coatcheck(app, manager=manager, user_loader=lambda user_id: {"id": user_id})

    @app.get("/account")
    @cc_flask.login_required(redirect=True)
    def account() -> Any:
        session = cc_flask.get_session()
        return {"user": cc_flask.current_user(), "remember": session.remember, **session}

    @app.post("/cart")
    def cart() -> Any:
        session = cc_flask.get_session()
        session["cart"] = [*session.get("cart", []), "cake"]
        return {"cart": session["cart"]}

    client = app.test_client()
    assert client.get("/account").status_code == 303
    sign_in(client, manager, "42", remember=True, data={"cart": ["tea"]})
    assert client.get("/account").json == {"user": {"id": "42"}, "remember": True, "cart": ["tea"]}
    assert client.post("/cart", headers=csrf_headers(client, manager.config)).status_code == 200
    set_session_data(client, manager, note="hi")
    assert session_data(client, manager) == {"cart": ["tea", "cake"], "note": "hi"}


def test_unknown_client_type_is_refused(manager: AsyncSessionManager) -> None:
    """Something that is neither an httpx nor a Flask test client is a TypeError."""
    with pytest.raises(TypeError):
        csrf_headers(object(), manager.config)
