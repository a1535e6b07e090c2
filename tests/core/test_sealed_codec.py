"""The sealed-cookie codec: keys, seal layout, strict opening, the session payload.

Property tests (hypothesis) pin that every change to a seal fails to open and that opening never
raises, whatever the input.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coatcheck._core.config import SessionConfig
from coatcheck._core.record import SessionRecord
from coatcheck._core.sealed import (
    OVERHEAD_BYTES,
    Sealer,
    dump_payload,
    encode_payload,
    key_id,
    load_payload,
    sealed_length,
)
from coatcheck.errors import ConfigurationError

OLD = "old-secret-0123456789-abcdefghijklmnopq"
NEW = "new-secret-0123456789-abcdefghijklmnopq"
NAME = "__Host-session"
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sealer(*secrets_: str, name: str = NAME, purpose: str = "cookie") -> Sealer:
    return Sealer(secrets_ or (NEW,), purpose=purpose, name=name)


def raw(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def record(**changes: object) -> SessionRecord:
    fields: dict[str, object] = {
        "id": "A" * 24,
        "secret_hash": "",
        "created_at": 1_800_000_000.0,
        "last_seen_at": 1_800_000_100.5,
        "expires_at": 1_800_043_200.0,  # a payload carries the absolute deadline only
        "absolute_expires_at": 1_800_043_200.0,
        "version": 1,
        "user_id": "42",
        "data": {"cart": ["apple", {"n": 2}], "name": "Zoë ✓"},
        "flash": [{"message": "hi", "category": "info"}],
        "csrf_token": "c" * 43,
        "auth_time": 1_800_000_050.25,
        "remember": True,
    }
    fields.update(changes)
    return SessionRecord(**fields)  # type: ignore[arg-type]


def test_seal_opens_with_the_same_key_and_reports_the_newest() -> None:
    """A seal opens to its plaintext, and says it was made with the newest key."""
    s = sealer()
    assert s.open(s.seal(b"payload")) == (b"payload", True)


def test_seal_layout_and_length() -> None:
    """A seal is unpadded base64url of version, key id, 96-bit nonce, ciphertext and tag."""
    s = sealer()
    value = s.seal(b"x" * 100)
    decoded = raw(value)
    assert "=" not in value
    assert decoded[0] == 1
    assert decoded[1:5] == key_id(NEW)
    assert len(decoded) == 100 + OVERHEAD_BYTES
    assert len(value) == sealed_length(100)


def test_nonces_are_random_so_equal_plaintexts_seal_differently() -> None:
    """Two seals of the same plaintext differ (random nonce) and both open."""
    s = sealer()
    first, second = s.seal(b"same"), s.seal(b"same")
    assert first != second
    assert raw(first)[5:17] != raw(second)[5:17]
    assert s.open(first) == s.open(second) == (b"same", True)


def test_the_key_is_derived_per_purpose_with_hkdf() -> None:
    """The AES key is HKDF-SHA256 of the secret for the purpose: the seal decrypts with that key
    and associated data, and a sealer for another purpose cannot open it."""
    value = sealer().seal(b"data")
    decoded = raw(value)
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(
        algorithm=SHA256(),
        length=32,
        salt=b"coatcheck sealed sessions",
        info=b"coatcheck/sealed/v1/aes-256-gcm/cookie",
    ).derive(NEW.encode())
    aad = b"coatcheck/sealed/v1\x00cookie\x00" + NAME.encode() + b"\x00" + decoded[:5]
    assert AESGCM(key).decrypt(decoded[5:17], decoded[17:], aad) == b"data"
    assert sealer(purpose="bearer").open(value) is None


def test_plaintext_is_not_in_the_seal() -> None:
    """Nothing of the payload can be read from the cookie's bytes."""
    payload = dump_payload(record(user_id="user-1234", data={"email": "ann@example.com"}), 0.0)
    value = sealer().seal(payload)
    for needle in (b"user-1234", b"ann@example.com", b"cart"):
        assert needle not in raw(value)
        assert needle.decode() not in value


def test_wrong_key_does_not_open() -> None:
    """A seal made with another secret does not open (its key id is unknown)."""
    assert sealer(OLD).open(sealer(NEW).seal(b"data")) is None


def test_wrong_cookie_name_does_not_open() -> None:
    """The cookie name is bound: a seal moved to another cookie name does not open."""
    value = sealer(name="__Host-session").seal(b"data")
    assert sealer(name="coatcheck_session").open(value) is None


def test_rotation_two_secrets_then_one() -> None:
    """Old seals open while the old secret is listed (and say they are not the newest); seals
    are made with the newest; once the old secret is removed, its seals no longer open."""
    old_only = sealer(OLD)
    old_seal = old_only.seal(b"before rotation")
    both = sealer(OLD, NEW)
    assert both.open(old_seal) == (b"before rotation", False)
    new_seal = both.seal(b"after rotation")
    assert raw(new_seal)[1:5] == key_id(NEW)
    assert both.open(new_seal) == (b"after rotation", True)
    new_only = sealer(NEW)
    assert new_only.open(old_seal) is None
    assert new_only.open(new_seal) == (b"after rotation", True)


def test_a_secret_listed_twice_is_refused() -> None:
    """Listing one secret twice is a configuration error, in the sealer and in the config."""
    with pytest.raises(ConfigurationError):
        Sealer((NEW, NEW), purpose="cookie", name=NAME)
    with pytest.raises(ConfigurationError):
        Sealer((), purpose="cookie", name=NAME)
    with pytest.raises(ConfigurationError):
        SessionConfig(secret=NEW, previous_secrets=(NEW,))


@pytest.mark.parametrize(
    "previous",
    [("short",), ("a" * 40,), ("changeme",), "a-single-string-secret-0123456789abcdef"],
)
def test_previous_secrets_are_validated_like_the_secret(previous: object) -> None:
    """Short, low-entropy, or mistyped previous secrets fail at start-up."""
    with pytest.raises(ConfigurationError):
        SessionConfig(secret=NEW, previous_secrets=previous)  # type: ignore[arg-type]


def test_config_lists_secrets_oldest_to_newest() -> None:
    """SessionConfig.secrets is previous_secrets then secret (a list is kept as a tuple)."""
    config = SessionConfig(secret=NEW, previous_secrets=[OLD])  # type: ignore[arg-type]
    assert config.secrets == (OLD, NEW)
    assert config.previous_secrets == (OLD,)


def test_payload_round_trips_every_field() -> None:
    """Everything a session needs comes back from its payload, times to the millisecond."""
    original = record()
    state = load_payload(dump_payload(original, 1_800_000_000.0004))
    assert state is not None
    assert state.issued_at == 1_800_000_000.0
    assert state.record == original


def test_payload_is_compact_json_without_empty_fields() -> None:
    """An anonymous session's payload has no user, flash, auth time or remember keys."""
    payload = json.loads(
        dump_payload(record(user_id=None, flash=[], auth_time=None, remember=False), 0)
    )
    assert sorted(payload) == ["c", "d", "i", "t"]


@pytest.mark.parametrize(
    "plaintext",
    [
        b"[]",
        b'"string"',
        b"42",
        b"null",
        b"{not json",
        b"\xff\xfe",
        b"{}",
        b'{"i":"short","t":[1,2,3,4],"c":"x","d":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3],"c":"x","d":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,true],"c":"x","d":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,"4"],"c":"x","d":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,NaN],"c":"x","d":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"","d":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"x","d":[]}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"x","d":{},"u":7}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"x","d":{},"f":{}}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"x","d":{},"a":"now"}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"x","d":{},"r":1}',
        b'{"i":"AAAAAAAAAAAAAAAAAAAAAAAA","t":[1,2,3,4],"c":"x","d":{},"z":0}',
    ],
)
def test_authentic_seal_of_a_malformed_payload_is_refused(plaintext: bytes) -> None:
    """A payload of any other shape (even if sealed with the right key) is no session."""
    opened = sealer().open(sealer().seal(plaintext))
    assert opened is not None
    assert load_payload(opened[0]) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "A",
        "AAAAA",
        "A" * 44,
        "A" * 5000,
        "AQID" + "+" * 60,
        "AQID" + "/" * 60,
        "AQID====" + "A" * 60,
        "💥" * 50,
        "AQIDBA\x00\x01",
        "AQIDBA AQIDBA",
    ],
)
def test_junk_never_opens(value: str) -> None:
    """Non-base64, padded, too short, too long or non-ASCII values open to None."""
    assert sealer().open(value) is None


def test_non_canonical_last_character_does_not_open() -> None:
    """Changing only the unused low bits of the last character (a second spelling of the same
    bytes) is refused: each seal has exactly one spelling."""
    s = sealer()
    for size in range(40, 46):  # plaintext sizes covering every base64 tail length
        value = s.seal(b"x" * size)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        index = alphabet.index(value[-1])
        for flip in (1, 2, 4, 8):
            twin = value[:-1] + alphabet[index ^ flip]
            if twin != value and raw(twin) == raw(value):
                assert s.open(twin) is None


@PROPERTY
@given(st.binary(max_size=600), st.data())
def test_any_flipped_byte_fails_to_open(plaintext: bytes, data: st.DataObject) -> None:
    """Replacing any one character of a seal with any other character fails to open."""
    s = sealer()
    value = s.seal(plaintext)
    position = data.draw(st.integers(0, len(value) - 1))
    replacement = data.draw(
        st.characters(codec="ascii").filter(lambda c: c != value[position]), label="char"
    )
    tampered = value[:position] + replacement + value[position + 1 :]
    assert s.open(tampered) is None


@PROPERTY
@given(st.binary(max_size=600), st.data())
def test_any_truncation_fails_to_open(plaintext: bytes, data: st.DataObject) -> None:
    """Every proper prefix and suffix of a seal fails to open."""
    s = sealer()
    value = s.seal(plaintext)
    cut = data.draw(st.integers(0, len(value) - 1))
    assert s.open(value[:cut]) is None
    assert s.open(value[cut + 1 :]) is None


@PROPERTY
@given(st.binary(max_size=600), st.text(min_size=1, max_size=40))
def test_appended_bytes_fail_to_open(plaintext: bytes, extra: str) -> None:
    """A seal with anything appended fails to open."""
    s = sealer()
    assert s.open(s.seal(plaintext) + extra) is None


@PROPERTY
@given(st.text(max_size=800))
def test_opening_arbitrary_text_never_raises(value: str) -> None:
    """Whatever string arrives, opening gives None (a random string is never authentic)."""
    assert sealer().open(value) is None


@PROPERTY
@given(st.binary(min_size=0, max_size=700))
def test_opening_arbitrary_base64_never_raises(blob: bytes) -> None:
    """Well-formed base64url of random bytes (a version byte and key id included) is refused."""
    s = sealer()
    forged = bytes([1]) + key_id(NEW) + blob
    value = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    assert s.open(value) is None


@PROPERTY
@given(st.binary(max_size=2000))
def test_loading_arbitrary_plaintext_never_raises(plaintext: bytes) -> None:
    """load_payload refuses (None) rather than raising on any bytes."""
    state = load_payload(plaintext)
    assert state is None or isinstance(state.record, SessionRecord)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY
@given(
    data=st.dictionaries(st.text(max_size=12), JSON, max_size=6),
    user_id=st.none() | st.text(max_size=40),
    flash=st.lists(JSON, max_size=3),
    remember=st.booleans(),
)
def test_any_session_round_trips_through_a_seal(
    data: dict[str, object], user_id: str | None, flash: list[object], remember: bool
) -> None:
    """Any JSON data, user id and flash list comes back equal after sealing and opening."""
    s = sealer()
    original = record(
        id=secrets.token_urlsafe(18), data=data, user_id=user_id, flash=flash, remember=remember
    )
    opened = s.open(s.seal(dump_payload(original, original.created_at)))
    assert opened is not None
    state = load_payload(opened[0])
    assert state is not None
    assert state.record == original


def test_sealed_length_matches_real_seals() -> None:
    """sealed_length predicts the cookie value length for any payload size."""
    s = sealer()
    for size in (0, 1, 2, 3, 100, 2999):
        assert len(s.seal(os.urandom(size))) == sealed_length(size)


def test_payload_is_not_compressed() -> None:
    """Highly repetitive data seals to its full length: no compression, so a seal's length
    cannot reveal secrets sealed next to attacker-chosen data."""
    payload = dump_payload(record(data={"cart": ["apple"] * 200}), 0)
    assert len(sealer().seal(payload)) == sealed_length(len(payload))


def _reference_payload(record: SessionRecord, issued_at: float) -> bytes:
    """The payload as json.dumps spells it: what the hand-built encoding must equal."""

    def ms(value: float) -> float:
        return int(value * 1000 + 0.5) / 1000

    payload: dict[str, object] = {
        "i": record.id,
        "t": [
            ms(record.created_at),
            ms(record.last_seen_at),
            ms(record.absolute_expires_at),
            ms(issued_at),
        ],
        "c": record.csrf_token,
        "d": record.data,
    }
    if record.user_id is not None:
        payload["u"] = record.user_id
    if record.flash:
        payload["f"] = record.flash
    if record.auth_time is not None:
        payload["a"] = ms(record.auth_time)
    if record.remember:
        payload["r"] = True
    if record.auth_hash:
        payload["h"] = record.auth_hash
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "surrogatepass")


class Big(int):
    pass


def json_values(*odd: object) -> st.SearchStrategy[object]:
    """Values as a session holds them (nested lists and objects of JSON scalars), with the
    ``odd`` values mixed in among the scalars."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=6)
        | st.sampled_from(odd),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        ),
        max_leaves=10,
    )


def session_ops(
    keys: list[str], values: st.SearchStrategy[object], kinds: tuple[str, ...]
) -> st.SearchStrategy[tuple[str, str, object]]:
    """Things a request does to its session: ``(kind, key, value)``; ``del`` and ``read`` carry
    no value."""
    key = st.sampled_from(keys)
    return st.one_of(
        *(st.tuples(st.just(k), key, st.none() if k in ("del", "read") else values) for k in kinds)
    )


JSON_VALUES = json_values("\ud800", 'q"uote\\', "\x00\x1f\u2028", Big(7), (1, "t"))
TIMES = st.floats(min_value=0, max_value=4e9)


@PROPERTY
@given(
    data=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4),
    user_id=st.none() | st.text(max_size=8),
    flash=st.lists(st.fixed_dictionaries({"message": JSON_VALUES}), max_size=2),
    auth_time=st.none() | TIMES,
    remember=st.booleans(),
    auth_hash=st.sampled_from(["", "h" * 12]),
    times=st.tuples(TIMES, TIMES, TIMES, TIMES),
)
def test_the_payload_is_spelled_as_json_dumps_spells_it(
    data: dict[str, object],
    user_id: str | None,
    flash: list[object],
    auth_time: float | None,
    remember: bool,
    auth_hash: str,
    times: tuple[float, float, float, float],
) -> None:
    """Byte for byte, with and without values reused from the last seal: odd strings, lone
    surrogates, int subclasses, tuples, every optional key present or not."""
    original = record(
        data=data,
        user_id=user_id,
        flash=flash,
        auth_time=auth_time,
        remember=remember,
        auth_hash=auth_hash,
        created_at=times[0],
        last_seen_at=times[1],
        absolute_expires_at=times[2],
    )
    expected = _reference_payload(original, times[3])
    plaintext, fragments = encode_payload(original, times[3])
    assert plaintext == expected
    assert set(fragments) == set(data)
    # Reused: the same bytes; a key named as changed is encoded afresh, never taken as known.
    assert encode_payload(original, times[3], fragments)[0] == expected
    stale = {k: '"stale"' for k in data}
    assert encode_payload(original, times[3], stale, changed=set(data))[0] == expected


def test_non_finite_times_and_values_are_refused_as_json_dumps_refuses_them() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="not JSON compliant"):
            encode_payload(record(data={"x": bad}), 0)
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_payload(record(data={"x": [math.inf]}), 0)
