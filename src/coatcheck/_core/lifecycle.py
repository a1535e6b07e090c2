"""Opening and committing sessions, as sans-I/O flows.

A *flow* is a generator that yields store operations (:class:`Get`, :class:`Put`,
:class:`Delete`), receives their results, and finally returns a value. The async and the sync
managers run the same flows with their own store (see :mod:`coatcheck.manager`), so every
decision about sessions lives here once, and neither driver has an ``if`` about sessions.

Rules written here:

- Expiry is decided from the record and ``now`` (:func:`is_expired`), idle and absolute together,
  never from cookie attributes.
- An unknown, forged, expired or wrong-transport token is never adopted: cookie requests get a
  fresh anonymous session (and the bad cookie cleared), bearer requests a 401.
- Pending flash messages are claimed with a conditional write when the session is opened, so a
  message is delivered to exactly one request even when several race.
- A request that did not change its session writes nothing, except to bump ``last_seen_at`` once
  per ``touch_interval``. Empty anonymous sessions are never stored.
- Writes are conditional on the record version. On conflict the flow re-reads and merges what
  this request changed into the newer record (three ways, see :mod:`coatcheck._core.merge`), at
  most ``max_write_retries`` times. A record that disappeared (logout, revocation) stays gone: a
  request in flight never brings it back.
- A bearer session keeps its token when it is regenerated (a login or a password change on it):
  the token was handed to the client in a response body, not planted in a browser, so there is no
  fixation to defend against, and a new token could not be delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConflictError, HTTPError, SessionDataError
from . import csrf, signin, tokens
from .config import SessionConfig
from .cookies import clear_cookie, parse_cookies, set_cookie
from .http import (
    RequestView,
    client_address,
    invalid_token_error,
    is_unsafe,
    presented_token,
)
from .memo import CHECKED, ParsedCookies, check_token
from .ops import Delete, Flow, Get, Put, Replace
from .record import SessionRecord, Transport
from .session import Changes, Session

USER_AGENT_MAX = 512


@dataclass(slots=True)
class Opened:
    """The outcome of opening: a session, or an error to answer with instead of running the app."""

    session: Session
    clear_cookie: bool = False
    error: HTTPError | None = None
    discarded: str | None = None
    """Why a stored session was not used although its token was right (its data does not match
    the configured schema): the driver logs it."""


@dataclass(slots=True)
class Committed:
    headers: list[tuple[str, str]] = field(default_factory=list)
    token: str | None = None
    record: SessionRecord | None = None
    """The session as this commit wrote it; ``None`` when nothing was written (session events
    are derived from it, see :mod:`coatcheck._core.events`)."""


# -- expiry ---------------------------------------------------------------------------------


def is_expired(record: SessionRecord, now: float, config: SessionConfig) -> bool:
    """The one place expiry is decided: idle and absolute timeouts, whichever comes first.

    The timeouts of the *current* configuration apply, so shortening them takes effect at once
    for sessions already issued.
    """
    idle, absolute = config.timeouts(remember=record.remember)
    return (
        now >= record.last_seen_at + idle
        or now >= record.created_at + absolute
        or now >= record.absolute_expires_at
    )


def _stamp(record: SessionRecord, now: float, config: SessionConfig) -> None:
    idle, _ = config.timeouts(remember=record.remember)
    record.last_seen_at = now
    record.expires_at = min(now + idle, record.absolute_expires_at)


def _valid(
    record: SessionRecord | None,
    secret_hash: str,
    transport: Transport,
    now: float,
    config: SessionConfig,
) -> bool:
    """Whether ``record`` opens for a token whose secret hashes to ``secret_hash``."""
    return (
        record is not None
        and tokens.hash_matches(secret_hash, record.secret_hash)
        and record.transport == transport
        and not is_expired(record, now, config)
    )


def new_record(
    *,
    now: float,
    config: SessionConfig,
    transport: Transport,
    user_id: str | None = None,
    data: dict[str, Any] | None = None,
    remember: bool = False,
    auth_time: float | None = None,
    user_agent: str = "",
    ip: str = "",
) -> tuple[SessionRecord, str]:
    """A fresh record (version 1) and the token that opens it."""
    remember = remember and config.allow_remember
    session_id, secret = tokens.new_id(), tokens.new_secret()
    _, absolute = config.timeouts(remember=remember)
    record = SessionRecord(
        id=session_id,
        secret_hash=tokens.hash_secret(secret),
        created_at=now,
        last_seen_at=now,
        expires_at=now,
        absolute_expires_at=now + absolute,
        version=1,
        user_id=user_id,
        data=dict(data or {}),
        csrf_token=tokens.new_csrf_token(),
        auth_time=auth_time,
        transport=transport,
        remember=remember,
        user_agent=user_agent[:USER_AGENT_MAX],
        ip=ip,
    )
    _stamp(record, now, config)
    return record, tokens.format_token(session_id, secret)


# -- open -----------------------------------------------------------------------------------


def open_session(
    request: RequestView,
    config: SessionConfig,
    now: float,
    *,
    form_csrf: str | None = None,
    cookie_memo: ParsedCookies | None = None,
) -> Flow[Opened]:
    """Find and check the request's session. Never raises for bad input from the client.

    ``cookie_memo``: ``Cookie`` headers parsed before (a :class:`ParsedCookies` kept by the caller);
    a header that carried a valid session is added to it.
    """
    user_agent = (request.get("user-agent") or "")[:USER_AGENT_MAX]
    ip = (
        client_address(request, config.trusted_proxies)
        if config.trusted_proxies
        else request.client_ip
    )

    cookie_headers = request.get_all("cookie")
    cookies = cookie_memo.get(cookie_headers) if cookie_memo is not None else None
    parsed_now = cookies is None
    if cookies is None:
        cookies = parse_cookies(cookie_headers)
    try:
        presented = presented_token(request, config, cookies)
    except HTTPError as error:
        return Opened(_anonymous("bearer", now, user_agent, ip), error=error)

    # _cross_site_problem's early exits first: a safe method that is no WebSocket handshake is
    # never checked (and needs no call).
    unsafe = is_unsafe(request.method)
    if unsafe or request.scheme in ("ws", "wss"):
        cross_site = _cross_site_problem(
            request, config, presented is not None and presented.transport == "bearer"
        )
        if cross_site is not None:
            return Opened(_anonymous("cookie", now, user_agent, ip), error=cross_site)
    if presented is None:
        return Opened(_anonymous("cookie", now, user_agent, ip))

    transport: Transport = presented.transport
    record: SessionRecord | None = None
    secret_hash = ""
    only_gone = True  # every token presented was well formed and names no stored session
    for value in presented.values:
        # A token that opened a session before: its id and hash, neither parsed nor hashed again.
        checked = CHECKED.get(value)
        if checked is None:
            checked = check_token(value)
            if checked is None:
                only_gone = False
                continue
            fresh_token = True
        else:
            fresh_token = False
        session_id, secret_hash = checked
        candidate = yield Get(session_id)
        if _valid(candidate, secret_hash, transport, now, config):
            record = candidate
            if fresh_token:
                CHECKED.keep(value, session_id, secret_hash)
            break
        only_gone = only_gone and candidate is None
        if (
            candidate is not None
            and is_expired(candidate, now, config)
            and tokens.hash_matches(secret_hash, candidate.secret_hash)
        ):
            yield Delete((candidate.id,))  # housekeeping: its owner proved it is theirs

    if record is None:
        if transport == "bearer":
            return Opened(_anonymous("bearer", now, user_agent, ip), error=invalid_token_error())
        # A cookie naming a session that is gone may be the one a login just replaced, on a
        # request sent before the login's answer arrived: clearing it would clear the new one.
        # It opens nothing and is left alone; malformed, forged and expired ones are cleared.
        return Opened(_anonymous("cookie", now, user_agent, ip), clear_cookie=not only_gone)
    if parsed_now and cookie_memo is not None and transport == "cookie":
        cookie_memo.keep(cookie_headers, cookies)  # a valid session: the browser resends the header

    if config.data_validator is not None:
        try:
            config.data_validator(record.data)
        except SessionDataError as exc:
            yield Delete((record.id,))
            reason = f"session {record.id} dropped: its data does not match the schema: {exc}"
            if transport == "bearer":
                return Opened(
                    _anonymous("bearer", now, user_agent, ip),
                    error=invalid_token_error(),
                    discarded=reason,
                )
            return Opened(
                _anonymous("cookie", now, user_agent, ip), clear_cookie=True, discarded=reason
            )

    flashes: list[Any] = []
    attempts = 0
    while record.flash:
        claimed = record.copy()
        claimed.flash = []
        claimed.version = record.version + 1
        _stamp(claimed, now, config)
        if (yield Put(claimed, record.version)):
            flashes = record.flash
            record = claimed
            break
        attempts += 1
        if attempts >= config.max_write_retries:
            raise ConflictError("could not claim flash messages: too many concurrent writes")
        fresh = yield Get(record.id)
        if fresh is None or not _valid(fresh, secret_hash, transport, now, config):
            if transport == "bearer":
                return Opened(
                    _anonymous("bearer", now, user_agent, ip), error=invalid_token_error()
                )
            return Opened(_anonymous("cookie", now, user_agent, ip), clear_cookie=True)
        record = fresh

    session = Session(
        record=record,
        transport=transport,
        now=now,
        user_agent=user_agent,
        ip=ip,
        flashes=flashes,
        snapshots=record.snapshots,  # a copy of a store's image: its values' snapshots, made once
    )
    session.presented_xsrf = cookies.get(config.csrf.cookie_name, [])
    if transport == "cookie" and unsafe and config.csrf.enabled:  # csrf.needs_check
        presented_csrf = csrf.presented_csrf_token(request, config.csrf) or form_csrf
        if not csrf.token_matches(presented_csrf, record.csrf_token):
            return Opened(session, error=csrf.csrf_error("missing or wrong CSRF token"))
    return Opened(session)


def _anonymous(transport: Transport, now: float, user_agent: str, ip: str) -> Session:
    return Session(record=None, transport=transport, now=now, user_agent=user_agent, ip=ip)


def _cross_site_problem(
    request: RequestView, config: SessionConfig, is_bearer: bool
) -> HTTPError | None:
    # A WebSocket handshake is a GET, but it opens a channel that can act for the user, and
    # browsers send it cross-site with cookies: its Origin is checked like an unsafe request's.
    websocket = request.scheme in ("ws", "wss")
    if is_bearer or not config.csrf.enabled:
        return None
    if not websocket and not csrf.needs_check(request, "cookie", config.csrf):
        return None
    problem = csrf.origin_problem(request, config.csrf)
    return csrf.csrf_error(problem) if problem is not None else None


# -- commit ---------------------------------------------------------------------------------


def _apply(
    base: SessionRecord, session: Session, changes: Changes, now: float, config: SessionConfig
) -> SessionRecord:
    """``base`` with exactly this request's changes on top: applied as they are on the record the
    request loaded, merged into a newer one (after a lost race).

    A shallow copy is enough: values that changed come from the session, and records are
    serialised by the store on write, so nothing here is shared with what is stored.
    """
    loaded = base is session._record
    data = changes.apply_to(base.data) if loaded else changes.merge_into(base.data)
    # Every field named (not dataclasses.replace, which costs twice as much on every write).
    new = SessionRecord(
        id=base.id,
        secret_hash=base.secret_hash,
        created_at=base.created_at,
        last_seen_at=base.last_seen_at,
        expires_at=base.expires_at,
        absolute_expires_at=base.absolute_expires_at,
        version=base.version + 1,
        user_id=session.user_id if session._user_changed else base.user_id,
        data=data,
        flash=[
            *session._unread_flashes,
            *([] if session._drop_stored_flashes else base.flash),
            *session._outgoing_flashes,
        ],
        csrf_token=tokens.new_csrf_token() if session._rotate_csrf else base.csrf_token,
        auth_time=session.auth_time if session._authenticated_now else base.auth_time,
        transport=base.transport,
        remember=session.remember,
        user_agent=base.user_agent,
        ip=base.ip,
        label=base.label,
        auth_hash=auth_hash_for(base, session, config),
    )
    _stamp(new, now, config)
    return new


def auth_hash_for(base: SessionRecord | None, session: Session, config: SessionConfig) -> str:
    """The credential fingerprint to store: the one this request signed in or re-bound with,
    none after a login without one or once the user changes otherwise, else the one stored."""
    credential, user_id = session._credential, session.user_id
    if credential is not None and user_id is not None:
        return signin.credential_fingerprint(config.secret, user_id, credential)
    if session._authenticated_now or session._user_changed or base is None:
        return ""
    return base.auth_hash


def _ended(session: Session, changes: Changes) -> Committed:
    """The session ended (logout, revocation, expiry, a login elsewhere moved it) while this
    request ran, so what it wrote is not stored. A request that only read gets its answer; one
    whose changes are dropped gets 409 instead of an answer that says they were saved."""
    if changes or session._outgoing_flashes or session._user_changed:
        raise session_ended_error()
    return Committed()


def session_ended_error() -> HTTPError:
    return HTTPError(
        409,
        {
            "error": "session_ended",
            "message": "the session ended while this request ran; nothing of it was saved",
        },
    )


def _fill(
    fresh: SessionRecord,
    current: SessionRecord,
    session: Session,
    changes: Changes,
    now: float,
    config: SessionConfig,
) -> None:
    """Make ``fresh`` (a new id and secret) carry ``current`` with this request's changes: the
    data, flash, user and auth time; the CSRF token unless rotated; the creation time unless the
    request is a login (a plain regenerate keeps the absolute timeout counting from the start)."""
    merged = _apply(current, session, changes, now, config)
    fresh.data, fresh.flash, fresh.user_id = merged.data, merged.flash, merged.user_id
    fresh.auth_time, fresh.auth_hash = merged.auth_time, merged.auth_hash
    if current is not fresh:
        if not session._authenticated_now:
            fresh.created_at = current.created_at
            fresh.absolute_expires_at = current.absolute_expires_at
        if not session._rotate_csrf:
            fresh.csrf_token = current.csrf_token
    fresh.version = 1
    _stamp(fresh, now, config)


def _cookie_headers(
    session: Session, record: SessionRecord, token: str | None, config: SessionConfig
) -> list[tuple[str, str]]:
    if session.transport != "cookie":
        return []
    headers: list[tuple[str, str]] = []
    if token is not None:
        persistent = record.remember and config.allow_remember
        max_age = int(config.remember_absolute_timeout) if persistent else None
        headers.append(
            (
                "set-cookie",
                set_cookie(config.cookie, config.cookie.effective_name, token, max_age=max_age),
            )
        )
    if config.csrf.enabled and session.presented_xsrf != [record.csrf_token]:
        headers.append(
            (
                "set-cookie",
                set_cookie(
                    config.cookie, config.csrf.cookie_name, record.csrf_token, http_only=False
                ),
            )
        )
    return headers


def clear_cookie_headers(config: SessionConfig) -> list[tuple[str, str]]:
    headers = [("set-cookie", clear_cookie(config.cookie, config.cookie.effective_name))]
    if config.csrf.enabled:
        headers.append(
            ("set-cookie", clear_cookie(config.cookie, config.csrf.cookie_name, http_only=False))
        )
    return headers


def commit_session(session: Session, config: SessionConfig, now: float) -> Flow[Committed]:
    """Write what the request changed and say which headers to send."""
    base = session._record
    if session._destroyed:
        if base is not None:
            yield Delete((base.id,))
        if session.transport != "cookie":
            return Committed()
        data, flash = session._carried_past_logout()
        if data or flash:
            # What the app put in the session after logout (a "signed out" flash) starts the
            # anonymous session that follows: nothing of the signed-in one is in it.
            record, token = new_record(
                now=now,
                config=config,
                transport="cookie",
                data=data,
                user_agent=session.user_agent,
                ip=session.ip,
            )
            record.flash = flash
            if not (yield Put(record, 0)):
                raise ConflictError("a freshly generated session id already exists")
            session.token = token
            return Committed(_cookie_headers(session, record, token, config), token)
        if base is not None or session.presented_xsrf:
            return Committed(clear_cookie_headers(config))
        return Committed()

    changes = session._changes()
    if config.data_validator is not None and (changes or base is None):
        config.data_validator(session._data_snapshot())
    rotate = session._regenerate and not (base is not None and session.transport == "bearer")
    if rotate or (base is None and session._needs_storing()):
        fresh, token = new_record(
            now=now,
            config=config,
            transport=session.transport,
            remember=session.remember,
            user_agent=session.user_agent,
            ip=session.ip,
        )
        if base is None:
            _fill(fresh, fresh, session, changes, now, config)
            if not (yield Put(fresh, 0)):
                raise ConflictError("a freshly generated session id already exists")
        else:
            # The new record takes the old one's place in one operation, conditional on the old
            # version: a write that landed on the old record since this request read it is merged
            # in (and a retry made) instead of being lost with the old record.
            current = base
            for _ in range(config.max_write_retries):
                _fill(fresh, current, session, changes, now, config)
                if (yield Replace(fresh, base.id, current.version)):
                    break
                moved: SessionRecord | None = yield Get(base.id)
                if (
                    moved is None
                    or moved.secret_hash != base.secret_hash
                    or is_expired(moved, now, config)
                ):
                    if not session._authenticated_now:
                        # A plain regenerate does not outlive a revocation.
                        return _ended(session, changes)
                    # A login is a fresh authentication: it proceeds from what it loaded.
                    _fill(fresh, base, session, changes, now, config)
                    if not (yield Put(fresh, 0)):
                        raise ConflictError("a freshly generated session id already exists")
                    break
                current = moved
            else:
                raise ConflictError(f"session {base.id} kept changing under this login; gave up")
        session.token = token
        return Committed(_cookie_headers(session, fresh, token, config), token, fresh)

    if base is None:
        return Committed()  # anonymous and empty: never stored, no cookie

    touch_due = now - base.last_seen_at >= config.effective_touch_interval
    if not (session._is_modified_by(changes) or touch_due):
        return Committed(_cookie_headers(session, base, None, config))

    current = base
    for _ in range(config.max_write_retries):
        updated = _apply(current, session, changes, now, config)
        if (yield Put(updated, current.version)):
            return Committed(_cookie_headers(session, updated, None, config), record=updated)
        reread: SessionRecord | None = yield Get(base.id)
        if (
            reread is None
            or is_expired(reread, now, config)
            or reread.secret_hash != base.secret_hash
        ):
            return _ended(session, changes)  # logged out or revoked meanwhile: not resurrected
        current = reread
    raise ConflictError(f"session {base.id} kept changing under this request; gave up")


def create_session(
    config: SessionConfig,
    now: float,
    *,
    user_id: str | None,
    transport: Transport,
    data: dict[str, Any] | None = None,
    remember: bool = False,
    user_agent: str = "",
    ip: str = "",
    label: str = "",
    credential: str | bytes | None = None,
) -> Flow[tuple[SessionRecord, str]]:
    """Store a new session (signed in as ``user_id`` now, when given, and bound to
    ``credential`` when given) and return it with its token: for bearer tokens, and for tests
    that sign a client in without a password."""
    record, token = new_record(
        now=now,
        config=config,
        transport=transport,
        user_id=user_id,
        data=data,
        remember=remember,
        auth_time=now if user_id is not None else None,
        user_agent=user_agent,
        ip=ip,
    )
    record.label = label
    if credential is not None and user_id is not None:
        record.auth_hash = signin.credential_fingerprint(config.secret, user_id, credential)
    if not (yield Put(record, 0)):
        raise ConflictError("a freshly generated session id already exists")
    return record, token


def issue_token(
    config: SessionConfig,
    now: float,
    *,
    user_id: str,
    user_agent: str = "",
    ip: str = "",
    label: str = "",
) -> Flow[str]:
    """Create a bearer session for ``user_id`` and return its token (for API clients)."""
    _, token = yield from create_session(
        config,
        now,
        user_id=user_id,
        transport="bearer",
        user_agent=user_agent,
        ip=ip,
        label=label,
    )
    return token
