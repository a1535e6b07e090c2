"""The Redis store's key layout: key names and hash tags, the fields of its hashes, and the index
horizons its indexes are scored by. No I/O.

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
  atomically on Redis Cluster; correctness therefore never depends on an index. The only scripts
  with two keys work on an expiry shard pair, which shares the ``{n}`` hash tag (one slot).
- Index entries are written ahead, not on every write. A user index and ``users`` score a session
  by its *index horizon* (:func:`index_horizon`): ``expires_at`` rounded up to a bucket (a power
  of two of seconds near 10% of the remaining lifetime, 64 s to 4096 s; none for a record written
  already expired), an upper bound of its ``expires_at`` until a write moves ``expires_at`` past
  it. The record remembers what its indexes were written for: ``i`` the owner (``@<user id>``,
  or ``-`` for anonymous), ``b`` the horizon and ``l`` until when (Redis ms, the record node's
  clock) the index keys and the lapse entry outlive any TTL the record may get. ``b`` is on a
  bucket grid and at or above the stored ``expires_at``, so it is at or above ``index_horizon``
  of that record.
- The expiry shard holds ``expires_at`` as of the last (re)indexing write: at most the record's
  real ``expires_at``, which moves forward as the session is used, so ``purge_expired`` does not
  miss an expired record. It may meet a live one early; it then scores it again.

The field names and sentinels below are what the Lua scripts (:mod:`._redis_scripts`) see too:
they are handed to the scripts in one place, never spelled in a script.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from .._core.record import SessionRecord
from ..errors import ConfigurationError

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

LAPSE_GRACE = 60.0
"""Seconds past the lapse time (by Redis's clock) before an expiry entry is swept: clock skew
between the nodes that wrote the lapse entry and the record."""

# --- fields of the hashes ------------------------------------------------------------------------
# One letter each: they are stored with every record.
FIELD_VERSION = "v"
FIELD_EXPIRES_AT = "x"
FIELD_RECORD = "d"
"""The record as JSON: the only field a read needs."""
FIELD_USER = "u"
"""The user id of a signed-in session's record (absent for an anonymous one)."""
FIELD_OWNER = "i"
FIELD_HORIZON = "b"
FIELD_UNTIL = "l"
FIELD_COUNT = "n"
FIELD_WINDOW_END = "e"

ANONYMOUS = "-"
"""The stored owner (field ``i``) of an anonymous session; a signed-in one's is ``@<user id>``."""
USER_MARK = "@"


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
    record_prefix: str = field(init=False, repr=False, compare=False)
    """What every record key starts with: what the client cache tracks."""

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
        object.__setattr__(self, "record_prefix", f"{self.prefix}s:")

    def record(self, session_id: str) -> str:
        return f"{self.record_prefix}{{{session_id}}}"

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


def owner_of(user_id: str | None) -> str:
    """What field ``i`` holds for a session of ``user_id`` (``None``: anonymous)."""
    return ANONYMOUS if user_id is None else USER_MARK + user_id


def index_horizon(record: SessionRecord) -> float:
    """The score a (re)indexing write gives ``record`` in its user index and in ``users``: its
    ``expires_at`` rounded up to its bucket.

    Also a guess at what a stored record is covered by: every write leaves the stored horizon
    (field ``b``) on the grid of the last indexing write and at or above ``expires_at``, so, the
    grids being nested, at or above ``index_horizon`` of the stored record.
    """
    return horizon_of(record.expires_at, record.last_seen_at)


def horizon_of(expires_at: float, last_seen_at: float) -> float:
    """:func:`index_horizon` of a record with these times."""
    lifetime = expires_at - last_seen_at
    if lifetime <= 0:
        return expires_at  # written already expired: no later write will extend it
    share = min(max(lifetime * INDEX_BUCKET_SHARE, INDEX_BUCKET_MIN), INDEX_BUCKET_MAX)
    bucket = 2.0 ** math.floor(math.log2(share))
    return math.ceil(expires_at / bucket) * bucket
