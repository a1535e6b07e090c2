"""Refusals: the decision between the app's error page and the JSON answer, and which requests
are a browser's pages."""

from __future__ import annotations

import pytest

from coatcheck._core.http import RequestView, wants_page
from coatcheck._core.responses import Refusals
from coatcheck._core.signin import login_page_for, unauthenticated
from coatcheck.errors import HTTPError, StoreUnavailableError

FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def view(*headers: tuple[str, str]) -> RequestView:
    return RequestView(method="GET", scheme="https", headers=list(headers))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((("accept", FIREFOX),), True),
        ((("accept", "application/xhtml+xml"),), True),
        ((("accept", "TEXT/HTML; q=0.5, application/json; q=0.5"),), True),
        ((), False),
        ((("accept", "*/*"),), False),
        ((("accept", "text/*"),), False),
        ((("accept", "application/json"),), False),
        ((("accept", "application/json, text/html;q=0.9"),), False),
        ((("accept", "application/problem+json, text/html;q=0.1"),), False),
        ((("accept", "text/html;q=0"),), False),
        ((("accept", "text/html;q=nope"),), False),
        ((("accept", "text/html;q=7"),), False),
        ((("accept", FIREFOX), ("authorization", "Bearer x.y")), False),
    ],
)
def test_a_page_request_is_a_browser_asking_for_html(
    headers: tuple[tuple[str, str], ...], expected: bool
) -> None:
    """HTML named with a weight no lower than JSON's, and no Authorization header: a page."""
    assert wants_page(view(*headers)) is expected


def test_a_redirect_is_never_rendered() -> None:
    """The 303 to the login page stays a redirect with its Location, for pages too."""
    calls: list[HTTPError] = []
    refusals = Refusals(view(("accept", FIREFOX)), lambda e: calls.append(e) or "<p>no</p>")
    answer = refusals.answer(unauthenticated("cookie", login_path="/login", target="/a"))
    assert (answer.status, calls) == (303, [])
    assert ("location", "/login?next=/a") in answer.headers


def test_a_renderer_returning_something_else_than_text_leaves_json() -> None:
    """Only a str is a page: anything else is logged and the JSON answer is sent."""
    refusals = Refusals(view(("accept", FIREFOX)), lambda e: b"<p>bytes</p>")  # type: ignore[arg-type,return-value]
    answer = refusals.answer(HTTPError(403, {"error": "csrf"}))
    assert (answer.status, answer.body) == (403, b'{"error": "csrf"}')


def test_outage_pages_carry_retry_after() -> None:
    """A store outage rendered as a page keeps its 503 and Retry-After."""
    refusals = Refusals(view(("accept", FIREFOX)), lambda e: f"<p>{e.body['error']}</p>")
    answer = refusals.unavailable(StoreUnavailableError("down", retry_after=7))
    assert (answer.status, answer.body) == (503, b"<p>store_unavailable</p>")
    assert ("retry-after", "7") in answer.headers


@pytest.mark.parametrize(
    ("redirect", "login_view", "accept", "expected"),
    [
        (True, None, None, "/login"),
        (False, "/signin", FIREFOX, None),
        (None, None, FIREFOX, None),
        (None, "/signin", FIREFOX, "/signin"),
        (None, "/signin", "application/json", None),
        (None, "/signin", None, None),
    ],
)
def test_where_an_anonymous_request_is_sent(
    redirect: bool | None, login_view: str | None, accept: str | None, expected: str | None
) -> None:
    """The route's word wins; unsaid, a page request goes to the app's login view, an API
    request gets the 401 (None)."""
    request = view(("accept", accept)) if accept else view()
    found = login_page_for(
        request,
        redirect=redirect,
        login_path=None,
        login_view=login_view,
        default_login_path="/login",
    )
    assert found == expected
