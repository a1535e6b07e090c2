"""Cookie parsing is byte-exact and never raises; rendering spells every attribute."""

from __future__ import annotations

import pytest

from coatcheck._core.config import CookieConfig
from coatcheck._core.cookies import clear_cookie, read_cookie, set_cookie

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


def test_oversized_header_is_skipped() -> None:
    """A Cookie header over 8 KiB is ignored whole."""
    assert read_cookie([f"{NAME}=x; pad={'p' * 9000}"], NAME) == []


def test_quoted_value_is_unquoted() -> None:
    assert read_cookie([f'{NAME}="abc"'], NAME) == ["abc"]


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
