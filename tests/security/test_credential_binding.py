"""Sessions bound to the credential they signed in with (``login(..., credential=...)`` and the
middleware's ``user_credential``).

Found by an attack on the demo: a login that checked the old password, still running while the
password was changed, committed after "end every other session" had run -- and its session
survived the change. With the binding, a session whose credential is no longer the user's is
ended at its next request, on every store including sealed cookies without a revocation record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import AsyncSessionManager, SessionManager, async_store_from_url, auth
from coatcheck.admin import AsyncSessionAdmin, SessionAdmin
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations import flask as flask_helpers
from coatcheck.integrations.starlette import current_user, get_session, issue_token, require_user
from coatcheck.stores.base import AsyncStore
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, test_config

COOKIE = "coatcheck_session"
SECRET = "credential-binding-secret-0123456789-abc"
STORES = [
    "memory://",
    "sealed://",
    f"sealed://?revocations={quote('memory://', safe='')}",
]


@dataclass
class Users:
    """user id -> password hash (the credential); ``None``: the user has no password now."""

    hashes: dict[str, str | None] = field(default_factory=lambda: {"u1": "hash-1"})


@dataclass
class Env:
    app: Starlette
    users: Users
    read_hash: asyncio.Event
    gate: asyncio.Event


def build(
    url: str,
    *,
    secret: str = SECRET,
    previous: tuple[str, ...] = (),
    store: AsyncStore | None = None,
) -> Env:
    config = test_config(secret=secret, previous_secrets=previous)
    manager = AsyncSessionManager(store or async_store_from_url(url), config, clock=FakeClock())
    admin = AsyncSessionAdmin(manager)
    users = Users()
    read_hash, gate = asyncio.Event(), asyncio.Event()

    async def load(user_id: str) -> dict[str, str] | None:
        return {"id": user_id} if user_id in users.hashes else None

    def credential(user: dict[str, str]) -> str | None:
        return users.hashes[user["id"]]

    async def login(request: Request) -> Response:
        auth.login(get_session(request), "u1", credential=users.hashes["u1"])
        return JSONResponse({"ok": True})

    async def login_unbound(request: Request) -> Response:
        auth.login(get_session(request), "u1")
        return JSONResponse({"ok": True})

    async def slow_login(request: Request) -> Response:
        checked = users.hashes["u1"]  # the password was verified against this hash ...
        read_hash.set()
        await gate.wait()  # ... and the login commits only after the change below
        assert checked is not None
        auth.login(get_session(request), "u1", credential=checked)
        return JSONResponse({"ok": True})

    async def password(request: Request) -> Response:
        await require_user(request)
        users.hashes["u1"] = new = "hash-2"
        await admin.password_changed(get_session(request), credential=new)
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        user = await current_user(request)
        return JSONResponse({"user": user}, status_code=200 if user else 401)

    async def token(request: Request) -> Response:
        return JSONResponse({"token": await issue_token(request, "u1", credential="hash-1")})

    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/login-unbound", login_unbound, methods=["POST"]),
        Route("/slow-login", slow_login, methods=["POST"]),
        Route("/password", password, methods=["POST"]),
        Route("/me", me),
        Route("/token", token, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(
        SessionMiddleware, manager=manager, user_loader=load, user_credential=credential
    )
    return Env(app, users, read_hash, gate)


@asynccontextmanager
async def client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
        yield c


async def signed_in(env: Env, path: str = "/login") -> httpx.AsyncClient:
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.app), base_url="https://testserver")
    assert (await c.post(path)).status_code == 200
    assert (await c.get("/me")).status_code == 200
    return c


@pytest.mark.parametrize("url", STORES)
async def test_a_login_that_checked_the_old_password_is_refused_after_the_change(url: str) -> None:
    """The race of the attack: login A checks the old password; the owner (session B) changes
    it and ends the other sessions; then A commits. A's session is refused at its next request
    (and its cookie cleared), B's rotated session keeps working under the new password."""
    env = build(url)
    owner = await signed_in(env)
    async with client(env) as attacker:
        late = asyncio.create_task(attacker.post("/slow-login"))
        await env.read_hash.wait()
        csrf = {"x-xsrf-token": owner.cookies["XSRF-TOKEN"]}
        assert (await owner.post("/password", headers=csrf)).status_code == 204
        env.gate.set()
        landed = await late
        assert landed.status_code == 200
        assert attacker.cookies.get(COOKIE)

        refused = await attacker.get("/me")
        assert refused.status_code == 401
        assert f'{COOKIE}=""' in refused.headers.get("set-cookie", "")  # the session ended
        assert (await attacker.get("/me")).status_code == 401
    assert (await owner.get("/me")).status_code == 200
    assert (await owner.get("/me")).status_code == 200
    await owner.aclose()


@pytest.mark.parametrize("url", STORES)
async def test_a_credential_changed_elsewhere_ends_bound_sessions_only(url: str) -> None:
    """The hash changes behind the app's back (an admin reset): every session bound to the old
    one ends; a session signed in without a credential is not affected."""
    env = build(url)
    bound, unbound = await signed_in(env), await signed_in(env, "/login-unbound")
    env.users.hashes["u1"] = "reset-by-admin"
    assert (await bound.get("/me")).status_code == 401
    assert (await unbound.get("/me")).status_code == 200
    env.users.hashes["u1"] = None  # no credential at all: a bound session cannot match
    await bound.aclose()
    bound = await signed_in(env)  # binds to None -> not bound (nothing to fingerprint)
    assert (await bound.get("/me")).status_code == 200
    await bound.aclose()
    await unbound.aclose()


async def test_a_user_without_a_credential_now_ends_a_bound_session() -> None:
    env = build("memory://")
    bound = await signed_in(env)
    env.users.hashes["u1"] = None
    assert (await bound.get("/me")).status_code == 401
    await bound.aclose()


async def test_a_bearer_token_bound_to_the_old_password_stops_working() -> None:
    env = build("memory://")
    async with client(env) as c:
        issued = (await c.post("/token")).json()["token"]
        headers = {"authorization": f"Bearer {issued}"}
        assert (await c.get("/me", headers=headers)).status_code == 200
        env.users.hashes["u1"] = "hash-2"
        assert (await c.get("/me", headers=headers)).status_code == 401
        env.users.hashes["u1"] = "hash-1"  # ended for good, not merely refused while different
        assert (await c.get("/me", headers=headers)).status_code == 401


async def test_a_rotated_secret_keeps_bound_sessions() -> None:
    """Fingerprints made under a secret that moved to ``previous_secrets`` still match, and are
    made again under the newest secret, so removing the old one later keeps the session."""
    store = async_store_from_url("memory://")
    c = await signed_in(build("memory://", store=store))
    cookie = c.cookies[COOKIE]
    await c.aclose()
    newer = "a-newer-secret-0123456789-abcdefghijklmno"
    rotated = build("memory://", secret=newer, previous=(SECRET,), store=store)
    async with client(rotated) as again:
        again.cookies.set(COOKIE, cookie)
        assert (await again.get("/me")).status_code == 200
        cookie = again.cookies[COOKIE]
    alone = build("memory://", secret=newer, store=store)
    async with client(alone) as later:
        later.cookies.set(COOKIE, cookie)
        assert (await later.get("/me")).status_code == 200
    never_seen = await signed_in(build("memory://", store=store))  # bound under SECRET only
    cookie = never_seen.cookies[COOKIE]
    await never_seen.aclose()
    async with client(alone) as later:
        later.cookies.set(COOKIE, cookie)
        assert (await later.get("/me")).status_code == 401


# -- Flask -------------------------------------------------------------------------------------


def test_flask_sessions_bound_to_the_old_password_end() -> None:
    hashes: dict[str, str | None] = {"u1": "hash-1"}
    manager = SessionManager(MemoryStore(), test_config(secret=SECRET), clock=FakeClock())
    app = Flask(__name__)
    flask_helpers.Coatcheck(
        app,
        manager=manager,
        user_loader=lambda uid: {"id": uid} if uid in hashes else None,
        user_credential=lambda user: hashes[user["id"]],
    )

    @app.post("/login")
    def login() -> object:
        auth.login(flask_helpers.get_session(), "u1", credential=hashes["u1"])
        return jsonify(ok=True)

    @app.post("/password")
    def password() -> object:
        flask_helpers.require_user()
        hashes["u1"] = "hash-2"
        SessionAdmin(manager).password_changed(flask_helpers.get_session(), credential="hash-2")
        return "", 204

    @app.get("/me")
    def me() -> object:
        user = flask_helpers.current_user()
        return jsonify(user=user), 200 if user else 401

    other, owner = app.test_client(), app.test_client()
    for c in (other, owner):
        assert c.post("/login", base_url="https://localhost").status_code == 200
    csrf = {"x-xsrf-token": owner.get_cookie("XSRF-TOKEN").value}  # type: ignore[union-attr]
    assert owner.post("/password", base_url="https://localhost", headers=csrf).status_code == 204
    assert owner.get("/me", base_url="https://localhost").status_code == 200
    assert other.get("/me", base_url="https://localhost").status_code == 401
    # The other session was ended by password_changed; one signed in with the old hash after it
    # (the race) is refused by the binding.
    hashes["u1"] = "hash-1"
    late = app.test_client()
    assert late.post("/login", base_url="https://localhost").status_code == 200
    hashes["u1"] = "hash-2"
    assert late.get("/me", base_url="https://localhost").status_code == 401
    assert owner.get("/me", base_url="https://localhost").status_code == 200
