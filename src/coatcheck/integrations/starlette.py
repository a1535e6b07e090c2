"""Starlette and FastAPI helpers over :class:`coatcheck.asgi.SessionMiddleware`.

::

    app.add_middleware(SessionMiddleware, manager=manager, user_loader=load_user)

    @app.get("/api/me")
    async def me(user: User = Depends(require_user)) -> User: ...

Every helper takes the request (``Request``, ``WebSocket`` or ``HTTPConnection``), so each works
as a FastAPI dependency as well as a plain function call in a Starlette endpoint.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, HTTPConnection, Request

from .._core import signin
from .._core.csrf import hidden_input
from .._core.http import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    NO_STORE_KEY,
    body_incomplete,
    body_too_large,
    json_body_headers_error,
    parse_json_object,
)
from .._core.session import Session
from ..admin import AsyncSessionAdmin
from ..asgi import UserLoader
from ..auth import is_fresh, logout
from ..errors import ConfigurationError
from ..manager import AsyncSessionManager

_USER_KEY = "coatcheck.user"


def get_session(request: HTTPConnection) -> Session:
    """The request's session; raises when the middleware is missing (a setup error)."""
    session = request.scope.get("coatcheck.session")
    if not isinstance(session, Session):
        raise ConfigurationError("coatcheck.asgi.SessionMiddleware is not installed on this app")
    return session


def get_manager(request: HTTPConnection) -> AsyncSessionManager:
    manager = request.scope.get("coatcheck.manager")
    if not isinstance(manager, AsyncSessionManager):
        raise ConfigurationError("coatcheck.asgi.SessionMiddleware is not installed on this app")
    return manager


async def current_user(request: Request) -> Any | None:
    """The signed-in user from your ``user_loader`` (cached per request), or ``None``.

    A session whose user no longer loads (deleted account) counts as anonymous. With the
    middleware's ``user_credential``, so does a session bound at login to a credential the user
    no longer has (a password changed since): that session is ended.
    """
    session = get_session(request)
    user_id = session.user_id
    cached = request.scope.get(_USER_KEY)
    if cached is not None and cached[0] == user_id:
        return cached[1]  # cached per user id, so a login earlier in this request is seen
    loader: UserLoader | None = request.scope.get("coatcheck.user_loader")
    user: Any | None = None
    if user_id is not None:
        user = await loader(user_id) if loader is not None else user_id
        if user is not None and not signin.still_signed_in(
            session,
            user,
            request.scope.get("coatcheck.user_credential"),
            get_manager(request).config.secrets,
        ):
            user_id, user = None, None
    request.scope[_USER_KEY] = (user_id, user)
    return user


async def require_user(request: Request) -> Any:
    """The signed-in user, or a 401 ``{"error": "unauthenticated"}`` (for APIs)."""
    user = await current_user(request)
    if user is None:
        raise signin.unauthenticated(get_session(request).transport)
    return user


class RequireUserPage:
    """A dependency for pages: the user, or a 303 redirect to the login page with ``next``."""

    def __init__(self, login_path: str | None = None) -> None:
        self.login_path = login_path

    async def __call__(self, request: Request) -> Any:
        user = await current_user(request)
        if user is None:
            login_path = self.login_path or get_manager(request).config.login_path
            # The raw path keeps escapes as sent (%3F stays %3F rather than becoming a query).
            raw = request.scope.get("raw_path") or request.url.path.encode()
            path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
            target = path + (f"?{request.url.query}" if request.url.query else "")
            raise signin.unauthenticated(
                get_session(request).transport, login_path=login_path, target=target
            )
        return user


require_user_page = RequireUserPage()


class RequireFresh:
    """A dependency for sensitive actions: the user must have logged in within ``max_age`` s.

    Otherwise 401 ``{"error": "reauthentication_required"}`` -- ask for the password again.
    """

    def __init__(self, max_age: float = 300) -> None:
        self.max_age = max_age

    async def __call__(self, request: Request) -> Any:
        user = await require_user(request)
        if not is_fresh(get_session(request), self.max_age):
            raise signin.reauthentication_required()
        return user


def csrf_token(request: HTTPConnection) -> str:
    """The session's CSRF token, for an ``<input type=hidden name=_csrf>`` in server forms."""
    return get_session(request).csrf_token


class HTML(str):
    """Text that is already HTML: Jinja2 (and markupsafe) insert it as is, without escaping it
    again, because it has ``__html__``. Everywhere else it is a plain ``str``."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def csrf_input(request: HTTPConnection) -> HTML:
    """A ready hidden form field carrying the CSRF token (its name and value HTML-escaped).

    It is :class:`HTML`, so ``{{ csrf_input(request) }}`` in a Jinja2 template (autoescaped, as
    Starlette's ``Jinja2Templates`` sets it up) renders the field, not its escaped text.
    """
    field = get_manager(request).config.csrf.form_field
    return HTML(hidden_input(field, csrf_token(request)))


async def issue_token(
    request: HTTPConnection,
    user_id: str,
    *,
    label: str = "",
    credential: str | bytes | None = None,
) -> str:
    """Create a bearer session for ``user_id`` (for API clients) and return its token; bound to
    ``credential`` when given, as by :func:`coatcheck.login`.

    The response to this request is then sent with ``Cache-Control: no-store`` (it carries the
    token), whatever the endpoint set.
    """
    session = get_session(request)
    token = await get_manager(request).issue_token(
        str(user_id),
        user_agent=session.user_agent,
        ip=session.ip,
        label=label,
        credential=credential,
    )
    request.scope[NO_STORE_KEY] = True
    return token


async def revoke_session(request: HTTPConnection, session_id: str, *, owner: str) -> bool:
    """End ``owner``'s session ``session_id``; True if it existed and was theirs.

    When it is the request's own session, this is a logout: the record is deleted at commit and
    the response clears the cookies, exactly as :func:`coatcheck.logout` does.
    """
    session = get_session(request)
    if session.id is not None and session.id == session_id and session.user_id == str(owner):
        logout(session)
        return True
    return await AsyncSessionAdmin(get_manager(request)).revoke(session_id, owner=str(owner))


async def read_json(
    request: Request, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """The request's JSON object body, read with limits; never a 500 for any input.

    415 unless the body is ``application/json``; 413 when ``Content-Length`` announces more than
    ``max_bytes`` (nothing is read) or the streamed body passes it (reading stops there); 422
    ``invalid_input`` for malformed JSON, nesting deeper than ``max_depth``, lone surrogates or
    anything but an object. Each is an :class:`~coatcheck.errors.HTTPError` the middleware
    answers as JSON.
    """
    problem = json_body_headers_error(
        request.headers.get("content-type"), request.headers.get("content-length"), max_bytes
    )
    if problem is not None:
        raise problem
    return parse_json_object(await read_body(request, max_bytes=max_bytes), max_depth)


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The request's body, read with a limit: 413 as soon as the stream passes ``max_bytes``
    (reading stops there), 400 ``incomplete_body`` when the client leaves before it ends
    (Starlette's ``ClientDisconnect``, which would otherwise be logged as an application error)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise body_too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise body_incomplete() from None
    return b"".join(chunks)
