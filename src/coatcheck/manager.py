"""The thin drivers: run core flows against a store, async or sync.

Neither manager decides anything about sessions; both run the same flows from
:mod:`coatcheck._core.lifecycle` with one generic loop. The only difference between the twins is
``await``. Store failures, timeouts and unexpected driver errors all become
:class:`~coatcheck.errors.StoreUnavailableError` so the middleware can answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._core import lifecycle
from ._core.config import SessionConfig
from ._core.http import RequestView
from ._core.ops import Flow, StoreOp, corrupt_means_missing
from ._core.record import CorruptRecordError
from ._core.session import Session
from .errors import CoatcheckError, ConflictError, StoreUnavailableError
from .stores.base import AsyncStore, SyncStore

T = TypeVar("T")
log = logging.getLogger("coatcheck")
Clock = Callable[[], float]


class _Manager:
    def __init__(self, config: SessionConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    def _unavailable(self, op: StoreOp, exc: BaseException) -> StoreUnavailableError:
        log.warning("coatcheck store %s failed: %r", op.method, exc)
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
        return lifecycle.open_session(request, self.config, self.clock(), form_csrf=form_csrf)

    def commit_flow(self, session: Session) -> Flow[lifecycle.Committed]:
        return lifecycle.commit_session(session, self.config, self.clock())

    def issue_flow(self, user_id: str, user_agent: str, ip: str, label: str) -> Flow[str]:
        return lifecycle.issue_token(
            self.config, self.clock(), user_id=user_id, user_agent=user_agent, ip=ip, label=label
        )


class AsyncSessionManager(_Manager):
    """Opens and commits sessions on an :class:`~coatcheck.stores.base.AsyncStore`."""

    def __init__(
        self, store: AsyncStore, config: SessionConfig, *, clock: Clock = time.time
    ) -> None:
        super().__init__(config, clock)
        self.store = store

    async def run(self, flow: Flow[T]) -> T:
        """Drive a core flow: perform each store operation it yields, send back the result."""
        try:
            op = next(flow)
            while True:
                try:
                    async with asyncio.timeout(self.config.store_timeout):
                        result: Any = await getattr(self.store, op.method)(*op.args())
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
        return await self.run(self.open_flow(request, form_csrf))

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
        super().__init__(config, clock)
        self.store = store

    def run(self, flow: Flow[T]) -> T:
        try:
            op = next(flow)
            while True:
                try:
                    result: Any = getattr(self.store, op.method)(*op.args())
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
        return self.run(self.open_flow(request, form_csrf))

    def commit(self, session: Session) -> lifecycle.Committed:
        return self.run(self.commit_flow(session))

    def issue_token(
        self, user_id: str, *, user_agent: str = "", ip: str = "", label: str = ""
    ) -> str:
        return self.run(self.issue_flow(user_id, user_agent, ip, label))

    def close(self) -> None:
        self.store.close()
