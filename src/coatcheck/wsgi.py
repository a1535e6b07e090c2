"""Pure WSGI session middleware: the sync twin of :mod:`coatcheck.asgi`, for any WSGI app.

For each request it opens the session (cookie or ``Authorization: Bearer``) with a
:class:`~coatcheck.manager.SessionManager`, puts it in ``environ["coatcheck.session"]``, runs the
app, and when the app calls ``start_response`` commits the session and adds its headers. Every
rule lives in the core (:mod:`coatcheck._core`); this module only moves data between the WSGI
environ, ``start_response`` and the manager.

Errors the middleware answers itself, as JSON (the same answers as the ASGI middleware):

- 400 ``invalid_request`` / 401 ``invalid_token`` for bad bearer credentials (RFC 6750);
- 403 ``csrf`` for a cross-site or token-less unsafe cookie request;
- 431 ``cookie_too_large`` for ``Cookie`` headers over 32 KiB (never a silent anonymous session);
- 503 ``store_unavailable`` with ``Retry-After`` when the store is down, also when the commit in
  ``start_response`` fails (the app's response is then replaced) -- never a 500, never a silent
  logout;
- 413 ``session_too_large`` when a sealed session would not fit in one cookie (the app's response
  is replaced the same way);
- any :class:`~coatcheck.errors.HTTPError` the app raises before calling ``start_response``, and a
  :class:`~coatcheck.errors.PasswordError` as 422 ``invalid_password``.

The CSRF form field is read from a urlencoded body only when it has a ``Content-Length`` of at most
:data:`~coatcheck._core.responses.MAX_FORM_BYTES`; the bytes read are put back as ``wsgi.input``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ._core.http import NO_STORE_KEY, RequestView, cookie_header_error
from ._core.lifecycle import clear_cookie_headers
from ._core.responses import (
    INSECURE_COOKIE_WARNING,
    MAX_FORM_BYTES,
    Headers,
    JSONAnswer,
    add_session_headers,
    app_error_answer,
    commit_error_answer,
    form_field,
    json_answer,
    replace_header,
    secure_cookie_over_http,
    unavailable_answer,
    wants_form_token,
)
from ._core.session import Session
from ._core.signin import UserCredential
from .errors import CoatcheckError, ConflictError, HTTPError, StoreUnavailableError
from .manager import SessionManager

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from _typeshed import OptExcInfo

__all__ = ["SessionMiddleware", "UserLoader", "request_view"]


UserLoader = Callable[[str], Any]
"""``user_loader(user_id)`` -> your user object, or ``None`` when it no longer exists."""

log = logging.getLogger("coatcheck")

# CGI puts these two headers in CONTENT_TYPE / CONTENT_LENGTH, without the HTTP_ prefix.
_CGI_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def request_view(environ: WSGIEnvironment) -> RequestView:
    """The parts of a WSGI request the core looks at.

    WSGI header values are already latin-1 ``str`` (PEP 3333), so bytes stay byte-exact.
    """
    headers: Headers = []
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue  # not CGI; trust only the server's CONTENT_* values
            headers.append((key[5:].replace("_", "-").lower(), value))
        elif key in _CGI_HEADERS and value:
            headers.append((_CGI_HEADERS[key], value))
    return RequestView(
        method=str(environ.get("REQUEST_METHOD") or "GET").upper(),
        scheme=str(environ.get("wsgi.url_scheme") or "http"),
        headers=headers,
        client_ip=str(environ.get("REMOTE_ADDR") or ""),
    )


class SessionMiddleware:
    """WSGI middleware giving every request a coatcheck session in ``environ``.

    ``user_loader`` and ``user_credential`` as for :class:`coatcheck.asgi.SessionMiddleware`
    (both sync here).
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        manager: SessionManager,
        user_loader: UserLoader | None = None,
        user_credential: UserCredential | None = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.user_loader = user_loader
        self.user_credential = user_credential
        self._warned_insecure = False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = request_view(environ)
        too_large = cookie_header_error(request)
        if too_large is not None:
            return _answer(
                start_response,
                json_answer(too_large.status_code, too_large.body, too_large.headers),
            )
        form_csrf: str | None = None
        if wants_form_token(request, self.manager.config.csrf):
            body = _read_form_body(environ)
            if body is not None:
                form_csrf = form_field(body, self.manager.config.csrf.form_field)

        try:
            opened = self.manager.open(request, form_csrf=form_csrf)
        except (StoreUnavailableError, ConflictError) as exc:
            return _answer(start_response, unavailable_answer(exc))

        extra = clear_cookie_headers(self.manager.config) if opened.clear_cookie else []
        if opened.error is not None:
            error = opened.error
            return _answer(
                start_response,
                json_answer(error.status_code, error.body, [*error.headers, *extra]),
            )

        session = opened.session
        environ["coatcheck.session"] = session
        environ["coatcheck.manager"] = self.manager
        environ["coatcheck.user_loader"] = self.user_loader
        environ["coatcheck.user_credential"] = self.user_credential
        exchange = _Exchange(self, environ, request.scheme, session, extra, start_response)
        try:
            result = self.app(environ, exchange.start_response)
        except CoatcheckError as exc:
            answer = app_error_answer(exc, extra)
            if answer is None or exchange.started:
                raise
            return _answer(start_response, answer)
        return exchange.body(result)

    def _warn_insecure(self, scheme: str, sets_cookie: bool) -> None:
        if self._warned_insecure:
            return
        if secure_cookie_over_http(self.manager.config, scheme, sets_cookie):
            self._warned_insecure = True
            log.warning(INSECURE_COOKIE_WARNING)


class _Exchange:
    """One request's response side: commits on the app's first ``start_response``."""

    def __init__(
        self,
        middleware: SessionMiddleware,
        environ: WSGIEnvironment,
        scheme: str,
        session: Session,
        extra: Headers,
        start_response: StartResponse,
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.scheme = scheme
        self.session = session
        self.extra = extra
        self.server_start_response = start_response
        self.session_headers: Headers | None = None
        self.started = False
        self.replacement: bytes | None = None
        """The body of the 503 sent instead of the app's response when the commit failed."""

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if self.replacement is not None:
            return _discard
        if self.session_headers is None:
            try:
                committed = self.middleware.manager.commit(self.session)
            except (StoreUnavailableError, ConflictError, HTTPError) as exc:
                answer = commit_error_answer(exc)
                self.started = True
                self.replacement = answer.body
                self.server_start_response(_status_line(answer.status), answer.headers)
                return _discard
            self.session_headers = [*self.extra, *committed.headers]
        # A second call (with exc_info, an error page before any body) gets the same headers;
        # the session is committed once.
        headers = list(headers)
        sets_cookie = add_session_headers(headers, self.session, self.session_headers)
        if self.environ.get(NO_STORE_KEY):
            # A bearer token in the body (issue_token): no cache may keep this response.
            replace_header(headers, "cache-control", "no-store")
        self.middleware._warn_insecure(self.scheme, sets_cookie)
        self.started = True
        if exc_info is not None:
            return self.server_start_response(status, headers, exc_info)
        return self.server_start_response(status, headers)

    def body(self, result: Iterable[bytes]) -> Iterable[bytes]:
        if self.replacement is not None:
            _close(result)
            return [self.replacement]
        if self.started:
            return result  # untouched, so wsgi.file_wrapper and len() keep working
        return _LateStartBody(self, result)

    def answer_error(self, exc: CoatcheckError) -> bytes | None:
        """Send the answer for an error raised before ``start_response``; ``None`` to re-raise."""
        answer = app_error_answer(exc, self.extra)
        if answer is None or self.started:
            return None
        self.started = True
        self.server_start_response(_status_line(answer.status), answer.headers)
        return answer.body


class _LateStartBody:
    """The body of an app that calls ``start_response`` while its iterable runs (a generator).

    The commit happens then, so a failed commit or an early coatcheck error must still replace
    what the app yields.
    """

    def __init__(self, exchange: _Exchange, result: Iterable[bytes]) -> None:
        self.exchange = exchange
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        exchange = self.exchange
        chunks = iter(self.result)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except CoatcheckError as exc:
                body = exchange.answer_error(exc)
                if body is None:
                    raise
                yield body
                return
            if exchange.replacement is not None:
                break
            yield chunk
        if exchange.replacement is not None:
            yield exchange.replacement

    def close(self) -> None:
        _close(self.result)


def _discard(data: bytes) -> None:
    """The ``write`` callable of a response that was replaced: the app's bytes go nowhere."""


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _answer(start_response: StartResponse, answer: JSONAnswer) -> list[bytes]:
    start_response(_status_line(answer.status), answer.headers)
    return [answer.body]


def _read_form_body(environ: WSGIEnvironment) -> bytes | None:
    """The request body, if its ``Content-Length`` is within bounds; ``wsgi.input`` re-wrapped.

    Without a ``Content-Length`` nothing is read (browsers always send one with a form), so the
    stream is left exactly as the server gave it.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    if not 0 <= length <= MAX_FORM_BYTES:
        return None
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break  # the client sent less than it announced; the app sees the same short body
        chunks.append(chunk)
        remaining -= len(chunk)
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    return body
