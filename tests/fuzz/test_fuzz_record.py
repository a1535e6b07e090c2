"""Property tests for record decoding, and what a corrupt stored record does to a request.

The documented behaviour (``coatcheck._core.record.CorruptRecordError``): decoding accepts exactly
the records coatcheck writes (every required field present with its JSON type, finite times,
valid Unicode, ASCII token fields) and raises ``CorruptRecordError`` for anything else; no other
exception escapes. A store handing back a corrupt record for a presented token opens nothing:
an anonymous session with the cookie cleared (cookie) or a 401 (bearer), never a 500, never a
session built from unchecked fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coatcheck import auth
from coatcheck._core import record as record_module
from coatcheck._core.http import RequestView
from coatcheck._core.record import (
    CorruptRecordError,
    SessionRecord,
    record_from_json,
    record_to_dict,
    record_to_json,
)
from coatcheck.admin import SessionAdmin
from coatcheck.asgi import SessionMiddleware
from coatcheck.errors import StoreUnavailableError
from coatcheck.integrations.starlette import get_session, issue_token
from coatcheck.manager import AsyncSessionManager, SessionManager
from coatcheck.stores.base import AsyncStore
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore
from coatcheck.stores.redis import AsyncRedisStore
from coatcheck.stores.sql import AsyncSQLStore
from coatcheck.testing import FakeClock, test_config
from tests.backends.redis import delete_prefix_async, new_prefix, shared_url

COOKIE = "coatcheck_session"
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
ascii_text = st.text(alphabet=st.characters(codec="ascii"), max_size=70)
records = st.builds(
    SessionRecord,
    id=ascii_text,
    secret_hash=ascii_text,
    created_at=finite,
    last_seen_at=finite,
    expires_at=finite,
    absolute_expires_at=finite,
    version=st.integers(min_value=0, max_value=2**62),
    user_id=st.none() | st.text(max_size=30),
    data=st.dictionaries(st.text(max_size=10), json_value, max_size=5),
    flash=st.lists(json_value, max_size=3),
    csrf_token=ascii_text,
    auth_time=st.none() | finite,
    transport=st.sampled_from(["cookie", "bearer"]),
    remember=st.booleans(),
    user_agent=st.text(max_size=30),
    ip=st.text(max_size=30),
    label=st.text(max_size=30),
)


def well_typed(record: SessionRecord) -> bool:
    """The types the core relies on, checked independently of the decoder."""
    times = [record.created_at, record.last_seen_at, record.expires_at, record.absolute_expires_at]
    if record.auth_time is not None:
        times.append(record.auth_time)
    return (
        all(type(t) is float and math.isfinite(t) for t in times)
        and type(record.version) is int
        and record.version >= 0
        and all(
            isinstance(s, str) and s.isascii()
            for s in (record.id, record.secret_hash, record.csrf_token)
        )
        and all(isinstance(s, str) for s in (record.user_agent, record.ip, record.label))
        and (record.user_id is None or isinstance(record.user_id, str))
        and isinstance(record.data, dict)
        and isinstance(record.flash, list)
        and record.transport in ("cookie", "bearer")
        and isinstance(record.remember, bool)
    )


@given(records)
def test_every_written_record_reads_back_equal(record: SessionRecord) -> None:
    """What record_to_json writes, record_from_json reads back field for field."""
    assert record == record_from_json(record_to_json(record))


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
@example(b"[" * 100_000)
@example("{" * 50_000)
@example(b"\xff\xfe\x00")
@example('{"id": "\\ud800"}')
@example("NaN")
def test_arbitrary_bytes_decode_or_raise_corrupt(raw: bytes | str) -> None:
    """Any bytes decode to a well-typed record or raise CorruptRecordError, nothing else."""
    try:
        record = record_from_json(raw)
    except CorruptRecordError:
        return
    assert well_typed(record)


def _typed(value: Any) -> Any:
    """``value`` with every number's type spelled out (``1 == 1.0 == True`` in Python) and NaN
    made comparable, for comparing decoders."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


json_texts = st.builds(
    lambda value, ascii, compact: json.dumps(
        value, ensure_ascii=ascii, separators=(",", ":") if compact else None
    ),
    st.recursive(
        json_leaf | st.floats() | st.integers(min_value=-(2**200), max_value=2**200),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.booleans(),
    st.booleans(),
)


@given(json_texts | st.text(max_size=60) | st.binary(max_size=60))
@example('{"a": 1, "a": 2.5}')
@example("[18446744073709551616, -9223372036854775809, 123456789012345678901234567890]")
@example("[1e309, -1e400, 2.4e-324, -0.0, -0, NaN, Infinity, -Infinity]")
@example('"\\ud800"')
@example("\ud800")
@example(b'\xef\xbb\xbf{"a": 1}')
@example('{"a": 1}'.encode("utf-16"))
@example("[" * 2000 + "]" * 2000)
@example('"a\tb"')
def test_the_fast_json_parser_gives_what_json_loads_gives(raw: str | bytes) -> None:
    """record_from_json parses with msgspec where it is installed (it is in the dev
    environment), falling back to json.loads for what msgspec refuses: for any text, the value
    is the one json.loads gives, type for type, or both raise."""
    assert record_module._fast_loads is not None  # the accelerator is installed and used
    try:
        expected = ("ok", _typed(json.loads(raw)))
    except (ValueError, RecursionError):
        expected = ("error", None)
    try:
        got = ("ok", _typed(record_module.json_loads(raw)))
    except (ValueError, RecursionError):
        got = ("error", None)
    assert got == expected


def _mutations() -> st.SearchStrategy[tuple[str, Any]]:
    fields = sorted(record_to_dict(_base_record()))
    replaced = st.tuples(st.sampled_from(fields), json_value | st.sampled_from(["NaN", "\ud800"]))
    removed = st.tuples(st.sampled_from(fields), st.just(KeyError))
    return replaced | removed


def _base_record() -> SessionRecord:
    return record_from_json(
        record_to_json(
            SessionRecord(
                id="A" * 24,
                secret_hash="b" * 64,
                created_at=1.0,
                last_seen_at=2.0,
                expires_at=3.0,
                absolute_expires_at=4.0,
                version=3,
                user_id="u1",
                data={"cart": ["a"]},
                csrf_token="c" * 43,
            )
        )
    )


def _mutated_json(mutations: list[tuple[str, Any]]) -> str:
    raw = record_to_dict(_base_record())
    for name, value in mutations:
        if value is KeyError:
            raw.pop(name, None)
        elif value == "NaN":
            raw[name] = math.nan
        else:
            raw[name] = value
    return json.dumps(raw)


@given(st.lists(_mutations(), min_size=1, max_size=3))
@example([("version", True)])
@example([("version", "3")])
@example([("data", [])])
@example([("last_seen_at", "NaN")])
@example([("created_at", math.inf)])
@example([("csrf_token", "é")])
@example([("user_id", "\ud800")])
@example([("transport", "carrier pigeon")])
def test_wrong_field_types_raise_corrupt(mutations: list[tuple[str, Any]]) -> None:
    """A record with fields removed or replaced by any JSON value decodes only if it is still
    well typed; otherwise CorruptRecordError."""
    try:
        record = record_from_json(_mutated_json(mutations))
    except CorruptRecordError:
        return
    assert well_typed(record)


# -- a corrupt record in a store, through the managers ---------------------------------------


def _stored_session(store: MemoryStore, manager: SessionManager) -> str:
    """Log a user in through the manager; return the cookie token."""
    opened = manager.open(RequestView("POST", "https", []))
    auth.login(opened.session, "u1")
    opened.session["cart"] = ["book"]
    committed = manager.commit(opened.session)
    assert committed.token is not None
    return committed.token


@given(
    st.lists(_mutations(), min_size=1, max_size=3) | st.text(max_size=100).map(lambda t: [("", t)])
)
def test_sync_manager_opens_nothing_from_a_corrupt_record(mutations: list[tuple[str, Any]]) -> None:
    """With a stored record corrupted in any way, opening its session never raises: it is the
    user's session if the record still decodes, else anonymous (a corrupt record is no record:
    the cookie is left alone, as for any session that is gone)."""
    store = MemoryStore()
    manager = SessionManager(store, test_config(), clock=FakeClock())
    token = _stored_session(store, manager)
    session_id = token.split(".")[0]
    version, user_id, expires_at, good = store._records[session_id]
    if mutations[0][0] == "":
        corrupt = mutations[0][1]
    else:
        original = json.loads(good)
        raw = json.loads(_mutated_json(mutations))
        # Keep what makes the token match, so corruption elsewhere is what gets tested.
        for keep in ("id", "secret_hash"):
            if keep in raw:
                raw[keep] = original[keep]
        corrupt = json.dumps(raw)
    store._records[session_id] = (version, user_id, expires_at, corrupt)
    opened = manager.open(RequestView("GET", "https", [("cookie", f"{COOKIE}={token}")]))
    assert opened.error is None
    try:
        decoded: SessionRecord | None = record_from_json(corrupt)
    except CorruptRecordError:
        decoded = None
    if decoded is None:
        assert opened.session.user_id is None
        assert dict(opened.session) == {}
    opened.session["seen"] = True
    manager.commit(opened.session)  # never raises either


# -- and over HTTP, on real stores ------------------------------------------------------------

CORRUPTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "not-json": lambda good: "this is not json",
    "json-array": lambda good: "[]",
    "deeply-nested": lambda good: "[" * 100_000,
    "missing-fields": lambda good: json.dumps({"id": good["id"]}),
    "data-is-a-list": lambda good: json.dumps({**good, "data": ["a"]}),
    "version-is-a-string": lambda good: json.dumps({**good, "version": "2"}),
    "never-expires-nan": lambda good: json.dumps(
        {**good, "last_seen_at": math.nan, "created_at": math.nan, "absolute_expires_at": math.nan}
    ),
    "csrf-not-ascii": lambda good: json.dumps({**good, "csrf_token": "jeton-é"}),
    "unknown-transport": lambda good: json.dumps({**good, "transport": "pigeon"}),
    "user-id-a-number": lambda good: json.dumps({**good, "user_id": 42}),
}


@asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[tuple[AsyncStore, Callable[[str, str], Any]]]:
    store = AsyncMemoryStore()

    async def corrupt(session_id: str, raw: str) -> None:
        version, user_id, expires_at, _ = store.sync._records[session_id]
        store.sync._records[session_id] = (version, user_id, expires_at, raw)

    yield store, corrupt


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[tuple[AsyncStore, Callable[[str, str], Any]]]:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    store = AsyncSQLStore.from_url(url)
    await store.create_schema()
    engine = sa.create_engine(url)

    async def corrupt(session_id: str, raw: str) -> None:
        table = store.tables.sessions
        with engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == session_id).values(record=raw))

    try:
        yield store, corrupt
    finally:
        engine.dispose()
        await store.close()


@asynccontextmanager
async def _redis(tmp_path: Path) -> AsyncIterator[tuple[AsyncStore, Callable[[str, str], Any]]]:
    url = shared_url()
    prefix = new_prefix()
    store = AsyncRedisStore.from_url(url, prefix=prefix)
    client = redis.asyncio.Redis.from_url(url)

    async def corrupt(session_id: str, raw: str) -> None:
        await client.hset(store.keys.record(session_id), "d", raw)

    try:
        yield store, corrupt
    finally:
        await delete_prefix_async(client, prefix)
        await client.aclose()
        await store.close()


STORES = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": pytest.param(_redis, marks=pytest.mark.redis),
}


def _app(store: AsyncStore) -> Starlette:
    manager = AsyncSessionManager(store, test_config())

    async def login(request: Request) -> Response:
        session = get_session(request)
        auth.login(session, "u1")
        session["cart"] = ["book"]
        return JSONResponse({"ok": True})

    async def read(request: Request) -> Response:
        session = get_session(request)
        return JSONResponse({"user": session.user_id, "data": dict(session)})

    async def token(request: Request) -> Response:
        return JSONResponse({"token": await issue_token(request, "u1")})

    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/read", read),
            Route("/token", token, methods=["POST"]),
        ]
    )
    app.add_middleware(SessionMiddleware, manager=manager)
    return app


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize(
    "backend",
    [STORES["memory"], STORES["sqlite"], STORES["redis"]],
    ids=["memory", "sqlite", "redis"],
)
async def test_corrupt_stored_record_is_anonymous_over_http(
    backend: Any, corruption: str, tmp_path: Path
) -> None:
    """A store handing back a corrupt record: the cookie holder gets an anonymous session (the
    cookie left alone, as for any session that is gone), the bearer holder a 401; never a 500
    or a 503."""
    async with backend(tmp_path) as (store, corrupt):
        transport = httpx.ASGITransport(app=_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            assert (await c.post("/login")).status_code == 200
            cookie_token = c.cookies[COOKIE]
            issued = await c.post("/token", headers={"x-xsrf-token": c.cookies["XSRF-TOKEN"]})
            bearer = issued.json()["token"]
            assert (await c.get("/read")).json() == {"user": "u1", "data": {"cart": ["book"]}}
            for token in (cookie_token, bearer):
                good = json.loads(record_to_json(await store.get(token.split(".")[0])))  # type: ignore[arg-type]
                await corrupt(token.split(".")[0], CORRUPTIONS[corruption](good))
            c.cookies.clear()
            as_cookie = await c.get("/read", headers={"cookie": f"{COOKIE}={cookie_token}"})
            as_bearer = await c.get("/read", headers={"authorization": f"Bearer {bearer}"})
    assert (as_cookie.status_code, as_cookie.json()) == (200, {"user": None, "data": {}})
    assert (as_bearer.status_code, as_bearer.json()) == (401, {"error": "invalid_token"})


def test_listing_sessions_with_a_corrupt_record_is_an_outage() -> None:
    """sessions_of has no safe stand-in for a record it cannot decode: StoreUnavailableError
    (503), while the other sessions still open normally."""
    store = MemoryStore()
    manager = SessionManager(store, test_config(), clock=FakeClock())
    corrupted = _stored_session(store, manager).split(".")[0]
    healthy = _stored_session(store, manager)
    version, user_id, expires_at, _ = store._records[corrupted]
    store._records[corrupted] = (version, user_id, expires_at, "{broken")
    with pytest.raises(StoreUnavailableError, match="sessions_of"):
        SessionAdmin(manager).sessions_of("u1")
    opened = manager.open(RequestView("GET", "https", [("cookie", f"{COOKIE}={healthy}")]))
    assert opened.session.user_id == "u1"
