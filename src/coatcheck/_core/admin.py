"""Session administration as sans-I/O flows: list, revoke, purge.

Used by the app-facing admin API (:mod:`coatcheck.admin`), the demo's "my sessions" page and the
``coatcheck`` CLI. Expired records are filtered here, because expiry is policy and lives in the
core, not in the stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import tokens
from .config import SessionConfig
from .events import RevokeReason, SessionEvent
from .lifecycle import is_expired
from .ops import Delete, Flow, Get, PurgeExpired, SessionsOf, Stats, UserIds
from .record import SessionRecord, Transport
from .stats import SessionStats


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What may be shown about a session: never its secret or token."""

    id: str
    user_id: str | None
    created_at: float
    last_seen_at: float
    expires_at: float
    auth_time: float | None
    user_agent: str
    ip: str
    transport: Transport
    remember: bool
    label: str

    @classmethod
    def of(cls, record: SessionRecord) -> SessionInfo:
        return cls(
            id=record.id,
            user_id=record.user_id,
            created_at=record.created_at,
            last_seen_at=record.last_seen_at,
            expires_at=record.expires_at,
            auth_time=record.auth_time,
            user_agent=record.user_agent,
            ip=record.ip,
            transport=record.transport,
            remember=record.remember,
            label=record.label,
        )


def sessions_of(user_id: str, config: SessionConfig, now: float) -> Flow[list[SessionInfo]]:
    """The user's live sessions, most recently seen first."""
    records: list[SessionRecord] = yield SessionsOf(user_id)
    live = [r for r in records if r.user_id == user_id and not is_expired(r, now, config)]
    live.sort(key=lambda r: r.last_seen_at, reverse=True)
    return [SessionInfo.of(r) for r in live]


def user_ids(now: float) -> Flow[list[str]]:
    """Users with at least one stored session that has not expired by ``now``."""
    found: list[str] = yield UserIds(now)
    return sorted(found)


def stats(now: float) -> Flow[SessionStats]:
    """How many sessions the store holds at ``now``: live, signed in, users, by transport, and
    expired ones awaiting purge (the rules are in :mod:`coatcheck._core.stats`)."""
    counted: SessionStats = yield Stats(now)
    return counted


def revoke(
    session_id: str, *, owner: str | None = None, now: float
) -> Flow[tuple[bool, list[SessionEvent]]]:
    """Delete one session; with ``owner``, only if it belongs to that user. True if deleted,
    with its ``"revoke"`` event. An id that is not the shape of a session id (it came from a URL:
    a NUL, a slash...) is no session, and never reaches a store."""
    if not tokens.is_session_id(session_id):
        return False, []
    record: SessionRecord | None = yield Get(session_id)
    if record is None or (owner is not None and record.user_id != owner):
        return False, []
    yield Delete((session_id,))
    return True, [SessionEvent.of("revoke", record, now)]


def revoke_all(
    user_id: str,
    *,
    keep: str | None = None,
    config: SessionConfig,
    now: float,
    reason: RevokeReason = "revoke-all",
) -> Flow[tuple[int, list[SessionEvent]]]:
    """Delete every session of ``user_id`` except ``keep`` (the current one); returns how many
    live sessions ended, with one event each (``reason``). Expired records not yet purged are
    deleted too, but neither counted nor reported: they had ended already."""
    records: list[SessionRecord] = yield SessionsOf(user_id)
    doomed = [r for r in records if r.user_id == user_id and r.id != keep]
    if not doomed:
        return 0, []
    yield Delete(tuple(r.id for r in doomed))
    ended = [SessionEvent.of(reason, r, now) for r in doomed if not is_expired(r, now, config)]
    return len(ended), ended


def purge_expired(
    now: float, batch: int = 500, max_batches: int | None = None
) -> Flow[tuple[int, list[SessionEvent]]]:
    """Delete expired records in bounded batches until none are left; returns the total, and
    one ``"purge"`` batch event when anything was deleted (the store does not say which)."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        deleted: int = yield PurgeExpired(now, batch)
        total += deleted
        batches += 1
        if deleted < batch:
            break
    if not total:
        return 0, []
    event = SessionEvent(reason="purge", session_id=None, user_id=None, at=now, count=total)
    return total, [event]
