"""``coatcheck demo --store sealed://`` (and with a revocation record on SQLite and on Redis),
driven over real HTTP from outside, as the issue asks: register, me, cart across login, logout,
the old cookie replayed, the cookie's bytes decoded, bit flips and truncations of real cookies, a
cart grown past 4 KB, two secrets then one."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis

from tests.backends.redis import delete_prefix_sync, new_prefix, shared_url
from tests.demo.server import demo_server
from tests.demo.test_demo_http import COOKIE, PASSWORD, client, register, unsafe

OLD_SECRET = "demo-old-secret-0123456789-abcdefghijk"
NEW_SECRET = "demo-new-secret-0123456789-abcdefghijk"


def sqlite_revocations(folder: Path) -> str:
    return "sealed://?revocations=" + quote(f"sqlite:///{folder / 'revocations.db'}", safe="")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("sealed"), store="sealed://") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def revoking(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("sealed-rv")
    if request.param == "sqlite":
        with demo_server(folder, store=sqlite_revocations(folder)) as url:
            yield url
        return
    prefix = new_prefix()
    inner = f"{shared_url()}?prefix={prefix}"
    try:
        with demo_server(folder, store="sealed://?revocations=" + quote(inner, safe="")) as url:
            yield url
    finally:
        admin = redis.Redis.from_url(shared_url())
        try:
            delete_prefix_sync(admin, prefix)
        finally:
            admin.close()


def decoded(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def cart_then_login(base: str) -> tuple[httpx.Client, dict[str, str]]:
    """A visitor fills a cart anonymously, registers elsewhere, then logs in here."""
    with client(base) as other:
        user = register(other, name="Zoë")
        unsafe(other, "POST", "/api/logout")
    c = client(base)
    assert c.post("/api/cart", json={"item": "golden-apple-7781"}).status_code == 201
    assert unsafe(c, "POST", "/api/cart", json={"item": "pear"}).status_code == 201
    anonymous = c.cookies[COOKIE]
    login = unsafe(c, "POST", "/api/login", json={"email": user["email"], "password": PASSWORD})
    assert login.status_code == 200
    assert c.cookies[COOKIE] != anonymous
    return c, user


def test_register_me_cart_across_login_and_no_plaintext(plain: str) -> None:
    """With no server store: register logs in, the cart survives login, and the cookie's bytes
    hold neither the email, the user id nor a cart item."""
    c, user = cart_then_login(plain)
    try:
        assert c.get("/api/me").json() == user
        assert c.get("/api/cart").json() == {"items": ["golden-apple-7781", "pear"]}
        value = c.cookies[COOKIE]
        raw = decoded(value)
        for secret in (user["email"], user["id"], "golden-apple-7781"):
            assert secret.encode() not in raw
            assert secret not in value
        assert unsafe(c, "POST", "/api/logout").status_code == 204
        assert c.get("/api/me").status_code == 401
    finally:
        c.close()


def test_without_revocations_a_replayed_cookie_still_works(plain: str) -> None:
    """Plain sealed://: logout clears the cookie, but a copy keeps working (documented)."""
    with client(plain) as c:
        user = register(c)
        copy = c.cookies[COOKIE]
        assert unsafe(c, "POST", "/api/logout").status_code == 204
    with client(plain) as thief:
        replayed = thief.get("/api/me", headers={"cookie": f"{COOKIE}={copy}"})
        assert replayed.json() == user


def test_listing_and_tokens_say_why_not(plain: str) -> None:
    """Listing sessions and issuing bearer tokens answer 501 with the reason."""
    with client(plain) as c:
        user = register(c)
        listed = c.get("/api/sessions")
        assert (listed.status_code, listed.json()["error"]) == (501, "not_supported")
        assert "cookies" in listed.json()["detail"]
        with client(plain) as api:
            body = {"email": user["email"], "password": PASSWORD}
            token = api.post("/api/token", json=body)
            assert (token.status_code, token.json()["error"]) == (501, "not_supported")
        bearer = c.get("/api/me", headers={"authorization": "Bearer abc"})
        assert bearer.status_code == 401
        changed = unsafe(
            c,
            "POST",
            "/api/password",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        )
        assert changed.status_code == 204  # nothing to revoke remotely; this one is rotated


def test_bit_flips_and_truncations_of_a_real_cookie(plain: str) -> None:
    """Every flipped character and truncation of a real signed-in cookie: anonymous, never 500."""
    with client(plain) as c:
        register(c)
        value = c.cookies[COOKIE]
    forged = [value[:cut] for cut in (1, 40, len(value) // 2, len(value) - 1)]
    for position in range(0, len(value), max(1, len(value) // 25)):
        c = value[position]
        forged.append(value[:position] + ("A" if c != "A" else "B") + value[position + 1 :])
    forged.append(value + "AAAA")
    with client(plain) as attacker:
        for cookie in forged:
            response = attacker.get("/api/me", headers={"cookie": f"{COOKIE}={cookie}"})
            assert response.status_code == 401, cookie
            cart = attacker.get("/api/cart", headers={"cookie": f"{COOKIE}={cookie}"})
            assert cart.status_code == 200


def test_cart_grown_past_4kb_is_refused_with_413(plain: str) -> None:
    """Adding items until the sealed cookie would pass 4096 bytes: that request answers 413
    session_too_large, no cookie ever exceeds 4096 bytes, and the cart keeps what fitted."""
    with client(plain) as c:
        register(c)
        added = 0
        while True:
            response = unsafe(c, "POST", "/api/cart", json={"item": f"{added:03d}-" + "x" * 150})
            for header in response.headers.get_list("set-cookie"):
                assert len(header) <= 4096
            if response.status_code != 201:
                break
            added += 1
        assert response.status_code == 413
        assert response.json()["error"] == "session_too_large"
        assert 15 <= added < 30
        assert len(c.get("/api/cart").json()["items"]) == added
        assert c.get("/api/me").status_code == 200


def fill_anonymous_cart(c: httpx.Client) -> int:
    """Items of random text (incompressible) until the anonymous seal is full (413)."""
    added = 0
    while True:
        item = f"{added:03d}-{uuid.uuid4().hex}{uuid.uuid4().hex}"
        response = unsafe(c, "POST", "/api/cart", json={"item": item})
        if response.status_code != 201:
            assert response.status_code == 413, response.text
            return added
        added += 1


def test_a_full_anonymous_cart_still_registers_and_logs_in(plain: str) -> None:
    """Found by an attack: with the anonymous cart filled to the cookie limit, login answered 413
    and registration 413 after creating the account. Both work now, and the cart is kept."""
    with client(plain) as c:
        added = fill_anonymous_cart(c)
        assert added > 10
        user = register(c)  # asserts 201
        assert len(c.get("/api/cart").json()["items"]) == added
        assert unsafe(c, "POST", "/api/logout").status_code == 204
    with client(plain) as c:
        fill_anonymous_cart(c)
        body = {"email": user["email"], "password": PASSWORD, "remember": True}
        assert unsafe(c, "POST", "/api/login", json=body).status_code == 200
        assert c.get("/api/me").json() == user


def test_a_full_signed_in_cart_signs_in_again_with_remember_me(plain: str) -> None:
    """Found by an attack: a signed-in session's cart filled to the limit, then the same user
    logging in again with remember-me (which adds a Max-Age and a flag) answered 413. Data
    writes stop 256 bytes short of the limit, so the re-login fits."""
    with client(plain) as c:
        user = register(c)
        added = fill_anonymous_cart(c)  # signed in here: the same requests
        assert added > 10
        body = {"email": user["email"], "password": PASSWORD, "remember": True}
        again = unsafe(c, "POST", "/api/login", json=body)
        assert again.status_code == 200, again.text
        assert c.get("/api/me").json() == user
        assert len(c.get("/api/cart").json()["items"]) == added


def test_logout_ends_a_replayed_cookie(revoking: str) -> None:
    """With a revocation record: register, cart across login, logout, and the old cookie
    replayed afterwards is refused."""
    c, user = cart_then_login(revoking)
    try:
        assert c.get("/api/me").json() == user
        copy = c.cookies[COOKIE]
        assert unsafe(c, "POST", "/api/logout").status_code == 204
    finally:
        c.close()
    with client(revoking) as thief:
        replayed = thief.get("/api/me", headers={"cookie": f"{COOKIE}={copy}"})
        assert replayed.status_code == 401


def test_password_change_and_revoke_others(revoking: str) -> None:
    """Password change signs out the other device and rotates this one; revoke-others ends a
    third session and keeps the current one."""
    with client(revoking) as laptop, client(revoking) as phone, client(revoking) as tablet:
        user = register(laptop)
        body = {"email": user["email"], "password": PASSWORD}
        assert unsafe(phone, "POST", "/api/login", json=body).status_code == 200
        before = laptop.cookies[COOKIE]
        changed = unsafe(
            laptop,
            "POST",
            "/api/password",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        )
        assert changed.status_code == 204
        assert laptop.get("/api/me").json() == user
        assert phone.get("/api/me").status_code == 401
        with client(revoking) as stale:
            assert stale.get("/api/me", headers={"cookie": f"{COOKIE}={before}"}).status_code == 401
        body["password"] = "a brand new passphrase"
        assert unsafe(tablet, "POST", "/api/login", json=body).status_code == 200
        revoked = unsafe(laptop, "POST", "/api/sessions/revoke-others")
        assert revoked.json() == {"revoked": None}
        assert tablet.get("/api/me").status_code == 401
        assert laptop.get("/api/me").json() == user


def test_two_secrets_then_one(tmp_path: Path) -> None:
    """Rotation over restarts: a cookie sealed with the old secret works while both are listed
    and is re-sealed with the new one; after the old secret is removed, the re-sealed cookie
    works and one that was never re-sealed is refused."""
    store = sqlite_revocations(tmp_path)
    with demo_server(tmp_path, store=store, secret=OLD_SECRET) as url:
        with client(url) as c:
            user = register(c)
            resealed = c.cookies[COOKIE]
        with client(url) as c:
            unsafe(c, "POST", "/api/login", json={"email": user["email"], "password": PASSWORD})
            left_alone = c.cookies[COOKIE]
    rotating = ["--previous-secret", OLD_SECRET]
    with (
        demo_server(tmp_path, *rotating, store=store, secret=NEW_SECRET) as url,
        client(url) as c,
    ):
        response = c.get("/api/me", headers={"cookie": f"{COOKIE}={resealed}"})
        assert response.json() == user
        new_cookie = response.cookies[COOKIE]
        assert decoded(new_cookie)[1:5] != decoded(resealed)[1:5]  # another key id
    with demo_server(tmp_path, store=store, secret=NEW_SECRET) as url:
        with client(url) as c:
            assert c.get("/api/me", headers={"cookie": f"{COOKIE}={new_cookie}"}).json() == user
        with client(url) as c:
            refused = c.get("/api/me", headers={"cookie": f"{COOKIE}={left_alone}"})
            assert refused.status_code == 401


def test_unique_users_do_not_share_carts(plain: str) -> None:
    """Two visitors' sealed carts never mix (each cookie is its own session)."""
    with client(plain) as a, client(plain) as b:
        a.post("/api/cart", json={"item": f"a-{uuid.uuid4().hex[:6]}"})
        b.post("/api/cart", json={"item": "b-item"})
        assert b.get("/api/cart").json() == {"items": ["b-item"]}
        assert a.get("/api/cart").json()["items"][0].startswith("a-")


# -- the pages on sealed cookies (found by an attack on the pages) ------------------------------


def form(c: httpx.Client, path: str, data: dict[str, str], page: str = "/") -> httpx.Response:
    token = c.get(page).text.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
    return c.post(path, data={"_csrf": token, **data})


def test_pages_sign_up_with_a_long_name_beside_a_full_cart(plain: str) -> None:
    """The page signup's welcome flash names the user; beside a full anonymous cart it did not
    fit, and the signup answered 413 after creating the account. The flash is dropped instead."""
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    with client(plain) as c:
        added = fill_anonymous_cart(c)
        signed_up = form(c, "/signup", {"email": email, "password": PASSWORD, "name": "a" * 150})
        assert signed_up.status_code == 303, signed_up.text
        assert c.get("/api/me").json()["email"] == email
        assert len(c.get("/api/cart").json()["items"]) == added


def test_pages_logout_flash_on_sealed_cookies(plain: str) -> None:
    """The "signed out" flash was lost on sealed cookies (the server stores kept it)."""
    with client(plain) as c:
        register(c)
        assert form(c, "/logout", {}).status_code == 303
        page = c.get("/")
        assert "You are signed out." in page.text
        assert "You are signed out." not in c.get("/").text


def test_plain_sealed_account_page_offers_no_sign_out_elsewhere(plain: str) -> None:
    """Without a revocation record other sealed sessions cannot be ended: the account page does
    not offer "Sign out everywhere else" (it answered 501), and a hand-made post is a flash."""
    with client(plain) as c:
        register(c)
        account = c.get("/account")
        assert "Sign out everywhere else" not in account.text
        assert "cannot be signed out from here" in account.text
        posted = form(c, "/account/revoke-others", {}, "/account")
        assert posted.status_code == 303
        assert "cannot be signed out from another device" in c.get("/account").text


def test_unread_flashes_never_keep_an_api_client_from_signing_in(plain: str) -> None:
    """Attack round 8: each "no such story" post left a flash that a client using only the API
    never displays; 80 of them filled the cookie to 4033 bytes (49 flashes), past the data limit,
    and the login then answered 413 until the browser dropped the cookie. The oldest flashes are
    dropped once they would take the room kept for a sign-in: the login goes through, the
    cookie stays under 4096 bytes, and the newest message is still there to show."""
    with client(plain) as c:
        email = register(c)["email"]
        assert unsafe(c, "POST", "/api/logout").status_code in (200, 204)
        for _ in range(80):  # never a page that shows them: the token from the XSRF cookie
            token = c.cookies.get("XSRF-TOKEN", "")
            posted = c.post("/saved", data={"_csrf": token, "story": "nope"})
            assert posted.status_code == 303
            assert len(c.cookies.get(COOKIE, "")) < 3840
        assert c.get("/api/cart").status_code == 200  # a read re-seals the waiting flashes
        logged_in = unsafe(c, "POST", "/api/login", json={"email": email, "password": PASSWORD})
        assert logged_in.status_code == 200, logged_in.text
        assert c.get("/api/me").json()["email"] == email
        assert "There is no such story." in c.get("/").text
