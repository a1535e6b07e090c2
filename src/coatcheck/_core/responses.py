"""What the middlewares answer and add to responses, shared by the ASGI and WSGI drivers.

No I/O: each function takes values and returns values. Headers are ``(name, value)`` pairs of
``str``; a name may be in any case (it is compared case-insensitively), a value is latin-1 text,
exactly as WSGI carries them (the ASGI driver encodes them with latin-1, which is lossless).

Rules written here:

- Error answers are small JSON bodies with ``Cache-Control: no-store``: 503
  ``store_unavailable`` with ``Retry-After`` for an unreachable store or a write that kept losing,
  422 ``invalid_password`` for a refused password, and any :class:`~coatcheck.errors.HTTPError`
  as its own status, body and headers (also when raised by the commit: a sealed session too
  large for a cookie is a 413).
- Error pages: with an app's renderer (``error_renderer``), a refusal (status 400 or more) of a
  page request (:func:`~coatcheck._core.http.wants_page`: a browser asking for HTML) is answered
  with the HTML the renderer returns, under the same status and headers (``Retry-After``,
  ``WWW-Authenticate``, cleared cookies) plus ``Cache-Control: no-store``. A redirect (the 303 to
  the login page) stays a redirect; API requests keep the JSON; a renderer that returns ``None``
  leaves the JSON; one that raises is logged and the JSON is sent -- never a 500.
- A response that read the session, sets a cookie or carries a fresh token varies on ``Cookie``
  (or ``Authorization`` for bearer sessions). One that sets a token is ``no-store``, replacing the
  app's own ``Cache-Control``; otherwise ``private, no-store`` unless the app chose a policy.
- The CSRF form field is looked for only in urlencoded bodies of unsafe cookie requests that do
  not already carry the token in a header, and only up to :data:`MAX_FORM_BYTES`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from ..errors import ConflictError, HTTPError, PasswordError, StoreUnavailableError
from .config import CSRFConfig, SessionConfig
from .http import RequestView, is_unsafe, wants_page
from .session import Session

Headers = list[tuple[str, str]]

MAX_FORM_BYTES = 1 << 20
"""The largest urlencoded body read in search of the CSRF form field (1 MiB)."""
FORM_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded"})
DEFAULT_RETRY_AFTER = 5

INSECURE_COOKIE_WARNING = (
    "setting a Secure cookie over plain HTTP; browsers other than on "
    "localhost will drop it. Serve over HTTPS (or, in development only, "
    "CookieConfig(secure=False))."
)


log = logging.getLogger("coatcheck")


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete response the middleware sends instead of the app's (JSON, or an error page)."""

    status: int
    headers: Headers
    body: bytes


JSONAnswer = Answer

PageRenderer = Callable[[HTTPError], "str | None"]
"""The app's error renderer, bound by a driver to the request being refused."""


# -- error answers --------------------------------------------------------------------------


def json_answer(status: int, body: dict[str, Any], headers: Sequence[tuple[str, str]]) -> Answer:
    """A JSON response: content type, length and ``no-store`` first, then ``headers``."""
    payload = json.dumps(body).encode()
    return Answer(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
            *headers,
        ],
        payload,
    )


def html_answer(status: int, page: str, headers: Sequence[tuple[str, str]]) -> Answer:
    """An HTML error page: content type, length and ``no-store`` first, then ``headers``."""
    payload = page.encode("utf-8")
    return Answer(
        status,
        [
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
            *headers,
        ],
        payload,
    )


def as_http_error(error: BaseException) -> HTTPError | None:
    """The HTTP answer coatcheck gives for ``error``, or ``None`` for an error it does not answer:
    an :class:`HTTPError` as itself, a refused password as 422 ``invalid_password``, a store
    outage or a write that kept losing as 503 ``store_unavailable`` with ``Retry-After``."""
    if isinstance(error, HTTPError):
        return error
    if isinstance(error, PasswordError):
        return HTTPError(422, {"error": "invalid_password", "message": str(error)})
    if isinstance(error, StoreUnavailableError | ConflictError):
        return unavailable_error(error)
    return None


def unavailable_error(error: StoreUnavailableError | ConflictError) -> HTTPError:
    """The 503 ``store_unavailable`` with ``Retry-After`` for a store outage or a lost race."""
    retry_after = getattr(error, "retry_after", DEFAULT_RETRY_AFTER)
    return HTTPError(
        503, {"error": "store_unavailable"}, headers=(("retry-after", str(retry_after)),)
    )


class Refusals:
    """How the middleware answers one request's refusals: JSON, or the app's error page.

    ``request`` is the request being answered; ``render`` the app's renderer bound to it (the
    drivers pass their own request object), ``None`` for JSON only.
    """

    __slots__ = ("render", "request")

    def __init__(self, request: RequestView, render: PageRenderer | None = None) -> None:
        self.request = request
        self.render = render

    def answer(self, error: HTTPError, extra: Sequence[tuple[str, str]] = ()) -> Answer:
        """The answer for ``error``, with ``extra`` headers (clearing a bad cookie) after its own:
        the renderer's page when the rules in this module's docstring allow one, else JSON."""
        headers = [*error.headers, *extra]
        page = self._page(error)
        if page is not None:
            return html_answer(error.status_code, page, headers)
        return json_answer(error.status_code, error.body, headers)

    def unavailable(self, error: StoreUnavailableError | ConflictError | HTTPError) -> Answer:
        """The answer sent instead of the app's when the store failed (503), or when committing
        raised an :class:`HTTPError` (413 for a sealed session too large). The 503 says nothing
        about the session, so it carries no session headers."""
        if isinstance(error, HTTPError):
            return self.answer(error)
        return self.answer(unavailable_error(error))

    def app_error(self, error: BaseException, extra: Sequence[tuple[str, str]]) -> Answer | None:
        """The answer for an exception the app raised before responding, or ``None`` to re-raise.

        ``extra`` are headers the middleware owes the client anyway (clearing a bad cookie); they
        go on every answer except the 503, which says nothing about the session.
        """
        http_error = as_http_error(error)
        if http_error is None:
            return None
        if isinstance(error, StoreUnavailableError | ConflictError):
            return self.answer(http_error)
        return self.answer(http_error, extra)

    def _page(self, error: HTTPError) -> str | None:
        if self.render is None or error.status_code < 400 or not wants_page(self.request):
            return None
        try:
            page = self.render(error)
        except Exception:
            # The page is a courtesy: the JSON answer still says what happened.
            log.exception(
                "coatcheck: the error renderer raised; answering %d as JSON", error.status_code
            )
            return None
        if page is not None and not isinstance(page, str):
            log.error(
                "coatcheck: the error renderer returned %s, not str or None; answering as JSON",
                type(page).__name__,
            )
            return None
        return page


# -- headers on the app's response -----------------------------------------------------------


def add_session_headers(
    headers: Headers, session: Session, session_headers: Sequence[tuple[str, str]]
) -> bool:
    """Append the session's headers to ``headers`` (in place) with ``Vary`` and ``Cache-Control``.

    Returns whether a cookie is being set.
    """
    return _add_session_headers(
        headers, session.accessed, session.transport, session.token is not None, session_headers
    )


def _add_session_headers(
    headers: Headers,
    accessed: bool,
    transport: str,
    has_token: bool,
    session_headers: Sequence[tuple[str, str]],
) -> bool:
    sets_cookie = False
    for name, value in session_headers:
        headers.append((name, value))
        sets_cookie = sets_cookie or name.lower() == "set-cookie"
    if not (accessed or sets_cookie or has_token):
        return sets_cookie
    merge_vary(headers, "Authorization" if transport == "bearer" else "Cookie")
    if sets_cookie or has_token:
        replace_header(headers, "cache-control", "no-store")
    elif not any(k.lower() == "cache-control" for k, _ in headers):
        headers.append(("cache-control", "private, no-store"))
    return sets_cookie


@functools.cache
def _plain_headers(
    accessed: bool, transport: str, has_token: bool, sets_cookie: bool
) -> tuple[tuple[bytes, bytes], ...]:
    headers: Headers = []
    cookie = (("set-cookie", "-"),) if sets_cookie else ()
    _add_session_headers(headers, accessed, transport, has_token, cookie)
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers[len(cookie) :])


def plain_session_headers(
    session: Session, session_headers: Sequence[tuple[str, str]] = ()
) -> list[tuple[bytes, bytes]]:
    """What :func:`add_session_headers` adds, as latin-1 bytes, to a response without ``Vary`` or
    ``Cache-Control`` headers of its own: ``session_headers`` (the commit's) and then ``Vary`` and
    ``Cache-Control``, worked out once per kind of session instead of on every response."""
    sets_cookie = False
    encoded = []
    for name, value in session_headers:
        encoded.append((name.encode("latin-1"), value.encode("latin-1")))
        sets_cookie = sets_cookie or name.lower() == "set-cookie"
    encoded.extend(
        _plain_headers(session.accessed, session.transport, session.token is not None, sets_cookie)
    )
    return encoded


def merge_vary(headers: Headers, value: str) -> None:
    """Add ``value`` to the first ``Vary`` header (unless there or ``*``), or add the header."""
    for i, (k, v) in enumerate(headers):
        if k.lower() == "vary":
            existing = [p.strip().lower() for p in v.split(",")]
            if value.lower() not in existing and "*" not in existing:
                headers[i] = (k, f"{v}, {value}")
            return
    headers.append(("vary", value))


def replace_header(headers: Headers, name: str, value: str) -> None:
    """Drop every ``name`` header (any case) and append ``name: value``."""
    headers[:] = [(k, v) for k, v in headers if k.lower() != name]
    headers.append((name, value))


def secure_cookie_over_http(config: SessionConfig, scheme: str, sets_cookie: bool) -> bool:
    """True when a Secure cookie is being set on a plain-HTTP request (worth one warning)."""
    return sets_cookie and config.cookie.secure and scheme == "http"


# -- the CSRF form field ---------------------------------------------------------------------


def wants_form_token(request: RequestView, config: CSRFConfig) -> bool:
    """Whether the body must be read for the CSRF form field before opening the session."""
    if not config.enabled or not is_unsafe(request.method) or request.get("authorization"):
        return False
    if any(request.get(h) for h in config.header_names):
        return False
    content_type = (request.get("content-type") or "").split(";")[0].strip().lower()
    return content_type in FORM_CONTENT_TYPES


def form_field(body: bytes, field: str) -> str | None:
    """The first value of ``field`` in an urlencoded body; ``None`` if absent or undecodable."""
    try:
        values = parse_qs(body.decode("utf-8"), keep_blank_values=False, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return None
    found = values.get(field)
    return found[0] if found else None
