"""Reading a request's token, client address and origin; the HTTP side of the core's rules.

Bearer rules follow RFC 6750: a malformed ``Authorization`` header is a 400 ``invalid_request``;
a well-formed but unknown, expired or revoked token is a 401 ``invalid_token``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import HTTPError
from .config import SessionConfig

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAX_AUTHORIZATION_BYTES = 4096


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of a request the core looks at. Header names are lower-case str."""

    method: str
    scheme: str
    headers: Sequence[tuple[str, str]]
    client_ip: str = ""

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @classmethod
    def from_asgi_headers(
        cls, method: str, scheme: str, raw: Iterable[tuple[bytes, bytes]], client_ip: str = ""
    ) -> RequestView:
        # latin-1 never fails and keeps bytes 1:1, so byte-exact matching stays byte-exact.
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        return cls(method=method.upper(), scheme=scheme, headers=headers, client_ip=client_ip)


@dataclass(frozen=True, slots=True)
class PresentedToken:
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


def presented_token(
    request: RequestView, config: SessionConfig, cookies: dict[str, list[str]]
) -> PresentedToken | None:
    """The token the request carries, or ``None`` for an anonymous request.

    ``cookies`` is the request's parsed ``Cookie`` headers (:func:`~.cookies.parse_cookies`).
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
    values = cookies.get(config.cookie.effective_name)
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


def is_unsafe(method: str) -> bool:
    return method.upper() not in SAFE_METHODS
