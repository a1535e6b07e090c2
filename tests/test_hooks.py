"""Hooks beyond the HTTP suite: configuration checked at start-up, sealed sessions, a failing
sign-in follow-up, and how hooks run on each manager (``coatcheck/hooks.py``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

import pytest

from coatcheck import Hooks, SessionEvent
from coatcheck._core.events import ThrottledEvent, hook_name
from coatcheck._core.record import SessionRecord
from coatcheck.errors import ConfigurationError
from coatcheck.hooks import fire_async, fire_sync
from coatcheck.manager import AsyncSessionManager, SessionManager
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.stores.sealed import AsyncSealedStore, SealedStore
from coatcheck.testing import test_config
from tests.middleware.stacks import STACKS, stack


def event(reason: str = "login") -> SessionEvent:
    return SessionEvent(reason=reason, session_id="s1", user_id="u1", at=0.0)


@pytest.mark.parametrize(
    "settings",
    [{"on_login": "not callable"}, {"on_revoke": 3}, {"timeout": 0}, {"timeout": float("inf")}],
)
def test_bad_hooks_fail_at_start_up(settings: dict[str, Any]) -> None:
    """A hook that is not callable, or a timeout that is not a positive finite number, is a
    ConfigurationError when Hooks is built."""
    with pytest.raises(ConfigurationError):
        Hooks(**settings)


def test_a_manager_refuses_what_is_not_hooks() -> None:
    """hooks= takes a Hooks object (a dict of functions is a setup error)."""
    with pytest.raises(ConfigurationError):
        SessionManager(MemoryStore(), test_config(), hooks={"on_login": print})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [{"max_sessions_per_user": 2}, {"hooks": Hooks(on_new_device=print)}],
    ids=["cap", "new-device"],
)
def test_sealed_sessions_refuse_what_needs_a_session_list(settings: dict[str, Any]) -> None:
    """With sealed:// no list of sessions exists: a cap or on_new_device fails at start-up, on
    both managers."""
    hooks = settings.pop("hooks", None)
    config = test_config(**settings)
    with pytest.raises(ConfigurationError, match="server store"):
        AsyncSessionManager(AsyncSealedStore(), config, hooks=hooks)
    with pytest.raises(ConfigurationError, match="server store"):
        SessionManager(SealedStore(), config, hooks=hooks)


@pytest.mark.parametrize("name", STACKS)
def test_sealed_sessions_report_logins_logouts_and_revocations(name: str) -> None:
    """On sealed:// with a revocation record: login and logout name the sealed session's id;
    revoke-all and password-change are one event each, their sessions uncounted."""
    found: list[SessionEvent] = []
    hooks = Hooks(on_login=found.append, on_logout=found.append, on_revoke=found.append)
    stores = {
        "async_store": AsyncSealedStore(AsyncMemoryStore()),
        "sync_store": SealedStore(MemoryStore()),
    }
    with stack(name, hooks=hooks, **stores) as env:
        phone = env.fresh()
        assert phone.post("/login", json={}).status_code == 200
        login = found.pop()
        assert (login.reason, login.user_id, login.transport) == ("login", "u1", "cookie")
        assert login.session_id is not None
        assert phone.post("/logout", headers=env.csrf(phone)).status_code == 204
        assert [(e.reason, e.session_id) for e in found] == [("logout", login.session_id)]
        found.clear()

        laptop = env.fresh()
        laptop.post("/login", json={})
        env.clock.advance(1)  # revoke-all ends the seals issued before now
        found.clear()
        assert laptop.post("/password-change", headers=env.csrf(laptop)).json() == {"ended": 0}
        assert laptop.post("/revoke-all", headers=env.csrf(laptop)).json() == {"revoked": 0}
        assert [(e.reason, e.session_id, e.user_id, e.count) for e in found] == [
            ("password-change", None, "u1", None),
            ("revoke-all", None, "u1", None),
        ]
        assert laptop.get("/me").status_code == 401


@pytest.mark.parametrize("name", STACKS)
def test_sealed_password_change_without_revocation_record_still_rotates(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a revocation record other seals cannot be ended: password_changed says so in the
    log, reports nothing, and still rotates the current session."""
    found: list[SessionEvent] = []
    stores = {"async_store": AsyncSealedStore(), "sync_store": SealedStore()}
    with (
        stack(name, hooks=Hooks(on_revoke=found.append), **stores) as env,
        caplog.at_level(logging.WARNING, logger="coatcheck"),
    ):
        env.client.post("/login", json={})
        before = env.cookie()
        response = env.client.post("/password-change", headers=env.csrf())
        assert response.json() == {"ended": 0}
        assert env.cookie() != before
        assert env.client.get("/me").json() == {"user": "u1"}
    assert found == []
    assert any("cannot be ended" in r.getMessage() for r in caplog.records)


class ListingFails(MemoryStore):
    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        raise ConnectionError("index down")


@pytest.mark.parametrize("name", STACKS)
def test_a_failed_follow_up_leaves_the_login_standing(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When listing the user's sessions after a sign-in fails, the login still succeeds and is
    reported, and the failure is logged (the cap waits for the next sign-in)."""
    found: list[str] = []
    hooks = Hooks(on_login=lambda e: found.append(e.reason), on_new_device=print)
    failing = ListingFails()
    stores = {"sync_store": failing, "async_store": AsyncMemoryStore(failing)}
    config = test_config(max_sessions_per_user=1)
    with (
        stack(name, config, hooks=hooks, **stores) as env,
        caplog.at_level(logging.WARNING, logger="coatcheck"),
    ):
        assert env.client.post("/login", json={}).status_code == 200
        assert env.client.get("/me").json() == {"user": "u1"}
    assert found == ["login"]
    assert any("work after a sign-in" in r.getMessage() for r in caplog.records)


def test_events_go_to_their_hooks() -> None:
    """Each reason has one hook: login and reauthentication -> on_login, logout -> on_logout,
    new-device -> on_new_device, throttled -> on_throttled, every other reason -> on_revoke."""
    reasons = ["login", "reauthentication", "logout", "new-device", "revoke", "cap", "purge"]
    assert [hook_name(event(r)) for r in reasons] == [
        "on_login",
        "on_login",
        "on_logout",
        "on_new_device",
        "on_revoke",
        "on_revoke",
        "on_revoke",
    ]
    assert hook_name(ThrottledEvent(account="a", ip=None, retry_after=1, at=0.0)) == "on_throttled"


def test_a_sync_manager_runs_async_hooks_even_inside_a_running_loop() -> None:
    """An async hook given to the sync manager runs to completion in an event loop of its own,
    also when the caller's thread already runs a loop (a sync manager used from async code)."""
    ran: list[tuple[str, bool]] = []

    async def hook(e: SessionEvent) -> None:
        await asyncio.sleep(0)
        ran.append((e.reason, threading.current_thread() is not threading.main_thread()))

    async def inside_a_loop() -> None:
        fire_sync(Hooks(on_login=hook), [event()], lambda: pool)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asyncio.run(inside_a_loop())
        fire_sync(Hooks(on_login=hook), [event("reauthentication")], lambda: pool)
    assert ran == [("login", True), ("reauthentication", True)]


async def test_a_plain_function_returning_a_coroutine_is_awaited() -> None:
    """A hook that is not a coroutine function but returns an awaitable (a lambda around an
    async function) is awaited, on both managers' paths."""
    ran: list[str] = []

    async def work(e: SessionEvent) -> None:
        ran.append(e.reason)

    hooks = Hooks(on_login=lambda e: work(e))
    await fire_async(hooks, [event()])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        await asyncio.to_thread(fire_sync, hooks, [event("reauthentication")], lambda: pool)
    assert ran == ["login", "reauthentication"]


async def test_unset_hooks_are_skipped() -> None:
    """Events whose hook is not set are dropped silently, on both paths."""
    seen: list[str] = []
    hooks = Hooks(on_logout=lambda e: seen.append(e.reason))
    await fire_async(hooks, [event("login"), event("logout")])
    fire_sync(hooks, [event("revoke"), event("logout")], lambda: pytest.fail("no thread needed"))
    assert seen == ["logout", "logout"]


@pytest.mark.parametrize("path", ["async manager", "sync manager"])
def test_a_hooks_own_timeout_error_is_an_error_not_slowness(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises TimeoutError itself (say, its HTTP client timed out) is logged as a
    hook error with its traceback, not as a hook that ran past the hooks' timeout."""

    async def times_out(e: SessionEvent) -> None:
        raise TimeoutError("smtp server did not answer")

    hooks = Hooks(on_login=times_out, timeout=5)
    with caplog.at_level(logging.WARNING, logger="coatcheck"):
        if path == "async manager":
            asyncio.run(fire_async(hooks, [event()]))
        else:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                fire_sync(hooks, [event()], lambda: pool)
    assert [(r.levelno, "raised" in r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, True)
    ]


def test_an_async_hook_blocking_its_loop_is_not_waited_for_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An async hook given to the sync manager that blocks its own event loop (time.sleep in a
    coroutine) cannot be cancelled; the request stops waiting for it soon after the timeout."""
    release = threading.Event()

    async def blocks(e: SessionEvent) -> None:
        release.wait(10)  # blocks the hook's loop: no cancellation reaches it

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with caplog.at_level(logging.WARNING, logger="coatcheck"):
            fire_sync(Hooks(on_login=blocks, timeout=0.01), [event()], lambda: pool)
        assert not release.is_set()
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert ["took longer than its 0.01 s timeout" in r.getMessage() for r in caplog.records] == [
        True
    ]
