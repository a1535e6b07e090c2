"""Concurrency guarantees, on every store, under real parallel requests.

Each "request" opens the session through the manager, changes it and commits, exactly as the
middleware does; many run at once (asyncio tasks on network stores, threads on sync twins).
"""

from __future__ import annotations

import asyncio

import pytest

from coatcheck import auth
from coatcheck._core.http import RequestView
from coatcheck._core.session import Session
from coatcheck.errors import HTTPError
from coatcheck.manager import AsyncSessionManager
from coatcheck.stores.base import AsyncStore
from coatcheck.testing import FakeClock, test_config


def request_with(token: str | None) -> RequestView:
    headers = [("cookie", f"coatcheck_session={token}")] if token else []
    return RequestView(method="GET", scheme="http", headers=headers, client_ip="127.0.0.1")


async def new_session(manager: AsyncSessionManager, **data: object) -> str:
    opened = await manager.open(request_with(None))
    opened.session.update(data)
    committed = await manager.commit(opened.session)
    assert committed.token is not None
    return committed.token


async def open_session(manager: AsyncSessionManager, token: str) -> Session:
    opened = await manager.open(request_with(token))
    assert opened.error is None
    return opened.session


def make_manager(store: AsyncStore) -> AsyncSessionManager:
    return AsyncSessionManager(store, test_config(), clock=FakeClock())


async def test_concurrent_writers_lose_nothing(store: AsyncStore) -> None:
    """20 concurrent requests each setting a different key on one session all land."""
    manager = make_manager(store)
    token = await new_session(manager, base=True)

    async def writer(i: int) -> None:
        session = await open_session(manager, token)
        session[f"k{i}"] = i
        await manager.commit(session)

    await asyncio.gather(*(writer(i) for i in range(20)))
    final = await open_session(manager, token)
    assert dict(final) == {"base": True, **{f"k{i}": i for i in range(20)}}


async def test_concurrent_nested_appends_lose_nothing(store: AsyncStore) -> None:
    """Concurrent requests that each change a different key keep each other's nested edits."""
    manager = make_manager(store)
    token = await new_session(manager, a=[], b=[])

    async def appender(key: str, value: int) -> None:
        session = await open_session(manager, token)
        session[key].append(value)
        await manager.commit(session)

    await asyncio.gather(appender("a", 1), appender("b", 2))
    final = await open_session(manager, token)
    assert (final["a"], final["b"]) == ([1], [2])


async def test_flash_delivered_exactly_once(store: AsyncStore) -> None:
    """A flash message raced for by 10 concurrent requests is delivered to exactly one."""
    manager = make_manager(store)
    token = await new_session(manager, x=1)
    session = await open_session(manager, token)
    session.flash("saved")
    await manager.commit(session)

    opened = await asyncio.gather(*(open_session(manager, token) for _ in range(10)))
    delivered = [s.flashes for s in opened if s.flashes]
    assert delivered == [[{"message": "saved", "category": "info"}]]
    await asyncio.gather(*(manager.commit(s) for s in opened))
    assert (await open_session(manager, token)).flashes == []


async def test_in_flight_request_does_not_resurrect_after_logout(store: AsyncStore) -> None:
    """A request that loaded the session before logout cannot bring it back when it commits."""
    manager = make_manager(store)
    token = await new_session(manager, cart=["a"])
    in_flight = await open_session(manager, token)

    logout_request = await open_session(manager, token)
    auth.logout(logout_request)
    await manager.commit(logout_request)

    in_flight["cart"] = ["a", "b"]
    with pytest.raises(HTTPError) as refused:
        await manager.commit(in_flight)
    assert refused.value.status_code == 409  # not "saved": the write was dropped
    assert await store.get(token.split(".")[0]) is None
    again = await manager.open(request_with(token))
    assert again.session.is_new


async def test_regenerate_leaves_exactly_one_live_record(store: AsyncStore) -> None:
    """Login (regenerate) racing with writers leaves one record for the user, data kept; every
    writer was told 409, or its write is where the token it was answered with leads (the
    user's session, or a new anonymous one when it opened after the login): none is lost."""
    manager = make_manager(store)
    token = await new_session(manager, cart=["apple"])

    async def login() -> str | None:
        session = await open_session(manager, token)
        auth.login(session, "alice")
        return (await manager.commit(session)).token

    async def writer(i: int) -> str | None:
        """The token the client ends up with: None when told 409."""
        session = await open_session(manager, token)
        session[f"w{i}"] = i
        try:
            committed = await manager.commit(session)
        except HTTPError as exc:
            return None if exc.status_code == 409 else "unexpected"
        return committed.token or token

    new_token, *answered = await asyncio.gather(login(), *(writer(i) for i in range(5)))
    assert new_token is not None
    assert new_token != token
    live = await store.sessions_of("alice")
    assert [r.id for r in live] == [new_token.split(".")[0]]
    final = await open_session(manager, new_token)
    assert final["cart"] == ["apple"]
    for i, held in enumerate(answered):
        if held is None:
            continue  # told 409: nothing was promised
        assert held != "unexpected"
        where = new_token if held == token else held  # the old token moved with the login
        assert f"w{i}" in await open_session(manager, where)


async def test_logins_racing_each_other_each_leave_their_own_session(store: AsyncStore) -> None:
    """Four logins from one anonymous session at once (docs/concurrency.md; found by an outside
    attack, which read "exactly one live record" as covering them): each is a fresh
    authentication, so each succeeds with its own signed-in session carrying the anonymous
    data, and the anonymous record is gone."""
    manager = make_manager(store)
    token = await new_session(manager, cart=["apple"])
    sessions = await opened_together(manager, token, 4)
    for session in sessions:
        auth.login(session, "alice")
    tokens = [(await manager.commit(session)).token for session in sessions]
    assert all(t is not None and t != token for t in tokens)
    assert len(set(tokens)) == 4
    live = await store.sessions_of("alice")
    assert sorted(r.id for r in live) == sorted(t.split(".")[0] for t in tokens if t)
    for t in tokens:
        assert t is not None
        assert (await open_session(manager, t))["cart"] == ["apple"]
    assert await store.get(token.split(".")[0]) is None


async def opened_together(manager: AsyncSessionManager, token: str, n: int) -> list[Session]:
    """``n`` requests that all loaded the session before any of them commits: the worst case,
    every commit but the first meets a newer record, on every store (the async memory store never
    yields to the event loop, so requests would not overlap on their own)."""
    return list(await asyncio.gather(*(open_session(manager, token) for _ in range(n))))


async def test_concurrent_appends_to_one_list_lose_nothing(store: AsyncStore) -> None:
    """20 requests each appending an item to the same cart (two tabs, many clicks) leave all 20
    items, including the first ones added when the cart did not exist yet."""
    manager = make_manager(store)
    token = await new_session(manager, other=True)

    async def add(i: int, session: Session) -> None:
        items = list(session.get("cart", []))
        items.append(f"item-{i}")
        session["cart"] = items
        await manager.commit(session)

    sessions = await opened_together(manager, token, 20)
    await asyncio.gather(*(add(i, s) for i, s in enumerate(sessions)))
    final = await open_session(manager, token)
    assert sorted(final["cart"]) == sorted(f"item-{i}" for i in range(20))


async def test_concurrent_identical_appends_are_all_kept(store: AsyncStore) -> None:
    """10 requests adding the same item to one cart leave it there 10 times."""
    manager = make_manager(store)
    token = await new_session(manager, cart=[])

    async def add(session: Session) -> None:
        session["cart"].append("apple")
        await manager.commit(session)

    await asyncio.gather(*map(add, await opened_together(manager, token, 10)))
    assert (await open_session(manager, token))["cart"] == ["apple"] * 10


async def test_concurrent_removals_and_appends_on_one_list(store: AsyncStore) -> None:
    """Removals of different items racing appends: every removal applies, every append stays."""
    manager = make_manager(store)
    token = await new_session(manager, cart=[f"old-{i}" for i in range(6)])

    async def remove(i: int, session: Session) -> None:
        session["cart"].remove(f"old-{i}")
        await manager.commit(session)

    async def add(i: int, session: Session) -> None:
        session["cart"].append(f"new-{i}")
        await manager.commit(session)

    sessions = await opened_together(manager, token, 6)
    await asyncio.gather(
        *(remove(i, s) for i, s in enumerate(sessions[:3])),
        *(add(i, s) for i, s in enumerate(sessions[3:])),
    )
    final = (await open_session(manager, token))["cart"]
    assert sorted(final) == ["new-0", "new-1", "new-2", "old-3", "old-4", "old-5"]


async def test_concurrent_nested_dict_edits_lose_nothing(store: AsyncStore) -> None:
    """Requests each changing a different key of one nested object keep each other's change."""
    manager = make_manager(store)
    token = await new_session(manager, prefs={"theme": "light"})

    async def set_pref(i: int, session: Session) -> None:
        session["prefs"][f"p{i}"] = {"value": i}
        await manager.commit(session)

    sessions = await opened_together(manager, token, 10)
    await asyncio.gather(*(set_pref(i, s) for i, s in enumerate(sessions)))
    prefs = (await open_session(manager, token))["prefs"]
    assert {"theme": "light", **{f"p{i}": {"value": i} for i in range(10)}} == prefs


async def test_concurrent_increments_all_count(store: AsyncStore) -> None:
    """50 requests each calling increment() on one counter add exactly 50."""
    manager = make_manager(store)
    token = await new_session(manager, views=7)

    async def bump(session: Session) -> None:
        session.increment("views")
        await manager.commit(session)

    await asyncio.gather(*map(bump, await opened_together(manager, token, 50)))
    assert (await open_session(manager, token))["views"] == 57


async def test_concurrent_set_adds_and_discards(store: AsyncStore) -> None:
    """Set operations from concurrent requests all apply: adds of different values and
    discards of different values, none undone by another request's write."""
    manager = make_manager(store)
    token = await new_session(manager, tags=["a", "b", "c"])

    async def add(value: str, session: Session) -> None:
        session.add_to_set("tags", value)
        await manager.commit(session)

    async def discard(value: str, session: Session) -> None:
        session.discard_from_set("tags", value)
        await manager.commit(session)

    s = await opened_together(manager, token, 7)
    await asyncio.gather(
        add("x", s[0]),
        add("y", s[1]),
        add("x", s[2]),
        add("a", s[3]),
        discard("b", s[4]),
        discard("c", s[5]),
        discard("zz", s[6]),
    )
    assert sorted((await open_session(manager, token))["tags"]) == ["a", "x", "y"]


async def test_write_landing_before_a_login_is_kept(store: AsyncStore) -> None:
    """A cart add that commits after a login request loaded the session but before the login
    commits is merged into the new session, not lost with the old record."""
    manager = make_manager(store)
    token = await new_session(manager, cart=["apple"])
    login_request, add_request = await opened_together(manager, token, 2)
    add_request["cart"].append("pear")
    await manager.commit(add_request)
    auth.login(login_request, "alice")
    new_token = (await manager.commit(login_request)).token
    assert new_token is not None
    assert (await open_session(manager, new_token))["cart"] == ["apple", "pear"]
    assert await store.get(token.split(".")[0]) is None
    assert [r.id for r in await store.sessions_of("alice")] == [new_token.split(".")[0]]
