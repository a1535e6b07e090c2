"""The Session object an application reads and writes during one request.

It is a mutable mapping over JSON values, plus the user id, flash messages and a few lifecycle
requests (:meth:`Session.regenerate`, :meth:`Session.destroy`). It performs no I/O: it only
remembers what the request changed, so that :mod:`coatcheck._core.lifecycle` can commit exactly
that change, and merge it into a newer record if a concurrent request won the write (the rules
are in :mod:`coatcheck._core.merge`).

Changes are found without any flag set by hand: the first time a request reads or replaces a
key's value, a snapshot of the value as loaded is kept, and at commit every such key is compared
with it. Keys the request never touched cannot have changed and cost nothing. A snapshot of a
scalar is the scalar itself (immutable); of a list or an object, its ``marshal`` serialisation
(format 2: no object references, so equal values with their keys in the same order give equal
bytes; ``true``, ``1`` and ``1.0`` stay distinct). Bytes that differ are compared once more as
JSON values, so an object whose keys were only put in another order is no change. ``marshal``
is about seven times faster than ``json.dumps`` here and supports exactly the JSON types. It is
an in-memory snapshot only: never stored, never sent, and only ever decoded from bytes this
process made itself, during the same request (for a merge). What a
store keeps is JSON, always.
"""

from __future__ import annotations

import json
import marshal
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast, is_typeddict

from .merge import MISSING, Inapplicable, Op, apply_ops, merge, same
from .record import SNAPSHOT_FORMAT, SessionRecord, Transport
from .schema import to_data

T = TypeVar("T")

_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Changes:
    """What one request did to the session data."""

    set: dict[str, Any]
    """Keys given a new value (nested mutation included), with their value now."""
    removed: frozenset[str]
    """Keys the request deleted."""
    loaded: dict[str, Any]
    """Each changed or removed key's value as this request loaded it (absent: the key did not
    exist when it was loaded)."""
    ops: dict[str, tuple[Op, ...]]
    """Operations recorded on keys (:meth:`Session.increment`, :meth:`Session.add_to_set`, ...)."""
    replaced: dict[str, Any] | None = None
    """All the data, when the request dropped what was stored (a different user signed in):
    nothing written by anyone before is kept then."""

    def __bool__(self) -> bool:
        return bool(self.set or self.removed or self.replaced is not None)

    def apply_to(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with this request's changes on top, as if nobody else had written since."""
        if self.replaced is not None:
            return dict(self.replaced)
        merged = dict(data)
        merged.update(self.set)
        for key in self.removed:
            merged.pop(key, None)
        return merged

    def merge_into(self, theirs: dict[str, Any]) -> dict[str, Any]:
        """Merge this request's changes into ``theirs``, the data of a newer record.

        Each changed key is merged three ways (base: as loaded, mine: as written, theirs). A key
        changed only through recorded operations gets them applied again to their value instead,
        so two concurrent increments both count.
        """
        if self.replaced is not None:
            return dict(self.replaced)
        merged = dict(theirs)
        for key in (*self.set, *self.removed):
            base = self.loaded.get(key, MISSING)
            mine = self.set.get(key, MISSING)
            value = self._replayed(key, base, mine, theirs.get(key, MISSING))
            if value is MISSING:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def _replayed(self, key: str, base: Any, mine: Any, theirs: Any) -> Any:
        ops = self.ops.get(key)
        if ops:
            try:
                # The operations explain this request's whole change only if replaying them on
                # the loaded value gives what it wrote (not, say, an assignment made after them).
                if same(apply_ops(base, ops), mine):
                    return apply_ops(theirs, ops)
            except Inapplicable:
                pass
        return merge(base, mine, theirs)


_NO_CHANGES = Changes({}, frozenset(), {}, {})

_SNAPSHOT_FORMAT = SNAPSHOT_FORMAT  # marshal format 2: binary floats, no object references


def _snapshot_of(value: Any) -> Any:
    """The value itself for an immutable scalar; marshal bytes for a list or an object."""
    if isinstance(value, list | dict):
        return marshal.dumps(value, _SNAPSHOT_FORMAT)
    return value


snapshot_of = _snapshot_of
"""The snapshot a Session takes of a value it hands out (for stores that make them ahead)."""


def _unchanged(snapshot: Any, value: Any) -> bool:
    if isinstance(snapshot, bytes):  # JSON values are never bytes, so this is a container's
        try:
            if marshal.dumps(value, _SNAPSHOT_FORMAT) == snapshot:
                return True
        except ValueError:  # something that is not JSON was put inside: surely a change
            return False
        # Equal bytes are the common case. An object holding the same members in another order
        # is no change either: JSON objects have no order, and a stored record sorts its keys.
        return isinstance(value, dict | list) and same(_as_loaded(snapshot), value)
    return type(value) is type(snapshot) and value == snapshot


def _as_loaded(snapshot: Any) -> Any:
    # S302: these bytes were made by _snapshot_of in this process, from JSON values.
    return marshal.loads(snapshot) if isinstance(snapshot, bytes) else snapshot  # noqa: S302


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


# One encoder for every check: json.dumps builds a new one per call when given options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


class Session(MutableMapping[str, Any]):
    """One visitor's session for the length of a request.

    Values must be JSON-serialisable (checked when set). Nested values may be mutated in place
    (``session["cart"].append(item)``): changes are found by comparing with the loaded data at
    commit, so nothing needs to be flagged by hand.
    """

    __slots__ = (
        "__weakref__",
        "_auth_time",
        "_authenticated_now",
        "_credential",
        "_data",
        "_destroyed",
        "_drop_stored_flashes",
        "_flashes_read",
        "_incoming_flashes",
        "_keys_loaded",
        "_known_snapshots",
        "_loaded",
        "_ops",
        "_outgoing_flashes",
        "_record",
        "_regenerate",
        "_remember",
        "_reshaped",
        "_rotate_csrf",
        "_typed_views",
        "_user_changed",
        "_user_id",
        "accessed",
        "ip",
        "now",
        "presented_xsrf",
        "token",
        "transport",
        "user_agent",
    )

    def __init__(
        self,
        *,
        record: SessionRecord | None,
        transport: Transport,
        now: float,
        user_agent: str = "",
        ip: str = "",
        flashes: list[Any] | None = None,
        snapshots: dict[str, bytes] | None = None,
    ) -> None:
        self._record = record
        self.transport: Transport = transport
        self.now = now
        self.user_agent = user_agent
        self.ip = ip
        # The session owns the record the store handed out (stores return fresh objects), so no
        # copy is made; the snapshot used to find changes is taken on first access to the data.
        self._data: dict[str, Any] = record.data if record is not None else {}
        self._keys_loaded: frozenset[str] | None = None
        """The keys as loaded, noted on the first access to the data."""
        self._loaded: dict[str, Any] = {}
        """key -> snapshot of its value as loaded, for each key whose value was handed out."""
        self._known_snapshots = snapshots
        """Snapshots of the record's list and object values made before it was loaded (a seal
        opened before keeps them): the very bytes :func:`_snapshot_of` would make, made once."""
        self._reshaped = False
        """Whether a key was assigned or deleted (else only values handed out can have changed)."""
        self._ops: dict[str, list[Op]] = {}
        self._typed_views: list[Any] = []
        self._user_id: str | None = record.user_id if record is not None else None
        self._user_changed = False
        self._incoming_flashes: list[Any] = list(flashes or [])
        self._flashes_read = False
        self._outgoing_flashes: list[Any] = []
        self._drop_stored_flashes = False
        self._regenerate = False
        self._destroyed = False
        self._rotate_csrf = False
        self._remember: bool | None = None
        self._auth_time: float | None = record.auth_time if record is not None else None
        self._authenticated_now = False
        self._credential: str | bytes | None = None
        self.accessed = False
        self.presented_xsrf: list[str] = []
        """Values of the CSRF cookie the browser sent (so a missing or stale one is re-sent)."""
        self.token: str | None = None
        """The token issued by the last commit (a new or regenerated session), else ``None``."""

    # -- identity -------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The public id of the stored session (safe to log and show); ``None`` until stored."""
        return self._record.id if self._record is not None else None

    @property
    def is_new(self) -> bool:
        """True when no stored record backs this session yet."""
        return self._record is None

    @property
    def is_modified(self) -> bool:
        """True when committing would change the stored record (touches aside)."""
        return self._is_modified_by(self._changes())

    def _is_modified_by(self, changes: Changes) -> bool:
        return bool(
            self._destroyed
            or self._regenerate
            or self._user_changed
            or self._outgoing_flashes
            or self._drop_stored_flashes
            or (self._incoming_flashes and not self._flashes_read)  # _unread_flashes, no copy
            or self._rotate_csrf
            or self._remember is not None
            or self._authenticated_now
            or self._credential is not None
            or (changes is not _NO_CHANGES and bool(changes))  # the common read: no call
        )

    @property
    def is_destroyed(self) -> bool:
        return self._destroyed

    # -- times and metadata ---------------------------------------------------------------
    @property
    def created_at(self) -> float:
        return self._record.created_at if self._record is not None else self.now

    @property
    def last_seen_at(self) -> float:
        return self._record.last_seen_at if self._record is not None else self.now

    @property
    def auth_time(self) -> float | None:
        """When the user last fully authenticated (password or equivalent), epoch seconds."""
        return self._auth_time

    @property
    def remember(self) -> bool:
        if self._remember is not None:
            return self._remember
        return self._record.remember if self._record is not None else False

    @property
    def csrf_token(self) -> str:
        """The synchronizer token of the stored session ('' until the session is stored)."""
        self.accessed = True
        return self._record.csrf_token if self._record is not None else ""

    # -- user -----------------------------------------------------------------------------
    @property
    def user_id(self) -> str | None:
        self.accessed = True
        return self._user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError("user_id must be a str (convert integer keys with str())")
        self.accessed = True
        if value != self._user_id:
            self._user_id = value
            self._user_changed = True

    def _mark_authenticated(
        self, *, remember: bool | None = None, credential: str | bytes | None = None
    ) -> None:
        """Stamp a full authentication now: new id, new CSRF token, auth time = now; bound to
        ``credential`` when given (see :mod:`coatcheck._core.signin`)."""
        self._authenticated_now = True
        self._credential = credential
        self._auth_time = self.now
        if remember is not None:
            self._remember = remember
        self.regenerate()
        self.rotate_csrf()

    def bind_credential(self, credential: str | bytes) -> None:
        """Bind this signed-in session to ``credential`` from its commit on, without a new
        sign-in (auth time and deadlines kept): after a password change, the session that made
        it keeps working under the new password while every other one bound to the old stops."""
        if self._user_id is None:
            raise ValueError("bind_credential needs a signed-in session")
        self.accessed = True
        self._credential = credential

    # -- mapping --------------------------------------------------------------------------
    def _touch_data(self) -> None:
        self.accessed = True
        if self._keys_loaded is None:
            self._keys_loaded = frozenset(self._data)

    def _snapshot(self, key: str) -> None:
        """Keep a snapshot of ``key`` as loaded before its value is first handed out or replaced."""
        self.accessed = True
        keys_loaded = self._keys_loaded
        if keys_loaded is None:
            keys_loaded = self._keys_loaded = frozenset(self._data)
        if key not in self._loaded and key in keys_loaded and key in self._data:
            known = self._known_snapshots
            snapshot = known.get(key) if known is not None else None
            self._loaded[key] = snapshot if snapshot is not None else _snapshot_of(self._data[key])

    def __getitem__(self, key: str) -> Any:
        self._snapshot(key)
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        # The same as Mapping.get (a snapshot first), without raising KeyError for a missing key.
        self._snapshot(key)
        return self._data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError("session keys must be str")
        kind = type(value)
        # A str, bool, None or int of up to 18 digits always encodes (exact types: a subclass
        # may not); anything else is tried: floats (NaN and infinities do not encode), ints
        # (past 4300 digits str() refuses them), containers.
        if not (
            kind is str
            or kind is bool
            or value is None
            or (kind is int and -(10**18) < value < 10**18)
        ):
            try:
                _dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"session value for {key!r} is not JSON-serialisable: {exc}"
                ) from exc
        self._snapshot(key)
        self._reshaped = True
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._snapshot(key)
        self._reshaped = True
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._touch_data()
        return iter(self._data)

    def __len__(self) -> int:
        self._touch_data()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._touch_data()
        return key in self._data

    def __repr__(self) -> str:
        return f"<Session id={self.id!r} user_id={self._user_id!r} keys={sorted(self._data)!r}>"

    # -- operations that merge ------------------------------------------------------------
    def increment(self, key: str, amount: int | float = 1) -> int | float:
        """Add ``amount`` to the number at ``key`` (0 when absent) and return the new value.

        Unlike ``session[key] += 1``, concurrent increments all count: the increment is recorded
        and applied again on the newer value if another request wrote the session meanwhile.
        """
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            raise TypeError("increment amount must be an int or a float")
        value: int | float = self._record_op(key, ("incr", amount))
        return value

    def add_to_set(self, key: str, value: Any) -> None:
        """Add ``value`` (a JSON scalar) to the set stored at ``key`` as a list, if absent.

        Concurrent additions and removals of different values are all kept, as with a set.
        """
        self._set_op(key, ("add", value))

    def discard_from_set(self, key: str, value: Any) -> None:
        """Remove ``value`` from the set stored at ``key``, if present."""
        self._set_op(key, ("discard", value))

    def _set_op(self, key: str, op: Op) -> None:
        if not isinstance(op[1], _JSON_SCALARS):
            raise TypeError("set elements must be JSON scalars (str, int, float, bool or None)")
        self._record_op(key, op)

    def _record_op(self, key: str, op: Op) -> Any:
        try:
            value = apply_ops(self.get(key, MISSING), [op])
        except Inapplicable as exc:
            raise TypeError(f"session value for {key!r}: {exc}") from None
        self[key] = value
        self._ops.setdefault(key, []).append(op)
        return value

    # -- typed data -----------------------------------------------------------------------
    def typed(self, schema: type[T]) -> T:
        """The data as ``schema`` (a TypedDict, a dataclass or a pydantic model), for type
        checkers to see its fields. A TypedDict is the live data itself; a dataclass or model
        instance is read from the data now and written back into it when the request commits
        (so change the instance, not the session, until then). See
        :mod:`coatcheck._core.schema`."""
        for key in list(self._data):
            self._snapshot(key)
        self._touch_data()
        if is_typeddict(schema):
            self._reshaped = True  # the live dict may gain or lose keys behind our back
            return cast(T, self._data)
        build: Any = getattr(schema, "model_validate", None) or (lambda data: schema(**data))
        view: T = build(self._data)
        self._typed_views.append(view)
        return view

    def _write_back_views(self) -> None:
        for view in self._typed_views:
            data = to_data(view)
            for key in [k for k in self._data if k not in data]:
                del self[key]
            for key, value in data.items():
                self[key] = value

    def _data_snapshot(self) -> dict[str, Any]:
        """The data as the request leaves it (typed views written back)."""
        self._write_back_views()
        return self._data

    def _changes(self) -> Changes:
        """What this request did to the data: keys set to a new value (nested mutation
        included, found by comparing with the snapshot) and keys removed."""
        if self._typed_views:
            self._write_back_views()
        if self._keys_loaded is None:
            return _NO_CHANGES  # the data was never touched
        if not self._reshaped:
            # Nothing was assigned or deleted: only a list or an object handed out can have
            # been changed, in place. The common read-only request ends here.
            data = self._data
            for k, snapshot in self._loaded.items():
                if type(snapshot) is bytes:
                    # _unchanged(snapshot, data[k]), inline: this runs on every read.
                    try:
                        if marshal.dumps(data[k], _SNAPSHOT_FORMAT) != snapshot:
                            break
                    except ValueError:  # something that is not JSON was put inside
                        break
            else:
                return _NO_CHANGES
        keys_loaded = self._keys_loaded
        loaded = self._loaded
        data = self._data
        changed = {
            k: v
            for k, v in data.items()
            if k not in keys_loaded or (k in loaded and not _unchanged(loaded[k], v))
        }
        removed = keys_loaded - data.keys()
        involved = {k: _as_loaded(loaded[k]) for k in (*changed, *removed) if k in loaded}
        ops = {k: tuple(v) for k, v in self._ops.items() if k in changed or k in removed}
        replaced = dict(data) if self._drop_stored_flashes else None
        return Changes(changed, frozenset(removed), involved, ops, replaced)

    # -- flash ----------------------------------------------------------------------------
    def flash(self, message: Any, category: str = "info") -> None:
        """Queue a message for the next request of this session (and only that one)."""
        _dumps(message)
        self.accessed = True
        self._outgoing_flashes.append({"message": message, "category": category})

    @property
    def flashes(self) -> list[dict[str, Any]]:
        """Messages flashed by an earlier request, delivered to this request only (exactly once).

        They are delivered to the request that reads them: a request that never reads this
        property (a redirect, a background ``fetch``) hands them back at commit, for the next.
        """
        self.accessed = True
        self._flashes_read = True
        return list(self._incoming_flashes)

    @property
    def _unread_flashes(self) -> list[Any]:
        """Messages this request claimed but did not read: they go back to the store."""
        return [] if self._flashes_read else list(self._incoming_flashes)

    def _forget_contents(self) -> None:
        """Drop all data and flash messages (queued, delivered and still stored) at commit."""
        self._forget_data()
        self._incoming_flashes.clear()
        self._outgoing_flashes.clear()
        self._drop_stored_flashes = True

    def _forget_data(self) -> None:
        for key in list(self._data):
            self._snapshot(key)
        self._reshaped = True
        self._data.clear()
        self._ops.clear()

    # -- lifecycle requests ---------------------------------------------------------------
    def regenerate(self) -> None:
        """Issue a new id and secret at commit, keep the data, delete the old record."""
        self.accessed = True
        self._regenerate = True

    def rotate_csrf(self) -> None:
        self._rotate_csrf = True

    def destroy(self) -> None:
        """Delete the stored session at commit and clear the cookie; the data is dropped now."""
        self._forget_data()
        self._destroyed = True
        self._user_id = None

    @property
    def auth_hash(self) -> str:
        """The stored fingerprint of the credential this session signed in with ('' if none)."""
        return self._record.auth_hash if self._record is not None else ""

    def _needs_storing(self) -> bool:
        """A new session is stored only once it holds something worth keeping."""
        return bool(self._data or self._user_id is not None or self._outgoing_flashes)

    def _carried_past_logout(self) -> tuple[dict[str, Any], list[Any]]:
        """What a destroyed session hands to the anonymous session that follows it: the data set
        after ``destroy()`` and the flash messages of this request ("You have been signed out",
        the classic case; Flask keeps a flash across ``logout_user()``). Messages stored earlier
        and never shown belonged to the signed-in user and end with the session: the next person
        on that browser must not read them (found by an attack on the demo)."""
        return dict(self._data), list(self._outgoing_flashes)
