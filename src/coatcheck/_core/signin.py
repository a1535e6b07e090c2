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

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from ..errors import HTTPError
from .record import Transport
from .redirects import login_redirect_url
from .session import Session

__all__ = [
    "bearer_challenge",
    "credential_fingerprint",
    "credential_matches",
    "reauthentication_required",
    "still_signed_in",
    "unauthenticated",
]


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


# -- sessions bound to a credential -----------------------------------------------------------
#
# A session signed in with ``login(session, user_id, credential=...)`` (the user's password hash,
# say) keeps a fingerprint of that credential. When the app later loads the user, the
# integrations compare it with the user's credential now: after a password change every session
# signed in with the old password stops working at once -- including one whose login checked the
# old password while the change was being made and committed just after it (the "end the other
# sessions" step cannot see a session that does not exist yet). Django does the same with its
# session auth hash. The fingerprint is an HMAC, so neither the credential nor anything that
# helps guess it is stored in the session.


def credential_fingerprint(secret: str, user_id: str, credential: str | bytes) -> str:
    """The fingerprint kept in a session signed in with ``credential``."""
    raw = credential.encode("utf-8", "surrogatepass") if isinstance(credential, str) else credential
    message = b"coatcheck credential\x00" + user_id.encode("utf-8", "surrogatepass") + b"\x00" + raw
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def credential_matches(
    secrets: tuple[str, ...], user_id: str, fingerprint: str, credential: str | bytes
) -> bool:
    """Whether a session's fingerprint (empty: not bound) still matches the user's credential,
    under any of the configured secrets (a rotated secret does not sign everyone out)."""
    if not fingerprint:
        return True
    return any(
        hmac.compare_digest(credential_fingerprint(secret, user_id, credential), fingerprint)
        for secret in secrets
    )


UserCredential = Callable[[Any], "str | bytes | None"]
"""``user_credential(user)`` -> the credential a session of ``user`` is bound to now (the
password hash, say); ``None`` when the user has none (such a bound session is ended)."""


def still_signed_in(
    session: Session, user: Any, user_credential: UserCredential | None, secrets: tuple[str, ...]
) -> bool:
    """Whether the loaded ``user`` may use ``session``: always, unless the session is bound to a
    credential that the user no longer has. Then the session is ended (deleted at commit, its
    cookies cleared) and the caller treats the request as anonymous.

    A session that signs in or is re-bound in this very request (``session._credential`` set) is
    checked at its next request: its fingerprint is written at this request's commit.
    """
    fingerprint = session.auth_hash
    if user_credential is None or not fingerprint or session._credential is not None:
        return True
    user_id = session.user_id
    if user_id is None or session._user_changed:
        return True
    credential = user_credential(user)
    if credential is not None:
        newest, *older = reversed(secrets)
        if credential_matches((newest,), user_id, fingerprint, credential):
            return True
        if credential_matches(tuple(older), user_id, fingerprint, credential):
            # Made under a secret being rotated out: fingerprinted again under the newest one
            # (like a re-sealed cookie), so removing the old secret later keeps this session.
            session.bind_credential(credential)
            return True
    session.destroy()
    return False
