"""The stored session record: one shape for every store.

Stores keep records as opaque JSON plus a few indexed columns (id, user id, expiry, version); they
never interpret anything else. JSON only, never pickle.
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Transport = Literal["cookie", "bearer"]


@dataclass(slots=True)
class SessionRecord:
    """What a store keeps for one session.

    ``expires_at`` is the earlier of the idle and the absolute deadline, written by the core at each
    commit; stores use it for purging and native TTLs only. Whether a record is still valid is
    decided by the core (:func:`coatcheck._core.lifecycle.is_expired`), never by a store.
    """

    id: str
    secret_hash: str
    created_at: float
    last_seen_at: float
    expires_at: float
    absolute_expires_at: float
    version: int = 0
    user_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    flash: list[Any] = field(default_factory=list)
    csrf_token: str = ""
    auth_time: float | None = None
    transport: Transport = "cookie"
    remember: bool = False
    user_agent: str = ""
    ip: str = ""
    label: str = ""
    auth_hash: str = ""
    """A fingerprint of the credential the user signed in with (empty: not bound to one); see
    :func:`coatcheck._core.signin.credential_fingerprint`."""
    snapshots: dict[str, bytes] | None = field(default=None, init=False, compare=False, repr=False)
    """Not stored, not compared: set only on a record :meth:`RecordImage.copy` just made, to the
    snapshots a :class:`~coatcheck._core.session.Session` takes of its list and object values
    (made once per image, so a read takes none). ``None`` on every other record, including one
    built from this by :func:`dataclasses.replace` or :meth:`copy`."""

    def copy(self) -> SessionRecord:
        """A deep enough copy: data and flash are rebuilt through JSON."""
        return record_from_json(record_to_json(self))


_FIELDS = {f.name for f in dataclasses.fields(SessionRecord) if f.init}  # what is stored


def record_to_dict(record: SessionRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _FIELDS}


_ENCODE = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
"""``json.dumps`` with these arguments builds an encoder on every call (it reuses its own only
for the default arguments): a fifth of a record's encoding time."""


def record_to_json(record: SessionRecord) -> str:
    return _ENCODE(record_to_dict(record))


class CorruptRecordError(ValueError):
    """Stored bytes that are not a session record as coatcheck writes one.

    Raised by :func:`record_from_json` and :func:`record_from_dict` for anything but a JSON object
    with every required field of the right type: invalid UTF-8 or JSON, nesting too deep to
    decode, a missing field, a wrong type (``"version": "2"``, ``"data": []``, a bool for a
    number), a non-finite time (``NaN`` would never expire), text that is not valid Unicode, a
    token field that is not ASCII, an unknown transport. The managers treat a corrupt record like
    a missing one, so its holder gets an anonymous session (cookie) or a 401 (bearer), never a
    500, and never a session built from fields that were not checked.
    """


_TIMES = ("created_at", "last_seen_at", "expires_at", "absolute_expires_at")
_TEXTS = ("user_agent", "ip", "label")
_ASCII = ("id", "secret_hash", "csrf_token")


def _number(raw: dict[str, Any], name: str) -> float:
    value = raw[name]
    # bool is an int subclass: JSON true is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorruptRecordError(f"{name} must be a finite number, not {type(value).__name__}")
    return float(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise CorruptRecordError(f"{name} must be a string, not {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode("utf-8")  # a lone surrogate (JSON "\ud800") cannot be
        except UnicodeEncodeError:
            raise CorruptRecordError(f"{name} is not valid Unicode") from None
    return value


_FINITE_MIN, _FINITE_MAX = -math.inf, math.inf


def _as_written(raw: dict[str, Any]) -> bool:
    """Whether ``raw`` is exactly what :func:`record_to_json` writes, checked in one pass of
    cheap tests (every field present with its exact type, ASCII text, finite times): the common
    case, which can then be built directly. Anything else goes through the full checks."""
    try:
        return (
            raw.keys() == _FIELDS
            and type(raw["created_at"]) is float
            and _FINITE_MIN < raw["created_at"] < _FINITE_MAX
            and type(raw["last_seen_at"]) is float
            and _FINITE_MIN < raw["last_seen_at"] < _FINITE_MAX
            and type(raw["expires_at"]) is float
            and _FINITE_MIN < raw["expires_at"] < _FINITE_MAX
            and type(raw["absolute_expires_at"]) is float
            and _FINITE_MIN < raw["absolute_expires_at"] < _FINITE_MAX
            and type(raw["version"]) is int
            and raw["version"] >= 0
            and type(raw["id"]) is str
            and raw["id"].isascii()
            and type(raw["secret_hash"]) is str
            and raw["secret_hash"].isascii()
            and type(raw["csrf_token"]) is str
            and raw["csrf_token"].isascii()
            and type(raw["user_agent"]) is str
            and raw["user_agent"].isascii()
            and type(raw["ip"]) is str
            and raw["ip"].isascii()
            and type(raw["label"]) is str
            and raw["label"].isascii()
            and type(raw["auth_hash"]) is str
            and raw["auth_hash"].isascii()
            and (
                raw["user_id"] is None or (type(raw["user_id"]) is str and raw["user_id"].isascii())
            )
            and (
                raw["auth_time"] is None
                or (
                    type(raw["auth_time"]) is float and _FINITE_MIN < raw["auth_time"] < _FINITE_MAX
                )
            )
            and type(raw["data"]) is dict
            and type(raw["flash"]) is list
            and raw["transport"] in _TRANSPORTS
            and type(raw["remember"]) is bool
        )
    except TypeError:  # an unhashable transport, say
        return False


_TRANSPORTS = ("cookie", "bearer")


def _ascii_or_none(value: Any) -> bool:
    return value is None or (type(value) is str and value.isascii())


def _finite_or_none(value: Any) -> bool:
    return value is None or (type(value) is float and _FINITE_MIN < value < _FINITE_MAX)


def record_from_dict(raw: dict[str, Any]) -> SessionRecord:
    """Build a record from a decoded JSON object, ignoring unknown keys (forward compatible).

    Every field is type-checked (see :class:`CorruptRecordError`); optional fields absent from
    ``raw`` take their defaults. Integer times are read as floats.
    """
    if _as_written(raw):
        return SessionRecord(**raw)
    try:
        fields: dict[str, Any] = {name: _number(raw, name) for name in _TIMES}
        for name in _ASCII:
            value = _text(raw[name], name)
            if not value.isascii():
                raise CorruptRecordError(f"{name} must be ASCII")
            fields[name] = value
    except KeyError as exc:
        raise CorruptRecordError(f"the record has no {exc.args[0]}") from None
    if "auth_hash" in raw:
        value = _text(raw["auth_hash"], "auth_hash")
        if not value.isascii():
            raise CorruptRecordError("auth_hash must be ASCII")
        fields["auth_hash"] = value
    for name in _TEXTS:
        if name in raw:
            fields[name] = _text(raw[name], name)
    if "version" in raw:
        version = raw["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise CorruptRecordError("version must be a non-negative integer")
        fields["version"] = version
    if raw.get("user_id") is not None:
        fields["user_id"] = _text(raw["user_id"], "user_id")
    if raw.get("auth_time") is not None:
        fields["auth_time"] = _number(raw, "auth_time")
    if "data" in raw:
        if not isinstance(raw["data"], dict):
            raise CorruptRecordError("data must be a JSON object")
        fields["data"] = raw["data"]
    if "flash" in raw:
        if not isinstance(raw["flash"], list):
            raise CorruptRecordError("flash must be a JSON array")
        fields["flash"] = raw["flash"]
    if "transport" in raw:
        if raw["transport"] not in ("cookie", "bearer"):
            raise CorruptRecordError("transport must be 'cookie' or 'bearer'")
        fields["transport"] = raw["transport"]
    if "remember" in raw:
        if not isinstance(raw["remember"], bool):
            raise CorruptRecordError("remember must be a boolean")
        fields["remember"] = raw["remember"]
    return SessionRecord(**fields)


_fast_loads: Callable[[str | bytes], Any] | None
try:
    from msgspec.json import Decoder as _MsgspecDecoder
except ImportError:  # the optional accelerator: pip install coatcheck[fast]
    _fast_loads = None
else:
    _fast_loads = _MsgspecDecoder().decode


def json_loads(raw: str | bytes) -> Any:
    """``json.loads(raw)``, three to four times faster where msgspec is installed.

    msgspec's parser gives the very values ``json.loads`` gives for every text it accepts (big
    integers included; ``tests/fuzz/test_fuzz_record.py`` checks it against ``json.loads``),
    and refuses a few that ``json.loads`` takes: ``NaN`` and ``Infinity``, numbers beyond a
    float's range, lone surrogates, nesting beyond its depth limit, other encodings than UTF-8.
    Those, and every text it refuses, go to ``json.loads``, which decides.
    """
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)
        except Exception:  # noqa: S110 (json.loads decides, and raises what it raises)
            pass
    return json.loads(raw)


def record_from_json(raw: str | bytes) -> SessionRecord:
    """Decode what :func:`record_to_json` wrote; :class:`CorruptRecordError` for anything else."""
    try:
        decoded = json_loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and UnicodeDecodeError (bytes that are not UTF-8);
        # RecursionError is what deeply nested arrays ("[[[[...") raise.
        raise CorruptRecordError(f"a session record must be JSON: {type(exc).__name__}") from None
    if not isinstance(decoded, dict):
        raise CorruptRecordError("a session record must be a JSON object")
    return record_from_dict(decoded)


_IMAGE_FORMAT = 3  # marshal format 3: repeated keys are shared, so copies load faster
SNAPSHOT_FORMAT = 2
"""The marshal format of a Session's snapshots: 2 writes binary floats and no object references
(nor interning), so equal values of equal types always give equal bytes."""


def snapshot_bytes(value: list[Any] | dict[str, Any]) -> bytes:
    """A Session's snapshot of a list or object value (see :data:`SNAPSHOT_FORMAT`)."""
    return marshal.dumps(value, SNAPSHOT_FORMAT)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(SessionRecord) if f.init)
_BEFORE_DATA = _FIELD_NAMES[: _FIELD_NAMES.index("data")]
_AFTER_FLASH = _FIELD_NAMES[_FIELD_NAMES.index("flash") + 1 :]
if _FIELD_NAMES.index("flash") != _FIELD_NAMES.index("data") + 1:  # pragma: no cover
    raise ImportError("SessionRecord's data and flash must be adjacent fields")


class RecordImage:
    """A decoded and checked record, kept to hand out copies of it cheaply.

    Stores that keep a record's JSON in process memory (the memory store, the Redis client-side
    cache) decode it once and keep this image: a copy is then two ``marshal.loads`` and a
    positional construction, a fraction of decoding and checking the JSON again. Every copy is
    independent, so callers never share mutable state with the store.
    """

    __slots__ = ("_data", "_flash", "_head", "_snapshots", "_tail")

    def __init__(self, record: SessionRecord) -> None:
        self._head = tuple(getattr(record, name) for name in _BEFORE_DATA)
        self._data = marshal.dumps(record.data, _IMAGE_FORMAT)
        self._flash = marshal.dumps(record.flash, _IMAGE_FORMAT) if record.flash else b""
        self._tail = tuple(getattr(record, name) for name in _AFTER_FLASH)
        # What Session's snapshot_of makes of each list and object value (marshal format 2
        # writes no references, so a copy's bytes are these bytes); shared by every copy,
        # never changed.
        self._snapshots = {
            key: snapshot_bytes(value)
            for key, value in record.data.items()
            if type(value) is list or type(value) is dict
        }

    def copy(self) -> SessionRecord:
        # S302: bytes made in __init__ from a record that was decoded and checked.
        data = marshal.loads(self._data)  # noqa: S302
        flash = marshal.loads(self._flash) if self._flash else []  # noqa: S302
        # Positional, in field order: several times cheaper than 18 keywords (mypy cannot count
        # fields in tuples; the store contract suite reads every field back).
        record = SessionRecord(*self._head, data, flash, *self._tail)  # type: ignore[call-arg]
        record.snapshots = self._snapshots
        return record
