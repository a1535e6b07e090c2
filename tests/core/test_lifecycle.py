"""Edge cases of the open/commit flows, driven through the sync manager on the memory store."""

from __future__ import annotations

import pytest

from coatcheck import auth
from coatcheck._core.http import RequestView
from coatcheck._core.record import SessionRecord
from coatcheck.errors import ConflictError
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, test_config


def request(token: str | None = None, *, bearer: bool = False) -> RequestView:
    headers: list[tuple[str, str]] = []
    if token and bearer:
        headers.append(("authorization", f"Bearer {token}"))
    elif token:
        headers.append(("cookie", f"coatcheck_session={token}"))
    return RequestView("GET", "https", headers, "192.0.2.1")


def setup(store: MemoryStore | None = None) -> tuple[SessionManager, FakeClock, str]:
    clock = FakeClock()
    manager = SessionManager(store or MemoryStore(), test_config(), clock=clock)
    session = manager.open(request()).session
    session["a"] = 1
    token = manager.commit(session).token
    assert token is not None
    return manager, clock, token


def test_plain_regenerate_after_revocation_does_not_resurrect() -> None:
    """A regenerate() requested by a request in flight when the session was revoked creates
    nothing: no new record, no cookie."""
    manager, _, token = setup()
    in_flight = manager.open(request(token)).session
    manager.store.delete(token.split(".")[0])
    in_flight.regenerate()
    committed = manager.commit(in_flight)
    assert committed.token is None
    assert committed.headers == []
    assert manager.store.user_ids(0) == []


def test_plain_regenerate_keeps_creation_time_and_merges_concurrent_writes() -> None:
    """regenerate() issues a new id but keeps created_at (the absolute timeout still counts from
    the start) and keeps a write another request made meanwhile."""
    manager, clock, token = setup()
    clock.advance(100)
    first = manager.open(request(token)).session
    other = manager.open(request(token)).session
    other["b"] = 2
    manager.commit(other)
    first.regenerate()
    new_token = manager.commit(first).token
    assert new_token is not None
    record = manager.store.get(new_token.split(".")[0])
    assert record is not None
    assert record.created_at == clock.now - 100
    assert record.data == {"a": 1, "b": 2}
    assert manager.store.get(token.split(".")[0]) is None


class LosingStore(MemoryStore):
    """Every conditional update loses, as if another request always won."""

    def put(self, record: SessionRecord, expected_version: int) -> bool:
        if expected_version == 0:
            return super().put(record, 0)
        return False


def test_endless_conflicts_end_in_conflict_error() -> None:
    """A write that keeps losing gives up after max_write_retries with ConflictError (503)."""
    manager, _, token = setup(LosingStore())
    session = manager.open(request(token)).session
    session["a"] = 2
    with pytest.raises(ConflictError):
        manager.commit(session)


def test_flash_claim_gives_up_under_endless_conflicts() -> None:
    """Claiming flash messages also gives up after the retry bound instead of looping."""
    store = LosingStore()
    manager, _, token = setup(store)
    record = store.get(token.split(".")[0])
    assert record is not None
    record.flash = [{"message": "m", "category": "info"}]
    record.version += 1
    MemoryStore.put(store, record, record.version - 1)
    with pytest.raises(ConflictError):
        manager.open(request(token))


def test_expired_bearer_token_is_401_and_deleted() -> None:
    """An expired bearer token answers 401 invalid_token and its record is removed."""
    clock = FakeClock()
    manager = SessionManager(MemoryStore(), test_config(), clock=clock)
    token = manager.issue_token("u1")
    assert manager.open(request(token, bearer=True)).error is None
    clock.advance(31 * 60)
    opened = manager.open(request(token, bearer=True))
    assert opened.error is not None
    assert opened.error.status_code == 401
    assert manager.store.get(token.split(".")[0]) is None


def test_remember_me_uses_the_long_timeouts() -> None:
    """A remember-me session outlives the ordinary idle timeout, within its own limits."""
    manager, clock, token = setup()
    session = manager.open(request(token)).session
    auth.login(session, "u1", remember=True)
    token = manager.commit(session).token
    assert token is not None
    clock.advance(2 * 60 * 60)  # far past the 30 min idle timeout
    assert manager.open(request(token)).session.user_id == "u1"
    clock.advance(15 * 24 * 60 * 60)  # past the 14 day remember idle timeout
    assert manager.open(request(token)).session.user_id is None


@pytest.mark.parametrize("transport", ["cookie", "bearer"])
def test_a_write_carries_every_stored_field_it_does_not_change(transport: str) -> None:
    """A commit rebuilds the record field by field (cheaper than dataclasses.replace): every
    stored field it does not own comes over unchanged. The record below sets every field to a
    value other than its default, and the test fails for a field it does not list."""
    from dataclasses import fields

    from coatcheck._core.lifecycle import new_record

    clock = FakeClock()
    config = test_config()
    store = MemoryStore()
    manager = SessionManager(store, config, clock=clock)
    record, token = new_record(
        now=clock.now,
        config=config,
        transport=transport,  # type: ignore[arg-type]
        user_id="42",
        data={"cart": [1]},
        auth_time=clock.now - 5,
        user_agent="Agent/1.0",
        ip="192.0.2.9",
        remember=True,
    )
    assert record.remember
    record.label = "laptop"
    record.auth_hash = "fingerprint"
    record.flash = [{"message": "kept", "category": "info"}]
    assert store.put(record, 0)
    before = store.get(record.id)
    assert before is not None
    not_default = {
        "id", "secret_hash", "created_at", "last_seen_at", "expires_at", "absolute_expires_at",
        "version", "user_id", "data", "flash", "csrf_token", "auth_time", "transport", "remember",
        "user_agent", "ip", "label", "auth_hash",
    }  # fmt: skip
    assert {f.name for f in fields(SessionRecord) if f.init} == not_default
    session = manager.open(request(token, bearer=transport == "bearer")).session
    session["n"] = 1
    manager.commit(session)
    stored = store.get(record.id)
    assert stored is not None
    changed = {"version", "data"}
    for name in not_default - changed:
        assert getattr(stored, name) == getattr(before, name), name
    assert stored.version > before.version
    assert stored.data == {"cart": [1], "n": 1}
