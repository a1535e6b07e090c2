"""What only the ASGI middleware does: ASGI messages themselves (the body a form check read,
replayed to the app; scopes that are not HTTP). The HTTP behaviours it shares with the WSGI
middleware are in ``tests/middleware/test_http.py``."""

from __future__ import annotations

from typing import Any

import pytest

from coatcheck._core.lifecycle import create_session
from coatcheck._core.responses import MAX_FORM_BYTES
from coatcheck.asgi import SessionMiddleware
from coatcheck.manager import AsyncSessionManager
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import test_config

Message = dict[str, Any]


def form_scope(cookie: bytes = b"") -> dict[str, Any]:
    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    return {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "headers": [*headers, *([(b"cookie", cookie)] if cookie else [])],
        "client": ("127.0.0.1", 5000),
    }


async def run(
    scope: dict[str, Any], incoming: list[Message], manager: AsyncSessionManager | None = None
) -> tuple[list[Message], list[Any]]:
    """Run the middleware around an app that records every message it receives."""
    seen: list[Message] = []
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    manager = manager or AsyncSessionManager(AsyncMemoryStore(), test_config())
    await SessionMiddleware(app, manager=manager)(scope, receive, send)
    return seen, sent


async def test_a_form_token_split_over_chunks_is_found_and_the_body_replayed() -> None:
    """The CSRF form field is read from a body that arrives in several chunks, and the app then
    receives that body as one message."""
    manager = AsyncSessionManager(AsyncMemoryStore(), test_config())
    record, token = await manager.run(
        create_session(manager.config, manager.clock(), user_id="u1", transport="cookie")
    )
    cookie = f"coatcheck_session={token}".encode()
    body = f"_csrf={record.csrf_token}&x=1".encode()
    incoming = [
        {"type": "http.request", "body": body[:9], "more_body": True},
        {"type": "http.request", "body": body[9:], "more_body": False},
    ]
    seen, sent = await run(form_scope(cookie), incoming, manager)
    assert sent[0]["status"] == 204
    assert seen == [{"type": "http.request", "body": body, "more_body": False}]


async def test_a_body_over_the_form_cap_reaches_the_app_whole() -> None:
    """A form body larger than MAX_FORM_BYTES stops being buffered at the cap: the app gets what
    was read as one message, then the rest as it arrives, byte for byte."""
    chunk = b"x" * (MAX_FORM_BYTES // 2 + 1)
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": True},
        {"type": "http.request", "body": chunk, "more_body": True},
        {"type": "http.request", "body": chunk, "more_body": False},
    ]
    seen, sent = await run(form_scope(), incoming)
    assert seen == [
        {"type": "http.request", "body": chunk * 2, "more_body": True},
        {"type": "http.request", "body": chunk, "more_body": False},
    ]
    assert sent[0]["status"] == 204


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a=" + b"x" * (MAX_FORM_BYTES - 1)],  # one byte over the cap, in one message
        [b"x" * 100, b"x" * MAX_FORM_BYTES],  # over the cap in the message that ends it
    ],
)
async def test_a_body_that_ends_past_the_form_cap_is_replayed_as_ended(
    chunks: list[bytes],
) -> None:
    """A body that ends in the message taking it past MAX_FORM_BYTES has ended: the app gets it
    with ``more_body: False`` and no further ``receive`` (found by an outside attack: a body of
    1,048,577 bytes was replayed with ``more_body: True``, and the app waited for bytes that never
    came until the client gave up)."""
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    seen, sent = await run(form_scope(), incoming)
    assert seen == [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    assert sent[0]["status"] == 204  # the app answered; it used to wait for more body


async def test_a_disconnect_while_the_form_is_read_is_passed_on() -> None:
    """A client that disconnects while its form is read: the app gets the bytes read, then the
    ``http.disconnect`` message, as it would have without the middleware."""
    incoming = [
        {"type": "http.request", "body": b"_csrf=", "more_body": True},
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    seen, _ = await run(form_scope(), incoming)
    assert seen == [
        {"type": "http.request", "body": b"_csrf=abc", "more_body": True},
        {"type": "http.disconnect"},
    ]


async def test_lifespan_and_unknown_scopes_pass_through() -> None:
    """Lifespan and other non-HTTP scopes reach the app untouched, with no session."""
    for kind in ("lifespan", "custom"):
        scope: dict[str, Any] = {"type": kind}
        seen, sent = await run(scope, [{"type": f"{kind}.startup"}])
        assert seen == [{"type": f"{kind}.startup"}]
        assert sent == []
        assert "coatcheck.session" not in scope
