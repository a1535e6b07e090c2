"""The thin drivers: run core flows against a store, async or sync.

Neither manager decides anything about sessions; both run the same flows from
:mod:`coatcheck._core.lifecycle` (or, for a ``sealed://`` store, from
:mod:`coatcheck._core.sealed_flow`) with one generic loop. The only difference between the twins is
``await``. Store failures, timeouts and unexpected driver errors all become
:class:`~coatcheck.errors.StoreUnavailableError` so the middleware can answer 503.

``store_timeout`` bounds every store call on both twins. The async manager cancels the call; the
sync one cannot interrupt a thread blocked in a driver, so it runs store calls on a small pool of
worker threads and stops waiting after ``store_timeout`` (the call finishes in the background,
bounded by the driver's own timeouts). A store that never blocks (the memory store) says so with a
``blocking = False`` attribute and is called directly, on both twins.

An outage (a store error, a timeout) is logged at WARNING; any other exception from a store is a
bug in that store, logged at ERROR with its traceback; both answer 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._core import lifecycle
from ._core.config import SessionConfig
from ._core.http import RequestView
from ._core.ops import Flow, StoreOp, corrupt_means_missing
from ._core.record import CorruptRecordError
from ._core.session import Session
from .errors import CoatcheckError, ConflictError, StoreUnavailableError
from .stores.base import AsyncStore, SyncStore
from .stores.sealed import AsyncSealedStore, SealedStore

if TYPE_CHECKING:
    from ._core.sealed_flow import SealedMode

T = TypeVar("T")
log = logging.getLogger("coatcheck")
SYNC_STORE_THREADS = 32
"""Worker threads of a sync manager's store calls: enough for a busy WSGI server's threads; when
all are stuck on a hung store, further calls wait in line and time out like the rest."""
Clock = Callable[[], float]


def _logged(opened: lifecycle.Opened) -> lifecycle.Opened:
    if opened.discarded is not None:
        log.warning("coatcheck: %s", opened.discarded)
    return opened


class _Manager:
    def __init__(self, config: SessionConfig, clock: Clock, store: object) -> None:
        self.config = config
        self.clock = clock
        self.sealed: SealedMode | None = None
        """The sealed flows, when the store is ``sealed://`` (sessions live in cookies)."""
        if isinstance(store, AsyncSealedStore | SealedStore):
            from ._core.sealed_flow import SealedMode  # needs the `sealed` extra (cryptography)

            self.sealed = SealedMode(config, revocations=store.revocations is not None)

    def _unavailable(self, op: StoreOp, exc: BaseException) -> StoreUnavailableError:
        if isinstance(exc, TimeoutError | OSError):
            log.warning("coatcheck store %s failed: %r", op.method, exc)
        else:
            log.error("coatcheck store %s raised unexpectedly", op.method, exc_info=exc)
        error = StoreUnavailableError(
            f"session store failed on {op.method}: {exc!r}", retry_after=self.config.retry_after
        )
        return error

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
        return lifecycle.open_session(request, self.config, self.clock(), form_csrf=form_csrf)

    def commit_flow(self, session: Session) -> Flow[lifecycle.Committed]:
        if self.sealed is not None:
            return self.sealed.commit(session, self.clock())
        return lifecycle.commit_session(session, self.config, self.clock())

    def issue_flow(self, user_id: str, user_agent: str, ip: str, label: str) -> Flow[str]:
        if self.sealed is not None:
            return self.sealed.issue_token()
        return lifecycle.issue_token(
            self.config, self.clock(), user_id=user_id, user_agent=user_agent, ip=ip, label=label
        )


class AsyncSessionManager(_Manager):
    """Opens and commits sessions on an :class:`~coatcheck.stores.base.AsyncStore`."""

    def __init__(
        self, store: AsyncStore, config: SessionConfig, *, clock: Clock = time.time
    ) -> None:
        super().__init__(config, clock, store)
        self.store = store
        self._blocking = getattr(store, "blocking", True) is not False

    async def run(self, flow: Flow[T]) -> T:
        """Drive a core flow: perform each store operation it yields, send back the result."""
        try:
            op = next(flow)
            while True:
                try:
                    if self._blocking:
                        async with asyncio.timeout(self.config.store_timeout):
                            result: Any = await getattr(self.store, op.method)(*op.args())
                    else:
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
        return _logged(await self.run(self.open_flow(request, form_csrf)))

    async def commit(self, session: Session) -> lifecycle.Committed:
        return await self.run(self.commit_flow(session))

    async def issue_token(
        self, user_id: str, *, user_agent: str = "", ip: str = "", label: str = ""
    ) -> str:
        """Create a bearer session for ``user_id`` and return its token."""
        return await self.run(self.issue_flow(user_id, user_agent, ip, label))

    async def close(self) -> None:
        await self.store.close()


class SessionManager(_Manager):
    """The sync twin of :class:`AsyncSessionManager`, for WSGI and scripts."""

    def __init__(
        self, store: SyncStore, config: SessionConfig, *, clock: Clock = time.time
    ) -> None:
        super().__init__(config, clock, store)
        self.store = store
        self._blocking = getattr(store, "blocking", True) is not False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
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
        future = self._pool.submit(method, *op.args())
        try:
            return future.result(timeout=self.config.store_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # still queued: never run it; already running: it ends on its own
            raise TimeoutError(
                f"store {op.method} took longer than {self.config.store_timeout} s"
            ) from None

    def run(self, flow: Flow[T]) -> T:
        try:
            op = next(flow)
            while True:
                try:
                    result: Any = self._call(op)
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
        return _logged(self.run(self.open_flow(request, form_csrf)))

    def commit(self, session: Session) -> lifecycle.Committed:
        return self.run(self.commit_flow(session))

    def issue_token(
        self, user_id: str, *, user_agent: str = "", ip: str = "", label: str = ""
    ) -> str:
        return self.run(self.issue_flow(user_id, user_agent, ip, label))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()
