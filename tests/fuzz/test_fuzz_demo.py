"""Random and malformed input on every endpoint of the demo app (in process): any method, body
and headers, anonymous or signed in, get an answer below 500."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from coatcheck.demo.app import create_app
from coatcheck.passwords import PasswordConfig, PasswordHasher
from coatcheck.stores.memory import AsyncMemoryStore
from coatcheck.testing import test_config
from coatcheck.throttling import ThrottleConfig

PASSWORD = "correct horse battery"
FORM_POSTS = [
    ("POST", "/saved"),
    ("POST", "/login"),
    ("POST", "/signup"),
    ("POST", "/logout"),
    ("POST", "/account/password"),
    ("POST", "/account/revoke"),
    ("POST", "/account/revoke-others"),
]
ENDPOINTS = [
    ("POST", "/api/register"),
    ("POST", "/api/login"),
    ("GET", "/api/me"),
    ("POST", "/api/logout"),
    ("DELETE", "/api/logout"),
    ("POST", "/api/token"),
    ("DELETE", "/api/token"),
    ("GET", "/api/cart"),
    ("POST", "/api/cart"),
    ("GET", "/api/csrf"),
    ("POST", "/api/password"),
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions/revoke-others"),
    ("DELETE", "/api/sessions/AAAAAAAAAAAAAAAAAAAAAAAA"),
    ("DELETE", "/api/sessions/..%2F..%2Fetc"),
    ("GET", "/"),
    ("PUT", "/api/cart"),
    # The server-rendered pages (coatcheck.demo.pages).
    ("GET", "/login?next=//evil.example"),
    ("GET", "/account"),
    ("GET", "/signup"),
    ("GET", "/app"),
    *FORM_POSTS,
]
FIELDS = ["email", "password", "name", "item", "current_password", "new_password", "label"]
FORM_FIELDS = [*FIELDS, "next", "remember", "story", "action", "session_id", "_csrf"]
# Text that includes lone surrogates (JSON can spell them as \ud800) and control characters.
weird_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=30,
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    weird_text,
    st.sampled_from(["a@example.com", PASSWORD, "x" * 5000]),
)
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
json_body = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS) | weird_text, value, max_size=5),
    value,
).map(lambda body: json.dumps(body).encode())  # ensure_ascii: surrogates become \ud800 escapes
raw_body = st.one_of(
    json_body,
    st.binary(max_size=200),
    st.sampled_from([b"", b"[" * 70_000, b'{"item": "a"' + b" " * 70_000 + b"}", b"\xff\xfe{}"]),
)
latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
header_noise = st.dictionaries(
    st.sampled_from(
        ["authorization", "cookie", "origin", "sec-fetch-site", "x-xsrf-token", "content-type"]
    ),
    latin1 | st.sampled_from(["Bearer x", "Bearer " + "A" * 24 + "." + "b" * 43, "null"]),
    max_size=3,
)


@dataclass
class Demo:
    """The demo app in process, driven from sync code through one event loop."""

    runner: asyncio.Runner
    client: httpx.AsyncClient

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, path, **kwargs))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder: Path = tmp_path_factory.mktemp("demo-fuzz")
    app = create_app(
        store=AsyncMemoryStore(),
        config=test_config(),
        users_url=f"sqlite:///{folder / 'users.db'}",
        # Cheap hashing (it is not what is tested) and no throttling, so examples stay fast and
        # independent of each other.
        hasher=PasswordHasher(
            PasswordConfig(time_cost=1, memory_cost=8, parallelism=1, allow_weak_parameters=True)
        ),
        throttle=ThrottleConfig(account_threshold=1_000_000, ip_threshold=None),
    )
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        runner.run(stack.enter_async_context(app.router.lifespan_context(app)))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        try:
            yield Demo(runner, client)
        finally:
            runner.run(client.aclose())
            runner.run(stack.aclose())


_emails = (f"fuzz{n}@example.com" for n in itertools.count())


def _signed_in(demo: Demo) -> dict[str, str]:
    """Headers of a freshly registered user's browser: its cookies and the CSRF header."""
    response = demo.request(
        "POST", "/api/register", json={"email": next(_emails), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    cookies = {c.name: c.value for c in demo.client.cookies.jar}
    demo.client.cookies.clear()
    return {
        "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        "x-xsrf-token": cookies["XSRF-TOKEN"],
    }


@given(
    st.sampled_from(ENDPOINTS),
    raw_body,
    header_noise,
    st.booleans(),
)
@example(("POST", "/api/cart"), b'{"item": "\\ud800"}', {}, True)
@example(("POST", "/api/register"), b"[" * 70_000, {}, False)
@example(("POST", "/api/login"), b'{"email": "a@example.com", "password": 5}', {}, False)
def test_no_input_gets_a_500(
    demo: Demo,
    endpoint: tuple[str, str],
    body: bytes,
    noise: dict[str, str],
    signed_in: bool,
) -> None:
    """Whatever the method, body and headers, signed in or not, the answer is below 500."""
    method, path = endpoint
    headers: dict[str, Any] = _signed_in(demo) if signed_in else {}
    headers.update(noise)
    headers.setdefault("content-type", "application/json")
    # Headers go as bytes: ASGI servers hand any latin-1 octet through.
    raw = [(name.encode(), text.encode("latin-1")) for name, text in headers.items()]
    response = demo.request(method, path, content=body, headers=raw)
    demo.client.cookies.clear()
    assert response.status_code < 500, (response.status_code, response.text)


form_value = st.one_of(
    weird_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"a@example.com", PASSWORD.encode(), b"coat-check", b"remove", b"on"]),
)
form_body = st.lists(
    st.tuples(st.sampled_from(FORM_FIELDS).map(str.encode) | st.binary(max_size=10), form_value),
    max_size=6,
).flatmap(
    lambda pairs: st.sampled_from(
        [
            # Escaped (what a browser sends) or raw bytes (what a hostile client may).
            b"&".join(
                quote_from_bytes(k).encode() + b"=" + quote_from_bytes(v).encode() for k, v in pairs
            ),
            b"&".join(k + b"=" + v for k, v in pairs),
        ]
    )
)


@given(st.sampled_from(FORM_POSTS), form_body, st.booleans())
@example(("POST", "/login"), b"email=%ED%A0%80&password=%00", True)
@example(("POST", "/signup"), b"email=a%40example.com&password=x&name=%E2%80%AE", False)
def test_no_form_post_gets_a_500(
    demo: Demo, endpoint: tuple[str, str], body: bytes, signed_in: bool
) -> None:
    """Urlencoded forms with any fields and bytes (escaped or raw, lone surrogates, NULs),
    signed in with the CSRF token or anonymous, get a 303 or a 4xx, never a 500."""
    method, path = endpoint
    headers: dict[str, Any] = _signed_in(demo) if signed_in else {}
    headers["content-type"] = "application/x-www-form-urlencoded"
    response = demo.request(method, path, content=body, headers=headers)
    demo.client.cookies.clear()
    assert response.status_code == 303 or 400 <= response.status_code < 500, (
        response.status_code,
        response.text,
    )
