"""Cookie parsing is byte-exact and never raises; rendering spells every attribute."""

from __future__ import annotations

import pytest

from coatcheck._core.config import CookieConfig
from coatcheck._core.cookies import (
    MAX_COOKIE_HEADER_BYTES,
    clear_cookie,
    device_cookie_name,
    parse_cookies,
    read_cookie,
    set_cookie,
)

NAME = "__Host-session"


def test_reads_exact_name_across_several_headers() -> None:
    """Values are found in every Cookie header, in order."""
    assert read_cookie(["a=1; __Host-session=x", "__Host-session=y"], NAME) == ["x", "y"]


@pytest.mark.parametrize(
    "header",
    [
        "__%48ost-session=x",
        "__host-session=x",
        " __Host-session =x",
        "__Host-session =x",
        "\t__Host-session=x",
        "__Host-session\x00=x",
        "__Host-sessionX=x",
        "X__Host-session=x",
    ],
)
def test_name_tricks_do_not_match(header: str) -> None:
    """URL-encoded, case-folded or whitespace-padded names are different names."""
    assert read_cookie([header], NAME) == []


@pytest.mark.parametrize("value", ["a\x01b", "a b", "é", "a\\b", "x" * 5000])
def test_bad_values_are_ignored(value: str) -> None:
    """Control characters, non-ASCII and oversized values are skipped, not raised on."""
    assert read_cookie([f"{NAME}={value}"], NAME) == []


def test_session_cookie_is_found_in_a_header_over_8_kib() -> None:
    """A Cookie header of many cookies (over 8 KiB, under the 32 KiB cap) is read in full, so
    the session cookie behind the padding is found rather than the whole header dropped."""
    padding = "; ".join(f"c{i}={'p' * 200}" for i in range(60))
    assert (len(padding) > 8192, read_cookie([f"{padding}; {NAME}=x"], NAME)) == (True, ["x"])


def test_headers_beyond_the_cap_are_not_read() -> None:
    """Cookie headers past MAX_COOKIE_HEADER_BYTES in all are not parsed (the middlewares
    refuse such requests with 431 before parsing)."""
    big = f"pad={'p' * MAX_COOKIE_HEADER_BYTES}"
    assert read_cookie([f"{NAME}=a", big, f"{NAME}=b"], NAME) == ["a"]


def test_parsing_a_capped_header_takes_linear_work() -> None:
    """Thousands of tiny pairs in one capped header parse to one value per name, in order."""
    header = ";".join(["a=1"] * (MAX_COOKIE_HEADER_BYTES // 4))
    assert len(read_cookie([header], "a")) == MAX_COOKIE_HEADER_BYTES // 4


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CookieConfig(), "__Host-device"),
        (CookieConfig(domain="example.com"), "__Secure-device"),
        (CookieConfig(secure=False), "coatcheck_device"),
        (CookieConfig(name="sid"), "coatcheck_device"),
    ],
)
def test_device_cookie_takes_the_session_cookies_prefix(
    config: CookieConfig, expected: str
) -> None:
    """The login guard's device cookie gets the strongest prefix the session cookie has."""
    assert device_cookie_name(config) == expected


def test_quoted_value_is_unquoted() -> None:
    assert read_cookie([f'{NAME}="abc"'], NAME) == ["abc"]


@pytest.mark.parametrize(
    "header",
    [
        f"{NAME}=k",
        f"{NAME}=k;{NAME}=a b;{NAME}=k2",
        f'x=1; {NAME}="k"; {NAME}=\x01; ; =; {NAME}; y=2;',
        f"{NAME}=k; XSRF-TOKEN=t; {NAME}=é; {NAME}=k",
        f";;  {NAME}=k; {NAME}={'k' * 5000}; {NAME}=k2",
        "",
        ";",
    ],
)
def test_known_values_parse_as_the_full_check_would(header: str) -> None:
    """Values passed as known (remembered seals) skip the character check, and nothing else:
    the pairs found, their order, duplicates, quoted and refused values are the same."""
    expected = parse_cookies([header, f"{NAME}=k2"])
    assert parse_cookies([header, f"{NAME}=k2"], {"k", "k2", "t"}) == expected
    assert parse_cookies([header, f"{NAME}=k2"], set()) == expected


def test_known_values_respect_the_header_cap() -> None:
    big = f"pad={'p' * MAX_COOKIE_HEADER_BYTES}"
    assert parse_cookies([f"{NAME}=a", big, f"{NAME}=a"], {"a"}) == {NAME: ["a"]}


def test_set_and_clear_spell_attributes() -> None:
    """Set-Cookie carries Path, Secure, HttpOnly and SameSite; clearing expires it."""
    config = CookieConfig()
    assert set_cookie(config, NAME, "t") == f"{NAME}=t; Path=/; Secure; HttpOnly; SameSite=Lax"
    assert set_cookie(config, "XSRF-TOKEN", "c", http_only=False, max_age=10) == (
        "XSRF-TOKEN=c; Max-Age=10; Path=/; Secure; SameSite=Lax"
    )
    cleared = clear_cookie(config, NAME)
    assert "Max-Age=0" in cleared
    assert cleared.startswith(f'{NAME}=""')
