"""``sealed://`` store URLs: parsing, the revocation store inside, errors, redaction."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from coatcheck import SessionAdmin, SessionManager, auth
from coatcheck._core.http import RequestView
from coatcheck.errors import ConfigurationError, NotSupportedError
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.stores.sealed import AsyncSealedStore, SealedStore, parse_url
from coatcheck.stores.sql import SQLStore
from coatcheck.stores.url import async_store_from_url, redact, sync_store_from_url
from coatcheck.testing import FakeClock, test_config


def test_plain_sealed_url_has_no_revocation_store() -> None:
    """sealed:// gives a sealed store with no revocation record, async and sync."""
    assert parse_url("sealed://") is None
    store = async_store_from_url("sealed://")
    assert isinstance(store, AsyncSealedStore)
    assert store.revocations is None
    sync = sync_store_from_url("SEALED:///")
    assert isinstance(sync, SealedStore)
    assert sync.revocations is None


def test_revocations_url_is_url_encoded_and_keeps_plus(tmp_path: Path) -> None:
    """The inner URL is percent-decoded (a '+' stays a '+') and built as a server store."""
    inner = f"sqlite+aiosqlite:///{tmp_path / 'rv.db'}"
    assert parse_url(f"sealed://?revocations={quote(inner, safe='')}") == inner
    store = async_store_from_url(f"sealed://?revocations={quote('memory://', safe='')}")
    assert isinstance(store, AsyncSealedStore)
    assert isinstance(store.revocations, AsyncMemoryStore)
    sync = sync_store_from_url(f"sealed://?revocations={quote('memory://', safe='')}")
    assert isinstance(sync, SealedStore)
    assert isinstance(sync.revocations, MemoryStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sealed://host", "no host or path"),
        ("sealed://?secret=x", "unknown sealed:// option"),
        ("sealed://?revocations=memory%3A%2F%2F&revocations=memory%3A%2F%2F", "one revocations"),
        ("sealed://?revocations=memory", "URL-encode it"),
        ("sealed://?revocations=sealed%3A%2F%2F", "must be a server store"),
        ("sealed://?revocations=ftp%3A%2F%2Fx", "unknown store URL scheme"),
    ],
)
def test_bad_sealed_urls_fail_at_start_up(url: str, message: str) -> None:
    """Every malformed sealed:// URL is a ConfigurationError naming the problem."""
    with pytest.raises(ConfigurationError, match=message):
        async_store_from_url(url)
    with pytest.raises(ConfigurationError, match=message):
        sync_store_from_url(url)


def test_options_without_a_revocation_store_are_refused() -> None:
    """Pool options make no sense without a server store inside."""
    with pytest.raises(ConfigurationError):
        AsyncSealedStore.from_url("sealed://", pool_size=3)
    with pytest.raises(ConfigurationError):
        SealedStore.from_url("sealed://", pool_size=3)
    with pytest.raises(ConfigurationError):
        parse_url("redis://x")


def test_redact_hides_the_inner_password() -> None:
    """A password in the revocation store URL never reaches logs or CLI output."""
    inner = "redis://:hunter2@cache:6379/0"
    shown = redact(f"sealed://?revocations={quote(inner, safe='')}")
    assert "hunter2" not in shown
    assert shown == "sealed://?revocations=redis://:***@cache:6379/0"
    assert redact("sealed://") == "sealed://"
    assert "hunter2" not in redact("sealed://?oops=hunter2")


def test_sync_twin_runs_the_same_flows(tmp_path: Path) -> None:
    """SessionManager on SealedStore over SQLite: logout ends a copy; purge and schema work."""
    clock = FakeClock()
    inner = SQLStore.from_url(f"sqlite:///{tmp_path / 'rv.db'}")
    store = SealedStore(inner)
    store.create_schema()
    manager = SessionManager(store, test_config(), clock=clock)
    admin = SessionAdmin(manager)
    opened = manager.open(RequestView("POST", "https", [], "192.0.2.1"))
    auth.login(opened.session, "u1")
    token = manager.commit(opened.session).token
    assert token is not None
    copy = RequestView("GET", "https", [("cookie", f"coatcheck_session={token}")], "")
    session = manager.open(copy).session
    assert session.user_id == "u1"
    auth.logout(session)
    manager.commit(session)
    assert manager.open(copy).session.user_id is None
    assert store.hit("k", clock.now, 60) == (1, clock.now + 60)
    store.clear_hits("k")
    assert admin.can_revoke is True
    clock.advance(40 * 24 * 3600)
    assert admin.purge_expired() == 1
    with pytest.raises(NotSupportedError):
        admin.sessions_of("u1")
    with pytest.raises(NotSupportedError):
        admin.user_ids()
    manager.close()


def test_sync_twin_without_revocations() -> None:
    """A bare SealedStore counts hits in memory, purges nothing and has no records to reach."""
    store = SealedStore()
    assert store.hit("k", 0.0, 60) == (1, 60.0)
    store.clear_hits("k")
    assert store.purge_expired(100.0) == 0
    with pytest.raises(NotSupportedError, match="no revocation store"):
        store.get("x")
    with pytest.raises(NotSupportedError):
        store.put(None, 0)  # type: ignore[arg-type]
    with pytest.raises(NotSupportedError):
        store.delete("x")
    store.create_schema()
    store.close()


async def test_async_store_without_revocations() -> None:
    """The async twin behaves the same way."""
    store = AsyncSealedStore()
    assert await store.hit("k", 0.0, 60) == (1, 60.0)
    await store.clear_hits("k")
    assert await store.purge_expired(100.0) == 0
    with pytest.raises(NotSupportedError):
        await store.get("x")
    with pytest.raises(NotSupportedError):
        await store.put(None, 0)  # type: ignore[arg-type]
    with pytest.raises(NotSupportedError):
        await store.delete("x")
    await store.create_schema()
    await store.close()
    inner = AsyncMemoryStore()
    wrapped = AsyncSealedStore(inner)
    await wrapped.create_schema()  # a memory store has no schema: nothing to do
    await wrapped.delete("absent")
    await wrapped.close()
