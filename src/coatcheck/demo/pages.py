"""The demo's server-rendered pages: plain HTML forms, flash messages, no JavaScript.

They sit beside the JSON API and share its account logic (:func:`~coatcheck.demo.app.sign_in`,
:func:`~coatcheck.demo.app.create_account`, :func:`~coatcheck.demo.app.change_password`,
:func:`~coatcheck.demo.app.sign_out_others`); what differs is only how answers are given:

- every form post is answered with a 303 to a page (POST-redirect-GET); what happened is a flash
  message (:meth:`coatcheck.Session.flash`), shown by the next page and only by it;
- every form carries the session's CSRF token as ``_csrf`` (the middleware checks it);
- a protected page without a session is a 303 to ``/login?next=<path>``
  (:class:`~coatcheck.integrations.starlette.RequireUserPage`), and the login goes back there
  through :func:`coatcheck.redirects.safe_next` only if ``next`` is a path on this site;
- a sign-in from a new device (the ``on_new_device`` hook) is told once to the user's sessions
  that were signed in before it.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import AsyncSessionAdmin, Session, SessionEvent, auth
from ..errors import HTTPError
from ..hooks import Hooks
from ..integrations.starlette import (
    current_user,
    get_session,
    read_body,
    require_user_page,
    revoke_session,
)
from ..redirects import login_redirect_url, safe_next
from . import app as api
from .users import User

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 20
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Story:
    id: str
    title: str
    blurb: str


STORIES = (
    Story("coat-check", "The coat check", "A ticket for you, the coat behind the counter."),
    Story("two-tabs", "Two tabs, one cart", "Both appends land: a three-way merge at work."),
    Story("new-phone", "A new phone signs in", "The old laptop hears about it, once."),
    Story("lost-laptop", "The lost laptop", "Revoke it from your phone; it is signed out."),
    Story("sealed", "No database at all", "The whole session sealed in one cookie."),
)
_STORY = {story.id: story for story in STORIES}

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)


class NewDeviceNotices:
    """The ``on_new_device`` hook: remembers sign-ins from new devices, in this process, so that
    each of the user's sessions signed in *before* one is told about it once.

    Every earlier session is told, each once (a notice is not used up by the first session that
    reads it: an attacker's own session would otherwise take the owner's warning away). Bounded:
    at most :attr:`max_users` users (the oldest forgotten first), the last :attr:`per_user`
    sign-ins each, none older than a day, each remembering up to :attr:`max_told` sessions.

    A sign-in is kept only when the user has another live session to tell (``admin`` set): a
    new account's first sign-in takes no room, so a flood of throwaway sign-ups cannot push an
    owner's warning out (found by an attack). The notices live in this process's memory: a real
    app would keep them with the user (or send an email) so that every process sees them.
    """

    max_users = 100_000
    per_user = 20
    max_told = 64
    max_age = 24 * 60 * 60

    def __init__(self) -> None:
        self._pending: OrderedDict[str, list[tuple[SessionEvent, set[float]]]] = OrderedDict()
        self.admin: AsyncSessionAdmin | None = None

    async def __call__(self, event: SessionEvent) -> None:
        if event.user_id is None:
            return
        if self.admin is not None:
            listed = await self.admin.sessions_of(event.user_id)
            if not any(info.id != event.session_id for info in listed):
                return  # nobody to tell
        notices = self._pending.pop(event.user_id, [])
        notices = [*notices, (event, set())][-self.per_user :]
        self._pending[event.user_id] = notices
        while len(self._pending) > self.max_users:
            self._pending.popitem(last=False)

    def take(self, user_id: str, session: Session) -> list[str]:
        """The notices ``session`` has not been told yet: sign-ins after its own, from another
        device. A session is known by its sign-in time, which its id rotations keep."""
        notices = self._pending.get(user_id)
        auth_time = session.auth_time
        if not notices or auth_time is None:
            return []
        fresh = [(e, told) for e, told in notices if e.at > time.time() - self.max_age]
        if fresh:
            self._pending[user_id] = fresh
        else:
            del self._pending[user_id]
        messages = []
        for event, told in fresh:
            if (
                event.session_id == session.id
                or auth_time >= event.at
                or (event.user_agent, event.ip) == (session.user_agent, session.ip)
                or auth_time in told
                or len(told) >= self.max_told
            ):
                continue
            told.add(auth_time)
            messages.append(
                f"A new device signed in to your account: {browser_name(event.user_agent)}"
                f" from {event.ip or 'an unknown address'}, at {_when(event.at)}."
            )
        return messages


def hooks(notices: NewDeviceNotices) -> Hooks:
    return Hooks(on_new_device=notices)


# -- rendering ------------------------------------------------------------------------------


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Version/", "Safari"),
    ("curl/", "curl"),
    ("python-httpx/", "httpx"),
    ("python-requests/", "requests"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def browser_name(user_agent: str) -> str:
    """A short readable name for a user agent string: "Firefox 126 on Windows", "curl 8"."""
    name, marker = next(((n, m) for m, n in _BROWSERS if m in user_agent), ("", ""))
    version = re.search(re.escape(marker) + r"(\d+)", user_agent) if marker else None
    if name and version:
        name = f"{name} {version.group(1)}"
    system = next((s for marker, s in _SYSTEMS if marker in user_agent), "")
    if name and system:
        return f"{name} on {system}"
    return name or system or (user_agent[:40] if user_agent else "Unknown browser")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _ago(at: float) -> str:
    seconds = max(0, int(time.time() - at))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return _when(at)


_env.filters["when"] = _when
_env.filters["ago"] = _ago
_env.filters["browser"] = browser_name


async def _render(request: Request, template: str, **context: Any) -> Response:
    session = get_session(request)
    user: User | None = await current_user(request)
    flashes = [dict(f) for f in session.flashes]
    if user is not None:
        notices: NewDeviceNotices = request.app.state.new_device_notices
        for message in notices.take(user.id, session):
            flashes.append({"message": message, "category": "warning"})
    html = _env.get_template(template).render(
        user=user,
        flashes=flashes,
        csrf=session.csrf_token,
        saved=[_STORY[s] for s in _saved(request) if s in _STORY],
        **context,
    )
    return HTMLResponse(html)


_ERROR_PAGES = {
    "csrf": (
        "This form has expired",
        "The page you sent it from was too old, or the form came from another site. Go back, "
        "reload the page and try again.",
    ),
    "too_many_attempts": ("Too many attempts", "Wait {wait} and try again."),
    "store_unavailable": (
        "Try again in a moment",
        "The session store is not answering. Nothing was changed; try again in {wait}.",
    ),
    "cookie_too_large": (
        "Your cookies are too large",
        "This browser sent more cookie data than the site accepts. Clear this site's cookies.",
    ),
    "session_too_large": (
        "Your session is full",
        "It would not fit in one cookie any more. Remove something and try again.",
    ),
}


def error_page(scope: Any, error: HTTPError) -> str:
    """The library's refusals of a browser's page request (a form posted without its CSRF field,
    a throttled login, a store outage) as a page instead of JSON; API requests still get JSON.
    Rendered without the session: a refusal may come before it was opened."""
    code = str(error.body.get("error", ""))
    title, message = _ERROR_PAGES.get(
        code, ("Something went wrong", "The request could not be completed.")
    )
    retry = dict(error.headers).get("retry-after", "")
    wait = f"{retry} seconds" if retry.isdigit() else "a moment"
    return _env.get_template("error.html").render(
        user=None, flashes=[], csrf="", title=title, message=message.format(wait=wait)
    )


def _saved(request: Request) -> list[str]:
    saved = get_session(request).get("saved", [])
    return [s for s in saved if isinstance(s, str)] if isinstance(saved, list) else []


def _see(path: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """The 303 that ends every form post (POST-redirect-GET)."""
    response = RedirectResponse(path, status_code=303)
    for name, value in headers or []:
        response.headers.append(name, value)
    return response


def _flash(request: Request, message: str, category: str = "info") -> None:
    get_session(request).flash(message, category)


def _problem(exc: HTTPError) -> str:
    """What a person is told when the account logic refuses a form."""
    if exc.status_code == 401:
        return "Invalid email or password."
    if exc.status_code == 429:
        wait = dict(exc.headers).get("retry-after", "a few")
        return f"Too many attempts. Try again in {wait} seconds."
    if exc.status_code == 409:
        return "That email already has an account. Log in instead?"
    message = exc.body.get("message") or exc.body.get("error") or "That did not work."
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form body as text fields (the first value of each name).

    415 for another content type, 413 past :data:`MAX_FORM_BYTES`, 400 for bytes that are not
    UTF-8 or percent-escapes that do not decode to it: a form post never makes a 500.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise HTTPError(415, {"error": "unsupported_media_type", "message": f"send {FORM_TYPE}"})
    body = await read_body(request, max_bytes=MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except ValueError:  # UnicodeDecodeError too; also more than MAX_FORM_FIELDS fields
        raise HTTPError(400, {"error": "invalid_form"}) from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _login_page(next_path: str) -> str:
    return login_redirect_url("/login", next_path) if next_path != "/" else "/login"


# -- pages ----------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    return await _render(request, "home.html", stories=STORIES, saved_ids=set(_saved(request)))


async def save_story(request: Request) -> Response:
    form = await _form(request)
    story = _STORY.get(form.get("story", ""))
    if story is None:
        _flash(request, "There is no such story.", "error")
        return _see("/")
    session = get_session(request)
    if not isinstance(session.get("saved", []), list):
        session["saved"] = []
    # Saved stories are a set: recorded as set operations, two tabs saving one story list it
    # once, and a removal made after a save in another tab holds (a plain list would merge two
    # concurrent saves as two appends).
    if form.get("action") == "remove":
        session.discard_from_set("saved", story.id)
        _flash(request, f"Removed “{story.title}” from your saved stories.")
    else:
        session.add_to_set("saved", story.id)
        _flash(request, f"Saved “{story.title}”.")
    return _see("/")


async def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    return await _render(request, "login.html", next=next_path)


async def login(request: Request) -> Response:
    form = await _form(request)
    next_path = safe_next(form.get("next"))
    body = {
        "email": form.get("email", ""),
        "password": form.get("password", ""),
        "remember": form.get("remember") in ("on", "1", "true"),
    }
    try:
        user, headers = await api.sign_in(request, body)
    except HTTPError as exc:
        if exc.status_code >= 500:
            raise
        _flash(request, _problem(exc), "error")
        return _see(_login_page(next_path))
    _flash(request, f"Welcome back, {user.name or user.email}.")
    return _see(next_path, headers)


async def signup_page(request: Request) -> Response:
    return await _render(request, "signup.html")


async def signup(request: Request) -> Response:
    form = await _form(request)
    body = {k: form.get(k, "") for k in ("email", "name", "password")}
    try:
        user, headers = await api.create_account(request, body)
    except HTTPError as exc:
        if exc.status_code >= 500:
            raise
        _flash(request, _problem(exc), "error")
        return _see("/signup")
    _flash(request, f"Welcome, {user.name or user.email}! Your account is ready.")
    return _see("/", headers)


async def logout(request: Request) -> Response:
    await _form(request)
    session = get_session(request)
    auth.logout(session)
    session.flash("You are signed out.", "info")  # carried into the session that follows
    return _see("/")


async def account(request: Request) -> Response:
    user: User = await require_user_page(request)
    demo: api.Demo = request.app.state.demo
    sealed = demo.manager.sealed is not None
    devices = [] if sealed else await demo.admin.sessions_of(user.id)
    return await _render(
        request,
        "account.html",
        devices=devices,
        current=get_session(request).id,
        sealed=sealed,
        can_revoke=demo.admin.can_revoke,
    )


async def _signed_in(request: Request) -> User | None:
    """The user for a form post on the account page; else a flash for the login page."""
    user: User | None = await current_user(request)
    if user is None:
        _flash(request, "You are not signed in (any more). Log in to go on.", "error")
    return user


async def change_password(request: Request) -> Response:
    form = await _form(request)
    user = await _signed_in(request)
    if user is None:
        return _see(_login_page("/account"))
    body = {k: form.get(k, "") for k in ("current_password", "new_password")}
    try:
        headers = await api.change_password(request, user, body)
    except HTTPError as exc:
        if exc.status_code >= 500:
            raise
        message = "Your current password is wrong." if exc.status_code == 401 else _problem(exc)
        _flash(request, message, "error")
        return _see("/account")
    _flash(request, "Password changed. Your other devices were signed out.")
    return _see("/account", headers)


_NO_REVOCATIONS = (
    "Sealed cookies without a revocation record cannot be signed out from another device; "
    "changing the password signs them out."
)


async def revoke(request: Request) -> Response:
    form = await _form(request)
    user = await _signed_in(request)
    if user is None:
        return _see(_login_page("/account"))
    session_id = form.get("session_id", "")
    current = session_id == get_session(request).id
    if not current and not request.app.state.demo.admin.can_revoke:
        _flash(request, _NO_REVOCATIONS, "error")
    elif not await revoke_session(request, session_id, owner=user.id):
        _flash(request, "That device was already signed out.", "error")
    elif current:
        get_session(request).flash("You signed this device out.")
        return _see("/")
    else:
        _flash(request, "Signed out that device.")
    return _see("/account")


async def revoke_others(request: Request) -> Response:
    await _form(request)
    user = await _signed_in(request)
    if user is None:
        return _see(_login_page("/account"))
    if not request.app.state.demo.admin.can_revoke:
        _flash(request, _NO_REVOCATIONS, "error")
        return _see("/account")
    count = await api.sign_out_others(request, user)
    if count is None:
        _flash(request, "Signed out everywhere else.")
    else:
        _flash(request, f"Signed out everywhere else ({count} other session(s)).")
    return _see("/account")


def page_routes() -> list[Route]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/saved", save_story, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/signup", signup_page, methods=["GET"]),
        Route("/signup", signup, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/account", account, methods=["GET"]),
        Route("/account/password", change_password, methods=["POST"]),
        Route("/account/revoke", revoke, methods=["POST"]),
        Route("/account/revoke-others", revoke_others, methods=["POST"]),
    ]
