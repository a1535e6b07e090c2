"""The session admin's flows: what reaches a store and what does not."""

from __future__ import annotations

import pytest

from coatcheck import AsyncSessionAdmin, AsyncSessionManager
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import CountingStore, FakeClock, test_config


@pytest.mark.parametrize(
    "session_id", ["\x00", "abc\x00def", "../x", "a" * 23, "a" * 25, "", "aaaa/aaaaaaaaaaaaaaaaaaa"]
)
async def test_revoke_of_an_id_that_is_no_session_id_never_reaches_the_store(
    session_id: str,
) -> None:
    """revoke() of a string that cannot be a session id (it came from a URL) is "no such
    session" without a store call: a NUL reaching PostgreSQL was answered as an outage (503)."""
    store = CountingStore(AsyncMemoryStore())
    admin = AsyncSessionAdmin(AsyncSessionManager(store, test_config(), clock=FakeClock()))
    assert await admin.revoke(session_id, owner="u1") is False
    assert store.calls["get"] == 0
