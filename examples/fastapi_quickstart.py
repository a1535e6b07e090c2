"""coatcheck in a FastAPI app: login, /me, logout, a cart that survives login (tested)."""

import os
import secrets

from fastapi import Depends, FastAPI, HTTPException, Request

from coatcheck import AsyncSessionManager, SessionConfig, async_store_from_url, login, logout
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import get_session, require_user
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


@app.post("/login")
async def do_login(request: Request, body: dict[str, str]) -> dict[str, str]:
    user = USERS.get(body.get("email", ""))
    checked = await hasher.check_password_async(
        user["hash"] if user else None, body.get("password", "")
    )
    if user is None or not checked.ok:
        raise HTTPException(401, "invalid credentials")
    login(get_session(request), user["id"])  # new session id and CSRF token; the cart is kept
    return {"email": user["email"]}


@app.get("/me")
async def me(user: dict[str, str] = Depends(require_user)) -> dict[str, str]:
    return {"email": user["email"]}


@app.post("/cart")
async def add(request: Request, body: dict[str, str]) -> list[str]:
    session = get_session(request)
    session["cart"] = [*session.get("cart", []), body["item"]]
    return session["cart"]


@app.post("/logout", status_code=204)
async def do_logout(request: Request) -> None:
    logout(get_session(request))
