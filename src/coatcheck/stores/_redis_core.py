"""The Redis store's sans-I/O half: key layout, Lua scripts and one plan per store method.

A plan is a generator that yields a batch of Redis commands (one round trip: a pipeline, or a
single command), receives the replies, and finally returns the method's result. The async and the
sync store (:mod:`coatcheck.stores.redis`) only run plans, with and without ``await``, so the
logic below exists once.

Key layout (``P`` is the prefix, ``coatcheck:`` by default; ``n`` is crc32(id) mod 16)::

    P s:{<id>}       hash  v version, x expires_at, d record JSON, u user id (signed-in only)
    P u:{<user_id>}  zset  session id -> expires_at           the user's sessions
    P users          zset  user id -> latest expires_at        who has sessions
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
  but must not miss a live one. A write adds its index entries *before* its conditional write in
  the same pipeline (Redis runs a connection's commands in order; on Cluster the per-node
  batches run side by side), with ``ZADD GT`` so an index score is never below the record's
  ``expires_at``. Readers drop the stale entries they meet.
- Indexes clean themselves without ``purge_expired``: a write to a user index or ``users`` drops
  entries that expired more than ``TTL_MARGIN`` before the writer's time (the contract lets
  ``sessions_of`` omit expired records), and a write to an expiry shard drops the entries whose
  records Redis's TTL has certainly removed, judged by Redis's own clock. An expiry entry is
  never dropped while its record may still exist, so ``purge_expired`` counts exactly even when
  a test's fake clock jumps.
- TTLs are housekeeping: the core decides expiry. ``put`` has no ``now``; it takes the record's
  own ``expires_at - last_seen_at`` as the remaining lifetime, so records written under a fake
  clock are not dropped by Redis's real one. TTLs are relative (``PEXPIRE``), never absolute.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

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
-- [user id]. Returns 1 when written, 0 when another request won or the record is gone.
if ARGV[1] == '0' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'x', ARGV[3], 'd', ARGV[4])
if ARGV[6] then
  redis.call('HSET', KEYS[1], 'u', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'u')
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
""",
)

INDEX_ADD = LuaScript(
    "index_add",
    """
-- Add a member to a user index or to users (scored by expires_at), never lowering its score,
-- drop members that ended long ago by the writer's clock, and make the index outlive everything
-- written into it. ARGV: member, score, ttl ms, trim bound (members scored below it go).
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
-- minute of grace for clock skew between nodes. ARGV: member, expires_at, ttl ms.
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

DELETE_RECORD = LuaScript(
    "delete_record",
    """
-- Delete a session record and return its user id (nil for anonymous or missing records).
local user = redis.call('HGET', KEYS[1], 'u')
redis.call('DEL', KEYS[1])
return user
""",
)

PURGE_RECORD = LuaScript(
    "purge_record",
    """
-- Delete a session record if it expired by now. ARGV: now. Returns {0} when missing,
-- {1, user id?} when deleted, {2, expires_at, ttl ms, user id?} when still live.
local expires = redis.call('HGET', KEYS[1], 'x')
if not expires then return {0} end
local user = redis.call('HGET', KEYS[1], 'u')
if tonumber(expires) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  if user then return {1, user} end
  return {1}
end
local ttl = redis.call('PTTL', KEYS[1])
if user then return {2, expires, ttl, user} end
return {2, expires, ttl}
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

SCRIPTS = (CAS, INDEX_ADD, EXPIRY_ADD, UNINDEX_DUE, DELETE_RECORD, PURGE_RECORD, HIT)
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
        return f"{self.prefix}s:{{{session_id}}}"

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


def _batch(commands: list[Command]) -> Plan[list[Any]]:
    """Send ``commands`` in one round trip and return their replies, raising the first error.

    A server that forgot our scripts (restarted, failed over, ``SCRIPT FLUSH``) answers NOSCRIPT
    without running anything, so those commands alone are re-sent as EVAL, which also caches the
    script again: one extra round trip, once per server.
    """
    if not commands:
        return []
    replies = list((yield commands))
    forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if forgotten:
        retried = yield [_as_eval(commands[i]) for i in forgotten]
        for i, reply in zip(forgotten, retried, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _index_entries(
    keys: KeyLayout,
    session_id: str,
    user_id: str | None,
    expires_at: float,
    ttl_ms: int,
    now: float,
) -> list[Command]:
    """The index writes for one session; they run before its conditional write."""
    score, trim = _number(expires_at), _number(now - TTL_MARGIN)
    commands = []
    if user_id is not None:
        commands.append(INDEX_ADD.call([keys.user_index(user_id)], session_id, score, ttl_ms, trim))
        commands.append(INDEX_ADD.call([keys.users], user_id, score, ttl_ms, trim))
    commands.append(EXPIRY_ADD.call(keys.expiry_shard(session_id).keys, session_id, score, ttl_ms))
    return commands


def _group(pairs: Iterable[tuple[K, str]]) -> dict[K, list[str]]:
    grouped: dict[K, list[str]] = {}
    for key, member in pairs:
        grouped.setdefault(key, []).append(member)
    return grouped


# --- plans, one per store method -----------------------------------------------------------------


def get_plan(keys: KeyLayout, session_id: str) -> Plan[SessionRecord | None]:
    """One round trip: ``HGET s:{id} d``."""
    (raw,) = yield from _batch([("HGET", keys.record(session_id), "d")])
    return None if raw is None else record_from_json(raw)


def put_plan(keys: KeyLayout, record: SessionRecord, expected_version: int) -> Plan[bool]:
    """One round trip: the index writes, then the CAS script on the record key.

    ``put`` has no ``now``: the record's ``last_seen_at`` stands in for it (the core sets it to
    the request's time, at most ``touch_interval`` ago), which keeps fake clocks working.
    """
    ttl_ms = _ttl_ms(max(record.expires_at - record.last_seen_at, 0.0) + TTL_MARGIN)
    owner: tuple[Arg, ...] = () if record.user_id is None else (record.user_id,)
    cas = CAS.call(
        [keys.record(record.id)],
        str(expected_version),
        str(record.version),
        _number(record.expires_at),
        record_to_json(record),
        ttl_ms,
        *owner,
    )
    indexing = _index_entries(
        keys, record.id, record.user_id, record.expires_at, ttl_ms, record.last_seen_at
    )
    replies = yield from _batch([*indexing, cas])
    return bool(replies[-1] == 1)


def delete_plan(keys: KeyLayout, session_ids: tuple[str, ...]) -> Plan[None]:
    """One round trip (delete scripts and expiry entries), plus one to unindex signed-in ones."""
    ids = list(dict.fromkeys(session_ids))
    if not ids:
        return
    shards = _group((keys.expiry_shard(i), i) for i in ids)
    replies = yield from _batch(
        [DELETE_RECORD.call([keys.record(i)]) for i in ids]
        + [("ZREM", key, *members) for shard, members in shards.items() for key in shard.keys]
    )
    owners = _group(
        (keys.user_index(_text(owner)), i)
        for i, owner in zip(ids, replies[: len(ids)], strict=True)
        if owner is not None
    )
    yield from _batch([("ZREM", index, *members) for index, members in owners.items()])


def sessions_of_plan(keys: KeyLayout, user_id: str) -> Plan[list[SessionRecord]]:
    """Two round trips (the index, then every record it names), plus one to drop stale entries."""
    index = keys.user_index(user_id)
    (members,) = yield from _batch([("ZRANGE", index, 0, -1)])
    ids = [_text(member) for member in members]
    raws = yield from _batch([("HGET", keys.record(i), "d") for i in ids])
    records: list[SessionRecord] = []
    stale: list[str] = []
    for session_id, raw in zip(ids, raws, strict=True):
        record = None if raw is None else record_from_json(raw)
        if record is not None and record.user_id == user_id:
            records.append(record)
        else:
            stale.append(session_id)
    if stale:
        # Safe: ids are never reused. A session handed back to this user between our read and
        # this ZREM loses its entry only until its next write, which adds it again.
        yield from _batch([("ZREM", index, *stale)])
    return records


def user_ids_plan(keys: KeyLayout) -> Plan[list[str]]:
    """ZSCAN the users set (one round trip per 1000 users), then one round trip of ZCARDs.

    A user is listed while their own index is non-empty; it may still hold only stale entries
    (a session that changed hands, or expired by TTL) until ``sessions_of`` or a purge meets them.
    """
    found: set[str] = set()
    cursor = 0
    while True:
        ((cursor, page),) = yield from _batch([("ZSCAN", keys.users, cursor, "COUNT", _SCAN_COUNT)])
        found.update(_text(member) for member, _score in page)
        if int(cursor) == 0:
            break
    users = sorted(found)
    counts = yield from _batch([("ZCARD", keys.user_index(user)) for user in users])
    return [user for user, count in zip(users, counts, strict=True) if count]


def purge_plan(keys: KeyLayout, now: float, batch: int) -> Plan[int]:
    """Delete up to ``batch`` records expired by ``now``; two or three round trips per pass.

    A pass reads due entries from every expiry shard (one round trip), runs the purge script on
    each candidate record and drops the shard entries that are still due (one round trip), then
    unindexes the deleted records from their users' indexes and re-indexes the rare live record
    whose entry lagged (one round trip, when needed). Entries of records Redis already expired are
    dropped without counting; passes repeat until ``batch`` records were deleted or nothing is
    due, and each pass shrinks the due set, so it ends.
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
                # Live, but its shard entry said otherwise: a write whose index update was lost
                # (a partial failure on Cluster). Index it again at the record's real expiry.
                expires_at, record_ttl = float(_text(reply[1])), int(reply[2])
                owner = _text(reply[3]) if len(reply) > 3 else None
                ttl_ms = record_ttl if record_ttl > 0 else _ttl_ms(expires_at - now + TTL_MARGIN)
                follow_up += _index_entries(keys, session_id, owner, expires_at, ttl_ms, now)
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
