"""What only the WSGI middleware does: the WSGI environ and ``start_response`` themselves (an
app that starts its response late, a body without a length, the request view of the environ).
The HTTP behaviours it shares with the ASGI middleware are in
``tests/middleware/test_http.py``."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from coatcheck._core.config import SessionConfig
from coatcheck.errors import HTTPError
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, SyncCountingStore, test_config
from coatcheck.wsgi import SessionMiddleware, request_view

COOKIE = "coatcheck_session"


def plain_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]


def build(
    config: SessionConfig | None = None, store: Any = None
) -> tuple[SessionMiddleware, SyncCountingStore, FakeClock]:
    counting = SyncCountingStore(store if store is not None else MemoryStore())
    clock = FakeClock()
    manager = SessionManager(counting, config or test_config(), clock=clock)
    return SessionMiddleware(plain_app, manager=manager), counting, clock


class BrokenPut(MemoryStore):
    def put(self, record: Any, expected_version: int) -> bool:
        raise ConnectionError("down")


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


class Closing:
    """A response body that notes whether the server closed it (PEP 3333 requires it)."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"the app's body"

    def close(self) -> None:
        self.closed = True


def test_a_replaced_response_still_closes_the_apps_body() -> None:
    """When a failed commit replaces the app's response with the 503, the app's body iterable
    is still closed, so what it holds (a file, a connection) is released."""
    app, _, _ = build(store=BrokenPut())
    body = Closing()

    def inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["coatcheck.session"]["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    app.app = inner
    response = Client(app).get("/")
    assert response.status_code == 503
    assert response.get_data() != b"the app's body"
    assert body.closed is True
