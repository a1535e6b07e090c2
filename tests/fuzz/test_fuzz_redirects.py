"""Property tests for ``next`` redirects: whatever a client sends, the URL coatcheck redirects
to stays on this site, for a browser and for a proxy that decodes it again."""

from __future__ import annotations

import unicodedata
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from coatcheck._core.redirects import MAX_NEXT_LENGTH, login_redirect_url, safe_next

SITE = "https://shop.example/account/orders"
DEFAULT = "/home"

# The characters open-redirect tricks are made of, so generated values hit the rules often.
tricky = st.sampled_from(
    [
        "/", "//", "\\", "%2F", "%2f", "%5C", "%252F", "%25", "%", ":", "@", "?", "#", ".",
        "..", "http:", "https://", "javascript:", "evil.example", "\t", "\n", "\r", " ",
        "\u2028", "\u200b", "\u202e", "\ufeff", "\u3000", "é", "\x00", "\x7f", "%0a", "%09",
        "%E2%80%A8", "%00", "~", ";", "&",
    ]
)  # fmt: skip
next_value = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.lists(tricky | st.text(max_size=4), max_size=12).map("".join),
    st.lists(tricky | st.text(max_size=4), max_size=12).map(lambda parts: "/" + "".join(parts)),
)


def _stays_on_site(url: str) -> bool:
    resolved = urlsplit(urljoin(SITE, url))
    return resolved.scheme == "https" and resolved.netloc == "shop.example"


@given(next_value)
@example("/%2F%2Fevil.example")
@example("/%252F%252Fevil.example")
@example("/\t/evil.example")
@example("/café?q=ü#frag")
def test_next_never_leaves_the_site(value: str | None) -> None:
    """The result is the default or an ASCII local path that stays on site, also once a proxy
    decodes it (up to four times), and contains nothing a browser would strip or fold."""
    result = safe_next(value, default=DEFAULT)
    if result == DEFAULT:
        return
    assert result.isascii()
    assert result.startswith("/")
    assert result[1:2] not in ("/", "\\")
    assert "\\" not in result
    assert not any(unicodedata.category(ch) == "Cc" or ch == " " for ch in result)
    assert len(result) <= 3 * MAX_NEXT_LENGTH * 4  # percent-encoding grows UTF-8 at most 12x
    decoded = result
    for _ in range(4):
        assert _stays_on_site(decoded), decoded
        assert decoded.startswith("/"), decoded
        assert decoded[1:2] not in ("/", "\\"), decoded
        decoded = unquote(decoded)


@given(next_value)
def test_safe_next_is_idempotent(value: str | None) -> None:
    """A value safe_next already accepted is accepted again unchanged (no double encoding)."""
    once = safe_next(value, default=DEFAULT)
    assert once == safe_next(once, default=DEFAULT)


@given(next_value)
def test_login_redirect_carries_a_safe_next(value: str | None) -> None:
    """The login URL's own next parameter, read back by a server, is a safe local path."""
    url = login_redirect_url("/login", value)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("", "", "/login")
    (carried,) = parse_qs(parts.query, keep_blank_values=True)["next"]
    assert carried == safe_next(carried, default="")
