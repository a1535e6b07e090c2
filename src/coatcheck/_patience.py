"""Whether the caller of a store operation running in another thread still waits for it.

A manager that stops waiting for a store call (``store_timeout``: the async twin cancels it, the
sync twin's ``future.result`` times out) answers 503, and a client that retries after
``Retry-After`` does the request again. If the first write still landed afterwards (a worker
thread that went on waiting for SQLite's write lock, or for a pooled connection, and then wrote),
the retry would add its cart item a second time. So a store call that runs in a worker thread
gets a :class:`Patience` from its caller: the store checks it before each statement it starts,
and the caller gives up through it, after which no statement starts.

A statement already running when the caller gives up runs to its end. On SQLite the store holds
``Patience``'s lock for each no-wait statement (microseconds): :meth:`Patience.give_up` waits for
one in flight and says whether the write landed, so the sync manager answers with its result
instead of a 503. On a database server, a statement sent before the deadline is the server's to
finish: its outcome is unknown to a client that stopped waiting, as with any network store.

The sync manager hands a ``Patience`` to the store through a context variable
(:data:`CALLER`, set in the worker thread for the call), so the store contract stays as it is;
the async SQL store makes its own for the thread it starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from .errors import StoreUnavailableError

T = TypeVar("T")


class GaveUp(StoreUnavailableError):
    """The caller stopped waiting before this statement started; nothing more was run."""


class Patience:
    """One call's caller, seen from the worker thread that runs it (see the module docstring)."""

    __slots__ = ("_lock", "gave_up", "landed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gave_up = False
        """Set once the caller has stopped waiting."""
        self.landed = False
        """Set by a store when the call's write committed, under the lock."""

    def give_up(self) -> bool:
        """Stop waiting: no statement starts after this returns. Waits for a no-wait statement
        in flight; ``True`` if the write had already landed (its result is on its way)."""
        with self._lock:
            self.gave_up = True
            return self.landed

    def check(self) -> None:
        """Raise :class:`GaveUp` if the caller has stopped waiting."""
        if self.gave_up:
            raise GaveUp("the caller stopped waiting")

    def attempt(self, statement: Callable[[], T]) -> T:
        """Run ``statement`` (which must not wait: it holds up :meth:`give_up`) unless the caller
        gave up; if it returns, the write landed."""
        with self._lock:
            self.check()
            value = statement()
            self.landed = True
            return value


CALLER: ContextVar[Patience | None] = ContextVar("coatcheck_caller", default=None)
"""The :class:`Patience` of the store call running in this thread, if its caller gave one."""


def call_patiently(patience: Patience, method: Callable[..., T], args: tuple[Any, ...]) -> T:
    """``method(*args)`` with :data:`CALLER` set to ``patience`` (in a worker thread)."""
    token = CALLER.set(patience)
    try:
        return method(*args)
    finally:
        CALLER.reset(token)
