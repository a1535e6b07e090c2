"""Server-assisted client-side caching of session records for the Redis stores.

Rules of this module:

- A record is served from process memory only while the *invalidation channel* is live: one
  connection of our own per Redis primary, speaking RESP3, with ``CLIENT TRACKING ON BCAST
  PREFIX <prefix>s:``. In BCAST mode Redis tells the channel about every change to every session
  key under the prefix, by any client: writes, touches, deletes, TTL expiry, eviction,
  ``FLUSHDB``. Nothing has to be read through the channel for its keys to be tracked, so the
  data path stays on redis-py's pools and the cache does not depend on which connection read
  what.
- Live means: every primary's channel connected and tracking, and each answered a ``PING``
  within ``STALE_AFTER`` seconds. Whenever that stops holding (a channel closed, a reply late, the
  cluster's primaries changed), every entry is dropped at once and reads go to Redis until the
  channels are back. Reconnecting is retried in the background.
- Every cache hit first reads whatever the channels have received (a non-blocking ``recv``), so
  an invalidation that reached this machine before the read started is applied before the read
  is answered. The writers' side of that bargain: a ``delete`` (logout, revocation) and a
  ``replace`` of a signed-in session (the old id of a second login) send one more round trip to
  the record's node after their reply (the *barrier*); an anonymous old id, which carries no
  identity, is left to the invalidation's own delivery.
  Redis queues BCAST invalidations at the end of the event-loop pass that ran the delete, ahead
  of that pass's replies, and writes them out before its next pass, which is the earliest that
  can read the barrier: once the barrier is answered, the invalidation is in every channel's
  socket (a channel too slow to take it would be failing its heartbeats).
- A read fills the cache only if no invalidation for its key (and no channel failure) happened
  between the moment the read was sent and its reply (:meth:`ClientCache.begin` /
  :meth:`ClientCache.finish`). This process's own writes forget the key before they are sent
  and cache what they wrote when they return, spoiling any read of the key in flight, so a read
  never returns something older than a write this process completed. Redis reports those writes
  back too (``NOLOOP`` does not cover writes made by Lua scripts); the channel then reads the
  record again in the background, so the session's next request still finds it cached.
- Entries are bounded in number (least recently used dropped first) and in age (``max_age``):
  the age bound limits the damage of anything the rules above did not foresee.
- Entries are the record's JSON text; every hit decodes a fresh record, so callers may mutate
  what ``get`` returns.

One daemon thread per store runs the channels (connect, heartbeat, and a read every
``DRAIN_INTERVAL``); the cache's callers (asyncio or threads alike) read the channels on every
hit and write, and only take its lock for a few microseconds.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

from .._core.record import RecordImage, SessionRecord, record_from_json
from ..errors import ConfigurationError
from ._redis_keys import FIELD_RECORD

log = logging.getLogger("coatcheck")

DEFAULT_SIZE = 10_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
"""The default bound on what cached entries hold (their JSON text and decoded image, counted as
twice the text's length plus ``ENTRY_OVERHEAD``)."""
ENTRY_OVERHEAD = 256
DEFAULT_MAX_AGE = 5.0
PING_INTERVAL = 0.5
"""Seconds between heartbeats on each channel."""
STALE_AFTER = 1.5
"""A channel whose last ``PING`` answer is older than this is treated as down: the cache is
dropped. It bounds how long a silently broken channel (a hung server, a lost network path)
could go unnoticed."""
RECONNECT_DELAY = (0.05, 1.0)
DRAIN_INTERVAL = 0.05
"""Seconds between the channel thread's reads of the channels. The thread does not wake on
each message: under load the requests' own reads (every hit, every write's return) drain the
channels, and a thread woken per message would take the GIL from the event loop thousands of
times a second (measured: a fifth of a busy worker's samples, and 25 % fewer cached writes per
second). Correctness does not depend on the thread: a hit always reads the channels first."""
CHANNEL_NAME = "coatcheck-cache"
REFILL_BATCH = 32
"""The most re-reads sent in one write on a channel (a few kB: never a partial write into an
idle socket's buffer)."""

# Bumped in a forked child: a cache then starts its own thread and channels. (Cheaper than
# comparing os.getpid() on every lookup.)
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientCacheConfig:
    """How the Redis stores cache records in process memory.

    ``size`` bounds the number of cached records and ``max_bytes`` the memory they hold (least
    recently used dropped first; a record whose JSON is longer than ``max_bytes / 64`` is never
    cached); ``max_age`` is how many seconds an entry may be served, even when Redis never
    invalidated it (older entries are also swept out every ``max_age`` seconds). Set
    ``enabled=False`` (``?client_cache=0`` in a store URL) to read every record from Redis.
    """

    enabled: bool = True
    size: int = DEFAULT_SIZE
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age: float = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigurationError(f"client_cache_size must be at least 1, not {self.size}")
        if self.max_bytes < 64 * 1024:
            raise ConfigurationError(
                f"client_cache_bytes must be at least 65536, not {self.max_bytes}"
            )
        if not 0 < self.max_age <= 60:
            raise ConfigurationError(
                f"client_cache_ttl must be above 0 and at most 60 seconds, not {self.max_age}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """Where the channels connect: a cluster's startup nodes, one server, or a Unix socket."""

    nodes: tuple[tuple[str, int], ...] = ()
    unix_path: str | None = None
    cluster: bool = False
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 2.0


# --- RESP3 ----------------------------------------------------------------------------------------


class RespError(Exception):
    """An error reply (``-ERR ...``) read from a channel."""


class _Incomplete(Exception):
    pass


@dataclass(slots=True)
class Push:
    """An out-of-band RESP3 push (``>``), such as ``invalidate``."""

    items: list[Any]


def pack(*args: str | int) -> bytes:
    """A command in RESP's array-of-bulk-strings form."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Resp3Reader:
    """An incremental RESP3 parser: :meth:`feed` bytes, then iterate :meth:`frames`.

    Bulk strings come out as ``bytes``, simple strings as ``str``, error replies as
    :class:`RespError` values, pushes as :class:`Push`; maps as lists of key, value, ...
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def frames(self) -> Iterator[Any]:
        while self._buffer:
            try:
                value, end = self._parse(0)
            except _Incomplete:
                return
            del self._buffer[:end]
            yield value

    def _line(self, start: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", start)
        if end < 0:
            raise _Incomplete
        return bytes(self._buffer[start:end]), end + 2

    def _parse(self, start: int) -> tuple[Any, int]:
        kind = bytes(self._buffer[start : start + 1])
        line, pos = self._line(start + 1)
        if kind in (b"$", b"=", b"!"):
            length = int(line)
            if length < 0:
                return None, pos
            if len(self._buffer) < pos + length + 2:
                raise _Incomplete
            data = bytes(self._buffer[pos : pos + length])
            if kind == b"!":
                return RespError(data.decode(errors="replace")), pos + length + 2
            return (data[4:] if kind == b"=" else data), pos + length + 2
        if kind in (b"*", b">", b"~", b"%", b"|"):
            count = int(line)
            if count < 0:
                return None, pos
            if kind in (b"%", b"|"):
                count *= 2
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            if kind == b"|":  # attributes precede the value they describe: skip them
                return self._parse(pos)
            return (Push(items) if kind == b">" else items), pos
        if kind == b"+":
            return line.decode(), pos
        if kind == b"-":
            return RespError(line.decode(errors="replace")), pos
        if kind in (b":", b"("):
            return int(line), pos
        if kind == b",":
            return float(line), pos
        if kind == b"#":
            return line == b"t", pos
        if kind == b"_":
            return None, pos
        raise ValueError(f"unexpected RESP3 type byte {kind!r}")


# --- the channels ---------------------------------------------------------------------------------


class _Channel:
    """One tracking connection to one primary."""

    def __init__(self, sock: socket.socket, node: str) -> None:
        self.sock = sock
        self.node = node
        self.reader = Resp3Reader()
        self.waiting: collections.deque[str | Fill] = collections.deque()
        self.last_pong = time.monotonic()
        self.last_ping = 0.0
        self.buffer = bytearray(65536)

    def send(self, what: str | Fill, *args: str | int) -> None:
        self.send_all([what], pack(*args))

    def send_all(self, waiting: list[str | Fill], data: bytes) -> None:
        """Send ``data`` (packed commands) in one write; ``waiting`` names their replies."""
        sent = self.sock.send(data)
        if sent != len(data):  # a few kB into an empty socket buffer: never partial
            raise OSError(f"short write on the cache channel to {self.node}")
        self.waiting.extend(waiting)


def _connect(target: Target, node: tuple[str, int] | None, prefix: str) -> _Channel:
    """Open a channel (blocking, bounded by the connect timeout) and switch tracking on."""
    timeout = target.connect_timeout
    if node is None:
        assert target.unix_path is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(target.unix_path)
        name = target.unix_path
    else:
        sock = socket.create_connection(node, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = f"{node[0]}:{node[1]}"
    try:
        hello: list[str | int] = ["HELLO", 3]
        if target.password is not None:
            hello += ["AUTH", target.username or "default", target.password]
        commands = [
            pack(*hello, "SETNAME", CHANNEL_NAME),
            pack("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", prefix),
        ]
        sock.sendall(b"".join(commands))
        reader = Resp3Reader()
        replies: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(replies) < len(commands):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cache channel to {name} did not answer")
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"the cache channel to {name} was closed")
            reader.feed(data)
            replies += [f for f in reader.frames() if not isinstance(f, Push)]
        for reply in replies:
            if isinstance(reply, RespError):
                raise reply
        sock.setblocking(False)
        channel = _Channel(sock, name)
        channel.reader = reader
        return channel
    except BaseException:
        sock.close()
        raise


def _slot_ranges(slots: Any) -> list[tuple[int, int, tuple[str, int]]]:
    """The slot ranges and their primaries in a ``CLUSTER SLOTS`` reply."""
    ranges = []
    for entry in slots or []:
        host, port = entry[2][0], entry[2][1]
        node = (host.decode() if isinstance(host, bytes) else str(host), int(port))
        ranges.append((int(entry[0]), int(entry[1]), node))
    return ranges


def _primaries(slots: Any) -> set[tuple[str, int]]:
    """The primaries named by a ``CLUSTER SLOTS`` reply."""
    return {node for _start, _end, node in _slot_ranges(slots)}


# --- the cache ------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Fill:
    """A read in flight that may fill the cache when it returns."""

    key: str
    generation: int
    spoiled: bool = False
    after_write: bool = False
    """A re-read sent once Redis reported this process's write: it cannot predate the write."""


@dataclass(slots=True)
class _Entry:
    raw: str | bytes
    stored_at: float
    after_write: bool = False
    image: RecordImage | None = None
    """The record decoded and checked, made at the entry's second :meth:`ClientCache.recall`
    (the first keeps only ``head``: a session written on every request would never use an
    image, as in the memory store)."""
    head: tuple[int, str | None, float, float] | None = None
    """What :meth:`ClientCache.peek` answers, kept at the entry's first hit."""


class _Entries:
    """The cached entries, least recently used first, bounded in number and in bytes."""

    __slots__ = ("_bytes", "_entries", "_max_bytes", "_max_entry", "_size", "get", "touch")

    def __init__(self, size: int, max_bytes: int) -> None:
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self._max_entry = max_bytes // 64
        self._bytes = 0
        # The dict's own methods, bound once: a hit calls them without a Python frame.
        self.get: Callable[[str], _Entry | None] = self._entries.get
        """The entry of a key, or ``None``."""
        self.touch: Callable[[str], None] = self._entries.move_to_end
        """Make a key's entry the most recently used."""

    @staticmethod
    def _cost(entry: _Entry) -> int:
        return 2 * len(entry.raw) + ENTRY_OVERHEAD

    def put(self, key: str, entry: _Entry) -> None:
        """Cache ``entry`` as the most recently used (nothing, if it is too large), then drop
        the least recently used ones beyond the bounds."""
        self.pop(key)
        if len(entry.raw) > self._max_entry:
            return
        self._entries[key] = entry
        self._bytes += self._cost(entry)
        while len(self._entries) > self._size or self._bytes > self._max_bytes:
            _key, dropped = self._entries.popitem(last=False)
            self._bytes -= self._cost(dropped)

    def pop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= self._cost(entry)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def sweep(self, older_than: float) -> None:
        """Drop the entries stored before ``older_than`` (they can no longer be served)."""
        for key in [k for k, entry in self._entries.items() if entry.stored_at < older_than]:
            self.pop(key)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(slots=True)
class Stats:
    hits: int = 0
    """Reads answered from the cache."""
    misses: int = 0
    """Reads sent to Redis (the record was not cached, or the cache was not usable)."""
    invalidations: int = 0
    drops: int = 0


class ClientCache:
    """Session records cached in process memory, invalidated by Redis (see the module rules).

    Keys are full Redis record keys. :meth:`lookup` answers a cached record's JSON or ``None``;
    a read that missed calls :meth:`begin` before it is sent and :meth:`finish` with what it
    read; a write calls :meth:`writing` before it is sent and :meth:`written` with what it
    wrote; a delete calls :meth:`forget` before and after it runs.
    """

    def __init__(
        self, config: ClientCacheConfig, target: Target, prefix: str, *, clock: Any = None
    ) -> None:
        self.config = config
        self.target = target
        self.prefix = prefix
        self.stats = Stats()
        self._clock = clock or time.monotonic
        self._monotonic_ages = self._clock is time.monotonic
        """Entries' ages are on the heartbeat's clock: a hit reads it once."""
        self._max_age = config.max_age
        self._lock = threading.Lock()
        self._entries = _Entries(config.size, config.max_bytes)
        self._swept_at = 0.0
        self._fills: dict[str, list[Fill]] = {}
        # Keys this process wrote whose own invalidation has not arrived yet (then re-read).
        self._own_writes: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._generation = 0
        self._channels: list[_Channel] = []
        self._poller = select.poll() if hasattr(select, "poll") else None  # not on Windows
        self._oldest_pong = 0.0
        """The oldest ``last_pong`` of the channels (kept as they answer, read on every hit)."""
        self._polled: list[_Channel] | None = None
        """The channel list ``_poller`` watches (rebuilt when the list is replaced)."""
        self._slots: list[tuple[int, int, _Channel]] = []
        self._live = False
        self._closed = False
        self._started_in = -1  # the value of _forks when the thread was started
        self._thread: threading.Thread | None = None
        # Wakes the thread out of select(); made with the thread, so that a store that is never
        # used (or fails at start-up) holds no socket.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # -- what the stores call ----------------------------------------------------------------

    def lookup(self, key: str) -> str | bytes | None:
        """The cached JSON of ``key``, or ``None`` (a miss: read it from Redis)."""
        entry = self._hit(key)
        return None if entry is None else entry.raw

    def recall(self, key: str) -> SessionRecord | None:
        """A copy of the cached record of ``key``, or ``None`` (a miss: read it from Redis).

        The JSON is decoded and checked on an entry's first two hits (a corrupt one raises
        :class:`~coatcheck._core.record.CorruptRecordError`, as a read from Redis would); the
        second keeps an image of it, and later hits copy the image, a fraction of the cost."""
        entry = self._hit(key)
        if entry is None:
            return None
        image = entry.image
        if image is not None:
            return image.copy()
        record = record_from_json(entry.raw)
        if entry.head is not None:  # the second hit: two threads may both make the same image
            entry.image = RecordImage(record)
        else:
            entry.head = (record.version, record.user_id, record.expires_at, record.last_seen_at)
        return record

    def peek(self, key: str) -> tuple[int, str | None, float, float] | None:
        """The version, user id, ``expires_at`` and ``last_seen_at`` of the cached record of
        ``key`` once a hit decoded it, without counting a hit or reading the channels: for a
        write's guess of what is stored (a wrong guess costs commands, never correctness)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.head

    def _hit(self, key: str) -> _Entry | None:
        # The hot path (every read of a cached session): _ensure_thread, _drain_locked and
        # _usable_locked inlined, one clock read where the ages are on the monotonic clock.
        if self._started_in != _forks:
            self._ensure_thread()
        with self._lock:
            channels = self._channels
            if not channels or not self._live or self._closed:
                return None
            # Whatever the channels received before this hit is applied before it is answered:
            # one poll(0) finds nothing on most hits (see _drain_locked for the other cases).
            poller = self._poller
            if poller is None or self._polled is not channels or poller.poll(0):
                self._drain_locked()
                if not self._live:
                    return None
            now = time.monotonic()
            if now - self._oldest_pong > STALE_AFTER:
                return None
            entry = self._entries.get(key)
            if entry is None:
                return None
            if (now if self._monotonic_ages else self._clock()) - entry.stored_at > self._max_age:
                self._entries.pop(key)
                return None
            self._entries.touch(key)
            self.stats.hits += 1
            return entry

    def begin(self, key: str) -> Fill:
        """Note a read of ``key`` about to be sent (before sending it)."""
        with self._lock:
            self.stats.misses += 1
            fill = Fill(key, self._generation, spoiled=not self._usable_locked())
            self._fills.setdefault(key, []).append(fill)
            return fill

    def finish(self, fill: Fill, raw: str | bytes | None) -> None:
        """Cache what the read of ``fill`` returned, unless anything may have changed it since
        it was sent. A missing record is not cached."""
        with self._lock:
            self._drain_locked()
            self._finish_locked(fill, raw)

    def writing(self, key: str) -> Fill:
        """Note a write of ``key`` by this process about to be sent: the key is forgotten, and
        once Redis reports the write back, the key is read again in the background (the
        session's next request most likely wants it)."""
        with self._lock:
            self._forget_locked([key])
            self._own_writes[key] = None
            self._own_writes.move_to_end(key)
            while len(self._own_writes) > self.config.size:
                self._own_writes.popitem(last=False)
            fill = Fill(key, self._generation, spoiled=not self._usable_locked())
            self._fills.setdefault(key, []).append(fill)
            return fill

    def written(self, fill: Fill, raw: str | bytes | None) -> None:
        """This process's write of ``fill.key`` returned: cache ``raw`` (what it wrote; ``None``
        when it wrote nothing) unless an invalidation of the key arrived while it was in
        flight, and spoil every other read of the key in flight (they may have read what was
        there before)."""
        with self._lock:
            # First apply what has arrived: an invalidation of the key spoils this write's fill.
            self._drain_locked()
            for other in self._fills.get(fill.key, ()):
                if other is not fill and not other.after_write:
                    other.spoiled = True
            entry = self._entries.get(fill.key)
            if entry is not None and not entry.after_write:
                self._entries.pop(fill.key)
            if raw is None:  # nothing written: no report of it will come back
                self._own_writes.pop(fill.key, None)
                fill.spoiled = True
            # If the write went through a pooled connection, its own report drops the entry
            # again when it arrives, and the channel reads the record back.
            self._finish_locked(fill, raw)

    def forget(self, keys: Sequence[str]) -> None:
        """Drop ``keys`` and spoil the reads of them in flight (this process writes them)."""
        with self._lock:
            self._forget_locked(keys)

    def close(self) -> None:
        """Stop the channel thread and close the channels."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        with self._lock:
            self._drop_locked("closed")
            for end in (self._wake_r, self._wake_w):
                if end is not None:
                    end.close()
            self._wake_r = self._wake_w = None

    @property
    def live(self) -> bool:
        """Whether records are served from memory right now."""
        with self._lock:
            return self._usable_locked()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    # -- internals (the lock held where the name says so) --------------------------------------

    def _usable_locked(self) -> bool:
        if not self._live or self._closed:
            return False
        return time.monotonic() - self._oldest_pong <= STALE_AFTER

    def _finish_locked(self, fill: Fill, raw: str | bytes | None) -> None:
        pending = self._fills.get(fill.key, [])
        with contextlib.suppress(ValueError):
            pending.remove(fill)
        if not pending:
            self._fills.pop(fill.key, None)
        if raw is None or fill.spoiled or fill.generation != self._generation:
            return
        if not self._usable_locked():
            return
        if isinstance(raw, bytes):  # json.loads is quicker on str (no encoding sniffing)
            raw = raw.decode()
        self._entries.put(fill.key, _Entry(raw, self._clock(), fill.after_write))

    def _refill_locked(self, keys: Sequence[str]) -> None:
        """Read again, on the channel, the keys this process wrote: the invalidation of its own
        write dropped them, and the session's next request will most likely want them. The
        read is an ordinary fill, spoiled by any invalidation that arrives before its reply."""
        if not self._usable_locked():
            return
        # One write per channel for up to REFILL_BATCH keys of an invalidation (Redis sends
        # those of one pass of its event loop together).
        batches: dict[_Channel, tuple[list[str | Fill], list[bytes]]] = {}
        for key in keys:
            channel = self._channel_for_locked(key)
            if channel is None:
                continue
            fill = Fill(key, self._generation, after_write=True)
            self._fills.setdefault(key, []).append(fill)
            fills, packed = batches.setdefault(channel, ([], []))
            fills.append(fill)
            packed.append(pack("HGET", key, FIELD_RECORD))
        try:
            for channel, (fills, packed) in batches.items():
                for start in range(0, len(fills), REFILL_BATCH):
                    end = start + REFILL_BATCH
                    channel.send_all(fills[start:end], b"".join(packed[start:end]))
        except OSError as exc:
            self._drop_locked(repr(exc))

    def _channel_for_locked(self, key: str) -> _Channel | None:
        if not self.target.cluster:
            return self._channels[0] if self._channels else None
        slot = key_slot(key.encode())
        for start, end, channel in self._slots:
            if start <= slot <= end:
                return channel
        return None

    def _forget_locked(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._entries.pop(key)
            for fill in self._fills.get(key, ()):
                fill.spoiled = True

    def _drop_locked(self, why: str) -> None:
        """Channel trouble: forget everything, spoil every read in flight, close the channels."""
        if self._live:
            log.warning("coatcheck Redis client cache off until reconnected: %s", why)
            self.stats.drops += 1
        self._live = False
        self._generation += 1
        self._entries.clear()
        self._own_writes.clear()
        for fills in self._fills.values():
            for fill in fills:
                fill.spoiled = True
        for channel in self._channels:
            with contextlib.suppress(OSError):
                channel.sock.close()
        self._channels = []
        self._slots = []

    def _drain_locked(self) -> None:
        """Read and apply whatever the channels received, without waiting."""
        channels = self._channels
        if not channels:
            return
        if self._poller is not None:
            if self._polled is not channels:  # the list is replaced, never changed in place
                self._poller = select.poll()
                for channel in channels:
                    self._poller.register(channel.sock, select.POLLIN)
                self._polled = channels
            # One poll for every channel tells whether anything arrived (or a socket failed):
            # most hits find nothing, and a recv would raise BlockingIOError on each channel.
            if not self._poller.poll(0):
                return
        for channel in list(channels):
            try:
                while True:
                    try:
                        # Into a buffer kept per channel: nothing is allocated when (as on most
                        # lookups) nothing has arrived.
                        size = channel.sock.recv_into(channel.buffer)
                    except BlockingIOError:
                        break
                    if not size:
                        raise ConnectionError(f"the cache channel to {channel.node} closed")
                    channel.reader.feed(channel.buffer[:size])
                    for frame in channel.reader.frames():
                        self._apply_locked(channel, frame)
            except (OSError, ValueError, RespError) as exc:
                self._drop_locked(repr(exc))
                return

    def _apply_locked(self, channel: _Channel, frame: Any) -> None:
        if isinstance(frame, Push):
            if len(frame.items) == 2 and frame.items[0] in (b"invalidate", "invalidate"):
                keys = frame.items[1]
                if keys is None:  # FLUSHDB / FLUSHALL: everything
                    self._entries.clear()
                    for fills in self._fills.values():
                        for fill in fills:
                            fill.spoiled = True
                else:
                    names = [k.decode() for k in keys]
                    self._forget_locked(names)
                    own = [name for name in names if self._own_writes.pop(name, 0) is None]
                    if own:
                        self._refill_locked(own)
                self.stats.invalidations += 1
            return
        what = channel.waiting.popleft() if channel.waiting else "?"
        if isinstance(frame, RespError):
            raise frame
        if isinstance(what, Fill):
            self._finish_locked(what, frame)
            return
        if what == "ping":
            channel.last_pong = time.monotonic()
            self._oldest_pong = min(c.last_pong for c in self._channels)
        elif what == "slots" and self.target.cluster:
            wanted = _primaries(frame)
            if wanted != {_node_of(c) for c in self._channels}:
                raise ConnectionError("the cluster's primaries changed")

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def _ensure_thread(self) -> None:
        if self._started_in == _forks or self._closed:
            return
        with self._lock:
            if self._started_in == _forks or self._closed:
                return
            # A forked child inherits the parent's sockets but not its thread: start afresh.
            self._channels = []
            self._drop_locked("new process")
            self._started_in = _forks
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._thread = threading.Thread(
                target=self._run, name="coatcheck-redis-cache", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        delay = RECONNECT_DELAY[0]
        while True:
            with self._lock:
                if self._closed or self._started_in != _forks:
                    return
                live = self._live
            if not live:
                try:
                    self._open_channels()
                    delay = RECONNECT_DELAY[0]
                except Exception as exc:  # any failure: retry later
                    log.debug("coatcheck Redis client cache channel: %r", exc)
                    self._sleep(delay)
                    delay = min(delay * 2, RECONNECT_DELAY[1])
                    continue
            self._serve_once()

    def _sleep(self, seconds: float) -> None:
        wake = self._wake_r
        if wake is None:
            return
        with contextlib.suppress(OSError, ValueError):
            select.select([wake], [], [], seconds)
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)

    def _open_channels(self) -> None:
        target = self.prefix
        opened: list[_Channel] = []
        ranges: list[tuple[int, int, tuple[str, int]]] = []
        try:
            if self.target.unix_path is not None:
                opened.append(_connect(self.target, None, target))
            elif not self.target.cluster:
                opened.append(_connect(self.target, self.target.nodes[0], target))
            else:
                ranges = self._cluster_slots()
                for node in sorted({node for _start, _end, node in ranges}):
                    opened.append(_connect(self.target, node, target))
        except BaseException:
            for channel in opened:
                channel.sock.close()
            raise
        with self._lock:
            if self._closed:
                for channel in opened:
                    channel.sock.close()
                return
            self._drop_locked("reconnecting")
            now = time.monotonic()
            for channel in opened:
                channel.last_pong = now
            self._oldest_pong = now
            self._channels = opened
            if self.target.cluster:
                by_node = {_node_of(channel): channel for channel in opened}
                self._slots = [(start, end, by_node[node]) for start, end, node in ranges]
            self._live = True
            log.info("coatcheck Redis client cache on (%d channel(s))", len(opened))

    def _cluster_slots(self) -> list[tuple[int, int, tuple[str, int]]]:
        last: Exception = ConnectionError("no startup node")
        for node in self.target.nodes:
            try:
                with socket.create_connection(node, timeout=self.target.connect_timeout) as sock:
                    hello: list[str | int] = ["HELLO", 3]
                    if self.target.password is not None:
                        hello += ["AUTH", self.target.username or "default", self.target.password]
                    sock.sendall(pack(*hello) + pack("CLUSTER", "SLOTS"))
                    reader = Resp3Reader()
                    replies: list[Any] = []
                    while len(replies) < 2:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionError("closed")
                        reader.feed(data)
                        replies += list(reader.frames())
                    if isinstance(replies[1], RespError):
                        raise replies[1]
                    ranges = _slot_ranges(replies[1])
                    if ranges:
                        return ranges
            except (OSError, RespError) as exc:
                last = exc
        raise last

    def _serve_once(self) -> None:
        """Wait ``DRAIN_INTERVAL`` (or a wake-up), read the channels, and send the heartbeats
        that are due."""
        with self._lock:
            channels = list(self._channels)
            wake = self._wake_r
        if not channels or wake is None:
            return
        try:
            readable, _, _ = select.select([wake], [], [], DRAIN_INTERVAL)
        except (OSError, ValueError):
            readable = []
        if wake in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                wake.recv(4096)
        with self._lock:
            if self._channels != channels:
                return
            self._drain_locked()
            if not self._live:
                return
            now = time.monotonic()
            cached_now = self._clock()
            if cached_now - self._swept_at >= self.config.max_age:
                # Entries past their age are never served again: free their memory.
                self._swept_at = cached_now
                self._entries.sweep(cached_now - self.config.max_age)
            try:
                for n, channel in enumerate(self._channels):
                    if now - channel.last_pong > STALE_AFTER:
                        raise TimeoutError(f"no heartbeat answer from {channel.node}")
                    if "ping" not in channel.waiting and now - channel.last_ping >= PING_INTERVAL:
                        channel.last_ping = now
                        channel.send("ping", "PING")
                        if n == 0 and self.target.cluster:
                            channel.send("slots", "CLUSTER", "SLOTS")
            except OSError as exc:
                self._drop_locked(repr(exc))


def _node_of(channel: _Channel) -> tuple[str, int]:
    host, _, port = channel.node.rpartition(":")
    return host, int(port)


__all__ = ["ClientCache", "ClientCacheConfig", "Fill", "Target"]
