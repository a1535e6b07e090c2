"""Opening, committing and revoking sessions sealed into cookies, as sans-I/O flows.

The ``sealed://`` store keeps no session anywhere: the whole session travels in the cookie,
sealed by :mod:`coatcheck._core.sealed`. These flows are the sealed twins of
:mod:`coatcheck._core.lifecycle` and :mod:`coatcheck._core.admin`; the managers run them with the
same loop, and they yield store operations only for the optional *revocation record*.

Rules written here:

- A seal that does not open, has expired (idle and absolute, from its sealed times and the
  current configuration), or is revoked gives a fresh anonymous session and the cookie cleared.
  Bearer tokens are refused (401): a bearer client could not receive the re-sealed session that
  every write produces.
- A session is re-sealed when the request changed it, when ``last_seen_at`` is older than
  ``touch_interval``, when it was sealed with an older key, or when its flash messages were just
  delivered. Otherwise the response carries no session cookie.
- Nothing is merged: the cookie is client state, so of two requests writing at once, the response
  that reaches the browser last wins.
- A cookie never exceeds 4096 bytes: a larger session is refused with
  :class:`~coatcheck.errors.SessionTooLargeError` (413) and the browser keeps its previous cookie.
  A request that changes the session's data is refused :data:`SIGN_IN_HEADROOM` bytes earlier,
  so that what other requests add -- a sign-in (user id, auth time, credential fingerprint,
  remember-me ``Max-Age``), a flash message, a touch -- always fits: a full cart never makes a
  login, a re-login with remember-me or a page view fail. Flash messages never take that room:
  past the data limit the oldest are dropped (and logged), not the request refused.

The revocation record (with ``sealed://?revocations=<store URL>``): one record per user, under
the reserved id :func:`revocation_id` (never a valid token id), holding ``after`` (sessions issued
before it end, except the one named ``keep``) and ``deny`` (session id -> the seal's absolute
deadline, kept until then). It is read once per request of a signed-in seal, never for anonymous
ones, and written with compare-and-set by logout, revoke, revoke-all and a login or regenerate
that replaces a signed-in session's id (so copies of the old seal end, as a server store deletes
the old record). Without it, a copied cookie lives until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..errors import ConflictError, HTTPError, NotSupportedError, SessionTooLargeError
from . import csrf, tokens
from .config import SessionConfig
from .cookies import parse_cookies, set_cookie
from .http import (
    RequestView,
    client_address,
    invalid_token_error,
    is_unsafe,
    presented_token,
)
from .lifecycle import (
    USER_AGENT_MAX,
    Committed,
    Opened,
    auth_hash_for,
    clear_cookie_headers,
    is_expired,
)
from .memo import ParsedCookies
from .ops import Flow, Get, Put
from .record import SessionRecord
from .sealed import (
    OpenedSeals,
    SealedState,
    Sealer,
    dump_payload,
    encode_payload,
    json_size,
    load_payload,
    plain_json,
)
from .session import Session

MAX_COOKIE_BYTES = 4096
"""The longest ``Set-Cookie`` value written: name, value and attributes together. RFC 6265
(6.1) asks browsers to keep at least 4096 bytes per cookie counting all three; Chrome and Firefox
count name and value only, so this bound holds under every reading."""
SIGN_IN_HEADROOM = 256
"""Bytes a data write leaves free for what requests that write no data add (a sign-in with a
user id of up to 64 characters, remember-me, a flash message, a touch)."""
DATA_LIMIT = MAX_COOKIE_BYTES - SIGN_IN_HEADROOM
FLASH_DROPPED = (
    "coatcheck: %d flash message(s) dropped, the oldest first: with them the sealed session's "
    "cookie would take the room kept for a sign-in"
)
MAX_DENIED = 64
"""Deny entries kept per user; one more folds them into ``after`` (see :func:`_fold`)."""
REVOCATION_ID_PREFIX = "rv."
PURPOSE = "cookie"
log = logging.getLogger("coatcheck")

BEARER_REFUSED = (
    "bearer tokens are not used with sealed cookie sessions; use a server store for API tokens"
)
REVOKE_REFUSED = (
    "sealed sessions without a revocation record cannot be ended remotely (a copied cookie "
    "lives until it expires); add one: sealed://?revocations=<URL-encoded store URL>"
)


class SealedSession(Session):
    """A :class:`Session` opened from a seal, remembering what its commit needs to know."""

    __slots__ = ("fragments", "issued_at", "reseal", "revocations", "revocations_read")

    def __init__(
        self,
        *,
        record: SessionRecord | None,
        now: float,
        user_agent: str,
        ip: str,
        flashes: list[Any] | None = None,
        issued_at: float | None = None,
        reseal: bool = False,
        revocations: SessionRecord | None = None,
        revocations_read: bool = False,
        snapshots: dict[str, bytes] | None = None,
        fragments: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            record=record,
            transport="cookie",
            now=now,
            user_agent=user_agent,
            ip=ip,
            flashes=flashes,
            snapshots=snapshots,
        )
        self.fragments = fragments
        """The JSON text of each data value as sealed here, if it was (see ``encode_payload``)."""
        self.issued_at = issued_at
        """When this session id was issued (login or first write); revoke-all compares it."""
        self.reseal = reseal
        """Re-seal even if unchanged: sealed with an older key, or flash messages delivered."""
        self.revocations = revocations
        """The user's revocation record as read when opening (for a conditional write)."""
        self.revocations_read = revocations_read


# -- the revocation record ------------------------------------------------------------------


def revocation_id(user_id: str) -> str:
    """The reserved record id of ``user_id``'s revocations (27 characters).

    It holds a ``.``, so it is never the id part of a token and never opens as a session; it is
    a hash, so the store holds no user id in clear and the id does not change with the secrets.
    """
    digest = hashlib.sha256(b"coatcheck revocations\x00" + user_id.encode("utf-8")).digest()
    return REVOCATION_ID_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii")[:24]


@dataclass(slots=True)
class Revocations:
    """What a revocation record says: ``after`` (with ``keep``) and the ``deny`` list."""

    after: float | None = None
    keep: str | None = None
    deny: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, record: SessionRecord | None) -> Revocations | None:
        """The record's revocations; ``None`` when it is not a well-formed revocation record."""
        if record is None:
            return cls()
        data = record.data
        after, keep, deny = data.get("after"), data.get("keep"), data.get("deny", {})
        if (
            not (after is None or _is_number(after))
            or not (keep is None or isinstance(keep, str))
            or not isinstance(deny, dict)
            or not all(_is_number(v) for v in deny.values())
        ):
            return None
        return cls(after, keep, dict(deny))

    def revokes(self, session_id: str, issued_at: float) -> bool:
        if session_id in self.deny:
            return True
        return self.after is not None and issued_at < self.after and session_id != self.keep


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_revoked(record: SessionRecord | None, session_id: str, issued_at: float) -> bool:
    """Whether the user's revocation record ends this session (a malformed record ends it)."""
    revocations = Revocations.of(record)
    return revocations is None or revocations.revokes(session_id, issued_at)


def _longest_life(config: SessionConfig) -> float:
    return max(config.absolute_timeout, config.remember_absolute_timeout)


def _fold(revocations: Revocations, now: float) -> None:
    """Too many deny entries: end every session issued before ``now`` instead (the newest entry
    stays, in case its session was issued this very instant). The user's other devices are
    signed out once; the record stays small, since every signed-in request reads it."""
    newest = max(revocations.deny.items(), key=lambda item: item[1])
    revocations.after = now
    revocations.keep = None
    revocations.deny = dict([newest])


def _revocation_record(
    current: SessionRecord | None,
    revocations: Revocations,
    record_id: str,
    now: float,
    config: SessionConfig,
) -> SessionRecord:
    revocations.deny = {k: v for k, v in revocations.deny.items() if v > now}
    if len(revocations.deny) > MAX_DENIED:
        _fold(revocations, now)
    deadlines = list(revocations.deny.values())
    if revocations.after is not None:
        deadlines.append(revocations.after + _longest_life(config))
    # Past this, no seal it could refuse is alive: purge_expired and native TTLs may drop it.
    expires_at = max(deadlines, default=now)
    return SessionRecord(
        id=record_id,
        secret_hash="",  # matches no secret: a revocation record never opens as a session
        created_at=current.created_at if current is not None else now,
        last_seen_at=now,
        expires_at=expires_at,
        absolute_expires_at=expires_at,
        version=(current.version if current is not None else 0) + 1,
        data={"after": revocations.after, "keep": revocations.keep, "deny": revocations.deny},
        label="coatcheck revocation record",
    )


Edit = Callable[[Revocations], bool]
"""Changes revocations in place; ``False`` to write nothing after all."""


def edit_revocations(
    user_id: str,
    edit: Edit,
    now: float,
    config: SessionConfig,
    *,
    known: SessionRecord | None = None,
    known_read: bool = False,
) -> Flow[bool]:
    """Apply ``edit`` to ``user_id``'s revocation record with compare-and-set; retried on
    conflict. ``known`` is the record as already read this request (saves a round trip).
    Returns whether it was written."""
    record_id = revocation_id(user_id)
    current: SessionRecord | None = known if known_read else (yield Get(record_id))
    for _ in range(config.max_write_retries):
        revocations = Revocations.of(current) or Revocations(after=now)  # malformed: end all
        if not edit(revocations):
            return False
        updated = _revocation_record(current, revocations, record_id, now, config)
        if (yield Put(updated, current.version if current is not None else 0)):
            return True
        current = yield Get(record_id)
    raise ConflictError(f"the revocation record of user {user_id!r} kept changing; gave up")


# -- the mode the managers run ----------------------------------------------------------------


class SealedMode:
    """The sealed flows for one configuration: what the managers run for a ``sealed://`` store.

    ``revocations`` says whether a revocation record is kept (the store has a server store).
    """

    def __init__(self, config: SessionConfig, *, revocations: bool) -> None:
        self.config = config
        self.revocations = revocations
        self.sealer = Sealer(config.secrets, purpose=PURPOSE, name=config.cookie.effective_name)
        self.opened = OpenedSeals()
        """Cookie values opened recently, so that the same cookie is not decrypted again."""
        self.parsed = ParsedCookies((config.cookie.effective_name, config.csrf.cookie_name))
        """``Cookie`` headers that carried a valid seal, parsed, so a resent one is not parsed."""
        # Read on every request; the configuration is frozen.
        self._cookie_name = config.cookie.effective_name
        self._touch_interval = config.effective_touch_interval
        self._idle = {r: config.timeouts(remember=r)[0] for r in (False, True)}

    # -- open -------------------------------------------------------------------------------

    def open(self, request: RequestView, now: float, *, form_csrf: str | None) -> Flow[Opened]:
        """Open the request's seal. Never raises for bad input from the client."""
        config = self.config
        user_agent = (request.get("user-agent") or "")[:USER_AGENT_MAX]
        ip = (
            client_address(request, config.trusted_proxies)
            if config.trusted_proxies
            else request.client_ip
        )
        cookie_headers = request.get_all("cookie")
        cookies = self.parsed.get(cookie_headers)
        parsed_now = cookies is None
        if cookies is None:
            cookies = parse_cookies(cookie_headers, self.opened)
        try:
            presented = presented_token(request, config, cookies, self._cookie_name)
        except HTTPError as error:  # a malformed Authorization header
            return Opened(_anonymous(now, user_agent, ip), error=error)
        bearer = presented is not None and presented.transport == "bearer"
        csrf_config = config.csrf
        # What csrf.cross_site_error and csrf.needs_check decide, with their early exits first:
        # a safe method that is no WebSocket handshake is never checked.
        unsafe = is_unsafe(request.method)
        if csrf_config.enabled and not bearer and (unsafe or request.scheme in ("ws", "wss")):
            cross_site = csrf.cross_site_error(request, csrf_config, bearer=False)
            if cross_site is not None:
                return Opened(_anonymous(now, user_agent, ip), error=cross_site)
        if presented is None:
            return Opened(_anonymous(now, user_agent, ip))
        if bearer:
            return Opened(
                _anonymous(now, user_agent, ip), error=invalid_token_error(BEARER_REFUSED)
            )

        found: SealedState | None = None
        found_value = ""
        newest = False
        rv_record: SessionRecord | None = None
        rv_read = False
        for value in presented.values:  # several cookies of one name: the first valid one wins
            recalled = self.opened.recall(value)
            if recalled is None:
                opened = self.sealer.open(value)
                if opened is None:
                    continue
                loaded = load_payload(opened[0])
                if loaded is None:
                    continue
                self.opened.remember(value, loaded, opened[1])
                recalled = loaded, opened[1]
            state, is_newest = recalled
            if is_expired(state.record, now, config):
                continue  # checked before the revocation read: dead seals cost no round trip
            user_id = state.record.user_id
            if self.revocations and user_id is not None:
                read: SessionRecord | None = yield Get(revocation_id(user_id))
                if is_revoked(read, state.record.id, state.issued_at):
                    continue
                rv_record, rv_read = read, True
            found, newest, found_value = state, is_newest, value
            break
        if found is None:
            return Opened(_anonymous(now, user_agent, ip), clear_cookie=True)
        if parsed_now and self.opened.settled(found_value):
            # A valid seal sent more than once (not one a write replaces at once): the browser
            # will send this header again.
            self.parsed.keep(cookie_headers, cookies)

        record = found.record
        idle = self._idle[record.remember]
        record.expires_at = min(record.last_seen_at + idle, record.absolute_expires_at)
        # Flash messages are delivered now and leave the cookie with this response's re-seal.
        flashes, record.flash = record.flash, []
        session = SealedSession(
            record=record,
            now=now,
            user_agent=user_agent,
            ip=ip,
            flashes=flashes,
            issued_at=found.issued_at,
            reseal=not newest or bool(flashes),
            revocations=rv_record,
            revocations_read=rv_read,
            snapshots=found.snapshots,
            fragments=found.fragments,
        )
        session.presented_xsrf = cookies.get(csrf_config.cookie_name, [])
        if unsafe and csrf_config.enabled:  # csrf.needs_check for a cookie session
            presented_csrf = csrf.presented_csrf_token(request, config.csrf) or form_csrf
            if not csrf.token_matches(presented_csrf, record.csrf_token):
                return Opened(session, error=csrf.csrf_error("missing or wrong CSRF token"))
        return Opened(session)

    # -- commit -----------------------------------------------------------------------------

    def settled(self, session: Session, now: float) -> Committed | None:
        """The commit of a request that leaves the seal as it was (nothing changed, no touch,
        no re-seal due), or ``None`` when :meth:`commit` has work to do. A plain call, not a
        flow: a read commits without a generator."""
        if session._destroyed or session._regenerate:
            return None
        base = session._record
        if base is None:
            return None if session._needs_storing() else Committed()  # anonymous and empty
        if (
            (isinstance(session, SealedSession) and session.reseal)
            or now - base.last_seen_at >= self._touch_interval
            or session._is_modified_by(session._changes())
        ):
            return None
        return Committed(_xsrf_headers(session, base.csrf_token, self.config))

    def commit(self, session: Session, now: float, *, settled: bool = False) -> Flow[Committed]:
        """Re-seal what the request changed (or clear the cookie) and say which headers to send.

        ``settled``: :meth:`settled` was asked already (and said there is work to do)."""
        if not settled:
            answer = self.settled(session, now)
            if answer is not None:
                return answer
        config = self.config
        sealed = session if isinstance(session, SealedSession) else None
        known = sealed.revocations if sealed is not None else None
        known_read = sealed.revocations_read if sealed is not None else False
        base = session._record
        if session._destroyed:
            if base is not None and base.user_id is not None and self.revocations:
                old_id, deadline = base.id, base.absolute_expires_at
                yield from edit_revocations(
                    base.user_id,
                    lambda r: _deny(r, old_id, deadline),
                    now,
                    config,
                    known=known,
                    known_read=known_read,
                )
            data, flash = session._carried_past_logout()
            if data or flash:
                # As on a server store: what the app put in the session around the logout (a
                # "signed out" flash) starts the anonymous session that follows.
                carried = _anonymous_record(data, flash, now, config)
                value = self.sealer.seal(dump_payload(carried, now))
                cookie = set_cookie(config.cookie, config.cookie.effective_name, value)
                if len(cookie) <= DATA_LIMIT:
                    session.token = value
                    headers = [("set-cookie", cookie)]
                    return Committed(
                        [*headers, *_xsrf_headers(session, carried.csrf_token, config)]
                    )
            if base is not None or session.presented_xsrf:
                return Committed(clear_cookie_headers(config))
            return Committed()

        new_id = session._regenerate or base is None  # settled() answered the rest

        issued_at = _issued_at(sealed, base)
        record, issued_at = _next_record(session, new_id, issued_at, now, config)
        touched = _touched_keys(sealed)
        texts = sealed.fragments if sealed is not None and touched is not None else None
        plaintext, fragments = encode_payload(record, issued_at, texts, touched or ())
        value = self.sealer.seal(plaintext)
        max_age = max(0, int(record.absolute_expires_at - now)) if record.remember else None
        cookie = set_cookie(config.cookie, config.cookie.effective_name, value, max_age=max_age)
        dropped = 0
        while len(cookie) > DATA_LIMIT and record.flash:
            # Flash messages never take the room kept for what requests that write no data add
            # (SIGN_IN_HEADROOM): past DATA_LIMIT the oldest are dropped, rather than this
            # request or a later sign-in refused. (A client that never shows them, an API
            # client, filled the cookie with them and then could not sign in: attack round 8.)
            excess, flashes, cut = len(cookie) - DATA_LIMIT, record.flash, 0
            while cut < len(flashes) and excess > 0:
                excess -= (json_size(flashes[cut]) + 1) * 4 // 3  # its JSON and a comma, base64
                cut += 1
            record.flash = flashes[cut:]
            dropped += cut
            plaintext, fragments = encode_payload(record, issued_at, texts, touched or ())
            value = self.sealer.seal(plaintext)
            cookie = set_cookie(config.cookie, config.cookie.effective_name, value, max_age=max_age)
        if len(cookie) > DATA_LIMIT and (len(cookie) > MAX_COOKIE_BYTES or session._changes()):
            limit = DATA_LIMIT if len(cookie) <= MAX_COOKIE_BYTES else MAX_COOKIE_BYTES
            raise SessionTooLargeError(len(cookie), limit)
        if dropped:
            log.warning(FLASH_DROPPED, dropped)

        if new_id and base is not None and base.user_id is not None and self.revocations:
            # Copies of the old seal end with its id, as a server store deletes the old record.
            retire = _retire(
                base,
                _issued_at(sealed, base),
                record,
                login=session._authenticated_now,
            )
            written = yield from edit_revocations(
                base.user_id, retire, now, config, known=known, known_read=known_read
            )
            if not written:
                return Committed(clear_cookie_headers(config))

        # The browser sends this value next: its request skips base64 and AES-GCM, and JSON too
        # when the session is plain JSON (the common case: checking costs what was touched).
        exact = record if _opens_as_sealed(record, touched) else None
        self.opened.remember_sealed(value, plaintext, exact, issued_at, fragments)
        headers = [("set-cookie", cookie), *_xsrf_headers(session, record.csrf_token, config)]
        if new_id:
            session.token = value
            return Committed(headers, value, record)
        return Committed(headers, record=record)

    # -- tokens and admin -------------------------------------------------------------------

    def issue_token(self) -> NoReturn:
        """Bearer tokens need a server store; always raises :class:`NotSupportedError`."""
        raise NotSupportedError(BEARER_REFUSED)

    def revoke(self, session_id: str, *, owner: str | None, now: float) -> Flow[bool]:
        """End one sealed session of ``owner`` (needed: a seal cannot be looked up by id).

        Returns ``False`` for a malformed id; otherwise ``True``, since a sealed session cannot
        be known to exist: the deny entry is kept as long as any session could live.
        """
        if not self.revocations:
            raise NotSupportedError(REVOKE_REFUSED)
        if owner is None:
            raise NotSupportedError(
                "revoking a sealed session needs its owner's user id (revoke(id, owner=...))"
            )
        if not tokens.is_session_id(session_id):
            return False
        deadline = now + _longest_life(self.config)
        yield from edit_revocations(
            owner, lambda r: _deny(r, session_id, deadline), now, self.config
        )
        return True

    def revoke_all(self, user_id: str, *, keep: str | None, now: float) -> Flow[int]:
        """End every sealed session of ``user_id`` issued until now, except ``keep``.

        Returns 0: sealed sessions cannot be counted.
        """
        if not self.revocations:
            raise NotSupportedError(REVOKE_REFUSED)

        def end_all(revocations: Revocations) -> bool:
            revocations.after = now
            revocations.keep = keep
            return True

        yield from edit_revocations(user_id, end_all, now, self.config)
        return 0


def _anonymous(now: float, user_agent: str, ip: str) -> SealedSession:
    return SealedSession(record=None, now=now, user_agent=user_agent, ip=ip)


def _anonymous_record(
    data: dict[str, Any], flash: list[Any], now: float, config: SessionConfig
) -> SessionRecord:
    """A new anonymous sealed session holding ``data`` and ``flash``."""
    idle, absolute = config.timeouts(remember=False)
    return SessionRecord(
        id=tokens.new_id(),
        secret_hash="",
        created_at=now,
        last_seen_at=now,
        expires_at=now + min(idle, absolute),
        absolute_expires_at=now + absolute,
        version=1,
        user_id=None,
        data=data,
        flash=flash,
        csrf_token=tokens.new_csrf_token(),
        transport="cookie",
    )


def _issued_at(sealed: SealedSession | None, base: SessionRecord | None) -> float | None:
    if sealed is not None and sealed.issued_at is not None:
        return sealed.issued_at
    return base.created_at if base is not None else None


def _next_record(
    session: Session, new_id: bool, issued_at: float | None, now: float, config: SessionConfig
) -> tuple[SessionRecord, float]:
    """The session as the request left it, and when its id was issued.

    There is nothing to merge with (the cookie is the only copy), so the data is read through
    the mapping itself rather than rebuilt from recorded changes. A new session or a login
    starts the clocks again; a plain regenerate keeps them, so the absolute timeout and
    revoke-all still count from the start.
    """
    base = session._record
    remember = session.remember
    idle, absolute = config.timeouts(remember=remember)
    if base is None or issued_at is None or session._authenticated_now:
        created_at, absolute_expires_at, issued_at = now, now + absolute, now
    else:
        created_at, absolute_expires_at = base.created_at, base.absolute_expires_at
    if base is None:
        record_id, flash, csrf_token = tokens.new_id(), [], ""
    else:
        record_id = tokens.new_id() if new_id else base.id
        flash = [] if session._drop_stored_flashes else base.flash
        csrf_token = "" if session._rotate_csrf else base.csrf_token
    record = SessionRecord(
        id=record_id,
        secret_hash="",
        created_at=created_at,
        last_seen_at=now,
        expires_at=min(now + idle, absolute_expires_at),
        absolute_expires_at=absolute_expires_at,
        version=1,
        user_id=session.user_id,
        data=dict(session._data_snapshot()),  # typed views written back
        flash=[*session._unread_flashes, *flash, *session._outgoing_flashes],
        csrf_token=csrf_token or tokens.new_csrf_token(),
        auth_time=session.auth_time,
        transport="cookie",
        remember=remember,
        auth_hash=auth_hash_for(base, session, config),
    )
    return record, issued_at


def _touched_keys(sealed: SealedSession | None) -> set[str] | None:
    """The data keys whose values the request may have set or changed (handed out, assigned,
    deleted, added), or ``None`` for a session not opened from a seal (every value is new).
    Call after the data is final (typed views written back)."""
    if sealed is None or sealed._record is None:
        return None
    keys_loaded = sealed._keys_loaded
    if keys_loaded is None:
        return set()  # the data was never touched (typed() and every write touch it)
    handed_out = sealed._loaded
    return {k for k in sealed._data if k not in keys_loaded or k in handed_out}


def _opens_as_sealed(record: SessionRecord, touched: set[str] | None) -> bool:
    """Whether opening ``record``'s seal gives back equal values of the same types (see
    :func:`~coatcheck._core.sealed.plain_json`). Values that came out of a seal and that the
    request never touched are plain JSON already; only the rest are looked at."""
    if type(record.user_id) not in _PLAIN_ID or not plain_json(record.flash):
        return False
    data = record.data
    if touched is None:
        return plain_json(data)
    return all(plain_json(data[k]) for k in touched)


_PLAIN_ID = (str, type(None))


def _retire(
    base: SessionRecord, issued_at: float | None, new: SessionRecord, *, login: bool
) -> Edit:
    """The revocation edit for a signed-in session whose id is replaced by ``new``'s."""
    old_id, user_id = base.id, base.user_id
    old_issued = issued_at if issued_at is not None else base.created_at

    def retire(revocations: Revocations) -> bool:
        if not login and revocations.revokes(old_id, old_issued):
            return False  # revoked meanwhile: a plain regenerate must not outlive it
        if revocations.keep == old_id and new.user_id == user_id:
            revocations.keep = new.id  # the kept session moved to a new id
        return _deny(revocations, old_id, base.absolute_expires_at)

    return retire


def _deny(revocations: Revocations, session_id: str, deadline: float) -> bool:
    revocations.deny[session_id] = max(deadline, revocations.deny.get(session_id, deadline))
    return True


def _xsrf_headers(session: Session, token: str, config: SessionConfig) -> list[tuple[str, str]]:
    """The CSRF cookie, when the browser did not send exactly the session's token."""
    if config.csrf.enabled and session.presented_xsrf != [token]:
        value = set_cookie(config.cookie, config.csrf.cookie_name, token, http_only=False)
        return [("set-cookie", value)]
    return []
