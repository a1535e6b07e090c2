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
- A response that read the session, sets a cookie or carries a fresh token varies on ``Cookie``
  (or ``Authorization`` for bearer sessions). One that sets a token is ``no-store``, replacing the
  app's own ``Cache-Control``; otherwise ``private, no-store`` unless the app chose a policy.
- The CSRF form field is looked for only in urlencoded bodies of unsafe cookie requests that do
  not already carry the token in a header, and only up to :data:`MAX_FORM_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from ..errors import ConflictError, HTTPError, PasswordError, StoreUnavailableError
from .config import CSRFConfig, SessionConfig
from .http import RequestView, is_unsafe
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


@dataclass(frozen=True, slots=True)
class JSONAnswer:
    """A complete response the middleware sends instead of the app's."""

    status: int
    headers: Headers
    body: bytes


# -- error answers --------------------------------------------------------------------------


def json_answer(
    status: int, body: dict[str, Any], headers: Sequence[tuple[str, str]]
) -> JSONAnswer:
    """A JSON response: content type, length and ``no-store`` first, then ``headers``."""
    payload = json.dumps(body).encode()
    return JSONAnswer(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
            *headers,
        ],
        payload,
    )


def unavailable_body(
    error: StoreUnavailableError | ConflictError,
) -> tuple[dict[str, str], Headers]:
    """The 503 body and its ``Retry-After`` header for a store outage or a lost write race."""
    retry_after = getattr(error, "retry_after", DEFAULT_RETRY_AFTER)
    return {"error": "store_unavailable"}, [("retry-after", str(retry_after))]


def unavailable_answer(error: StoreUnavailableError | ConflictError) -> JSONAnswer:
    body, headers = unavailable_body(error)
    return json_answer(503, body, headers)


def commit_error_answer(error: StoreUnavailableError | ConflictError | HTTPError) -> JSONAnswer:
    """The answer sent instead of the app's when committing the session failed: 503 for an
    outage or a lost race, or the error's own status (413 for a sealed session too large)."""
    if isinstance(error, HTTPError):
        return json_answer(error.status_code, error.body, error.headers)
    return unavailable_answer(error)


def app_error_answer(error: BaseException, extra: Sequence[tuple[str, str]]) -> JSONAnswer | None:
    """The answer for an exception the app raised before responding, or ``None`` to re-raise.

    ``extra`` are headers the middleware owes the client anyway (clearing a bad cookie); they go
    on every answer except the 503, which says nothing about the session.
    """
    if isinstance(error, HTTPError):
        return json_answer(error.status_code, error.body, [*error.headers, *extra])
    if isinstance(error, PasswordError):
        return json_answer(422, {"error": "invalid_password", "message": str(error)}, extra)
    if isinstance(error, StoreUnavailableError | ConflictError):
        return unavailable_answer(error)
    return None


# -- headers on the app's response -----------------------------------------------------------


def add_session_headers(
    headers: Headers, session: Session, session_headers: Sequence[tuple[str, str]]
) -> bool:
    """Append the session's headers to ``headers`` (in place) with ``Vary`` and ``Cache-Control``.

    Returns whether a cookie is being set.
    """
    sets_cookie = False
    for name, value in session_headers:
        headers.append((name, value))
        sets_cookie = sets_cookie or name.lower() == "set-cookie"
    if not (session.accessed or sets_cookie or session.token):
        return sets_cookie
    merge_vary(headers, "Authorization" if session.transport == "bearer" else "Cookie")
    if sets_cookie or session.token is not None:
        replace_header(headers, "cache-control", "no-store")
    elif not any(k.lower() == "cache-control" for k, _ in headers):
        headers.append(("cache-control", "private, no-store"))
    return sets_cookie


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
