"""Session events for the hooks, and the work that follows a sign-in, as sans-I/O code.

The managers call the application's hooks (:class:`coatcheck.hooks.Hooks`) with the events
derived here, after the store change they describe has been made. Deciding *which* events
happened is policy, so it lives here; calling the hooks is I/O and lives in the drivers.

Rules written here:

- An event is derived from what a flow did, never from what it was asked to do: a login whose
  commit wrote nothing (the session was revoked meanwhile) is no login, and a revoke that found
  no session is no revocation.
- ``login`` is a committed :func:`coatcheck.auth.login` (or a bearer token issued for a user);
  its reason is ``"reauthentication"`` when the session was already signed in as that user
  (asking for the password again), ``"login"`` otherwise. ``logout`` is a committed
  :func:`coatcheck.auth.logout` of a signed-in session.
- ``revoke`` is reported once per session ended, with the reason (:data:`RevokeReason`), and
  once per action: two actions racing to end one session (an admin's revoke and the user's
  logout) are two events, because the store does not say which delete removed the record.
  Two reasons are batch events, where sessions are not known one by one: ``"purge"`` (the store
  deletes expired records in bulk: ``session_id`` and ``user_id`` are ``None``, ``count`` is how
  many were deleted) and a sealed ``"revoke-all"`` / ``"password-change"`` (no list of sealed
  sessions exists: ``session_id`` is ``None``, ``count`` is ``None``).
- ``new-device`` is a sign-in (not a reauthentication) from a device none of the user's other
  live sessions has: no other unexpired session of the user has both the same user agent string
  and the same client address. It needs the user's session list, so it costs one
  ``sessions_of`` per sign-in, and only when its hook is set.
- The session cap (``SessionConfig.max_sessions_per_user``): see :func:`after_sign_in`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeVar

from .config import SessionConfig
from .lifecycle import Committed, is_expired
from .ops import Delete, Flow, Get, SessionsOf
from .record import SessionRecord, Transport
from .session import Session
from .throttle import Decision

T = TypeVar("T")

RevokeReason = Literal["revoke", "revoke-all", "password-change", "expired", "purge", "cap"]
"""Why a session was ended by someone other than its user (``on_revoke``)."""
REVOKE_REASONS: frozenset[str] = frozenset(
    ("revoke", "revoke-all", "password-change", "expired", "purge", "cap")
)


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionEvent:
    """Something that happened to a session, as the hooks see it. Never holds a secret or a
    token: ``session_id`` is the public id (the one admin lists and "your devices" pages show).

    ``reason`` says what happened: ``"login"`` or ``"reauthentication"`` (``on_login``),
    ``"logout"`` (``on_logout``), ``"new-device"`` (``on_new_device``), or why a session was
    ended (``on_revoke``: one of :data:`RevokeReason`).
    """

    reason: str
    session_id: str | None
    """The session's public id; ``None`` for a batch event (``count`` sessions, ids unknown)."""
    user_id: str | None
    at: float
    """When it happened (the manager's clock, epoch seconds)."""
    user_agent: str = ""
    ip: str = ""
    transport: Transport | None = None
    """``"cookie"`` or ``"bearer"``; ``None`` for a batch event."""
    label: str = ""
    remember: bool = False
    count: int | None = 1
    """How many sessions the event covers: 1, except for batch events (``None``: unknown)."""

    @classmethod
    def of(cls, reason: str, record: SessionRecord, at: float) -> SessionEvent:
        """The event of one stored session."""
        return cls(
            reason=reason,
            session_id=record.id,
            user_id=record.user_id,
            at=at,
            user_agent=record.user_agent,
            ip=record.ip,
            transport=record.transport,
            label=record.label,
            remember=record.remember,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ThrottledEvent:
    """A login attempt refused by the login throttle (``on_throttled``)."""

    account: str | None
    """The account name as the application passed it to the guard."""
    ip: str | None
    retry_after: int
    """The seconds the client was told to wait."""
    at: float


Event: TypeAlias = SessionEvent | ThrottledEvent


# -- what a flow read and deleted -------------------------------------------------------------


class Watch:
    """Notes the records a flow read and the ids it deleted, without changing the flow."""

    __slots__ = ("deleted", "read")

    def __init__(self) -> None:
        self.read: dict[str, SessionRecord] = {}
        self.deleted: list[str] = []

    def observe(self, flow: Flow[T]) -> Flow[T]:
        """``flow``, yielding the same operations and returning the same value."""
        try:
            op = next(flow)
            while True:
                result = yield op
                if type(op) is Get:
                    if result is not None:
                        self.read[op.id] = result
                elif type(op) is Delete:
                    self.deleted.extend(op.ids)
                op = flow.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def expired(self, now: float, config: SessionConfig) -> list[SessionEvent]:
        """The ``"expired"`` events: presented sessions found expired and deleted."""
        return [
            SessionEvent.of("expired", self.read[session_id], now)
            for session_id in self.deleted
            if session_id in self.read and is_expired(self.read[session_id], now, config)
        ]


# -- commit and sign-in ---------------------------------------------------------------------------


def is_reauthentication(session: Session) -> bool:
    """The session was already signed in as the user who just signed in on it again."""
    base = session._record
    return base is not None and base.user_id is not None and base.user_id == session.user_id


def after_commit(
    session: Session,
    committed: Committed,
    config: SessionConfig,
    now: float,
    *,
    new_device: bool,
) -> tuple[list[SessionEvent], Flow[list[SessionEvent]] | None]:
    """The events of a commit, and the store work a sign-in needs after it (or ``None``).

    ``session`` is read after its commit; committing changes none of what is read here.
    """
    base = session._record
    if session.is_destroyed:
        if base is None or base.user_id is None:
            return [], None
        return [_request_event("logout", base, session, now)], None
    written = committed.record
    if not session._authenticated_now or written is None or written.user_id is None:
        return [], None
    if is_reauthentication(session):
        return [_request_event("reauthentication", written, session, now)], None
    login = _request_event("login", written, session, now)
    return [login], after_sign_in(written, config, now, new_device=new_device)


def _request_event(
    reason: str, record: SessionRecord, session: Session, now: float
) -> SessionEvent:
    """An event of the request's own session, with the request's device."""
    return SessionEvent(
        reason=reason,
        session_id=record.id,
        user_id=record.user_id,
        at=now,
        user_agent=session.user_agent,
        ip=session.ip,
        transport=session.transport,
        label=record.label,
        remember=record.remember,
    )


def needs_follow_up(config: SessionConfig, *, new_device: bool) -> bool:
    """Whether a sign-in is followed by store work (the cap, or new-device detection)."""
    return new_device or config.max_sessions_per_user is not None


def after_sign_in(
    record: SessionRecord, config: SessionConfig, now: float, *, new_device: bool
) -> Flow[list[SessionEvent]] | None:
    """What follows a committed sign-in: new-device detection and the session cap.

    Returns ``None`` when neither is wanted (no store call at all). Otherwise the flow lists the
    user's sessions once (after the new one was committed), decides whether the device is new
    (see the module rules), and enforces ``max_sessions_per_user`` by ending the least recently
    used of the *other* live sessions, by ``last_seen_at`` (ties broken by ``created_at``, then
    id, so every process orders them alike). The new session itself is never ended: the response
    about to carry its token must not carry a dead one.

    Why two logins racing on two processes never leave more than the cap once both finished:
    each login lists the sessions only after its own session is committed. Of two racing
    logins A and B, say B lists last; A's commit came before A's listing, which came before
    B's, so B's listing sees A's session and B's, and everything committed before. B then
    deletes all but ``cap`` of what it saw. Deletes only remove, so once both are done, what
    remains is at most B's ``cap`` survivors plus sessions committed after B's listing, and each
    of those is a login that enforces the cap in turn when it lists. The stores' user indexes
    never miss a committed live session (see :mod:`coatcheck.stores.base`), which is all this
    needs; no lock and no transaction across records, so it works alike on SQL and Redis
    Cluster. A store failure in this step is logged and leaves the cap to the next sign-in.
    """
    if not needs_follow_up(config, new_device=new_device):
        return None
    return _after_sign_in(record, config, now, new_device=new_device)


def _after_sign_in(
    record: SessionRecord, config: SessionConfig, now: float, *, new_device: bool
) -> Flow[list[SessionEvent]]:
    user_id = record.user_id
    if user_id is None:  # pragma: no cover - callers pass a signed-in record
        return []
    listed: list[SessionRecord] = yield SessionsOf(user_id)
    others = [
        r
        for r in listed
        if r.user_id == user_id and r.id != record.id and not is_expired(r, now, config)
    ]
    events: list[SessionEvent] = []
    if new_device and not any(
        r.user_agent == record.user_agent and r.ip == record.ip for r in others
    ):
        events.append(SessionEvent.of("new-device", record, now))
    cap = config.max_sessions_per_user
    if cap is not None and len(others) >= cap:
        others.sort(key=lambda r: (r.last_seen_at, r.created_at, r.id), reverse=True)
        doomed = others[cap - 1 :]
        yield Delete(tuple(r.id for r in doomed))
        events += [SessionEvent.of("cap", r, now) for r in doomed]
    return events


def throttled(
    account: str | None, ip: str | None, decision: Decision, now: float
) -> list[ThrottledEvent]:
    """The event of a refused login attempt; none for an allowed one."""
    if decision.allowed:
        return []
    retry_after = max(1, decision.retry_after)  # what the 429 says (throttle.throttled_error)
    return [ThrottledEvent(account=account, ip=ip, retry_after=retry_after, at=now)]


# -- hooks by event ---------------------------------------------------------------------------


HookName = Literal["on_login", "on_logout", "on_revoke", "on_new_device", "on_throttled"]


def hook_name(event: Event) -> HookName:
    """Which hook an event goes to."""
    if isinstance(event, ThrottledEvent):
        return "on_throttled"
    if event.reason in ("login", "reauthentication"):
        return "on_login"
    if event.reason == "logout":
        return "on_logout"
    if event.reason == "new-device":
        return "on_new_device"
    return "on_revoke"


def with_events(
    flow: Flow[T], events: Callable[[T], list[SessionEvent]]
) -> Flow[tuple[T, list[SessionEvent]]]:
    """``flow``'s value together with the events derived from it."""
    value = yield from flow
    return value, events(value)
