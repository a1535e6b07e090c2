"""The thin drivers: run core flows against a store, async or sync.

Neither manager decides anything about sessions; both run the same flows from
:mod:`coatcheck._core.lifecycle` (or, for a ``sealed://`` store, from
:mod:`coatcheck._core.sealed_flow`) with one generic loop. The only difference between the twins is
``await``. Store failures, timeouts and unexpected driver errors all become
:class:`~coatcheck.errors.StoreUnavailableError` so the middleware can answer 503.

``store_timeout`` bounds every store call on both twins. The async manager cancels the call; the
sync one cannot interrupt a thread blocked in a driver, so it runs store calls on a small pool of
worker threads and stops waiting after ``store_timeout``; the call is told so
(:mod:`coatcheck._patience`), and a SQL store starts no statement for it from then on (one
already sent finishes in the background, bounded by the driver's own timeouts). A store that
never blocks (the memory store) says so with a ``blocking = False`` attribute and is called
directly, on both twins. A store that holds some
records in process memory (the Redis store's client-side cache) or reads without ever waiting
(SQLite's no-wait reader) offers a synchronous ``recall(id)``: a ``get`` asks it first, and only
when it answers ``None`` is the store called (on the sync twin, in a worker thread),
under the timeout (a timer costs more than a cache hit: about 5 µs under uvloop for
``asyncio.timeout``). Likewise a sync store whose session writes can be done without waiting
(SQLite's no-wait writer) offers ``write_now(method, args)``: the sync twin asks it before it
sends a write to a worker thread (the async SQLite store runs such writes on the event loop
itself). The async manager bounds its store calls with one timer per event loop
(:class:`~coatcheck._deadline.Deadlines`), not one per call.

An outage (a store error, a timeout) is logged at WARNING; any other exception from a store is a
bug in that store, logged at ERROR with its traceback; both answer 503.

Hooks (:class:`~coatcheck.hooks.Hooks`) are called by the managers after the flow whose store
change they report has finished; :mod:`coatcheck._core.events` decides which events happened. A
sign-in may be followed by more store work (the ``max_sessions_per_user`` cap, new-device
detection); it runs after the sign-in's commit, and if it fails, the failure is logged and the
request goes on (the sign-in itself was committed).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._core import events, lifecycle
from ._core.config import SessionConfig
from ._core.events import Event, SessionEvent, Watch
from ._core.http import RequestView
from ._core.memo import ParsedCookies
from ._core.ops import Flow, Get, StoreOp, corrupt_means_missing
from ._core.record import CorruptRecordError, SessionRecord
from ._core.session import Session
from ._deadline import Deadlines
from ._patience import Patience, call_patiently
from .errors import CoatcheckError, ConfigurationError, ConflictError, StoreUnavailableError
from .hooks import NO_HOOKS, Hooks, fire_async, fire_sync
from .stores.base import AsyncStore, SyncStore
from .stores.sealed import AsyncSealedStore, SealedStore

if TYPE_CHECKING:
    from ._core.sealed_flow import SealedMode

T = TypeVar("T")
log = logging.getLogger("coatcheck")
SYNC_STORE_THREADS = 32
"""Worker threads of a sync manager's store calls: enough for a busy WSGI server's threads; when
all are stuck on a hung store, further calls wait in line and time out like the rest."""
HOOK_THREADS = 4
"""Worker threads a sync manager runs async hooks on (each in its own event loop)."""
Clock = Callable[[], float]


def _logged(opened: lifecycle.Opened) -> lifecycle.Opened:
    if opened.discarded is not None:
        log.warning("coatcheck: %s", opened.discarded)
    return opened


FOLLOW_UP_FAILED = (
    "coatcheck: the work after a sign-in (session cap, new-device check) failed; the sign-in "
    "stands, the cap is enforced again at the next one: %r"
)


class _Manager:
    def __init__(
        self, config: SessionConfig, clock: Clock, store: object, hooks: Hooks | None
    ) -> None:
        self.config = config
        self.clock = clock
        self.hooks = NO_HOOKS if hooks is None else hooks
        """The application's hooks (:class:`~coatcheck.hooks.Hooks`)."""
        if not isinstance(self.hooks, Hooks):
            raise ConfigurationError("hooks must be a coatcheck.hooks.Hooks")
        self._parsed = ParsedCookies((config.cookie.effective_name, config.csrf.cookie_name))
        """``Cookie`` headers that carried a valid session, parsed (see ``_core/memo.py``)."""
        self.sealed: SealedMode | None = None
        """The sealed flows, when the store is ``sealed://`` (sessions live in cookies)."""
        if isinstance(store, AsyncSealedStore | SealedStore):
            if config.max_sessions_per_user is not None:
                raise ConfigurationError(
                    "max_sessions_per_user needs a server store: sealed sessions cannot be "
                    "counted or listed"
                )
            if self.hooks.on_new_device is not None:
                raise ConfigurationError(
                    "on_new_device needs a server store: sealed sessions cannot be listed"
                )
            from ._core.sealed_flow import SealedMode  # needs the `sealed` extra (cryptography)

            self.sealed = SealedMode(config, revocations=store.revocations is not None)
        self._new_device = self.hooks.on_new_device is not None
        self._recall: Callable[[str], SessionRecord | None] | None = getattr(store, "recall", None)
        """The store's in-memory read (see the module docstring), if it has one."""
        self._write_now: Callable[[str, tuple[Any, ...]], tuple[Any] | None] | None = getattr(
            store, "write_now", None
        )
        """The store's no-wait write (see the module docstring), if it has one (sync twin)."""
        # Per request, these two booleans are all that hooks cost while none is set.
        self._watch_opens = self.hooks.on_revoke is not None
        self._follow_commits = self.hooks.any_set or config.max_sessions_per_user is not None

    def _unavailable(self, op: StoreOp, exc: BaseException) -> StoreUnavailableError:
        if isinstance(exc, TimeoutError | OSError):
            log.warning("coatcheck store %s failed: %r", op.method, exc)
        else:
            log.error("coatcheck store %s raised unexpectedly", op.method, exc_info=exc)
        error = StoreUnavailableError(
            f"session store failed on {op.method}: {exc!r}", retry_after=self.config.retry_after
        )
        return error

    def _first(self, flow: Flow[T]) -> StoreOp | tuple[T]:
        """The flow's first store operation, or ``(its value,)`` when it asks the store nothing
        (then no coroutine is needed to run it; store operations are never tuples)."""
        try:
            return next(flow)
        except StopIteration as stop:
            return (stop.value,)
        except ConflictError as exc:
            exc.retry_after = self.config.retry_after
            raise

    def _recalled(self, op: StoreOp) -> SessionRecord | None:
        """The record a ``get`` asks for, from the store's memory; ``None``: call the store."""
        if self._recall is None or type(op) is not Get:
            return None
        return self._recall(op.id)

    def _corrupt(self, op: StoreOp, exc: CorruptRecordError) -> Any:
        """What the flow receives for a record the store could not decode: no record, for a
        ``get`` (see :func:`~coatcheck._core.ops.corrupt_means_missing`); else an outage."""
        if not corrupt_means_missing(op):
            raise self._unavailable(op, exc) from exc
        log.warning("coatcheck store returned a corrupt record on %s: %s", op.method, exc)
        return None

    def open_flow(self, request: RequestView, form_csrf: str | None) -> Flow[lifecycle.Opened]:
        if self.sealed is not None:
            return self.sealed.open(request, self.clock(), form_csrf=form_csrf)
        return lifecycle.open_session(
            request, self.config, self.clock(), form_csrf=form_csrf, cookie_memo=self._parsed
        )

    def commit_flow(self, session: Session) -> Flow[lifecycle.Committed]:
        if self.sealed is not None:
            return self.sealed.commit(session, self.clock())
        return lifecycle.commit_session(session, self.config, self.clock())

    def _commit_flow(self, session: Session) -> lifecycle.Committed | Flow[lifecycle.Committed]:
        """:meth:`commit_flow`, or its answer when that needs no flow (a sealed read)."""
        if self.sealed is not None:
            now = self.clock()
            settled = self.sealed.settled(session, now)
            if settled is not None:
                return settled
            return self.sealed.commit(session, now, settled=True)
        return lifecycle.commit_session(session, self.config, self.clock())

    def issue_flow(
        self,
        user_id: str,
        user_agent: str,
        ip: str,
        label: str,
        credential: str | bytes | None = None,
    ) -> Flow[tuple[SessionRecord, str]]:
        if self.sealed is not None:
            self.sealed.issue_token()  # raises: bearer tokens need a server store
        return lifecycle.create_session(
            self.config,
            self.clock(),
            user_id=user_id,
            transport="bearer",
            user_agent=user_agent,
            ip=ip,
            label=label,
            credential=credential,
        )

    def _after_issue(
        self, record: SessionRecord
    ) -> tuple[list[SessionEvent], Flow[list[SessionEvent]] | None]:
        now = self.clock()
        follow = events.after_sign_in(record, self.config, now, new_device=self._new_device)
        return [SessionEvent.of("login", record, now)], follow

    def _after_commit(
        self, session: Session, committed: lifecycle.Committed
    ) -> tuple[list[SessionEvent], Flow[list[SessionEvent]] | None]:
        return events.after_commit(
            session, committed, self.config, self.clock(), new_device=self._new_device
        )


class AsyncSessionManager(_Manager):
    """Opens and commits sessions on an :class:`~coatcheck.stores.base.AsyncStore`, and calls
    the application's ``hooks`` (:class:`~coatcheck.hooks.Hooks`) for what happened."""

    def __init__(
        self,
        store: AsyncStore,
        config: SessionConfig,
        *,
        clock: Clock = time.time,
        hooks: Hooks | None = None,
    ) -> None:
        super().__init__(config, clock, store, hooks)
        self.store = store
        self._blocking = getattr(store, "blocking", True) is not False
        self._deadlines = Deadlines(config.store_timeout)

    async def run(self, flow: Flow[T]) -> T:
        """Drive a core flow: perform each store operation it yields, send back the result."""
        first = self._first(flow)
        if isinstance(first, tuple):
            return first[0]
        return await self._drive(flow, first)

    async def _drive(self, flow: Flow[T], op: StoreOp) -> T:
        """:meth:`run` from the flow's first store operation ``op`` on."""
        try:
            while True:
                try:
                    result: Any = self._recalled(op)  # from the store's memory: no timer
                    if result is None and self._blocking:
                        result = await self._deadlines.run(
                            getattr(self.store, op.method)(*op.args())
                        )
                    elif result is None:
                        result = await getattr(self.store, op.method)(*op.args())
                except CorruptRecordError as exc:
                    result = self._corrupt(op, exc)
                except CoatcheckError as exc:
                    if isinstance(exc, StoreUnavailableError):
                        exc.retry_after = self.config.retry_after
                    raise
                except Exception as exc:  # any driver error is an outage to the caller
                    raise self._unavailable(op, exc) from exc
                op = flow.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        except ConflictError as exc:
            exc.retry_after = self.config.retry_after
            raise

    async def open(self, request: RequestView, *, form_csrf: str | None = None) -> lifecycle.Opened:
        flow = self.open_flow(request, form_csrf)
        if not self._watch_opens:
            # run(), inline: a flow that asks the store nothing (a sealed read) ends here.
            first = self._first(flow)
            if isinstance(first, tuple):
                return _logged(first[0])
            return _logged(await self._drive(flow, first))
        watch = Watch()
        opened = await self.run(watch.observe(flow))
        if watch.deleted:
            await self.fire(watch.expired(self.clock(), self.config))
        return _logged(opened)

    async def commit(self, session: Session) -> lifecycle.Committed:
        flow = self._commit_flow(session)
        if isinstance(flow, lifecycle.Committed):
            committed = flow  # a sealed read: nothing to seal, no flow
        else:
            # run(), inline: a commit that asks the store nothing (a sealed write) ends here.
            first = self._first(flow)
            if isinstance(first, tuple):
                committed = first[0]
            else:
                committed = await self._drive(flow, first)
        if self._follow_commits:
            found, follow = self._after_commit(session, committed)
            if found or follow is not None:
                await self._finish(found, follow)
        return committed

    async def issue_token(
        self,
        user_id: str,
        *,
        user_agent: str = "",
        ip: str = "",
        label: str = "",
        credential: str | bytes | None = None,
    ) -> str:
        """Create a bearer session for ``user_id`` and return its token; bound to
        ``credential`` when given, as by :func:`coatcheck.login`."""
        flow = self.issue_flow(user_id, user_agent, ip, label, credential)
        record, token = await self.run(flow)
        if self._follow_commits:
            await self._finish(*self._after_issue(record))
        return token

    async def perform(self, flow: Flow[tuple[T, list[SessionEvent]]]) -> T:
        """Run a flow that reports events with its value; fire the hooks, return the value."""
        value, found = await self.run(flow)
        await self.fire(found)
        return value

    async def fire(self, found: Sequence[Event]) -> None:
        """Call the hooks for these events, in order. Never raises."""
        if found and self.hooks.any_set:
            await fire_async(self.hooks, found)

    async def _finish(
        self, found: list[SessionEvent], follow: Flow[list[SessionEvent]] | None
    ) -> None:
        if follow is not None:
            try:
                found = [*found, *await self.run(follow)]
            except CoatcheckError as exc:
                log.warning(FOLLOW_UP_FAILED, exc)
        await self.fire(found)

    async def close(self) -> None:
        await self.store.close()


class SessionManager(_Manager):
    """The sync twin of :class:`AsyncSessionManager`, for WSGI and scripts."""

    def __init__(
        self,
        store: SyncStore,
        config: SessionConfig,
        *,
        clock: Clock = time.time,
        hooks: Hooks | None = None,
    ) -> None:
        super().__init__(config, clock, store, hooks)
        self.store = store
        self._blocking = getattr(store, "blocking", True) is not False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._hook_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _call(self, op: StoreOp) -> Any:
        method = getattr(self.store, op.method)
        if not self._blocking:
            return method(*op.args())
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=SYNC_STORE_THREADS, thread_name_prefix="coatcheck-store"
                    )
        patience = Patience()
        future = self._pool.submit(call_patiently, patience, method, op.args())
        try:
            return future.result(timeout=self.config.store_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # still queued: never run it
            # Already running: a store that honours Patience starts no statement from now on,
            # so a write answered 503 does not land later; one that landed just now is no 503.
            if patience.give_up():
                return future.result()
            raise TimeoutError(
                f"store {op.method} took longer than {self.config.store_timeout} s"
            ) from None

    def _written_now(self, op: StoreOp) -> tuple[Any] | None:
        """``(the answer,)`` of a write the store did at once in this thread, else ``None``."""
        if self._write_now is None:
            return None
        return self._write_now(op.method, op.args())

    def run(self, flow: Flow[T]) -> T:
        try:
            op = next(flow)
            while True:
                try:
                    result: Any = self._recalled(op)
                    if result is None:
                        done = self._written_now(op)
                        result = self._call(op) if done is None else done[0]
                except CorruptRecordError as exc:
                    result = self._corrupt(op, exc)
                except CoatcheckError as exc:
                    if isinstance(exc, StoreUnavailableError):
                        exc.retry_after = self.config.retry_after
                    raise
                except Exception as exc:  # any driver error is an outage to the caller
                    raise self._unavailable(op, exc) from exc
                op = flow.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        except ConflictError as exc:
            exc.retry_after = self.config.retry_after
            raise

    def open(self, request: RequestView, *, form_csrf: str | None = None) -> lifecycle.Opened:
        flow = self.open_flow(request, form_csrf)
        if not self._watch_opens:
            return _logged(self.run(flow))
        watch = Watch()
        opened = self.run(watch.observe(flow))
        if watch.deleted:
            self.fire(watch.expired(self.clock(), self.config))
        return _logged(opened)

    def commit(self, session: Session) -> lifecycle.Committed:
        flow = self._commit_flow(session)
        committed = flow if isinstance(flow, lifecycle.Committed) else self.run(flow)
        if self._follow_commits:
            found, follow = self._after_commit(session, committed)
            if found or follow is not None:
                self._finish(found, follow)
        return committed

    def issue_token(
        self,
        user_id: str,
        *,
        user_agent: str = "",
        ip: str = "",
        label: str = "",
        credential: str | bytes | None = None,
    ) -> str:
        flow = self.issue_flow(user_id, user_agent, ip, label, credential)
        record, token = self.run(flow)
        if self._follow_commits:
            self._finish(*self._after_issue(record))
        return token

    def perform(self, flow: Flow[tuple[T, list[SessionEvent]]]) -> T:
        value, found = self.run(flow)
        self.fire(found)
        return value

    def fire(self, found: Sequence[Event]) -> None:
        if found and self.hooks.any_set:
            fire_sync(self.hooks, found, self._hook_threads)

    def _finish(self, found: list[SessionEvent], follow: Flow[list[SessionEvent]] | None) -> None:
        if follow is not None:
            try:
                found = [*found, *self.run(follow)]
            except CoatcheckError as exc:
                log.warning(FOLLOW_UP_FAILED, exc)
        self.fire(found)

    def _hook_threads(self) -> concurrent.futures.Executor:
        """Where async hooks run, each in its own event loop (created on first use)."""
        if self._hook_pool is None:
            with self._pool_lock:
                if self._hook_pool is None:
                    self._hook_pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=HOOK_THREADS, thread_name_prefix="coatcheck-hook"
                    )
        return self._hook_pool

    def close(self) -> None:
        for pool in (self._pool, self._hook_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()
