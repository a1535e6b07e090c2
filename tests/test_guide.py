"""docs/guide.md works as printed: every code block in it is an example file (or a named region of
one), the guide prints each example whole, and each example runs its full flow here -- the
Starlette and Flask sites through real form posts carrying ``_csrf``, the JSON API through
cookies and bearer tokens."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coatcheck.throttling import ThrottleConfig

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "guide.md"
EXAMPLES = ("guide_starlette.py", "guide_flask.py", "guide_api.py")
BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
"""What a browser sends for a navigation or a form submission."""

# -- the guide prints the examples ---------------------------------------------------------------

_BLOCK = re.compile(r"^<!-- file: (\S+?)(?:#(\S+))? -->\n```[a-z]*\n(.*?)^```$", re.M | re.S)
_FENCE = re.compile(r"^```[a-z]*\n", re.M)
_REGION = re.compile(r"^# --8<-- \[(start|end):([\w-]+)\]\n", re.M)


def _regions(text: str) -> dict[str, str]:
    """The named regions of an example file (``# --8<-- [start:name]`` ... ``[end:name]``),
    without the blank lines the formatter puts before an end marker."""
    regions = {}
    for start in _REGION.finditer(text):
        if start.group(1) == "start":
            end = text.index(f"# --8<-- [end:{start.group(2)}]\n", start.end())
            regions[start.group(2)] = text[start.end() : end].rstrip("\n") + "\n"
    return regions


def _printed() -> Iterator[tuple[str, str | None, str]]:
    """(file, region or None, block) for each code block of the guide that names its file."""
    for match in _BLOCK.finditer(GUIDE.read_text()):
        yield match.group(1), match.group(2), match.group(3)


def test_every_code_block_in_the_guide_is_an_example_file() -> None:
    """Each fenced block of docs/guide.md is preceded by the file (and region) it prints, and
    equals it byte for byte: the guide shows exactly the code the tests below run."""
    text = GUIDE.read_text()
    assert len(_FENCE.findall(text)) == 2 * len(list(_printed()))  # no block without a file
    different = []
    for file, region, block in _printed():
        source = (ROOT / file).read_text()
        expected = _regions(source)[region] if region else source
        if block != expected:
            different.append(f"{file}#{region}")
    assert different == []


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_guide_prints_each_example_whole(name: str) -> None:
    """Every line of each example is inside a region the guide prints (region markers aside),
    so nothing the example needs is missing from the page."""
    source = (ROOT / "examples" / name).read_text()
    printed = {region for file, region, _ in _printed() if file == f"examples/{name}"}
    regions = _regions(source)
    assert printed == set(regions)
    outside = _REGION.sub("", source)
    for body in regions.values():
        outside = outside.replace(body, "", 1)
    assert outside.strip() == ""


def test_the_guide_prints_every_template() -> None:
    """The templates the sites render are printed too."""
    printed = {file for file, _, _ in _printed()}
    templates = {
        str(path.relative_to(ROOT)) for path in (ROOT / "examples" / "templates").rglob("*.html")
    }
    assert templates - printed == set()


# -- helpers -------------------------------------------------------------------------------------


def _load(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Any:
    monkeypatch.setenv("COATCHECK_STORE", f"sqlite:///{tmp_path / 'sessions.db'}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    module_name = name.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module


def _csrf_field(html: str) -> str:
    """The value of the page's hidden ``_csrf`` field, as a browser would submit it."""
    found = re.search(r'<input type="hidden" name="_csrf" value="([^"]*)">', html)
    assert found is not None, html
    return found.group(1)


def _location(response: Any) -> str:
    assert response.status_code == 303, (response.status_code, response.text)
    return str(response.headers["location"])


# -- the Starlette site --------------------------------------------------------------------------


class Browser:
    """An httpx client that behaves like a browser on the Starlette site: it asks for HTML, and
    submits forms with the ``_csrf`` field of the page they are on."""

    def __init__(self, app: Any) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://testserver", headers=BROWSER
        )

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path)

    async def submit(self, page: str, action: str, **fields: str) -> httpx.Response:
        html = (await self.get(page)).text
        return await self.client.post(action, data={"_csrf": _csrf_field(html), **fields})


async def test_the_starlette_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Sign-up, flash, logout with its flash, log-in with next, the devices page with "this
    device", revoking one device and all others, a password change that signs the other devices
    out and keeps this one remembered, error pages for a missing CSRF field and throttling."""
    site = _load("guide_starlette.py", monkeypatch, tmp_path)
    ann, other = Browser(site.app), Browser(site.app)
    try:
        # Anonymous: the devices page sends the browser to the login page, next kept.
        assert _location(await ann.get("/devices")) == "/login?next=/devices"

        # Sign up: signed in, welcomed once, a device cookie set.
        signed_up = await ann.submit(
            "/signup", "/signup", email="Ann@Example.com", password="correct horse"
        )
        assert _location(signed_up) == "/"
        assert site.guard.device_cookie_name in ann.client.cookies
        home = (await ann.get("/")).text
        assert "Welcome! Your account is ready." in home
        assert "ann@example.com" in home
        assert "Welcome!" not in (await ann.get("/")).text

        # A form posted without its _csrf field: the error page, not JSON.
        expired = await ann.client.post("/logout")
        assert (expired.status_code, "This form has expired" in expired.text) == (403, True)
        assert expired.headers["content-type"].startswith("text/html")

        # Logout: the flash survives into the anonymous session.
        assert _location(await ann.submit("/", "/logout")) == "/"
        assert "You have been signed out." in (await ann.get("/")).text

        # Log in with next; a wrong password first.
        wrong = await ann.submit(
            "/login?next=/devices",
            "/login?next=/devices",
            email="ann@example.com",
            password="wrong",
        )
        assert (wrong.status_code, "Wrong email or password." in wrong.text) == (401, True)
        signed_in = await ann.submit(
            "/login?next=/devices",
            "/login?next=/devices",
            email="ann@example.com",
            password="correct horse",
            remember="on",
        )
        assert _location(signed_in) == "/devices"
        devices = (await ann.get("/devices")).text
        assert "Signed in as ann@example.com." in devices
        assert devices.count("this device") == 1
        assert "(kept signed in)" in devices

        # Another browser signs in; Ann sees two devices and signs the other one out.
        await other.submit("/login", "/login", email="ann@example.com", password="correct horse")
        devices = (await ann.get("/devices")).text
        assert devices.count("<li>") == 2
        other_id = (await site.admin.sessions_of("1"))[0].id
        assert other_id != (await site.admin.sessions_of("1"))[1].id
        revoke_form = f"/devices/{other_id}/revoke"
        assert _location(await ann.submit("/devices", revoke_form)) == "/devices"
        assert "That device is signed out." in (await ann.get("/devices")).text
        assert _location(await other.get("/devices")) == "/login?next=/devices"

        # Sign out everywhere else.
        await other.submit("/login", "/login", email="ann@example.com", password="correct horse")
        ended = await ann.submit("/devices", "/devices/revoke-others")
        assert _location(ended) == "/devices"
        assert "Signed out of 1 other device(s)." in (await ann.get("/devices")).text
        assert _location(await other.get("/devices")) == "/login?next=/devices"

        # Password change: the other device is signed out, this one stays, still remembered.
        await other.submit("/login", "/login", email="ann@example.com", password="correct horse")
        refused = await ann.submit(
            "/password", "/password", current_password="nope", new_password="battery staple"
        )
        assert (refused.status_code, "The current password is wrong." in refused.text) == (
            401,
            True,
        )
        changed = await ann.submit(
            "/password",
            "/password",
            current_password="correct horse",
            new_password="battery staple",
        )
        assert _location(changed) == "/devices"
        devices = (await ann.get("/devices")).text
        assert "Password changed; 1 other device(s) signed out." in devices
        assert "(kept signed in)" in devices
        assert _location(await other.get("/devices")) == "/login?next=/devices"
        old = await other.submit(
            "/login", "/login", email="ann@example.com", password="correct horse"
        )
        assert old.status_code == 401
        new = await other.submit(
            "/login?next=//evil.example", "/login?next=//evil.example",
            email="ann@example.com", password="battery staple",
        )  # fmt: skip
        assert _location(new) == "/"  # a next leading off the site is dropped

        # Throttling: after five failures the sixth attempt is refused with a page. (Beyond the
        # threshold an attempt is allowed again after base_delay: made long here, so that slow
        # password hashing on a busy machine cannot let the sixth through.)
        site.guard.config = ThrottleConfig(base_delay=300)
        stranger = Browser(site.app)
        for _ in range(5):
            await stranger.submit("/login", "/login", email="ann@example.com", password="guess")
        throttled = await stranger.submit(
            "/login", "/login", email="ann@example.com", password="guess"
        )
        assert (throttled.status_code, "Too many attempts" in throttled.text) == (429, True)
        assert int(throttled.headers["retry-after"]) > 0
        # ... while Ann's own browser, with its device cookie, still signs in.
        await ann.submit("/", "/logout")
        back = await ann.submit(
            "/login", "/login", email="ann@example.com", password="battery staple"
        )
        assert _location(back) == "/"
        await stranger.client.aclose()
    finally:
        await ann.client.aclose()
        await other.client.aclose()
        await site.manager.close()
        site.hasher.close()


# -- the Flask site ------------------------------------------------------------------------------


class FlaskBrowser:
    """Flask's test client as a browser: it asks for HTML and submits forms with their
    ``_csrf`` field."""

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()
        self.client.environ_base["HTTP_ACCEPT"] = BROWSER["accept"]

    def get(self, path: str) -> Any:
        return self.client.get(path)

    def submit(self, page: str, action: str, **fields: str) -> Any:
        html = self.get(page).get_data(as_text=True)
        return self.client.post(action, data={"_csrf": _csrf_field(html), **fields})


def _text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def test_the_flask_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same flow on Flask, over plain http with CookieConfig(secure=False): sign-up, flash,
    logout with its flash, log-in with next (login_view), the devices page, revoking, a password
    change, and error pages for a missing CSRF field and an API client's 401."""
    site = _load("guide_flask.py", monkeypatch, tmp_path, COATCHECK_DEV="1")
    ann, other = FlaskBrowser(site.app), FlaskBrowser(site.app)
    try:
        assert _location(ann.get("/devices")) == "/login?next=/devices"
        api = site.app.test_client().get("/devices", headers={"accept": "application/json"})
        assert (api.status_code, api.json) == (401, {"error": "unauthenticated"})

        signed_up = ann.submit(
            "/signup", "/signup", email="ann@example.com", password="correct horse"
        )
        assert _location(signed_up) == "/"
        assert ann.client.get_cookie("coatcheck_session") is not None  # the development name
        home = _text(ann.get("/"))
        assert "Welcome! Your account is ready." in home
        assert "Hello, ann@example.com" in home
        assert "Welcome!" not in _text(ann.get("/"))

        expired = ann.client.post("/logout")
        assert (expired.status_code, "This form has expired" in _text(expired)) == (403, True)

        assert _location(ann.submit("/", "/logout")) == "/"
        assert "You have been signed out." in _text(ann.get("/"))

        wrong = ann.submit(
            "/login?next=/devices", "/login?next=/devices", email="ann@example.com", password="x"
        )
        assert (wrong.status_code, "Wrong email or password." in _text(wrong)) == (401, True)
        signed_in = ann.submit(
            "/login?next=/devices",
            "/login?next=/devices",
            email="ann@example.com",
            password="correct horse",
            remember="on",
        )
        assert _location(signed_in) == "/devices"
        devices = _text(ann.get("/devices"))
        assert "Signed in as ann@example.com." in devices
        assert (devices.count("this device"), "(kept signed in)" in devices) == (1, True)

        other.submit("/login", "/login", email="ann@example.com", password="correct horse")
        assert _text(ann.get("/devices")).count("<li>") == 2
        other_id = site.admin.sessions_of("1")[0].id
        assert _location(ann.submit("/devices", f"/devices/{other_id}/revoke")) == "/devices"
        assert "That device is signed out." in _text(ann.get("/devices"))
        assert _location(other.get("/devices")) == "/login?next=/devices"

        other.submit("/login", "/login", email="ann@example.com", password="correct horse")
        assert _location(ann.submit("/devices", "/devices/revoke-others")) == "/devices"
        assert "Signed out of 1 other device(s)." in _text(ann.get("/devices"))
        assert _location(other.get("/devices")) == "/login?next=/devices"

        other.submit("/login", "/login", email="ann@example.com", password="correct horse")
        refused = ann.submit(
            "/password", "/password", current_password="nope", new_password="battery staple"
        )
        assert refused.status_code == 401
        changed = ann.submit(
            "/password",
            "/password",
            current_password="correct horse",
            new_password="battery staple",
        )
        assert _location(changed) == "/devices"
        devices = _text(ann.get("/devices"))
        assert "Password changed; 1 other device(s) signed out." in devices
        assert "(kept signed in)" in devices
        assert _location(other.get("/devices")) == "/login?next=/devices"
        new = other.submit(
            "/login?next=//evil.example", "/login?next=//evil.example",
            email="ann@example.com", password="battery staple",
        )  # fmt: skip
        assert _location(new) == "/"
    finally:
        site.manager.close()
        site.hasher.close()


# -- the JSON API --------------------------------------------------------------------------------


async def test_the_json_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Register (signed in), /me, logout with the CSRF header, login, wrong passwords, bearer
    tokens (no cookies, no CSRF, revoked by logout), and JSON errors throughout."""
    api = _load("guide_api.py", monkeypatch, tmp_path)
    transport = httpx.ASGITransport(app=api.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as web:
            creds = {"email": "Ann@Example.com", "password": "correct horse"}
            registered = await web.post("/api/register", json=creds)
            assert (registered.status_code, registered.json()) == (
                201,
                {"id": "1", "email": "ann@example.com"},
            )
            assert (await web.get("/api/me")).json()["email"] == "ann@example.com"
            taken = await web.post(
                "/api/register",
                json=creds,
                headers={"x-xsrf-token": web.cookies["XSRF-TOKEN"]},
            )
            assert (taken.status_code, taken.json()) == (409, {"error": "email_taken"})
            assert (await web.post("/api/logout")).status_code == 403  # no CSRF header
            xsrf = {"x-xsrf-token": web.cookies["XSRF-TOKEN"]}
            assert (await web.post("/api/logout", headers=xsrf)).status_code == 204
            anonymous = await web.get("/api/me")
            assert (anonymous.status_code, anonymous.json()) == (401, {"error": "unauthenticated"})
            wrong = await web.post("/api/login", json={**creds, "password": "nope"})
            assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_credentials"})
            assert (await web.post("/api/login", json=creds)).status_code == 200
            assert (await web.get("/api/me")).json()["id"] == "1"
            short = await web.post(
                "/api/register",
                json={"email": "bob@example.com", "password": "short"},
                headers={"x-xsrf-token": web.cookies["XSRF-TOKEN"]},
            )
            assert (short.status_code, short.json()["error"]) == (422, "invalid_password")

        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as cli:
            issued = await cli.post("/api/token", json=creds)
            assert issued.status_code == 201
            assert issued.headers["cache-control"] == "no-store"
            bearer = {"authorization": f"Bearer {issued.json()['access_token']}"}
            me = await cli.get("/api/me", headers=bearer)
            assert (me.json()["email"], "set-cookie" in me.headers) == ("ann@example.com", False)
            assert (await cli.post("/api/logout", headers=bearer)).status_code == 204
            revoked = await cli.get("/api/me", headers=bearer)
            assert revoked.status_code == 401
            assert 'error="invalid_token"' in revoked.headers["www-authenticate"]
            assert (await cli.post("/api/token", content=b"x")).status_code == 415
    finally:
        await api.manager.close()
        api.hasher.close()
