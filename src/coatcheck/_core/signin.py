"""The sign-in policy's answers, shared by every integration (no I/O).

- An anonymous request to an API answers 401 ``{"error": "unauthenticated"}``; over a bearer token
  it also carries the RFC 6750 challenge ``WWW-Authenticate: Bearer error="invalid_token"``.
- An anonymous request to a page answers 303 to the login page, whose URL carries the page as a
  safe, local ``next`` (:func:`coatcheck._core.redirects.login_redirect_url`: appended with ``&``
  when the login path already has a query).
- A signed-in user whose last full login is older than a sensitive action allows answers 401
  ``{"error": "reauthentication_required"}``.
"""

from __future__ import annotations

from ..errors import HTTPError
from .record import Transport
from .redirects import login_redirect_url

__all__ = ["bearer_challenge", "reauthentication_required", "unauthenticated"]


def bearer_challenge(transport: Transport) -> tuple[tuple[str, str], ...]:
    """The ``WWW-Authenticate`` header a bearer client gets with a 401, none for cookies."""
    if transport == "bearer":
        return (("www-authenticate", 'Bearer error="invalid_token"'),)
    return ()


def unauthenticated(
    transport: Transport, *, login_path: str | None = None, target: str | None = None
) -> HTTPError:
    """The answer for an anonymous request: a 303 to ``login_path`` with ``next=target`` for a
    page (``login_path`` given), else a 401 for an API."""
    if login_path is not None:
        location = login_redirect_url(login_path, target)
        return HTTPError(303, {"error": "unauthenticated"}, headers=(("location", location),))
    return HTTPError(401, {"error": "unauthenticated"}, headers=bearer_challenge(transport))


def reauthentication_required() -> HTTPError:
    """The answer for a sensitive action whose user must sign in again first."""
    return HTTPError(401, {"error": "reauthentication_required"})
