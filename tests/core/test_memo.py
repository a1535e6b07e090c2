"""Parsed ``Cookie`` headers remembered (:mod:`coatcheck._core.memo`): a remembered parse is the
parse, only headers that carried a valid session are kept, and everything that decides whether a
session opens (revocation, expiry, a forged value) is still decided on every request. Decoded
records remembered: a remembered decode is the decode, copies are independent, bad text is never
kept."""

from __future__ import annotations

import tracemalloc

import pytest

from coatcheck._core.cookies import parse_cookies
from coatcheck._core.http import RequestView
from coatcheck._core.memo import (
    CHECKED,
    MEMO_HEADER_BYTES,
    MEMO_RECORD_BYTES,
    VALUES_KEPT,
    CheckedTokens,
    DecodedRecords,
    ParsedCookies,
    check_token,
)
from coatcheck._core.record import (
    CorruptRecordError,
    SessionRecord,
    record_from_json,
    record_to_json,
)
from coatcheck._core.tokens import hash_secret, new_id, new_secret
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import MemoryStore
from coatcheck.stores.sealed import SealedStore
from coatcheck.testing import FakeClock, test_config


def view(*cookie_headers: str) -> RequestView:
    return RequestView("GET", "https", [("cookie", h) for h in cookie_headers], "192.0.2.1")


def signed_in(store: MemoryStore | SealedStore) -> tuple[SessionManager, FakeClock, str]:
    """A manager and the Cookie header of a signed-in visitor (session and CSRF cookies)."""
    clock = FakeClock()
    manager = SessionManager(store, test_config(), clock=clock)
    session = manager.open(view()).session
    session.user_id = "42"
    session["cart"] = [{"sku": "a", "qty": 1}]
    committed = manager.commit(session)
    pairs = [h.split(";")[0] for name, h in committed.headers if name == "set-cookie"]
    return manager, clock, "; ".join(pairs)


def test_get_gives_the_named_cookies_of_what_keep_was_given_for_one_header_only() -> None:
    memo = ParsedCookies(("a", "b"))
    header = "a=1; b=2; c=3"
    parsed = parse_cookies([header])
    assert memo.get([header]) is None
    memo.keep([header], parsed)
    assert memo.get([header]) == {"a": ["1"], "b": ["2"]}
    assert memo.get([header, "c=3"]) is None  # two headers: always parsed
    memo.keep([header, "c=3"], parse_cookies([header, "c=3"]))
    assert len(memo) == 1


def test_long_headers_are_not_kept_and_the_memory_is_bounded() -> None:
    memo = ParsedCookies(("a", "n"), kept=16)
    long_header = "a=" + "x" * MEMO_HEADER_BYTES
    memo.keep([long_header], parse_cookies([long_header]))
    assert len(memo) == 0
    for i in range(100):
        memo.keep([f"n={i}"], parse_cookies([f"n={i}"]))
        assert len(memo) <= 16
    assert memo.get(["n=99"]) == {"n": ["99"]}
    assert memo.get(["n=0"]) is None  # the oldest went first


def test_a_server_store_session_is_parsed_once_and_still_checked_every_time() -> None:
    manager, _, header = signed_in(MemoryStore())
    assert len(manager._parsed) == 0
    first = manager.open(view(header))
    assert first.session.user_id == "42"
    assert len(manager._parsed) == 1
    again = manager.open(view(header))  # from the memory: the same session, the same CSRF
    assert again.session.user_id == "42"
    assert again.session.presented_xsrf == first.session.presented_xsrf != []
    assert again.session.id == first.session.id
    # Revoked: the remembered parse changes nothing about the store's answer.
    assert again.session.id is not None
    manager.store.delete(again.session.id)
    gone = manager.open(view(header))
    assert gone.session.user_id is None
    assert gone.session.id is None


def test_headers_without_a_valid_session_are_never_kept() -> None:
    manager, _, _ = signed_in(MemoryStore())
    name = manager.config.cookie.effective_name
    for i in range(50):
        forged = manager.open(view(f"{name}=AAAAAAAAAAAAAAAAAAAAAAAA.{i:043d}; x={i}"))
        assert forged.session.user_id is None
        assert manager.open(view(f"x={i}")).session.id is None  # anonymous
    assert len(manager._parsed) == 0


def test_a_sealed_session_is_parsed_once_it_comes_back_and_expiry_still_ends_it() -> None:
    manager, clock, header = signed_in(SealedStore())
    assert manager.sealed is not None
    # Sent back once, a value a write just sealed may be replaced at once (a cart filled click
    # after click): its header is not worth keeping yet. Sent back again, it is.
    assert manager.open(view(header)).session.user_id == "42"
    assert len(manager.sealed.parsed) == 0
    assert manager.open(view(header)).session.user_id == "42"
    assert len(manager.sealed.parsed) == 1
    assert manager.open(view(header)).session["cart"] == [{"sku": "a", "qty": 1}]
    clock.advance(manager.config.idle_timeout + 1)
    expired = manager.open(view(header))
    assert expired.session.user_id is None
    assert expired.clear_cookie


def test_writes_do_not_fill_the_memory() -> None:
    """Each write seals a new value, so each request of a run of writes sends a new header."""
    manager, _, header = signed_in(SealedStore())
    assert manager.sealed is not None
    for n in range(20):
        session = manager.open(view(header)).session
        session["n"] = n
        committed = manager.commit(session)
        cookies = dict(p.split("=", 1) for p in header.split("; "))
        for name, value in committed.headers:
            if name == "set-cookie":
                key, _, rest = value.partition("=")
                cookies[key] = rest.split(";")[0]
        header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    assert manager.open(view(header)).session["n"] == 19
    assert len(manager.sealed.parsed) == 0


def test_a_shared_parse_is_not_changed_by_a_request() -> None:
    """Two requests with one header share the parse; what one does to its session cannot
    reach the other's view of the cookies."""
    manager, _, header = signed_in(SealedStore())
    first = manager.open(view(header)).session
    first["cart"].append({"sku": "b", "qty": 2})
    manager.commit(first)
    second = manager.open(view(header)).session
    assert second["cart"] == [{"sku": "a", "qty": 1}]  # the old cookie still says what it said
    assert second.presented_xsrf == [second.csrf_token]


def test_made_up_headers_cannot_fill_memory() -> None:
    """Outside attack (round 5): 8 KiB headers of ~2,000 tiny cookies next to a valid session
    were kept whole, ~290 KiB of parsed dict each, 350 MB per process. Only the session and CSRF
    cookies are kept now, four values at most."""
    manager, _, header = signed_in(MemoryStore())
    name = manager.config.cookie.effective_name
    junk = "; ".join(f"{a}{b}=" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnop")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            made_up = f"{header}; n={i}; {junk}; {name}=x{i}; {name}=y{i}"[:MEMO_HEADER_BYTES]
            assert manager.open(view(made_up)).session.user_id == "42"
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(manager._parsed) == 300
    # Each header is ~8 KiB of text (kept as the key, and as the request's own string); the
    # parse of the whole header would be ~290 KiB more per entry.
    assert grown < 300 * 24 * 1024, grown


def test_kept_values_answer_the_request_path_as_the_full_parse_does() -> None:
    """At most VALUES_KEPT values per name are kept: the session cookies tried are the same,
    and a CSRF cookie sent several times is still seen as sent several times."""
    manager, _, header = signed_in(MemoryStore())
    xsrf = manager.config.csrf.cookie_name
    repeated = f"{header}; " + "; ".join(f"{xsrf}=t{i}" for i in range(VALUES_KEPT + 3))
    fresh = manager.open(view(repeated)).session  # parsed: kept for next time
    remembered = manager.open(view(repeated)).session
    assert len(manager._parsed) == 1
    assert remembered.user_id == fresh.user_id == "42"
    assert len(remembered.presented_xsrf) == VALUES_KEPT
    assert (remembered.presented_xsrf == [remembered.csrf_token]) is False
    assert (fresh.presented_xsrf == [fresh.csrf_token]) is False
    headers = dict(manager.commit(remembered).headers)
    assert "set-cookie" in headers  # the CSRF cookie is sent again, as after a full parse


# --- decoded records -----------------------------------------------------------------------------


def stored_text(**data: object) -> str:
    record = SessionRecord(
        id=new_id(),
        secret_hash=hash_secret(new_secret()),
        user_id="42",
        created_at=1000.0,
        last_seen_at=1000.0,
        expires_at=2800.0,
        absolute_expires_at=44200.0,
        data={"cart": [{"sku": "a", "qty": 1}], **data},
        flash=[{"level": "info", "message": "hi"}],
    )
    return record_to_json(record)


def test_a_remembered_decode_is_the_decode_and_every_copy_is_its_own() -> None:
    memo = DecodedRecords()
    text = stored_text()
    expected = record_from_json(text)
    first = memo.decode(text)  # noted
    second = memo.decode(text)  # decoded again, image kept
    third = memo.decode(text)  # a copy of the image
    assert first == second == third == expected
    assert memo._images[text] is not None
    # Changing what a read returned changes neither the memory nor the next read.
    for got in (first, second, third):
        got.data["cart"].append({"sku": "b", "qty": 2})
        got.flash.clear()
        got.user_id = "someone else"
    assert memo.decode(text) == expected
    assert memo.decode(text.encode()) == expected  # a client that gives bytes


def test_text_that_does_not_decode_raises_every_time_and_is_never_kept() -> None:
    memo = DecodedRecords()
    for bad in ('{"id": 1}', "[]", "{", "\x00", b"\xff\xfe", '{"a": NaN}'):
        for _ in range(3):
            with pytest.raises(CorruptRecordError):
                memo.decode(bad)
    assert len(memo) == 0


def test_the_memory_is_bounded_and_long_records_are_not_kept() -> None:
    memo = DecodedRecords(kept=64)
    for n in range(500):
        text = stored_text(n=n)
        memo.decode(text)
        memo.decode(text)
    assert len(memo) <= 64
    long = stored_text(blob="x" * MEMO_RECORD_BYTES)
    assert memo.decode(long) == memo.decode(long) == record_from_json(long)
    assert long not in memo._images


# --- tokens that opened a session ------------------------------------------------------------


def token_of(header: str, manager: SessionManager) -> str:
    name = manager.config.cookie.effective_name
    return next(p.split("=", 1)[1] for p in header.split("; ") if p.startswith(f"{name}="))


def test_a_token_is_parsed_and_hashed_once_it_opened_a_session_and_checked_every_time() -> None:
    """A token that opened a session is kept with exactly what parsing and hashing it give; a
    revoked one, or the same id with another secret, still opens nothing."""
    manager, clock, header = signed_in(MemoryStore())
    token = token_of(header, manager)
    CHECKED._known.pop(token, None)
    assert manager.open(view(header)).session.user_id == "42"
    assert CHECKED.get(token) == check_token(token) == (token[:24], hash_secret(token[25:]))
    assert manager.open(view(header)).session.user_id == "42"  # from the memory
    name = manager.config.cookie.effective_name
    forged = f"{token[:25]}{new_secret()}"  # the same id, another secret
    opened = manager.open(view(f"{name}={forged}"))
    assert opened.session.user_id is None
    assert CHECKED.get(forged) is None
    assert manager.open(view(f"Authorization=x; {name}={token}")).session.user_id == "42"
    clock.advance(manager.config.idle_timeout + 1)  # expired: decided now, not remembered
    assert manager.open(view(header)).session.user_id is None
    manager2, _, header2 = signed_in(MemoryStore())
    token2 = token_of(header2, manager2)
    assert manager2.open(view(header2)).session.user_id == "42"
    session_id = CHECKED.get(token2)
    assert session_id is not None
    manager2.store.delete(session_id[0])  # revoked
    assert manager2.open(view(header2)).session.user_id is None


def test_tokens_that_open_nothing_are_never_kept_and_the_memory_is_bounded() -> None:
    manager, _, _ = signed_in(MemoryStore())
    name = manager.config.cookie.effective_name
    before = len(CHECKED)
    for _ in range(50):
        made_up = f"{new_id()}.{new_secret()}"  # well formed, no such session
        assert manager.open(view(f"{name}={made_up}")).session.id is None
        assert CHECKED.get(made_up) is None
        assert manager.open(view(f"{name}=not-a-token")).session.id is None
    assert len(CHECKED) == before
    small = CheckedTokens(kept=64)
    for _ in range(500):
        token = f"{new_id()}.{new_secret()}"
        checked = check_token(token)
        assert checked is not None
        small.keep(token, *checked)
    assert len(small) <= 64
