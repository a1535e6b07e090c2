"""Login and logout, usable from any integration (they only touch the :class:`Session`).

``login`` does on the session what Django's ``auth.login`` does: the id is regenerated (no
fixation), the CSRF token rotated, the auth time stamped, and the anonymous data (a cart) kept.
"""

from __future__ import annotations

from ._core.session import Session


def login(
    session: Session,
    user_id: str,
    *,
    remember: bool | None = None,
    credential: str | bytes | None = None,
) -> None:
    """Sign ``user_id`` in on this session.

    At commit the session gets a new id and secret (the old record is deleted), a new CSRF token
    and ``auth_time = now``; its data is kept. ``remember=True`` makes it a long-lived,
    server-side, revocable session (``remember_*`` timeouts) with a persistent cookie;
    ``remember=False`` an ordinary one. Left out, the session stays what it was: signing the same
    user in again (asking for the password again) keeps a remember-me session remember-me; any
    other sign-in is an ordinary session.

    ``credential`` (the user's password hash, say) binds the session to it: when the app loads
    the user and the middleware was given ``user_credential``, a session whose credential has
    changed since (a password change) is signed out at once. It closes the window in which a
    login that checked the old password finishes after the change ended the other sessions.

    The commit calls the manager's ``on_login`` hook (see :mod:`coatcheck.hooks`).
    """
    user_id = str(user_id)
    previous = session.user_id
    if previous != user_id and remember is None:
        remember = False  # another user's (or an anonymous) session: nothing is inherited
    if previous is not None and previous != user_id:
        # Another user signing in on this session (a shared computer): like Django, start
        # from an empty session, so nothing of the previous user's is handed over.
        session._forget_contents()
    session.user_id = user_id
    session._mark_authenticated(remember=remember, credential=credential)


def logout(session: Session) -> None:
    """End this session: the record is deleted at commit and the cookies are cleared.

    For a signed-in session the commit calls the manager's ``on_logout`` hook."""
    session.destroy()


def is_fresh(session: Session, max_age: float) -> bool:
    """True when the user fully authenticated within ``max_age`` seconds (for sensitive actions)."""
    auth_time = session.auth_time
    return auth_time is not None and session.now - auth_time <= max_age
