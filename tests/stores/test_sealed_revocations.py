"""The sealed revocation record on every real backend, through the existing store contract.

Runs once per backend of ``tests/backends/`` (memory, SQLite, PostgreSQL, MariaDB, Redis, Redis
Cluster; async and sync twins): the revocation record needs nothing but get, conditional put and
purge, so it works on any store. Round trips are counted at the contract level.
"""

from __future__ import annotations

import asyncio

from coatcheck import auth
from coatcheck._core.http import RequestView
from coatcheck._core.sealed_flow import revocation_id
from coatcheck.admin import AsyncSessionAdmin
from coatcheck.manager import AsyncSessionManager
from coatcheck.stores.base import AsyncStore
from coatcheck.stores.sealed import AsyncSealedStore
from coatcheck.testing import CountingStore, FakeClock, test_config

COOKIE = "coatcheck_session"


def request(cookie: str | None, method: str = "GET", xsrf: str | None = None) -> RequestView:
    headers = [("user-agent", "pytest")]
    if cookie:
        headers.append(("cookie", cookie))
    if xsrf:
        headers.append(("x-xsrf-token", xsrf))
    return RequestView(method, "https", headers, "192.0.2.1")


def cookies_of(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {
        v.split("=", 1)[0]: v.split("=", 1)[1].split(";")[0]
        for k, v in headers
        if k == "set-cookie"
    }


async def sign_in(manager: AsyncSessionManager, user_id: str) -> dict[str, str]:
    opened = await manager.open(request(None, "POST"))
    auth.login(opened.session, user_id)
    return cookies_of((await manager.commit(opened.session)).headers)


def header(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


async def user_of(manager: AsyncSessionManager, jar: dict[str, str]) -> str | None:
    return (await manager.open(request(header(jar)))).session.user_id


async def test_logout_revoke_and_revoke_all_on_every_backend(store: AsyncStore) -> None:
    """Logout ends a copied seal, revoke-one ends one session, revoke-all keeps the current
    one, with one read per signed-in request and one conditional write per revocation."""
    clock = FakeClock()
    counting = CountingStore(store)
    manager = AsyncSessionManager(AsyncSealedStore(counting), test_config(), clock=clock)
    admin = AsyncSessionAdmin(manager)

    first = await sign_in(manager, "u1")
    counting.reset()
    assert await user_of(manager, first) == "u1"
    assert dict(counting.calls) == {"get": 1}

    counting.reset()
    opened = await manager.open(request(header(first), "POST", first["XSRF-TOKEN"]))
    auth.logout(opened.session)
    await manager.commit(opened.session)
    assert dict(counting.calls) == {"get": 1, "put": 1}
    assert await user_of(manager, first) is None

    phone, laptop, tablet = [await sign_in(manager, "u1") for _ in range(3)]
    phone_id = (await manager.open(request(header(phone)))).session.id
    assert phone_id is not None
    assert await admin.revoke(phone_id, owner="u1")
    assert await user_of(manager, phone) is None
    assert await user_of(manager, laptop) == "u1"

    clock.advance(1)
    keep = (await manager.open(request(header(laptop)))).session.id
    await admin.revoke_all("u1", keep=keep)
    assert await user_of(manager, laptop) == "u1"
    assert await user_of(manager, tablet) is None


async def test_concurrent_revocations_all_land(store: AsyncStore) -> None:
    """Revocations racing on one user's record are all kept (compare-and-set with retries)."""
    clock = FakeClock()
    manager = AsyncSessionManager(AsyncSealedStore(store), test_config(), clock=clock)
    admin = AsyncSessionAdmin(manager)
    jars = [await sign_in(manager, "u1") for _ in range(8)]
    ids = [(await manager.open(request(header(jar)))).session.id for jar in jars]
    await asyncio.gather(*(admin.revoke(i, owner="u1") for i in ids if i is not None))
    record = await store.get(revocation_id("u1"))
    assert record is not None
    assert sorted(record.data["deny"]) == sorted(ids)
    for jar in jars:
        assert await user_of(manager, jar) is None
