"""Flask extension: the helpers, error rendering, CSRF in forms, and the sync path on SQLite."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, jsonify, redirect, render_template_string, request, session
from flask.testing import FlaskClient

from coatcheck import SessionAdmin, SessionConfig, SessionManager
from coatcheck.auth import login, logout
from coatcheck.errors import ConfigurationError, HTTPError, PasswordError
from coatcheck.integrations.flask import (
    Coatcheck,
    csrf_input,
    csrf_token,
    current_user,
    fresh_login_required,
    get_session,
    issue_token,
    login_required,
    require_user,
    safe_next,
)
from coatcheck.stores.memory import MemoryStore
from coatcheck.stores.sql import SQLStore
from coatcheck.testing import FakeClock, test_config

USERS = {"1": {"id": "1", "name": "Ann"}}
LOADS: Counter[str] = Counter()


def load_user(user_id: str) -> dict[str, str] | None:
    LOADS[user_id] += 1
    return USERS.get(user_id)


def flask_app(
    clock: FakeClock | None = None,
    config: SessionConfig | None = None,
    store: Any = None,
) -> Flask:
    app = Flask(__name__)
    manager = SessionManager(
        store if store is not None else MemoryStore(),
        config or test_config(),
        clock=clock or FakeClock(),
    )
    Coatcheck(app, manager=manager, user_loader=load_user)

    @app.post("/login/<user_id>")
    def do_login(user_id: str) -> Any:
        before = current_user()
        login(get_session(), user_id)
        return {"before": before, "user": current_user()}

    @app.post("/logout")
    def do_logout() -> Any:
        before = current_user()
        logout(get_session())
        return {"before": before, "user": current_user()}

    @app.get("/me")
    @login_required
    def me() -> Any:
        return jsonify(current_user())

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(require_user())

    @app.get("/account")
    @login_required(redirect=True)
    def account() -> Any:
        return jsonify(current_user())

    @app.get("/docs/<path:name>")
    @login_required(redirect=True)
    def docs(name: str) -> Any:
        return name

    @app.get("/billing")
    @login_required(redirect=True, login_path="/auth/sign-in?x=1")
    def billing() -> Any:
        return "billing"

    @app.post("/danger")
    @fresh_login_required(300)
    def danger() -> Any:
        return jsonify(current_user())

    @app.get("/settings")
    @fresh_login_required(300, redirect=True)
    def settings() -> Any:
        return "settings"

    @app.route("/form", methods=["GET", "POST"])
    def form() -> Any:
        if request.method == "POST":
            get_session()["note"] = request.form["note"]
            return {"note": request.form["note"]}
        return render_template_string("<form method=post>{{ csrf_input() }}</form>")

    @app.get("/csrf")
    def csrf() -> Any:
        return {"token": csrf_token(), "input": str(csrf_input())}

    @app.post("/token")
    @login_required
    def token() -> Any:
        return {"token": issue_token(get_session().user_id or "", label="cli")}

    @app.post("/login")
    def form_login() -> Any:
        if request.form["email"] == "blocked@example.com":
            raise HTTPError(429, {"error": "too_many_attempts"}, headers=(("retry-after", "7"),))
        login(get_session(), "1")
        return redirect(safe_next(request.args.get("next")), 303)

    @app.post("/password")
    def password() -> Any:
        raise PasswordError("too long")

    @app.get("/flask-session")
    def flask_session() -> Any:
        session["visits"] = session.get("visits", 0) + 1
        return {"visits": session["visits"], "coatcheck": dict(get_session())}

    return app


@pytest.fixture
def client() -> FlaskClient:
    return flask_app().test_client()


def xsrf(client: FlaskClient) -> dict[str, str]:
    cookie = client.get_cookie("XSRF-TOKEN")
    return {"X-XSRF-TOKEN": cookie.value if cookie is not None else ""}


def test_login_required_answers_401_json_then_the_user(client: FlaskClient) -> None:
    """@login_required answers 401 JSON anonymously and runs the view after login."""
    anonymous = client.get("/me")
    assert (anonymous.status_code, anonymous.json) == (401, {"error": "unauthenticated"})
    assert "WWW-Authenticate" not in anonymous.headers
    client.post("/login/1")
    assert client.get("/me").json == USERS["1"]


def test_require_user_raises_an_error_rendered_as_json(client: FlaskClient) -> None:
    """require_user() raises an HTTPError that the extension renders as JSON in Flask."""
    response = client.get("/whoami")
    assert (response.status_code, response.json) == (401, {"error": "unauthenticated"})
    assert response.headers["Content-Type"] == "application/json"


def test_password_error_in_a_view_is_422(client: FlaskClient) -> None:
    """A PasswordError raised in a view is answered 422 invalid_password, not 500."""
    response = client.post("/password")
    assert (response.status_code, response.json) == (
        422,
        {"error": "invalid_password", "message": "too long"},
    )


def test_login_route_redirects_to_safe_next_and_errors_are_json(client: FlaskClient) -> None:
    """The documented login view goes back to a local next only; an HTTPError it raises (as
    LoginGuard.check does) is answered as JSON with its headers."""
    first = client.post("/login?next=//evil.example", data={"email": "ann@example.com"})
    assert (first.status_code, first.headers["Location"]) == (303, "/")
    client.post("/logout", headers=xsrf(client))
    to_account = client.post("/login?next=/account", data={"email": "ann@example.com"})
    assert to_account.headers["Location"] == "/account"
    blocked = client.post(
        "/login", data={"email": "blocked@example.com", "_csrf": xsrf(client)["X-XSRF-TOKEN"]}
    )
    assert (blocked.status_code, blocked.json) == (429, {"error": "too_many_attempts"})
    assert blocked.headers["Retry-After"] == "7"


def test_deleted_user_counts_as_anonymous(client: FlaskClient) -> None:
    """A session whose user no longer loads is treated as signed out."""
    client.post("/login/999")
    assert client.get("/me").status_code == 401


def test_current_user_loads_once_per_request_and_sees_login_and_logout(
    client: FlaskClient,
) -> None:
    """current_user() calls the loader once per request and user id, so a login or logout
    earlier in the same request is seen."""
    LOADS.clear()
    assert client.post("/login/1").json == {"before": None, "user": USERS["1"]}
    client.get("/me")  # the decorator and the view both ask
    assert LOADS["1"] == 2  # once at login, once for /me
    signed_out = client.post("/logout", headers=xsrf(client)).json
    assert signed_out == {"before": USERS["1"], "user": None}


@pytest.mark.parametrize(
    ("path", "expected_next"),
    [
        ("/account", "/account"),
        ("/account?tab=2", "/account?tab=2"),
        ("/account?next=//evil.example", "/account?next=//evil.example"),
        ("/account?q=caf%C3%A9", "/account?q=caf%C3%A9"),
        ("/docs/caf%C3%A9", "/docs/caf%C3%A9"),
        ("/docs/a%3Fb%23c%25d", "/docs/a%3Fb%23c%25d"),
    ],
)
def test_pages_redirect_to_login_with_a_safe_next(
    client: FlaskClient, path: str, expected_next: str
) -> None:
    """An anonymous page request is redirected (303) to /login?next=<this local path>, with the
    path's escaped characters kept escaped."""
    response = client.get(path)
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("", "", "/login")
    assert parse_qs(location.query)["next"] == [expected_next]


@pytest.mark.parametrize(
    ("script_name", "expected_next"),
    [("/shop", "/shop/billing"), ("//evil.example", "/")],
)
def test_redirect_keeps_the_app_prefix_and_a_custom_login_path(
    script_name: str, expected_next: str
) -> None:
    """Under a SCRIPT_NAME prefix next is the full browser path (or / when that would leave the
    site); login_path's own query is kept."""
    client = flask_app().test_client()
    response = client.get("/billing", environ_overrides={"SCRIPT_NAME": script_name})
    location = urlsplit(response.headers["Location"])
    assert location.path == "/auth/sign-in"
    assert parse_qs(location.query) == {"x": ["1"], "next": [expected_next]}


def test_fresh_login_required_refuses_an_old_login() -> None:
    """fresh_login_required accepts a login within max_age and refuses an older one with 401."""
    clock = FakeClock()
    client = flask_app(clock).test_client()
    assert client.post("/danger").json == {"error": "unauthenticated"}
    client.post("/login/1")
    assert client.post("/danger", headers=xsrf(client)).status_code == 200
    for _ in range(6):  # stay active (idle timeout) while the login gets old
        clock.advance(59)
        client.get("/me")
    stale = client.post("/danger", headers=xsrf(client))
    assert (stale.status_code, stale.json) == (401, {"error": "reauthentication_required"})
    page = client.get("/settings")
    assert page.status_code == 303
    assert parse_qs(urlsplit(page.headers["Location"]).query)["next"] == ["/settings"]


def test_fresh_login_required_needs_its_argument() -> None:
    """Using @fresh_login_required without parentheses fails at import time, not per request."""
    with pytest.raises(TypeError):
        fresh_login_required(lambda: "x")  # type: ignore[arg-type]


def test_csrf_input_in_a_template_and_the_form_post(client: FlaskClient) -> None:
    """The csrf_input() Jinja global renders the token unescaped as markup, and posting the form
    with it passes CSRF while the view still reads request.form."""
    client.post("/login/1")
    token = xsrf(client)["X-XSRF-TOKEN"]
    html = client.get("/form").get_data(as_text=True)
    assert html == f'<form method=post><input type="hidden" name="_csrf" value="{token}"></form>'
    posted = client.post("/form", data={"_csrf": token, "note": "hi"})
    assert (posted.status_code, posted.json) == (200, {"note": "hi"})
    refused = client.post("/form", data={"note": "hi"})
    assert (refused.status_code, refused.json["error"]) == (403, "csrf")


def test_csrf_helpers_outside_a_template(client: FlaskClient) -> None:
    """csrf_token() is the session's token (the XSRF-TOKEN cookie) and csrf_input() carries it."""
    client.post("/login/1")
    body = client.get("/csrf").json
    assert body["token"] == xsrf(client)["X-XSRF-TOKEN"]
    assert body["input"] == f'<input type="hidden" name="_csrf" value="{body["token"]}">'


def test_bearer_tokens_from_issue_token(client: FlaskClient) -> None:
    """issue_token() gives API clients a bearer token; a bad one, or one whose user is gone, gets
    401 with a Bearer challenge."""
    client.post("/login/1")
    token = client.post("/token", headers=xsrf(client)).json["token"]
    api = client.application.test_client(use_cookies=False)
    ok = api.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert ok.json == USERS["1"]
    assert ok.headers["Vary"] == "Authorization"
    bad = api.get("/me", headers={"Authorization": f"Bearer {token[:-1]}x"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    orphan = client.application.extensions["coatcheck"].manager.issue_token("999")
    gone = api.get("/me", headers={"Authorization": f"Bearer {orphan}"})
    assert (gone.status_code, gone.json) == (401, {"error": "unauthenticated"})
    assert gone.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_flask_session_is_left_alone() -> None:
    """Flask's own signed-cookie session keeps working beside coatcheck's, and they do not mix."""
    app = flask_app()
    app.secret_key = "flask-own-secret-for-this-test-only"
    app.config["SESSION_COOKIE_NAME"] = "flask_session"
    client = app.test_client()
    for visit in (1, 2, 3):
        assert client.get("/flask-session").json == {"visits": visit, "coatcheck": {}}
    assert client.get_cookie("coatcheck_session") is None  # coatcheck stored nothing: no cookie


def test_cookie_name_clash_with_flask_session_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """When Flask's session cookie has coatcheck's cookie name, init_app logs a warning."""
    app = Flask(__name__)
    app.config["SESSION_COOKIE_NAME"] = "coatcheck_session"
    manager = SessionManager(MemoryStore(), test_config())
    with caplog.at_level(logging.WARNING, logger="coatcheck"):
        Coatcheck(app, manager=manager)
    assert "SESSION_COOKIE_NAME" in caplog.text


def test_default_names_do_not_clash() -> None:
    """coatcheck's plain-HTTP cookie name differs from Flask's default session cookie name."""
    app = Flask(__name__)
    assert app.config["SESSION_COOKIE_NAME"] != test_config().cookie.effective_name


def test_init_app_twice_is_a_setup_error() -> None:
    """Wrapping an app twice would open two sessions per request; it fails at start-up."""
    app = Flask(__name__)
    extension = Coatcheck(manager=SessionManager(MemoryStore(), test_config()))
    extension.init_app(app)
    with pytest.raises(ConfigurationError):
        extension.init_app(app)


def test_helpers_without_the_extension_are_a_setup_error() -> None:
    """get_session() outside an app set up with Coatcheck says so instead of misbehaving."""
    app = Flask(__name__)
    with app.test_request_context("/"), pytest.raises(ConfigurationError):
        get_session()


def test_sync_path_end_to_end_on_sqlite(tmp_path: Path) -> None:
    """On a real SQLite file: login, read, admin listing, logout; the replayed cookie is dead."""
    store = SQLStore.from_url("sqlite:///" + str(tmp_path / "sessions.db"))
    try:
        app = flask_app(store=store)
        manager: SessionManager = app.extensions["coatcheck"].manager
        client = app.test_client()
        client.post("/login/1")
        assert client.get("/me").json == USERS["1"]
        devices = SessionAdmin(manager).sessions_of("1")
        assert len(devices) == 1
        stolen = client.get_cookie("coatcheck_session")
        assert stolen is not None
        client.post("/logout", headers=xsrf(client))
        assert SessionAdmin(manager).sessions_of("1") == []
        replay = app.test_client(use_cookies=False).get(
            "/me", headers={"Cookie": f"coatcheck_session={stolen.value}"}
        )
        assert replay.status_code == 401
    finally:
        store.close()
