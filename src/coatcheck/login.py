"""Login throttling bound to a manager's store: the drivers of :mod:`coatcheck._core.throttle`.

::

    guard = AsyncLoginGuard(manager)               # counts live in the session store
    await guard.check(email, session.ip)           # raises HTTPError 429 + Retry-After when blocked
    ...verify the password...
    await guard.succeeded(email, session.ip)       # forget the account's count

Because the counts live in the configured store, every app instance on that store shares them.
"""

from __future__ import annotations

from ._core import throttle
from ._core.throttle import ThrottleConfig
from .manager import AsyncSessionManager, SessionManager

__all__ = ["AsyncLoginGuard", "LoginGuard", "ThrottleConfig"]


class AsyncLoginGuard:
    def __init__(self, manager: AsyncSessionManager, config: ThrottleConfig | None = None) -> None:
        self.manager = manager
        self.config = config or ThrottleConfig()

    def _keys(self, account: str, ip: str | None) -> throttle.ThrottleKeys:
        return throttle.throttle_keys(self.manager.config.secret, account, ip)

    async def check(self, account: str, ip: str | None) -> None:
        """Count this attempt; raise a 429 :class:`~coatcheck.errors.HTTPError` when refused."""
        decision = await self.manager.run(
            throttle.check(self.config, self._keys(account, ip), self.manager.clock())
        )
        if not decision.allowed:
            raise throttle.throttled_error(decision)

    async def succeeded(self, account: str, ip: str | None) -> None:
        """Forget the account's failed attempts after a successful login."""
        await self.manager.run(throttle.succeeded(self._keys(account, ip)))


class LoginGuard:
    """The sync twin of :class:`AsyncLoginGuard`."""

    def __init__(self, manager: SessionManager, config: ThrottleConfig | None = None) -> None:
        self.manager = manager
        self.config = config or ThrottleConfig()

    def _keys(self, account: str, ip: str | None) -> throttle.ThrottleKeys:
        return throttle.throttle_keys(self.manager.config.secret, account, ip)

    def check(self, account: str, ip: str | None) -> None:
        decision = self.manager.run(
            throttle.check(self.config, self._keys(account, ip), self.manager.clock())
        )
        if not decision.allowed:
            raise throttle.throttled_error(decision)

    def succeeded(self, account: str, ip: str | None) -> None:
        self.manager.run(throttle.succeeded(self._keys(account, ip)))
