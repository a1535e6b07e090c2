"""CSRF protection for cookie-authenticated unsafe requests.

Two layers, in order:

1. **Fetch metadata / Origin.** An unsafe request whose ``Sec-Fetch-Site`` is ``cross-site`` or
   ``same-site``, or whose ``Origin`` is not this site's own (or a configured trusted origin), is
   refused before any token is looked at. Requests with neither header (curl, server-to-server) go
   on to the token check.
2. **Synchronizer token.** When the request carries a stored session, it must also present that
   session's token in the ``X-XSRF-TOKEN``/``X-CSRF-Token`` header or the ``_csrf`` form field,
   compared in constant time. Browsers get the token in a script-readable ``XSRF-TOKEN`` cookie.

Bearer requests are exempt: a browser never attaches an ``Authorization`` header on its own.
"""

from __future__ import annotations

import hmac
from html import escape

from ..errors import HTTPError
from .config import CSRFConfig
from .http import RequestView, is_unsafe


def hidden_input(field: str, token: str) -> str:
    """The hidden form field that carries the CSRF token, its name and value HTML-escaped (the
    integrations mark it safe for their templates)."""
    return f'<input type="hidden" name="{escape(field)}" value="{escape(token)}">'


def csrf_error(reason: str) -> HTTPError:
    return HTTPError(403, {"error": "csrf", "detail": reason})


def origin_problem(request: RequestView, config: CSRFConfig) -> str | None:
    """Why this unsafe request looks cross-site, or ``None`` when it does not."""
    site = request.get("sec-fetch-site")
    origin = request.get("origin")
    if origin is not None and origin in config.trusted_origins:
        return None
    if site is not None and site.strip().lower() in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site is {site.strip().lower()}"
    if origin is not None:
        host = request.get("host")
        if origin == "null" or host is None:
            return "opaque or unverifiable Origin"
        scheme = {"ws": "http", "wss": "https"}.get(request.scheme, request.scheme)
        if origin.lower() != f"{scheme}://{host}".lower():
            return "Origin does not match this site"
    return None


def presented_csrf_token(request: RequestView, config: CSRFConfig) -> str | None:
    for name in config.header_names:
        value = request.get(name)
        if value:
            return value.strip()
    return None


def token_matches(presented: str | None, expected: str) -> bool:
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("ascii"))


def needs_check(request: RequestView, transport: str | None, config: CSRFConfig) -> bool:
    return config.enabled and transport != "bearer" and is_unsafe(request.method)


def cross_site_error(request: RequestView, config: CSRFConfig, *, bearer: bool) -> HTTPError | None:
    """The 403 for a request that looks cross-site and could act with the visitor's cookies.

    Unsafe cookie requests are checked, and WebSocket handshakes too: a handshake is a GET, but it
    opens a channel that can act for the user, and browsers send it cross-site with cookies.
    Bearer requests and a disabled CSRF configuration are never refused here.
    """
    if bearer or not config.enabled:
        return None
    websocket = request.scheme in ("ws", "wss")
    if not websocket and not needs_check(request, "cookie", config):
        return None
    problem = origin_problem(request, config)
    return csrf_error(problem) if problem is not None else None
