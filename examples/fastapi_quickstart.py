"""coatcheck in a FastAPI app: login, /me, logout, a cart that survives login, a bearer token
for API clients, and both schemes in /docs (tested)."""

import os
import secrets
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from coatcheck import AsyncSessionManager, SessionConfig, async_store_from_url, login, logout
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.fastapi import SessionAuth
from coatcheck.integrations.starlette import get_session, issue_token
from coatcheck.passwords import PasswordHasher

hasher = PasswordHasher()
USERS = {
    "ann@example.com": {"id": "1", "email": "ann@example.com", "hash": hasher.hash("s3cret-pass")}
}


async def load_user(user_id: str) -> dict[str, str] | None:
    return next((u for u in USERS.values() if u["id"] == user_id), None)


manager = AsyncSessionManager(
    async_store_from_url(os.environ.get("COATCHECK_STORE", "sqlite:///sessions.db")),
    SessionConfig(secret=os.environ.get("COATCHECK_SECRET") or secrets.token_urlsafe(32)),
)
app = FastAPI()
app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)
auth = SessionAuth(manager.config)  # declares the cookie and bearer schemes in /docs
CurrentUser = Annotated[dict[str, str], Depends(auth.user)]  # 401 unless signed in


async def check_password(body: dict[str, str]) -> dict[str, str]:
    user = USERS.get(body.get("email", ""))
    checked = await hasher.check_password_async(
        user["hash"] if user else None, body.get("password", "")
    )
    if user is None or not checked.ok:
        raise HTTPException(401, "invalid credentials")
    return user


@app.post("/login")
async def do_login(request: Request, body: dict[str, str]) -> dict[str, str]:
    user = await check_password(body)
    login(get_session(request), user["id"])  # new session id and CSRF token; the cart is kept
    return {"email": user["email"]}


@app.post("/token", status_code=201)
async def token(request: Request, body: dict[str, str]) -> dict[str, str]:
    user = await check_password(body)  # API clients: a bearer token instead of a cookie
    return {"access_token": await issue_token(request, user["id"]), "token_type": "bearer"}


@app.get("/me")
async def me(user: CurrentUser) -> dict[str, str]:
    return {"email": user["email"]}


@app.post("/cart")
async def add(request: Request, body: dict[str, str]) -> list[str]:
    session = get_session(request)
    session["cart"] = [*session.get("cart", []), body["item"]]
    return session["cart"]


@app.post("/logout", status_code=204)
async def do_logout(request: Request) -> None:
    logout(get_session(request))
