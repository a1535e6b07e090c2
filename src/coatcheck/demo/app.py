"""The demo app that ``coatcheck demo`` serves: a JSON API, one page at ``/app`` that drives it,
and server-rendered pages beside them (:mod:`coatcheck.demo.pages`).

It is also the reference for wiring coatcheck into a Starlette/FastAPI app: every endpoint below
is a few lines on top of the library's helpers. What it shows beyond sessions:

- bodies read with :func:`~coatcheck.integrations.starlette.read_json` (415 unless JSON, 413
  while streaming, 422 for anything malformed: never a 500);
- logins and password changes throttled by :class:`~coatcheck.throttling.AsyncLoginGuard` on the
  submitted name, the account it resolves to, the address (failures only) and the browser's
  device cookie; registrations that hit a taken email throttled per address;
- emails stored in one canonical spelling
  (:func:`~coatcheck.throttling.canonical_login_name`);
- only the configured ``Host`` names answered, and no page framed by another site.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import SessionConfig, auth
from ..admin import AsyncSessionAdmin
from ..asgi import SessionMiddleware
from ..errors import HTTPError, PasswordError
from ..integrations.starlette import (
    current_user,
    get_session,
    issue_token,
    read_json,
    require_user,
    revoke_session,
)
from ..manager import AsyncSessionManager
from ..passwords import PasswordHasher
from ..stores.base import AsyncStore
from ..stores.sealed import AsyncSealedStore
from ..throttling import AsyncLoginGuard, ThrottleConfig, canonical_login_name
from .users import User, UserRepository

STATIC = Path(__file__).parent / "static"
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")
MAX_CART_ITEMS = 100
MAX_BODY_BYTES = 64 * 1024
REGISTER_THROTTLE = ThrottleConfig(ip_threshold=5, window=60 * 60, max_delay=60 * 60)
"""Per address: 5 registrations that hit a taken email per hour, then 1, 2, 4 ... s apart: at
most 5 + 11 taken emails found per hour (384 a day) where there was no limit."""
PASSWORD_THROTTLE = ThrottleConfig(ip_threshold=None, device_threshold=None)
"""Wrong current passwords on a password change, counted per session (5, then 1, 2, 4 ... s
apart, at most 15 min): a stolen session cannot guess fast, and an attacker's failed logins on the
account (counted by the login guard) never lock its owner out of changing the password."""
SECURITY_HEADERS = [
    # No other site may frame the demo's pages (clickjacking).
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
# Text fields refuse what a person never types and what breaks databases or displays: control
# characters (NUL), format characters (bidi overrides), surrogates, private-use, unassigned.
_REFUSED_IN_TEXT = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


@dataclass(slots=True)
class Demo:
    manager: AsyncSessionManager
    admin: AsyncSessionAdmin
    users: UserRepository
    hasher: PasswordHasher
    guard: AsyncLoginGuard
    register_guard: AsyncLoginGuard
    password_guard: AsyncLoginGuard


def _demo(request: Request) -> Demo:
    demo: Demo = request.app.state.demo
    return demo


def _invalid(message: str) -> HTTPError:
    return HTTPError(422, {"error": "invalid_input", "message": message})


async def _json_body(request: Request) -> dict[str, Any]:
    return await read_json(request, max_bytes=MAX_BODY_BYTES)


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


def _text_field(
    body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 200
) -> str:
    """A field shown to people (a name, a label, a cart item): printable text only."""
    value = _str_field(body, name, required=required, max_len=max_len)
    if any(unicodedata.category(c) in _REFUSED_IN_TEXT for c in value):
        raise _invalid(f"{name} contains control or invisible formatting characters")
    return value


def _email(body: dict[str, Any]) -> str:
    try:
        email = canonical_login_name(_str_field(body, "email", max_len=320))
    except ValueError as exc:
        raise _invalid(f"email is not a valid address: {exc}") from None
    if not EMAIL_RE.fullmatch(email):
        raise _invalid("email is not a valid address")
    return email


async def _authenticate(
    request: Request, body: dict[str, Any], user: User | None = None
) -> tuple[User, list[tuple[str, str]]]:
    """Check email + password with throttling; raises 401/429 the same way for every failure.

    ``user`` set: a signed-in user confirming their password (the password change), throttled
    per session. Returns the user (with its hash as stored now) and the headers that set a fresh
    device cookie.
    """
    demo = _demo(request)
    guard = demo.guard
    if user is None:
        email = _email(body)
        password = _str_field(body, "password", max_len=4096)
        user = await demo.users.by_email(email)
        attempt = await guard.check(
            email,
            get_session(request).ip,
            identity=user.id if user is not None else None,
            device=request.cookies.get(guard.device_cookie_name),
            # Device cookies die with the password: none hoarded before a change gets guesses.
            credential=user.password_hash if user is not None else None,
        )
    else:
        password = _str_field(body, "current_password", max_len=4096)
        guard = demo.password_guard
        attempt = await guard.check(f"session:{get_session(request).id}", None)
    try:
        result = await demo.hasher.check_password_async(
            user.password_hash if user is not None else None, password
        )
    except PasswordError:
        result = None
    if user is None or result is None or not result.ok:
        raise HTTPError(401, {"error": "invalid_credentials"})
    headers = await guard.succeeded(attempt)
    if result.new_hash is not None and await demo.users.set_password_hash(
        # Only over the hash just checked: a password change that landed meanwhile wins (else
        # this rehash of the old password would bring the old password back).
        user.id,
        result.new_hash,
        replacing=user.password_hash,
    ):
        user = dataclasses.replace(user, password_hash=result.new_hash)
        if headers:  # the device cookie follows the hash it is bound to
            headers = _device_cookie(request, user)
    return user, headers


def _device_cookie(request: Request, user: User) -> list[tuple[str, str]]:
    """Headers that set a device cookie for ``user``'s current password (after registration
    and a password change: that browser stays a known device)."""
    guard = _demo(request).guard
    presented = request.cookies.get(guard.device_cookie_name)
    return guard.device_cookie(user.id, presented, credential=user.password_hash)


def _with_headers(response: Response, headers: list[tuple[str, str]]) -> Response:
    for name, value in headers:
        response.headers.append(name, value)
    return response


async def register(request: Request) -> Response:
    user, headers = await create_account(request, await _json_body(request))
    return _with_headers(JSONResponse(user.public(), status_code=201), headers)


async def create_account(
    request: Request, body: dict[str, Any]
) -> tuple[User, list[tuple[str, str]]]:
    """Create the account ``body`` describes and sign it in on this session; returns the user and
    headers for the response (the JSON API and the pages). Raises 422 (invalid input), 409 (email
    taken), 429 (too many taken emails)."""
    demo = _demo(request)
    email = _email(body)
    password = _str_field(body, "password", max_len=4096)
    name = _text_field(body, "name", required=False).strip()
    # Counted before the (costly) hash; only a taken email stays counted, so a stream of new
    # accounts from one office, one after another, is never refused, while probing for taken
    # emails is. Registrations in flight at once count as failures until they succeed, and
    # refused ones count too (see coatcheck._core.throttle): a burst of more than 5 parallel
    # registrations from one address is refused, and retrying early pushes the next chance
    # further away, within the hour's window.
    attempt = await demo.register_guard.check(None, get_session(request).ip)
    try:
        password_hash = await demo.hasher.hash_async(password)
    except PasswordError as exc:
        await demo.register_guard.succeeded(attempt)
        raise _invalid(str(exc)) from None
    user = await demo.users.add(email, name, password_hash)
    if user is None:
        raise HTTPError(409, {"error": "email_taken"})
    await demo.register_guard.succeeded(attempt)
    auth.login(get_session(request), user.id, credential=user.password_hash)
    # The browser that created the account is a known device from its first login on.
    return user, _device_cookie(request, user)


async def login(request: Request) -> Response:
    user, headers = await sign_in(request, await _json_body(request))
    return _with_headers(JSONResponse(user.public()), headers)


async def sign_in(request: Request, body: dict[str, Any]) -> tuple[User, list[tuple[str, str]]]:
    """Check ``body``'s email and password (throttled) and sign the user in on this session;
    returns the user and headers for the response (the JSON API and the pages). Raises 401
    (wrong email or password), 422 (invalid input), 429 (throttled, with ``Retry-After``)."""
    demo = _demo(request)
    user, headers = await _authenticate(request, body)
    remember = body.get("remember") is True and demo.manager.config.allow_remember
    auth.login(get_session(request), user.id, remember=remember, credential=user.password_hash)
    return user, headers


async def me(request: Request) -> Response:
    user: User = await require_user(request)
    return JSONResponse(user.public())


async def logout(request: Request) -> Response:
    # The session's cookies are cleared by name; no Clear-Site-Data: it would also erase the
    # device cookie that keeps this browser's owner from being locked out by an attacker.
    auth.logout(get_session(request))
    return Response(status_code=204)


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
    label = _text_field(body, "label", required=False, max_len=100)
    user, headers = await _authenticate(request, body)
    # Also makes the answer no-store; the token is bound to the password like a login.
    issued = await issue_token(request, user.id, label=label, credential=user.password_hash)
    return _with_headers(
        JSONResponse({"token": issued, "token_type": "bearer"}, status_code=201), headers
    )


async def cart(request: Request) -> Response:
    session = get_session(request)
    if request.method == "POST":
        body = await _json_body(request)
        item = _text_field(body, "item")
        items = list(session.get("cart", []))
        if len(items) >= MAX_CART_ITEMS:
            raise _invalid(f"a cart holds at most {MAX_CART_ITEMS} items")
        items.append(item)
        session["cart"] = items
        return JSONResponse({"items": items}, status_code=201)
    return JSONResponse({"items": list(session.get("cart", []))})


async def password(request: Request) -> Response:
    user: User = await require_user(request)
    headers = await change_password(request, user, await _json_body(request))
    return _with_headers(Response(status_code=204), headers)


async def change_password(
    request: Request, user: User, body: dict[str, Any]
) -> list[tuple[str, str]]:
    """Change ``user``'s password after checking the current one (throttled like a login); the
    user's other sessions end and this one is rotated. Returns headers for the response (the
    JSON API and the pages). Raises 401 (wrong current password), 422, 429."""
    demo = _demo(request)
    new = _str_field(body, "new_password", max_len=4096)
    # The current password is guessed through a session like a login: same counts, same 429.
    user, headers = await _authenticate(request, body, user)
    try:
        new_hash = await demo.hasher.hash_async(new)
    except PasswordError as exc:
        raise _invalid(str(exc)) from None
    await demo.users.set_password_hash(user.id, new_hash)
    session = get_session(request)
    # This session is bound to the new hash; every other one, bound to the old, is refused at
    # its next request even when its login was still running while this change was made.
    if demo.admin.can_revoke:  # not with sealed cookies and no revocation record
        await demo.admin.password_changed(session, credential=new_hash)  # end the others too
    else:
        auth.login(session, user.id, remember=session.remember, credential=new_hash)
    # The old password's device cookies ended with it; this browser gets one for the new.
    return [*headers, *_device_cookie(request, dataclasses.replace(user, password_hash=new_hash))]


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


async def revoke_one(request: Request) -> Response:
    user: User = await require_user(request)
    # The current session's id here is a logout: its cookies are cleared too.
    if not await revoke_session(request, request.path_params["session_id"], owner=user.id):
        raise HTTPError(404, {"error": "not_found"})
    return Response(status_code=204)


async def revoke_others(request: Request) -> Response:
    user: User = await require_user(request)
    return JSONResponse({"revoked": await sign_out_others(request, user)})


async def sign_out_others(request: Request, user: User) -> int | None:
    """End every session of ``user`` but this one; how many (``None`` with sealed cookies)."""
    demo = _demo(request)
    count = await demo.admin.revoke_all(user.id, keep=get_session(request).id)
    # Sealed sessions cannot be counted: every other one issued until now has ended.
    return None if demo.manager.sealed is not None else count


def _password_hash(user: User) -> str:
    return user.password_hash


async def csrf(request: Request) -> Response:
    return JSONResponse({"csrf_token": get_session(request).csrf_token})


async def index(request: Request) -> Response:
    await current_user(request)
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


class HostAndFraming:
    """Answers only the allowed ``Host`` names; adds :data:`SECURITY_HEADERS` to every response.

    Pure ASGI and outermost, so refusals and error answers carry the headers too. A ``Host`` the
    demo does not serve is refused before anything else runs: with any Host answered, a hostile
    page could reach a demo on 127.0.0.1 through DNS rebinding.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self.any_host and _host_name(scope) not in self.allowed:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b'{"error":"invalid_host"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *SECURITY_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(scope: Scope) -> str | None:
    """The name in the request's ``Host`` header, without port or IPv6 brackets."""
    hosts = [v for k, v in scope.get("headers", []) if k == b"host"]
    if len(hosts) != 1:
        return None
    host: str = hosts[0].decode("latin-1").strip().lower()
    if host.startswith("["):
        name, bracket, _ = host[1:].partition("]")
        return name if bracket else None
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def create_app(
    *,
    store: AsyncStore,
    config: SessionConfig,
    users_url: str,
    hasher: PasswordHasher | None = None,
    throttle: ThrottleConfig | None = None,
    allowed_hosts: Sequence[str] = ("*",),
) -> Starlette:
    """The demo as an ASGI app over ``store``; users live in the SQL database at ``users_url``.

    ``allowed_hosts`` are the ``Host`` names answered (others get 400: DNS rebinding);
    ``coatcheck demo`` passes the address it is bound to.
    """
    from . import pages  # the pages use this module's account functions

    notices = pages.NewDeviceNotices()
    # A sign-in from a new device is told to the user's other sessions (not with sealed cookies:
    # no list of sessions exists to compare with).
    hooks = None if isinstance(store, AsyncSealedStore) else pages.hooks(notices)
    manager = AsyncSessionManager(store, config, hooks=hooks)
    users = UserRepository(users_url)
    demo = Demo(
        manager=manager,
        admin=AsyncSessionAdmin(manager),
        users=users,
        hasher=hasher or PasswordHasher(),
        guard=AsyncLoginGuard(manager, throttle or ThrottleConfig()),
        register_guard=AsyncLoginGuard(manager, REGISTER_THROTTLE, purpose="register"),
        password_guard=AsyncLoginGuard(manager, PASSWORD_THROTTLE, purpose="password"),
    )
    notices.admin = demo.admin

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await users.create_schema()
        yield
        await users.close()
        await manager.close()

    routes = [
        *pages.page_routes(),
        Route("/app", index),
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
        Route("/api/sessions/{session_id}", revoke_one, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.demo = demo
    app.state.new_device_notices = notices
    app.add_middleware(
        SessionMiddleware,
        manager=manager,
        user_loader=users.by_id,
        user_credential=_password_hash,  # sessions signed in with an old password end
        error_renderer=pages.error_page,  # refusals of page requests as pages, not JSON
    )
    app.add_middleware(HostAndFraming, allowed_hosts=list(allowed_hosts))
    return app
