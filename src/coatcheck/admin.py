"""Session admin for apps and operators: list, revoke one, revoke all, purge.

``AsyncSessionAdmin`` and ``SessionAdmin`` run the flows of :mod:`coatcheck._core.admin` through a
manager, so they share its store, configuration, clock and error handling. On a ``sealed://``
store they run the sealed flows instead: revoking works through the revocation record (when one is
configured), and listing raises :class:`~coatcheck.errors.NotSupportedError` (501), because no
list of the sessions sealed into browsers' cookies exists.
"""

from __future__ import annotations

from ._core import admin as flows
from ._core.admin import SessionInfo
from ._core.ops import Flow
from .manager import AsyncSessionManager, SessionManager

__all__ = ["AsyncSessionAdmin", "SessionAdmin", "SessionInfo"]


class _Flows:
    """The admin flows for a manager's store: the server-store ones or the sealed ones."""

    def __init__(self, manager: AsyncSessionManager | SessionManager) -> None:
        self.manager = manager

    @property
    def can_revoke(self) -> bool:
        sealed = self.manager.sealed
        return sealed is None or sealed.revocations

    def sessions_of(self, user_id: str) -> Flow[list[SessionInfo]]:
        return flows.sessions_of(user_id, self.manager.config, self.manager.clock())

    def revoke(self, session_id: str, owner: str | None) -> Flow[bool]:
        sealed = self.manager.sealed
        if sealed is not None:
            return sealed.revoke(session_id, owner=owner, now=self.manager.clock())
        return flows.revoke(session_id, owner=owner)

    def revoke_all(self, user_id: str, keep: str | None) -> Flow[int]:
        sealed = self.manager.sealed
        if sealed is not None:
            return sealed.revoke_all(user_id, keep=keep, now=self.manager.clock())
        return flows.revoke_all(user_id, keep=keep)

    def purge_expired(self, batch: int, max_batches: int | None) -> Flow[int]:
        return flows.purge_expired(self.manager.clock(), batch, max_batches)


class AsyncSessionAdmin:
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

    async def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        """End one session (only ``owner``'s, when given). True if it existed.

        A sealed session needs ``owner`` and cannot be known to exist: True for any
        well-formed id (its copies are refused from now on).
        """
        return await self.manager.run(self._flows.revoke(session_id, owner))

    async def revoke_all(self, user_id: str, *, keep: str | None = None) -> int:
        """End every session of ``user_id``, optionally keeping the current one.

        Returns how many ended; 0 for sealed sessions, which cannot be counted.
        """
        return await self.manager.run(self._flows.revoke_all(user_id, keep))

    async def purge_expired(self, *, batch: int = 500, max_batches: int | None = None) -> int:
        """Delete expired records in batches of ``batch``; returns how many were deleted."""
        return await self.manager.run(self._flows.purge_expired(batch, max_batches))


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

    def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        return self.manager.run(self._flows.revoke(session_id, owner))

    def revoke_all(self, user_id: str, *, keep: str | None = None) -> int:
        return self.manager.run(self._flows.revoke_all(user_id, keep))

    def purge_expired(self, *, batch: int = 500, max_batches: int | None = None) -> int:
        return self.manager.run(self._flows.purge_expired(batch, max_batches))
