"""Sealed sessions through the async manager: expiry, rotation, size, revocation, round trips.

A small ``Browser`` plays the cookie jar; the revocation store is a real memory store wrapped in
:class:`~coatcheck.testing.CountingStore`, so round trips per request are counted exactly.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pytest

from coatcheck import auth
from coatcheck._core.config import CookieConfig, SessionConfig
from coatcheck._core.cookies import set_cookie
from coatcheck._core.http import RequestView
from coatcheck._core.lifecycle import Opened
from coatcheck._core.record import SessionRecord
from coatcheck._core.sealed import sealed_length
from coatcheck._core.sealed_flow import DATA_LIMIT, MAX_DENIED, revocation_id
from coatcheck._core.session import Session
from coatcheck.admin import AsyncSessionAdmin
from coatcheck.errors import NotSupportedError, SessionTooLargeError, StoreUnavailableError
from coatcheck.manager import AsyncSessionManager
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.stores.sealed import AsyncSealedStore
from coatcheck.testing import CountingStore, FakeClock, test_config

COOKIE = "coatcheck_session"
OLD = "old-secret-0123456789-abcdefghijklmnopq"
NEW = "new-secret-0123456789-abcdefghijklmnopq"


@dataclass
class Browser:
    """One visitor's cookie jar, sending requests through a manager."""

    manager: AsyncSessionManager
    cookies: dict[str, str] = field(default_factory=dict)
    last_headers: list[tuple[str, str]] = field(default_factory=list)

    def request(self, method: str = "GET", **extra: str) -> RequestView:
        headers = [("user-agent", "pytest")]
        if self.cookies:
            headers.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        if method != "GET" and "XSRF-TOKEN" in self.cookies:
            headers.append(("x-xsrf-token", self.cookies["XSRF-TOKEN"]))
        headers.extend(extra.items())
        return RequestView(method, "https", headers, "192.0.2.1")

    def absorb(self, headers: list[tuple[str, str]]) -> None:
        self.last_headers = headers
        for name, value in headers:
            if name != "set-cookie":
                continue
            pair = value.split(";")[0]
            key, _, val = pair.partition("=")
            if val == '""':
                self.cookies.pop(key, None)
            else:
                self.cookies[key] = val

    async def open(self, method: str = "GET", **extra: str) -> Opened:
        return await self.manager.open(self.request(method, **extra))

    async def visit(self, work: Any = None, method: str = "GET") -> Session:
        """Open, let ``work(session)`` act, commit, keep the cookies; returns the session."""
        opened = await self.open(method)
        assert opened.error is None, opened.error
        if opened.clear_cookie:
            self.absorb([("set-cookie", f'{COOKIE}=""'), ("set-cookie", 'XSRF-TOKEN=""')])
        if work is not None:
            work(opened.session)
        self.absorb((await self.manager.commit(opened.session)).headers)
        return opened.session

    def sets_session_cookie(self) -> bool:
        return any(v.startswith(f"{COOKIE}=") for k, v in self.last_headers if k == "set-cookie")


def build(
    *, revocations: bool = True, config: SessionConfig | None = None
) -> tuple[AsyncSessionManager, CountingStore | None, FakeClock]:
    counting = CountingStore(AsyncMemoryStore()) if revocations else None
    clock = FakeClock()
    manager = AsyncSessionManager(
        AsyncSealedStore(counting), config or test_config(secret=NEW), clock=clock
    )
    return manager, counting, clock


def login_as(user_id: str, **kwargs: Any) -> Any:
    return lambda s: auth.login(s, user_id, **kwargs)


async def signed_in(manager: AsyncSessionManager, user_id: str = "u1") -> Browser:
    browser = Browser(manager)
    await browser.visit(lambda s: s.__setitem__("cart", ["apple"]))
    await browser.visit(login_as(user_id), "POST")
    return browser


async def test_no_store_at_all_without_revocations() -> None:
    """sealed:// alone: a session is created, read, changed and logged out with no store."""
    manager, _, _ = build(revocations=False)
    browser = await signed_in(manager)
    assert (await browser.open()).session.user_id == "u1"
    await browser.visit(auth.logout, "POST")
    assert COOKIE not in browser.cookies
    assert manager.sealed is not None
    assert manager.sealed.revocations is False


async def test_text_with_lone_surrogates_is_sealed_and_read_back() -> None:
    """json.loads accepts "\ud800" from a request body, so an app can put a lone surrogate in
    the session; the server stores keep it, and the seal must too (it raised UnicodeEncodeError
    at commit, a 500, before)."""
    manager, _, _ = build(revocations=False)
    browser = Browser(manager)
    odd = {"name": "a\ud800b", "keys": {"\udc00": "\udbff\udfff"}}
    await browser.visit(lambda s: s.update(odd))
    assert browser.sets_session_cookie()
    opened = await browser.open()
    assert opened.error is None
    assert {k: opened.session[k] for k in odd} == odd
    await browser.visit(lambda s: s.__setitem__("more", "\udfff"), "POST")
    assert (await browser.open()).session["more"] == "\udfff"


async def test_round_trips_anonymous_none_signed_in_one() -> None:
    """With a revocation record: anonymous requests make no store call, a signed-in request
    exactly one read, and neither writes."""
    manager, store, clock = build()
    assert store is not None
    anonymous = Browser(manager)
    await anonymous.visit(lambda s: s.__setitem__("cart", ["pear"]))
    store.reset()
    for _ in range(3):
        clock.advance(30)
        await anonymous.visit(lambda s: s.get("cart"))
    assert dict(store.calls) == {}
    browser = await signed_in(manager)
    store.reset()
    await browser.visit(lambda s: s.get("cart"))
    assert dict(store.calls) == {"get": 1}
    store.reset()
    await browser.visit(lambda s: s.__setitem__("cart", ["apple", "fig"]), "POST")
    assert dict(store.calls) == {"get": 1}


async def test_logout_costs_one_read_and_one_write_and_ends_copies() -> None:
    """Logout reads the record when opening and writes one deny entry; a copy of the cookie
    replayed afterwards is anonymous and cleared."""
    manager, store, _ = build()
    assert store is not None
    browser = await signed_in(manager)
    stolen = dict(browser.cookies)
    store.reset()
    await browser.visit(auth.logout, "POST")
    assert dict(store.calls) == {"get": 1, "put": 1}
    replay = await Browser(manager, stolen).open()
    assert replay.session.user_id is None
    assert replay.clear_cookie is True


async def test_without_revocations_a_copied_cookie_lives_until_it_expires() -> None:
    """Without a revocation record, logout clears the cookie but a copy still opens, until the
    idle timeout ends it (what the docs say plainly)."""
    manager, _, clock = build(revocations=False)
    browser = await signed_in(manager)
    stolen = dict(browser.cookies)
    await browser.visit(auth.logout, "POST")
    assert (await Browser(manager, stolen).open()).session.user_id == "u1"
    clock.advance(30 * 60)
    assert (await Browser(manager, stolen).open()).session.user_id is None


async def test_login_regenerates_keeps_cart_and_rotates_csrf() -> None:
    """Login issues a new session id and CSRF token and keeps the anonymous cart."""
    manager, _, _ = build()
    browser = Browser(manager)
    first = await browser.visit(lambda s: s.__setitem__("cart", ["apple"]))
    first_id, first_csrf = first.id, browser.cookies["XSRF-TOKEN"]
    await browser.visit(login_as("u1"), "POST")
    after = (await browser.open()).session
    assert after.user_id == "u1"
    assert dict(after) == {"cart": ["apple"]}
    assert after.id != first_id
    assert browser.cookies["XSRF-TOKEN"] != first_csrf
    assert after.auth_time == manager.clock()


async def test_relogin_ends_the_previous_seal() -> None:
    """A login on a signed-in session replaces its id; a copy of the old seal is refused (as a
    server store deletes the old record)."""
    manager, _, _ = build()
    browser = await signed_in(manager)
    before = dict(browser.cookies)
    await browser.visit(login_as("u1"), "POST")
    assert (await Browser(manager, before).open()).session.user_id is None
    assert (await browser.open()).session.user_id == "u1"


async def test_another_user_logging_in_starts_empty_and_ends_the_first_users_seal() -> None:
    """A different user signing in on a session gets none of the first user's data, and the
    first user's seal is denied in the first user's record."""
    manager, _, _ = build()
    browser = await signed_in(manager, "alice")
    before = dict(browser.cookies)
    await browser.visit(login_as("bob"), "POST")
    session = (await browser.open()).session
    assert (session.user_id, dict(session)) == ("bob", {})
    assert (await Browser(manager, before).open()).session.user_id is None


async def test_idle_and_absolute_timeouts_come_from_the_sealed_times() -> None:
    """An idle seal ends after idle_timeout; an active one ends at the absolute timeout."""
    manager, _, clock = build()
    idle = await signed_in(manager)
    clock.advance(30 * 60)
    opened = await idle.open()
    assert (opened.session.user_id, opened.clear_cookie) == (None, True)

    active = await signed_in(manager)
    for _ in range(12 * 60 - 1):
        clock.advance(60)
        assert (await active.visit(lambda s: s.user_id)).user_id == "u1"
    clock.advance(60)
    assert (await active.open()).session.user_id is None


async def test_touch_reseals_at_most_once_per_touch_interval() -> None:
    """A read-only request re-seals only when last_seen_at is older than touch_interval."""
    manager, _, clock = build()
    browser = await signed_in(manager)
    resealed = 0
    for _ in range(20):
        clock.advance(30)
        await browser.visit(lambda s: s.get("cart"))
        resealed += browser.sets_session_cookie()
    assert resealed == 10


async def test_remember_me_seal_has_max_age_and_long_timeouts() -> None:
    """A remember-me seal is a persistent cookie and outlives the ordinary idle timeout."""
    manager, _, clock = build()
    browser = Browser(manager)
    await browser.visit(login_as("u1", remember=True), "POST")
    cookie = next(v for k, v in browser.last_headers if v.startswith(f"{COOKIE}="))
    assert f"Max-Age={30 * 24 * 3600}" in cookie
    clock.advance(2 * 3600)
    assert (await browser.open()).session.user_id == "u1"
    clock.advance(15 * 24 * 3600)
    assert (await browser.open()).session.user_id is None


async def test_flash_is_delivered_once_and_leaves_the_cookie() -> None:
    """A flash is read by the next request that reads flashes, whose response re-seals without
    it; a request that does not read them (a redirect) leaves them for the next."""
    manager, _, _ = build()
    browser = await signed_in(manager)
    await browser.visit(lambda s: s.flash("saved"), "POST")
    await browser.visit()  # a redirect: does not look at the flashes
    shown: list[object] = []
    await browser.visit(lambda s: shown.extend(s.flashes))
    assert shown == [{"message": "saved", "category": "info"}]
    assert browser.sets_session_cookie()
    assert (await browser.visit(lambda s: shown.extend(s.flashes))).flashes == []
    assert len(shown) == 1


async def test_old_key_is_resealed_with_the_newest_then_removed() -> None:
    """Two secrets then one: a seal made with the old secret opens while it is listed and is
    re-sealed with the new one on its next response; once the old secret is removed, seals that
    were not re-sealed end."""
    clock = FakeClock()

    def manager(*secrets: str) -> AsyncSessionManager:
        config = test_config(secret=secrets[-1], previous_secrets=secrets[:-1])
        return AsyncSessionManager(AsyncSealedStore(), config, clock=clock)

    before = manager(OLD)
    resealed = await signed_in(before)
    left_alone = await signed_in(before)
    rotating = manager(OLD, NEW)
    resealed.manager = rotating
    await resealed.visit()
    assert resealed.sets_session_cookie()
    await resealed.visit()
    assert not resealed.sets_session_cookie()  # already on the newest key
    after = manager(NEW)
    resealed.manager = left_alone.manager = after
    assert (await resealed.open()).session.user_id == "u1"
    opened = await left_alone.open()
    assert (opened.session.user_id, opened.clear_cookie) == (None, True)


async def test_oversized_session_is_refused_and_never_over_4096_bytes() -> None:
    """A write that would need a cookie over 4096 bytes raises SessionTooLargeError (413);
    every cookie written stays within the limit."""
    manager, _, _ = build()
    browser = await signed_in(manager)
    largest, items = 0, 0
    while True:
        opened = await browser.open("POST")
        items += 1
        opened.session["cart"] = ["x" * 100] * items
        try:
            browser.absorb((await manager.commit(opened.session)).headers)
        except SessionTooLargeError as error:
            raised = error
            break
        largest = max(largest, *(len(v) for k, v in browser.last_headers))
    assert raised.status_code == 413
    assert raised.body["error"] == "session_too_large"
    assert raised.size > DATA_LIMIT  # a data write keeps 256 bytes free for a sign-in
    assert DATA_LIMIT - 150 < largest <= DATA_LIMIT
    assert (await browser.open()).session.user_id == "u1"  # the previous cookie still works


async def test_bearer_is_refused_with_a_clear_401_and_tokens_are_not_issued() -> None:
    """A bearer request gets 401 invalid_token saying why; issue_token raises 501."""
    manager, _, _ = build()
    opened = await Browser(manager).open(authorization="Bearer anything")
    assert opened.error is not None
    assert opened.error.status_code == 401
    assert "sealed" in dict(opened.error.headers)["www-authenticate"]
    malformed = await Browser(manager).open(authorization="Bearer a b")
    assert malformed.error is not None
    assert malformed.error.status_code == 400
    with pytest.raises(NotSupportedError) as raised:
        await manager.issue_token("u1")
    assert raised.value.status_code == 501


async def test_csrf_and_cross_site_checks_apply_to_sealed_sessions() -> None:
    """An unsafe request without the token is 403, and one from another origin too."""
    manager, _, _ = build()
    browser = await signed_in(manager)
    token = browser.cookies.pop("XSRF-TOKEN")
    missing = await browser.open("POST")
    assert missing.error is not None
    assert missing.error.status_code == 403
    browser.cookies["XSRF-TOKEN"] = token
    cross = await browser.open("POST", origin="https://evil.example")
    assert cross.error is not None
    assert cross.error.status_code == 403
    form = await browser.manager.open(
        Browser(manager, {COOKIE: browser.cookies[COOKIE]}).request("POST"), form_csrf=token
    )
    assert form.error is None


async def test_admin_revoke_one_needs_the_owner_and_ends_that_session() -> None:
    """revoke(id, owner=...) ends that sealed session; without an owner it cannot be found."""
    manager, _, _ = build()
    admin = AsyncSessionAdmin(manager)
    phone = await signed_in(manager)
    laptop = await signed_in(manager)
    phone_id = (await phone.open()).session.id
    assert phone_id is not None
    with pytest.raises(NotSupportedError):
        await admin.revoke(phone_id)
    assert await admin.revoke("not-an-id", owner="u1") is False
    assert await admin.revoke(phone_id, owner="u1") is True
    assert (await phone.open()).session.user_id is None
    assert (await laptop.open()).session.user_id == "u1"


async def test_admin_revoke_all_keeps_the_current_session() -> None:
    """revoke_all(user, keep=current) ends every other seal of the user issued until now, and
    sessions issued afterwards work."""
    manager, _, clock = build()
    admin = AsyncSessionAdmin(manager)
    current, other = await signed_in(manager), await signed_in(manager)
    stranger = await signed_in(manager, "u2")
    clock.advance(1)
    keep = (await current.open()).session.id
    assert await admin.revoke_all("u1", keep=keep) == 0
    assert (await current.open()).session.user_id == "u1"
    assert (await other.open()).session.user_id is None
    assert (await stranger.open()).session.user_id == "u2"
    clock.advance(1)
    assert (await (await signed_in(manager)).open()).session.user_id == "u1"


async def test_password_change_flow_keeps_only_the_rotated_current_session() -> None:
    """revoke_all(keep=current) then login (as the demo's password change does): the current
    browser stays signed in under a new id; its old seal and every other seal end."""
    manager, store, clock = build()
    assert store is not None
    admin = AsyncSessionAdmin(manager)
    current, other = await signed_in(manager), await signed_in(manager)
    clock.advance(1)
    before = dict(current.cookies)
    opened = await current.open("POST")
    await admin.revoke_all("u1", keep=opened.session.id)
    auth.login(opened.session, "u1")
    current.absorb((await manager.commit(opened.session)).headers)
    assert (await current.open()).session.user_id == "u1"
    assert (await Browser(manager, before).open()).session.user_id is None
    assert (await other.open()).session.user_id is None


async def test_plain_regenerate_after_revocation_does_not_outlive_it() -> None:
    """A regenerate() in flight when the session was revoked issues nothing and clears the
    cookie; the kept session survives its own regenerate."""
    manager, _, clock = build()
    admin = AsyncSessionAdmin(manager)
    browser = await signed_in(manager)
    clock.advance(1)
    in_flight = await browser.open()
    await admin.revoke_all("u1")
    in_flight.session.regenerate()
    committed = await manager.commit(in_flight.session)
    assert committed.token is None
    assert any(v.startswith(f'{COOKIE}=""') for _, v in committed.headers)

    kept = await signed_in(manager)
    clock.advance(1)
    await admin.revoke_all("u1", keep=(await kept.open()).session.id)
    await kept.visit(lambda s: s.regenerate())
    assert (await kept.open()).session.user_id == "u1"


async def test_deny_list_is_bounded() -> None:
    """Past MAX_DENIED entries the record folds into 'valid after now': still small, and every
    revoked seal stays refused."""
    manager, store, clock = build()
    assert store is not None
    admin = AsyncSessionAdmin(manager)
    browsers = [await signed_in(manager) for _ in range(MAX_DENIED + 2)]
    clock.advance(1)
    ids = [(await browser.open()).session.id for browser in browsers]
    for session_id in ids:
        assert session_id is not None
        await admin.revoke(session_id, owner="u1")
        record = await store.get(revocation_id("u1"))
        assert record is not None
        assert len(record.data["deny"]) <= MAX_DENIED
    record = await store.get(revocation_id("u1"))
    assert record is not None
    assert len(record.data["deny"]) <= MAX_DENIED
    for browser in browsers:
        assert (await browser.open()).session.user_id is None


async def test_revocation_record_is_reserved_and_expires() -> None:
    """The record lives under a reserved id (never a token id), holds no user id, and expires
    once no seal it refuses can be alive, so purge_expired removes it."""
    manager, store, clock = build()
    assert store is not None
    admin = AsyncSessionAdmin(manager)
    browser = await signed_in(manager)
    await browser.visit(auth.logout, "POST")
    record = await store.get(revocation_id("u1"))
    assert record is not None
    assert record.id.startswith("rv.")
    assert record.user_id is None
    assert record.secret_hash == ""
    clock.advance(12 * 3600 + 1)
    assert await admin.purge_expired() == 1
    assert await store.get(revocation_id("u1")) is None


async def test_malformed_revocation_record_fails_closed() -> None:
    """A revocation record that is not well formed ends the user's seals (never adopts them)."""
    manager, store, clock = build()
    assert store is not None
    browser = await signed_in(manager)
    junk = SessionRecord(
        id=revocation_id("u1"),
        secret_hash="",
        created_at=clock.now,
        last_seen_at=clock.now,
        expires_at=clock.now + 60,
        absolute_expires_at=clock.now + 60,
        version=1,
        data={"deny": ["not", "a", "mapping"]},
    )
    assert await store.put(junk, 0)
    assert (await browser.open()).session.user_id is None
    await browser.visit(auth.logout, "POST")  # and writing over it still works


async def test_listing_sessions_and_revoking_without_a_record_say_why() -> None:
    """sessions_of/user_ids raise NotSupportedError (501); without a revocation record so do
    revoke and revoke_all, and can_revoke says so beforehand."""
    manager, _, _ = build(revocations=False)
    admin = AsyncSessionAdmin(manager)
    assert admin.can_revoke is False
    for call in (admin.sessions_of("u1"), admin.user_ids()):
        with pytest.raises(NotSupportedError) as raised:
            await call
        assert raised.value.status_code == 501
        assert "cookies" in str(raised.value)
    with pytest.raises(NotSupportedError, match="revocation record"):
        await admin.revoke("A" * 24, owner="u1")
    with pytest.raises(NotSupportedError, match="revocation record"):
        await admin.revoke_all("u1")
    assert await admin.purge_expired() == 0
    assert AsyncSessionAdmin(build()[0]).can_revoke is True


async def test_throttling_counts_live_in_the_revocation_store_or_in_memory() -> None:
    """Login throttling works on sealed:// (counts per process) and with a record (shared)."""
    from coatcheck.throttling import AsyncLoginGuard, ThrottleConfig

    for revocations in (False, True):
        manager, store, _ = build(revocations=revocations)
        guard = AsyncLoginGuard(manager, ThrottleConfig())
        attempt = await guard.check("ann@example.com", "192.0.2.1")
        await guard.succeeded(attempt)
        if store is not None:
            assert store.calls["hit"] >= 1


async def test_cookie_holds_no_plaintext() -> None:
    """The cookie's bytes hold neither the user id nor any data value."""
    manager, _, _ = build()
    browser = Browser(manager)
    await browser.visit(lambda s: s.__setitem__("email", "ann@example.com"))
    await browser.visit(login_as("user-4242"), "POST")
    value = browser.cookies[COOKIE]
    decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    for needle in ("ann@example.com", "user-4242", "email"):
        assert needle.encode() not in decoded
        assert needle not in value


@pytest.mark.parametrize(
    ("cookie", "remember", "attributes", "plaintext"),
    [
        (CookieConfig(), False, 55, 2997),
        (CookieConfig(), True, 72, 2985),
        (CookieConfig(secure=False), False, 50, 3001),
    ],
)
async def test_documented_capacity(
    cookie: CookieConfig, remember: bool, attributes: int, plaintext: int
) -> None:
    """The numbers in docs/sealed.md: name and attributes take `attributes` bytes, the largest
    payload is `plaintext` bytes, and the largest data write that commits gives a Set-Cookie of
    3837-3840 bytes (256 kept free for sign-ins, flashes and touches) while one byte more of data
    is refused."""
    config = test_config(cookie=cookie)
    manager, _, _ = build(revocations=False, config=config)
    name = cookie.effective_name
    empty = set_cookie(cookie, name, "", max_age=30 * 24 * 3600 if remember else None)
    assert len(empty) == attributes
    assert max(n for n in range(4096) if attributes + sealed_length(n) <= 4096) == plaintext

    async def commit(size: int) -> list[tuple[str, str]]:
        opened = await Browser(manager).open("POST")
        auth.login(opened.session, "3c28b32d-061b-40be-a36a-30ba244cffb9", remember=remember)
        opened.session["blob"] = "x" * size
        return (await manager.commit(opened.session)).headers

    low, high = 0, 4096
    while low + 1 < high:  # the largest blob that still commits
        middle = (low + high) // 2
        try:
            await commit(middle)
            low = middle
        except SessionTooLargeError:
            high = middle
    largest = next(v for _, v in await commit(low) if v.startswith(f"{name}="))
    assert DATA_LIMIT - 3 <= len(largest) <= DATA_LIMIT
    assert 2500 < low < plaintext
    with pytest.raises(SessionTooLargeError):
        await commit(low + 1)


async def test_revocation_store_outage_is_503_for_signed_in_only() -> None:
    """A signed-in request whose revocation read fails raises StoreUnavailableError (503, never
    authenticated from stale data); anonymous seals never touch the store and keep working."""

    class Down(AsyncMemoryStore):
        broken = False

        async def get(self, session_id: str) -> SessionRecord | None:
            if self.broken:
                raise ConnectionError("revocation store down")
            return await super().get(session_id)

    inner = Down()
    manager = AsyncSessionManager(AsyncSealedStore(inner), test_config(), clock=FakeClock())
    anonymous = Browser(manager)
    await anonymous.visit(lambda s: s.__setitem__("cart", ["pear"]))
    browser = await signed_in(manager)
    inner.broken = True
    with pytest.raises(StoreUnavailableError):
        await browser.open()
    assert dict((await anonymous.open()).session) == {"cart": ["pear"]}


async def test_several_cookies_of_one_name_the_first_valid_wins() -> None:
    """With junk, a revoked seal and a valid seal under the same name, the valid one opens."""
    manager, _, _ = build()
    revoked = await signed_in(manager, "u1")
    stale = revoked.cookies[COOKIE]
    await revoked.visit(auth.logout, "POST")
    valid = await signed_in(manager, "u2")
    header = f"{COOKIE}=junk; {COOKIE}={stale}; {COOKIE}={valid.cookies[COOKIE]}"
    opened = await manager.open(RequestView("GET", "https", [("cookie", header)], ""))
    assert opened.session.user_id == "u2"
    session = opened.session
    auth.logout(session)
    await manager.commit(session)  # logs out u2's session (its record, not u1's)
    again = await manager.open(RequestView("GET", "https", [("cookie", header)], ""))
    assert again.session.user_id is None
