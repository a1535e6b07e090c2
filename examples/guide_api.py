# --8<-- [start:setup]
"""A JSON API on Starlette with coatcheck: register, log in (cookie), /me, log out, and bearer
tokens for clients that are not browsers. Printed in full in docs/guide.md and driven through
its whole flow by tests/test_guide.py."""

import os
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import (
    AsyncLoginGuard,
    AsyncSessionManager,
    HTTPError,
    SessionConfig,
    async_store_from_url,
    login,
    logout,
)
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import (
    get_session,
    issue_token,
    read_json,
    require_user,
)
from coatcheck.passwords import PasswordHasher
from coatcheck.throttling import canonical_login_name

manager = AsyncSessionManager(
    async_store_from_url(os.environ.get("COATCHECK_STORE", "sqlite:///sessions.db")),
    SessionConfig(secret=os.environ.get("COATCHECK_SECRET") or secrets.token_urlsafe(32)),
)
guard = AsyncLoginGuard(manager)
hasher = PasswordHasher()
users: dict[str, dict[str, str]] = {}  # your user table: id -> {"id", "email", "password_hash"}


async def load_user(user_id: str) -> dict[str, str] | None:
    return users.get(user_id)


def public(user: dict[str, str]) -> dict[str, str]:
    return {"id": user["id"], "email": user["email"]}


# --8<-- [end:setup]


# --8<-- [start:register]
async def register(request: Request) -> Response:
    body = await read_json(request)  # 415 / 413 / 422 as JSON, never a 500
    try:
        email = canonical_login_name(str(body.get("email", "")))
    except ValueError:
        raise HTTPError(422, {"error": "invalid_email"}) from None
    if any(u["email"] == email for u in users.values()):
        raise HTTPError(409, {"error": "email_taken"})
    # A refused password (too short, too long) raises PasswordError: 422 invalid_password.
    password_hash = await hasher.hash_async(str(body.get("password", "")))
    user = {"id": str(len(users) + 1), "email": email, "password_hash": password_hash}
    users[user["id"]] = user
    login(get_session(request), user["id"], credential=password_hash)
    return JSONResponse(public(user), status_code=201)


async def authenticate(request: Request) -> dict[str, str]:
    """The user whose email and password the JSON body carries, throttled; else 401 or 429."""
    body = await read_json(request)
    try:
        email = canonical_login_name(str(body.get("email", "")))
    except ValueError:
        email = ""
    user = next((u for u in users.values() if u["email"] == email), None)
    attempt = await guard.check(  # 429 + Retry-After when throttled
        email or None, get_session(request).ip, identity=user["id"] if user else None
    )
    checked = await hasher.check_password_async(
        user["password_hash"] if user else None, str(body.get("password", ""))
    )
    if user is None or not checked.ok:
        raise HTTPError(401, {"error": "invalid_credentials"})
    await guard.succeeded(attempt)
    return user


# --8<-- [end:register]


# --8<-- [start:login]
async def do_login(request: Request) -> Response:
    user = await authenticate(request)
    login(get_session(request), user["id"], credential=user["password_hash"])
    return JSONResponse(public(user))  # sets the session and XSRF-TOKEN cookies


async def me(request: Request) -> Response:
    return JSONResponse(public(await require_user(request)))  # else 401 (+ Bearer challenge)


async def do_logout(request: Request) -> Response:
    logout(get_session(request))  # cookie sessions and bearer tokens alike
    return Response(status_code=204)


async def token(request: Request) -> Response:
    user = await authenticate(request)
    issued = await issue_token(request, user["id"], label="api", credential=user["password_hash"])
    return JSONResponse({"access_token": issued, "token_type": "bearer"}, status_code=201)


app = Starlette(
    routes=[
        Route("/api/register", register, methods=["POST"]),
        Route("/api/login", do_login, methods=["POST"]),
        Route("/api/me", me),
        Route("/api/logout", do_logout, methods=["POST"]),
        Route("/api/token", token, methods=["POST"]),
    ]
)
app.add_middleware(
    SessionMiddleware,
    manager=manager,
    user_loader=load_user,
    user_credential=lambda user: user["password_hash"],
)
# --8<-- [end:login]
