"""Login throttling bound to a manager's store: the drivers of :mod:`coatcheck._core.throttle`.

::

    guard = AsyncLoginGuard(manager)               # counts live in the session store
    await guard.check(email, session.ip)           # raises HTTPError 429 + Retry-After when blocked
    ...verify the password...
    await guard.succeeded(email, session.ip)       # forget the account's count

Because the counts live in the configured store, every app instance on that store shares them.
"""

from __future__ import annotations

from ._core import events, throttle
from ._core.ops import Flow
from ._core.throttle import ThrottleConfig
from .manager import AsyncSessionManager, SessionManager

__all__ = ["AsyncLoginGuard", "LoginGuard", "ThrottleConfig"]


class _Guard:
    def __init__(
        self, manager: AsyncSessionManager | SessionManager, config: ThrottleConfig | None
    ) -> None:
        self._secret = manager.config.secret
        self._clock = manager.clock
        self.config = config or ThrottleConfig()

    def _check_flow(self, account: str, ip: str | None) -> Flow[throttle.Decision]:
        keys = throttle.throttle_keys(self._secret, account, ip)
        return throttle.check(self.config, keys, self._clock())

    def _success_flow(self, account: str, ip: str | None) -> Flow[None]:
        return throttle.succeeded(throttle.throttle_keys(self._secret, account, ip))


class AsyncLoginGuard(_Guard):
    def __init__(self, manager: AsyncSessionManager, config: ThrottleConfig | None = None) -> None:
        super().__init__(manager, config)
        self.manager = manager

    async def check(self, account: str, ip: str | None) -> None:
        """Count this attempt; raise a 429 :class:`~coatcheck.errors.HTTPError` when refused
        (after the manager's ``on_throttled`` hook)."""
        decision = await self.manager.run(self._check_flow(account, ip))
        await self.manager.fire(events.throttled(account, ip, decision, self._clock()))
        if not decision.allowed:
            raise throttle.throttled_error(decision)

    async def succeeded(self, account: str, ip: str | None) -> None:
        """Forget the account's failed attempts after a successful login."""
        await self.manager.run(self._success_flow(account, ip))


class LoginGuard(_Guard):
    """The sync twin of :class:`AsyncLoginGuard`."""

    def __init__(self, manager: SessionManager, config: ThrottleConfig | None = None) -> None:
        super().__init__(manager, config)
        self.manager = manager

    def check(self, account: str, ip: str | None) -> None:
        decision = self.manager.run(self._check_flow(account, ip))
        self.manager.fire(events.throttled(account, ip, decision, self._clock()))
        if not decision.allowed:
            raise throttle.throttled_error(decision)

    def succeeded(self, account: str, ip: str | None) -> None:
        self.manager.run(self._success_flow(account, ip))
