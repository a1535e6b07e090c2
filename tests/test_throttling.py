"""Login guards count attempts in the session store, async and sync alike."""

from __future__ import annotations

import pytest

from coatcheck import (
    AsyncLoginGuard,
    AsyncSessionManager,
    LoginGuard,
    SessionManager,
    ThrottleConfig,
)
from coatcheck.errors import HTTPError
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.testing import FakeClock, test_config

CONFIG = ThrottleConfig(account_threshold=3, ip_threshold=None, window=60, max_delay=60)


def test_sync_guard_blocks_after_threshold_and_forgets_on_success() -> None:
    """The sync guard refuses the 4th quick attempt with 429 and Retry-After; a success resets."""
    clock = FakeClock()
    guard = LoginGuard(SessionManager(MemoryStore(), test_config(), clock=clock), CONFIG)
    for _ in range(3):
        guard.check("ann@example.com", "192.0.2.1")
    with pytest.raises(HTTPError) as refused:
        guard.check("ann@example.com", "192.0.2.1")
    assert refused.value.status_code == 429
    assert dict(refused.value.headers)["retry-after"].isdigit()
    clock.advance(61)
    attempt = guard.check("ann@example.com", "192.0.2.1")
    guard.succeeded(attempt)
    for _ in range(3):
        guard.check("ann@example.com", "192.0.2.1")


async def test_async_guards_share_counts_through_the_store() -> None:
    """Two app instances (two guards) on one store count into the same budget."""
    store = AsyncMemoryStore()
    clock = FakeClock()
    config = test_config()
    first = AsyncLoginGuard(AsyncSessionManager(store, config, clock=clock), CONFIG)
    second = AsyncLoginGuard(AsyncSessionManager(store, config, clock=clock), CONFIG)
    await first.check("bob@example.com", None)
    await second.check("BOB@example.com ", None)
    await first.check("bob@example.com", None)
    with pytest.raises(HTTPError):
        await second.check("bob@example.com", None)
