"""Store operations that core flows yield, and the flow type.

Each operation names the store method that performs it, so a driver runs any flow with one
generic loop (see :mod:`coatcheck.manager`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar

from .record import SessionRecord

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Get:
    id: str
    method: ClassVar[str] = "get"

    def args(self) -> tuple[Any, ...]:
        return (self.id,)


@dataclass(frozen=True, slots=True)
class Put:
    record: SessionRecord
    expected_version: int
    method: ClassVar[str] = "put"

    def args(self) -> tuple[Any, ...]:
        return (self.record, self.expected_version)


@dataclass(frozen=True, slots=True)
class Replace:
    record: SessionRecord
    old_id: str
    old_version: int
    method: ClassVar[str] = "replace"

    def args(self) -> tuple[Any, ...]:
        return (self.record, self.old_id, self.old_version)


@dataclass(frozen=True, slots=True)
class Delete:
    ids: tuple[str, ...]
    method: ClassVar[str] = "delete"

    def args(self) -> tuple[Any, ...]:
        return self.ids


@dataclass(frozen=True, slots=True)
class SessionsOf:
    user_id: str
    method: ClassVar[str] = "sessions_of"

    def args(self) -> tuple[Any, ...]:
        return (self.user_id,)


@dataclass(frozen=True, slots=True)
class UserIds:
    now: float
    method: ClassVar[str] = "user_ids"

    def args(self) -> tuple[Any, ...]:
        return (self.now,)


@dataclass(frozen=True, slots=True)
class PurgeExpired:
    now: float
    batch: int
    method: ClassVar[str] = "purge_expired"

    def args(self) -> tuple[Any, ...]:
        return (self.now, self.batch)


@dataclass(frozen=True, slots=True)
class Stats:
    now: float
    method: ClassVar[str] = "stats"

    def args(self) -> tuple[Any, ...]:
        return (self.now,)


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    now: float
    window: float
    method: ClassVar[str] = "hit"

    def args(self) -> tuple[Any, ...]:
        return (self.key, self.now, self.window)


@dataclass(frozen=True, slots=True)
class ClearHits:
    key: str
    method: ClassVar[str] = "clear_hits"

    def args(self) -> tuple[Any, ...]:
        return (self.key,)


def corrupt_means_missing(op: StoreOp) -> bool:
    """Whether a record the store cannot decode for ``op`` is to be treated as no record.

    For :class:`Get` it is: a token pointing at a corrupt record opens nothing (an anonymous
    session or a 401), exactly like a token pointing nowhere, so a bad row never becomes a 500 or
    a session built from unchecked fields. For the other operations (``sessions_of`` lists a
    user's sessions) there is no safe stand-in, so the driver reports an unavailable store.
    """
    return isinstance(op, Get)


StoreOp: TypeAlias = (
    Get | Put | Replace | Delete | SessionsOf | UserIds | PurgeExpired | Stats | Hit | ClearHits
)
Flow: TypeAlias = Generator[StoreOp, Any, T]
