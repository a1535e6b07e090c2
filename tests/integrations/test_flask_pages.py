"""Flask for server-rendered sites: current_user and flashes as template globals, an app-wide
login view for page requests (API requests keep their 401), and error pages for coatcheck's
refusals, rendered with the app's templates."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, render_template_string, request

from coatcheck import SessionManager
from coatcheck.auth import login
from coatcheck.errors import ConfigurationError, HTTPError, StoreUnavailableError
from coatcheck.integrations.flask import (
    Coatcheck,
    fresh_login_required,
    get_session,
    login_required,
    require_user,
)
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, csrf_headers, sign_in, test_config

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
USERS = {"1": {"id": "1", "name": "Ann"}}


def error_page(error: HTTPError) -> str:
    # A request context is there: render_template_string and flask.request work.
    return render_template_string(
        "<h1>{{ status }}</h1><p>{{ code }} at {{ path }}</p>",
        status=error.status_code,
        code=error.body["error"],
        path=request.path,
    )


def flask_app(clock: FakeClock | None = None, **options: Any) -> tuple[Flask, SessionManager]:
    app = Flask(__name__)
    manager = SessionManager(MemoryStore(), test_config(), clock=clock or FakeClock())
    Coatcheck(app, manager=manager, user_loader=USERS.get, **options)

    @app.get("/")
    def home() -> Any:
        return render_template_string(
            "{% set user = current_user() %}{{ user.name if user else 'anonymous' }}|"
            "{% for f in flashes() %}{{ f.category }}:{{ f.message }};{% endfor %}"
        )

    @app.post("/flash")
    def flash() -> Any:
        get_session().flash("<b>saved</b>", "success")
        return "", 204

    @app.get("/account")
    @login_required
    def account() -> Any:
        return "account"

    @app.get("/api/me")
    @login_required(redirect=False)
    def api_me() -> Any:
        return "me"

    @app.get("/whoami")
    def whoami() -> Any:
        return require_user()["name"]  # type: ignore[no-any-return]

    @app.post("/settings")
    @fresh_login_required(60)
    def settings() -> Any:
        return "settings"

    @app.post("/form")
    def form() -> Any:
        return "posted"

    @app.get("/throttled")
    def throttled() -> Any:
        raise HTTPError(429, {"error": "too_many_attempts"}, headers=(("retry-after", "9"),))

    @app.get("/outage")
    def outage() -> Any:
        raise StoreUnavailableError("down", retry_after=3)

    return app, manager


def test_current_user_and_flashes_are_template_globals() -> None:
    """Templates call current_user() and flashes() like csrf_input(); a flash item is
    {"message", "category"}, escaped by Jinja, and shown once."""
    app, manager = flask_app()
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "anonymous|"
    sign_in(client, manager, "1")
    client.post("/flash", headers=csrf_headers(client, manager.config))
    assert client.get("/").get_data(as_text=True) == ("Ann|success:&lt;b&gt;saved&lt;/b&gt;;")
    assert client.get("/").get_data(as_text=True) == "Ann|"


def test_login_view_redirects_page_requests_and_answers_apis_401() -> None:
    """With login_view, @login_required sends a browser's page request to the login page with a
    safe next, and answers fetch()/API clients (no Accept: text/html) 401 JSON."""
    app, _ = flask_app(login_view="/sign-in")
    client = app.test_client()
    page = client.get("/account?tab=2", headers=BROWSER)
    assert page.status_code == 303
    location = urlsplit(page.headers["Location"])
    assert (location.path, parse_qs(location.query)["next"]) == ("/sign-in", ["/account?tab=2"])
    api = client.get("/account", headers={"Accept": "application/json"})
    assert (api.status_code, api.json) == (401, {"error": "unauthenticated"})
    assert client.get("/account").status_code == 401  # a test client sends no Accept
    assert client.get("/api/me", headers=BROWSER).status_code == 401  # redirect=False wins
    assert client.get("/whoami", headers=BROWSER).status_code == 303  # require_user too


def test_without_a_login_view_login_required_stays_401() -> None:
    """An app that names no login view keeps @login_required's 401 for every request."""
    app, _ = flask_app()
    assert app.test_client().get("/account", headers=BROWSER).status_code == 401


def test_a_stale_login_on_a_page_goes_to_the_login_page() -> None:
    """With a login view, fresh_login_required sends a page request whose login is too old to
    the login page, and an API request gets reauthentication_required."""
    clock = FakeClock()
    app, manager = flask_app(clock, login_view="/sign-in")
    client = app.test_client()
    sign_in(client, manager, "1")
    clock.advance(61)
    csrf = csrf_headers(client, manager.config)
    assert client.post("/settings", headers={**BROWSER, **csrf}).status_code == 303
    api = client.post("/settings", headers=csrf)
    assert (api.status_code, api.json) == (401, {"error": "reauthentication_required"})


def test_login_view_must_be_a_local_path() -> None:
    """A login view that is not a path on this site fails at start-up."""
    with pytest.raises(ConfigurationError):
        flask_app(login_view="https://evil.example/login")


def test_error_renderer_renders_refusals_made_in_views() -> None:
    """error_renderer gives page requests HTML for 401, 429 and 503 raised in views, with their
    status and headers; API requests keep the JSON."""
    app, _ = flask_app(error_renderer=error_page)
    client = app.test_client()
    page = client.get("/whoami", headers=BROWSER)
    assert (page.status_code, page.get_data(as_text=True)) == (
        401,
        "<h1>401</h1><p>unauthenticated at /whoami</p>",
    )
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    throttled = client.get("/throttled", headers=BROWSER)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "9")
    assert "too_many_attempts" in throttled.get_data(as_text=True)
    outage = client.get("/outage", headers=BROWSER)
    assert (outage.status_code, outage.headers["Retry-After"]) == (503, "3")
    assert client.get("/whoami").json == {"error": "unauthenticated"}


def test_error_renderer_renders_the_middlewares_csrf_refusal() -> None:
    """The CSRF refusal, answered by the WSGI middleware before Flask sees the request, is
    rendered in a request context of the app (render_template_string and request work)."""
    app, manager = flask_app(error_renderer=error_page)
    client = app.test_client()
    sign_in(client, manager, "1")
    refused = client.post("/form", data={"x": "1"}, headers=BROWSER)
    assert (refused.status_code, refused.get_data(as_text=True)) == (
        403,
        "<h1>403</h1><p>csrf at /form</p>",
    )
    api = client.post("/form", data={"x": "1"})
    assert (api.status_code, api.json["error"]) == (403, "csrf")


def test_a_failing_error_page_falls_back_to_json(caplog: pytest.LogCaptureFixture) -> None:
    """A renderer that raises (a template that needs the session, say) is logged, and the JSON
    answer is sent."""

    def broken(error: HTTPError) -> str:
        return render_template_string("{{ current_user() }}")  # no session before CSRF passes

    app, manager = flask_app(error_renderer=broken)
    client = app.test_client()
    sign_in(client, manager, "1")
    with caplog.at_level(logging.ERROR, logger="coatcheck"):
        refused = client.post("/form", data={"x": "1"}, headers=BROWSER)
    assert (refused.status_code, refused.json["error"]) == (403, "csrf")
    assert any("error renderer raised" in r.getMessage() for r in caplog.records)


def test_login_in_a_view_then_a_page() -> None:
    """login() then current_user() in a template of the same request shows the new user."""
    app, _ = flask_app()

    @app.post("/in")
    def sign_in_view() -> Any:
        login(get_session(), "1")
        return render_template_string("{{ current_user().name }}")

    assert app.test_client().post("/in").get_data(as_text=True) == "Ann"
