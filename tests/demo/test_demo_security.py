"""Login hardening on the running demo, over real HTTP: throttling, password change, session
lists and revocation, remember-me, CSRF across users, enumeration and spoofing attempts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.demo.server import demo_server
from tests.demo.test_demo_http import COOKIE, PASSWORD, client, register, unsafe


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("demo-sec")) as url:
        yield url


def login(c: httpx.Client, email: str, password: str = PASSWORD, **extra: object) -> httpx.Response:
    return unsafe(c, "POST", "/api/login", json={"email": email, "password": password, **extra})


def test_password_change_ends_other_sessions_and_rotates_this_one(base: str) -> None:
    """After a password change, other devices are signed out and this device gets a new id."""
    with client(base) as laptop, client(base) as phone:
        user = register(laptop)
        assert login(phone, user["email"]).status_code == 200
        before = laptop.cookies[COOKIE]
        changed = unsafe(
            laptop,
            "POST",
            "/api/password",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        )
        assert changed.status_code == 204, changed.text
        assert laptop.cookies[COOKIE] != before
        assert laptop.get("/api/me").json() == user
        assert phone.get("/api/me").status_code == 401
    with client(base) as stale:
        assert stale.get("/api/me", headers={"cookie": f"{COOKIE}={before}"}).status_code == 401
    with client(base) as again:
        assert login(again, user["email"]).status_code == 401
        assert login(again, user["email"], "a brand new passphrase").status_code == 200


def test_password_change_needs_the_current_password(base: str) -> None:
    with client(base) as c:
        register(c)
        response = unsafe(
            c,
            "POST",
            "/api/password",
            json={"current_password": "not my password", "new_password": "another passphrase"},
        )
        assert response.status_code == 401


def test_session_list_shows_devices_never_tokens(base: str) -> None:
    """GET /api/sessions lists my sessions with metadata and `current`, and no secret."""
    with client(base) as laptop, client(base) as phone:
        user = register(laptop)
        login(phone, user["email"])
        phone_id = phone.cookies[COOKIE].split(".")[0]
        listed = laptop.get("/api/sessions", headers={"user-agent": "LaptopBrowser/1.0"}).json()
        assert len(listed) == 2
        assert sorted(s["current"] for s in listed) == [False, True]
        assert {s["id"] for s in listed} >= {phone_id}
        raw = str(listed)
        for token in (laptop.cookies[COOKIE], phone.cookies[COOKIE]):
            assert token.split(".")[1] not in raw
        assert all({"created_at", "last_seen_at", "user_agent", "ip"} <= set(s) for s in listed)


def test_revoke_one_and_others(base: str) -> None:
    """DELETE /api/sessions/{id} ends that device; revoke-others ends all but mine."""
    with client(base) as a, client(base) as b, client(base) as c:
        user = register(a)
        login(b, user["email"])
        login(c, user["email"])
        b_id = b.cookies[COOKIE].split(".")[0]
        assert unsafe(a, "DELETE", f"/api/sessions/{b_id}").status_code == 204
        assert b.get("/api/me").status_code == 401
        assert c.get("/api/me").status_code == 200
        response = unsafe(a, "POST", "/api/sessions/revoke-others")
        assert response.json() == {"revoked": 1}
        assert c.get("/api/me").status_code == 401
        assert a.get("/api/me").status_code == 200


def test_cannot_revoke_another_users_session(base: str) -> None:
    """Another user's session id gives 404, and that session lives on."""
    with client(base) as mallory, client(base) as victim:
        register(mallory)
        register(victim)
        victim_id = victim.cookies[COOKIE].split(".")[0]
        assert unsafe(mallory, "DELETE", f"/api/sessions/{victim_id}").status_code == 404
        assert unsafe(mallory, "DELETE", "/api/sessions/not-an-id").status_code == 404
        assert victim.get("/api/me").status_code == 200


def test_csrf_token_of_another_session_is_refused(base: str) -> None:
    """A CSRF token is bound to its session: another user's valid token does not work."""
    with client(base) as mallory, client(base) as victim:
        register(mallory)
        register(victim)
        forged = victim.post(
            "/api/cart", json={"item": "x"}, headers={"X-XSRF-TOKEN": mallory.cookies["XSRF-TOKEN"]}
        )
        assert (forged.status_code, forged.json()["error"]) == (403, "csrf")


def test_login_rotates_the_csrf_token(base: str) -> None:
    """Login issues a new CSRF token; the pre-login one stops working."""
    with client(base) as c:
        user = register(c)
        unsafe(c, "POST", "/api/logout")
        c.post("/api/cart", json={"item": "x"})
        before = c.cookies["XSRF-TOKEN"]
        assert login(c, user["email"]).status_code == 200
        assert c.cookies["XSRF-TOKEN"] != before
        stale = c.post("/api/cart", json={"item": "y"}, headers={"X-XSRF-TOKEN": before})
        assert stale.status_code == 403


def test_remember_me_is_a_persistent_server_side_session(base: str) -> None:
    """remember=true gives a cookie with Max-Age; it is listed and revocable like any session."""
    with client(base) as c:
        user = register(c)
        unsafe(c, "POST", "/api/logout")
        response = login(c, user["email"], remember=True)
        cookie = next(
            v for v in response.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")
        )
        assert "Max-Age=2592000" in cookie
        plain = login(c, user["email"])
        cookie = next(v for v in plain.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}="))
        assert "Max-Age" not in cookie


def test_logout_clears_the_session_but_keeps_the_device_cookie(base: str) -> None:
    """Logout clears the session and CSRF cookies by name. It sends no ``Clear-Site-Data``
    (found by an attack: that erased the device cookie too, so the next login of the owner was
    throttled with the attacker's failures)."""
    with client(base) as c:
        register(c)
        assert c.cookies.get("coatcheck_device")  # set at registration
        response = unsafe(c, "POST", "/api/logout")
        assert "clear-site-data" not in response.headers
        cleared = {v.split("=", 1)[0] for v in response.headers.get_list("set-cookie")}
        assert COOKIE in cleared
        assert "coatcheck_device" not in cleared
        assert c.cookies.get("coatcheck_device")


def test_fixation_a_planted_cookie_is_never_adopted(base: str) -> None:
    """An attacker-chosen token the server never issued is refused and replaced."""
    planted = "A" * 24 + "." + "B" * 43
    with client(base) as c:
        response = c.post(
            "/api/cart", json={"item": "x"}, headers={"cookie": f"{COOKIE}={planted}"}
        )
        assert response.status_code == 201
        issued = [v for v in response.headers.get_list("set-cookie") if v.startswith(COOKIE)]
        assert len(issued) == 1
        assert planted not in issued[0]
        assert c.cookies[COOKIE] != planted


def test_throttling_blocks_guessing_with_retry_after(tmp_path: Path) -> None:
    """After the threshold, logins answer 429 with Retry-After, even with the right password,
    and a spoofed X-Forwarded-For does not reset the per-address count."""
    with demo_server(tmp_path) as url:
        with client(url) as c:
            user = register(c)
        statuses = []
        with client(url) as attacker:
            for i in range(8):
                response = attacker.post(
                    "/api/login",
                    json={"email": user["email"], "password": f"guess {i} !!"},
                    headers={"x-forwarded-for": f"10.0.0.{i}"},
                )
                statuses.append(response.status_code)
            assert statuses[:5] == [401] * 5
            assert 429 in statuses[5:]
            blocked = attacker.post(
                "/api/login", json={"email": user["email"], "password": PASSWORD}
            )
            assert blocked.status_code == 429
            assert int(blocked.headers["retry-after"]) >= 1
            assert blocked.json() == {"error": "too_many_attempts"}
        with client(url) as other_account:
            fresh = register(other_account)
            unsafe(other_account, "POST", "/api/logout")
            assert login(other_account, fresh["email"]).status_code == 200


def test_enumeration_same_status_and_body_for_unknown_and_wrong(base: str) -> None:
    """Unknown emails and wrong passwords are indistinguishable by status and body."""
    with client(base) as c:
        user = register(c)
    with client(base) as c:
        a = c.post("/api/login", json={"email": user["email"], "password": "wrong-password-1"})
        b = c.post(
            "/api/login",
            json={"email": f"{uuid.uuid4().hex}@example.com", "password": "wrong-password-1"},
        )
        assert (a.status_code, a.content) == (b.status_code, b.content)


@pytest.mark.parametrize(
    "headers",
    [
        {"cookie": "a=" + "b" * 9000},
        {"x-big": "y" * 16000},
        {"cookie": f"{COOKIE}=\x7f\x7f"},
        {"authorization": "Basic Zm9vOmJhcg=="},
        {"authorization": "Bearer " + "A" * 4100},
        {"origin": "null", "sec-fetch-site": "cross-site"},
    ],
)
def test_oversized_and_odd_headers_never_500(base: str, headers: dict[str, str]) -> None:
    with client(base) as c:
        for method, path in (("GET", "/api/me"), ("GET", "/api/cart"), ("POST", "/api/cart")):
            response = c.request(method, path, headers=headers, json={"item": "x"})
            assert response.status_code < 500, (method, path, response.status_code)
