"""The WSGI middleware end to end around a plain WSGI app (werkzeug's test client, in-process)."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Request, Response

from coatcheck import auth
from coatcheck._core.config import SessionConfig
from coatcheck._core.responses import MAX_FORM_BYTES
from coatcheck._core.session import Session
from coatcheck.errors import HTTPError, PasswordError
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, test_config
from coatcheck.wsgi import SessionMiddleware, request_view

COOKIE = "coatcheck_session"
FORGED = f"{COOKIE}={'A' * 24}.{'B' * 43}"


class CountingSyncStore:
    """A sync store wrapper counting every call by method name (the manager looks methods up by
    name, so ``__getattr__`` sees each one)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.inner, name)

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return method(*args)

        return counted

    @property
    def writes(self) -> int:
        return self.calls["put"] + self.calls["delete"]

    def reset(self) -> None:
        self.calls.clear()


def session_of(request: Request) -> Session:
    session: Session = request.environ["coatcheck.session"]
    return session


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def build(
    config: SessionConfig | None = None, store: Any = None
) -> tuple[SessionMiddleware, CountingSyncStore, FakeClock]:
    counting = CountingSyncStore(store if store is not None else MemoryStore())
    clock = FakeClock()
    manager = SessionManager(counting, config or test_config(), clock=clock)  # type: ignore[arg-type]

    @Request.application  # type: ignore[arg-type]
    def app(request: Request) -> Response:
        s = session_of(request)
        path = request.path
        if path == "/read":
            return json_response({"user": s.user_id, "data": dict(s), "flashes": s.flashes})
        if path == "/write":
            s.update(request.get_json())
            return json_response({"ok": True})
        if path == "/login":
            auth.login(s, "u1")
            return json_response({"ok": True})
        if path == "/logout":
            auth.logout(s)
            return Response(status=204)
        if path == "/flash":
            s.flash("hello")
            return Response(status=204)
        if path == "/me":
            if s.user_id is None:
                raise HTTPError(401, {"error": "unauthenticated"})
            return json_response({"user": s.user_id})
        if path == "/token":
            return json_response({"token": manager.issue_token("u1")})
        if path == "/form":
            return json_response({"form": request.form.to_dict()})
        if path == "/password":
            raise PasswordError("too long")
        if path == "/cached":
            s["seen"] = True
            response = json_response({})
            response.headers["Cache-Control"] = "public, max-age=60"
            response.headers["Vary"] = "Accept-Encoding"
            return response
        if path == "/cached-read":
            response = json_response({"user": s.user_id})
            response.headers["Cache-Control"] = "private, max-age=60"
            response.headers["Vary"] = "accept-encoding, cookie"
            return response
        return Response("plain")

    return SessionMiddleware(app, manager=manager), counting, clock


@pytest.fixture
def env() -> tuple[Client, CountingSyncStore, FakeClock]:
    app, store, clock = build()
    return Client(app), store, clock


def csrf(client: Client) -> dict[str, str]:
    cookie = client.get_cookie("XSRF-TOKEN")
    return {"X-XSRF-TOKEN": cookie.value if cookie is not None else ""}


def cookie_value(client: Client, name: str = COOKIE) -> str:
    cookie = client.get_cookie(name)
    assert cookie is not None
    return cookie.value


def test_anonymous_read_sets_no_cookie_and_stores_nothing(env) -> None:  # type: ignore[no-untyped-def]
    """An empty anonymous session is never stored and gets no cookie."""
    client, store, _ = env
    response = client.get("/read")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert store.calls == {}


def test_read_only_request_makes_no_store_write(env) -> None:  # type: ignore[no-untyped-def]
    """After the session exists, a request that only reads it performs one get and no write."""
    client, store, clock = env
    client.post("/write", json={"a": 1})
    store.reset()
    clock.advance(1)
    response = client.get("/read")
    assert response.json["data"] == {"a": 1}
    assert dict(store.calls) == {"get": 1}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie"
    assert response.headers["Cache-Control"] == "private, no-store"


def test_touch_is_throttled_by_touch_interval(env) -> None:  # type: ignore[no-untyped-def]
    """last_seen_at is written at most once per touch_interval, and steady activity keeps the
    session alive past the idle timeout."""
    client, store, clock = env
    client.post("/write", json={"a": 1})
    writes = 0
    for _ in range(120):  # 120 requests 30 s apart = one hour, twice the idle timeout
        clock.advance(30)
        store.reset()
        assert client.get("/read").json["data"] == {"a": 1}
        writes += store.writes
    assert writes == 60  # touch_interval is 60 s: every other request writes


def test_idle_timeout_expires_session(env) -> None:  # type: ignore[no-untyped-def]
    """A session idle for the idle timeout is gone: fresh anonymous session, cookie cleared."""
    client, _, clock = env
    client.post("/write", json={"a": 1})
    clock.advance(30 * 60)
    response = client.get("/read")
    assert response.json["data"] == {}
    assert f'{COOKIE}=""' in response.headers["Set-Cookie"]


def test_absolute_timeout_expires_an_active_session(env) -> None:  # type: ignore[no-untyped-def]
    """Even a constantly active session ends at the absolute timeout."""
    client, _, clock = env
    client.post("/write", json={"a": 1})
    for _ in range(12 * 60 - 1):
        clock.advance(60)
        assert client.get("/read").json["data"] == {"a": 1}
    clock.advance(60)
    assert client.get("/read").json["data"] == {}


def test_login_regenerates_id_and_keeps_data(env) -> None:  # type: ignore[no-untyped-def]
    """Login issues a new token, deletes the old record and keeps the anonymous data."""
    client, store, _ = env
    client.post("/write", json={"cart": ["apple"]})
    before = cookie_value(client)
    response = client.post("/login", headers=csrf(client))
    assert response.status_code == 200
    after = cookie_value(client)
    assert after != before
    assert client.get("/read").json == {"user": "u1", "data": {"cart": ["apple"]}, "flashes": []}
    assert store.get(before.split(".")[0]) is None


def test_logout_destroys_and_old_cookie_no_longer_works(env) -> None:  # type: ignore[no-untyped-def]
    """After logout, replaying the old cookie yields an anonymous session."""
    client, _, _ = env
    client.post("/write", json={"x": 1})
    client.post("/login", headers=csrf(client))
    stolen = cookie_value(client)
    response = client.post("/logout", headers=csrf(client))
    assert response.status_code == 204
    assert f'{COOKIE}=""' in response.headers["Set-Cookie"]
    replay = Client(client.application, use_cookies=False).get(
        "/me", headers={"Cookie": f"{COOKIE}={stolen}"}
    )
    assert replay.status_code == 401
    assert replay.json == {"error": "unauthenticated"}


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "a" * 24 + "." + "b" * 43,
        "",
        "x" * 5000,
        "\x01\x02",
        "AAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        "💥".encode().decode("latin-1") * 10,  # UTF-8 bytes, as a WSGI server hands them over
    ],
)
def test_bad_cookie_gives_anonymous_session(value: str) -> None:
    """Malformed, forged, oversized and non-ASCII cookies never 500 and never authenticate."""
    app, _, _ = build()
    response = Client(app, use_cookies=False).get("/read", headers={"Cookie": f"{COOKIE}={value}"})
    assert response.status_code == 200
    assert response.json["user"] is None


def test_forged_cookie_is_cleared(env) -> None:  # type: ignore[no-untyped-def]
    """A well-formed cookie the server never issued is cleared in the response."""
    client, _, _ = env
    anonymous = Client(client.application, use_cookies=False)
    response = anonymous.get("/read", headers={"Cookie": FORGED})
    assert response.json["user"] is None
    assert f'{COOKIE}=""' in response.headers["Set-Cookie"]


def test_tampered_secret_is_not_adopted(env) -> None:  # type: ignore[no-untyped-def]
    """A real id with a wrong secret is refused (the secret hash is checked)."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    client.post("/login", headers=csrf(client))
    sid, secret = cookie_value(client).split(".")
    forged = sid + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    response = Client(client.application, use_cookies=False).get(
        "/me", headers={"Cookie": f"{COOKIE}={forged}"}
    )
    assert response.status_code == 401


def test_flash_is_delivered_on_the_next_request_only(env) -> None:  # type: ignore[no-untyped-def]
    """A flashed message is readable on the next request and never again."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    client.post("/flash", headers=csrf(client))
    assert client.get("/read").json["flashes"] == [{"message": "hello", "category": "info"}]
    assert client.get("/read").json["flashes"] == []


def test_bearer_token_works_and_bad_ones_get_rfc6750_errors(env) -> None:  # type: ignore[no-untyped-def]
    """Bearer tokens authenticate; invalid -> 401 invalid_token; malformed header -> 400."""
    client, _, _ = env
    token = client.post("/token").json["token"]
    ok = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert ok.json == {"user": "u1"}
    assert ok.headers["Vary"] == "Authorization"
    bad = client.get("/me", headers={"Authorization": "Bearer " + token[:-1] + "x"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    assert bad.json == {"error": "invalid_token"}
    for header in ("Bearer", "Bearer  two spaces", "Bearer a b", "Bearer \x7f", "Bearer\ttab"):
        malformed = client.get("/me", headers={"Authorization": header})
        assert malformed.status_code == 400, header
        assert malformed.json == {"error": "invalid_request"}
        assert malformed.headers["WWW-Authenticate"] == 'Bearer error="invalid_request"'


def test_bearer_token_is_not_a_cookie(env) -> None:  # type: ignore[no-untyped-def]
    """A bearer token presented as a cookie is not adopted (tokens are bound to a transport)."""
    client, _, _ = env
    token = client.post("/token").json["token"]
    response = Client(client.application, use_cookies=False).get(
        "/me", headers={"Cookie": f"{COOKIE}={token}"}
    )
    assert response.status_code == 401


def test_csrf_token_required_for_cookie_unsafe_requests(env) -> None:  # type: ignore[no-untyped-def]
    """With a stored session, an unsafe request without the CSRF token is 403."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    missing = client.post("/write", json={"a": 2})
    assert missing.status_code == 403
    assert missing.json["error"] == "csrf"
    wrong = client.post("/write", json={"a": 2}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    ok = client.post("/write", json={"a": 2}, headers=csrf(client))
    assert ok.status_code == 200


def test_cross_site_request_refused_before_token(env) -> None:  # type: ignore[no-untyped-def]
    """Sec-Fetch-Site: cross-site or a foreign Origin is refused even with a valid token."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
    ):
        response = client.post("/write", json={"a": 2}, headers={**csrf(client), **headers})
        assert response.status_code == 403, headers
    same = client.post(
        "/write",
        json={"a": 3},
        headers={**csrf(client), "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 200


def test_csrf_form_field_accepted_and_body_still_reaches_the_app(env) -> None:  # type: ignore[no-untyped-def]
    """The token may come in a _csrf urlencoded form field; the app still reads the whole form."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    token = cookie_value(client, "XSRF-TOKEN")
    response = client.post("/form", data={"_csrf": token, "other": "x"})
    assert response.status_code == 200
    assert response.json["form"] == {"_csrf": token, "other": "x"}
    refused = client.post("/form", data={"_csrf": "wrong", "other": "x"})
    assert refused.status_code == 403


def test_form_over_the_size_cap_is_not_read(env) -> None:  # type: ignore[no-untyped-def]
    """A form body over MAX_FORM_BYTES is not searched for the token (403), so nothing large is
    buffered."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    token = cookie_value(client, "XSRF-TOKEN")
    response = client.post("/form", data={"_csrf": token, "pad": "x" * MAX_FORM_BYTES})
    assert response.status_code == 403


def test_form_without_content_length_is_left_to_the_app() -> None:
    """Without a Content-Length the middleware reads nothing: wsgi.input stays the server's."""
    app, _, _ = build()
    stream = io.BytesIO(b"other=x")
    seen: dict[str, Any] = {}

    def inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen["input"] = environ["wsgi.input"]
        start_response("200 OK", [])
        return [b""]

    app.app = inner
    environ = EnvironBuilder(
        "/form", method="POST", content_type="application/x-www-form-urlencoded"
    ).get_environ()
    environ["wsgi.input"] = stream
    environ.pop("CONTENT_LENGTH", None)
    run_wsgi_app(app, environ, buffered=True)
    assert seen["input"] is stream
    assert stream.tell() == 0


def test_static_response_untouched(env) -> None:  # type: ignore[no-untyped-def]
    """A response that never touched the session gets no Vary or Cache-Control from coatcheck."""
    client, _, _ = env
    response = client.get("/static")
    assert "Vary" not in response.headers
    assert "Cache-Control" not in response.headers


def test_vary_merged_and_cache_control_replaced_when_a_cookie_is_set(env) -> None:  # type: ignore[no-untyped-def]
    """The app's Vary is extended, and a response setting a token is no-store whatever the app
    said."""
    client, _, _ = env
    response = client.get("/cached")
    assert response.headers["Vary"] == "Accept-Encoding, Cookie"
    assert response.headers.getlist("Cache-Control") == ["no-store"]


def test_app_cache_policy_kept_on_a_read(env) -> None:  # type: ignore[no-untyped-def]
    """A read that sets no cookie keeps the app's Cache-Control, and Cookie is not added twice
    to Vary."""
    client, _, _ = env
    client.post("/write", json={"a": 1})
    response = client.get("/cached-read")
    assert response.headers["Vary"] == "accept-encoding, cookie"
    assert response.headers["Cache-Control"] == "private, max-age=60"


def test_secure_default_cookie_attributes() -> None:
    """Library defaults: __Host- name, Secure, HttpOnly, SameSite=Lax, Path=/; no-store."""
    app, _, _ = build(SessionConfig(secret="k" * 10 + "abcdefghijklmnopqrstuvwxyz"))
    response = Client(app).post("https://localhost/write", json={"a": 1})
    cookies = response.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("__Host-session="))
    assert session_cookie.endswith("; Path=/; Secure; HttpOnly; SameSite=Lax")
    xsrf = next(c for c in cookies if c.startswith("XSRF-TOKEN="))
    assert "HttpOnly" not in xsrf
    assert response.headers["Cache-Control"] == "no-store"


def test_secure_cookie_over_plain_http_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """Setting a Secure cookie on an http:// request logs one warning per middleware."""
    app, _, _ = build(SessionConfig(secret="Zq3-lR9xT2pV8mK4nB7cW1yH6dF0sJ5g"))
    client = Client(app, use_cookies=False)
    with caplog.at_level(logging.WARNING, logger="coatcheck"):
        client.post("/write", json={"a": 1})
        client.post("/write", json={"a": 1})
    messages = [r.message for r in caplog.records]
    assert len(messages) == 1
    assert "Secure cookie over plain HTTP" in messages[0]


class BrokenGet(MemoryStore):
    def get(self, session_id: str) -> Any:
        raise ConnectionError("down")


class BrokenPut(MemoryStore):
    def put(self, record: Any, expected_version: int) -> bool:
        raise ConnectionError("down")


def test_store_down_gives_503_with_retry_after() -> None:
    """A store that raises when the session is opened gives 503 + Retry-After, never a 500."""
    app, _, _ = build(store=BrokenGet())
    response = Client(app, use_cookies=False).get("/read", headers={"Cookie": FORGED})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == {"error": "store_unavailable"}


def test_failed_commit_replaces_the_response_with_503() -> None:
    """When the commit in start_response fails, the client gets the 503, not the app's 200."""
    app, _, _ = build(store=BrokenPut())
    response = Client(app).post("/write", json={"a": 1})
    assert response.status_code == 503
    assert response.json == {"error": "store_unavailable"}
    assert "Set-Cookie" not in response.headers


def test_http_error_and_password_error_raised_by_the_app_are_rendered(env) -> None:  # type: ignore[no-untyped-def]
    """An HTTPError the app raises is answered with its status and JSON body; a PasswordError
    with 422."""
    client, _, _ = env
    response = client.get("/me")
    assert (response.status_code, response.json) == (401, {"error": "unauthenticated"})
    assert response.headers["Content-Type"] == "application/json"
    refused = client.post("/password")
    assert (refused.status_code, refused.json) == (
        422,
        {"error": "invalid_password", "message": "too long"},
    )


def test_other_exceptions_propagate() -> None:
    """Errors that are not coatcheck's go to the server (or the framework) untouched."""
    app, _, _ = build()

    def inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise KeyError("bug")

    app.app = inner
    with pytest.raises(KeyError):
        Client(app).get("/")


def late_start_app(raise_first: Exception | None = None) -> Callable[..., Iterator[bytes]]:
    """A generator app: start_response is only called once the server iterates the body."""

    def inner(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if raise_first is not None:
            raise raise_first
        environ["coatcheck.session"]["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"one"
        yield b"two"

    return inner


def test_app_starting_late_still_commits_and_gets_headers() -> None:
    """An app that calls start_response from its body iterator is committed at that moment."""
    app, store, _ = build()
    app.app = late_start_app()
    response = Client(app).get("/")
    assert response.get_data() == b"onetwo"
    assert response.headers["Vary"] == "Cookie"
    assert store.calls["put"] == 1
    assert f"{COOKIE}=" in response.headers["Set-Cookie"]


def test_app_starting_late_gets_503_when_the_commit_fails() -> None:
    """A late start_response whose commit fails still turns the response into the 503."""
    app, _, _ = build(store=BrokenPut())
    app.app = late_start_app()
    response = Client(app).get("/")
    assert response.status_code == 503
    assert response.json == {"error": "store_unavailable"}


def test_app_starting_late_can_raise_http_error() -> None:
    """An HTTPError raised by a generator app before start_response is answered as JSON."""
    app, _, _ = build()
    app.app = late_start_app(HTTPError(418, {"error": "teapot"}))
    response = Client(app).get("/")
    assert (response.status_code, response.json) == (418, {"error": "teapot"})


def test_request_view_reads_the_environ() -> None:
    """Headers come from HTTP_* plus CONTENT_TYPE/CONTENT_LENGTH, lower-cased and dashed; method,
    scheme and REMOTE_ADDR are kept; non-str values are skipped."""
    environ = EnvironBuilder(
        "/x",
        base_url="https://example.test",
        method="post",
        headers={"X-Forwarded-For": "1.2.3.4", "Cookie": "a=b"},
        data=b"z=1",
        content_type="application/x-www-form-urlencoded",
        environ_base={"REMOTE_ADDR": "203.0.113.7", "HTTP_X_NUMBER": 7},
    ).get_environ()
    view = request_view(environ)
    assert (view.method, view.scheme, view.client_ip) == ("POST", "https", "203.0.113.7")
    assert view.get("x-forwarded-for") == "1.2.3.4"
    assert view.get("cookie") == "a=b"
    assert view.get("content-type") == "application/x-www-form-urlencoded"
    assert view.get("content-length") == "3"
    assert view.get("host") == "example.test"
    assert view.get("x-number") is None
