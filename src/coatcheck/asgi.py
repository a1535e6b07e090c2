"""Pure ASGI session middleware: usable under any ASGI framework.

For each HTTP request it opens the session (cookie or ``Authorization: Bearer``), puts it in
``scope["session"]`` (so ``request.session`` works in Starlette) and ``scope["coatcheck.session"]``,
runs the app, and on ``http.response.start`` commits the session and adds its headers. Every rule
lives in the core; this module only moves bytes.

Errors the middleware answers itself, as JSON:

- 400 ``invalid_request`` / 401 ``invalid_token`` for bad bearer credentials (RFC 6750);
- 403 ``csrf`` for a cross-site or token-less unsafe cookie request;
- 431 ``cookie_too_large`` for ``Cookie`` headers over 32 KiB (never a silent anonymous session);
- 503 ``store_unavailable`` with ``Retry-After`` when the store is down or too slow — never a 500,
  and never a silent logout;
- 413 ``session_too_large`` when a sealed session would not fit in one cookie;
- any :class:`~coatcheck.errors.HTTPError` the app raises (``require_user`` uses this), and a
  :class:`~coatcheck.errors.PasswordError` as 422 ``invalid_password``.

With ``error_renderer(scope, error)``, a browser's page request (``Accept`` prefers ``text/html``,
no ``Authorization``) gets the HTML that function returns for each of these refusals instead,
under the same status and headers; API requests keep the JSON. A redirect stays a redirect, and a
renderer that returns ``None`` or raises (logged) leaves the JSON answer.

A WebSocket handshake from another origin is refused (closed with 1008) before the app sees it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._core.http import NO_STORE_KEY, SAFE_METHODS, RequestView, cookie_header_error
from ._core.lifecycle import clear_cookie_headers
from ._core.responses import (
    INSECURE_COOKIE_WARNING,
    MAX_FORM_BYTES,
    Answer,
    Refusals,
    add_session_headers,
    form_field,
    plain_session_headers,
    replace_header,
    secure_cookie_over_http,
    wants_form_token,
)
from ._core.session import Session
from ._core.signin import UserCredential
from .errors import CoatcheckError, ConflictError, HTTPError, StoreUnavailableError
from .manager import AsyncSessionManager

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserLoader = Callable[[str], Awaitable[Any]]
ErrorRenderer = Callable[[Scope, HTTPError], "str | None"]
"""``error_renderer(scope, error)`` -> the HTML page for a refused page request, or ``None`` for
the JSON answer. Sync (templates render synchronously); it gets the request's ASGI scope
(``starlette.requests.Request(scope)`` reads it) and the :class:`~coatcheck.errors.HTTPError`
being answered (``status_code``, ``body["error"]``: ``"csrf"``, ``"unauthenticated"``...)."""

log = logging.getLogger("coatcheck")
_REWRITTEN = frozenset({b"vary", b"cache-control"})


async def send_answer(send: Send, answer: Answer) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


class SessionMiddleware:
    """ASGI middleware giving every HTTP request a coatcheck session.

    ``user_loader(user_id)`` (async) gives the user object the integrations' ``current_user``
    returns. ``user_credential(user)`` (sync) gives the credential sessions were bound to at login
    (``login(..., credential=user.password_hash)``): a session whose credential changed since is
    ended when its user is loaded. ``error_renderer(scope, error)`` (sync) renders HTML pages for
    the refusals of browsers' page requests (see :data:`ErrorRenderer`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        manager: AsyncSessionManager,
        user_loader: UserLoader | None = None,
        user_credential: UserCredential | None = None,
        error_renderer: ErrorRenderer | None = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.user_loader = user_loader
        self.user_credential = user_credential
        self.error_renderer = error_renderer
        self._warned_insecure = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":  # lifespan and anything newer: not ours
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        request = RequestView.from_asgi_headers(
            scope.get("method", "GET"),
            scope.get("scheme", "http"),
            scope.get("headers", []),
            client[0] if client else "",
        )
        render = (
            functools.partial(self.error_renderer, scope)
            if self.error_renderer is not None and kind == "http"
            else None
        )
        too_large = cookie_header_error(request)
        if too_large is not None:
            if kind == "http":
                await send_answer(send, Refusals(request, render).answer(too_large))
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        form_csrf: str | None = None
        # A safe method never carries a form token to read (wants_form_token's own first exit).
        if (
            kind == "http"
            and request.method not in SAFE_METHODS
            and wants_form_token(request, self.manager.config.csrf)
        ):
            body, ended, pending = await _read_form(receive)
            if ended and len(body) <= MAX_FORM_BYTES:
                form_csrf = form_field(body, self.manager.config.csrf.form_field)
            receive = _replay(body, ended, pending, receive)

        try:
            opened = await self.manager.open(request, form_csrf=form_csrf)
        except (StoreUnavailableError, ConflictError) as exc:
            if kind == "http":
                await send_answer(send, Refusals(request, render).unavailable(exc))
            else:
                await send({"type": "websocket.close", "code": 1013})
            return

        session = opened.session
        extra: list[tuple[str, str]] = (
            clear_cookie_headers(self.manager.config) if opened.clear_cookie else []
        )
        if opened.error is not None:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_answer(send, Refusals(request, render).answer(opened.error, extra))
            return

        scope["session"] = session
        scope["coatcheck.session"] = session
        scope["coatcheck.manager"] = self.manager
        scope["coatcheck.user_loader"] = self.user_loader
        scope["coatcheck.user_credential"] = self.user_credential
        if kind == "websocket":
            await self.app(scope, receive, send)  # read-only: a websocket has no response headers
            return

        started = False
        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                try:
                    committed = await self.manager.commit(session)
                except (StoreUnavailableError, ConflictError, HTTPError) as exc:
                    replaced = True
                    await send_answer(send, Refusals(request, render).unavailable(exc))
                    return
                raw_headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                ours = [*extra, *committed.headers] if extra else committed.headers
                self._add_headers(scope, session, raw_headers, ours)
                message["headers"] = raw_headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except CoatcheckError as exc:
            answer = Refusals(request, render).app_error(exc, extra)
            if answer is None or started:
                raise
            await send_answer(send, answer)

    def _add_headers(
        self,
        scope: Scope,
        session: Session,
        headers: list[tuple[bytes, bytes]],
        session_headers: list[tuple[str, str]],
    ) -> None:
        for name, _ in headers:
            # ASGI header names are lower-case; only another spelling needs lowering first.
            if name in _REWRITTEN or (not name.islower() and name.lower() in _REWRITTEN):
                break
        else:
            if not scope.get(NO_STORE_KEY):
                # Nothing of the app's to rewrite: ours are appended, none is decoded.
                headers.extend(plain_session_headers(session, session_headers))
                if session_headers and not self._warned_insecure:
                    sets_cookie = any(n.lower() == "set-cookie" for n, _ in session_headers)
                    self._warn_if_insecure(scope, sets_cookie)
                return
        # Only the headers the session rules read or rewrite (Vary, Cache-Control) are decoded;
        # latin-1 both ways is lossless, so the app's header bytes come back unchanged.
        kept: list[tuple[bytes, bytes]] = []
        text: list[tuple[str, str]] = []
        for name, value in headers:
            if name in _REWRITTEN or (not name.islower() and name.lower() in _REWRITTEN):
                text.append((name.decode("latin-1"), value.decode("latin-1")))
            else:
                kept.append((name, value))
        sets_cookie = add_session_headers(text, session, session_headers)
        if scope.get(NO_STORE_KEY):
            # A bearer token in the body (issue_token): no cache may keep this response.
            replace_header(text, "cache-control", "no-store")
        kept.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in text)
        headers[:] = kept
        self._warn_if_insecure(scope, sets_cookie)

    def _warn_if_insecure(self, scope: Scope, sets_cookie: bool) -> None:
        if self._warned_insecure:
            return
        if secure_cookie_over_http(self.manager.config, scope.get("scheme", "http"), sets_cookie):
            self._warned_insecure = True
            log.warning(INSECURE_COOKIE_WARNING)


async def _read_form(receive: Receive) -> tuple[bytes, bool, Message | None]:
    """Buffer the request body, but never more than ``MAX_FORM_BYTES``.

    Returns the bytes read, whether the body ended there, and a non-body message met on the way
    (``http.disconnect``), so that :func:`_replay` can hand the app exactly what it would have
    received. A larger body streams on to the app unread; one that ends in the chunk that takes
    it past the limit has ended all the same (no ``more_body`` is promised that never comes).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False, message
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True, None
        if size > MAX_FORM_BYTES:
            return b"".join(chunks), False, None


def _replay(body: bytes, ended: bool, pending: Message | None, receive: Receive) -> Receive:
    queue: list[Message] = [{"type": "http.request", "body": body, "more_body": not ended}]
    if pending is not None:
        queue.append(pending)

    async def replay() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replay
