"""Property tests for the cookie parser: any header text is read without raising, and only
values of the RFC 6265 cookie-octet grammar, under the size caps, ever come out."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from coatcheck._core.config import CookieConfig
from coatcheck._core.cookies import (
    MAX_COOKIE_HEADER_BYTES,
    MAX_COOKIE_VALUE_BYTES,
    parse_cookies,
    read_cookie,
    set_cookie,
)
from coatcheck._core.tokens import format_token, new_id, new_secret

COOKIE_OCTET = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
# ASGI and WSGI hand header values over as latin-1 text: every code point 0-255 can arrive.
latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300)
# Fragments that make the parser's separators and quoting likely to meet.
pieces = st.sampled_from(["=", ";", "; ", '"', " ", "\t", "__Host-session", "a", "\x00", "é"])
header = st.one_of(
    latin1,
    st.text(),
    st.lists(st.one_of(pieces, latin1), max_size=20).map("".join),
)
cookie_name = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";="),
    min_size=1,
    max_size=30,
)
cookie_value = st.text(
    alphabet=st.characters(codec="ascii").filter(lambda c: COOKIE_OCTET.fullmatch(c) is not None),
    max_size=100,
)


@given(st.lists(header, max_size=4))
def test_any_header_parses_to_grammar_values(headers: list[str]) -> None:
    """Whatever the headers hold, parsing returns only cookie-octet values within the cap."""
    found = parse_cookies(headers)
    for values in found.values():
        for value in values:
            assert COOKIE_OCTET.fullmatch(value) is not None
            assert len(value) <= MAX_COOKIE_VALUE_BYTES


@given(st.lists(header, max_size=4), cookie_name)
def test_read_cookie_is_exactly_the_parsed_name(headers: list[str], name: str) -> None:
    """read_cookie gives exactly what parse_cookies found under that byte-exact name."""
    assert parse_cookies(headers).get(name, []) == read_cookie(headers, name)


@given(st.lists(st.tuples(cookie_name, cookie_value), min_size=1, max_size=8))
def test_well_formed_pairs_round_trip_in_order(pairs: list[tuple[str, str]]) -> None:
    """A header written the way browsers write one is read back pair by pair, in order."""
    header_value = "; ".join(f"{name}={value}" for name, value in pairs)
    expected: dict[str, list[str]] = {}
    for name, value in pairs:
        expected.setdefault(name, []).append(value)
    assert expected == parse_cookies([header_value])


@given(st.text(min_size=1, max_size=50), st.integers(min_value=0, max_value=200))
def test_oversized_header_is_skipped_whole(filler: str, extra: int) -> None:
    """A header longer than the cap contributes nothing, even a well-formed cookie in front."""
    prefix = "__Host-session=" + format_token(new_id(), new_secret()) + "; x="
    padding = (filler * (MAX_COOKIE_HEADER_BYTES // len(filler) + 1))[:MAX_COOKIE_HEADER_BYTES]
    too_long = (prefix + padding)[: MAX_COOKIE_HEADER_BYTES + 1 + extra]
    assert parse_cookies([too_long]) == {}


@given(cookie_value)
def test_rendered_cookie_reads_back(value: str) -> None:
    """A Set-Cookie coatcheck renders is read back unchanged when the browser returns it."""
    rendered = set_cookie(CookieConfig(), "__Host-session", value)
    pair = rendered.split("; ", 1)[0]
    assert [value] == read_cookie([pair], "__Host-session")
