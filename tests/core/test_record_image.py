"""A store's record image hands its copies the snapshots a Session would take of their list and
object values (:class:`coatcheck._core.record.RecordImage`), so a read takes none: the snapshots
are exactly the Session's own, shared by the copies and never changed, never carried to another
record, and request after request a session read from an image finds exactly the changes a
freshly decoded one finds: nothing on a read, everything on a write."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coatcheck._core.http import RequestView
from coatcheck._core.record import RecordImage, SessionRecord, record_from_json, record_to_json
from coatcheck._core.session import Session, snapshot_of
from coatcheck._core.tokens import hash_secret, new_id, new_secret
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, test_config
from tests.core.test_sealed_codec import json_values, session_ops

NOW = 1_700_000_000.0
# What a store can hand out: values that came back from JSON (a lone surrogate does too).
VALUES = json_values("\ud800")
DATA = st.dictionaries(st.text(max_size=4), VALUES, max_size=5)


def view(cookie: str) -> RequestView:
    headers = [("cookie", cookie)] if cookie else []
    return RequestView("GET", "https", headers, "192.0.2.1")


def stored(data: dict[str, Any]) -> SessionRecord:
    """A record as a store decodes it from its JSON."""
    record = SessionRecord(
        id=new_id(),
        secret_hash=hash_secret(new_secret()),
        created_at=NOW,
        last_seen_at=NOW,
        expires_at=NOW + 3600,
        absolute_expires_at=NOW + 86_400,
        version=3,
        user_id="42",
        data=data,
    )
    return record_from_json(record_to_json(record))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=DATA)
def test_a_copys_snapshots_are_the_ones_a_session_takes(data: dict[str, Any]) -> None:
    """Each list and object value of a copy has the very bytes ``snapshot_of`` makes of it; a
    scalar has none; and changing one copy's data changes no other copy's snapshots."""
    image = RecordImage(stored(data))
    first, second = image.copy(), image.copy()
    for copy in (first, second):
        assert copy.snapshots is not None
        containers = {k for k, v in copy.data.items() if isinstance(v, list | dict)}
        assert set(copy.snapshots) == containers
        for key in containers:
            assert copy.snapshots[key] == snapshot_of(copy.data[key])
    for value in first.data.values():
        if isinstance(value, list):
            value.append("changed")
        elif isinstance(value, dict):
            value["changed"] = True
    for key, value in second.data.items():
        if isinstance(value, list | dict):
            assert image.copy().snapshots[key] == snapshot_of(value)  # type: ignore[index]


def test_snapshots_ride_only_with_a_fresh_copy_and_are_never_stored_or_compared() -> None:
    record = stored({"cart": [{"sku": "a", "qty": 1}], "n": 1})
    copy = RecordImage(record).copy()
    assert copy.snapshots is not None
    assert record.snapshots is None  # decoded from JSON
    assert copy == record  # not compared
    assert "snapshots" not in record_to_json(copy)  # not stored
    assert dataclasses.replace(copy, version=4).snapshots is None  # new data may follow
    assert copy.copy().snapshots is None
    assert "snapshots" not in repr(copy)


OPS = session_ops(
    ["cart", "n", "prefs"], VALUES, ("set", "del", "append", "nested", "items", "read")
)


def apply(session: Session, model: dict[str, Any], op: str, key: str, arg: Any) -> None:
    """Do ``op`` to the session and the same to ``model`` (which never shares its values)."""
    if op == "set":
        session[key] = arg
        model[key] = json.loads(json.dumps(arg))
    elif op == "del" and key in model:
        del session[key]
        del model[key]
    elif op == "append" and isinstance(model.get(key), list):
        session[key].append(arg)  # in place, in a loaded list
        model[key].append(json.loads(json.dumps(arg)))
    elif op == "nested" and isinstance(model.get(key), dict):
        session.get(key)["x"] = arg  # in place, in a loaded object
        model[key]["x"] = json.loads(json.dumps(arg))
    elif op == "items":
        for k, v in session.items():
            if k == key and isinstance(v, list):
                v.append(arg)
                model[k].append(json.loads(json.dumps(arg)))
    else:
        session.get(key)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.lists(OPS, max_size=3), min_size=1, max_size=8))
@example(  # found by this test: an object set again with its keys in another order
    requests=[
        [("set", "prefs", {"": {"": False, "0": None}, "0": [False, False, None]})],
        [("set", "prefs", {"0": [False, False, None], "": {"": False, "0": None}})],
    ]
)
def test_sessions_read_from_images_find_exactly_their_changes(requests: list[list[Any]]) -> None:
    """Request after request on the memory store (whose reads after the first of a version are
    copies of its image): a request that changes nothing writes nothing (the version stays),
    and what every request changed, in place or not, is what the store holds after it."""
    store = MemoryStore()
    clock = FakeClock(NOW)
    manager = SessionManager(store, test_config(), clock=clock)
    session = manager.open(view("")).session
    session["cart"] = [{"sku": "a", "qty": 1}]
    session["prefs"] = {"theme": "dark"}
    session["n"] = 1.5
    committed = manager.commit(session)
    cookie = "; ".join(h.split(";")[0] for name, h in committed.headers if name == "set-cookie")
    assert committed.token is not None
    session_id = committed.token.split(".")[0]
    model: dict[str, Any] = {"cart": [{"sku": "a", "qty": 1}], "prefs": {"theme": "dark"}, "n": 1.5}
    for ops in [[("read", "cart", None)], *requests]:  # a read first: the next ones are copies
        clock.advance(1)
        before = store.get(session_id)
        assert before is not None
        session = manager.open(view(cookie)).session
        assert dict(session) == model
        for op, key, arg in ops:
            apply(session, model, op, key, arg)
        changed = session.is_modified
        manager.commit(session)
        after = store.get(session_id)
        assert after is not None
        assert after.data == model
        assert (after.version != before.version) == changed
        if after.data == before.data:
            assert not changed  # a request that changed nothing wrote nothing


def test_the_memory_store_keeps_an_image_from_a_versions_second_read() -> None:
    """The first read of a version only notes it (a session written on every request never pays
    for an image it would not use); the second keeps the image, later ones copy it; every read
    is the stored record, and changing what one read returned changes no other."""
    store = MemoryStore()
    record = stored({"cart": [{"sku": "a", "qty": 1}]})
    assert store.put(record, 0) is True
    first = store.get(record.id)
    assert first == record
    assert first is not None
    assert first.snapshots is None  # decoded, no image yet
    assert store._images[record.id][1] is None
    second = store.get(record.id)
    assert second == record
    assert store._images[record.id][1] is not None
    third = store.get(record.id)
    assert third == record
    assert third is not None
    assert third.snapshots is not None  # a copy of the image
    third.data["cart"].append({"sku": "b"})
    assert store.get(record.id) == record
    for version in range(4, 10):  # written between every two reads: never an image
        current = store.get(record.id)
        assert current is not None
        if version > 4:
            assert store._images[record.id][1] is None
        current.version = version
        assert store.put(current, version - 1) is True
