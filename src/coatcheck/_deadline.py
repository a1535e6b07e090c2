"""One timer per event loop for every store call in flight, instead of one per call.

``asyncio.timeout`` costs about 5 µs per call (a ``Timeout`` object, a timer handle scheduled and
cancelled), more than a whole session read from a cached or embedded store. Every store call of
an async manager runs under the same ``store_timeout``, so calls expire in the order they
started: :class:`Deadlines` keeps the calls in flight in a dict (insertion order = start order =
expiry order) and one timer, set for the oldest call's deadline. Starting and ending a call is a
dict insert and delete; when the timer fires it cancels the calls whose deadline passed (exactly
as ``asyncio.timeout`` does: ``task.cancel()``, then the ``CancelledError`` becomes
``TimeoutError`` and the task is uncancelled) and sets itself for the next oldest.

Only the event loop a :class:`Deadlines` first ran on (or the next, once that one is closed) is
served this way; a call from any other loop falls back to ``asyncio.timeout``, so a manager shared
by loops in several threads stays correct.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    """Bounds awaited calls by ``seconds`` each (see the module docstring)."""

    __slots__ = ("_calls", "_expired", "_loop", "_timer", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[asyncio.Task[object], float] = {}
        """The calls in flight: their task and deadline, oldest first."""
        self._expired: set[asyncio.Task[object]] = set()
        """Tasks this object cancelled whose call has not ended yet."""
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, call: Awaitable[T]) -> T:
        """Await ``call``; raise :class:`TimeoutError` if it takes longer than ``seconds``."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if (
            (loop is not self._loop and not self._adopt(loop))  # another live loop's call
            or task is None  # not in a task
            or task in self._calls  # a call inside a call
        ):
            async with asyncio.timeout(self.seconds):
                return await call
        deadline = loop.time() + self.seconds
        cancelling = task.cancelling()
        self._calls[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        try:
            return await call
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                # As asyncio.timeout: a cancellation of ours alone becomes a TimeoutError.
                if task.uncancel() <= cancelling:
                    raise TimeoutError(f"no answer within {self.seconds} s") from None
            raise
        finally:
            self._calls.pop(task, None)
            if task in self._expired:  # expired, but the call ended before it saw the cancel
                self._expired.discard(task)
                task.uncancel()

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Serve ``loop`` from now on if the loop served so far is gone (closed)."""
        if self._loop is not None and not self._loop.is_closed():
            return False
        self._loop = loop
        self._calls = {}
        self._expired = set()
        self._timer = None
        return True

    def _expire(self) -> None:
        """The timer: cancel every call past its deadline, then wait for the oldest one left."""
        self._timer = None
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        now = loop.time()
        due: list[asyncio.Task[object]] = []
        for task, deadline in self._calls.items():
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                break
            due.append(task)
        for task in due:
            del self._calls[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
