"""Flask helpers over :class:`coatcheck.wsgi.SessionMiddleware`.

::

    coatcheck = Coatcheck(app, manager=manager, user_loader=load_user)

    @app.get("/api/me")
    @login_required
    def me(): return current_user().to_json()

    @app.get("/account")
    @login_required(redirect=True)        # pages: 303 to /login?next=/account
    def account(): ...

The coatcheck session is :func:`get_session`; Flask's own ``flask.session`` (a signed cookie) is
left alone. Helpers read the request's WSGI environ, so they work in any view, blueprint or
``before_request`` function of an app set up with :class:`Coatcheck`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload
from urllib.parse import quote

from flask import Flask, Response, g, request
from markupsafe import Markup

from .._core import signin
from .._core.http import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    NO_STORE_KEY,
    body_too_large,
    json_body_headers_error,
    parse_json_object,
)
from .._core.redirects import safe_next
from .._core.responses import app_error_answer
from .._core.session import Session
from .._core.signin import UserCredential
from ..admin import SessionAdmin
from ..auth import is_fresh, logout
from ..errors import (
    ConfigurationError,
    ConflictError,
    HTTPError,
    PasswordError,
    StoreUnavailableError,
)
from ..manager import SessionManager
from ..wsgi import SessionMiddleware, UserLoader

__all__ = [
    "Coatcheck",
    "csrf_input",
    "csrf_token",
    "current_user",
    "error_response",
    "fresh_login_required",
    "get_manager",
    "get_session",
    "issue_token",
    "login_required",
    "read_json",
    "require_user",
    "revoke_session",
    "safe_next",
]

P = ParamSpec("P")
R = TypeVar("R")
View = Callable[P, R]

log = logging.getLogger("coatcheck")

_USER_KEY = "_coatcheck_user"
_PATH_SAFE = "/!$&'()*+,;=:@-._~"  # RFC 3986 pchar and "/", without "%"
_NOT_INSTALLED = "coatcheck is not set up on this app: Coatcheck(app, manager=...)"


class Coatcheck:
    """The Flask extension: wraps ``app.wsgi_app`` with the session middleware.

    It also renders coatcheck's errors raised in views as JSON (``HTTPError`` with its status,
    ``PasswordError`` as 422, store outages as 503 with ``Retry-After``) and adds the
    :func:`csrf_input` template global.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        manager: SessionManager,
        user_loader: UserLoader | None = None,
        user_credential: UserCredential | None = None,
    ) -> None:
        self.manager = manager
        self.user_loader = user_loader
        self.user_credential = user_credential
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "coatcheck" in app.extensions:
            raise ConfigurationError("Coatcheck is already set up on this app")
        # Flask's documented way to add WSGI middleware; mypy sees a method being replaced.
        app.wsgi_app = SessionMiddleware(  # type: ignore[method-assign]
            app.wsgi_app,
            manager=self.manager,
            user_loader=self.user_loader,
            user_credential=self.user_credential,
        )
        app.extensions["coatcheck"] = self
        cookie_name = self.manager.config.cookie.effective_name
        if app.config.get("SESSION_COOKIE_NAME") == cookie_name:
            # Harmless until flask.session is written; then each clears the other's cookie.
            log.warning(
                "coatcheck: Flask's SESSION_COOKIE_NAME is %r, the name of coatcheck's session "
                "cookie; if the app uses flask.session, rename one of them "
                "(app.config['SESSION_COOKIE_NAME'] or CookieConfig(name=...)).",
                cookie_name,
            )
        for error in (HTTPError, PasswordError, StoreUnavailableError, ConflictError):
            app.register_error_handler(error, error_response)
        app.add_template_global(csrf_input, "csrf_input")


def error_response(error: Exception) -> Response:
    """The JSON response for a coatcheck error (what :class:`Coatcheck` answers in views)."""
    answer = app_error_answer(error, [])
    if answer is None:
        raise error
    return Response(answer.body, status=answer.status, headers=answer.headers)


def get_session() -> Session:
    """This request's session; raises when the extension is missing (a setup error)."""
    session = request.environ.get("coatcheck.session")
    if not isinstance(session, Session):
        raise ConfigurationError(_NOT_INSTALLED)
    return session


def get_manager() -> SessionManager:
    """The app's :class:`~coatcheck.manager.SessionManager` (for admin and throttling helpers)."""
    manager = request.environ.get("coatcheck.manager")
    if not isinstance(manager, SessionManager):
        raise ConfigurationError(_NOT_INSTALLED)
    return manager


def current_user() -> Any | None:
    """The signed-in user from your ``user_loader``, or ``None``.

    Loaded once per request and user id (kept on ``flask.g``), so a login or logout earlier in the
    same request is seen. A session whose user no longer loads (deleted account) is anonymous;
    so is one bound at login to a credential the user no longer has (``user_credential``), which
    is ended.
    Without a ``user_loader`` the user id itself is returned.
    """
    session = get_session()
    user_id = session.user_id
    cached: tuple[str | None, Any] | None = g.get(_USER_KEY)
    if cached is not None and cached[0] == user_id:
        return cached[1]
    loader: UserLoader | None = request.environ.get("coatcheck.user_loader")
    user: Any | None = None
    if user_id is not None:
        user = loader(user_id) if loader is not None else user_id
        if user is not None and not signin.still_signed_in(
            session,
            user,
            request.environ.get("coatcheck.user_credential"),
            get_manager().config.secrets,
        ):
            user_id, user = None, None
    setattr(g, _USER_KEY, (user_id, user))
    return user


def require_user() -> Any:
    """The signed-in user, or raise a 401 ``{"error": "unauthenticated"}`` :class:`HTTPError`."""
    user = current_user()
    if user is None:
        raise _unauthenticated(redirect=False, login_path=None)
    return user


def _unauthenticated(*, redirect: bool, login_path: str | None) -> HTTPError:
    if redirect:
        path = login_path or get_manager().config.login_path
        # Flask's path is percent-decoded; encode it again so an escaped "?", "#" or "%" in it
        # stays part of the path.
        target = quote(request.script_root + request.path, safe=_PATH_SAFE)
        query = request.query_string.decode("latin-1")
        target += f"?{query}" if query else ""
        return signin.unauthenticated(get_session().transport, login_path=path, target=target)
    return signin.unauthenticated(get_session().transport)


@overload
def login_required(view: View[P, R], /) -> View[P, R | Response]: ...
@overload
def login_required(
    *, redirect: bool = False, login_path: str | None = None
) -> Callable[[View[P, R]], View[P, R | Response]]: ...
def login_required(
    view: View[P, R] | None = None, /, *, redirect: bool = False, login_path: str | None = None
) -> View[P, R | Response] | Callable[[View[P, R]], View[P, R | Response]]:
    """Run the view only for a signed-in user (see :func:`current_user`).

    Otherwise 401 ``{"error": "unauthenticated"}`` (APIs), or with ``redirect=True`` (pages) a 303
    to the login page (``login_path``, default ``SessionConfig.login_path``) carrying this page
    as a safe, local ``next``. Use bare (``@login_required``) or with arguments.
    """

    def decorate(view: View[P, R]) -> View[P, R | Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            if current_user() is None:
                return error_response(_unauthenticated(redirect=redirect, login_path=login_path))
            return view(*args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate


def fresh_login_required(
    max_age: float = 300, *, redirect: bool = False, login_path: str | None = None
) -> Callable[[View[P, R]], View[P, R | Response]]:
    """For sensitive actions: the user must have logged in within ``max_age`` seconds.

    Anonymous requests are answered as by :func:`login_required`; a signed-in user whose login
    is older gets 401 ``{"error": "reauthentication_required"}`` (ask for the password again), or
    with ``redirect=True`` a 303 to the login page.
    """
    if callable(max_age):
        raise TypeError("fresh_login_required takes max_age: use @fresh_login_required(300)")

    def decorate(view: View[P, R]) -> View[P, R | Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            if current_user() is None:
                return error_response(_unauthenticated(redirect=redirect, login_path=login_path))
            if not is_fresh(get_session(), max_age):
                error = _unauthenticated(redirect=redirect, login_path=login_path)
                if not redirect:
                    error = signin.reauthentication_required()
                return error_response(error)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def csrf_token() -> str:
    """The session's CSRF token ('' until the session is stored), for server-rendered forms."""
    return get_session().csrf_token


def csrf_input() -> Markup:
    """A ready hidden form field carrying the CSRF token (HTML-escaped); a Jinja global."""
    # Markup.format escapes its arguments.
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        get_manager().config.csrf.form_field, csrf_token()
    )


def issue_token(user_id: str, *, label: str = "", credential: str | bytes | None = None) -> str:
    """Create a bearer session for ``user_id`` (for API clients) and return its token; bound to
    ``credential`` when given, as by :func:`coatcheck.login`.

    The response to this request is then sent with ``Cache-Control: no-store`` (it carries the
    token), whatever the view set.
    """
    session = get_session()
    token = get_manager().issue_token(
        str(user_id),
        user_agent=session.user_agent,
        ip=session.ip,
        label=label,
        credential=credential,
    )
    request.environ[NO_STORE_KEY] = True
    return token


def revoke_session(session_id: str, *, owner: str) -> bool:
    """End ``owner``'s session ``session_id``; True if it existed and was theirs.

    When it is the request's own session, this is a logout: the record is deleted at commit and
    the response clears the cookies, exactly as :func:`coatcheck.logout` does.
    """
    session = get_session()
    if session.id is not None and session.id == session_id and session.user_id == str(owner):
        logout(session)
        return True
    return SessionAdmin(get_manager()).revoke(session_id, owner=str(owner))


def read_json(
    *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """The request's JSON object body, read with limits; never a 500 for any input.

    415 unless the body is ``application/json``; 413 when ``Content-Length`` announces more than
    ``max_bytes`` (nothing is read) or the body passes it (reading stops one byte later); 422
    ``invalid_input`` for malformed JSON, nesting deeper than ``max_depth``, lone surrogates or
    anything but an object. Each is an :class:`~coatcheck.errors.HTTPError` that
    :class:`Coatcheck` answers as JSON.
    """
    problem = json_body_headers_error(
        request.headers.get("content-type"), request.headers.get("content-length"), max_bytes
    )
    if problem is not None:
        raise problem
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise body_too_large(max_bytes)
    return parse_json_object(raw, max_depth)
