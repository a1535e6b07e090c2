"""Concurrent requests on one session, over real HTTP against real ``coatcheck demo`` processes, on
every store: nothing a request wrote is lost (the README's promise), and a bearer client that
changes its password keeps working while its other sessions end."""

from __future__ import annotations

import contextlib
import re
import socket
import time
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


def _saved(c: httpx.Client) -> list[str]:
    page = c.get("/").text
    aside = re.search(r'id="saved">(.*?)</aside>', page, re.S)
    assert aside is not None
    return re.findall(r"<li>(.*?)</li>", aside.group(1))


def _post_story(c: httpx.Client, story: str, action: str) -> None:
    xsrf = c.cookies["XSRF-TOKEN"]
    form = {"story": story, "action": action, "_csrf": xsrf}
    assert c.post("/saved", data=form, headers={"X-XSRF-TOKEN": xsrf}).status_code == 303


@contextlib.contextmanager
def _held(c: httpx.Client, base: str, story: str, action: str) -> Iterator[list[bytes]]:
    """A tab's ``POST /saved`` whose request has opened the session and waits for its body
    while the block runs; the body is sent as the block ends, and the status line lands in the
    list yielded."""
    xsrf = c.cookies["XSRF-TOKEN"]
    port = int(base.rsplit(":", 1)[1])
    body = f"story={story}&action={action}&_csrf={xsrf}".encode()
    cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    head = (
        f"POST /saved HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
        f"X-XSRF-TOKEN: {xsrf}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    status: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as tab:
        tab.sendall(head.encode())
        time.sleep(0.5)  # the request has opened the session and waits for its body
        yield status
        tab.sendall(body)
        status.append(tab.recv(65536).split(b"\r\n")[0])


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_story_removed_in_one_tab_stays_removed_while_another_saves_one_again(
    kind: str, tmp_path: Path
) -> None:
    """Attack round 9: tab 2 removes a saved story; its request has loaded the session (its
    body still on the way) when tab 1 removes another story and saves it again, which moves it
    to the end of the list. Tab 2's write loses the race and is merged: the story it removed
    must stay removed (it came back: the merge took the move for a new insert)."""
    with demos(kind, tmp_path) as bases, client(bases[0]) as c:
        assert unsafe(c, "POST", "/api/cart", json={"item": "x"}).status_code == 201
        _post_story(c, "coat-check", "save")
        _post_story(c, "two-tabs", "save")
        before = _saved(c)
        assert len(before) == 2
        with _held(c, bases[-1], "two-tabs", "remove") as tab2:
            _post_story(c, "coat-check", "remove")  # tab 1
            _post_story(c, "coat-check", "save")
            assert _saved(c) == [before[1], before[0]]  # coat-check moved to the end
        assert b" 303 " in tab2[0]
        assert _saved(c) == [before[0]]  # only coat-check: two-tabs stays removed


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_story_saved_in_two_tabs_at_once_is_saved_once_and_a_later_removal_holds(
    kind: str, tmp_path: Path
) -> None:
    """Attack round 9b: two tabs save the same story at once; it is listed once (saved stories
    were a plain list, so the merge kept both appends). And a removal started after one tab's
    save, finishing after the other's, leaves it removed (the duplicate outlived it)."""
    with demos(kind, tmp_path) as bases, client(bases[0]) as c:
        assert unsafe(c, "POST", "/api/cart", json={"item": "x"}).status_code == 201
        with _held(c, bases[-1], "coat-check", "save") as tab2:
            _post_story(c, "coat-check", "save")  # tab 1
        assert b" 303 " in tab2[0]
        saved = _saved(c)
        assert len(saved) == 1
        _post_story(c, "coat-check", "remove")
        assert _saved(c) == []
        # Tab 2 loads [] and holds a save; tab 1 saves; tab 3 loads [coat-check] and holds a
        # remove; tab 2 finishes, then tab 3: the user's last action was the removal.
        second, third = (
            _held(c, bases[-1], "coat-check", "save"),
            _held(c, bases[0], "coat-check", "remove"),
        )
        tab2 = second.__enter__()
        _post_story(c, "coat-check", "save")  # tab 1
        tab3 = third.__enter__()
        second.__exit__(None, None, None)
        third.__exit__(None, None, None)
        assert b" 303 " in tab2[0]
        assert b" 303 " in tab3[0]
        assert _saved(c) == []
