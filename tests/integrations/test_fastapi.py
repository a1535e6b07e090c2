"""FastAPI dependencies that declare coatcheck's schemes in OpenAPI and answer like the rest."""

# No "from __future__ import annotations": FastAPI evaluates the routes' annotations, and some
# name local variables.
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request

from coatcheck import AsyncSessionManager, CookieConfig, SessionConfig, login
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.fastapi import CurrentUser, OptionalUser, SessionAuth
from coatcheck.integrations.starlette import get_session
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import FakeClock, test_config

USERS = {"1": {"id": "1", "name": "Ann"}}


async def load_user(user_id: str) -> dict[str, str] | None:
    return USERS.get(user_id)


def build(config: SessionConfig, clock: FakeClock) -> FastAPI:
    app = FastAPI()
    manager = AsyncSessionManager(AsyncMemoryStore(), config, clock=clock)
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)
    auth = SessionAuth(config)
    User = Annotated[dict[str, str], Depends(auth.user)]

    @app.post("/login/{user_id}")
    async def do_login(user_id: str, request: Request) -> None:
        login(get_session(request), user_id)

    @app.get("/me")
    async def me(user: User) -> dict[str, str]:
        return user

    @app.get("/maybe")
    async def maybe(user: Annotated[Any, Depends(auth.optional_user)]) -> dict[str, Any]:
        return {"user": user}

    @app.get("/page")
    async def page(user: Annotated[Any, Depends(auth.page("/signin"))]) -> str:
        return "page"

    @app.post("/danger")
    async def danger(user: Annotated[Any, Depends(auth.fresh(60))]) -> str:
        return "done"

    return app


async def test_dependencies_answer_like_the_starlette_helpers() -> None:
    """auth.user is 401 then the user; optional_user is None then the user; page redirects to
    the login page with next; fresh refuses an old login."""
    clock = FakeClock()
    app = build(test_config(), clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/me")).status_code == 401
        assert (await c.get("/maybe")).json() == {"user": None}
        page = await c.get("/page")
        assert (page.status_code, page.headers["location"]) == (303, "/signin?next=/page")
        await c.post("/login/1")
        assert (await c.get("/me")).json() == USERS["1"]
        assert (await c.get("/maybe")).json() == {"user": USERS["1"]}
        csrf = {"X-XSRF-TOKEN": c.cookies["XSRF-TOKEN"]}
        assert (await c.post("/danger", headers=csrf)).status_code == 200
        clock.advance(120)
        refused = await c.post("/danger", headers=csrf)
        assert (refused.status_code, refused.json()) == (
            401,
            {"error": "reauthentication_required"},
        )


async def test_openapi_lists_only_the_cookie_scheme_when_bearer_is_off() -> None:
    """With bearer tokens turned off, routes declare the session cookie only, under its
    configured name."""
    config = test_config(bearer=False, cookie=CookieConfig(secure=False, name="sid"))
    app = build(config, FakeClock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        spec = (await c.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "sessionCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": "sid",
            "description": schemes["sessionCookie"]["description"],
        }
    }
    for path, method in [("/me", "get"), ("/maybe", "get"), ("/page", "get"), ("/danger", "post")]:
        assert spec["paths"][path][method]["security"] == [{"sessionCookie": []}]


async def test_ready_made_annotations_for_the_default_configuration() -> None:
    """CurrentUser and OptionalUser work as they are, and declare __Host-session and bearer."""
    app = FastAPI()
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config(), clock=FakeClock())
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)

    @app.get("/me")
    async def me(user: CurrentUser) -> Any:
        return user

    @app.get("/maybe")
    async def maybe(user: OptionalUser) -> Any:
        return {"user": user}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/me")).status_code == 401
        assert (await c.get("/maybe")).json() == {"user": None}
        token = await manager.issue_token("1")
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await c.get("/me", headers=bearer)).json() == USERS["1"]
        spec = (await c.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["sessionCookie"]["name"] == "__Host-session"
    assert spec["paths"]["/me"]["get"]["security"] == [{"sessionCookie": []}, {"bearerToken": []}]
