"""Session tokens: ``<id>.<secret>``.

The id (144 bits) is the public handle a store is keyed by; the secret (256 bits) is never stored,
only its SHA-256. Both come from :mod:`secrets` and are base64url without padding. The format is
checked here, before any store call, so junk never reaches a database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

ID_BYTES = 18  # 144 bits -> 24 base64url characters
SECRET_BYTES = 32  # 256 bits -> 43 base64url characters
ID_LENGTH = 24
SECRET_LENGTH = 43
TOKEN_LENGTH = ID_LENGTH + 1 + SECRET_LENGTH

_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{{ID_LENGTH}}}")
_TOKEN_RE = re.compile(rf"([A-Za-z0-9_-]{{{ID_LENGTH}}})\.([A-Za-z0-9_-]{{{SECRET_LENGTH}}})")


def new_id() -> str:
    """A fresh public session id. Never starts with ``-``: an operator passes ids to command-line
    tools (``coatcheck revoke --session ID``), where a leading dash reads as an option. Drawing
    again when it does costs log2(64/63) < 0.03 bits of the id's 144."""
    while True:
        session_id = secrets.token_urlsafe(ID_BYTES)
        if not session_id.startswith("-"):
            return session_id


def new_secret() -> str:
    """A fresh session secret (only its hash is ever stored)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret, hex. A 256-bit random secret needs no slow hash or salt."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Compare a presented secret to a stored hash in constant time."""
    return hash_matches(hash_secret(secret), secret_hash)


def hash_matches(presented_hash: str, secret_hash: str) -> bool:
    """Compare the hash of a presented secret to a stored hash in constant time."""
    # Both are ASCII text (hex digests), which compare_digest takes as they are.
    return secret_hash.isascii() and hmac.compare_digest(presented_hash, secret_hash)


def parse_token(value: str) -> tuple[str, str] | None:
    """Split ``<id>.<secret>``; ``None`` for anything not exactly of that shape."""
    if len(value) != TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.fullmatch(value)
    if match is None:
        return None
    return match.group(1), match.group(2)


def is_session_id(value: str) -> bool:
    """True when ``value`` has the shape of a public session id (for admin endpoints)."""
    return _ID_RE.fullmatch(value) is not None


def format_token(session_id: str, secret: str) -> str:
    return f"{session_id}.{secret}"


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
