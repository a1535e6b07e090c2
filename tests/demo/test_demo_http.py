"""The demo driven over real HTTP, as a new user (or an attacker) would: ``coatcheck demo`` runs
as its own process on the embedded default store (a SQLite file)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.demo.server import demo_server

COOKIE = "coatcheck_session"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("demo")) as url:
        yield url


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=10)


def unsafe(c: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    """Send an unsafe request the way a browser page does: with the XSRF-TOKEN echoed."""
    headers = {"X-XSRF-TOKEN": c.cookies.get("XSRF-TOKEN", "")}
    return c.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]


def register(c: httpx.Client, email: str | None = None, name: str = "Ann") -> dict[str, str]:
    email = email or f"{uuid.uuid4().hex[:10]}@example.com"
    response = unsafe(
        c, "POST", "/api/register", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def test_register_me_logout_and_replay(base: str) -> None:
    """Register logs in; /api/me answers the user; logout clears it; the old cookie is dead."""
    with client(base) as c:
        user = register(c)
        assert set(user) == {"id", "email", "name"}
        assert c.get("/api/me").json() == user
        old = c.cookies[COOKIE]
        response = unsafe(c, "POST", "/api/logout")
        assert response.status_code == 204
        assert c.get("/api/me").status_code == 401
        assert c.get("/api/me").json() == {"error": "unauthenticated"}
    with client(base) as replay:
        response = replay.get("/api/me", headers={"cookie": f"{COOKIE}={old}"})
        assert response.status_code == 401


def test_delete_logout_also_works(base: str) -> None:
    """DELETE /api/logout ends the session like POST does."""
    with client(base) as c:
        register(c)
        assert unsafe(c, "DELETE", "/api/logout").status_code == 204
        assert c.get("/api/me").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@example.com"},
        {"email": "a@example.com", "password": ""},
        {"email": "a@example.com", "password": "short"},
        {"email": 5, "password": PASSWORD},
        {"email": "a@example.com", "password": "x" * 5000},
        [1, 2],
    ],
)
def test_invalid_registration_is_422(base: str, body: object) -> None:
    """Invalid input is refused with 422 and a message, never a 500."""
    with client(base) as c:
        response = c.post("/api/register", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_input"


def test_malformed_json_is_422(base: str) -> None:
    with client(base) as c:
        response = c.post(
            "/api/register", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422


def test_duplicate_email_is_409(base: str) -> None:
    with client(base) as c:
        user = register(c)
    with client(base) as c:
        response = c.post("/api/register", json={"email": user["email"], "password": PASSWORD})
        assert response.status_code == 409


def test_wrong_password_and_unknown_email_look_the_same(base: str) -> None:
    """Both failures answer the same 401 body, so the API does not reveal which emails exist."""
    with client(base) as c:
        user = register(c)
    with client(base) as c:
        wrong = c.post("/api/login", json={"email": user["email"], "password": "wrong password!"})
        unknown = c.post(
            "/api/login", json={"email": "nobody-" + user["email"], "password": "wrong password!"}
        )
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_credentials"})
    assert (unknown.status_code, unknown.json()) == (401, {"error": "invalid_credentials"})


def test_cart_survives_login_and_id_is_regenerated(base: str) -> None:
    """An anonymous cart is kept through login, and login issues a new session id."""
    with client(base) as c:
        user = register(c)
        unsafe(c, "POST", "/api/logout")
    with client(base) as c:
        assert c.post("/api/cart", json={"item": "apple"}).status_code == 201
        assert unsafe(c, "POST", "/api/cart", json={"item": "pear"}).status_code == 201
        anonymous = c.cookies[COOKIE]
        response = unsafe(
            c, "POST", "/api/login", json={"email": user["email"], "password": PASSWORD}
        )
        assert response.status_code == 200
        assert response.json() == user
        assert c.cookies[COOKIE] != anonymous
        assert c.get("/api/cart").json() == {"items": ["apple", "pear"]}
    with client(base) as fixated:
        assert (
            fixated.get("/api/me", headers={"cookie": f"{COOKIE}={anonymous}"}).status_code == 401
        )


def test_bearer_token_flow(base: str) -> None:
    """POST /api/token gives a bearer token that works everywhere; DELETE revokes it."""
    with client(base) as c:
        user = register(c)
    with client(base) as api:
        issued = api.post("/api/token", json={"email": user["email"], "password": PASSWORD})
        assert issued.status_code == 201
        assert issued.json()["token_type"] == "bearer"
        auth = {"authorization": f"Bearer {issued.json()['token']}"}
        assert api.get("/api/me", headers=auth).json() == user
        assert api.post("/api/cart", json={"item": "book"}, headers=auth).status_code == 201
        assert api.get("/api/cart", headers=auth).json() == {"items": ["book"]}
        assert "set-cookie" not in api.get("/api/me", headers=auth).headers
        assert api.delete("/api/token", headers=auth).status_code == 204
        revoked = api.get("/api/me", headers=auth)
        assert revoked.status_code == 401
        assert 'error="invalid_token"' in revoked.headers["www-authenticate"]


@pytest.mark.parametrize(
    "cookie",
    [
        f"{COOKIE}=garbage",
        f"{COOKIE}=" + "A" * 24 + "." + "B" * 43,
        f"{COOKIE}=" + "x" * 4000,
        f"{COOKIE}=%00%01",
        f"__%48ost-session=x; {COOKIE}=..",
        f"{COOKIE}=a; {COOKIE}=b; {COOKIE}=c",
        "=; ;;; =x",
    ],
)
def test_tampered_cookies_are_anonymous_never_500(base: str, cookie: str) -> None:
    """Forged, oversized and malformed cookies give an anonymous session, never a 500."""
    with client(base) as c:
        response = c.get("/api/me", headers={"cookie": cookie})
        assert response.status_code == 401
        cart = c.get("/api/cart", headers={"cookie": cookie})
        assert cart.status_code == 200


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("Bearer", 400),
        ("Bearer  x", 400),
        ("Bearer a b", 400),
        ("Bearer " + "A" * 24 + "." + "B" * 43, 401),
        ("Bearer garbage", 401),
        ("Bearer " + "x" * 5000, 400),
        ("bearer " + "A" * 24 + "." + "B" * 43, 401),
    ],
)
def test_bad_authorization_headers(base: str, header: str, status: int) -> None:
    """Malformed Authorization → 400 invalid_request; unknown token → 401 invalid_token."""
    with client(base) as c:
        response = c.get("/api/me", headers={"authorization": header})
        assert response.status_code == status
        assert "www-authenticate" in response.headers


def test_csrf_is_enforced_for_cookie_sessions(base: str) -> None:
    """A cookie-authenticated POST without the XSRF token, or from another site, is 403."""
    with client(base) as c:
        register(c)
        assert c.post("/api/cart", json={"item": "x"}).status_code == 403
        cross = c.post(
            "/api/cart",
            json={"item": "x"},
            headers={"X-XSRF-TOKEN": c.cookies["XSRF-TOKEN"], "origin": "https://evil.example"},
        )
        assert (cross.status_code, cross.json()["error"]) == (403, "csrf")
        assert unsafe(c, "POST", "/api/cart", json={"item": "x"}).status_code == 201


def test_idle_and_absolute_timeouts(tmp_path: Path) -> None:
    """With short timeouts: idle ends an unused session; absolute ends even an active one."""
    with demo_server(tmp_path, "--idle-timeout", "1.5", "--absolute-timeout", "4") as url:
        with client(url) as idle:
            register(idle)
            time.sleep(1.7)
            assert idle.get("/api/me").status_code == 401
        with client(url) as active:
            register(active)
            started = time.monotonic()
            while time.monotonic() - started < 3.5:
                assert active.get("/api/me").status_code == 200
                time.sleep(0.4)
            time.sleep(max(0.0, 4.2 - (time.monotonic() - started)))
            assert active.get("/api/me").status_code == 401


def test_demo_on_a_store_url_with_store_options(tmp_path: Path) -> None:
    """`coatcheck demo --store "sqlite:///...?table_prefix=app_"` serves: the store's own options
    stay with the session store and never reach the users table's driver."""
    url = f"sqlite:///{tmp_path / 'shared.db'}?table_prefix=app_&statement_timeout=3"
    with demo_server(tmp_path, store=url) as base, client(base) as c:
        user = register(c)
        assert c.get("/api/me").json() == user
