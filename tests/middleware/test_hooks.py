"""Hooks over HTTP, on both stacks (ASGI + async manager, WSGI + sync manager), with plain and
``async`` hook functions: each event once, after its store change, never breaking a request."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from coatcheck import Hooks, SessionEvent, ThrottledEvent
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import test_config
from tests.middleware.stacks import COOKIE, STACKS, Stack, stack

KINDS = ("sync", "async")


class Recorder:
    """Hooks that record each event, and whether the session it names was stored at that
    moment (``None`` for events that name no session)."""

    def __init__(self, records: MemoryStore) -> None:
        self.records = records
        self.events: list[Any] = []
        self.stored: list[bool | None] = []
        self.lock = threading.Lock()

    def note(self, event: Any) -> None:
        session_id = getattr(event, "session_id", None)
        stored = None if session_id is None else self.records.get(session_id) is not None
        with self.lock:
            self.events.append(event)
            self.stored.append(stored)

    def hooks(self, kind: str, **settings: Any) -> Hooks:
        if kind == "sync":
            hook: Any = self.note
        else:

            async def hook(event: Any) -> None:
                await asyncio.sleep(0)
                self.note(event)

        names = ("on_login", "on_logout", "on_revoke", "on_new_device", "on_throttled")
        return Hooks(**{name: hook for name in names}, **settings)

    def reasons(self) -> list[str]:
        return [getattr(e, "reason", "throttled") for e in self.events]

    def clear(self) -> None:
        self.events.clear()
        self.stored.clear()


@pytest.fixture(params=[(s, k) for s in STACKS for k in KINDS], ids=lambda p: "-".join(p))
def hooked(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Recorder]]:
    """A stack whose every hook records, as a plain function or an async one."""
    name, kind = request.param
    records = MemoryStore()
    recorder = Recorder(records)
    with stack(name, hooks=recorder.hooks(kind), records=records) as env:
        yield env, recorder


def session_id(client: Any) -> str:
    token = client.cookies.get(COOKIE)
    assert token is not None
    return str(token.split(".")[0])


def sign_in(env: Stack, user: str = "u1", **body: Any) -> Any:
    """A new client, signed in as ``user`` through the app's /login."""
    client = env.fresh()
    response = client.post("/login", json={"user": user, **body})
    assert response.status_code == 200, response.text
    return client


def test_login_and_logout_fire_once_after_the_store_change(
    hooked: tuple[Stack, Recorder],
) -> None:
    """A login calls on_login once, when the new session is stored, with its public id, user,
    device and transport; a logout calls on_logout once, when it is gone."""
    env, recorder = hooked
    client = env.fresh()
    client.headers["user-agent"] = "Firefox/128"
    assert client.post("/login", json={}).status_code == 200
    sid = session_id(client)
    login = recorder.events[0]
    assert login == SessionEvent(
        reason="login",
        session_id=sid,
        user_id="u1",
        at=env.clock.now,
        user_agent="Firefox/128",
        ip=env.ip,
        transport="cookie",
    )
    assert recorder.reasons() == ["login", "new-device"]
    assert recorder.stored == [True, True]
    recorder.clear()
    assert client.post("/logout", headers=env.csrf(client)).status_code == 204
    assert recorder.reasons() == ["logout"]
    assert recorder.events[0].session_id == sid
    assert recorder.stored == [False]


def test_signing_in_again_is_a_reauthentication(hooked: tuple[Stack, Recorder]) -> None:
    """The same user signing in again on their session is on_login with reason
    "reauthentication" (no new-device check); another user on it is a login."""
    env, recorder = hooked
    client = sign_in(env)
    recorder.clear()
    assert client.post("/login", json={}, headers=env.csrf(client)).status_code == 200
    assert recorder.reasons() == ["reauthentication"]
    recorder.clear()
    assert client.post("/login", json={"user": "u2"}, headers=env.csrf(client)).status_code == 200
    assert recorder.reasons() == ["login", "new-device"]
    assert recorder.events[0].user_id == "u2"


def test_revoke_and_revoke_all_report_each_session(hooked: tuple[Stack, Recorder]) -> None:
    """An admin revoke calls on_revoke once ("revoke"), after the delete; revoke-all once per
    other session ("revoke-all"); a revoke that finds nothing calls nothing."""
    env, recorder = hooked
    phone, laptop, tablet = sign_in(env), sign_in(env), sign_in(env)
    recorder.clear()
    admin = env.fresh()
    assert admin.post(f"/revoke/{session_id(phone)}").json() == {"revoked": True}
    assert recorder.reasons() == ["revoke"]
    assert recorder.events[0].session_id == session_id(phone)
    assert recorder.stored == [False]
    assert admin.post(f"/revoke/{session_id(phone)}").json() == {"revoked": False}
    assert recorder.reasons() == ["revoke"]
    recorder.clear()
    response = laptop.post("/revoke-all", headers=env.csrf(laptop))
    assert response.json() == {"revoked": 2}
    assert sorted(e.session_id for e in recorder.events) == sorted(
        [session_id(laptop), session_id(tablet)]
    )
    assert recorder.reasons() == ["revoke-all", "revoke-all"]
    assert recorder.stored == [False, False]


def test_password_change_ends_the_others_and_rotates_this_one(
    hooked: tuple[Stack, Recorder],
) -> None:
    """password_changed ends the user's other sessions (on_revoke "password-change" each) and
    rotates the current one, which stays signed in and remember-me, with no on_login."""
    env, recorder = hooked
    current = sign_in(env, remember=True)
    others = [sign_in(env), sign_in(env)]
    other_ids = sorted(session_id(c) for c in others)
    before = session_id(current)
    recorder.clear()
    response = current.post("/password-change", headers=env.csrf(current))
    assert response.json() == {"ended": 2}
    assert recorder.reasons() == ["password-change", "password-change"]
    assert sorted(e.session_id for e in recorder.events) == other_ids
    assert recorder.stored == [False, False]
    assert session_id(current) != before
    assert "Max-Age=" in response.headers["set-cookie"]  # remember-me stays remember-me
    assert current.get("/me").json() == {"user": "u1"}
    assert [c.get("/me").status_code for c in others] == [401, 401]
    assert env.records.get(before) is None


def test_expired_and_purged_sessions_are_reported(hooked: tuple[Stack, Recorder]) -> None:
    """A presented expired session that is deleted is on_revoke "expired" with its id; a purge
    that deletes records is one "purge" event with the count and no ids."""
    env, recorder = hooked
    client = sign_in(env)
    sid = session_id(client)
    sign_in(env, "u2")
    sign_in(env, "u3")
    env.clock.advance(30 * 60)
    recorder.clear()
    assert client.get("/read").json()["user"] is None
    assert recorder.reasons() == ["expired"]
    assert (recorder.events[0].session_id, recorder.events[0].user_id) == (sid, "u1")
    recorder.clear()
    assert env.fresh().post("/purge").json() == {"purged": 2}
    assert recorder.events == [
        SessionEvent(reason="purge", session_id=None, user_id=None, at=env.clock.now, count=2)
    ]
    recorder.clear()
    assert env.fresh().post("/purge").json() == {"purged": 0}
    assert recorder.events == []


def test_bearer_tokens_are_logins_too(hooked: tuple[Stack, Recorder]) -> None:
    """Issuing a bearer token for a user is on_login with transport "bearer"."""
    env, recorder = hooked
    token = env.fresh().post("/token").json()["token"]
    assert recorder.reasons() == ["login", "new-device"]
    assert recorder.events[0].session_id == token.split(".")[0]
    assert recorder.events[0].transport == "bearer"


def test_throttled_login_attempts_are_reported(hooked: tuple[Stack, Recorder]) -> None:
    """A login attempt refused by the throttle calls on_throttled with the account, address and
    the Retry-After sent."""
    env, recorder = hooked
    attempt = {"user": "mallory"}
    assert env.fresh().post("/attempt", json=attempt).status_code == 401
    assert recorder.events == []
    refused = env.fresh().post("/attempt", json=attempt)
    assert refused.status_code == 429
    assert recorder.events == [
        ThrottledEvent(
            account="mallory",
            ip=env.ip,
            retry_after=int(refused.headers["retry-after"]),
            at=env.clock.now,
        )
    ]


@pytest.mark.parametrize("name", STACKS)
def test_new_device_means_a_device_none_of_the_users_live_sessions_has(name: str) -> None:
    """on_new_device fires for a sign-in whose user agent and address pair no other live
    session of the user has: the first sign-in, then a new browser; not a second sign-in from a
    known one, and again once the known one's session is gone."""
    seen: list[str] = []
    hooks = Hooks(on_new_device=lambda e: seen.append(e.user_agent))
    with stack(name, hooks=hooks) as env:

        def login_from(agent: str) -> Any:
            client = env.fresh()
            client.headers["user-agent"] = agent
            assert client.post("/login", json={}).status_code == 200
            return client

        firefox = login_from("Firefox")
        login_from("Firefox")
        login_from("Safari")
        assert seen == ["Firefox", "Safari"]
        assert firefox.post("/revoke-all", headers=env.csrf(firefox)).status_code == 200
        login_from("Safari")  # the revoke-all ended every other Safari session
        assert seen == ["Firefox", "Safari", "Safari"]


@pytest.mark.parametrize("name", STACKS)
def test_hooks_cost_no_store_call_unless_set(name: str) -> None:
    """Without on_new_device and without a cap, a login lists no sessions; with on_new_device
    it lists them once."""
    with stack(name, hooks=Hooks(on_login=lambda e: None)) as env:
        sign_in(env)
        assert env.store.calls["sessions_of"] == 0
    with stack(name, hooks=Hooks(on_new_device=lambda e: None)) as env:
        sign_in(env)
        assert env.store.calls["sessions_of"] == 1


@pytest.mark.parametrize("name", STACKS)
def test_session_cap_ends_the_least_recently_used(name: str) -> None:
    """With max_sessions_per_user=2, a third sign-in ends the session used least recently (by
    last_seen_at, not by age), reported as on_revoke "cap"; the others keep working."""
    ended: list[SessionEvent] = []
    config = test_config(max_sessions_per_user=2)
    with stack(name, config, hooks=Hooks(on_revoke=ended.append)) as env:
        first = sign_in(env)
        env.clock.advance(10)
        second = sign_in(env)
        env.clock.advance(120)  # past touch_interval: the next request writes last_seen_at
        assert first.get("/me").status_code == 200
        third = sign_in(env)
        assert [(e.reason, e.session_id) for e in ended] == [("cap", session_id(second))]
        assert [c.get("/me").status_code for c in (first, second, third)] == [200, 401, 200]
        assert sorted(first.get("/sessions").json()) == sorted(
            [session_id(first), session_id(third)]
        )


@pytest.mark.parametrize("name", STACKS)
def test_session_cap_counts_bearer_tokens(name: str) -> None:
    """Bearer tokens are sessions: issuing one beyond the cap ends the least recently used."""
    config = test_config(max_sessions_per_user=1)
    with stack(name, config) as env:
        browser = sign_in(env)
        env.clock.advance(1)
        token = env.fresh().post("/token").json()["token"]
        assert browser.get("/me").status_code == 401
        assert env.fresh().get("/me", headers={"authorization": f"Bearer {token}"}).json() == {
            "user": "u1"
        }


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_raising_hook_never_breaks_the_request(
    name: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises is logged at ERROR with its traceback; the request answers as if
    there were no hook, and the next hooks still run."""
    after: list[str] = []

    def boom(event: Any) -> None:
        raise RuntimeError("hook bug")

    async def async_boom(event: Any) -> None:
        raise RuntimeError("hook bug")

    hook = boom if kind == "sync" else async_boom
    hooks = Hooks(on_login=hook, on_new_device=lambda e: after.append(e.reason))
    with stack(name, hooks=hooks) as env, caplog.at_level(logging.ERROR, logger="coatcheck"):
        client = sign_in(env)
        assert client.get("/me").json() == {"user": "u1"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "raised" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "hook bug"
    assert after == ["new-device"]


@pytest.mark.parametrize("name", STACKS)
def test_a_slow_async_hook_is_cut_at_the_timeout(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An async hook still running at the timeout is cancelled and logged at WARNING; the
    request goes on."""
    finished: list[bool] = []

    async def slow(event: Any) -> None:
        await asyncio.sleep(30)
        finished.append(True)

    hooks = Hooks(on_login=slow, timeout=0.05)
    with stack(name, hooks=hooks) as env, caplog.at_level(logging.WARNING, logger="coatcheck"):
        client = sign_in(env)
        assert client.get("/me").json() == {"user": "u1"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "took longer than its 0.05 s timeout" in warnings[0]
    assert finished == []


@pytest.mark.parametrize("name", STACKS)
def test_a_slow_plain_hook_is_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """A plain hook running past the timeout is logged at WARNING (it cannot be interrupted:
    the ASGI stack stops waiting for its thread, the WSGI one logs when it returns)."""
    done = threading.Event()

    def slow(event: Any) -> None:
        time.sleep(0.3)
        done.set()

    hooks = Hooks(on_login=slow, timeout=0.05)
    with stack(name, hooks=hooks) as env, caplog.at_level(logging.WARNING, logger="coatcheck"):
        assert sign_in(env).get("/me").json() == {"user": "u1"}
        done.wait(5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "took longer than its 0.05 s timeout" in warnings[0]
