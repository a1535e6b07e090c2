"""Login throttling bound to a manager's store: the drivers of :mod:`coatcheck._core.throttle`.

::

    guard = AsyncLoginGuard(manager)                       # counts live in the session store
    email = canonical_login_name(submitted)                # ValueError -> 422
    user = await users.by_email(email)
    attempt = await guard.check(                           # 429 + Retry-After when refused
        email, session.ip,
        identity=user.id if user else None,                # the account the lookup found
        device=request.cookies.get(guard.device_cookie_name),
    )
    ...verify the password (also for an unknown user: dummy verify)...
    for name, value in await guard.succeeded(attempt):     # Set-Cookie: a fresh device cookie
        response.headers.append(name, value)

Because the counts live in the configured store, every app instance on that store shares them.
A guard built with ``purpose="register"`` (or any other word) keeps separate counts: with
``check(None, ip)`` it limits per address whatever fails, e.g. registrations that hit a taken
email, while ``succeeded`` (the account was created) credits the address again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._core import events, throttle
from ._core.config import CookieConfig
from ._core.cookies import device_cookie_name, set_cookie
from ._core.ops import Flow
from ._core.throttle import Decision, ThrottleConfig, ThrottleKeys, canonical_login_name
from .manager import AsyncSessionManager, SessionManager

__all__ = [
    "AsyncLoginGuard",
    "Attempt",
    "LoginGuard",
    "ThrottleConfig",
    "canonical_login_name",
]

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted, allowed attempt: what :meth:`AsyncLoginGuard.succeeded` needs to finish it."""

    keys: ThrottleKeys
    decision: Decision
    subject: str | None
    """What a device cookie for this attempt is bound to (the identity, else the name)."""
    presented_device: str | None
    """The device cookie the browser sent, whose other accounts' entries are kept."""


class _Guard:
    def __init__(
        self,
        manager: AsyncSessionManager | SessionManager,
        config: ThrottleConfig | None,
        purpose: str,
    ) -> None:
        if not purpose.isidentifier():
            raise ValueError("purpose must be a word, like 'login' or 'register'")
        self._secret = manager.config.secret
        self._cookie: CookieConfig = manager.config.cookie
        self._clock = manager.clock
        self.config = config or ThrottleConfig()
        self.purpose = purpose

    @property
    def device_cookie_name(self) -> str:
        """The name of the device cookie this guard issues and reads."""
        return device_cookie_name(self._cookie)

    def _attempt(
        self,
        account: str | None,
        ip: str | None,
        identity: str | None,
        device: str | None,
        credential: str | bytes | None,
    ) -> tuple[Attempt, Flow[Decision]]:
        subject = None
        nonce = None
        if account is not None:
            subject = (
                throttle.device_subject(identity, credential)
                if identity is not None
                else "name:" + throttle.throttle_name(account)
            )
            if self.config.device_threshold is not None:
                nonce = throttle.valid_device(self._secret, device, subject, self._clock())
        keys = throttle.throttle_keys(
            self._secret, account, ip, identity=identity, device=nonce, purpose=self.purpose
        )
        attempt = Attempt(keys, throttle.ALLOWED, subject, device)
        return attempt, throttle.check(self.config, keys, self._clock())

    def _finish(self, attempt: Attempt, decision: Decision) -> Attempt:
        if not decision.allowed:
            raise throttle.throttled_error(decision)
        return Attempt(attempt.keys, decision, attempt.subject, attempt.presented_device)

    def _success_flow(self, attempt: Attempt) -> Flow[None]:
        return throttle.succeeded(self.config, attempt.keys, attempt.decision, self._clock())

    def device_cookie(
        self,
        identity: str,
        presented: str | None = None,
        *,
        credential: str | bytes | None = None,
    ) -> Headers:
        """Headers that set a device cookie for the account ``identity`` without an attempt:
        for the browser that just created the account or changed its password, so that its
        owner is throttled on their own, never locked out by someone else's failures.
        ``presented`` is the device cookie the request carried (its other accounts' entries are
        kept); ``credential`` as for :meth:`AsyncLoginGuard.check`."""
        return self._device_cookie(throttle.device_subject(identity, credential), presented)

    def _device_headers(self, attempt: Attempt) -> Headers:
        if attempt.subject is None:
            return []
        return self._device_cookie(attempt.subject, attempt.presented_device)

    def _device_cookie(self, subject: str, presented: str | None) -> Headers:
        if self.config.device_threshold is None:
            return []
        value = throttle.issue_device_cookie(
            self._secret, subject, self._clock(), self.config.device_lifetime, presented
        )
        cookie = set_cookie(
            self._cookie,
            self.device_cookie_name,
            value,
            max_age=int(self.config.device_lifetime),
        )
        return [("set-cookie", cookie)]


class AsyncLoginGuard(_Guard):
    """Login throttling per account, device and client address, counted in the session store."""

    def __init__(
        self,
        manager: AsyncSessionManager,
        config: ThrottleConfig | None = None,
        *,
        purpose: str = "login",
    ) -> None:
        super().__init__(manager, config, purpose)
        self.manager = manager

    async def check(
        self,
        account: str | None,
        ip: str | None,
        *,
        identity: str | None = None,
        device: str | None = None,
        credential: str | bytes | None = None,
    ) -> Attempt:
        """Count this attempt; raise a 429 :class:`~coatcheck.errors.HTTPError` when refused.

        ``account`` is the submitted name, ``identity`` the user id your lookup found for it
        (``None`` when none), ``device`` the value of the :attr:`device_cookie_name` cookie the
        request carried, ``credential`` the account's current password hash: device cookies
        are bound to it, so a password change ends every device cookie issued before it. Call
        it before verifying the password, for unknown accounts too.

        A browser with a valid device cookie for the account is counted on that cookie alone
        (5 attempts, then backoff): attackers' failures on the account or from its address do
        not lock it out.
        """
        attempt, flow = self._attempt(account, ip, identity, device, credential)
        decision = await self.manager.run(flow)
        await self.manager.fire(events.throttled(account, ip, decision, self._clock()))
        return self._finish(attempt, decision)

    async def succeeded(self, attempt: Attempt) -> Headers:
        """Forget the failed attempts after a success; returns headers to add to the response.

        The headers set a fresh device cookie for the account (none for ``account=None``
        guards, or with device cookies turned off).
        """
        await self.manager.run(self._success_flow(attempt))
        return self._device_headers(attempt)


class LoginGuard(_Guard):
    """The sync twin of :class:`AsyncLoginGuard`."""

    def __init__(
        self,
        manager: SessionManager,
        config: ThrottleConfig | None = None,
        *,
        purpose: str = "login",
    ) -> None:
        super().__init__(manager, config, purpose)
        self.manager = manager

    def check(
        self,
        account: str | None,
        ip: str | None,
        *,
        identity: str | None = None,
        device: str | None = None,
        credential: str | bytes | None = None,
    ) -> Attempt:
        attempt, flow = self._attempt(account, ip, identity, device, credential)
        decision = self.manager.run(flow)
        self.manager.fire(events.throttled(account, ip, decision, self._clock()))
        return self._finish(attempt, decision)

    def succeeded(self, attempt: Attempt) -> Headers:
        self.manager.run(self._success_flow(attempt))
        return self._device_headers(attempt)
