"""Property tests for the token parser: only the exact ``<id>.<secret>`` shape is accepted,
and nothing a client sends makes parsing or the secret comparison raise."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from coatcheck._core.tokens import (
    ID_LENGTH,
    SECRET_LENGTH,
    TOKEN_LENGTH,
    format_token,
    hash_secret,
    is_session_id,
    new_id,
    new_secret,
    parse_token,
    secret_matches,
)

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SHAPE = re.compile(rf"[A-Za-z0-9_-]{{{ID_LENGTH}}}\.[A-Za-z0-9_-]{{{SECRET_LENGTH}}}")

b64 = st.text(alphabet=B64URL)
# Near misses: right length and alphabet but for one character, Unicode digits and letters
# (which \w would accept), a trailing newline (which $ would accept).
near_miss = st.builds(
    lambda ident, secret, junk, at: (format_token(ident, secret)[:at] + junk)[: TOKEN_LENGTH + 1],
    st.text(alphabet=B64URL, min_size=ID_LENGTH, max_size=ID_LENGTH),
    st.text(alphabet=B64URL, min_size=SECRET_LENGTH, max_size=SECRET_LENGTH),
    st.sampled_from(["\n", "=", ".", "+", "/", "\u0663", "\uff21", "ß", " ", "\x00", "é"]),
    st.integers(min_value=0, max_value=TOKEN_LENGTH),
)
anything = st.one_of(st.text(), b64, near_miss, st.text(alphabet=B64URL + ".", max_size=80))


@given(anything)
def test_parse_accepts_exactly_the_token_shape(value: str) -> None:
    """parse_token returns a pair only for the exact shape, and the pair formats back to it."""
    parsed = parse_token(value)
    if SHAPE.fullmatch(value) is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert value == format_token(*parsed)


@given(st.text(alphabet=B64URL, min_size=SECRET_LENGTH, max_size=SECRET_LENGTH), st.text())
def test_secret_comparison_never_raises(secret: str, stored_hash: str) -> None:
    """A parsed secret compared with any stored hash (even a corrupt one) gives a bool."""
    assert secret_matches(secret, stored_hash) is (stored_hash == hash_secret(secret))


def test_fresh_tokens_parse_and_match() -> None:
    """Every token coatcheck issues parses back to its id and secret, and its hash matches."""
    for _ in range(200):
        ident, secret = new_id(), new_secret()
        assert parse_token(format_token(ident, secret)) == (ident, secret)
        assert is_session_id(ident)
        assert secret_matches(secret, hash_secret(secret))


@given(anything)
def test_is_session_id_only_for_the_id_shape(value: str) -> None:
    """Admin endpoints accept only strings shaped like an issued id."""
    assert is_session_id(value) == (re.fullmatch(r"[A-Za-z0-9_-]{24}", value) is not None)
