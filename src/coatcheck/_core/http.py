"""Reading a request's token, client address, origin and JSON body; the HTTP side of the core.

Bearer rules follow RFC 6750: a malformed ``Authorization`` header is a 400 ``invalid_request``;
a well-formed but unknown, expired or revoked token is a 401 ``invalid_token``.

JSON bodies (:func:`json_body_headers_error`, :func:`parse_json_object`; the integrations'
``read_json`` stream them): only ``application/json`` (or ``+json``) is read, else 415; a
``Content-Length`` over the limit is refused before any byte is read, and a body that grows past
the limit while streaming is refused as soon as it does (413); malformed JSON, nesting deeper than
``max_depth``, lone surrogates anywhere (they cannot be encoded, so they would fail later, in a
store or a response) and anything but an object give 422 ``invalid_input``. No input gives a 500.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..errors import HTTPError
from .config import SessionConfig
from .cookies import MAX_COOKIE_HEADER_BYTES

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAX_AUTHORIZATION_BYTES = 4096
NO_STORE_KEY = "coatcheck.no_store"
"""Set in the ASGI scope or WSGI environ by helpers that put a bearer token in the response body
(``issue_token``); the middleware then sends the response with ``Cache-Control: no-store``,
whatever the app set."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of a request the core looks at. Header names are lower-case str.

    Headers are indexed by name once, when the view is built, so each lookup is a dict access.
    """

    method: str
    scheme: str
    headers: Sequence[tuple[str, str]]
    client_ip: str = ""
    _index: dict[str, list[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[str]] = {}
        for name, value in self.headers:
            if name in index:
                index[name].append(value)
            else:
                index[name] = [value]
        object.__setattr__(self, "_index", index)

    def get_all(self, name: str) -> list[str]:
        return self._index.get(name, [])

    def get(self, name: str) -> str | None:
        values = self._index.get(name)
        return values[0] if values else None

    @classmethod
    def from_asgi_headers(
        cls, method: str, scheme: str, raw: Iterable[tuple[bytes, bytes]], client_ip: str = ""
    ) -> RequestView:
        # latin-1 never fails and keeps bytes 1:1, so byte-exact matching stays byte-exact.
        # Headers and index are built in one pass, and the view without a second one.
        headers: list[tuple[str, str]] = []
        index: dict[str, list[str]] = {}
        for k, v in raw:
            # ASGI names are lower-case already: lowered only when they are not.
            name = (k if k.islower() else k.lower()).decode("latin-1")
            value = v.decode("latin-1")
            headers.append((name, value))
            values = index.get(name)
            if values is None:
                index[name] = [value]
            else:
                values.append(value)
        view = object.__new__(cls)
        # The slots' own setters: what object.__setattr__ ends in, without looking them up.
        _SET_METHOD(view, method.upper())
        _SET_SCHEME(view, scheme)
        _SET_HEADERS(view, headers)
        _SET_CLIENT_IP(view, client_ip)
        _SET_INDEX(view, index)
        return view


_SLOTS: Any = vars(RequestView)  # the slots' member descriptors
_SET_METHOD = _SLOTS["method"].__set__
_SET_SCHEME = _SLOTS["scheme"].__set__
_SET_HEADERS = _SLOTS["headers"].__set__
_SET_CLIENT_IP = _SLOTS["client_ip"].__set__
_SET_INDEX = _SLOTS["_index"].__set__


class PresentedToken(NamedTuple):
    # A named tuple: made on every request that carries a token, at a third of a frozen
    # dataclass' cost.
    transport: Literal["cookie", "bearer"]
    values: tuple[str, ...]
    """Candidate token strings, in order (several Cookie headers may carry several)."""


def invalid_token_error(description: str = "The access token is invalid or expired") -> HTTPError:
    return HTTPError(
        401,
        {"error": "invalid_token"},
        headers=(
            (
                "www-authenticate",
                f'Bearer error="invalid_token", error_description="{description}"',
            ),
        ),
    )


def invalid_request_error() -> HTTPError:
    return HTTPError(
        400,
        {"error": "invalid_request"},
        headers=(("www-authenticate", 'Bearer error="invalid_request"'),),
    )


def cookie_header_error(request: RequestView) -> HTTPError | None:
    """A 431 for a request whose ``Cookie`` headers exceed what coatcheck reads, else ``None``.

    Refusing is the only safe answer: reading part of the header could miss the session cookie,
    and a request without it would run anonymous and could replace the live session's cookie.
    """
    total = 0
    for value in request.get_all("cookie"):
        total += len(value)
    if total <= MAX_COOKIE_HEADER_BYTES:
        return None
    return HTTPError(
        431,
        {
            "error": "cookie_too_large",
            "message": f"the Cookie header is over {MAX_COOKIE_HEADER_BYTES} bytes; "
            "clear this site's cookies",
        },
    )


def presented_token(
    request: RequestView,
    config: SessionConfig,
    cookies: dict[str, list[str]],
    cookie_name: str | None = None,
) -> PresentedToken | None:
    """The token the request carries, or ``None`` for an anonymous request.

    ``cookies`` is the request's parsed ``Cookie`` headers (:func:`~.cookies.parse_cookies`);
    ``cookie_name`` the session cookie's (``config.cookie.effective_name``, when not given).
    Raises :class:`HTTPError` 400 for an ``Authorization`` header that is not a well-formed
    ``Bearer`` credential. Other schemes (``Basic``...) are left to the application.
    """
    auths = request.get_all("authorization")
    if config.bearer and auths:
        if len(auths) > 1:
            raise invalid_request_error()
        auth = auths[0]
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer":
            # RFC 6750 2.1: b64token, one space, nothing else.
            if (
                len(auth) > MAX_AUTHORIZATION_BYTES
                or not credential
                or any(c.isspace() or not c.isprintable() for c in credential)
                or not credential.isascii()
            ):
                raise invalid_request_error()
            return PresentedToken("bearer", (credential,))
        if not scheme or any(not c.isalnum() and c not in "-_" for c in scheme):
            raise invalid_request_error()
    values = cookies.get(cookie_name or config.cookie.effective_name)
    if values:
        return PresentedToken("cookie", tuple(values[:4]))
    return None


def client_address(request: RequestView, trusted_proxies: Sequence[str]) -> str:
    """The client's IP: the socket peer, unless that peer is a trusted proxy.

    With trusted proxies, ``X-Forwarded-For`` is read right to left and the first address that is
    not itself a trusted proxy wins; a spoofed left-most entry therefore changes nothing.
    """
    peer = request.client_ip
    if not trusted_proxies or not _in_networks(peer, trusted_proxies):
        return peer
    hops: list[str] = []
    for header in request.get_all("x-forwarded-for"):
        hops.extend(h.strip() for h in header.split(","))
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not _in_networks(hop, trusted_proxies):
            return hop
    return peer


def _in_networks(address: str, networks: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def _accepted(accept: str) -> Iterable[tuple[str, float]]:
    """``(media type, q)`` for each range of an ``Accept`` header; a malformed q counts as 0."""
    for part in accept.split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0
        yield media.strip().lower(), q


def wants_page(request: RequestView) -> bool:
    """Whether a request is a browser's page request rather than an API call.

    The rule: a request without an ``Authorization`` header whose ``Accept`` names HTML
    (``text/html`` or ``application/xhtml+xml``) with a weight no lower than any JSON type's.
    Browsers send ``text/html`` first for every navigation and form submission; ``fetch()``,
    curl, httpx and test clients send ``*/*`` or nothing, and API clients ``application/json``,
    so they all count as APIs (wildcards say nothing about HTML).
    """
    if request.get("authorization"):
        return False
    html = json_ = 0.0
    for accept in request.get_all("accept"):
        for media, q in _accepted(accept):
            if media in _HTML_TYPES:
                html = max(html, q)
            elif media == "application/json" or media.endswith("+json"):
                json_ = max(json_, q)
    return html > 0 and html >= json_


def is_unsafe(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


# -- JSON bodies ----------------------------------------------------------------------------

MAX_JSON_BYTES = 64 * 1024
"""The default body limit of the integrations' ``read_json`` (64 KiB)."""
MAX_JSON_DEPTH = 32
"""The default nesting limit of ``read_json``: deep enough for any form, far from recursion."""

# A JSON string, escapes included; the alternatives are disjoint, so matching is linear.
_JSON_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def invalid_input(message: str) -> HTTPError:
    """The 422 ``invalid_input`` answer for a body the application cannot use."""
    return HTTPError(422, {"error": "invalid_input", "message": message})


def json_body_headers_error(
    content_type: str | None, content_length: str | None, max_bytes: int
) -> HTTPError | None:
    """The answer for a JSON body refused on its headers alone (415, 413, 400), else ``None``."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return HTTPError(
            415,
            {"error": "unsupported_media_type", "message": "send the body as application/json"},
        )
    if content_length is not None:
        if not content_length.strip().isdigit():
            return HTTPError(400, {"error": "invalid_request", "message": "bad Content-Length"})
        if int(content_length) > max_bytes:
            return body_too_large(max_bytes)
    return None


def body_too_large(max_bytes: int) -> HTTPError:
    """The 413 answer for a body over ``max_bytes``."""
    return HTTPError(
        413, {"error": "too_large", "message": f"the body is larger than {max_bytes} bytes"}
    )


def body_incomplete() -> HTTPError:
    """The answer for a body whose client went away before sending all of it (nobody reads it:
    it ends the request without a 500 and without an error logged for a client's hang-up)."""
    return HTTPError(
        400, {"error": "incomplete_body", "message": "the client left before the body ended"}
    )


def parse_json_object(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object from ``raw``, or a 422 :class:`HTTPError`; never another exception."""
    if _too_deep(raw, max_depth):
        raise invalid_input(f"the body nests deeper than {max_depth} levels")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
        # A lone surrogate (\ud800) decodes fine but cannot be encoded again: find it now.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise invalid_input("the body must be a JSON object of valid text") from None
    if not isinstance(body, dict):
        raise invalid_input("the body must be a JSON object")
    return body


def _too_deep(raw: bytes, max_depth: int) -> bool:
    # Strings may hold brackets: blank them, then follow the brackets alone.
    brackets = _JSON_STRING_RE.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
