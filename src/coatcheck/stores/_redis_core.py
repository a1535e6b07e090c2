"""The Redis store's sans-I/O half: key layout, Lua scripts and one plan per store method.

A plan is a generator that yields a batch of Redis commands (one round trip: a pipeline, or a
single command), receives the replies, and finally returns the method's result. The async and the
sync store (:mod:`coatcheck.stores.redis`) only run plans, with and without ``await``, so the
logic below exists once.

Key layout (``P`` is the prefix, ``coatcheck:`` by default; ``n`` is crc32(id) mod 16)::

    P s:{<id>}       hash  v version, x expires_at, d record JSON, u user id (signed-in only),
                           i, b, l what the indexes were last written for (see below)
    P u:{<user_id>}  zset  session id -> index horizon        the user's sessions
    P users          zset  user id -> latest index horizon     who has sessions
    P expiry:{n}     zset  session id -> expires_at           what purge_expired looks for
    P lapse:{n}      zset  session id -> ms when Redis's TTL   which expiry entries are surely
                           drops the record (Redis's clock)    dead (swept as writes pass by)
    P h:{<key>}      hash  n count, e window end                a hit counter

Rules this layout keeps:

- The record key is the truth, and every script that touches it touches nothing else. A session
  and its user's index live in different slots in general, so no write could update both
  atomically on Redis Cluster; correctness therefore never depends on an index. The only script
  with two keys works on an expiry shard pair, which shares the ``{n}`` hash tag (one slot).
- Indexes may hold stale entries (a session deleted, moved to another user, or expired by Redis)
  but must not miss a live one. A write that (re)indexes a session sends its index entries
  *before* its conditional write in the same pipeline (Redis runs a connection's commands in
  order; on Cluster the per-node batches run side by side), with ``ZADD GT``. Readers drop the
  stale entries they meet.
- Index entries are written ahead, not on every write. A user index and ``users`` score a session
  by its *index horizon*: ``expires_at`` rounded up to a bucket (a power of two of seconds near
  10% of the remaining lifetime, 64 s to 4096 s; none for a record written already expired), an
  upper bound of its ``expires_at`` until a write moves ``expires_at`` past it. The record
  remembers what its indexes were written for: ``i`` the owner (``@<user id>``, or ``-`` for
  anonymous), ``b`` the horizon and ``l`` until when (Redis ms, the record node's clock) the index
  keys and the lapse entry outlive any TTL the record may get. A write the stored record says is
  covered (same owner, ``expires_at <= b``, new TTL ending by ``l``) is the compare-and-set
  alone; the CAS script checks this on the stored hash and refuses (``-1``, nothing written) when
  it does not hold, and the write is then sent again with its index entries. Which of the two to
  send first is guessed from the record the last ``get`` of this process returned
  (:class:`Hints`): ``b`` is on a bucket grid and at or above the stored ``expires_at``, so it is
  at or above ``index_horizon`` of that record. A guess never decides correctness, only the
  number of commands.
- The expiry shard holds ``expires_at`` as of the last (re)indexing write: at most the record's
  real ``expires_at``, which moves forward as the session is used, so ``purge_expired`` does not
  miss an expired record. It may meet a live one early; it then scores it again.
- Indexes clean themselves without ``purge_expired``: a write to a user index or ``users`` drops
  entries whose horizon ended more than ``TTL_MARGIN`` before the writer's time (the contract
  lets ``sessions_of`` omit expired records), and a write to an expiry shard drops the entries
  whose records Redis's TTL has certainly removed, judged by Redis's own clock. An expiry entry is
  never dropped while its record may still exist, so ``purge_expired`` counts exactly even when
  a test's fake clock jumps.
- TTLs are housekeeping: the core decides expiry. ``put`` has no ``now``; it takes the record's
  own ``expires_at - last_seen_at`` as the remaining lifetime, so records written under a fake
  clock are not dropped by Redis's real one. TTLs are relative (``PEXPIRE``), never absolute.
"""

from __future__ import annotations

import hashlib
import math
import threading
import zlib
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

from redis.exceptions import NoScriptError

from .._core.record import SessionRecord, record_from_json, record_to_json
from ..errors import ConfigurationError

T = TypeVar("T")
K = TypeVar("K")

Arg: TypeAlias = str | int
Command: TypeAlias = tuple[Arg, ...]
Plan: TypeAlias = Generator[list[Command], list[Any], T]

DEFAULT_PREFIX = "coatcheck:"
EXPIRY_SHARDS = 16
TTL_MARGIN = 60.0
"""Seconds every key outlives the expiry it was written for: absorbs clock skew between app
servers, and leaves expired records for ``purge_expired`` to count under a test's fake clock."""

INDEX_BUCKET_SHARE = 0.1
INDEX_BUCKET_MIN = 64.0
INDEX_BUCKET_MAX = 4096.0
"""A session is indexed with its ``expires_at`` rounded up to a bucket: the largest power of two
of seconds within 10% of its remaining lifetime, from 64 s to 4096 s (128 s for a 30-minute idle
timeout). Writes that stay within the bucket leave the indexes alone; an index entry outlives its
record by less than a bucket (stale entries are dropped when met). Powers of two nest: a horizon
on a coarser grid lies on every finer one, so a shrinking lifetime never breaks a guess."""

COVER_SLACK = 60.0
"""Seconds of Redis time the index keys and the lapse entry outlive the index horizon, so that a
write the horizon covers by the app's clock is covered by Redis's clock too (request jitter, the
two clocks drifting apart); the CAS script checks it exactly and refuses what it does not cover."""

ANONYMOUS = "-"
"""The stored owner (field ``i``) of an anonymous session; a signed-in one's is ``@<user id>``."""

HINTS_SIZE = 4096

_SCAN_COUNT = 1000


# --- Lua scripts -------------------------------------------------------------------------------
# Numbers travel as decimal strings formatted by Python (repr of a float round-trips exactly).
# Scripts never reply with a fractional Lua number (Redis would truncate it to an integer) and
# never hand a computed Lua number to a command that wants an integer (how Redis formats Lua
# numbers differs between versions): they pass ARGV strings or string.format('%d', ...).


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A one-key Lua script, called by SHA; the source is kept for the EVAL fallback."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    def call(self, keys: Sequence[str], *args: Arg) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


CAS = LuaScript(
    "cas",
    """
-- Write a session record if the stored version is the one the caller read.
-- ARGV: expected version ('0' = insert only), new version, expires_at, record JSON, ttl ms,
-- owner ('@' .. user id, or '-'), then either index horizon and coverage ttl ms (the caller
-- (re)indexed the session in this pipeline) or '' (it did not: the indexes must already cover
-- this write). Returns 1 when written, 0 when another request won or the record is gone, -1 when
-- nothing was written because the indexes do not cover the write.
local stored = redis.call('HMGET', KEYS[1], 'v', 'u', 'i', 'b', 'l')
if ARGV[1] == '0' then
  if stored[1] then return 0 end
elseif stored[1] ~= ARGV[1] then
  return 0
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local owner = ARGV[6]
if ARGV[7] == '' then
  local user_owner = '-'
  if stored[2] then user_owner = '@' .. stored[2] end
  if stored[3] ~= owner or user_owner ~= owner or not stored[4] or not stored[5]
      or tonumber(stored[4]) < tonumber(ARGV[3])
      or tonumber(stored[5]) < now_ms + tonumber(ARGV[5]) then
    return -1
  end
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'x', ARGV[3], 'd', ARGV[4])
else
  local covered = string.format('%d', now_ms + tonumber(ARGV[8]))
  if owner == '-' then
    if stored[2] then redis.call('HDEL', KEYS[1], 'u') end
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 'x', ARGV[3], 'd', ARGV[4],
      'i', owner, 'b', ARGV[7], 'l', covered)
  else
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 'x', ARGV[3], 'd', ARGV[4],
      'i', owner, 'b', ARGV[7], 'l', covered, 'u', string.sub(owner, 2))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
""",
)

INDEX_ADD = LuaScript(
    "index_add",
    """
-- Add a member to a user index or to users (scored by its index horizon), never lowering its
-- score, drop members whose horizon ended long ago by the writer's clock, and make the index
-- outlive everything written into it. ARGV: member, score, ttl ms, trim bound (members scored
-- below it go).
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
""",
)

EXPIRY_ADD = LuaScript(
    "expiry_add",
    """
-- Add a session to its expiry shard pair (KEYS[1] expiry, KEYS[2] lapse: one slot), then sweep
-- up to 100 entries whose records Redis's TTL has certainly dropped, by Redis's clock with a
-- minute of grace for clock skew between nodes. ARGV: member, expires_at, ttl ms (how long the
-- record may live from now, whatever TTL later writes give it before it is indexed again).
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', now_ms + ttl, ARGV[1])
local dropped = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms - 60000, 'LIMIT', 0, 100)
if #dropped > 0 then
  redis.call('ZREM', KEYS[1], unpack(dropped))
  redis.call('ZREM', KEYS[2], unpack(dropped))
end
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return 1
""",
)

UNINDEX_DUE = LuaScript(
    "unindex_due",
    """
-- Remove members whose score in KEYS[1] is still <= now (a concurrent write may have raised it
-- meanwhile) from KEYS[1] and from every other key given (same slot). ARGV: now, member...
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    for k = 1, #KEYS do
      redis.call('ZREM', KEYS[k], ARGV[i])
    end
    removed = removed + 1
  end
end
return removed
""",
)

PURGE_RECORD = LuaScript(
    "purge_record",
    """
-- Delete a session record if it expired by now. ARGV: now. Returns {0} when missing,
-- {1, user id?} when deleted, {2, expires_at, ttl ms, index horizon, user id?} when still live;
-- the ttl covers whatever TTL a write may give the record before it is indexed again.
local stored = redis.call('HMGET', KEYS[1], 'x', 'u', 'b', 'l')
local expires, user = stored[1], stored[2]
if not expires then return {0} end
if tonumber(expires) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  if user then return {1, user} end
  return {1}
end
local ttl = redis.call('PTTL', KEYS[1])
if stored[4] then
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  ttl = math.max(ttl, tonumber(stored[4]) - now_ms)
end
local horizon = stored[3] or expires
if user then return {2, expires, ttl, horizon, user} end
return {2, expires, ttl, horizon}
""",
)

HIT = LuaScript(
    "hit",
    """
-- Count one event in a fixed window that starts at the first hit.
-- ARGV: now, the window end should this hit open a new window. Returns {count, window end}.
local now = tonumber(ARGV[1])
local ends = redis.call('HGET', KEYS[1], 'e')
if not ends or tonumber(ends) <= now then
  ends = ARGV[2]
  redis.call('HSET', KEYS[1], 'n', 0, 'e', ends)
end
local count = redis.call('HINCRBY', KEYS[1], 'n', 1)
local ttl = math.max(1, math.ceil((tonumber(ends) - now) * 1000))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {count, ends}
""",
)

TAKE_IF_VERSION = LuaScript(
    "take_if_version",
    """
-- Delete a session record if its stored version is ARGV[1] (the old half of a replace).
-- Returns 0 when missing or another version, else {ttl ms, field, value, ...}: what it deleted,
-- so that the caller can put it back if the new half of the replace failed.
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
local taken = redis.call('HGETALL', KEYS[1])
table.insert(taken, 1, redis.call('PTTL', KEYS[1]))
redis.call('DEL', KEYS[1])
return taken
""",
)

PUT_BACK = LuaScript(
    "put_back",
    """
-- Put back a record TAKE_IF_VERSION deleted, unless the key exists again. ARGV: ttl ms, field,
-- value, ... Returns 1 when put back.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
""",
)

SCRIPTS = (CAS, INDEX_ADD, EXPIRY_ADD, UNINDEX_DUE, PURGE_RECORD, HIT, TAKE_IF_VERSION, PUT_BACK)
_SOURCE_BY_SHA = {script.sha: script.source for script in SCRIPTS}


# --- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiryShard:
    """One of the 16 expiry shards: two sorted sets sharing a hash tag, so one slot."""

    expiry: str
    lapse: str

    @property
    def keys(self) -> tuple[str, str]:
        return (self.expiry, self.lapse)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Every key name the store uses, under one prefix.

    The prefix may not contain ``{`` or ``}``: Redis Cluster hashes the first ``{...}`` of a key,
    so a brace in the prefix would silently change which part of each key picks its slot.
    """

    prefix: str = DEFAULT_PREFIX
    expiry_shards: tuple[ExpiryShard, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise ConfigurationError(f"the Redis key prefix must be a string, not {self.prefix!r}")
        if "{" in self.prefix or "}" in self.prefix:
            raise ConfigurationError(
                f"the Redis key prefix {self.prefix!r} may not contain '{{' or '}}' "
                "(Redis Cluster would hash it as a hash tag)"
            )
        shards = tuple(
            ExpiryShard(f"{self.prefix}expiry:{{{n}}}", f"{self.prefix}lapse:{{{n}}}")
            for n in range(EXPIRY_SHARDS)
        )
        object.__setattr__(self, "expiry_shards", shards)

    def record(self, session_id: str) -> str:
        return f"{self.record_prefix}{{{session_id}}}"

    @property
    def record_prefix(self) -> str:
        """What every record key starts with: what the client cache tracks."""
        return f"{self.prefix}s:"

    def user_index(self, user_id: str) -> str:
        return f"{self.prefix}u:{{{user_id}}}"

    @property
    def users(self) -> str:
        return f"{self.prefix}users"

    def expiry_shard(self, session_id: str) -> ExpiryShard:
        # crc32, not hash(): every process must pick the same shard for an id.
        return self.expiry_shards[zlib.crc32(session_id.encode()) % EXPIRY_SHARDS]

    def hits(self, key: str) -> str:
        return f"{self.prefix}h:{{{key}}}"


# --- index horizons and hints --------------------------------------------------------------------


def owner_of(user_id: str | None) -> str:
    """What field ``i`` holds for a session of ``user_id`` (``None``: anonymous)."""
    return ANONYMOUS if user_id is None else "@" + user_id


def index_horizon(record: SessionRecord) -> float:
    """The score a (re)indexing write gives ``record`` in its user index and in ``users``: its
    ``expires_at`` rounded up to its bucket.

    Also a guess at what a stored record is covered by: every write leaves the stored horizon
    (field ``b``) on the grid of the last indexing write and at or above ``expires_at``, so, the
    grids being nested, at or above ``index_horizon`` of the stored record.
    """
    lifetime = record.expires_at - record.last_seen_at
    if lifetime <= 0:
        return record.expires_at  # written already expired: no later write will extend it
    share = min(max(lifetime * INDEX_BUCKET_SHARE, INDEX_BUCKET_MIN), INDEX_BUCKET_MAX)
    bucket = 2.0 ** math.floor(math.log2(share))
    return math.ceil(record.expires_at / bucket) * bucket


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

    def lookup(self, key: str) -> str | bytes | None: ...
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


def _as_eval(command: Command) -> Command:
    if command[0] == "EVALSHA" and isinstance(command[1], str) and command[1] in _SOURCE_BY_SHA:
        return ("EVAL", _SOURCE_BY_SHA[command[1]], *command[2:])
    return command


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
        retried = yield [_as_eval(commands[i]) for i in forgotten]
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


def get_plan(
    keys: KeyLayout,
    session_id: str,
    hints: Hints | None = None,
    cache: RecordCache | None = None,
) -> Plan[SessionRecord | None]:
    """No round trip when ``cache`` holds the record; else one: ``HGET s:{id} d``, whose answer
    may fill the cache. Leaves a hint for the write that may follow."""
    key = keys.record(session_id)
    raw = None if cache is None else cache.lookup(key)
    if raw is None:
        fill = None if cache is None else cache.begin(key)
        try:
            (raw,) = yield from _batch([("HGET", key, "d")])
        finally:
            if cache is not None:
                cache.finish(fill, raw)
    if raw is None:
        return None
    record = record_from_json(raw)
    if hints is not None:
        hints.remember(session_id, Hint.of(record))
    return record


def _cas_args(record: SessionRecord, expected_version: int, ttl_ms: int) -> tuple[Arg, ...]:
    return (
        str(expected_version),
        str(record.version),
        _number(record.expires_at),
        record_to_json(record),
        ttl_ms,
        owner_of(record.user_id),
    )


def _record_ttl_ms(record: SessionRecord) -> tuple[float, int]:
    """The record's remaining lifetime by its own clock, and the TTL its key gets."""
    lifetime = max(record.expires_at - record.last_seen_at, 0.0)
    return lifetime, _ttl_ms(lifetime + TTL_MARGIN)


def _indexing_write(
    keys: KeyLayout, record: SessionRecord, expected_version: int
) -> tuple[list[Command], float]:
    """The index writes of ``record`` followed by its CAS script (which records the horizon),
    and that horizon."""
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
        *_cas_args(record, expected_version, ttl_ms),
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
        if written == 1:
            # The record now claims index entries that may be missing: drop the claim, so that
            # its next write indexes it again (best effort; the error is raised either way).
            yield from _replies([("HDEL", keys.record(record_id), "b")])
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
    if cache is None:
        return (yield from _put_plan(keys, record, expected_version, hints))
    fill = cache.writing(keys.record(record.id))
    written = False
    try:
        written = yield from _put_plan(keys, record, expected_version, hints)
    finally:
        cache.written(fill, record_to_json(record) if written else None)
    return written


def _put_plan(
    keys: KeyLayout, record: SessionRecord, expected_version: int, hints: Hints | None = None
) -> Plan[bool]:
    """One round trip: the CAS script alone when the record's indexes cover the write, else the
    index writes and then the CAS script; two when the guess (``hints``) said covered and the
    stored hash disagreed.

    ``put`` has no ``now``: the record's ``last_seen_at`` stands in for it (the core sets it to
    the request's time, at most ``touch_interval`` ago), which keeps fake clocks working.
    """
    hint = hints.take(record.id) if hints is not None else None
    if hint is not None and hint.covers(record, expected_version):
        _lifetime, ttl_ms = _record_ttl_ms(record)
        cas = CAS.call([keys.record(record.id)], *_cas_args(record, expected_version, ttl_ms), "")
        (written,) = yield from _batch([cas])
        if written != -1:
            if written == 1 and hints is not None:
                hints.remember(record.id, Hint(record.version, record.user_id, hint.horizon))
            return bool(written == 1)

    commands, horizon = _indexing_write(keys, record, expected_version)
    *indexed, written = yield from _replies(commands)
    yield from _check_indexed(keys, record.id, indexed, written)
    if written == 1 and hints is not None:
        hints.remember(record.id, Hint(record.version, record.user_id, horizon))
    return bool(written == 1)


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
    """See :func:`_replace_plan`. With ``barrier``, a replace that deleted the old record sends
    one more round trip to its node (see :func:`delete_plan`)."""
    record_keys = [keys.record(record.id), keys.record(old_id)]
    if cache is not None:
        cache.forget(record_keys)
    try:
        replaced = yield from _replace_plan(keys, record, old_id, old_version, hints)
    finally:
        if cache is not None:
            cache.forget(record_keys)
    if replaced and barrier:
        yield from _batch([("EXISTS", record_keys[1])])
    return replaced


def _replace_plan(
    keys: KeyLayout,
    record: SessionRecord,
    old_id: str,
    old_version: int,
    hints: Hints | None = None,
) -> Plan[bool]:
    """One round trip when it succeeds: the new record's index writes and its insert, and the
    old record's delete if its version is still ``old_version`` (TAKE_IF_VERSION).

    The two records live in different slots, so on Cluster this cannot be one script; the
    halves run side by side, and a half that happened alone is undone in a second round trip:
    the new record deleted when the old one had changed or gone (nobody holds the new token
    yet), the old record put back when the new id was taken. The old id's index entries are
    left to the readers and the sweeps, which drop entries of missing records; the new one is
    indexed before it is written, like any insert.
    """
    if hints is not None:
        hints.take(old_id)
    commands, horizon = _indexing_write(keys, record, 0)
    old_key = keys.record(old_id)
    *indexed, written, taken = yield from _replies(
        [*commands, TAKE_IF_VERSION.call([old_key], str(old_version))]
    )
    if isinstance(taken, Exception):
        if written == 1:
            yield from _replies([("DEL", keys.record(record.id))])
        raise taken
    yield from _check_indexed(keys, record.id, indexed, written)
    if written == 1 and taken:
        if hints is not None:
            hints.remember(record.id, Hint(record.version, record.user_id, horizon))
        return True
    if written == 1:
        yield from _batch([("DEL", keys.record(record.id))])
    elif taken:
        ttl, *fields = taken
        yield from _batch([PUT_BACK.call([old_key], int(ttl), *(_text(f) for f in fields))])
    return False


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
    if cache is not None:
        cache.forget(record_keys)
    try:
        yield from _delete_plan(keys, ids, hints, in_order=in_order, barrier=barrier)
    finally:
        if cache is not None:
            cache.forget(record_keys)


def _delete_plan(
    keys: KeyLayout,
    ids: list[str],
    hints: Hints | None,
    *,
    in_order: bool,
    barrier: bool,
) -> Plan[None]:
    guessed: dict[str, str] = {}
    for session_id in ids:
        hint = hints.take(session_id) if hints is not None else None
        if in_order and hint is not None and hint.user_id is not None:
            guessed[session_id] = hint.user_id
    shards = _group((keys.expiry_shard(i), i) for i in ids)
    commands: list[Command] = []
    for session_id in ids:
        commands += [("HGET", keys.record(session_id), "u"), ("DEL", keys.record(session_id))]
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
    raws = yield from _batch([("HGET", keys.record(i), "d") for i in ids])
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
    fields = yield from _batch([("HMGET", keys.record(i), "x", "u") for _user, i in entries])
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
            if status == 1:
                deleted += 1
                if len(reply) > 1:
                    gone.append((_text(reply[1]), session_id))
            elif status == 2:
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
