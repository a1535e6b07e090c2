"""Opened seals remembered (:class:`~coatcheck._core.sealed.OpenedSeals`): the same cookie opened
twice gives the same session, shares nothing between requests, and expiry, revocation and key
removal are still decided on every request."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any, TypedDict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coatcheck._core.config import SessionConfig
from coatcheck._core.http import RequestView
from coatcheck._core.lifecycle import Committed, Opened
from coatcheck._core.ops import Flow
from coatcheck._core.record import SessionRecord
from coatcheck._core.sealed import OpenedSeals, SealedState, dump_payload, load_payload
from coatcheck._core.sealed_flow import SealedMode
from coatcheck.testing import test_config
from tests.core.test_sealed_codec import json_values, session_ops

NOW = 1_800_000_000.0
OLD = "old-secret-0123456789-abcdefghijklmnopq"
NEW = "new-secret-0123456789-abcdefghijklmnopq"


def finish(flow: Flow[Any]) -> Any:
    try:
        next(flow)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("a sealed flow without revocations asked for a store")


def config(*secrets: str) -> SessionConfig:
    """Secrets oldest -> newest."""
    return test_config(secret=secrets[-1], previous_secrets=secrets[:-1])


def seal_of(mode: SealedMode, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "id": "A" * 24,
        "secret_hash": "",
        "created_at": NOW,
        "last_seen_at": NOW,
        "expires_at": NOW + 1800,
        "absolute_expires_at": NOW + 43_200,
        "user_id": "42",
        "data": {"cart": [{"sku": "a", "qty": 1}], "n": 1.5},
        "flash": [{"message": "hi"}],
        "csrf_token": "c" * 43,
        "auth_time": NOW,
        "remember": True,
        "auth_hash": "h" * 10,
    }
    fields.update(changes)
    return mode.sealer.seal(dump_payload(SessionRecord(**fields), NOW))


def open_with(mode: SealedMode, value: str, now: float = NOW + 10) -> Opened:
    name = mode.config.cookie.effective_name
    request = RequestView("GET", "https", [("cookie", f"{name}={value}")], "192.0.2.1")
    opened: Opened = finish(mode.open(request, now, form_csrf=None))
    return opened


def sealed_value(mode: SealedMode, committed: Committed) -> str:
    """The session cookie's value a commit sets."""
    name = mode.config.cookie.effective_name
    for header, value in committed.headers:
        if header == "set-cookie" and value.startswith(name + "="):
            return value.split(";")[0].split("=", 1)[1]
    raise AssertionError("no session cookie set")


def test_recall_gives_what_opening_gave() -> None:
    """A remembered value recalls the record and issue time the payload decoded to."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode)
    opened = mode.sealer.open(value)
    assert opened is not None
    loaded = load_payload(opened[0])
    assert loaded is not None
    seals = OpenedSeals()
    seals.remember(value, loaded, opened[1])
    recalled = seals.recall(value)
    assert recalled is not None
    assert (loaded, True) == recalled


def test_recalled_copies_share_nothing() -> None:
    """Two recalls of one value give separate data and flash: one request's changes never
    reach another's session."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode)
    first = open_with(mode, value).session
    first["cart"].append({"sku": "b", "qty": 2})
    first["n"] = 3
    second = open_with(mode, value).session
    assert second["cart"] == [{"sku": "a", "qty": 1}]
    assert second["n"] == 1.5
    assert len(mode.opened) == 1


def test_remembered_snapshots_find_changes_as_fresh_ones_do() -> None:
    """A recalled seal comes with the snapshots its lists and objects would get when read: they
    are the same bytes, an untouched read re-seals nothing and an in-place change is found."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode, flash=[])
    first = open_with(mode, value).session  # opened afresh: no snapshots yet
    assert first._known_snapshots is None
    first.get("cart")
    recalled = open_with(mode, value).session
    assert recalled._known_snapshots is not None
    assert recalled._known_snapshots == first._loaded
    assert recalled.get("cart") == [{"sku": "a", "qty": 1}]
    assert not recalled.is_modified
    changed = open_with(mode, value).session
    changed["cart"][0]["qty"] = 1.0  # equal, but no longer the int it was: a change
    assert changed.is_modified
    assert changed._changes().set == {"cart": [{"sku": "a", "qty": 1.0}]}


def test_flash_is_delivered_from_a_recalled_seal_too() -> None:
    """The flash messages of a remembered seal come out again for a second request with the same
    cookie, exactly as opening it afresh gives them (the re-seal drops them)."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode)
    assert open_with(mode, value).session.flashes == [{"message": "hi"}]
    assert open_with(mode, value).session.flashes == [{"message": "hi"}]


def test_expiry_is_decided_on_every_request() -> None:
    """A remembered seal past its idle timeout opens nothing, and its cookie is cleared."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode)
    assert open_with(mode, value).session.user_id == "42"
    later = open_with(mode, value, now=NOW + 10 * 86_400)
    assert later.session.user_id is None
    assert later.clear_cookie


def test_forged_values_are_never_remembered() -> None:
    """Only values that opened are remembered; a flipped character still fails to open."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode)
    open_with(mode, value)
    flipped = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    opened = open_with(mode, flipped)
    assert opened.session.user_id is None
    assert opened.clear_cookie
    assert len(mode.opened) == 1


def test_a_removed_key_ends_remembered_seals() -> None:
    """Removing a secret is a new configuration, hence a new mode with nothing remembered: a
    seal the old key ring opened (and remembered) does not open without that key."""
    value = seal_of(SealedMode(config(OLD), revocations=False))
    both = SealedMode(config(OLD, NEW), revocations=False)
    assert open_with(both, value).session.user_id == "42"
    assert open_with(both, value).session.user_id == "42"  # recalled
    new_only = SealedMode(config(NEW), revocations=False)
    assert open_with(new_only, value).session.user_id is None


def test_older_key_still_reseals_after_recall() -> None:
    """A seal made with an older listed key is re-sealed with the newest on a recalled open
    too (the 'newest key' answer is remembered with it)."""
    mode = SealedMode(config(OLD, NEW), revocations=False)
    value = seal_of(SealedMode(config(OLD), revocations=False), flash=[])
    for _ in range(2):
        session = open_with(mode, value).session
        committed = finish(mode.commit(session, NOW + 10))
        assert any(v.startswith(mode.config.cookie.effective_name + "=")
                   for k, v in committed.headers if k == "set-cookie")  # fmt: skip


def test_bounded() -> None:
    """At most the configured number of values is kept; the oldest go first."""
    mode = SealedMode(config(NEW), revocations=False)
    seals = OpenedSeals(kept=8)
    state = SealedState(
        SessionRecord(
            id="A" * 24,
            secret_hash="",
            created_at=NOW,
            last_seen_at=NOW,
            expires_at=NOW,
            absolute_expires_at=NOW,
        ),
        NOW,
    )
    values = [seal_of(mode) for _ in range(20)]
    for value in values:
        seals.remember(value, state, True)
        assert len(seals) <= 8
    assert seals.recall(values[-1]) is not None
    assert seals.recall(values[0]) is None


def test_a_fresh_seal_is_remembered_as_it_opens() -> None:
    """The value a commit seals is remembered with the bytes sealed in it, so the next request
    with it opens the same session without decrypting (and, once it is sent again, without
    decoding)."""
    mode = SealedMode(config(NEW), revocations=False)
    session = open_with(mode, seal_of(mode)).session
    session["n"] = 2
    committed = finish(mode.commit(session, NOW + 20))
    assert committed.record is not None
    value = sealed_value(mode, committed)
    opened = mode.sealer.open(value)
    assert opened is not None
    expected = (load_payload(opened[0]), True)
    assert mode.opened.recall(value) == expected  # decoded
    assert mode.opened.recall(value) == expected  # decoded, and a copy kept
    assert mode.opened.recall(value) == expected  # the copy
    assert open_with(mode, value).session["n"] == 2


def test_fresh_seals_never_push_out_opened_ones() -> None:
    """Values sealed here wait apart until they come back: a client that ignores Set-Cookie
    (every write seals a value never seen again) cannot evict the values browsers keep sending."""
    mode = SealedMode(config(NEW), revocations=False)
    seals = OpenedSeals(kept=8)
    opened = [seal_of(mode) for _ in range(8)]
    for value in opened:
        sealed = mode.sealer.open(value)
        assert sealed is not None
        state = load_payload(sealed[0])
        assert state is not None
        seals.remember(value, state, sealed[1])
    for _ in range(50):
        seals.remember_sealed(seal_of(mode), b"{}", None, NOW)
    assert all(seals.recall(value) is not None for value in opened)
    assert len(seals) <= 8 + 2


def test_remembered_values_are_taken_as_clean_cookie_values() -> None:
    """parse_cookies skips the character check for remembered values: only values that opened
    (parsed clean first) or were sealed here are remembered, and an odd cookie next to a
    remembered one is still refused."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode)
    assert value not in mode.opened
    assert open_with(mode, value).session.user_id == "42"
    assert value in mode.opened
    session = open_with(mode, value).session
    session["n"] = 2
    committed = finish(mode.commit(session, NOW + 20))
    assert committed.record is not None
    assert len(mode.opened) == 2  # the new seal too
    name = mode.config.cookie.effective_name
    for odd in (f'"{value}"', f"{value} ", "\x01" + value, value + "é"):
        request = RequestView("GET", "https", [("cookie", f"{name}={odd}")], "192.0.2.1")
        opened: Opened = finish(mode.open(request, NOW + 10, form_csrf=None))
        assert opened.session.user_id == ("42" if odd.startswith('"') else None), odd


def _shape(value: Any) -> Any:
    """``value`` with every type spelled out: equal shapes mean equal values of the same types
    (``1 == 1.0 == True`` and ``[1] == (1,)`` compare equal; their shapes do not)."""
    if isinstance(value, dict):
        return (type(value), [(_shape(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value), [_shape(v) for v in value])
    return (type(value), repr(value))


def _state_shape(state: SealedState) -> Any:
    return _shape(vars_of(state.record)), _shape(state.issued_at)


def vars_of(record: SessionRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _next_value(mode: SealedMode, value: str, now: float, change: Any) -> str:
    session = open_with(mode, value, now).session
    change(session)
    committed = finish(mode.commit(session, now))
    return sealed_value(mode, committed)


class Level(IntEnum):
    GOLD = 1


# A lone surrogate too: JSON and marshal both give it back.
JSON_ONLY = json_values("\ud800")
CHANGED_BY_JSON = st.sampled_from(
    [(1, 2), {"k": (1,)}, {1: "int key"}, {"a": [Level.GOLD]}, [{"b": {None: 1}}], Level.GOLD]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=JSON_ONLY | CHANGED_BY_JSON,
    mutate=st.booleans(),
    now=st.floats(min_value=NOW + 1, max_value=NOW + 1000),
)
def test_a_value_sealed_here_opens_as_its_seal_decodes(
    value: Any, mutate: bool, now: float
) -> None:
    """A value this process sealed is recalled (once, and again) as exactly what decoding its
    seal gives: equal values of the same types, times to the millisecond. A tuple, a non-str key
    or an IntEnum that JSON turns into something else is never handed back as it was set,
    whether it was assigned or put inside a loaded list."""
    mode = SealedMode(config(NEW), revocations=False)
    first = _next_value(mode, seal_of(mode), now, lambda s: s.__setitem__("cart", [{"sku": "a"}]))

    def change(session: Any) -> None:
        if mutate:
            session["cart"].append(value)  # nested, in a loaded list
        else:
            session["new"] = value
        session.flash("saved")

    second = _next_value(mode, first, now + 0.0004, change)
    opened = mode.sealer.open(second)
    assert opened is not None
    decoded = load_payload(opened[0])
    assert decoded is not None
    for _ in range(3):  # the first return, the second (copied), the copy
        recalled = mode.opened.recall(second)
        assert recalled is not None
        assert _state_shape(recalled[0]) == _state_shape(decoded)


def test_untouched_values_are_not_walked_but_stay_exact() -> None:
    """A write that touches one key leaves the others as they were decoded; the next request
    still sees them exactly (a loaded tuple-free cart, sub-millisecond times)."""
    mode = SealedMode(config(NEW), revocations=False)
    value = seal_of(mode, data={"cart": [{"sku": "a", "qty": 1}], "n": 1.5})
    now = NOW + 10.123456
    for step in range(3):
        value = _next_value(mode, value, now + step, lambda s, n=step: s.__setitem__("n", n))
        recalled = mode.opened.recall(value)
        opened = mode.sealer.open(value)
        assert recalled is not None
        assert opened is not None
        decoded = load_payload(opened[0])
        assert decoded is not None
        assert _state_shape(recalled[0]) == _state_shape(decoded)
        assert recalled[0].record.data == {"cart": [{"sku": "a", "qty": 1}], "n": step}


class Shape(TypedDict, total=False):
    cart: list[Any]


OPS = session_ops(
    ["cart", "n", "name"], JSON_ONLY, ("set", "del", "append", "items", "typed", "read")
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.lists(OPS, min_size=1, max_size=3), min_size=1, max_size=6))
def test_writes_reuse_only_the_json_of_values_they_left_alone(requests: list[list[Any]]) -> None:
    """Request after request, each doing a few things to the data (assign, delete, change a
    list in place through get() or items(), write through a TypedDict view, only read): the
    seal always decodes to exactly the data the requests left, never to a value's JSON as it
    was sealed before a change."""
    mode = SealedMode(config(NEW), revocations=False)
    model: dict[str, Any] = {"cart": [{"sku": "a", "qty": 1}], "n": 1.5}
    value = seal_of(mode, data=json.loads(json.dumps(model)), flash=[])
    for step, ops in enumerate(requests):
        session = open_with(mode, value, NOW + 10 + step).session
        assert dict(session) == model  # recalled, from the image or the seal
        for op, key, arg in ops:
            if op == "set":
                session[key] = arg
                model[key] = arg
            elif op == "del" and key in model:
                del session[key]
                del model[key]
            elif op == "append" and isinstance(model.get(key), list):
                session[key].append(arg)
                model[key].append(arg)
            elif op == "items":
                for k, v in session.items():
                    if k == key and isinstance(v, list):
                        v.append(arg)  # the model's list is another object: change it too
                        model[k].append(arg)
            elif op == "typed":
                session.typed(Shape)[key] = arg  # type: ignore[literal-required]
                model[key] = arg
            else:
                session.get(key)
        session["step"] = step  # every request writes, so every request re-seals
        model["step"] = step
        model = json.loads(json.dumps(model))  # what the seal must decode to
        committed = finish(mode.commit(session, NOW + 10 + step))
        value = sealed_value(mode, committed)
        opened = mode.sealer.open(value)
        assert opened is not None
        decoded = load_payload(opened[0])
        assert decoded is not None
        assert decoded.record.data == model
