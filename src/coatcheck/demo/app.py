"""The demo app that ``coatcheck demo`` serves: a JSON API and one page that drives it.

It is also the reference for wiring coatcheck into a Starlette/FastAPI app: every endpoint below
is a few lines on top of the library's helpers.
"""

from __future__ import annotations

import json
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import auth
from .._core.config import SessionConfig
from .._core.throttle import ThrottleConfig
from ..admin import AsyncSessionAdmin
from ..asgi import SessionMiddleware
from ..errors import HTTPError, PasswordError
from ..integrations.starlette import current_user, get_session, issue_token, require_user
from ..manager import AsyncSessionManager
from ..passwords import PasswordHasher
from ..stores.base import AsyncStore
from ..throttling import AsyncLoginGuard
from .users import User, UserRepository

STATIC = Path(__file__).parent / "static"
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")
MAX_CART_ITEMS = 100
MAX_BODY_BYTES = 64 * 1024


@dataclass(slots=True)
class Demo:
    manager: AsyncSessionManager
    admin: AsyncSessionAdmin
    users: UserRepository
    hasher: PasswordHasher
    guard: AsyncLoginGuard


def _demo(request: Request) -> Demo:
    demo: Demo = request.app.state.demo
    return demo


def _invalid(message: str) -> HTTPError:
    return HTTPError(422, {"error": "invalid_input", "message": message})


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPError(413, {"error": "too_large"})
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise _invalid("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    return body


def _str_field(
    body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 1024
) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise _invalid(f"{name} is longer than {max_len} characters")
    return value


def _email(body: dict[str, Any]) -> str:
    email = _str_field(body, "email", max_len=320).strip().lower()
    if not EMAIL_RE.fullmatch(email):
        raise _invalid("email is not a valid address")
    return email


async def _authenticate(request: Request, body: dict[str, Any]) -> User:
    """Check email + password with throttling; raises 401/429 the same way for every failure."""
    demo = _demo(request)
    email = _email(body)
    password = _str_field(body, "password", max_len=4096)
    session = get_session(request)
    await demo.guard.check(email, session.ip)
    user = await demo.users.by_email(email)
    try:
        result = await demo.hasher.check_password_async(
            user.password_hash if user is not None else None, password
        )
    except PasswordError:
        result = None
    if user is None or result is None or not result.ok:
        raise HTTPError(401, {"error": "invalid_credentials"})
    await demo.guard.succeeded(email, session.ip)
    if result.new_hash is not None:
        await demo.users.set_password_hash(user.id, result.new_hash)
    return user


async def register(request: Request) -> Response:
    demo = _demo(request)
    body = await _json_body(request)
    email = _email(body)
    password = _str_field(body, "password", max_len=4096)
    name = _str_field(body, "name", required=False, max_len=200).strip()
    try:
        password_hash = await demo.hasher.hash_async(password)
    except PasswordError as exc:
        raise _invalid(str(exc)) from None
    user = await demo.users.add(email, name, password_hash)
    if user is None:
        raise HTTPError(409, {"error": "email_taken"})
    auth.login(get_session(request), user.id)
    return JSONResponse(user.public(), status_code=201)


async def login(request: Request) -> Response:
    body = await _json_body(request)
    user = await _authenticate(request, body)
    auth.login(get_session(request), user.id, remember=body.get("remember") is True)
    return JSONResponse(user.public())


async def me(request: Request) -> Response:
    user: User = await require_user(request)
    return JSONResponse(user.public())


async def logout(request: Request) -> Response:
    session = get_session(request)
    auth.logout(session)
    headers = {"clear-site-data": '"cookies"'} if session.transport == "cookie" else {}
    return Response(status_code=204, headers=headers)


async def token(request: Request) -> Response:
    if request.method == "DELETE":
        session = get_session(request)
        if session.transport != "bearer":
            raise HTTPError(
                401,
                {"error": "invalid_token"},
                headers=(("www-authenticate", 'Bearer error="invalid_token"'),),
            )
        auth.logout(session)
        return Response(status_code=204)
    body = await _json_body(request)
    user = await _authenticate(request, body)
    label = _str_field(body, "label", required=False, max_len=100)
    issued = await issue_token(request, user.id, label=label)
    return JSONResponse({"token": issued, "token_type": "bearer"}, status_code=201)


async def cart(request: Request) -> Response:
    session = get_session(request)
    if request.method == "POST":
        body = await _json_body(request)
        item = _str_field(body, "item", max_len=200)
        items = list(session.get("cart", []))
        if len(items) >= MAX_CART_ITEMS:
            raise _invalid(f"a cart holds at most {MAX_CART_ITEMS} items")
        items.append(item)
        session["cart"] = items
        return JSONResponse({"items": items}, status_code=201)
    return JSONResponse({"items": list(session.get("cart", []))})


async def password(request: Request) -> Response:
    demo = _demo(request)
    user: User = await require_user(request)
    body = await _json_body(request)
    current = _str_field(body, "current_password", max_len=4096)
    new = _str_field(body, "new_password", max_len=4096)
    result = await demo.hasher.check_password_async(user.password_hash, current)
    if not result.ok:
        raise HTTPError(401, {"error": "invalid_credentials"})
    try:
        new_hash = await demo.hasher.hash_async(new)
    except PasswordError as exc:
        raise _invalid(str(exc)) from None
    await demo.users.set_password_hash(user.id, new_hash)
    await demo.admin.password_changed(get_session(request))  # end the others, rotate this one
    return Response(status_code=204)


async def sessions(request: Request) -> Response:
    demo = _demo(request)
    user: User = await require_user(request)
    current = get_session(request).id
    listed = await demo.admin.sessions_of(user.id)
    return JSONResponse(
        [
            {
                "id": info.id,
                "created_at": info.created_at,
                "last_seen_at": info.last_seen_at,
                "auth_time": info.auth_time,
                "user_agent": info.user_agent,
                "ip": info.ip,
                "transport": info.transport,
                "label": info.label,
                "current": info.id == current,
            }
            for info in listed
        ]
    )


async def revoke_session(request: Request) -> Response:
    demo = _demo(request)
    user: User = await require_user(request)
    if not await demo.admin.revoke(request.path_params["session_id"], owner=user.id):
        raise HTTPError(404, {"error": "not_found"})
    return Response(status_code=204)


async def revoke_others(request: Request) -> Response:
    demo = _demo(request)
    user: User = await require_user(request)
    count = await demo.admin.revoke_all(user.id, keep=get_session(request).id)
    # Sealed sessions cannot be counted: every other one issued until now has ended.
    return JSONResponse({"revoked": None if demo.manager.sealed is not None else count})


async def csrf(request: Request) -> Response:
    return JSONResponse({"csrf_token": get_session(request).csrf_token})


async def index(request: Request) -> Response:
    await current_user(request)
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


def create_app(
    *,
    store: AsyncStore,
    config: SessionConfig,
    users_url: str,
    hasher: PasswordHasher | None = None,
    throttle: ThrottleConfig | None = None,
) -> Starlette:
    """The demo as an ASGI app over ``store``; users live in the SQL database at ``users_url``."""
    manager = AsyncSessionManager(store, config)
    users = UserRepository(users_url)
    demo = Demo(
        manager=manager,
        admin=AsyncSessionAdmin(manager),
        users=users,
        hasher=hasher or PasswordHasher(),
        guard=AsyncLoginGuard(manager, throttle or ThrottleConfig()),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await users.create_schema()
        yield
        await users.close()
        await manager.close()

    routes = [
        Route("/", index),
        Route("/api/register", register, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/me", me, methods=["GET"]),
        Route("/api/logout", logout, methods=["POST", "DELETE"]),
        Route("/api/token", token, methods=["POST", "DELETE"]),
        Route("/api/cart", cart, methods=["GET", "POST"]),
        Route("/api/csrf", csrf, methods=["GET"]),
        Route("/api/password", password, methods=["POST"]),
        Route("/api/sessions", sessions, methods=["GET"]),
        Route("/api/sessions/revoke-others", revoke_others, methods=["POST"]),
        Route("/api/sessions/{session_id}", revoke_session, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.demo = demo
    app.add_middleware(SessionMiddleware, manager=manager, user_loader=users.by_id)
    return app
