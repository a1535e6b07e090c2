"""Error pages: with an ``error_renderer``, both middlewares answer a browser's page request that
they refuse with the app's HTML (same status, same headers), and every other request with the
JSON they always sent. Run on both stacks (``tests/middleware/stacks.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from coatcheck.errors import HTTPError
from tests.middleware.stacks import COOKIE, STACKS, Stack, stack
from tests.middleware.test_http import FORGED, BrokenGet, broken

PAGE = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
"""What a browser sends for a navigation or a form submission."""
rendered: list[tuple[str, int]] = []


def page(path: str, error: HTTPError) -> str:
    rendered.append((path, error.status_code))
    return f"<h1>{error.status_code} {error.body['error']}</h1><p>{path}</p>"


@pytest.fixture(params=STACKS)
def env(request: pytest.FixtureRequest) -> Iterator[Stack]:
    rendered.clear()
    with stack(request.param, error_page=page) as built:
        yield built


def test_csrf_refusal_of_a_form_post_is_a_page(env: Stack) -> None:
    """A browser form post without the CSRF token gets the renderer's HTML with status 403,
    ``text/html`` and ``no-store``; the renderer is handed the request (its path)."""
    env.client.post("/write", json={"a": 1})  # a stored session: the token is now required
    response = env.client.post("/form", data={"x": "1"}, headers=PAGE)
    assert response.status_code == 403
    assert response.text == "<h1>403 csrf</h1><p>/form</p>"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert rendered == [("/form", 403)]


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, text/html;q=0.9"]
)
def test_api_requests_keep_the_json_answer(env: Stack, accept: str | None) -> None:
    """Requests that do not prefer HTML (fetch, curl, API clients) get JSON as before, and the
    renderer is not called."""
    env.client.post("/write", json={"a": 1})
    headers = {"accept": accept} if accept is not None else {}
    response = env.client.post("/form", data={"x": "1"}, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, "csrf")
    assert rendered == []


def test_bearer_requests_keep_the_json_answer_and_the_challenge(env: Stack) -> None:
    """A bearer client is an API whatever it accepts: the 401 stays JSON with its challenge."""
    response = env.client.get("/me", headers={**PAGE, "authorization": f"Bearer {'A' * 20}.x"})
    assert response.status_code in (400, 401)
    assert response.headers["content-type"] == "application/json"
    assert rendered == []


def test_app_refusals_keep_their_headers(env: Stack) -> None:
    """A 401 raised by the app is a page too, and the header clearing a forged cookie is kept."""
    env.client.post("/write", json={"a": 1})
    sid, secret = env.cookie().split(".")
    forged = sid + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    response = env.fresh().get("/me", headers={**PAGE, "cookie": f"{COOKIE}={forged}"})
    assert (response.status_code, response.text) == (401, "<h1>401 unauthenticated</h1><p>/me</p>")
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


def test_throttled_login_is_a_page_with_retry_after(env: Stack) -> None:
    """A 429 from the login guard keeps its Retry-After on the page."""
    env.client.post("/attempt", json={"user": "ann"}, headers=PAGE)
    response = env.client.post("/attempt", json={"user": "ann"}, headers=PAGE)
    assert response.status_code == 429
    assert response.text.startswith("<h1>429 ")
    assert int(response.headers["retry-after"]) > 0


def test_oversized_cookie_header_is_a_page(env: Stack) -> None:
    """The 431 for a Cookie header over 32 KiB, answered before any session exists."""
    response = env.client.get("/read", headers={**PAGE, "cookie": "a=" + "b" * 40_000})
    assert (response.status_code, response.text) == (
        431,
        "<h1>431 cookie_too_large</h1><p>/read</p>",
    )


@pytest.mark.parametrize("name", STACKS)
def test_store_outage_is_a_page_with_retry_after(name: str) -> None:
    """The 503 for a store that is down is a page with Retry-After, never a 500."""
    with stack(name, error_page=page, **broken(name, BrokenGet())) as env:
        response = env.client.get("/read", headers={**PAGE, "cookie": FORGED})
    assert (response.status_code, response.text) == (
        503,
        "<h1>503 store_unavailable</h1><p>/read</p>",
    )
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize("name", STACKS)
def test_a_renderer_that_raises_is_logged_and_json_is_sent(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken error page never turns a refusal into a 500: the JSON answer goes out and the
    renderer's exception is logged."""

    def broken_page(path: str, error: HTTPError) -> str:
        raise RuntimeError("template missing")

    with (
        caplog.at_level(logging.ERROR, logger="coatcheck"),
        stack(name, error_page=broken_page) as env,
    ):
        response = env.client.get("/me", headers=PAGE)
    assert (response.status_code, response.json()) == (401, {"error": "unauthenticated"})
    assert any("error renderer raised" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", STACKS)
def test_a_renderer_may_leave_an_error_to_json(name: str) -> None:
    """A renderer that returns None for an error leaves that error's JSON answer."""

    def only_csrf(path: str, error: HTTPError) -> str | None:
        return "<h1>expired form</h1>" if error.body["error"] == "csrf" else None

    with stack(name, error_page=only_csrf) as env:
        response: Any = env.client.get("/me", headers=PAGE)
    assert (response.status_code, response.json()) == (401, {"error": "unauthenticated"})
