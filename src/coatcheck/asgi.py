"""Pure ASGI session middleware: usable under any ASGI framework.

For each HTTP request it opens the session (cookie or ``Authorization: Bearer``), puts it in
``scope["session"]`` (so ``request.session`` works in Starlette) and ``scope["coatcheck.session"]``,
runs the app, and on ``http.response.start`` commits the session and adds its headers. Every rule
lives in the core; this module only moves bytes.

Errors the middleware answers itself, as JSON:

- 400 ``invalid_request`` / 401 ``invalid_token`` for bad bearer credentials (RFC 6750);
- 403 ``csrf`` for a cross-site or token-less unsafe cookie request;
- 503 ``store_unavailable`` with ``Retry-After`` when the store is down or too slow — never a 500,
  and never a silent logout;
- any :class:`~coatcheck.errors.HTTPError` the app raises (``require_user`` uses this), and a
  :class:`~coatcheck.errors.PasswordError` as 422 ``invalid_password``.

A WebSocket handshake from another origin is refused (closed with 1008) before the app sees it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from ._core.http import RequestView, is_unsafe
from ._core.lifecycle import clear_cookie_headers
from ._core.session import Session
from .errors import ConflictError, HTTPError, PasswordError, StoreUnavailableError
from .manager import AsyncSessionManager

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserLoader = Callable[[str], Awaitable[Any]]

log = logging.getLogger("coatcheck")

MAX_FORM_BYTES = 1 << 20
_FORM_TYPES = (b"application/x-www-form-urlencoded",)


def _json_response_parts(
    status: int, body: dict[str, Any], headers: list[tuple[str, str]]
) -> tuple[Message, Message]:
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
    ]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    return (
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": payload},
    )


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[str, str]]
) -> None:
    start, payload = _json_response_parts(status, body, headers)
    await send(start)
    await send(payload)


def unavailable_body(
    error: StoreUnavailableError | ConflictError,
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    retry_after = getattr(error, "retry_after", 5)
    return {"error": "store_unavailable"}, [("retry-after", str(retry_after))]


class SessionMiddleware:
    """ASGI middleware giving every HTTP request a coatcheck session."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        manager: AsyncSessionManager,
        user_loader: UserLoader | None = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.user_loader = user_loader
        self._warned_insecure = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        request = RequestView.from_asgi_headers(
            scope.get("method", "GET"),
            scope.get("scheme", "http"),
            scope.get("headers", []),
            client[0] if client else "",
        )
        form_csrf: str | None = None
        if scope["type"] == "http" and self._wants_form_token(request):
            body, too_big = await _read_body(receive)
            if not too_big:
                form_csrf = _form_field(body, self.manager.config.csrf.form_field)
            receive = _replay(body, receive)

        try:
            opened = await self.manager.open(request, form_csrf=form_csrf)
        except (StoreUnavailableError, ConflictError) as exc:
            if scope["type"] == "http":
                body_json, headers = unavailable_body(exc)
                await send_json(send, 503, body_json, headers)
            else:
                await send({"type": "websocket.close", "code": 1013})
            return

        session = opened.session
        extra: list[tuple[str, str]] = (
            clear_cookie_headers(self.manager.config) if opened.clear_cookie else []
        )
        if opened.error is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_json(
                send, opened.error.status_code, opened.error.body, [*opened.error.headers, *extra]
            )
            return

        scope["session"] = session
        scope["coatcheck.session"] = session
        scope["coatcheck.manager"] = self.manager
        scope["coatcheck.user_loader"] = self.user_loader
        if scope["type"] == "websocket":
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
                except (StoreUnavailableError, ConflictError) as exc:
                    replaced = True
                    body_json, retry = unavailable_body(exc)
                    await send_json(send, 503, body_json, retry)
                    return
                raw_headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                self._add_headers(scope, session, raw_headers, [*extra, *committed.headers])
                message["headers"] = raw_headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except HTTPError as error:
            if started:
                raise
            await send_json(send, error.status_code, error.body, [*error.headers, *extra])
        except PasswordError as error:
            if started:
                raise
            refused = {"error": "invalid_password", "message": str(error)}
            await send_json(send, 422, refused, extra)
        except (StoreUnavailableError, ConflictError) as exc:
            if started:
                raise
            body_json, headers = unavailable_body(exc)
            await send_json(send, 503, body_json, headers)

    def _wants_form_token(self, request: RequestView) -> bool:
        config = self.manager.config.csrf
        if not config.enabled or not is_unsafe(request.method) or request.get("authorization"):
            return False
        if any(request.get(h) for h in config.header_names):
            return False
        content_type = (request.get("content-type") or "").split(";")[0].strip().lower()
        return content_type.encode() in _FORM_TYPES

    def _add_headers(
        self,
        scope: Scope,
        session: Session,
        headers: list[tuple[bytes, bytes]],
        session_headers: list[tuple[str, str]],
    ) -> None:
        sets_cookie = False
        for name, value in session_headers:
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
            sets_cookie = sets_cookie or name == "set-cookie"
        if not (session.accessed or sets_cookie or session.token):
            return
        vary = "Authorization" if session.transport == "bearer" else "Cookie"
        _merge_vary(headers, vary)
        if sets_cookie or session.token is not None:
            _replace_header(headers, b"cache-control", b"no-store")
        elif not any(k.lower() == b"cache-control" for k, _ in headers):
            headers.append((b"cache-control", b"private, no-store"))
        insecure = self.manager.config.cookie.secure and scope.get("scheme") == "http"
        if sets_cookie and insecure and not self._warned_insecure:
            self._warned_insecure = True
            log.warning(
                "coatcheck: setting a Secure cookie over plain HTTP; browsers other than on "
                "localhost will drop it. Serve over HTTPS (or, in development only, "
                "CookieConfig(secure=False))."
            )


def _merge_vary(headers: list[tuple[bytes, bytes]], value: str) -> None:
    for i, (k, v) in enumerate(headers):
        if k.lower() == b"vary":
            existing = [p.strip().lower() for p in v.decode("latin-1").split(",")]
            if value.lower() not in existing and "*" not in existing:
                headers[i] = (k, v + b", " + value.encode())
            return
    headers.append((b"vary", value.encode()))


def _replace_header(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    headers[:] = [(k, v) for k, v in headers if k.lower() != name]
    headers.append((name, value))


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    too_big = False
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            too_big = True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), too_big


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _form_field(body: bytes, field: str) -> str | None:
    try:
        values = parse_qs(body.decode("utf-8"), keep_blank_values=False, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return None
    found = values.get(field)
    return found[0] if found else None
