"""The Redis store's plans: one per store method, written once for the async and the sync twin.

A plan is a generator that yields a batch of Redis commands (one round trip: a pipeline, or a
single command), receives the replies, and finally returns the method's result. The async and the
sync store (:mod:`coatcheck.stores.redis`) only run plans, with and without ``await``, so the
logic below exists once. Key names come from :mod:`._redis_keys`, scripts from
:mod:`._redis_scripts`.

Rules the plans keep:

- Indexes may hold stale entries (a session deleted, moved to another user, or expired by Redis)
  but must not miss a live one. A write that (re)indexes a session sends its index entries
  *before* its conditional write in the same pipeline (Redis runs a connection's commands in
  order; on Cluster the per-node batches run side by side), with ``ZADD GT``. Readers skip the
  stale entries they meet; ``sessions_of`` drops those of sessions now owned by another user,
  never one whose record is missing (it may be a session being written right now).
- A write the stored record says is covered by its indexes (see :mod:`._redis_keys`) is the
  compare-and-set alone; the CAS script checks this on the stored hash and refuses when it does
  not hold, and the write is then sent again with its index entries. Which of the two to send
  first is guessed from the record the last ``get`` of this process returned (:class:`Hints`).
  A guess never decides correctness, only the number of commands.
- TTLs are housekeeping: the core decides expiry. ``put`` has no ``now``; it takes the record's
  own ``expires_at - last_seen_at`` as the remaining lifetime, so records written under a fake
  clock are not dropped by Redis's real one. TTLs are relative (``PEXPIRE``), never absolute.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

from redis.exceptions import NoScriptError

from .._core.memo import DECODED
from .._core.record import SessionRecord, record_from_json, record_to_json
from ._redis_keys import (
    COVER_SLACK,
    FIELD_EXPIRES_AT,
    FIELD_HORIZON,
    FIELD_RECORD,
    FIELD_USER,
    TTL_MARGIN,
    KeyLayout,
    horizon_of,
    index_horizon,
    owner_of,
)
from ._redis_scripts import (
    CAS,
    DELETED,
    EXPIRY_ADD,
    HIT,
    INDEX_ADD,
    LIVE,
    NOT_COVERED,
    NOT_REINDEXED,
    PURGE_RECORD,
    PUT_BACK,
    TAKE_IF_VERSION,
    UNINDEX_DUE,
    WRITTEN,
    Arg,
    Command,
    as_eval,
)

T = TypeVar("T")
K = TypeVar("K")

Plan: TypeAlias = Generator[list[Command], list[Any], T]

HINTS_SIZE = 4096

_SCAN_COUNT = 1000


# --- hints ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hint:
    """What this process last saw of a stored record: its version, its user, and a lower bound
    of the horizon its indexes cover (:func:`index_horizon` of it)."""

    version: int
    user_id: str | None
    horizon: float

    @classmethod
    def of(cls, record: SessionRecord) -> Hint:
        return cls(record.version, record.user_id, index_horizon(record))

    def covers(self, record: SessionRecord, expected_version: int) -> bool:
        """Whether writing ``record`` over the stored one most likely needs no index write."""
        return (
            expected_version != 0
            and self.version == expected_version
            and self.user_id == record.user_id
            and record.expires_at <= self.horizon
        )


class Hints:
    """A small, bounded, thread-safe map of session id -> :class:`Hint`, oldest dropped first.

    ``get`` (and a successful ``put``) leaves a hint, and the ``put`` or ``delete`` of the same
    request takes it. Hints only choose between sending a write with or without its index
    entries, and which user index a delete cleans at once; the stored hash decides what is
    correct, so a wrong or missing hint costs commands or a round trip, never correctness.
    """

    def __init__(self, size: int = HINTS_SIZE) -> None:
        self._size = size
        self._items: dict[str, Hint] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, session_id: str, hint: Hint) -> None:
        with self._lock:
            self._items.pop(session_id, None)
            self._items[session_id] = hint
            while len(self._items) > self._size:
                del self._items[next(iter(self._items))]

    def take(self, session_id: str) -> Hint | None:
        with self._lock:
            return self._items.pop(session_id, None)


class RecordCache(Protocol):
    """What the plans need of a client-side record cache (:mod:`._redis_cache`): a plan never
    waits on it, and a wrong answer from it is excluded by the cache's own rules."""

    def recall(self, key: str) -> SessionRecord | None: ...
    def peek(self, key: str) -> tuple[int, str | None, float, float] | None: ...
    def begin(self, key: str) -> Any: ...
    def finish(self, fill: Any, raw: str | bytes | None) -> None: ...
    def writing(self, key: str) -> Any: ...
    def written(self, fill: Any, raw: str | bytes | None) -> None: ...
    def forget(self, keys: Sequence[str]) -> None: ...


# --- helpers ------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return repr(float(value))


def _ttl_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _text(value: bytes | str) -> str:
    # Clients may be built with decode_responses on or off; accept both.
    return value.decode() if isinstance(value, bytes) else value


def _replies(commands: list[Command]) -> Plan[list[Any]]:
    """Send ``commands`` in one round trip and return their replies, errors included.

    A server that forgot our scripts (restarted, failed over, ``SCRIPT FLUSH``) answers NOSCRIPT
    without running anything, so those commands alone are re-sent as EVAL, in their order, which
    also caches the scripts again: one extra round trip, once per server.
    """
    if not commands:
        return []
    replies = list((yield commands))
    forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if forgotten:
        retried = yield [as_eval(commands[i]) for i in forgotten]
        for i, reply in zip(forgotten, retried, strict=True):
            replies[i] = reply
    return replies


def _batch(commands: list[Command]) -> Plan[list[Any]]:
    """Like :func:`_replies`, raising the first error reply."""
    replies = yield from _replies(commands)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _index_entries(
    keys: KeyLayout,
    session_id: str,
    user_id: str | None,
    expires_at: float,
    horizon: float,
    ttl_ms: int,
    now: float,
) -> list[Command]:
    """The index writes for one session; they run before its conditional write.

    The user index and ``users`` get ``horizon``, the expiry shard ``expires_at``; every key
    written is kept at least ``ttl_ms``.
    """
    trim = _number(now - TTL_MARGIN)
    commands = []
    if user_id is not None:
        score = _number(horizon)
        commands.append(INDEX_ADD.call([keys.user_index(user_id)], session_id, score, ttl_ms, trim))
        commands.append(INDEX_ADD.call([keys.users], user_id, score, ttl_ms, trim))
    shard = keys.expiry_shard(session_id)
    commands.append(EXPIRY_ADD.call(shard.keys, session_id, _number(expires_at), ttl_ms))
    return commands


def _group(pairs: Iterable[tuple[K, str]]) -> dict[K, list[str]]:
    grouped: dict[K, list[str]] = {}
    for key, member in pairs:
        grouped.setdefault(key, []).append(member)
    return grouped


# --- plans, one per store method -----------------------------------------------------------------


def recall(keys: KeyLayout, session_id: str, cache: RecordCache | None) -> SessionRecord | None:
    """The record of ``session_id`` from ``cache``, with no round trip, or ``None`` when it is
    not cached. Leaves no hint: a write that follows finds what it needs in the cache
    (:func:`_seen`), so a read, the common request, pays for nothing it does not use."""
    if cache is None:
        return None
    return cache.recall(keys.record(session_id))


def _seen(
    keys: KeyLayout, session_id: str, hints: Hints | None, cache: RecordCache | None
) -> Hint | None:
    """What this process last saw of the stored record of ``session_id``: the cache's copy when
    it holds one (the newest it knows of), else the hint a read or write left (taken either
    way). Call before the write forgets the key in the cache."""
    hint = hints.take(session_id) if hints is not None else None
    if cache is not None:
        cached = cache.peek(keys.record(session_id))
        if cached is not None:
            version, user_id, expires_at, last_seen_at = cached
            return Hint(version, user_id, horizon_of(expires_at, last_seen_at))
    return hint


def get_plan(
    keys: KeyLayout,
    session_id: str,
    hints: Hints | None = None,
    cache: RecordCache | None = None,
) -> Plan[SessionRecord | None]:
    """No round trip when ``cache`` holds the record; else one: ``HGET s:{id} d``, whose answer
    may fill the cache. Leaves a hint for the write that may follow."""
    record = recall(keys, session_id, cache)
    if record is not None:
        return record
    key = keys.record(session_id)
    raw = None
    fill = None if cache is None else cache.begin(key)
    try:
        (raw,) = yield from _batch([("HGET", key, FIELD_RECORD)])
    finally:
        if cache is not None:
            cache.finish(fill, raw)
    if raw is None:
        return None
    record = DECODED.decode(raw)
    if hints is not None:
        hints.remember(session_id, Hint.of(record))
    return record


def _cas_args(
    record: SessionRecord, expected_version: int, ttl_ms: int, raw: str
) -> tuple[Arg, ...]:
    return (
        str(expected_version),
        str(record.version),
        _number(record.expires_at),
        raw,
        ttl_ms,
        owner_of(record.user_id),
    )


def _record_ttl_ms(record: SessionRecord) -> tuple[float, int]:
    """The record's remaining lifetime by its own clock, and the TTL its key gets."""
    lifetime = max(record.expires_at - record.last_seen_at, 0.0)
    return lifetime, _ttl_ms(lifetime + TTL_MARGIN)


def _indexing_write(
    keys: KeyLayout, record: SessionRecord, expected_version: int, raw: str
) -> tuple[list[Command], float]:
    """The index writes of ``record`` followed by its CAS script (which records the horizon),
    and that horizon. ``raw`` is the record's JSON."""
    lifetime, ttl_ms = _record_ttl_ms(record)
    horizon = index_horizon(record)
    # How long the indexes must outlive this write: any TTL a later write may give the record
    # while its expires_at stays within the horizon, plus the slack.
    cover_ms = _ttl_ms(lifetime + horizon - record.expires_at + TTL_MARGIN + COVER_SLACK)
    indexing = _index_entries(
        keys, record.id, record.user_id, record.expires_at, horizon, cover_ms, record.last_seen_at
    )
    cas = CAS.call(
        [keys.record(record.id)],
        *_cas_args(record, expected_version, ttl_ms, raw),
        _number(horizon),
        cover_ms,
    )
    return [*indexing, cas], horizon


def _check_indexed(keys: KeyLayout, record_id: str, indexed: list[Any], written: Any) -> Plan[None]:
    """Raise the first failed index write; a record written anyway first loses its claim."""
    if isinstance(written, Exception):
        raise written
    failed = next((reply for reply in indexed if isinstance(reply, Exception)), None)
    if failed is not None:
        if written == WRITTEN:
            # The record now claims index entries that may be missing: drop the claim, so that
            # its next write indexes it again (best effort; the error is raised either way).
            yield from _replies([("HDEL", keys.record(record_id), FIELD_HORIZON)])
        raise failed


def put_plan(
    keys: KeyLayout,
    record: SessionRecord,
    expected_version: int,
    hints: Hints | None = None,
    cache: RecordCache | None = None,
) -> Plan[bool]:
    """See :func:`_put_plan`. With a cache, the record is forgotten while it is written, then
    cached as written (unless anything may have changed it meanwhile: see
    :meth:`~._redis_cache.ClientCache.written`)."""
    seen = _seen(keys, record.id, hints, cache)
    raw = record_to_json(record)
    if cache is None:
        return (yield from _put_plan(keys, record, expected_version, seen, hints, raw))
    fill = cache.writing(keys.record(record.id))
    written = False
    try:
        written = yield from _put_plan(keys, record, expected_version, seen, hints, raw)
    finally:
        cache.written(fill, raw if written else None)
    return written


def _put_plan(
    keys: KeyLayout,
    record: SessionRecord,
    expected_version: int,
    hint: Hint | None,
    hints: Hints | None,
    raw: str,
) -> Plan[bool]:
    """One round trip: the CAS script alone when the record's indexes cover the write, else the
    index writes and then the CAS script; two when the guess (``hints``) said covered and the
    stored hash disagreed.

    ``put`` has no ``now``: the record's ``last_seen_at`` stands in for it (the core sets it to
    the request's time, at most ``touch_interval`` ago), which keeps fake clocks working.
    """
    if hint is not None and hint.covers(record, expected_version):
        _lifetime, ttl_ms = _record_ttl_ms(record)
        cas = CAS.call(
            [keys.record(record.id)],
            *_cas_args(record, expected_version, ttl_ms, raw),
            NOT_REINDEXED,
        )
        (written,) = yield from _batch([cas])
        if written != NOT_COVERED:
            if written == WRITTEN and hints is not None:
                hints.remember(record.id, Hint(record.version, record.user_id, hint.horizon))
            return bool(written == WRITTEN)

    commands, horizon = _indexing_write(keys, record, expected_version, raw)
    *indexed, written = yield from _replies(commands)
    yield from _check_indexed(keys, record.id, indexed, written)
    if written == WRITTEN and hints is not None:
        hints.remember(record.id, Hint(record.version, record.user_id, horizon))
    return bool(written == WRITTEN)


def replace_plan(
    keys: KeyLayout,
    record: SessionRecord,
    old_id: str,
    old_version: int,
    hints: Hints | None = None,
    cache: RecordCache | None = None,
    *,
    barrier: bool = False,
) -> Plan[bool]:
    """See :func:`_replace_plan`. With ``barrier``, a replace that deleted a signed-in old
    record sends one more round trip to its node (see :func:`delete_plan`), so that no other
    process's cache serves the old id after this call returned.

    An anonymous old record (the ordinary login) gets no barrier: for the invalidation's flight
    time another process may still read it, which gives its holder only what it held (no user,
    no authority) and lets it write nothing (its compare-and-set finds the record gone). A login
    is then one round trip, as without the cache.

    With a cache, the new record is cached as written (as :func:`put_plan` does), so the
    session's next request reads it from memory."""
    old_key = keys.record(old_id)
    raw = record_to_json(record)
    # With a cache, the new record is cached as written, like a put's (the session's next
    # request reads it); the old one is forgotten before and after.
    fill = None
    if cache is not None:
        cache.forget([old_key])
        fill = cache.writing(keys.record(record.id))
    replaced = signed_in = False
    try:
        replaced, signed_in = yield from _replace_plan(
            keys, record, old_id, old_version, hints, raw
        )
    finally:
        if cache is not None and fill is not None:
            cache.forget([old_key])
            cache.written(fill, raw if replaced else None)
    if replaced and signed_in and barrier:
        yield from _batch([("EXISTS", old_key)])
    return replaced


def _replace_plan(
    keys: KeyLayout,
    record: SessionRecord,
    old_id: str,
    old_version: int,
    hints: Hints | None,
    raw: str,
) -> Plan[tuple[bool, bool]]:
    """One round trip when it succeeds: the new record's index writes and its insert, and the
    old record's delete if its version is still ``old_version`` (TAKE_IF_VERSION). Answers
    whether it replaced, and whether the old record was signed in.

    The two records live in different slots, so on Cluster this cannot be one script; the
    halves run side by side, and a half that happened alone is undone in a second round trip:
    the new record deleted when the old one had changed or gone (nobody holds the new token
    yet), the old record put back when the new id was taken. The old id's index entries are
    left to the readers and the sweeps, which drop entries of missing records; the new one is
    indexed before it is written, like any insert.
    """
    if hints is not None:
        hints.take(old_id)
    commands, horizon = _indexing_write(keys, record, 0, raw)
    old_key = keys.record(old_id)
    *indexed, written, taken = yield from _replies(
        [*commands, TAKE_IF_VERSION.call([old_key], str(old_version))]
    )
    if isinstance(taken, Exception):
        if written == WRITTEN:
            yield from _replies([("DEL", keys.record(record.id))])
        raise taken
    yield from _check_indexed(keys, record.id, indexed, written)
    if written == WRITTEN and taken:
        if hints is not None:
            hints.remember(record.id, Hint(record.version, record.user_id, horizon))
        _ttl, *fields = taken
        return True, FIELD_USER in (_text(name) for name in fields[::2])
    if written == WRITTEN:
        yield from _batch([("DEL", keys.record(record.id))])
    elif taken:
        ttl, *fields = taken
        yield from _batch([PUT_BACK.call([old_key], int(ttl), *(_text(f) for f in fields))])
    return False, False


def delete_plan(
    keys: KeyLayout,
    session_ids: tuple[str, ...],
    hints: Hints | None = None,
    *,
    in_order: bool = False,
    cache: RecordCache | None = None,
    barrier: bool = False,
) -> Plan[None]:
    """One round trip (each record's user and the record, its expiry entries), plus one to
    unindex the signed-in ones from their users' indexes.

    With ``in_order`` (one server: a pipeline runs in order) the user indexes named by ``hints``
    are cleaned in the first round trip, after the records are gone; the second one is then
    needed only for a session whose user changed since (or that had no hint).

    With ``barrier`` the second round trip is always sent, with an ``EXISTS`` of each deleted
    record on its node: once it is answered, Redis has long written its invalidations of the
    deleted records to every process's cache channel, so another process's next read cannot
    be served the deleted record (see :mod:`._redis_cache`).
    """
    ids = list(dict.fromkeys(session_ids))
    if not ids:
        return
    record_keys = [keys.record(i) for i in ids]
    seen = {i: _seen(keys, i, hints, cache) for i in ids}
    if cache is not None:
        cache.forget(record_keys)
    try:
        yield from _delete_plan(keys, ids, seen, in_order=in_order, barrier=barrier)
    finally:
        if cache is not None:
            cache.forget(record_keys)


def _delete_plan(
    keys: KeyLayout,
    ids: list[str],
    seen: dict[str, Hint | None],
    *,
    in_order: bool,
    barrier: bool,
) -> Plan[None]:
    guessed: dict[str, str] = {}
    for session_id in ids:
        hint = seen.get(session_id)
        if in_order and hint is not None and hint.user_id is not None:
            guessed[session_id] = hint.user_id
    shards = _group((keys.expiry_shard(i), i) for i in ids)
    commands: list[Command] = []
    for session_id in ids:
        commands += [
            ("HGET", keys.record(session_id), FIELD_USER),
            ("DEL", keys.record(session_id)),
        ]
    commands += [("ZREM", key, *members) for shard, members in shards.items() for key in shard.keys]
    commands += [
        ("ZREM", keys.user_index(user), *members)
        for user, members in _group((user, i) for i, user in guessed.items()).items()
    ]
    replies = yield from _batch(commands)
    owners = _group(
        (keys.user_index(_text(owner)), session_id)
        for session_id, owner in zip(ids, replies[: 2 * len(ids) : 2], strict=True)
        if owner is not None and guessed.get(session_id) != _text(owner)
    )
    follow_up: list[Command] = [("ZREM", index, *members) for index, members in owners.items()]
    if barrier:
        follow_up += [("EXISTS", keys.record(i)) for i in ids]
    yield from _batch(follow_up)


def sessions_of_plan(keys: KeyLayout, user_id: str) -> Plan[list[SessionRecord]]:
    """Two round trips (the index, then every record it names), plus one to drop the entries of
    sessions that now belong to another user.

    An entry whose record is missing is left in place: it may be a session being created right
    now, whose index entry is written before its record (on Cluster, on another node, in
    parallel). Dropping it would hide that live session from this index for good (from
    ``revoke_all`` and the session cap too). Entries of deleted records are removed by
    ``delete`` and ``purge_expired``; those of records Redis's TTL dropped, by the horizon trim of
    the index's next write, or with the index key's own TTL.
    """
    index = keys.user_index(user_id)
    (members,) = yield from _batch([("ZRANGE", index, 0, -1)])
    ids = [_text(member) for member in members]
    raws = yield from _batch([("HGET", keys.record(i), FIELD_RECORD) for i in ids])
    records: list[SessionRecord] = []
    stale: list[str] = []
    for session_id, raw in zip(ids, raws, strict=True):
        record = None if raw is None else record_from_json(raw)
        if record is None:
            continue
        if record.user_id == user_id:
            records.append(record)
        else:
            stale.append(session_id)
    if stale:
        # Safe: ids are never reused. A session handed back to this user between our read and
        # this ZREM loses its entry until it is indexed again (at the latest when a write moves
        # its expires_at past its index horizon).
        yield from _batch([("ZREM", index, *stale)])
    return records


def user_ids_plan(keys: KeyLayout, now: float) -> Plan[list[str]]:
    """The users with a session live at ``now``, exactly: ZSCAN the users set (one round trip
    per 1000 users), then one round trip for the candidates' index entries whose horizon is
    past ``now``, and one reading those sessions' expiry and owner.

    A horizon is an upper bound of its session's ``expires_at``, so a user or an entry scored at
    or below ``now`` has no live session behind it, and the records decide for the rest.
    """
    candidates: set[str] = set()
    cursor = 0
    now_arg = _number(now)
    while True:
        ((cursor, page),) = yield from _batch([("ZSCAN", keys.users, cursor, "COUNT", _SCAN_COUNT)])
        candidates.update(_text(member) for member, score in page if float(score) > now)
        if int(cursor) == 0:
            break
    users = sorted(candidates)
    pages = yield from _batch(
        [("ZRANGEBYSCORE", keys.user_index(user), f"({now_arg}", "+inf") for user in users]
    )
    entries = [
        (user, _text(member))
        for user, members in zip(users, pages, strict=True)
        for member in members
    ]
    fields = yield from _batch(
        [("HMGET", keys.record(i), FIELD_EXPIRES_AT, FIELD_USER) for _user, i in entries]
    )
    live: set[str] = set()
    for (user, _id), (expires_at, owner) in zip(entries, fields, strict=True):
        if (
            expires_at is not None
            and owner is not None
            and _text(owner) == user
            and float(_text(expires_at)) > now
        ):
            live.add(user)
    return sorted(live)


def purge_plan(
    keys: KeyLayout, now: float, batch: int, cache: RecordCache | None = None
) -> Plan[int]:
    """Delete up to ``batch`` records expired by ``now``; two or three round trips per pass.

    A pass reads due entries from every expiry shard (one round trip), runs the purge script on
    each candidate record and drops the shard entries that are still due (one round trip), then
    unindexes the deleted records from their users' indexes and indexes again the live records
    met early (one round trip, when needed). A live record is met when a write moved its
    ``expires_at`` without indexing it again, or when a write's index update was lost. Entries of
    records Redis already expired are dropped without counting; passes repeat until ``batch``
    records were deleted or nothing is due, and each pass shrinks the due set, so it ends.
    """
    deleted = 0
    now_arg = _number(now)
    while deleted < batch:
        wanted = batch - deleted
        pages = yield from _batch(
            [
                ("ZRANGEBYSCORE", shard.expiry, "-inf", now_arg, "LIMIT", 0, wanted)
                for shard in keys.expiry_shards
            ]
        )
        due = [
            (shard, _text(member))
            for shard, page in zip(keys.expiry_shards, pages, strict=True)
            for member in page
        ][:wanted]
        if not due:
            break
        ids = [session_id for _shard, session_id in due]
        if cache is not None:
            cache.forget([keys.record(i) for i in ids])
        replies = yield from _batch(
            [PURGE_RECORD.call([keys.record(i)], now_arg) for i in ids]
            + [
                UNINDEX_DUE.call(shard.keys, now_arg, *members)
                for shard, members in _group(due).items()
            ]
        )
        follow_up: list[Command] = []
        gone: list[tuple[str, str]] = []
        for session_id, reply in zip(ids, replies[: len(ids)], strict=True):
            status = int(reply[0])
            if status == DELETED:
                deleted += 1
                if len(reply) > 1:
                    gone.append((_text(reply[1]), session_id))
            elif status == LIVE:
                # Live: index it again at its real expiry, keeping what its hash claims (the
                # horizon, and a ttl covering whatever TTL writes may give it until indexed again).
                expires_at, record_ttl = float(_text(reply[1])), int(reply[2])
                horizon = max(float(_text(reply[3])), expires_at)
                owner = _text(reply[4]) if len(reply) > 4 else None
                ttl_ms = record_ttl if record_ttl > 0 else _ttl_ms(expires_at - now + TTL_MARGIN)
                follow_up += _index_entries(
                    keys, session_id, owner, expires_at, horizon, ttl_ms, now
                )
        for user, members in _group(gone).items():
            follow_up.append(("ZREM", keys.user_index(user), *members))
        if gone:
            users = sorted({user for user, _id in gone})
            follow_up.append(UNINDEX_DUE.call([keys.users], now_arg, *users))
        yield from _batch(follow_up)
    return deleted


def hit_plan(keys: KeyLayout, key: str, now: float, window: float) -> Plan[tuple[int, float]]:
    """One round trip: the HIT script (HINCRBY and PEXPIRE to the window end, atomically)."""
    ((count, ends),) = yield from _batch(
        [HIT.call([keys.hits(key)], _number(now), _number(now + window))]
    )
    return int(count), float(_text(ends))


def clear_hits_plan(keys: KeyLayout, key: str) -> Plan[None]:
    """One round trip: ``DEL h:{key}``."""
    yield from _batch([("DEL", keys.hits(key))])
