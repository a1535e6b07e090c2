# --8<-- [start:setup]
"""A server-rendered site on Starlette with coatcheck: sign-up, log-in with ``next``, flash
messages, a devices page (revoke one, sign out everywhere else), password change and logout.
Printed in full in docs/guide.md and driven through its whole flow by tests/test_guide.py."""

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from coatcheck import (
    AsyncLoginGuard,
    AsyncSessionAdmin,
    AsyncSessionManager,
    CookieConfig,
    HTTPError,
    PasswordError,
    SessionConfig,
    async_store_from_url,
    login,
    logout,
)
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import (
    csrf_input,
    current_user,
    get_session,
    require_user_page,
    revoke_session,
)
from coatcheck.passwords import PasswordHasher
from coatcheck.redirects import safe_next
from coatcheck.throttling import canonical_login_name

# Over plain http:// (local development) browsers drop Secure cookies: COATCHECK_DEV=1 turns
# Secure off, and the session cookie is then "coatcheck_session" instead of "__Host-session".
cookie = CookieConfig(secure=False) if os.environ.get("COATCHECK_DEV") == "1" else CookieConfig()
manager = AsyncSessionManager(
    async_store_from_url(os.environ.get("COATCHECK_STORE", "sqlite:///sessions.db")),
    SessionConfig(
        secret=os.environ.get("COATCHECK_SECRET") or secrets.token_urlsafe(32), cookie=cookie
    ),
)
admin = AsyncSessionAdmin(manager)
guard = AsyncLoginGuard(manager)  # login throttling, counted in the session store
hasher = PasswordHasher()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates" / "starlette")
# --8<-- [end:setup]


# --8<-- [start:users]
class Users:
    """Your user table (here in memory): id, email, password hash."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, str]] = {}

    def by_email(self, email: str) -> dict[str, str] | None:
        return next((u for u in self.by_id.values() if u["email"] == email), None)

    def add(self, email: str, password_hash: str) -> dict[str, str]:
        user = {"id": str(len(self.by_id) + 1), "email": email, "password_hash": password_hash}
        self.by_id[user["id"]] = user
        return user


users = Users()


async def load_user(user_id: str) -> dict[str, str] | None:
    return users.by_id.get(user_id)


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form (Starlette's request.form() needs python-multipart; this does not)."""
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace")))


async def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """Render a template with what every page shows: the user, the flashes, the CSRF field."""
    context.update(
        user=await current_user(request),
        flashes=get_session(request).flashes,  # each {"message": ..., "category": ...}
        csrf_input=csrf_input(request),
    )
    return templates.TemplateResponse(request, name, context, status_code=status)


def see_other(url: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    response = RedirectResponse(url, status_code=303)
    for name, value in headers:
        response.headers.append(name, value)
    return response


# --8<-- [end:users]


# --8<-- [start:signup]
async def home(request: Request) -> Response:
    return await page(request, "home.html")


async def signup(request: Request) -> Response:
    if request.method == "GET":
        return await page(request, "signup.html")
    fields = await form(request)
    try:
        email = canonical_login_name(fields.get("email", ""))
    except ValueError:
        return await page(request, "signup.html", 422, error="That is not an email address.")
    if users.by_email(email) is not None:
        return await page(request, "signup.html", 409, error="That email is taken.")
    try:
        password_hash = await hasher.hash_async(fields.get("password", ""))
    except PasswordError as exc:  # too short (under 8 characters) or too long
        return await page(request, "signup.html", 422, error=str(exc))
    user = users.add(email, password_hash)
    session = get_session(request)
    login(session, user["id"], credential=password_hash)  # bound to this password
    session.flash("Welcome! Your account is ready.", "success")
    # This browser gets a device cookie: its owner is never throttled with an attacker.
    return see_other("/", guard.device_cookie(user["id"]))


# --8<-- [end:signup]


# --8<-- [start:login]
async def login_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))  # only paths on this site
    if request.method == "GET":
        return await page(request, "login.html", next=next_url)
    fields = await form(request)
    session = get_session(request)
    try:
        email = canonical_login_name(fields.get("email", ""))
    except ValueError:
        email = ""
    user = users.by_email(email)
    attempt = await guard.check(  # raises a 429 HTTPError (Retry-After) when throttled
        email or None,
        session.ip,
        identity=user["id"] if user else None,
        device=request.cookies.get(guard.device_cookie_name),
        credential=user["password_hash"] if user else None,  # device cookies die with it
    )
    checked = await hasher.check_password_async(  # also costs a hash for unknown emails
        user["password_hash"] if user else None, fields.get("password", "")
    )
    if user is None or not checked.ok:
        error = "Wrong email or password."
        return await page(request, "login.html", 401, next=next_url, error=error)
    if checked.new_hash is not None:  # hashed with older parameters: upgrade it
        user["password_hash"] = checked.new_hash
    device = await guard.succeeded(attempt)  # forget the failures; a fresh device cookie
    login(
        session,
        user["id"],
        remember="remember" in fields,  # a long-lived, revocable session
        credential=user["password_hash"],
    )
    session.flash(f"Signed in as {user['email']}.", "success")
    return see_other(next_url, device)


# --8<-- [end:login]


# --8<-- [start:devices]
async def devices(request: Request) -> Response:
    user = await require_user_page(request)  # or a 303 to /login?next=/devices
    listed = await admin.sessions_of(user["id"])  # SessionInfo, most recently seen first
    this_device = get_session(request).id  # SessionInfo.id is the same public id
    return await page(request, "devices.html", sessions=listed, this_device=this_device)


async def revoke(request: Request) -> Response:
    user = await require_user_page(request)
    session_id = request.path_params["session_id"]
    # False when the id is not one of this user's sessions; this one's own id is a logout.
    if await revoke_session(request, session_id, owner=user["id"]):
        get_session(request).flash("That device is signed out.", "success")
    return see_other("/devices")


async def revoke_others(request: Request) -> Response:
    user = await require_user_page(request)
    ended = await admin.revoke_all(user["id"], keep=get_session(request).id)
    get_session(request).flash(f"Signed out of {ended} other device(s).", "success")
    return see_other("/devices")


# --8<-- [end:devices]


# --8<-- [start:password]
async def change_password(request: Request) -> Response:
    user = await require_user_page(request)
    if request.method == "GET":
        return await page(request, "password.html")
    fields = await form(request)
    checked = await hasher.check_password_async(
        user["password_hash"], fields.get("current_password", "")
    )
    if not checked.ok:
        return await page(request, "password.html", 401, error="The current password is wrong.")
    try:
        new_hash = await hasher.hash_async(fields.get("new_password", ""))
    except PasswordError as exc:
        return await page(request, "password.html", 422, error=str(exc))
    user["password_hash"] = new_hash
    # End every other session, rotate this one (remember-me kept), bind it to the new password.
    session = get_session(request)
    ended = await admin.password_changed(session, credential=new_hash)
    session.flash(f"Password changed; {ended} other device(s) signed out.", "success")
    # Device cookies are bound to the password: this browser gets one for the new one.
    presented = request.cookies.get(guard.device_cookie_name)
    return see_other("/devices", guard.device_cookie(user["id"], presented, credential=new_hash))


async def sign_out(request: Request) -> Response:
    session = get_session(request)
    logout(session)
    session.flash("You have been signed out.")  # carried into the new anonymous session
    return see_other("/")


# --8<-- [end:password]


# --8<-- [start:app]
def error_page(scope: Any, error: HTTPError) -> str:
    """coatcheck's refusals (403 CSRF, 401, 429, 503...) as a page, for browsers; API clients
    still get JSON. No session helpers here: a refusal can come before the session opened."""
    return templates.get_template("error.html").render(
        status=error.status_code, error=error.body.get("error", "")
    )


app = Starlette(
    routes=[
        Route("/", home),
        Route("/signup", signup, methods=["GET", "POST"]),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/devices", devices),
        Route("/devices/{session_id}/revoke", revoke, methods=["POST"]),
        Route("/devices/revoke-others", revoke_others, methods=["POST"]),
        Route("/password", change_password, methods=["GET", "POST"]),
        Route("/logout", sign_out, methods=["POST"]),
    ]
)
app.add_middleware(
    SessionMiddleware,
    manager=manager,
    user_loader=load_user,
    user_credential=lambda user: user["password_hash"],  # old-password sessions end
    error_renderer=error_page,
)
# --8<-- [end:app]
