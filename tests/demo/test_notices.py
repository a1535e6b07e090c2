"""The demo's new-device warnings: a flood of throwaway sign-ups cannot push an owner's out."""

from __future__ import annotations

from coatcheck import AsyncSessionAdmin, AsyncSessionManager, Hooks
from coatcheck.demo.pages import NewDeviceNotices
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import FakeClock, test_config


async def test_throwaway_sign_ups_take_no_room_and_cannot_evict_a_warning() -> None:
    """Found by an attack: every sign-up of a new account fired ``on_new_device`` and took one of
    the bounded slots, so registering more accounts than the bound erased the owner's pending
    warning. A sign-in is kept only when the user has another live session to tell."""
    notices = NewDeviceNotices()
    notices.max_users = 5
    manager = AsyncSessionManager(
        AsyncMemoryStore(), test_config(), clock=FakeClock(), hooks=Hooks(on_new_device=notices)
    )
    notices.admin = AsyncSessionAdmin(manager)
    await manager.issue_token("owner", user_agent="Laptop", ip="192.0.2.1")
    assert "owner" not in notices._pending  # a first sign-in: nobody to tell
    await manager.issue_token("owner", user_agent="Attacker", ip="198.51.100.7")
    assert "owner" in notices._pending
    for n in range(20):
        await manager.issue_token(f"throwaway{n}", user_agent="x", ip="198.51.100.8")
    assert list(notices._pending) == ["owner"]
    await manager.close()
