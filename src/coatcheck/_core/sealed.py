"""Sealed cookies: a whole session encrypted into the cookie value with AES-256-GCM.

No I/O here: keys are derived, payloads sealed and opened, nothing is read or written. The flows
that use this codec are in :mod:`coatcheck._core.sealed_flow`.

Rules written here:

- **Keys.** Each secret (at least 32 characters, checked by :class:`~.config.SessionConfig`) gives
  one AES-256-GCM key per purpose through HKDF-SHA256, and a 4-byte key id through HKDF with
  another label, so operators never number their keys and the id says nothing about the key.
  Secrets are listed oldest -> newest: a seal is made with the newest and opened with any listed
  key. Two listed secrets with the same key id are refused at start-up.
- **Seal layout.** ``base64url(version || key id || nonce || ciphertext || tag)``, unpadded:
  1 + 4 + 12 bytes in front, a 16-byte tag behind (33 bytes, 44 characters of overhead). The
  nonce is 96 random bits from the OS for every seal. The associated data binds the format
  version, the purpose (``cookie``) and the cookie name, so a seal made for one cookie name or
  purpose does not open under another.
- **Strict opening.** Only the canonical base64url spelling of a seal opens (no padding, no
  stray bits in the last character), so every changed character of a cookie is a failed open.
  Opening never raises: anything that is not an authentic, well-formed seal gives ``None``.
- **No compression.** The payload is sealed as plain JSON. Compressing attacker-influenced data
  (a cart) next to secrets (the CSRF token) before encryption would let the seal's length leak
  them (CRIME/BREACH).
- **Payload.** A JSON object with short keys: ``i`` session id, ``t`` [created, last seen,
  absolute deadline, issued] (epoch seconds to the millisecond), ``c`` CSRF token, ``d`` data,
  and when set ``u`` user id, ``f`` pending flash messages, ``a`` auth time, ``r`` remember-me.
  A payload that is not exactly that shape is refused like a forged seal.
- **Opened seals are remembered.** A browser sends the same cookie on every request until the
  session is re-sealed, so :class:`OpenedSeals` keeps, per exact cookie value, what opening it
  gave (made only from a seal that opened and a payload that passed every check): the next
  request with the same value skips base64, AES-GCM and JSON. Nothing is trusted that was not
  checked: the key ring of a :class:`Sealer` never changes, opening is deterministic, and
  expiry and revocations are decided afresh on every request from the remembered times. Bounded
  (:data:`OPENED_SEALS_KEPT` values, the oldest forgotten first); each request gets its own copy.
- **Seals made here are remembered as made.** A write's new value is kept with the session it
  seals (when every value in it is plain JSON, so decoding would give back equal values of the
  same types; else with its plaintext, decoded when it returns) and with the JSON text of each
  data value: the browser's next request decodes nothing, and the next write encodes only the
  values that request touched.
"""

from __future__ import annotations

import binascii
import json
import json.encoder
import marshal
import math
import os
import re
import threading
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigurationError
from .memo import bounded_insert
from .record import SessionRecord
from .session import snapshot_of

FORMAT_VERSION = 1
KEY_ID_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES
OVERHEAD_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
"""Bytes a seal adds to its plaintext before base64url (33)."""
MAX_SEAL_CHARS = 4096
"""Longer cookie values are refused before any decoding (no browser sends them anyway)."""

_HKDF_SALT = b"coatcheck sealed sessions"
_KEY_INFO = b"coatcheck/sealed/v1/aes-256-gcm/"
_KEY_ID_INFO = b"coatcheck/sealed/v1/key-id"
_AAD_PREFIX = b"coatcheck/sealed/v1\x00"

_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PADDING = (b"", b"", b"==", b"=")
_B64URL_INDEX = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_ID_RE = re.compile(r"[A-Za-z0-9_-]{24}")
_MAX_CSRF_CHARS = 128


def _hkdf(secret: str, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=_HKDF_SALT, info=info).derive(
        secret.encode("utf-8")
    )


def key_id(secret: str) -> bytes:
    """The 4-byte id a secret's seals carry (derived, so operators never number keys)."""
    return _hkdf(secret, _KEY_ID_INFO, KEY_ID_BYTES)


@dataclass(frozen=True, slots=True)
class _Key:
    id: bytes
    aead: AESGCM


class Sealer:
    """Seals and opens byte strings for one purpose and cookie name, with a key ring.

    ``secrets`` are listed oldest -> newest; the last one seals.
    """

    def __init__(self, secrets: Sequence[str], *, purpose: str, name: str) -> None:
        if not secrets:
            raise ConfigurationError("sealing needs at least one secret")
        keys: dict[bytes, _Key] = {}
        info = _KEY_INFO + purpose.encode("ascii")
        for secret in secrets:
            kid = key_id(secret)
            if kid in keys:
                raise ConfigurationError(
                    "two listed secrets are the same, or share a key id: list each secret once"
                )
            keys[kid] = _Key(kid, AESGCM(_hkdf(secret, info, 32)))
        self._keys = keys
        self._newest = keys[key_id(secrets[-1])]
        self._header = bytes([FORMAT_VERSION]) + self._newest.id
        self._aad = _AAD_PREFIX + purpose.encode("ascii") + b"\x00" + name.encode("ascii") + b"\x00"
        self.purpose = purpose
        self.name = name

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """The ids of the listed keys, oldest -> newest."""
        return tuple(self._keys)

    def seal(self, plaintext: bytes) -> str:
        """Encrypt and authenticate ``plaintext`` with the newest key; base64url, unpadded."""
        nonce = os.urandom(NONCE_BYTES)
        header = self._header
        sealed = header + nonce + self._newest.aead.encrypt(nonce, plaintext, self._aad + header)
        encoded = binascii.b2a_base64(sealed, newline=False).translate(_TO_URLSAFE)
        return encoded.rstrip(b"=").decode("ascii")

    def open(self, value: str) -> tuple[bytes, bool] | None:
        """``(plaintext, sealed with the newest key)``, or ``None`` for anything not authentic.

        Never raises, whatever ``value`` holds.
        """
        raw = _decode(value)
        if raw is None or len(raw) < OVERHEAD_BYTES or raw[0] != FORMAT_VERSION:
            return None
        key = self._keys.get(raw[1:HEADER_BYTES])
        if key is None:
            return None  # sealed with a key that is no longer listed (or a forgery)
        nonce_end = HEADER_BYTES + NONCE_BYTES
        try:
            plaintext = key.aead.decrypt(
                raw[HEADER_BYTES:nonce_end], raw[nonce_end:], self._aad + raw[:HEADER_BYTES]
            )
        except InvalidTag:
            return None
        return plaintext, key is self._newest


def _decode(value: str) -> bytes | None:
    """Strict, canonical base64url: ``None`` unless ``value`` is exactly how we would spell it."""
    size = len(value)
    tail = size % 4
    # "+" and "/" would decode too once "-_" are translated; they are not ours to accept.
    if not 0 < size <= MAX_SEAL_CHARS or tail == 1 or "+" in value or "/" in value:
        return None
    last = _B64URL_INDEX.get(value[-1])
    if last is None or (tail and last & (0x0F if tail == 2 else 0x03)):
        return None  # bits past the last byte must be zero, or two spellings would open alike
    try:
        # strict_mode refuses every character outside the alphabet, "=" inside included.
        return binascii.a2b_base64(
            value.encode("ascii").translate(_TO_STANDARD) + _PADDING[tail], strict_mode=True
        )
    except (binascii.Error, UnicodeEncodeError):
        return None


def sealed_length(plaintext_bytes: int) -> int:
    """Characters of the seal of a ``plaintext_bytes``-long payload."""
    return math.ceil((plaintext_bytes + OVERHEAD_BYTES) * 4 / 3)


# -- the session payload ---------------------------------------------------------------------


@dataclass(slots=True)
class SealedState:
    """A session as read from its seal: the record the Session works on, and when its id was
    issued (revocations compare with that)."""

    record: SessionRecord
    issued_at: float
    snapshots: dict[str, bytes] | None = field(default=None, compare=False)
    """Change-detection snapshots of the data's lists and objects, when already made (a seal
    opened before: see :class:`OpenedSeals`)."""
    fragments: dict[str, str] | None = field(default=None, compare=False)
    """The JSON text of each data value as sealed, when this process sealed it (see
    :func:`encode_payload`): a write re-encodes only what it changed."""


def _ms(value: float) -> float:
    """``value`` (epoch seconds) to the millisecond: integer arithmetic, a third of what
    ``round(value, 3)`` costs, and the same float whenever the two pick the same millisecond."""
    return int(value * 1000 + 0.5) / 1000


def dump_payload(record: SessionRecord, issued_at: float) -> bytes:
    """The JSON a session is sealed as (see the module docstring for the keys)."""
    return encode_payload(record, issued_at)[0]


def encode_payload(
    record: SessionRecord,
    issued_at: float,
    known: dict[str, str] | None = None,
    changed: Container[str] = (),
) -> tuple[bytes, dict[str, str]]:
    """The JSON a session is sealed as, and the JSON text of each data value in it.

    ``known``: the JSON text of the data's values as last sealed here; each key not in
    ``changed`` still holds the value that text encodes, and is not encoded again (a write of
    one key does not re-encode the cart next to it). The payload is spelled exactly as
    ``json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` spells
    it (test_sealed_codec compares the two), built by hand so that values can be reused.
    """
    encode = _encode_value
    fragments: dict[str, str] = {}
    parts: list[str] = []
    for key, value in record.data.items():
        text = None
        if known is not None and key not in changed:
            text = known.get(key)
        if text is None:
            text = encode(value)
        fragments[key] = text
        parts.append(_encode_str(key) + ":" + text)
    user_id, auth_time, auth_hash = record.user_id, record.auth_time, record.auth_hash
    text = "".join(
        (
            '{"i":',
            _encode_str(record.id),
            ',"t":[',  # to the millisecond (_ms inline: this runs on every seal)
            _float(int(record.created_at * 1000 + 0.5) / 1000),
            ",",
            _float(int(record.last_seen_at * 1000 + 0.5) / 1000),
            ",",
            _float(int(record.absolute_expires_at * 1000 + 0.5) / 1000),
            ",",
            _float(int(issued_at * 1000 + 0.5) / 1000),
            '],"c":',
            _encode_str(record.csrf_token),
            ',"d":{',
            ",".join(parts),
            "}",
            "" if user_id is None else ',"u":' + _encode_str(user_id),
            ',"f":' + _ENCODER.encode(record.flash) if record.flash else "",
            "" if auth_time is None else ',"a":' + _float(_ms(auth_time)),
            ',"r":true' if record.remember else "",
            ',"h":' + _encode_str(auth_hash) if auth_hash else "",
            "}",
        )
    )
    # surrogatepass: a lone surrogate ("\ud800", which json.loads accepts from a request body)
    # is valid session data on every store; json.loads of the bytes gives it back.
    return text.encode("utf-8", "surrogatepass"), fragments


def json_size(value: Any) -> int:
    """Bytes of ``value``'s JSON in a payload."""
    return len(_ENCODER.encode(value).encode("utf-8", "surrogatepass"))


def _encode_value(value: Any) -> str:
    """``value`` as _ENCODER spells it; scalars without building an encoder per call."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)  # ValueError past 4300 digits, as the encoder raises
    if kind is bool or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if kind is float:
        return _float(value)
    return _ENCODER.encode(value)


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float.__repr__(value)


# One encoder for every seal: json.dumps builds a new one per call when given options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
"""A str as JSON, ``ensure_ascii=False`` (the encoder's own function for it)."""
_PAYLOAD_KEYS = frozenset("itcdufarh")


def _is_time(value: object) -> bool:
    # type() rather than isinstance: a bool is an int, and no time.
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def load_payload(plaintext: bytes) -> SealedState | None:
    """The session sealed in ``plaintext``, or ``None`` unless it has exactly the expected shape.

    ``expires_at`` is left at the absolute deadline: expiry is decided from the times by the
    caller, with the current configuration.
    """
    try:
        payload = json.loads(plaintext)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(payload, dict):
        return None
    session_id = payload.get("i")
    times = payload.get("t")
    csrf_token = payload.get("c")
    data = payload.get("d")
    user_id = payload.get("u")
    flash = payload.get("f", [])
    auth_time = payload.get("a")
    remember = payload.get("r", False)
    auth_hash = payload.get("h", "")
    if (
        type(session_id) is not str
        or _ID_RE.fullmatch(session_id) is None
        or type(times) is not list
        or len(times) != 4
        or not (_is_time(times[0]) and _is_time(times[1]))
        or not (_is_time(times[2]) and _is_time(times[3]))
        or type(csrf_token) is not str
        or not 0 < len(csrf_token) <= _MAX_CSRF_CHARS
        or type(data) is not dict
        or not (user_id is None or type(user_id) is str)
        or type(flash) is not list
        or not (auth_time is None or _is_time(auth_time))
        or type(remember) is not bool
        or type(auth_hash) is not str
        or not auth_hash.isascii()
        or not _PAYLOAD_KEYS.issuperset(payload)
    ):
        return None
    created_at, last_seen_at, absolute_expires_at, issued_at = map(float, times)
    record = SessionRecord(
        id=session_id,
        secret_hash="",  # a sealed session has no token secret: the seal is the credential
        created_at=created_at,
        last_seen_at=last_seen_at,
        expires_at=absolute_expires_at,
        absolute_expires_at=absolute_expires_at,
        version=1,
        user_id=user_id,
        data=data,
        flash=flash,
        csrf_token=csrf_token,
        auth_time=float(auth_time) if auth_time is not None else None,
        transport="cookie",
        remember=remember,
        auth_hash=auth_hash,
    )
    return SealedState(record, issued_at)


# -- opened seals, remembered ----------------------------------------------------------------

OPENED_SEALS_KEPT = 1024
"""Cookie values :class:`OpenedSeals` remembers (a few MiB at most: a value is under 4 KiB)."""

# marshal format 3: repeated dict keys are written once and shared when loaded, a quarter faster
# to copy than format 2. Safe for a copy: decoded JSON has no shared lists or objects to alias.
_IMAGE_FORMAT = 3
_Image = tuple[
    tuple[Any, ...],
    bytes,
    bytes,
    tuple[Any, ...],
    float,
    bool,
    dict[str, bytes] | None,
    dict[str, str] | None,
]
"""(the record's fields before ``data``, its data and flash marshalled, its fields after
``flash``, issued at, newest key, the Session's snapshots of the data's lists and objects, the
JSON text of the data's values when sealed here)"""


def _image(
    record: SessionRecord,
    times: tuple[float, float, float],
    auth_time: float | None,
    issued_at: float,
    newest: bool,
    snapshots: dict[str, bytes] | None,
    fragments: dict[str, str] | None,
) -> _Image:
    """``record`` as :meth:`OpenedSeals.recall` rebuilds it, with its times as given
    (``created_at``, ``last_seen_at``, the absolute deadline)."""
    created_at, last_seen_at, deadline = times
    return (
        (
            record.id,
            "",  # secret_hash: a sealed session has none
            created_at,
            last_seen_at,
            deadline,  # expires_at, as load_payload leaves it
            deadline,
            1,  # version
            record.user_id,
        ),
        marshal.dumps(record.data, _IMAGE_FORMAT),
        marshal.dumps(record.flash, _IMAGE_FORMAT) if record.flash else b"",
        (
            record.csrf_token,
            auth_time,
            "cookie",
            bool(record.remember),
            "",  # user_agent, ip and label: not sealed
            "",
            "",
            record.auth_hash,
        ),
        issued_at,
        newest,
        snapshots,
        fragments,
    )


def _state(image: _Image) -> SealedState:
    """A fresh copy of the session an image holds."""
    head, data, flash, tail, issued_at, _, snapshots, fragments = image
    # S302: bytes this process marshalled itself from checked values that are plain JSON.
    loaded_data = marshal.loads(data)  # noqa: S302
    loaded_flash = marshal.loads(flash) if flash else []  # noqa: S302
    # Positional, in field order (see _image): several times cheaper than keywords.
    # mypy cannot count the fields in two tuples; test_sealed_opened pins the order.
    record = SessionRecord(*head, loaded_data, loaded_flash, *tail)  # type: ignore[call-arg]
    return SealedState(record, issued_at, snapshots, fragments)


def plain_json(value: Any) -> bool:
    """Whether ``value`` comes back from JSON equal and of the same types: only dicts with str
    keys, lists, str, int, finite float, bool and None, all of those exact types (a tuple comes
    back a list, an int key a str, an IntEnum an int)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(plain_json(item) for item in value)
    if kind is dict:
        return all(type(k) is str and plain_json(v) for k, v in value.items())
    return False


class OpenedSeals:
    """What opening each recently seen cookie value gave, so that opening it again is a lookup.

    Made by :meth:`remember` from a :class:`SealedState` that :func:`load_payload` just built
    from an authentic seal; :meth:`recall` gives a fresh copy (its data and flash rebuilt from
    ``marshal`` bytes this process made from decoded JSON values, so requests share nothing).
    Values sealed here (:meth:`remember_sealed`) wait in a separate, smaller memory until a
    request brings them back, so clients that ignore ``Set-Cookie`` (every write then seals a
    value that never returns) cannot push out the values browsers keep sending.
    Thread-safe: lookups are dict accesses, insertions take a lock.
    """

    def __init__(self, kept: int = OPENED_SEALS_KEPT) -> None:
        self._kept = kept
        self._images: dict[str, _Image] = {}
        self._sealed: dict[str, tuple[_Image | bytes, bool]] = {}
        """value -> (what was sealed into it here: its image, or the plaintext when the session
        held values that JSON would give back changed; whether a request brought it back)."""
        self._lock = threading.Lock()

    def recall(self, value: str) -> tuple[SealedState, bool] | None:
        """``(state, sealed with the newest key)`` for a value opened before, else ``None``."""
        image = self._images.get(value)
        if image is not None:
            return _state(image), image[5]
        fresh = self._sealed.get(value)
        if fresh is None:
            return None
        sealed, seen = fresh
        if isinstance(sealed, bytes):
            loaded = load_payload(sealed)
            if loaded is None:
                return None
            state = loaded
        else:
            state = _state(sealed)
        if seen:
            # Sent back a second time: worth a copy to recall from from now on.
            self.remember(value, state, True)
        else:
            # Sent back once: the request may be a write whose own seal replaces this value at
            # once (a cart filled click after click), so no copy is made yet.
            self._sealed[value] = (sealed, True)
        return state, True

    def remember(self, value: str, state: SealedState, newest: bool) -> None:
        """Keep what opening ``value`` gave (call before anything changes ``state``)."""
        record = state.record
        image = _image(
            record,
            (record.created_at, record.last_seen_at, record.absolute_expires_at),
            record.auth_time,
            state.issued_at,
            newest,
            # Made once per cookie value instead of once per request reading a list or object:
            # equal JSON values give equal format-2 bytes (see coatcheck._core.session).
            {k: snapshot_of(v) for k, v in record.data.items() if isinstance(v, list | dict)},
            state.fragments,
        )
        with self._lock:
            bounded_insert(self._images, value, image, self._kept)
            self._sealed.pop(value, None)

    def remember_sealed(
        self,
        value: str,
        plaintext: bytes,
        record: SessionRecord | None,
        issued_at: float,
        fragments: dict[str, str] | None = None,
    ) -> None:
        """Keep what was just sealed into ``value`` with the newest key: the browser sends it
        next. ``record`` is the sealed session when opening the seal gives it back exactly
        (equal values of the same types, as
        :func:`plain_json` checks); its image is kept, so the
        value's next request decodes no JSON. Otherwise the plaintext is kept and decoded when
        the value comes back (a write pays for no decoding)."""
        kept: _Image | bytes = plaintext
        if record is not None:
            auth_time = record.auth_time
            kept = _image(
                record,
                # As load_payload gives them back: the payload holds the times to the ms.
                (
                    _ms(record.created_at),
                    _ms(record.last_seen_at),
                    _ms(record.absolute_expires_at),
                ),
                _ms(auth_time) if auth_time is not None else None,
                _ms(issued_at),
                True,
                None,  # the Session snapshots what it hands out; see recall for a second return
                fragments,
            )
        with self._lock:
            bounded_insert(self._sealed, value, (kept, False), max(1, self._kept // 4))

    def settled(self, value: str) -> bool:
        """Whether ``value`` has come back more than once (it is recalled from a copy now)."""
        return value in self._images

    def __len__(self) -> int:
        return len(self._images) + len(self._sealed)

    def __contains__(self, value: object) -> bool:
        """Whether ``value`` is remembered. Every such value is a clean cookie value (it was
        parsed from a ``Cookie`` header and opened, or sealed here: base64url, under 4096
        bytes), so :func:`~coatcheck._core.cookies.parse_cookies` may take it unchecked."""
        return value in self._images or value in self._sealed
