"""Starlette/FastAPI helpers: dependencies, page redirects with a safe ``next``, freshness."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from coatcheck import AsyncSessionManager, SessionConfig, login
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import (
    RequireFresh,
    RequireUserPage,
    csrf_input,
    get_session,
    require_user,
    require_user_page,
)
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import FakeClock, test_config

USERS = {"1": {"id": "1", "name": "Ann"}}


async def load_user(user_id: str) -> dict[str, str] | None:
    return USERS.get(user_id)


def fastapi_app(clock: FakeClock, config: SessionConfig | None = None) -> FastAPI:
    app = FastAPI()
    manager = AsyncSessionManager(AsyncMemoryStore(), config or test_config(), clock=clock)
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)

    @app.post("/login/{user_id}")
    async def do_login(user_id: str, request: Request) -> dict[str, bool]:
        login(get_session(request), user_id)
        return {"ok": True}

    @app.get("/me")
    async def me(user: dict[str, str] = Depends(require_user)) -> dict[str, str]:
        return user

    @app.get("/account")
    async def account(user: dict[str, str] = Depends(require_user_page)) -> dict[str, str]:
        return user

    @app.post("/danger")
    async def danger(user: dict[str, str] = Depends(RequireFresh(max_age=300))) -> dict[str, str]:
        return user

    @app.get("/form", response_class=HTMLResponse)
    async def form(request: Request) -> str:
        return f"<form method=post>{csrf_input(request)}</form>"

    return app


async def test_fastapi_dependencies() -> None:
    """Depends(require_user) answers 401 JSON anonymously and the loaded user after login."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi_app(FakeClock())), base_url="http://t"
    ) as c:
        anonymous = await c.get("/me")
        assert (anonymous.status_code, anonymous.json()) == (401, {"error": "unauthenticated"})
        await c.post("/login/1")
        assert (await c.get("/me")).json() == USERS["1"]


async def test_deleted_user_counts_as_anonymous() -> None:
    """A session whose user no longer loads is treated as signed out."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi_app(FakeClock())), base_url="http://t"
    ) as c:
        await c.post("/login/999")
        assert (await c.get("/me")).status_code == 401


@pytest.mark.parametrize(
    ("path", "expected_next"),
    [
        ("/account", "/account"),
        ("/account?tab=2", "/account?tab=2"),
    ],
)
async def test_pages_redirect_to_login_with_next(path: str, expected_next: str) -> None:
    """An anonymous page request is redirected (303) to /login?next=<the path>."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi_app(FakeClock())), base_url="http://t"
    ) as c:
        response = await c.get(path)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [expected_next]


async def test_fresh_check_requires_recent_login() -> None:
    """RequireFresh accepts a login within max_age and refuses an older one with 401."""
    clock = FakeClock()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi_app(clock)), base_url="http://t"
    ) as c:
        await c.post("/login/1")
        headers = {"X-XSRF-TOKEN": c.cookies["XSRF-TOKEN"]}
        assert (await c.post("/danger", headers=headers)).status_code == 200
        for _ in range(6):  # stay active (idle timeout) while the login gets old
            clock.advance(59)
            await c.get("/me")
        stale = await c.post("/danger", headers=headers)
        assert (stale.status_code, stale.json()) == (401, {"error": "reauthentication_required"})


async def test_csrf_input_renders_escaped_hidden_field() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi_app(FakeClock())), base_url="http://t"
    ) as c:
        await c.post("/login/1")
        html = (await c.get("/form")).text
        assert f'<input type="hidden" name="_csrf" value="{c.cookies["XSRF-TOKEN"]}">' in html


async def test_secure_cookie_over_plain_http_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """Setting a Secure cookie on an http:// request logs one warning."""
    config = SessionConfig(secret="Zq3-lR9xT2pV8mK4nB7cW1yH6dF0sJ5g")
    manager = AsyncSessionManager(AsyncMemoryStore(), config)

    async def write(request: Request) -> Response:
        get_session(request)["x"] = 1
        return JSONResponse({})

    app = Starlette(routes=[Route("/", write)])
    app.add_middleware(SessionMiddleware, manager=manager)
    with caplog.at_level(logging.WARNING, logger="coatcheck"):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            await c.get("/")
            await c.get("/")
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "Secure cookie over plain HTTP" in caplog.records[0].message


async def test_request_session_is_starlettes_request_session() -> None:
    """request.session (Starlette's own accessor) is the coatcheck session."""
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config())

    async def endpoint(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"n": request.session["n"]})

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(SessionMiddleware, manager=manager)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/")).json() == {"n": 1}
        assert (await c.get("/")).json() == {"n": 2}


async def test_current_user_follows_a_login_in_the_same_request() -> None:
    """current_user() called before and after login() in one request sees the new user."""
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config())

    async def endpoint(request: Request) -> Response:
        from coatcheck.integrations.starlette import current_user

        before = await current_user(request)
        login(get_session(request), "1")
        return JSONResponse({"before": before, "after": await current_user(request)})

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post("/")).json() == {"before": None, "after": USERS["1"]}


async def test_next_keeps_escapes_of_the_requested_path() -> None:
    """An escaped ? in the path stays escaped in next (it is not turned into a query)."""
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config())

    async def page(request: Request) -> Response:
        await require_user_page(request)
        return Response("secret")

    app = Starlette(routes=[Route("/files/{name}", page)])
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/files/a%3Fb")
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["next"] == ["/files/a%3Fb"]


async def test_login_path_with_a_query_gets_next_appended() -> None:
    """RequireUserPage(login_path="/login?lang=en") redirects to /login?lang=en&next=..., not to
    a second "?" (the redirect is built once, in the core, for every integration)."""
    app = FastAPI()
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config(), clock=FakeClock())
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)

    @app.get("/page")
    async def page(user: object = Depends(RequireUserPage(login_path="/login?lang=en"))) -> str:
        return "never"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/page?x=1")
    location = urlsplit(response.headers["location"])
    assert (response.status_code, location.path) == (303, "/login")
    assert parse_qs(location.query) == {"lang": ["en"], "next": ["/page?x=1"]}


async def test_csrf_input_is_not_escaped_again_by_jinja() -> None:
    """{{ csrf_input(request) }} in an autoescaped Jinja2 template renders the hidden field
    itself, not its escaped text (csrf_input returns HTML, which has __html__)."""
    import jinja2

    template = jinja2.Environment(autoescape=True).from_string(
        "<form method=post>{{ csrf_input(request) }}</form>"
    )

    async def form(request: Request) -> Response:
        return HTMLResponse(template.render(csrf_input=csrf_input, request=request))

    manager = AsyncSessionManager(AsyncMemoryStore(), test_config())
    app = Starlette(routes=[Route("/form", form), Route("/login", _login, methods=["POST"])])
    app.add_middleware(SessionMiddleware, manager=manager)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await c.post("/login")
        html = (await c.get("/form")).text
    token = c.cookies["XSRF-TOKEN"]
    assert html == f'<form method=post><input type="hidden" name="_csrf" value="{token}"></form>'


async def _login(request: Request) -> Response:
    login(get_session(request), "1")
    return Response(status_code=204)
