"""Concurrent requests on one session, over real HTTP against real ``coatcheck demo`` processes, on
every store: nothing a request wrote is lost (the README's promise), and a bearer client that
changes its password keeps working while its other sessions end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.demo.server import demo_server
from tests.demo.test_demo_http import PASSWORD, client, register, unsafe
from tests.test_scale_out import shared_store

KINDS = ["memory", "sqlite", "postgres", "mysql", "redis", "redis-cluster"]
PARALLEL = 20


@contextlib.contextmanager
def demos(kind: str, tmp_path: Path) -> Iterator[list[str]]:
    """Base URLs of the demo on a store of ``kind``: two processes sharing a server store (so the
    racing requests also come from two processes), one for the in-process memory store."""
    if kind == "memory":
        with demo_server(tmp_path, store="memory://") as base:
            yield [base]
        return
    with (
        shared_store(kind, tmp_path) as url,
        demo_server(tmp_path, store=url) as a,
        demo_server(tmp_path, store=url) as b,
    ):
        yield [a, b]


def add_in_parallel(bases: list[str], cookies: httpx.Cookies, items: list[str]) -> list[int]:
    """POST each item to /api/cart at once, on one session, spread over the processes."""
    xsrf = cookies.get("XSRF-TOKEN", "")

    def add(i: int) -> int:
        with httpx.Client(base_url=bases[i % len(bases)], cookies=cookies, timeout=30) as c:
            response = c.post("/api/cart", json={"item": items[i]}, headers={"X-XSRF-TOKEN": xsrf})
            return response.status_code

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(add, range(len(items))))


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_cart_adds_lose_nothing(kind: str, tmp_path: Path) -> None:
    """20 parallel POST /api/cart on one session (two tabs clicking) leave exactly 20 items more,
    on an anonymous session and again once signed in, with the same item added many times too."""
    with demos(kind, tmp_path) as bases, client(bases[0]) as c:
        assert unsafe(c, "POST", "/api/cart", json={"item": "first"}).status_code == 201
        items = [f"item-{i}" for i in range(PARALLEL)]
        statuses = add_in_parallel(bases, c.cookies, items)
        assert statuses == [201] * PARALLEL
        assert sorted(c.get("/api/cart").json()["items"]) == sorted(["first", *items])

        register(c)  # the cart survives login
        statuses = add_in_parallel(bases, c.cookies, ["apple"] * PARALLEL)
        assert statuses == [201] * PARALLEL
        cart = c.get("/api/cart").json()["items"]
        assert sorted(cart) == sorted(["first", *items, *["apple"] * PARALLEL])


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_bearer_client_changes_password_and_keeps_working(kind: str, tmp_path: Path) -> None:
    """A bearer client changes its password with its token and keeps working with the same token;
    the user's other sessions (a browser, another token) end."""
    with demos(kind, tmp_path) as bases, client(bases[0]) as browser:
        user = register(browser)
        tokens = []
        for label in ("cli", "other"):
            response = httpx.post(
                bases[0] + "/api/token",
                json={"email": user["email"], "password": PASSWORD, "label": label},
            )
            assert response.status_code == 201, response.text
            tokens.append(response.json()["token"])
        cli, other = ({"authorization": f"Bearer {t}"} for t in tokens)
        new_password = "another correct horse"
        response = httpx.post(
            bases[-1] + "/api/password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=cli,
        )
        assert response.status_code == 204, response.text
        assert httpx.get(bases[0] + "/api/me", headers=cli).json() == user
        assert httpx.get(bases[0] + "/api/me", headers=other).status_code == 401
        assert browser.get("/api/me").status_code == 401
