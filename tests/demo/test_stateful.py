"""A stateful test of the demo API over real HTTP against a real ``coatcheck demo`` process.

Hypothesis drives random sequences of register / login / wrong login / logout / cart add /
password change / revoke one / revoke others / bearer token / replay across three browsers and
one API client, and checks each answer against a model of what the server must hold:

- no answer is a 5xx;
- a logged-out, revoked or rotated session never works again (replayed, it is anonymous);
- no cart item is lost (requests are sequential, so each cart must equal the model exactly);
- one user never sees another's data: ``/api/me``, the cart and the session list show only the
  client's own user, and revoking another user's session is a 404.

Every client connects from its own loopback address (127.x.y.z), so the demo's per-address login
throttling sees a few attempts per address; wrong passwords stay below the per-account threshold
so a correct login is never refused. Password hashing is argon2id at the demo's real cost, so the
operations that hash have a budget per run: once it is spent only the cheap rules stay enabled,
which bounds the run time.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.demo.server import demo_server

COOKIE = "coatcheck_session"
PASSWORD = "correct horse battery"
BROWSERS = 3
RUN_BUDGET = 7  # argon2 operations per run (register, login, token: 1; password change: 2)
RUNS = 6
STEPS = 25
ACCOUNT_THRESHOLD = 5  # the demo's ThrottleConfig default: free attempts per account
_addresses = (f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(65_793))


@dataclass
class User:
    email: str
    password: str
    id: str = ""
    failures: int = 0
    """Wrong passwords since the last successful login (the throttle's account count)."""


@dataclass
class Browser:
    """A browser (cookie transport) and what the model says its session holds."""

    http: httpx.Client
    user: User | None = None
    cart: list[str] = field(default_factory=list)

    @property
    def token(self) -> str | None:
        return self.http.cookies.get(COOKIE)

    @property
    def session_id(self) -> str | None:
        token = self.token
        return token.split(".", 1)[0] if token else None


def _client(base: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=next(_addresses))
    return httpx.Client(base_url=base, timeout=30, transport=transport)


class DemoMachine(RuleBasedStateMachine):
    """Random sequences of the demo's operations, checked against a model."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.budget = RUN_BUDGET
        self.browsers = [Browser(_client(base)) for _ in range(BROWSERS)]
        self.api = _client(base)
        self.users: list[User] = []
        self.bearer: tuple[str, User] | None = None
        self.bearer_cart: list[str] = []
        self.dead: list[str] = []
        """Cookie tokens that must never work again."""
        self.dead_bearers: list[str] = []
        self.items = itertools.count()

    def teardown(self) -> None:
        for browser in self.browsers:
            browser.http.close()
        self.api.close()

    # -- helpers ------------------------------------------------------------------------------

    def send(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if method != "GET" and "XSRF-TOKEN" in http.cookies:
            headers.setdefault("x-xsrf-token", http.cookies["XSRF-TOKEN"])
        response = http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response

    def signed_in(self, browser: Browser, user: User) -> None:
        """The model after a successful login or registration on ``browser``."""
        if browser.user is not None and browser.user is not user:
            browser.cart = []  # another user on this browser starts from an empty session
        browser.user = user

    def forget(self, browser: Browser) -> None:
        """Its session ended server-side: the token is dead, the next request anonymous."""
        if browser.token is not None:
            self.dead.append(browser.token)
        browser.user = None
        browser.cart = []

    def sessions_of(self, user: User) -> set[str]:
        return {b.session_id for b in self.browsers if b.user is user and b.session_id}

    def browser_strategy(self) -> st.SearchStrategy[int]:
        return st.integers(min_value=0, max_value=BROWSERS - 1)

    def rotated(self, browser: Browser, before: str | None) -> None:
        if before is not None and before != browser.token:
            self.dead.append(before)

    # -- rules ------------------------------------------------------------------------------

    @initialize()
    def one_user_on_two_browsers(self) -> None:
        """Start from a user signed in twice, so revocations have something to act on."""
        self.register(0)
        self.login(1, 0)

    @precondition(lambda self: self.budget >= 1 and len(self.users) < 3)
    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1))
    def register(self, which: int) -> None:
        browser = self.browsers[which]
        self.budget -= 1
        user = User(f"{uuid.uuid4().hex[:12]}@example.com", PASSWORD)
        before = browser.token
        response = self.send(
            browser.http, "POST", "/api/register", json={"email": user.email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        user.id = response.json()["id"]
        self.users.append(user)
        self.rotated(browser, before)
        self.signed_in(browser, user)

    @precondition(lambda self: self.budget >= 1 and self.users)
    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1), pick=st.integers(0, 2))
    def login(self, which: int, pick: int) -> None:
        browser, user = self.browsers[which], self.users[pick % len(self.users)]
        self.budget -= 1
        before = browser.token
        response = self.send(
            browser.http,
            "POST",
            "/api/login",
            json={"email": user.email, "password": user.password},
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == user.id
        user.failures = 0
        self.rotated(browser, before)
        self.signed_in(browser, user)

    @precondition(lambda self: self.budget >= 1 and self.users)
    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1), pick=st.integers(0, 2))
    def wrong_password(self, which: int, pick: int) -> None:
        browser, user = self.browsers[which], self.users[pick % len(self.users)]
        if user.failures >= ACCOUNT_THRESHOLD - 1:
            return  # one more would make the next correct login wait
        user.failures += 1
        self.budget -= 1
        before = browser.token
        response = self.send(
            browser.http,
            "POST",
            "/api/login",
            json={"email": user.email, "password": "not the password"},
        )
        assert response.status_code == 401, response.text
        assert browser.token == before  # a failed login changes nothing

    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1))
    def logout(self, which: int) -> None:
        browser = self.browsers[which]
        response = self.send(browser.http, "POST", "/api/logout")
        assert response.status_code == 204, response.text
        token = browser.token
        self.forget(browser)
        browser.http.cookies.clear()
        assert token is None or token in self.dead

    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1))
    def add_to_cart(self, which: int) -> None:
        browser = self.browsers[which]
        item = f"item-{next(self.items)}"
        response = self.send(browser.http, "POST", "/api/cart", json={"item": item})
        assert response.status_code == 201, response.text
        browser.cart.append(item)
        assert response.json() == {"items": browser.cart}

    @precondition(lambda self: self.budget >= 2 and self.users)
    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1))
    def change_password(self, which: int) -> None:
        browser = self.browsers[which]
        user = browser.user
        if user is None:
            response = self.send(browser.http, "POST", "/api/password", json={})
            assert response.status_code == 401, response.text
            return
        self.budget -= 2
        new = f"new passphrase {uuid.uuid4().hex[:8]}"
        before = browser.token
        response = self.send(
            browser.http,
            "POST",
            "/api/password",
            json={"current_password": user.password, "new_password": new},
        )
        assert response.status_code == 204, response.text
        user.password = new
        self.rotated(browser, before)
        for other in self.browsers:
            if other is not browser and other.user is user:
                self.forget(other)
        if self.bearer is not None and self.bearer[1] is user:
            self.dead_bearers.append(self.bearer[0])
            self.bearer = None

    @rule(a=st.integers(0, BROWSERS - 1), b=st.integers(0, BROWSERS - 1))
    def revoke_one(self, a: int, b: int) -> None:
        revoker, target = self.browsers[a], self.browsers[b]
        if revoker.user is None or target.session_id is None or revoker is target:
            return
        response = self.send(revoker.http, "DELETE", f"/api/sessions/{target.session_id}")
        if target.user is revoker.user:
            assert response.status_code == 204, response.text
            self.forget(target)
        else:  # another user's (or an anonymous) session: not yours to see or end
            assert response.status_code == 404, response.text

    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1))
    def revoke_others(self, which: int) -> None:
        browser = self.browsers[which]
        user = browser.user
        response = self.send(browser.http, "POST", "/api/sessions/revoke-others")
        if user is None:
            assert response.status_code == 401, response.text
            return
        others = [b for b in self.browsers if b is not browser and b.user is user]
        bearer = self.bearer is not None and self.bearer[1] is user
        assert response.json() == {"revoked": len(others) + bearer}
        for other in others:
            self.forget(other)
        if bearer and self.bearer is not None:
            self.dead_bearers.append(self.bearer[0])
            self.bearer = None

    @precondition(lambda self: self.budget >= 1 and self.users and self.bearer is None)
    @rule(pick=st.integers(0, 2))
    def issue_token(self, pick: int) -> None:
        user = self.users[pick % len(self.users)]
        self.budget -= 1
        response = self.send(
            self.api,
            "POST",
            "/api/token",
            json={"email": user.email, "password": user.password, "label": "api"},
        )
        assert response.status_code == 201, response.text
        user.failures = 0
        self.bearer = (response.json()["token"], user)
        self.bearer_cart = []

    @precondition(lambda self: self.bearer is not None)
    @rule(revoke=st.booleans())
    def use_token(self, revoke: bool) -> None:
        assert self.bearer is not None
        token, user = self.bearer
        auth = {"authorization": f"Bearer {token}"}
        me = self.send(self.api, "GET", "/api/me", headers=auth)
        assert (me.status_code, me.json()["id"]) == (200, user.id)
        item = f"api-{next(self.items)}"
        added = self.send(self.api, "POST", "/api/cart", json={"item": item}, headers=auth)
        assert added.status_code == 201, added.text
        self.bearer_cart.append(item)
        assert added.json() == {"items": self.bearer_cart}
        if revoke:
            assert self.send(self.api, "DELETE", "/api/token", headers=auth).status_code == 204
            self.dead_bearers.append(token)
            self.bearer = None

    @precondition(lambda self: self.dead or self.dead_bearers)
    @rule(data=st.data())
    def replay_dead(self, data: st.DataObject) -> None:
        with _client(self.base) as stranger:
            if self.dead:
                token = data.draw(st.sampled_from(self.dead))
                cookie = {"cookie": f"{COOKIE}={token}"}
                assert self.send(stranger, "GET", "/api/me", headers=cookie).status_code == 401
                cart = self.send(stranger, "GET", "/api/cart", headers=cookie)
                assert cart.json() == {"items": []}
            if self.dead_bearers:
                token = data.draw(st.sampled_from(self.dead_bearers))
                auth = {"authorization": f"Bearer {token}"}
                assert self.send(stranger, "GET", "/api/me", headers=auth).status_code == 401

    @rule(which=st.integers(min_value=0, max_value=BROWSERS - 1))
    def list_sessions(self, which: int) -> None:
        browser = self.browsers[which]
        response = self.send(browser.http, "GET", "/api/sessions")
        if browser.user is None:
            assert response.status_code == 401, response.text
            return
        listed = response.json()
        browser_ids = {s["id"] for s in listed if s["transport"] == "cookie"}
        assert browser_ids == self.sessions_of(browser.user)
        bearer = self.bearer is not None and self.bearer[1] is browser.user
        assert len(listed) == len(browser_ids) + bearer
        assert [s["id"] for s in listed if s["current"]] == [browser.session_id]

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def every_browser_sees_its_own_user_and_cart(self) -> None:
        for browser in self.browsers:
            me = self.send(browser.http, "GET", "/api/me")
            if browser.user is None:
                assert me.status_code == 401, me.text
            else:
                assert (me.status_code, me.json()["id"]) == (200, browser.user.id)
            cart = self.send(browser.http, "GET", "/api/cart")
            assert cart.json() == {"items": browser.cart}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("demo-stateful")) as url:
        yield url


@pytest.mark.slow
def test_demo_api_keeps_its_invariants(base: str, tmp_path: Path) -> None:
    """Random register/login/logout/cart/password/revoke/token sequences over HTTP never give a
    5xx, never revive an ended session, never lose a cart item, never show another user's data."""
    started = time.monotonic()
    run_state_machine_as_test(
        lambda: DemoMachine(base),
        settings=settings(
            max_examples=RUNS,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(f"\nstateful: {RUNS} runs of up to {STEPS} steps, {time.monotonic() - started:.1f} s")
