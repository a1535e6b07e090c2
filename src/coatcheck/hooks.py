"""Hooks: your functions, called when sessions are signed in, signed out, revoked and throttled.

::

    async def audit(event: SessionEvent) -> None:
        await db.audit_log.insert(event.reason, event.user_id, event.session_id, event.ip)

    hooks = Hooks(on_login=audit, on_logout=audit, on_revoke=audit, on_new_device=notify_user)
    manager = AsyncSessionManager(store, config, hooks=hooks)

Each hook receives one event (:class:`~coatcheck._core.events.SessionEvent` or, for
``on_throttled``, :class:`~coatcheck._core.events.ThrottledEvent`), once per event, *after* the
store change it reports has been made. A hook may be a plain function or an ``async`` one, on
either manager. A hook can never break the request that caused the event: an exception it
raises is logged at ERROR with its traceback, and a hook that takes longer than ``timeout``
is logged at WARNING and no longer waited for:

=====================  ==========================================================================
manager, hook          how it runs
=====================  ==========================================================================
async, ``async def``   awaited in the request's task; cancelled after ``timeout``
async, ``def``         run on a worker thread (``asyncio.to_thread``) so it cannot block the event
                       loop; the request stops waiting after ``timeout`` (the thread finishes on
                       its own)
sync, ``def``          called in the request's thread (Flask's app context is there); it cannot be
                       interrupted, so a run longer than ``timeout`` is only logged
sync, ``async def``    run to completion in its own event loop on a worker thread, cancelled after
                       ``timeout``; it must not use objects bound to another event loop
=====================  ==========================================================================

Hooks run while the response waits (for a login, before its headers are sent), which keeps
"after the change, before the answer" true and ordering simple; keep them quick, and hand slow
work (sending an email) to a queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._core.events import Event, SessionEvent, ThrottledEvent, hook_name
from .errors import ConfigurationError

__all__ = ["Hook", "Hooks", "SessionEvent", "ThrottledEvent"]

log = logging.getLogger("coatcheck")

Hook = Callable[[Any], Awaitable[None] | None]
"""A hook: called with one event; may be a coroutine function."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Hooks:
    """The application's hooks, given to a manager (``AsyncSessionManager(..., hooks=...)``).

    - ``on_login(event)``: a sign-in was committed (:func:`coatcheck.login`, and bearer tokens
      issued with ``issue_token``); ``event.reason`` is ``"login"``, or ``"reauthentication"``
      when the session was already signed in as that user.
    - ``on_logout(event)``: a signed-in session was ended by :func:`coatcheck.logout`.
    - ``on_revoke(event)``: a session was ended by something else; ``event.reason`` says what:
      ``"revoke"``, ``"revoke-all"``, ``"password-change"``, ``"expired"`` (a presented session
      found expired and deleted), ``"purge"`` (one event per ``purge_expired`` call that deleted
      anything: ids unknown, ``count`` = how many) or ``"cap"`` (ended by
      ``max_sessions_per_user``).
    - ``on_new_device(event)``: a sign-in from a device (user agent *and* address) that none of
      the user's other live sessions has; costs one ``sessions_of`` per sign-in while set.
    - ``on_throttled(event)``: a login attempt refused by :class:`~coatcheck.AsyncLoginGuard` /
      :class:`~coatcheck.LoginGuard`.

    With ``sealed://`` sessions, ``on_login``, ``on_logout``, ``on_revoke`` (revoke, revoke-all
    and password-change, through the revocation record) and ``on_throttled`` work;
    ``on_new_device`` is refused at start-up (no list of sealed sessions exists), and
    ``"expired"``/``"purge"`` never happen (an expired seal is simply refused; nothing is
    deleted).
    """

    on_login: Hook | None = None
    on_logout: Hook | None = None
    on_revoke: Hook | None = None
    on_new_device: Hook | None = None
    on_throttled: Hook | None = None
    timeout: float = 1.0
    """Seconds a request waits for one hook (see the module's table)."""

    def __post_init__(self) -> None:
        for name in _HOOK_NAMES:
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"{name} must be callable, not {hook!r}")
        if not (isinstance(self.timeout, int | float) and 0 < self.timeout < math.inf):
            raise ConfigurationError("the hooks' timeout must be a positive number of seconds")

    @property
    def any_set(self) -> bool:
        """Whether any hook is set."""
        return any(getattr(self, name) is not None for name in _HOOK_NAMES)

    def hook_for(self, event: Event) -> Hook | None:
        hook: Hook | None = getattr(self, hook_name(event))
        return hook


_HOOK_NAMES = ("on_login", "on_logout", "on_revoke", "on_new_device", "on_throttled")
NO_HOOKS = Hooks()


def _is_async(hook: Hook) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


def _describe(hook: Hook, event: Event) -> str:
    name = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    return f"coatcheck hook {name} ({hook_name(event)})"


async def fire_async(hooks: Hooks, events: Iterable[Event]) -> None:
    """Call the hooks for ``events`` in order, on an event loop. Never raises (but lets the
    request's own cancellation through)."""
    for event in events:
        hook = hooks.hook_for(event)
        if hook is None:
            continue
        deadline = asyncio.timeout(hooks.timeout)
        try:
            async with deadline:
                if _is_async(hook):
                    await hook(event)  # type: ignore[misc]
                else:
                    result = await asyncio.to_thread(hook, event)
                    if inspect.isawaitable(result):
                        await result
        except TimeoutError:
            if not deadline.expired():  # the hook's own timeout, not ours: a hook error
                log.exception("%s raised; the request goes on", _describe(hook, event))
            else:
                _too_slow(hook, event, hooks.timeout)
        except Exception:
            log.exception("%s raised; the request goes on", _describe(hook, event))


class _TooSlow(Exception):
    """A hook ran into its timeout (as opposed to raising a ``TimeoutError`` of its own)."""


async def _within(awaitable: Awaitable[None], limit: float) -> None:
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            await awaitable
    except TimeoutError:
        if deadline.expired():
            raise _TooSlow from None
        raise


def _complete(awaitable: Awaitable[None], limit: float) -> None:
    """Run ``awaitable`` to completion (or ``limit``) in a new event loop of this thread."""
    asyncio.run(_within(awaitable, limit))


def fire_sync(
    hooks: Hooks, events: Iterable[Event], threads: Callable[[], concurrent.futures.Executor]
) -> None:
    """Call the hooks for ``events`` in order, in this thread; an async hook's coroutine runs in
    its own event loop on a worker thread from ``threads()``. Never raises."""
    for event in events:
        hook = hooks.hook_for(event)
        if hook is None:
            continue
        started = time.monotonic()
        try:
            cut = _call(hook, event, hooks.timeout, threads)
        except Exception:
            log.exception("%s raised; the request goes on", _describe(hook, event))
            continue
        if cut or time.monotonic() - started > hooks.timeout:
            _too_slow(hook, event, hooks.timeout)


def _call(
    hook: Hook, event: Event, limit: float, threads: Callable[[], concurrent.futures.Executor]
) -> bool:
    """Call ``hook`` from a sync manager; True when it was cut off at ``limit``."""
    result = hook(event)
    if not inspect.isawaitable(result):
        return False
    future = threads().submit(_complete, result, limit)
    try:
        # The loop cancels the hook at the limit; the margin covers a hook that blocks its
        # loop, which no cancellation reaches.
        future.result(timeout=limit + 1.0)
    except _TooSlow:
        return True
    except TimeoutError:
        if future.done():
            raise  # the hook's own TimeoutError: an error like any other
        return True
    return False


def _too_slow(hook: Hook, event: Event, limit: float) -> None:
    log.warning("%s took longer than its %s s timeout", _describe(hook, event), limit)
