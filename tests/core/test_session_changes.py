"""How a Session finds what a request changed, and how that change meets a newer record."""

from __future__ import annotations

from typing import Any

import pytest

from coatcheck import AsyncSessionManager, auth
from coatcheck._core.http import RequestView
from coatcheck.admin import SessionAdmin
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.testing import CountingStore, FakeClock, test_config


def request(token: str | None = None, *, bearer: bool = False) -> RequestView:
    headers: list[tuple[str, str]] = []
    if token and bearer:
        headers.append(("authorization", f"Bearer {token}"))
    elif token:
        headers.append(("cookie", f"coatcheck_session={token}"))
    return RequestView("GET", "https", headers, "192.0.2.1")


def setup(**data: object) -> tuple[SessionManager, str]:
    manager = SessionManager(MemoryStore(), test_config(), clock=FakeClock())
    session = manager.open(request()).session
    session.update(data)
    token = manager.commit(session).token
    assert token is not None
    return manager, token


def test_untouched_keys_are_not_changes() -> None:
    """Reading one key snapshots only that key; nothing read and nothing written is no change."""
    manager, token = setup(a=[1], b={"x": 1})
    session = manager.open(request(token)).session
    assert session["a"] == [1]
    assert not session._changes()
    assert not session.is_modified


def test_nested_mutation_is_a_change() -> None:
    """Appending to a loaded list in place is found at commit without any flag."""
    manager, token = setup(a=[1])
    session = manager.open(request(token)).session
    session["a"].append(2)
    changes = session._changes()
    assert changes.set == {"a": [1, 2]}
    assert changes.loaded == {"a": [1]}


def test_delete_and_re_add_same_value_is_no_change() -> None:
    """A key removed and set again to the value it had is not a change."""
    manager, token = setup(a=1)
    session = manager.open(request(token)).session
    del session["a"]
    session["a"] = 1
    assert not session._changes()


def test_increment_and_set_ops_return_and_store_values() -> None:
    """increment() returns the new number; set ops keep a list without duplicates."""
    manager, token = setup(other=True)
    session = manager.open(request(token)).session
    assert session.increment("n") == 1
    assert session.increment("n", 2.5) == 3.5
    session.add_to_set("s", "a")
    session.add_to_set("s", "a")
    session.add_to_set("s", 2)
    session.discard_from_set("s", "a")
    manager.commit(session)
    again = manager.open(request(token)).session
    assert (again["n"], again["s"]) == (3.5, [2])


def test_ops_refuse_wrong_types() -> None:
    """increment() on a string, a bool amount or a non-scalar set element is a TypeError."""
    manager, token = setup(name="x")
    session = manager.open(request(token)).session
    with pytest.raises(TypeError):
        session.increment("name")
    with pytest.raises(TypeError):
        session.increment("n", True)
    with pytest.raises(TypeError):
        session.add_to_set("s", ["not", "scalar"])
    assert session["name"] == "x"
    assert "n" not in session


def test_assignment_after_increment_is_merged_as_a_value() -> None:
    """An increment followed by a plain assignment is not replayed as an increment: the
    assignment is what the request meant, and it merges like any other value."""
    manager, token = setup(n=1)
    first = manager.open(request(token)).session
    other = manager.open(request(token)).session
    other.increment("n")
    manager.commit(other)  # n == 2
    first.increment("n")
    first["n"] = 10
    manager.commit(first)
    assert manager.open(request(token)).session["n"] == 10


def test_increment_meets_a_counter_someone_made_a_string() -> None:
    """When the newer record holds a non-number where the counter was, the increment cannot
    apply and the request's value wins as a conflict (no exception at commit)."""
    manager, token = setup(n=1)
    first = manager.open(request(token)).session
    other = manager.open(request(token)).session
    other["n"] = "reset"
    manager.commit(other)
    first.increment("n")
    manager.commit(first)
    assert manager.open(request(token)).session["n"] == 2


def test_different_user_login_drops_what_a_concurrent_request_added() -> None:
    """A different user signing in starts from an empty session even when another request
    added a key after this one loaded the session."""
    manager, token = setup(secret_of_a="x")
    session = manager.open(request(token)).session
    auth.login(session, "a")
    token = manager.commit(session).token
    assert token is not None
    switching = manager.open(request(token)).session
    other = manager.open(request(token)).session
    other["added"] = "by a"
    manager.commit(other)
    auth.login(switching, "b")
    token = manager.commit(switching).token
    assert token is not None
    final = manager.open(request(token)).session
    assert (final.user_id, dict(final)) == ("b", {})


def test_bearer_login_keeps_its_token_and_ends_other_sessions() -> None:
    """A bearer client that signs in again or changes its password keeps its token (a new one
    could not be delivered), gets a new auth time, and its other sessions still end."""
    clock = FakeClock()
    manager = SessionManager(MemoryStore(), test_config(), clock=clock)
    admin = SessionAdmin(manager)
    token = manager.issue_token("u1")
    other = manager.issue_token("u1")
    clock.advance(60)
    session = manager.open(request(token, bearer=True)).session
    admin.revoke_all("u1", keep=session.id)
    auth.login(session, "u1")
    committed = manager.commit(session)
    assert committed.token is None
    assert committed.headers == []
    again = manager.open(request(token, bearer=True))
    assert again.error is None
    assert again.session.user_id == "u1"
    assert again.session.auth_time == clock.now
    assert manager.open(request(other, bearer=True)).error is not None


@pytest.mark.parametrize(
    ("loaded", "mutate"),
    [
        ([True], lambda v: v.__setitem__(0, 1)),
        ([1], lambda v: v.__setitem__(0, 1.0)),
        ({"a": 1}, lambda v: v.__setitem__("a", True)),
        ([[1, 2]], lambda v: v[0].append(3)),
        ({"a": {"b": []}}, lambda v: v["a"]["b"].append(None)),
    ],
)
def test_in_place_changes_between_json_types_are_found(loaded: object, mutate: Any) -> None:
    """Changing true into 1, or 1 into 1.0, in place is a change: JSON tells them apart."""
    manager, token = setup(v=loaded)
    session = manager.open(request(token)).session
    mutate(session["v"])
    assert list(session._changes().set) == ["v"]


def test_scalar_type_change_by_assignment_is_found() -> None:
    """Assigning 1.0 where 1 was, or True where 1 was, is a change."""
    manager, token = setup(a=1, b=1)
    session = manager.open(request(token)).session
    session["a"] = 1.0
    session["b"] = True
    assert sorted(session._changes().set) == ["a", "b"]


def test_unread_flash_waits_for_the_request_that_reads_it() -> None:
    """A flash claimed by a request that never reads it (a redirect, a background fetch) goes
    back to the store, and is delivered once to the next request that reads flashes."""
    manager, token = setup(a=1)
    session = manager.open(request(token)).session
    session.flash("saved")
    manager.commit(session)
    redirect = manager.open(request(token)).session
    manager.commit(redirect)  # never looked at the flashes
    page = manager.open(request(token)).session
    assert page.flashes == [{"message": "saved", "category": "info"}]
    manager.commit(page)
    assert manager.open(request(token)).session.flashes == []


def test_unread_flash_keeps_its_place_before_newer_ones() -> None:
    """Messages handed back come before messages flashed meanwhile, in order."""
    manager, token = setup(a=1)
    first = manager.open(request(token)).session
    first.flash("one")
    manager.commit(first)
    passing = manager.open(request(token)).session
    passing.flash("two")
    manager.commit(passing)
    page = manager.open(request(token)).session
    assert [f["message"] for f in page.flashes] == ["one", "two"]


def test_logout_carries_a_flash_and_later_values_into_a_new_anonymous_session() -> None:
    """A flash (or a value) set around logout() survives it in a fresh anonymous session; the
    signed-in session's data and user do not."""
    manager, token = setup(cart=["secret item"])
    session = manager.open(request(token)).session
    auth.login(session, "u1")
    token = manager.commit(session).token
    assert token is not None
    leaving = manager.open(request(token)).session
    auth.logout(leaving)
    leaving.flash("You have been signed out")
    leaving["lang"] = "fr"
    committed = manager.commit(leaving)
    assert committed.token is not None
    assert any(v.startswith("coatcheck_session=") for _, v in committed.headers)
    assert manager.open(request(token)).session.is_new  # the signed-in session is gone
    after = manager.open(request(committed.token)).session
    assert after.user_id is None
    assert dict(after) == {"lang": "fr"}
    assert after.flashes == [{"message": "You have been signed out", "category": "info"}]


def test_plain_logout_still_clears_the_cookies() -> None:
    """A logout with nothing to carry stores nothing and clears both cookies."""
    manager, token = setup(cart=["x"])
    session = manager.open(request(token)).session
    auth.logout(session)
    committed = manager.commit(session)
    assert committed.token is None
    assert len([h for h in committed.headers if h[0] == "set-cookie"]) == 2
    assert manager.store.user_ids(manager.clock()) == []


async def test_login_is_one_store_operation_after_the_read() -> None:
    """Committing a login costs one store call (replace: new record in, old one out) on top of
    the read that opened the session."""
    store = CountingStore(AsyncMemoryStore())
    manager = AsyncSessionManager(store, test_config(), clock=FakeClock())
    opened = await manager.open(request())
    opened.session["cart"] = ["tea"]
    token = (await manager.commit(opened.session)).token
    assert token is not None
    store.reset()
    session = (await manager.open(request(token))).session
    auth.login(session, "u1")
    assert (await manager.commit(session)).token is not None
    assert dict(store.calls) == {"get": 1, "replace": 1}


def test_remember_me_turned_off_gives_a_browser_session_cookie() -> None:
    """With allow_remember=False, login(remember=True) stores an ordinary session and its
    cookie has no Max-Age (it ends with the browser)."""
    manager = SessionManager(MemoryStore(), test_config(allow_remember=False), clock=FakeClock())
    session = manager.open(request()).session
    auth.login(session, "u1", remember=True)
    committed = manager.commit(session)
    assert committed.token is not None
    cookie = next(v for k, v in committed.headers if v.startswith("coatcheck_session="))
    assert "Max-Age" not in cookie
    record = manager.store.get(committed.token.split(".")[0])
    assert record is not None
    assert record.remember is False


def test_login_with_a_credential_binds_the_session_to_it() -> None:
    """login(credential=...) stores a fingerprint (an HMAC, not the credential) that matches
    the same credential, not a changed one, and still matches after the secret is rotated."""
    from coatcheck._core import signin

    config = test_config()
    manager = SessionManager(MemoryStore(), config, clock=FakeClock())
    session = manager.open(request()).session
    auth.login(session, "u1", credential="$argon2id$old-hash")
    token = manager.commit(session).token
    assert token is not None
    stored = manager.open(request(token)).session
    assert stored.auth_hash
    assert "old-hash" not in stored.auth_hash
    assert signin.credential_matches(config.secrets, "u1", stored.auth_hash, "$argon2id$old-hash")
    assert not signin.credential_matches(
        config.secrets, "u1", stored.auth_hash, "$argon2id$new-hash"
    )
    assert not signin.credential_matches(
        config.secrets, "u2", stored.auth_hash, "$argon2id$old-hash"
    )
    rotated = test_config(
        secret="a-new-secret-0123456789-abcdefghijklmn", previous_secrets=(config.secret,)
    )
    assert signin.credential_matches(rotated.secrets, "u1", stored.auth_hash, "$argon2id$old-hash")


def test_login_without_a_credential_is_not_bound() -> None:
    """A login without credential stores no fingerprint, and anything matches it."""
    from coatcheck._core import signin

    manager, token = setup(a=1)
    session = manager.open(request(token)).session
    auth.login(session, "u1")
    token = manager.commit(session).token
    assert token is not None
    stored = manager.open(request(token)).session
    assert stored.auth_hash == ""
    assert signin.credential_matches(manager.config.secrets, "u1", "", "anything")


def test_only_json_values_are_accepted_and_scalars_skip_the_encoder() -> None:
    """Setting a value checks that it encodes as JSON, so a commit can never fail on it: plain
    str, bool, None and ints of up to 18 digits need no encoding to know; everything else is
    encoded once (huge ints, NaN, infinities and objects are refused at once, a lone surrogate
    is accepted as on every store)."""
    manager, token = setup(seed=1)
    session = manager.open(request(token)).session
    for bad in (10**5000, float("nan"), float("-inf"), object(), {"k": {1, 2}}, [b"bytes"]):
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            session["x"] = bad
    good: dict[str, Any] = {
        "s": "a\ud800b",
        "b": False,
        "n": None,
        "i": 10**18 - 1,
        "big": 10**40,
        "f": 0.5,
        "nested": {"l": [1, "2", None]},
    }
    session.update(good)
    committed = manager.commit(session)
    assert committed.token is None  # the same session, changed in place
    reopened = manager.open(request(token)).session
    assert {k: reopened[k] for k in good} == good
