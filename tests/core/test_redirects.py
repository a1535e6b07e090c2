from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from coatcheck._core.redirects import MAX_NEXT_LENGTH, login_redirect_url, safe_next


def _nested_encoding(rounds: int) -> str:
    value = "/%2Fevil.example"
    for _ in range(rounds):
        value = value.replace("%", "%25")
    return value


# Ideas from the OWASP Unvalidated Redirects and Forwards Cheat Sheet and the usual open-redirect
# bypass lists: other hosts, schemes, slashes a browser normalises, characters a browser drops,
# and encodings a server or proxy may undo.
HOSTILE = [
    pytest.param(None, id="none"),
    pytest.param("", id="empty"),
    pytest.param("//evil.example", id="scheme-relative"),
    pytest.param("///evil.example", id="triple-slash"),
    pytest.param("////evil.example/account", id="quadruple-slash"),
    pytest.param("/\\evil.example", id="slash-backslash"),
    pytest.param("\\\\evil.example", id="double-backslash"),
    pytest.param("\\/evil.example", id="backslash-slash"),
    pytest.param("/account\\..\\..\\evil", id="backslash-later"),
    pytest.param("https://evil.example", id="absolute-https"),
    pytest.param("http://evil.example/login", id="absolute-http"),
    pytest.param("HTTPS://EVIL.EXAMPLE", id="absolute-upper"),
    pytest.param("https:evil.example", id="scheme-no-slashes"),
    pytest.param("https:/\\evil.example", id="scheme-slash-backslash"),
    pytest.param("javascript:alert(document.domain)", id="javascript"),
    pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data-url"),
    pytest.param("vbscript:msgbox(1)", id="vbscript"),
    pytest.param("evil.example", id="bare-host"),
    pytest.param("account", id="relative-path"),
    pytest.param("./account", id="dot-relative"),
    pytest.param("?next=//evil.example", id="query-only"),
    pytest.param("#fragment", id="fragment-only"),
    pytest.param("/\t/evil.example", id="tab-dropped-by-browsers"),
    pytest.param("/\n/evil.example", id="newline"),
    pytest.param("/\r/evil.example", id="carriage-return"),
    pytest.param("/account\r\nSet-Cookie: a=b", id="header-injection"),
    pytest.param("\t//evil.example", id="leading-tab"),
    pytest.param(" /account", id="leading-space"),
    pytest.param("/account ", id="trailing-space"),
    pytest.param("/ /evil.example", id="inner-space"),
    pytest.param("/\x00/evil.example", id="nul"),
    pytest.param("\x00//evil.example", id="leading-nul"),
    pytest.param("/\x7f", id="del"),
    pytest.param("/\x1b[31m", id="escape"),
    pytest.param("/\u0085/evil", id="next-line-c1"),
    pytest.param("/\u2028/evil.example", id="line-separator"),
    pytest.param("/\u2029/evil.example", id="paragraph-separator"),
    pytest.param("/\u00a0/evil.example", id="no-break-space"),
    pytest.param("/\u3000/evil.example", id="ideographic-space"),
    pytest.param("/\u200b/evil.example", id="zero-width-space"),
    pytest.param("/\u202eelpmaxe.live", id="right-to-left-override"),
    pytest.param("/\ufeff/evil.example", id="byte-order-mark"),
    pytest.param("/\ud800", id="lone-surrogate"),
    pytest.param("/%2Fevil.example", id="encoded-slash"),
    pytest.param("/%2F%2Fevil.example", id="encoded-double-slash"),
    pytest.param("/%2f%2fevil.example", id="encoded-lowercase"),
    pytest.param("/%5Cevil.example", id="encoded-backslash"),
    pytest.param("/%5C%5Cevil.example", id="encoded-double-backslash"),
    pytest.param("/%252F%252Fevil.example", id="double-encoded-slash"),
    pytest.param("/%25255Cevil.example", id="triple-encoded-backslash"),
    pytest.param(_nested_encoding(6), id="encoded-beyond-the-round-limit"),
    pytest.param("%2F%2Fevil.example", id="encoded-leading-slashes"),
    pytest.param("/%09/evil.example", id="encoded-tab"),
    pytest.param("/account%0D%0ASet-Cookie:%20a=b", id="encoded-crlf"),
    pytest.param("/%00", id="encoded-nul"),
    pytest.param("/%E2%80%A8", id="encoded-line-separator"),
    pytest.param("/%E2%80%AE", id="encoded-rtl-override"),
    pytest.param("/" + "a" * MAX_NEXT_LENGTH, id="over-long"),
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_fall_back_to_the_default(value: str | None) -> None:
    """Anything that could leave the site, or that a browser or proxy could rewrite, is dropped."""
    assert safe_next(value) == "/"


def test_default_is_configurable() -> None:
    """The fallback is the caller's default."""
    assert safe_next("//evil.example", default="/home") == "/home"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/", "/"),
        ("/account", "/account"),
        ("/account?tab=1#x", "/account?tab=1#x"),
        ("/a/b/c/?x=1&y=two", "/a/b/c/?x=1&y=two"),
        ("/?next=//evil.example", "/?next=//evil.example"),
        ("/search?q=%2F%2Fnot-a-host", "/search?q=%2F%2Fnot-a-host"),
        ("/files/my%20report.pdf", "/files/my%20report.pdf"),
        ("/a:b;c=d,e", "/a:b;c=d,e"),
        ("/@evil.example", "/@evil.example"),
        ("/../account", "/../account"),
        ("/café", "/caf%C3%A9"),
        ("/\uff0f\uff0fevil.example", "/%EF%BC%8F%EF%BC%8Fevil.example"),
        ('/"><script>alert(1)</script>', "/%22%3E%3Cscript%3Ealert(1)%3C/script%3E"),
        ("/" + "a" * (MAX_NEXT_LENGTH - 1), "/" + "a" * (MAX_NEXT_LENGTH - 1)),
        ("/files/100%25", "/files/100%25"),
        ("/a%252Fb", "/a%252Fb"),
    ],
)
def test_local_paths_are_kept(value: str, expected: str) -> None:
    """Same-site paths keep their query and fragment; characters outside URL syntax get encoded."""
    assert safe_next(value) == expected


def test_login_redirect_url_carries_next_encoded() -> None:
    """The next path travels as one encoded query parameter that decodes back to itself."""
    url = login_redirect_url("/login", "/account?tab=1#x")
    assert (url, parse_qs(urlsplit(url).query)["next"]) == (
        "/login?next=/account%3Ftab%3D1%23x",
        ["/account?tab=1#x"],
    )


@pytest.mark.parametrize("next_path", [None, "//evil.example", "https://evil.example"])
def test_login_redirect_url_drops_unsafe_next(next_path: str | None) -> None:
    """An unsafe or missing next becomes the site root."""
    assert login_redirect_url("/login", next_path) == "/login?next=/"


def test_login_redirect_url_appends_to_an_existing_query() -> None:
    """A login path with a query keeps it and gains ``next``."""
    assert login_redirect_url("/login?lang=fr", "/a") == "/login?lang=fr&next=/a"


@pytest.mark.parametrize("login_path", ["//evil.example/login", "https://evil.example", "/login#x"])
def test_login_redirect_url_refuses_a_non_local_login_path(login_path: str) -> None:
    """A login path that is not a plain local path is a programming error."""
    with pytest.raises(ValueError, match="local path"):
        login_redirect_url(login_path, "/a")


@pytest.mark.parametrize(
    "value",
    [
        "/..//evil.example",
        "/.//evil.example",
        "/%2e%2e//evil.example",
        "/x/../..//evil.example",
        "/a/..//evil.example",
        "/.%2F/evil.example",
        "/..\\/evil.example",
    ],
)
def test_dot_segments_cannot_make_a_scheme_relative_path(value: str) -> None:
    """A path that a browser's dot-segment removal turns into //host is refused (found by an
    attack: the Location stayed on the site, but a later relative redirect would not)."""
    assert safe_next(value) == "/"


@pytest.mark.parametrize("value", ["/a/b/../c", "/a/./b", "/shop//cart", "/..", "/a/.."])
def test_harmless_dot_segments_are_kept(value: str) -> None:
    """Dot segments that resolve to a path on this site are left for the browser to resolve."""
    assert safe_next(value) == value
