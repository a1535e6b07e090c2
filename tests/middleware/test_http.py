"""What the ASGI and the WSGI middleware both promise over HTTP: one suite, run on both stacks
(``tests/middleware/stacks.py``). Stack-specific behaviour is tested in ``tests/asgi/`` and
``tests/wsgi/``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from coatcheck._core.config import SessionConfig
from coatcheck._core.responses import MAX_FORM_BYTES
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from tests.middleware.stacks import COOKIE, STACKS, Stack, stack

FORGED = f"{COOKIE}={'A' * 24}.{'B' * 43}"
SECURE_CONFIG = SessionConfig(secret="k" * 10 + "abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(params=STACKS)
def env(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with stack(request.param) as built:
        yield built


def test_anonymous_read_sets_no_cookie_and_stores_nothing(env: Stack) -> None:
    """An empty anonymous session is never stored and gets no cookie."""
    response = env.client.get("/read")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert env.store.calls == {}


def test_read_only_request_makes_no_store_write(env: Stack) -> None:
    """After the session exists, a request that only reads it performs one get and no write,
    and the response is marked private and varying on the cookie."""
    env.client.post("/write", json={"a": 1})
    env.store.reset()
    env.clock.advance(1)
    response = env.client.get("/read")
    assert response.json()["data"] == {"a": 1}
    assert dict(env.store.calls) == {"get": 1}
    assert "set-cookie" not in response.headers
    assert response.headers["vary"] == "Cookie"
    assert response.headers["cache-control"] == "private, no-store"


def test_touch_is_throttled_by_touch_interval(env: Stack) -> None:
    """last_seen_at is written at most once per touch_interval, and steady activity keeps the
    session alive past the idle timeout."""
    env.client.post("/write", json={"a": 1})
    writes = 0
    for _ in range(120):  # 120 requests 30 s apart = one hour, twice the idle timeout
        env.clock.advance(30)
        env.store.reset()
        assert env.client.get("/read").json()["data"] == {"a": 1}
        writes += env.store.writes
    assert writes == 60  # touch_interval is 60 s: every other request writes


def test_idle_timeout_expires_session(env: Stack) -> None:
    """A session idle for the idle timeout is gone: fresh anonymous session, cookie cleared."""
    env.client.post("/write", json={"a": 1})
    env.clock.advance(30 * 60)
    response = env.client.get("/read")
    assert response.json()["data"] == {}
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


def test_absolute_timeout_expires_an_active_session(env: Stack) -> None:
    """Even a constantly active session ends at the absolute timeout."""
    env.client.post("/write", json={"a": 1})
    for _ in range(12 * 60 - 1):
        env.clock.advance(60)
        assert env.client.get("/read").json()["data"] == {"a": 1}
    env.clock.advance(60)
    assert env.client.get("/read").json()["data"] == {}


def test_login_regenerates_id_and_keeps_data(env: Stack) -> None:
    """Login issues a new token, deletes the old record and keeps the anonymous data."""
    env.client.post("/write", json={"cart": ["apple"]})
    before = env.cookie()
    response = env.client.post("/login", headers=env.csrf())
    assert response.status_code == 200
    after = env.cookie()
    assert after != before
    assert env.client.get("/read").json() == {
        "user": "u1",
        "data": {"cart": ["apple"]},
        "flashes": [],
    }
    assert env.records.get(before.split(".")[0]) is None


def test_logout_destroys_and_old_cookie_no_longer_works(env: Stack) -> None:
    """After logout, replaying the old cookie yields an anonymous session."""
    env.client.post("/write", json={"x": 1})
    env.client.post("/login", headers=env.csrf())
    stolen = env.cookie()
    response = env.client.post("/logout", headers=env.csrf())
    assert response.status_code == 204
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    replay = env.fresh().get("/me", headers={"cookie": f"{COOKIE}={stolen}"})
    assert replay.status_code == 401
    assert replay.json() == {"error": "unauthenticated"}


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "a" * 24 + "." + "b" * 43,
        "",
        "x" * 5000,
        "\x00\x01",
        "\x01\x02",
        "AAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        "💥" * 10,  # sent as its UTF-8 bytes
    ],
)
def test_bad_cookie_gives_anonymous_session(env: Stack, value: str) -> None:
    """Malformed, forged, oversized and non-ASCII cookies never 500 and never authenticate."""
    response = env.fresh().get("/read", headers={"cookie": f"{COOKIE}={value}".encode()})
    assert response.status_code == 200
    assert response.json()["user"] is None


def test_cookie_of_a_gone_session_opens_nothing_and_is_left_alone(env: Stack) -> None:
    """A well-formed cookie naming no stored session (never issued, or ended) opens nothing,
    and is not cleared: it may be the cookie a login just replaced, on a request whose answer
    arrives after the login's, and clearing it would sign the user out of the new session."""
    response = env.fresh().get("/read", headers={"cookie": FORGED})
    assert response.json()["user"] is None
    assert "set-cookie" not in response.headers


def test_forged_secret_for_a_real_session_is_cleared(env: Stack) -> None:
    """A real session id with a wrong secret is refused and the cookie cleared."""
    env.client.post("/write", json={"a": 1})
    sid, secret = env.cookie().split(".")
    forged = sid + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    response = env.fresh().get("/read", headers={"cookie": f"{COOKIE}={forged}"})
    assert response.json()["user"] is None
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


def test_tampered_secret_is_not_adopted(env: Stack) -> None:
    """A real id with a wrong secret is refused (the secret hash is checked)."""
    env.client.post("/write", json={"a": 1})
    env.client.post("/login", headers=env.csrf())
    sid, secret = env.cookie().split(".")
    forged = sid + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    response = env.fresh().get("/me", headers={"cookie": f"{COOKIE}={forged}"})
    assert response.status_code == 401


def test_flash_is_delivered_on_the_next_request_only(env: Stack) -> None:
    """A flashed message is readable on the next request and never again."""
    env.client.post("/write", json={"a": 1})
    env.client.post("/flash", headers=env.csrf())
    first = env.client.get("/read")
    assert first.json()["flashes"] == [{"message": "hello", "category": "info"}]
    assert env.client.get("/read").json()["flashes"] == []


def test_bearer_token_works_and_bad_ones_get_rfc6750_errors(env: Stack) -> None:
    """Bearer tokens authenticate; invalid -> 401 invalid_token; malformed header -> 400."""
    token = env.client.post("/token").json()["token"]
    ok = env.client.get("/me", headers={"authorization": f"Bearer {token}"})
    assert ok.json() == {"user": "u1"}
    assert ok.headers["vary"] == "Authorization"
    bad = env.client.get("/me", headers={"authorization": "Bearer " + token[:-1] + "x"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.json() == {"error": "invalid_token"}
    for header in ("Bearer", "Bearer  two spaces", "Bearer a b", "Bearer \x7f", "Bearer\ttab"):
        malformed = env.client.get("/me", headers={"authorization": header})
        assert malformed.status_code == 400, header
        assert malformed.json() == {"error": "invalid_request"}
        assert malformed.headers["www-authenticate"] == 'Bearer error="invalid_request"'


def test_bearer_token_is_not_a_cookie(env: Stack) -> None:
    """A bearer token presented as a cookie is not adopted (tokens are bound to a transport)."""
    token = env.client.post("/token").json()["token"]
    response = env.fresh().get("/me", headers={"cookie": f"{COOKIE}={token}"})
    assert response.status_code == 401


def test_csrf_token_required_for_cookie_unsafe_requests(env: Stack) -> None:
    """With a stored session, an unsafe request without the CSRF token is 403."""
    env.client.post("/write", json={"a": 1})
    missing = env.client.post("/write", json={"a": 2})
    assert missing.status_code == 403
    assert missing.json()["error"] == "csrf"
    wrong = env.client.post("/write", json={"a": 2}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    ok = env.client.post("/write", json={"a": 2}, headers=env.csrf())
    assert ok.status_code == 200


def test_cross_site_request_refused_before_token(env: Stack) -> None:
    """Sec-Fetch-Site: cross-site or a foreign Origin is refused even with a valid token."""
    env.client.post("/write", json={"a": 1})
    for headers in (
        {"sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ):
        response = env.client.post("/write", json={"a": 2}, headers={**env.csrf(), **headers})
        assert response.status_code == 403, headers
    same = env.client.post(
        "/write",
        json={"a": 3},
        headers={**env.csrf(), "origin": "http://testserver", "sec-fetch-site": "same-origin"},
    )
    assert same.status_code == 200


def test_csrf_form_field_accepted_and_body_still_reaches_the_app(env: Stack) -> None:
    """The token may come in a _csrf urlencoded form field; the app still reads the whole form."""
    env.client.post("/write", json={"a": 1})
    token = env.cookie("XSRF-TOKEN")
    response = env.client.post("/form", data={"_csrf": token, "other": "x"})
    assert response.status_code == 200
    assert response.json()["form"] == {"_csrf": token, "other": "x"}
    refused = env.client.post("/form", data={"_csrf": "wrong", "other": "x"})
    assert refused.status_code == 403


def test_form_over_the_size_cap_is_not_read(env: Stack) -> None:
    """A form body over MAX_FORM_BYTES is not searched for the token (403), so nothing large is
    buffered."""
    env.client.post("/write", json={"a": 1})
    token = env.cookie("XSRF-TOKEN")
    response = env.client.post("/form", data={"_csrf": token, "pad": "x" * MAX_FORM_BYTES})
    assert response.status_code == 403


def test_static_response_untouched(env: Stack) -> None:
    """A response that never touched the session gets no Vary or Cache-Control from coatcheck."""
    response = env.client.get("/static")
    assert "vary" not in response.headers
    assert "cache-control" not in response.headers


def test_vary_merged_and_cache_control_replaced_when_a_cookie_is_set(env: Stack) -> None:
    """The app's Vary is extended, and a response setting a token is no-store whatever the app
    said."""
    response = env.client.get("/cached")
    assert response.headers["vary"] == "Accept-Encoding, Cookie"
    assert response.headers.get_list("cache-control") == ["no-store"]


def test_app_cache_policy_kept_on_a_read(env: Stack) -> None:
    """A read that sets no cookie keeps the app's Cache-Control, and Cookie is not added twice
    to Vary."""
    env.client.post("/write", json={"a": 1})
    response = env.client.get("/cached-read")
    assert response.headers["vary"] == "accept-encoding, cookie"
    assert response.headers["cache-control"] == "private, max-age=60"


@pytest.mark.parametrize("name", STACKS)
def test_secure_default_cookie_attributes(name: str) -> None:
    """Library defaults: __Host- name, Secure, HttpOnly, SameSite=Lax, Path=/; no-store."""
    with stack(name, SECURE_CONFIG, base_url="https://testserver") as env:
        response = env.client.post("/write", json={"a": 1})
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("__Host-session="))
    assert session_cookie.endswith("; Path=/; Secure; HttpOnly; SameSite=Lax")
    xsrf = next(c for c in cookies if c.startswith("XSRF-TOKEN="))
    assert "HttpOnly" not in xsrf
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("name", STACKS)
def test_secure_cookie_over_plain_http_warns_once(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Setting a Secure cookie on an http:// request logs one warning per middleware."""
    with (
        stack(name, SessionConfig(secret="Zq3-lR9xT2pV8mK4nB7cW1yH6dF0sJ5g")) as env,
        caplog.at_level(logging.WARNING, logger="coatcheck"),
    ):
        env.fresh().post("/write", json={"a": 1})
        env.fresh().post("/write", json={"a": 1})
    messages = [r.message for r in caplog.records]
    assert len(messages) == 1
    assert "Secure cookie over plain HTTP" in messages[0]


class BrokenGet(MemoryStore):
    def get(self, session_id: str) -> Any:
        raise ConnectionError("down")


class BrokenPut(MemoryStore):
    def put(self, record: Any, expected_version: int) -> bool:
        raise ConnectionError("down")


def broken(name: str, sync: MemoryStore) -> dict[str, Any]:
    """The store arguments of :func:`stack` for a broken memory store on stack ``name``."""
    return {"sync_store": sync} if name == "wsgi" else {"async_store": AsyncMemoryStore(sync)}


@pytest.mark.parametrize("name", STACKS)
def test_store_down_gives_503_with_retry_after(name: str) -> None:
    """A store that raises when the session is opened gives 503 + Retry-After, never a 500."""
    with stack(name, **broken(name, BrokenGet())) as env:
        response = env.client.get("/read", headers={"cookie": FORGED})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"error": "store_unavailable"}


@pytest.mark.parametrize("name", STACKS)
def test_failed_commit_replaces_the_response_with_503(name: str) -> None:
    """When the commit at the response's start fails, the client gets the 503, not the app's
    200."""
    with stack(name, **broken(name, BrokenPut())) as env:
        response = env.client.post("/write", json={"a": 1})
    assert response.status_code == 503
    assert response.json() == {"error": "store_unavailable"}
    assert "set-cookie" not in response.headers


def test_http_error_and_password_error_raised_by_the_app_are_rendered(env: Stack) -> None:
    """An HTTPError the app raises is answered with its status and JSON body; a PasswordError
    with 422."""
    response = env.client.get("/me")
    assert (response.status_code, response.json()) == (401, {"error": "unauthenticated"})
    assert response.headers["content-type"] == "application/json"
    refused = env.client.post("/password")
    assert (refused.status_code, refused.json()) == (
        422,
        {"error": "invalid_password", "message": "too long"},
    )


def test_other_exceptions_propagate(env: Stack) -> None:
    """Errors that are not coatcheck's go to the server (or the framework) untouched."""
    with pytest.raises(KeyError):
        env.client.get("/boom")
