"""Tokens: shape, entropy, hashing, parsing."""

from __future__ import annotations

import pytest

from coatcheck._core import tokens


def test_token_shape_and_entropy() -> None:
    """Ids carry 144 bits and secrets 256 bits of CSPRNG output, base64url, joined by a dot."""
    sid, secret = tokens.new_id(), tokens.new_secret()
    assert (len(sid), len(secret)) == (24, 43)
    assert tokens.parse_token(tokens.format_token(sid, secret)) == (sid, secret)
    assert len({tokens.new_id() for _ in range(1000)}) == 1000


def test_only_a_hash_is_stored_and_compared() -> None:
    """The stored hash is SHA-256 hex of the secret; a different secret never matches."""
    secret = tokens.new_secret()
    stored = tokens.hash_secret(secret)
    assert len(stored) == 64
    assert secret not in stored
    assert tokens.secret_matches(secret, stored)
    assert not tokens.secret_matches(tokens.new_secret(), stored)


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "a" * 68,
        "a" * 24 + "." + "b" * 42,
        "a" * 24 + "." + "b" * 44,
        "a" * 23 + ".." + "b" * 43,
        "a" * 24 + "." + "b" * 42 + "=",
        "a" * 24 + "." + "b" * 42 + "/",
        "a" * 24 + "." + "b" * 42 + "\n",
        "\u0430" * 24 + "." + "b" * 43,
        "a" * 24 + "|" + "b" * 43,
    ],
)
def test_malformed_tokens_are_rejected_before_any_store_call(value: str) -> None:
    """Anything not exactly <24 b64url>.<43 b64url> parses to None."""
    assert tokens.parse_token(value) is None


def test_session_ids_never_start_with_a_dash() -> None:
    """Public ids never start with "-", so `coatcheck revoke --session ID` always parses."""
    assert not any(tokens.new_id().startswith("-") for _ in range(5000))
