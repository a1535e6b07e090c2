"""Session admin for apps and operators: list, revoke one, revoke all, purge.

``AsyncSessionAdmin`` and ``SessionAdmin`` run the flows of :mod:`coatcheck._core.admin` through a
manager, so they share its store, configuration, clock and error handling.
"""

from __future__ import annotations

from ._core import admin as flows
from ._core.admin import SessionInfo
from .manager import AsyncSessionManager, SessionManager

__all__ = ["AsyncSessionAdmin", "SessionAdmin", "SessionInfo"]


class AsyncSessionAdmin:
    def __init__(self, manager: AsyncSessionManager) -> None:
        self.manager = manager

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """The live sessions of ``user_id`` with device metadata, most recent first."""
        return await self.manager.run(
            flows.sessions_of(user_id, self.manager.config, self.manager.clock())
        )

    async def user_ids(self) -> list[str]:
        """Users that have a stored session not expired by now (signed-in users)."""
        return await self.manager.run(flows.user_ids(self.manager.clock()))

    async def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        """End one session (only ``owner``'s, when given). True if it existed."""
        return await self.manager.run(flows.revoke(session_id, owner=owner))

    async def revoke_all(self, user_id: str, *, keep: str | None = None) -> int:
        """End every session of ``user_id``, optionally keeping the current one."""
        return await self.manager.run(flows.revoke_all(user_id, keep=keep))

    async def purge_expired(self, *, batch: int = 500, max_batches: int | None = None) -> int:
        """Delete expired records in batches of ``batch``; returns how many were deleted."""
        return await self.manager.run(flows.purge_expired(self.manager.clock(), batch, max_batches))


class SessionAdmin:
    """The sync twin of :class:`AsyncSessionAdmin`."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        return self.manager.run(
            flows.sessions_of(user_id, self.manager.config, self.manager.clock())
        )

    def user_ids(self) -> list[str]:
        return self.manager.run(flows.user_ids(self.manager.clock()))

    def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        return self.manager.run(flows.revoke(session_id, owner=owner))

    def revoke_all(self, user_id: str, *, keep: str | None = None) -> int:
        return self.manager.run(flows.revoke_all(user_id, keep=keep))

    def purge_expired(self, *, batch: int = 500, max_batches: int | None = None) -> int:
        return self.manager.run(flows.purge_expired(self.manager.clock(), batch, max_batches))
