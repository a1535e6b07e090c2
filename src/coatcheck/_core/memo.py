"""Small bounded memories on the request path (no I/O, thread-safe for insertion).

A browser sends the same ``Cookie`` header on every request until a cookie changes, so the
header text is a good key: :class:`ParsedCookies` remembers what
:func:`~coatcheck._core.cookies.parse_cookies` made of a header that carried a valid session,
and the next request with exactly that header skips the parse. Parsing is a pure function of the
header text, so a remembered result is the very result a new parse would give.

Likewise a session that is only read comes back from its store as the same JSON text request
after request: :class:`DecodedRecords` keeps the decoded and checked record of a text read twice,
and hands out copies of it (:class:`~coatcheck._core.record.RecordImage`).
"""

from __future__ import annotations

import threading
from typing import Any

from .record import RecordImage, SessionRecord, record_from_json
from .tokens import hash_secret, parse_token

PARSED_COOKIES_KEPT = 1024
MEMO_HEADER_BYTES = 8 * 1024
"""Longer ``Cookie`` headers are parsed every time."""
VALUES_KEPT = 4
"""Values kept per remembered cookie name: the request path tries the first four session cookies
(:func:`~coatcheck._core.http.presented_token`) and only asks whether the CSRF cookie was sent
exactly once with the session's token, which four values answer as well as any number."""


def bounded_insert(kept: dict[str, Any], key: str, value: Any, limit: int) -> None:
    """Insert into ``kept``, first forgetting the oldest eighth once it holds ``limit`` keys
    (dicts keep insertion order). The caller holds the lock that guards ``kept``."""
    if len(kept) >= limit:
        for stale in list(kept)[: max(1, limit // 8)]:
            kept.pop(stale, None)
    kept[key] = value


class ParsedCookies:
    """Parsed ``Cookie`` headers, by header text, for requests that send exactly one header.

    Only the cookies named at construction are kept (the session's and the CSRF cookie), at most
    :data:`VALUES_KEPT` values each, so an entry costs its header (at most
    :data:`MEMO_HEADER_BYTES`) and a few substrings of it: about 20 MiB for a full memory, however
    the headers are made up. What :meth:`get` returns is shared by every request with that
    header: read it, never change it. Only :meth:`keep` inserts, and callers keep a header only
    once it carried a valid session; a client holding a session can still push other browsers'
    headers out with made-up ones, which costs those browsers a parse, nothing else.
    """

    def __init__(self, names: tuple[str, ...], kept: int = PARSED_COOKIES_KEPT) -> None:
        self._names = names
        self._kept = kept
        self._parsed: dict[str, dict[str, list[str]]] = {}
        self._lock = threading.Lock()

    def get(self, headers: list[str]) -> dict[str, list[str]] | None:
        """The parse of ``headers`` (the named cookies only) if remembered, else ``None``."""
        return self._parsed.get(headers[0]) if len(headers) == 1 else None

    def keep(self, headers: list[str], parsed: dict[str, list[str]]) -> None:
        """Remember the named cookies of ``parsed``, the parse of ``headers`` (one header of at
        most :data:`MEMO_HEADER_BYTES`; anything else is not remembered)."""
        if len(headers) != 1 or len(headers[0]) > MEMO_HEADER_BYTES:
            return
        named = {n: parsed[n][:VALUES_KEPT] for n in self._names if n in parsed}
        with self._lock:
            bounded_insert(self._parsed, headers[0], named, self._kept)

    def __len__(self) -> int:
        return len(self._parsed)


DECODED_KEPT = 1024
MEMO_RECORD_BYTES = 8 * 1024
"""Longer stored records are decoded every time."""


class DecodedRecords:
    """Stored session records decoded from JSON, by text, once a text was read twice.

    Decoding is a pure function of the text (:func:`~coatcheck._core.record.record_from_json`,
    which also checks every field), so a copy of a remembered decode is the very record a new
    decode would give, and each copy is independent. A text seen once is only noted (a record
    written on every request is read once per text and never pays for an image); the second
    read keeps the image, later ones copy it: two ``marshal.loads`` instead of decoding and
    checking the JSON again. At most :data:`DECODED_KEPT` texts of at most
    :data:`MEMO_RECORD_BYTES` (about 20 MiB at worst). A text that does not decode raises
    :class:`~coatcheck._core.record.CorruptRecordError` every time and is never kept.
    """

    def __init__(self, kept: int = DECODED_KEPT) -> None:
        self._kept = kept
        self._images: dict[str, RecordImage | None] = {}
        self._lock = threading.Lock()

    def decode(self, raw: str | bytes) -> SessionRecord:
        """The record stored as ``raw``."""
        if type(raw) is bytes:  # a client that does not decode replies
            try:
                raw = raw.decode()
            except UnicodeDecodeError:
                return record_from_json(raw)  # raises CorruptRecordError
        if type(raw) is not str or len(raw) > MEMO_RECORD_BYTES:
            return record_from_json(raw)
        image = self._images.get(raw)
        if image is not None:
            return image.copy()
        record = record_from_json(raw)
        with self._lock:
            if raw in self._images:  # the second read: keep its image
                self._images[raw] = RecordImage(record)
            else:
                bounded_insert(self._images, raw, None, self._kept)
        return record

    def __len__(self) -> int:
        return len(self._images)


DECODED = DecodedRecords()
"""The process's memory of decoded records, shared by the stores that read JSON text."""


CHECKED_KEPT = 4096


class CheckedTokens:
    """Session tokens already seen to open a session, by token text: its id and the SHA-256 of
    its secret, so the next request with that token neither parses nor hashes it again.

    Both are pure functions of the text (:func:`~coatcheck._core.tokens.parse_token`,
    :func:`~coatcheck._core.tokens.hash_secret`), so a remembered pair is exactly what the work
    would give; whether the token still opens a session (the stored hash, revocation, expiry)
    is decided on every request as before. Only :meth:`keep` inserts, and callers keep a token
    only once it opened a session: made-up tokens never enter. At most :data:`CHECKED_KEPT`
    tokens (about 1.5 MiB).
    """

    def __init__(self, kept: int = CHECKED_KEPT) -> None:
        self._kept = kept
        self._known: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[str, str] | None:
        """``(session id, secret hash)`` of a token kept before, else ``None``."""
        return self._known.get(token)

    def keep(self, token: str, session_id: str, secret_hash: str) -> None:
        with self._lock:
            bounded_insert(self._known, token, (session_id, secret_hash), self._kept)

    def __len__(self) -> int:
        return len(self._known)


def check_token(token: str) -> tuple[str, str] | None:
    """``(session id, secret hash)`` of a token, or ``None`` when it is malformed: the work
    :class:`CheckedTokens` saves (for tests and for callers without the memory)."""
    parsed = parse_token(token)
    return None if parsed is None else (parsed[0], hash_secret(parsed[1]))


CHECKED = CheckedTokens()
"""The process's memory of tokens that opened a session (see :class:`CheckedTokens`)."""
