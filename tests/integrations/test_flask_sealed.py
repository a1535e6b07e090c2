"""Flask (WSGI, the sync manager) on sealed cookies: the same helpers as on a server store, the
revocation record on a real SQLite file, adversarial cookies, and the 413 for an oversized
session, also from a plain WSGI app that calls start_response late."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import jsonify
from flask.testing import FlaskClient
from werkzeug.test import Client

from coatcheck.manager import SessionManager
from coatcheck.stores.sealed import SealedStore
from coatcheck.stores.sql import SQLStore
from coatcheck.testing import FakeClock, test_config
from coatcheck.wsgi import SessionMiddleware
from tests.integrations.test_flask import USERS, flask_app, xsrf

COOKIE = "coatcheck_session"


@pytest.fixture(params=["sealed", "sealed-revocations"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SealedStore]:
    if request.param == "sealed":
        yield SealedStore()
        return
    sealed = SealedStore(SQLStore.from_url(f"sqlite:///{tmp_path / 'revocations.db'}"))
    yield sealed
    sealed.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(store: SealedStore, clock: FakeClock) -> FlaskClient:
    app = flask_app(clock=clock, store=store)

    def grow() -> Any:
        from coatcheck.integrations.flask import get_session

        get_session()["blob"] = "x" * 5000
        return jsonify({"ok": True})

    app.add_url_rule("/grow", "grow", grow, methods=["POST"])
    return app.test_client()


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def test_login_required_and_current_user(client: FlaskClient) -> None:
    """@login_required answers 401 anonymously and the user after a sealed login."""
    assert client.get("/me").status_code == 401
    client.post("/login/1")
    assert client.get("/me").json == USERS["1"]


def test_logout_and_replay(client: FlaskClient, store: SealedStore) -> None:
    """Logout clears the cookie; a replayed copy is refused with a revocation record and lives
    on without one (until it expires)."""
    client.post("/login/1")
    stolen = session_cookie(client)
    assert client.post("/logout", headers=xsrf(client)).json == {"before": USERS["1"], "user": None}
    assert client.get("/me").status_code == 401
    client.set_cookie(COOKIE, stolen)
    expected = 401 if store.revocations is not None else 200
    assert client.get("/me").status_code == expected


def test_fresh_login_and_csrf_form(client: FlaskClient, clock: FakeClock) -> None:
    """fresh_login_required reads the sealed auth time; the CSRF form field works."""
    client.post("/login/1")
    assert client.post("/danger", headers=xsrf(client)).status_code == 200
    clock.advance(301)
    refused = client.post("/danger", headers=xsrf(client))
    assert (refused.status_code, refused.json) == (401, {"error": "reauthentication_required"})
    token = xsrf(client)["X-XSRF-TOKEN"]
    assert client.post("/form", data={"note": "hi", "_csrf": token}).json == {"note": "hi"}
    assert client.post("/form", data={"note": "hi"}).status_code == 403


def test_bearer_tokens_are_refused_clearly(client: FlaskClient) -> None:
    """issue_token answers 501 not_supported; a presented bearer token is 401."""
    client.post("/login/1")
    issued = client.post("/token", headers=xsrf(client))
    assert (issued.status_code, issued.json["error"]) == (501, "not_supported")
    presented = client.get("/me", headers={"Authorization": "Bearer abc"})
    assert presented.status_code == 401


@pytest.mark.parametrize("cut", [1, 4, 30])
def test_tampered_cookies_are_anonymous(client: FlaskClient, cut: int) -> None:
    """Truncated, flipped and extended seals are anonymous (401 on /me), never 500."""
    client.post("/login/1")
    value = session_cookie(client)
    flipped = value[:cut] + ("A" if value[cut] != "A" else "B") + value[cut + 1 :]
    for forged in (value[:-cut], flipped, value + "A" * cut, "garbage", "%00"):
        client.set_cookie(COOKIE, forged)
        assert client.get("/me").status_code == 401, forged


def test_oversized_session_is_413_and_keeps_the_cookie(client: FlaskClient) -> None:
    """A write too large for one cookie answers 413 and the previous session stays."""
    client.post("/login/1")
    before = session_cookie(client)
    response = client.post("/grow", headers=xsrf(client))
    assert response.status_code == 413
    assert response.json is not None
    assert response.json["error"] == "session_too_large"
    assert session_cookie(client) == before
    assert client.get("/me").status_code == 200


def test_plain_wsgi_app_with_late_start_response_gets_413() -> None:
    """A generator WSGI app that calls start_response while iterating: the 413 still replaces
    its response (the commit happens at start_response)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        environ["coatcheck.session"]["blob"] = "y" * 5000
        start_response("200 OK", [("content-type", "text/plain")])
        yield b"app body"

    manager = SessionManager(SealedStore(), test_config())
    client = Client(SessionMiddleware(app, manager=manager))
    response = client.get("/")
    assert response.status_code == 413
    assert b"session_too_large" in response.data
    assert b"app body" not in response.data
