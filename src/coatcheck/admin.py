"""Session admin for apps and operators: list, revoke one, revoke all, password change, purge.

``AsyncSessionAdmin`` and ``SessionAdmin`` run the flows of :mod:`coatcheck._core.admin` through a
manager, so they share its store, configuration, clock and error handling. On a ``sealed://``
store they run the sealed flows instead: revoking works through the revocation record (when one is
configured), and listing and counting raise :class:`~coatcheck.errors.NotSupportedError` (501),
because no list of the sessions sealed into browsers' cookies exists.

Every session ended here is reported to the manager's ``on_revoke`` hook (see
:mod:`coatcheck.hooks`), after the store change.
"""

from __future__ import annotations

import logging

from ._core import admin as flows
from ._core.admin import SessionInfo
from ._core.events import RevokeReason, SessionEvent, with_events
from ._core.ops import Flow
from ._core.session import Session
from ._core.stats import SessionStats
from .manager import AsyncSessionManager, SessionManager

__all__ = ["AsyncSessionAdmin", "SessionAdmin", "SessionInfo", "SessionStats"]

log = logging.getLogger("coatcheck")

Reported = Flow[tuple[int, list[SessionEvent]]]


class _Flows:
    """The admin flows for a manager's store: the server-store ones or the sealed ones. Each
    flow that ends sessions returns its events too, for the manager to fire the hooks."""

    def __init__(self, manager: AsyncSessionManager | SessionManager) -> None:
        self.manager = manager

    @property
    def can_revoke(self) -> bool:
        sealed = self.manager.sealed
        return sealed is None or sealed.revocations

    def sessions_of(self, user_id: str) -> Flow[list[SessionInfo]]:
        return flows.sessions_of(user_id, self.manager.config, self.manager.clock())

    def revoke(self, session_id: str, owner: str | None) -> Flow[tuple[bool, list[SessionEvent]]]:
        sealed, now = self.manager.sealed, self.manager.clock()
        if sealed is None:
            return flows.revoke(session_id, owner=owner, now=now)

        def ended(revoked: bool) -> list[SessionEvent]:
            event = SessionEvent(reason="revoke", session_id=session_id, user_id=owner, at=now)
            return [event] if revoked else []

        return with_events(sealed.revoke(session_id, owner=owner, now=now), ended)

    def revoke_all(self, user_id: str, keep: str | None, reason: RevokeReason) -> Reported:
        sealed, now = self.manager.sealed, self.manager.clock()
        if sealed is None:
            config = self.manager.config
            return flows.revoke_all(user_id, keep=keep, config=config, now=now, reason=reason)
        # No list of sealed sessions exists: one event for all of them, their number unknown.
        event = SessionEvent(reason=reason, session_id=None, user_id=user_id, at=now, count=None)
        return with_events(sealed.revoke_all(user_id, keep=keep, now=now), lambda _: [event])

    def purge_expired(self, batch: int, max_batches: int | None) -> Reported:
        purge = flows.purge_expired(self.manager.clock(), batch, max_batches)
        if self.manager.sealed is not None:  # only revocation records: no session ended
            return with_events(_value(purge), lambda _: [])
        return purge

    def password_changed(self, session: Session, credential: str | bytes | None = None) -> Reported:
        user_id = session.user_id
        if user_id is None:
            raise ValueError("password_changed needs a signed-in session")
        return self._password_changed(session, user_id, credential)

    def _password_changed(
        self, session: Session, user_id: str, credential: str | bytes | None
    ) -> Reported:
        ended: tuple[int, list[SessionEvent]] = (0, [])
        if self.can_revoke:
            ended = yield from self.revoke_all(user_id, session.id, "password-change")
        else:
            log.warning(
                "coatcheck: the password of user %r changed, but sealed sessions without a "
                "revocation record cannot be ended: copies of their cookies live until they "
                "expire",
                user_id,
            )
        # Rotated after the others ended (not before: if ending them fails, nothing changes).
        # A plain regenerate keeps what the session was: remember-me, auth time, deadlines.
        session.regenerate()
        session.rotate_csrf()
        if credential is not None:
            session.bind_credential(credential)
        return ended


def _value(flow: Reported) -> Flow[int]:
    count, _ = yield from flow
    return count


class AsyncSessionAdmin:
    """List, revoke and purge sessions through an :class:`~coatcheck.AsyncSessionManager`
    (its store, clock and hooks)."""

    def __init__(self, manager: AsyncSessionManager) -> None:
        self.manager = manager
        self._flows = _Flows(manager)

    @property
    def can_revoke(self) -> bool:
        """False only for sealed cookies without a revocation record: a copy of such a cookie
        cannot be ended before it expires, so :meth:`revoke` and :meth:`revoke_all` raise."""
        return self._flows.can_revoke

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """The live sessions of ``user_id`` with device metadata, most recent first.

        Raises :class:`~coatcheck.errors.NotSupportedError` for sealed sessions.
        """
        return await self.manager.run(self._flows.sessions_of(user_id))

    async def user_ids(self) -> list[str]:
        """Users that have a stored session not expired by now (signed-in users); not for sealed
        sessions."""
        return await self.manager.run(flows.user_ids(self.manager.clock()))

    async def stats(self) -> SessionStats:
        """How many sessions the store holds now: live, signed in, distinct users, by transport,
        and expired ones awaiting :meth:`purge_expired`. A memory store counts only this
        process's sessions; sealed sessions cannot be counted (``NotSupportedError``)."""
        return await self.manager.run(flows.stats(self.manager.clock()))

    async def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        """End one session (only ``owner``'s, when given). True if it existed; ``on_revoke``
        is called with reason ``"revoke"``.

        A sealed session needs ``owner`` and cannot be known to exist: True for any
        well-formed id (its copies are refused from now on).
        """
        return await self.manager.perform(self._flows.revoke(session_id, owner))

    async def revoke_all(self, user_id: str, *, keep: str | None = None) -> int:
        """End every session of ``user_id``, optionally keeping the current one; ``on_revoke``
        is called for each with reason ``"revoke-all"``.

        Returns how many live sessions ended; 0 for sealed sessions, which cannot be counted.
        """
        return await self.manager.perform(self._flows.revoke_all(user_id, keep, "revoke-all"))

    async def password_changed(
        self, session: Session, *, credential: str | bytes | None = None
    ) -> int:
        """After the signed-in user of ``session`` changed their password: end their other
        sessions now (``on_revoke`` reason ``"password-change"``) and rotate this one at commit
        (a new id and CSRF token; remember-me, auth time and deadlines kept).

        ``credential`` (the new password hash) re-binds this session to it, for sessions signed
        in with ``login(..., credential=...)``: without it, this session would still carry the
        old credential's fingerprint and be signed out on its next request.

        Returns how many other sessions ended (0 for sealed sessions, which cannot be counted;
        without a revocation record they cannot be ended at all, which is logged). Raises
        ``ValueError`` for an anonymous session.
        """
        return await self.manager.perform(self._flows.password_changed(session, credential))

    async def purge_expired(self, *, batch: int = 500, max_batches: int | None = None) -> int:
        """Delete expired records in batches of ``batch``; returns how many were deleted
        (``on_revoke`` gets one ``"purge"`` event with that count, when it is not 0)."""
        return await self.manager.perform(self._flows.purge_expired(batch, max_batches))


class SessionAdmin:
    """The sync twin of :class:`AsyncSessionAdmin`."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self._flows = _Flows(manager)

    @property
    def can_revoke(self) -> bool:
        return self._flows.can_revoke

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        return self.manager.run(self._flows.sessions_of(user_id))

    def user_ids(self) -> list[str]:
        return self.manager.run(flows.user_ids(self.manager.clock()))

    def stats(self) -> SessionStats:
        return self.manager.run(flows.stats(self.manager.clock()))

    def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        return self.manager.perform(self._flows.revoke(session_id, owner))

    def revoke_all(self, user_id: str, *, keep: str | None = None) -> int:
        return self.manager.perform(self._flows.revoke_all(user_id, keep, "revoke-all"))

    def password_changed(self, session: Session, *, credential: str | bytes | None = None) -> int:
        return self.manager.perform(self._flows.password_changed(session, credential))

    def purge_expired(self, *, batch: int = 500, max_batches: int | None = None) -> int:
        return self.manager.perform(self._flows.purge_expired(batch, max_batches))
