"""Typed session data: a schema checked on load (bad stored data gives a fresh session and a log
line, never a 500) and at commit, with typed views of the data."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal, NotRequired, TypedDict

import pydantic
import pytest

from coatcheck import auth
from coatcheck._core.http import RequestView
from coatcheck._core.schema import compile_schema
from coatcheck.errors import ConfigurationError, SessionDataError
from coatcheck.manager import SessionManager
from coatcheck.stores.memory import MemoryStore
from coatcheck.testing import FakeClock, test_config


class Item(TypedDict):
    sku: str
    qty: int


class CartData(TypedDict):
    cart: list[Item]
    theme: NotRequired[Literal["light", "dark"]]
    note: NotRequired[str | None]


@dataclasses.dataclass
class Prefs:
    views: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


class PrefsModel(pydantic.BaseModel):
    views: int = 0
    tags: list[str] = []


def request(token: str | None = None, *, bearer: bool = False) -> RequestView:
    headers: list[tuple[str, str]] = []
    if token and bearer:
        headers.append(("authorization", f"Bearer {token}"))
    elif token:
        headers.append(("cookie", f"coatcheck_session={token}"))
    return RequestView("GET", "https", headers, "192.0.2.1")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"cart": []}, None),
        ({"cart": [{"sku": "a", "qty": 1}], "theme": "dark", "note": None}, None),
        ({}, "missing cart"),
        ({"cart": [{"sku": "a", "qty": True}]}, "session.cart[0].qty: expected an integer"),
        ({"cart": [{"sku": "a"}]}, "session.cart[0]: missing qty"),
        ({"cart": [], "theme": "blue"}, "expected one of"),
        ({"cart": [], "other": 1}, "unexpected key 'other'"),
        ({"cart": {}}, "expected a list"),
        ({"cart": [], "note": 5}, "session.note"),
    ],
)
def test_typeddict_schema(data: dict[str, Any], error: str | None) -> None:
    """A TypedDict schema checks types, required and extra keys, literals and unions."""
    validate = compile_schema(CartData)
    if error is None:
        validate(data)
    else:
        with pytest.raises(SessionDataError, match=error.replace("[", r"\[").replace("]", r"\]")):
            validate(data)


def test_dataclass_and_pydantic_schemas() -> None:
    """A dataclass schema makes fields with defaults optional; a pydantic model is strict."""
    for schema in (Prefs, PrefsModel):
        validate = compile_schema(schema)
        validate({})
        validate({"views": 2, "tags": ["a"]})
        with pytest.raises(SessionDataError):
            validate({"views": "2"})


def test_a_schema_that_is_no_schema_fails_at_start_up() -> None:
    """A data_schema that is not a TypedDict, dataclass or model is refused by the config."""
    with pytest.raises(ConfigurationError):
        test_config(data_schema=int)


def test_bad_stored_data_gives_a_fresh_session_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session whose stored data no longer matches the schema (a deploy changed it) is
    dropped: a fresh anonymous session, the cookie cleared, the record deleted, a warning."""
    store = MemoryStore()
    old = SessionManager(store, test_config(), clock=FakeClock())
    session = old.open(request()).session
    session["cart"] = ["not an item"]
    auth.login(session, "u1")
    token = old.commit(session).token
    assert token is not None
    new = SessionManager(store, test_config(data_schema=CartData), clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="coatcheck"):
        opened = new.open(request(token))
    assert opened.session.is_new
    assert opened.clear_cookie
    assert store.get(token.split(".")[0]) is None
    assert any("does not match the schema" in r.getMessage() for r in caplog.records)


def test_bad_stored_data_on_a_bearer_token_is_401() -> None:
    """A bearer session with data the schema refuses ends: 401 invalid_token, never a 500."""
    store = MemoryStore()
    manager = SessionManager(store, test_config(), clock=FakeClock())
    token = manager.issue_token("u1")
    record = store.get(token.split(".")[0])
    assert record is not None
    record.data = {"cart": 5}
    store.delete(record.id)
    assert store.put(record, 0)
    typed = SessionManager(store, test_config(data_schema=CartData), clock=FakeClock())
    opened = typed.open(request(token, bearer=True))
    assert opened.error is not None
    assert opened.error.status_code == 401


def test_commit_refuses_data_that_does_not_match() -> None:
    """The app writing data the schema refuses is a bug, raised at commit (nothing stored)."""
    manager = SessionManager(MemoryStore(), test_config(data_schema=CartData), clock=FakeClock())
    session = manager.open(request()).session
    session["cart"] = [{"sku": "a", "qty": "one"}]
    with pytest.raises(SessionDataError):
        manager.commit(session)


def test_typed_views_read_and_write_the_data() -> None:
    """session.typed() gives the live data as a TypedDict, and a dataclass or model instance
    whose changes are written back at commit."""
    for schema, config_schema in ((CartData, CartData), (Prefs, Prefs), (PrefsModel, PrefsModel)):
        manager = SessionManager(
            MemoryStore(), test_config(data_schema=config_schema), clock=FakeClock()
        )
        session = manager.open(request()).session
        if schema is CartData:
            cart = session.typed(CartData)
            cart["cart"] = [{"sku": "a", "qty": 1}]
            expected: dict[str, Any] = {"cart": [{"sku": "a", "qty": 1}]}
        else:
            prefs = session.typed(schema)
            prefs.views += 3
            prefs.tags.append("x")
            expected = {"views": 3, "tags": ["x"]}
        token = manager.commit(session).token
        assert token is not None
        again = manager.open(request(token)).session
        assert dict(again) == expected
