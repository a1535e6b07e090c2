"""The demo's server-rendered pages driven with plain form posts over real HTTP (no JavaScript):
``coatcheck demo`` runs as its own process; each client is a visitor with a cookie jar."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.demo.server import demo_server

PASSWORD = "correct horse battery"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36"
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("demo-pages"), cheap_hashing=True) as url:
        yield url


def client(base: str, source: str = "127.0.0.1", user_agent: str = CHROME) -> httpx.Client:
    """A visitor whose connections come from ``source`` (any 127.0.0.0/8 address is local)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(
        base_url=base, timeout=30, transport=transport, headers={"user-agent": user_agent}
    )


def csrf(page: httpx.Response) -> str:
    """The ``_csrf`` hidden field of a rendered page (all forms of a page carry the same)."""
    found = re.search(r'name="_csrf" value="([^"]*)"', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


FLASH = re.compile(r'<div class="flash \w+" role="status">(.*?)</div>')


def flashes(page: httpx.Response) -> list[str]:
    """The flash messages a rendered page shows, as text."""
    return [html.unescape(m) for m in FLASH.findall(page.text)]


def post(c: httpx.Client, path: str, data: dict[str, str], page: str = "/") -> httpx.Response:
    """Submit a form the way a browser does: the page's ``_csrf`` field first, then ``data``."""
    token = csrf(c.get(page))
    return c.post(path, data={"_csrf": token, **data})


def sign_up(c: httpx.Client, email: str | None = None, name: str = "Ann") -> str:
    email = email or f"{uuid.uuid4().hex[:10]}@example.com"
    response = post(c, "/signup", {"email": email, "name": name, "password": PASSWORD}, "/signup")
    assert (response.status_code, response.headers["location"]) == (303, "/"), response.text
    return email


def log_in(
    c: httpx.Client, email: str, password: str = PASSWORD, next_path: str = "/"
) -> httpx.Response:
    data = {"email": email, "password": password, "next": next_path}
    return post(c, "/login", data, "/login")


def signed_in_as(c: httpx.Client) -> str | None:
    page = c.get("/")
    found = re.search(r'<span class="who">(.*?)</span>', page.text)
    return html.unescape(found.group(1)) if found else None


def test_saved_stories_work_before_login_and_survive_it(base: str) -> None:
    """A visitor saves a story with no session yet; the flash says so once; signing up keeps the
    saved list; logging out empties it; a story saved before logging in again is kept too."""
    with client(base, "127.0.1.1") as c:
        home = c.get("/")
        assert home.status_code == 200
        assert "text/html" in home.headers["content-type"]
        assert "The coat check" in home.text
        saved = post(c, "/saved", {"story": "coat-check"})
        assert (saved.status_code, saved.headers["location"]) == (303, "/")
        first, second = c.get("/"), c.get("/")
        assert flashes(first) == ["Saved “The coat check”."]
        assert flashes(second) == []
        assert "<li>The coat check</li>" in second.text

        email = sign_up(c)
        welcome = c.get("/")
        assert flashes(welcome) == ["Welcome, Ann! Your account is ready."]
        assert "<li>The coat check</li>" in welcome.text
        assert signed_in_as(c) == "Ann"

        out = post(c, "/logout", {})
        assert (out.status_code, out.headers["location"]) == (303, "/")
        after = c.get("/")
        assert flashes(after) == ["You are signed out."]
        assert "Nothing saved yet." in after.text
        assert signed_in_as(c) is None

        post(c, "/saved", {"story": "two-tabs"})
        assert log_in(c, email).status_code == 303
        back = c.get("/")
        assert "<li>Two tabs, one cart</li>" in back.text
        assert signed_in_as(c) == "Ann"

        removed = post(c, "/saved", {"story": "two-tabs", "action": "remove"})
        assert removed.status_code == 303
        assert "Nothing saved yet." in c.get("/").text


def test_wrong_password_flash_is_shown_once(base: str) -> None:
    """A wrong password sends the browser back to the login page, which says "Invalid email or
    password." once; the next load of the page does not."""
    with client(base, "127.0.1.2") as c:
        email = sign_up(c)
        post(c, "/logout", {})
        c.get("/")
        wrong = log_in(c, email, "not the password")
        assert (wrong.status_code, wrong.headers["location"]) == (303, "/login")
        assert flashes(c.get("/login")) == ["Invalid email or password."]
        assert flashes(c.get("/login")) == []
        unknown = log_in(c, "nobody@example.com")
        assert unknown.status_code == 303
        assert flashes(c.get("/login")) == ["Invalid email or password."]


def test_remember_me_box_makes_a_lasting_cookie(base: str) -> None:
    """Logging in with the "remember" box ticked sets a persistent session cookie; without it
    the cookie ends with the browser."""
    with client(base, "127.0.1.19") as c:
        email = sign_up(c)
        post(c, "/logout", {})
        c.get("/")
        token = csrf(c.get("/login"))
        plain = c.post("/login", data={"_csrf": token, "email": email, "password": PASSWORD})
        post(c, "/logout", {})
        token = csrf(c.get("/login"))
        data = {"_csrf": token, "email": email, "password": PASSWORD, "remember": "on"}
        remembered = c.post("/login", data=data)

    def session_cookie(response: httpx.Response) -> str:
        return next(
            v for v in response.headers.get_list("set-cookie") if v.startswith("coatcheck_session=")
        ).lower()

    assert "max-age" not in session_cookie(plain)
    assert "max-age" in session_cookie(remembered)


def test_throttled_login_tells_the_wait(base: str) -> None:
    """After repeated wrong passwords the login page says how many seconds to wait."""
    with client(base, "127.0.1.3") as c:
        email = sign_up(c)
        post(c, "/logout", {})
    told: list[str] = []
    for i in range(8):
        with client(base, f"127.0.2.{i + 1}") as guesser:
            log_in(guesser, email, "wrong guess")
            told += flashes(guesser.get("/login"))
    throttled = [m for m in told if m.startswith("Too many attempts.")]
    assert throttled, told
    assert re.fullmatch(r"Too many attempts\. Try again in \d+ seconds\.", throttled[0])


def test_a_protected_page_sends_to_login_and_back(base: str) -> None:
    """/account without a session is a 303 to /login?next=/account; logging in from there goes
    back to /account (query kept)."""
    with client(base, "127.0.1.4") as c:
        email = sign_up(c)
        post(c, "/logout", {})
        away = c.get("/account?tab=devices")
        assert away.status_code == 303
        assert away.headers["location"] == "/login?next=/account%3Ftab%3Ddevices"
        page = c.get(away.headers["location"])
        assert 'name="next" value="/account?tab=devices"' in page.text
        back = log_in(c, email, next_path="/account?tab=devices")
        assert (back.status_code, back.headers["location"]) == (303, "/account?tab=devices")
        assert c.get("/account").status_code == 200


HOSTILE_NEXT = [
    "//evil.example",
    "//evil.example/account",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%252F%252Fevil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    " //evil.example",
    "/..//evil.example",
    "/./%2E%2E//evil.example",
    "evil.example",
    "",
]


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_next_never_leaves_the_site(base: str, hostile: str) -> None:
    """A hostile ``next`` (scheme-relative, backslashes, schemes, encoded and double-encoded
    variants, dot segments, tabs) is neither put in the login form nor followed after login:
    the visitor lands on /."""
    with client(base, "127.0.1.5") as c:
        email = sign_up(c)
        post(c, "/logout", {})
        page = c.get("/login?next=" + quote(hostile, safe=""))
        assert 'name="next" value="/"' in page.text
        response = log_in(c, email, next_path=hostile)
        assert (response.status_code, response.headers["location"]) == (303, "/")


def test_forms_without_the_token_or_from_another_site_are_refused(base: str) -> None:
    """With a session, a form posted without ``_csrf``, with a wrong one, or from another origin
    (even with the right token) is refused with 403, and nothing happens."""
    with client(base, "127.0.1.6") as c:
        sign_up(c)
        token = csrf(c.get("/"))
        attempts = [
            c.post("/logout", data={}),
            c.post("/logout", data={"_csrf": "wrong"}),
            c.post("/logout", data={"_csrf": token}, headers={"origin": "https://evil.example"}),
            c.post("/logout", data={"_csrf": token}, headers={"sec-fetch-site": "cross-site"}),
            c.post("/saved", data={"story": "sealed"}),
            c.post("/account/revoke-others", data={}),
            c.post("/account/password", data={"current_password": PASSWORD, "new_password": "x"}),
        ]
        assert [r.status_code for r in attempts] == [403] * len(attempts)
        assert signed_in_as(c) == "Ann"
        assert "Nothing saved yet." in c.get("/").text
        same_site = c.post(
            "/saved",
            data={"_csrf": token, "story": "sealed"},
            headers={"origin": c.base_url.scheme + "://" + c.base_url.netloc.decode()},
        )
        assert same_site.status_code == 303


def test_a_browser_gets_its_refusal_as_a_page_an_api_client_as_json(base: str) -> None:
    """The demo's ``error_renderer``: a form posted without ``_csrf`` by a browser (``Accept``
    prefers HTML) gets an HTML 403 page saying what to do; the same refusal for a client that
    asks for anything (``*/*``) stays the library's JSON."""
    with client(base, "127.0.1.16") as c:
        sign_up(c)
        browser = c.post("/logout", data={}, headers={"accept": "text/html,*/*;q=0.8"})
        api = c.post("/logout", data={}, headers={"accept": "*/*"})
        assert browser.status_code == api.status_code == 403
        assert browser.headers["content-type"].startswith("text/html")
        assert "This form has expired" in browser.text
        assert api.json()["error"] == "csrf"
        assert signed_in_as(c) == "Ann"


def test_devices_revoke_one_and_sign_out_everywhere_else(base: str) -> None:
    """The account page lists each session with a readable browser name, IP, times and a "this
    device" marker; Revoke signs that device out at its next request; "Sign out everywhere else"
    ends all the others."""
    with (
        client(base, "127.0.1.7") as laptop,
        client(base, "127.0.1.8", FIREFOX) as phone,
        client(base, "127.0.1.9") as third,
    ):
        email = sign_up(laptop)
        assert log_in(phone, email).status_code == 303
        assert log_in(third, email).status_code == 303
        page = laptop.get("/account")
        rows = re.findall(r"<tr>\s*<td>(.*?)</tr>", page.text, re.S)
        assert len(rows) == 3
        assert "Firefox 126 on Windows" in page.text
        assert "Chrome 125 on Linux" in page.text
        assert "127.0.1.8" in page.text
        mine = [r for r in rows if "this device" in r]
        assert len(mine) == 1
        assert "127.0.1.7" in mine[0]

        phone_id = next(
            re.search(r'name="session_id" value="([^"]+)"', r).group(1)  # type: ignore[union-attr]
            for r in rows
            if "Firefox" in r
        )
        revoked = post(laptop, "/account/revoke", {"session_id": phone_id}, "/account")
        assert (revoked.status_code, revoked.headers["location"]) == (303, "/account")
        assert flashes(laptop.get("/account")) == ["Signed out that device."]
        assert phone.get("/account").status_code == 303
        assert signed_in_as(phone) is None

        again = post(laptop, "/account/revoke", {"session_id": phone_id}, "/account")
        assert again.status_code == 303
        assert flashes(laptop.get("/account")) == ["That device was already signed out."]

        others = post(laptop, "/account/revoke-others", {}, "/account")
        assert others.status_code == 303
        assert flashes(laptop.get("/account")) == [
            "Signed out everywhere else (1 other session(s))."
        ]
        assert signed_in_as(third) is None
        assert signed_in_as(laptop) == "Ann"

        self_id = re.search(r'name="session_id" value="([^"]+)"', laptop.get("/account").text)
        assert self_id is not None
        out = post(laptop, "/account/revoke", {"session_id": self_id.group(1)}, "/account")
        assert (out.status_code, out.headers["location"]) == (303, "/")
        assert flashes(laptop.get("/")) == ["You signed this device out."]
        assert signed_in_as(laptop) is None


def test_password_change_signs_the_other_devices_out(base: str) -> None:
    """A wrong current password is a flash; the right one changes it, says so once, and signs
    the other device out; the new password logs in, the old one does not."""
    with client(base, "127.0.1.10") as laptop, client(base, "127.0.1.11") as phone:
        email = sign_up(laptop)
        assert log_in(phone, email).status_code == 303
        form = {"current_password": "wrong password", "new_password": "a brand new secret"}
        wrong = post(laptop, "/account/password", form, "/account")
        assert (wrong.status_code, wrong.headers["location"]) == (303, "/account")
        assert flashes(laptop.get("/account")) == ["Your current password is wrong."]
        weak = {"current_password": PASSWORD, "new_password": "short"}
        post(laptop, "/account/password", weak, "/account")
        assert len(flashes(laptop.get("/account"))) == 1
        form["current_password"] = PASSWORD
        changed = post(laptop, "/account/password", form, "/account")
        assert changed.status_code == 303
        assert flashes(laptop.get("/account")) == [
            "Password changed. Your other devices were signed out."
        ]
        assert flashes(laptop.get("/account")) == []
        assert signed_in_as(phone) is None
        assert log_in(phone, email).status_code == 303
        assert flashes(phone.get("/login")) == ["Invalid email or password."]
        assert log_in(phone, email, "a brand new secret").status_code == 303
        assert signed_in_as(phone) == "Ann"


def test_a_new_device_is_told_once_to_the_devices_signed_in_before(base: str) -> None:
    """A sign-in from a new browser (the on_new_device hook) shows a warning flash once on the
    user's session that was signed in before it, never on the new device itself."""
    with client(base, "127.0.1.12") as laptop, client(base, "127.0.1.13", FIREFOX) as phone:
        email = sign_up(laptop)
        laptop.get("/")
        assert log_in(phone, email).status_code == 303
        assert flashes(phone.get("/")) == ["Welcome back, Ann."]
        told = flashes(laptop.get("/"))
        assert len(told) == 1
        assert told[0].startswith(
            "A new device signed in to your account: Firefox 126 on Windows from 127.0.1.13"
        )
        assert flashes(laptop.get("/")) == []
        assert flashes(phone.get("/")) == []


def test_every_earlier_device_is_told_and_an_attacker_cannot_use_up_the_warning(
    base: str,
) -> None:
    """Found by an attack: the first session to load a page took the warning away from every
    other one, and an attacker signing in a few more times from its own session used up the
    owner's warnings. Each session signed in before a new device is told once, whatever the
    others do."""
    with (
        client(base, "127.0.1.30") as laptop,
        client(base, "127.0.1.31", FIREFOX) as phone,
        client(base, "127.0.1.32", "curl/8.0") as attacker,
    ):
        email = sign_up(laptop)
        laptop.get("/")
        assert log_in(phone, email).status_code == 303
        phone.get("/")
        assert log_in(attacker, email).status_code == 303
        for n in range(6):  # more sign-ins, each from "another device", read by the attacker
            with client(base, f"127.0.1.{40 + n}", f"curl/{n}.0") as again:
                assert log_in(again, email).status_code == 303
            attacker.get("/")
        laptop_told = flashes(laptop.get("/"))
        phone_told = flashes(phone.get("/"))
    assert any("from 127.0.1.32" in m for m in laptop_told)  # the attacker's first sign-in
    assert any("from 127.0.1.32" in m for m in phone_told)
    assert len(laptop_told) == 8  # the phone, the attacker and its six more sign-ins
    assert len(phone_told) == 7


def test_form_validation_errors_are_flashes(base: str) -> None:
    """Bad input on a form (invalid email, taken email, empty password, control characters in
    the name, unknown story) is a 303 back with a flash, never a JSON error."""
    with client(base, "127.0.1.14") as c:
        email = sign_up(c)
        post(c, "/logout", {})
        cases = [
            ("/signup", {"email": "not-an-email", "password": PASSWORD}),
            ("/signup", {"email": email, "password": PASSWORD}),
            ("/signup", {"email": "x" + email, "password": ""}),
            ("/signup", {"email": "y" + email, "password": PASSWORD, "name": "A\u202eB"}),
            ("/login", {"email": "", "password": ""}),
            ("/saved", {"story": "no-such-story"}),
        ]
        told = []
        for path, data in cases:
            response = post(c, path, data, "/signup")
            assert response.status_code == 303, (path, data, response.text)
            told.append(flashes(c.get(response.headers["location"])))
        assert [len(t) for t in told] == [1] * len(cases)
        assert told[1] == ["That email already has an account. Log in instead?"]
        assert told[5] == ["There is no such story."]
        assert all("{" not in t[0] for t in told)


MALFORMED = [
    ("application/x-www-form-urlencoded", b"\xff\xfe\x00"),
    ("application/x-www-form-urlencoded", b"email=%ff%fe&password=x"),
    ("application/x-www-form-urlencoded", b"email=%&password=%%"),
    ("application/x-www-form-urlencoded", b"email=a%00b@example.com&password=a%00b&name=%00"),
    ("application/x-www-form-urlencoded", b"=&=&&&;;=="),
    ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(500))),
    ("application/x-www-form-urlencoded", b"email=" + b"a" * 40_000),
    ("application/x-www-form-urlencoded", b"email=%ED%A0%80@example.com&password=xx"),
    ("application/x-www-form-urlencoded; charset=latin-1", b"email=\xe9@example.com"),
    ("application/json", b'{"email": "a@example.com", "password": "x"}'),
    ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
    ("text/plain", b"email=a@example.com"),
    ("", b""),
]
FORM_PATHS = ["/login", "/signup", "/saved", "/logout", "/account/password", "/account/revoke"]


@pytest.mark.parametrize(("content_type", "body"), MALFORMED)
def test_malformed_form_posts_never_make_a_500(base: str, content_type: str, body: bytes) -> None:
    """Odd bytes, bad escapes, NULs, lone surrogates, too many fields, big bodies and other
    content types, posted to every form, anonymous and signed in: 303, 400, 403, 413, 415 or
    422, never a 500."""
    statuses = set()
    with client(base, "127.0.1.15") as anonymous, client(base, "127.0.1.16") as member:
        sign_up(member)
        token = csrf(member.get("/account")).encode()
        for path in FORM_PATHS:
            headers = {"content-type": content_type} if content_type else {}
            statuses.add(anonymous.post(path, content=body, headers=headers).status_code)
            with_token = b"_csrf=" + token + b"&" + body
            statuses.add(member.post(path, content=with_token, headers=headers).status_code)
    assert statuses <= {303, 400, 403, 413, 415, 422}, statuses


def test_the_json_api_and_the_script_page_are_still_there(base: str) -> None:
    """The JSON API answers as before and the JavaScript page moved to /app."""
    with client(base, "127.0.1.17") as c:
        assert c.get("/api/me").status_code == 401
        app = c.get("/app")
        assert app.status_code == 200
        assert "register-form" in app.text
        assert c.get("/signup").status_code == 200
        assert c.get("/account").headers["location"] == "/login?next=/account"


def test_pages_escape_what_people_type(base: str) -> None:
    """A name with markup is shown as text (autoescape), on every page that shows it."""
    with client(base, "127.0.1.18") as c:
        sign_up(c, name="<script>alert(1)</script>")
        page = c.get("/account")
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
