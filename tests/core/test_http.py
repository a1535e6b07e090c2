"""Request parsing: client address behind proxies, bearer header shapes."""

from __future__ import annotations

import pytest

from coatcheck._core.http import RequestView, client_address, presented_token
from coatcheck.errors import HTTPError
from coatcheck.testing import test_config


def view(peer: str, *xff: str, auth: str | None = None) -> RequestView:
    headers = [("x-forwarded-for", v) for v in xff]
    if auth is not None:
        headers.append(("authorization", auth))
    return RequestView("GET", "https", headers, peer)


def test_socket_address_wins_without_trusted_proxies() -> None:
    """With no trusted proxy configured, X-Forwarded-For is ignored entirely."""
    assert client_address(view("203.0.113.9", "1.2.3.4"), ()) == "203.0.113.9"


def test_forwarded_for_read_right_to_left_through_trusted_proxies() -> None:
    """Behind trusted proxies the first untrusted hop from the right is the client; a spoofed
    left-most entry changes nothing."""
    proxies = ("10.0.0.0/8",)
    assert client_address(view("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1"), proxies) == (
        "198.51.100.7"
    )
    assert client_address(view("10.0.0.2", "6.6.6.6", "198.51.100.7"), proxies) == "198.51.100.7"


def test_untrusted_peer_cannot_claim_an_address() -> None:
    """A peer that is not a trusted proxy cannot set its address with X-Forwarded-For."""
    assert client_address(view("198.51.100.7", "10.0.0.5"), ("10.0.0.0/8",)) == "198.51.100.7"


def test_garbage_forwarded_for_falls_back_to_peer() -> None:
    assert client_address(view("10.0.0.2", "not-an-ip"), ("10.0.0.0/8",)) == "10.0.0.2"


@pytest.mark.parametrize(
    "auth",
    [
        "Bearer",
        "Bearer  x",
        "Bearer a b",
        "Bearer\tx",
        "Bearer é",
        "Bearer " + "a" * 5000,
    ],
)
def test_malformed_bearer_is_400(auth: str) -> None:
    """A malformed Authorization header is a 400 invalid_request (RFC 6750 3.1)."""
    with pytest.raises(HTTPError) as raised:
        presented_token(view("1.2.3.4", auth=auth), test_config(), {})
    assert raised.value.status_code == 400


def test_two_authorization_headers_are_400() -> None:
    request = RequestView(
        "GET", "https", [("authorization", "Bearer a"), ("authorization", "Bearer b")]
    )
    with pytest.raises(HTTPError):
        presented_token(request, test_config(), {})


def test_other_schemes_are_left_to_the_app() -> None:
    """Basic and other schemes do not select the bearer transport; cookies still apply."""
    found = presented_token(
        view("1.2.3.4", auth="Basic Zm9vOmJhcg=="), test_config(), {"coatcheck_session": ["x"]}
    )
    assert found is not None
    assert found.transport == "cookie"


def test_asgi_headers_make_the_same_view_as_the_constructor() -> None:
    """from_asgi_headers (one pass, slots set directly) equals a view built field by field:
    names lowered (only when needed), values latin-1, repeated names kept in order, and the
    view stays frozen."""
    raw = [
        (b"Cookie", b"a=1"),
        (b"user-agent", b"caf\xe9"),
        (b"cookie", b"b=2"),
        (b"X-123", b"x"),
        (b"123", b"y"),
    ]
    made = RequestView.from_asgi_headers("post", "https", raw, "192.0.2.1")
    expected = RequestView(
        "POST",
        "https",
        [
            ("cookie", "a=1"),
            ("user-agent", "café"),
            ("cookie", "b=2"),
            ("x-123", "x"),
            ("123", "y"),
        ],
        "192.0.2.1",
    )
    assert made == expected
    assert made.get_all("cookie") == ["a=1", "b=2"]
    assert made.get("x-123") == "x"
    assert made.get("123") == "y"
    with pytest.raises(AttributeError):
        made.method = "GET"  # type: ignore[misc]
