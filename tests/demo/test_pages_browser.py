"""The demo's server-rendered pages in a real browser (Debian's headless Chromium driven by
Playwright), with JavaScript on and off: what a person sees and clicks.

With ``COATCHECK_SCREENSHOTS=1`` the run also writes the README's screenshots:
``docs/screenshots/login-flash.png`` and ``docs/screenshots/devices.png``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.demo.server import demo_server

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new secret"
VIEWPORT = {"width": 1000, "height": 700}
PHONE_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0"
SCREENSHOTS = Path(__file__).parent.parent.parent / "docs" / "screenshots"


def _screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("COATCHECK_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name))


def _flashes(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [text.strip() for text in page.locator(".flash").all_inner_texts()]


def _click(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    """Click a link or a form's button and wait for the page it leads to (after redirects):
    reading the page before that would see the old one."""
    with page.expect_navigation():
        page.click(selector)


def _log_in(page, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#login-form input[name=email]", email)
    page.fill("#login-form input[name=password]", password)
    _click(page, "#login-form button")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_pages_flow_in_a_browser(browser, tmp_path: Path, javascript: bool) -> None:  # type: ignore[no-untyped-def]
    """Save a story, sign up (it stays saved), log out, a wrong password's flash shown once and
    gone on reload, log in back to the page asked for, a second browser as a second device:
    revoked from the first and signed out on its next click, then signed out by a password
    change; all of it with JavaScript on and off."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    with demo_server(tmp_path, cheap_hashing=True) as base:
        laptop_context = browser.new_context(java_script_enabled=javascript, viewport=VIEWPORT)
        laptop = laptop_context.new_page()
        laptop.goto(base + "/")
        _click(laptop, "#story-coat-check button")
        assert _flashes(laptop) == ["Saved “The coat check”."]
        assert laptop.locator("#saved li").all_inner_texts() == ["The coat check"]

        _click(laptop, "header a[href='/signup']")
        laptop.fill("#signup-form input[name=email]", email)
        laptop.fill("#signup-form input[name=name]", "Ann")
        laptop.fill("#signup-form input[name=password]", PASSWORD)
        _click(laptop, "#signup-form button")
        assert _flashes(laptop) == ["Welcome, Ann! Your account is ready."]
        assert laptop.locator("#saved li").all_inner_texts() == ["The coat check"]
        cookies = {c["name"]: c for c in laptop_context.cookies()}
        assert cookies["coatcheck_session"]["httpOnly"] is True

        _click(laptop, "#logout")
        assert _flashes(laptop) == ["You are signed out."]
        assert laptop.locator("header a[href='/login']").count() == 1

        laptop.goto(base + "/account")
        assert laptop.url == base + "/login?next=/account"
        _log_in(laptop, email, "not the password")
        assert _flashes(laptop) == ["Invalid email or password."]
        if javascript:
            _screenshot(laptop, "login-flash.png")
        laptop.reload()
        assert _flashes(laptop) == []
        _log_in(laptop, email, PASSWORD)
        assert laptop.url == base + "/account"
        assert laptop.locator("#devices tbody tr").count() == 1

        phone_context = browser.new_context(
            java_script_enabled=javascript, viewport=VIEWPORT, user_agent=PHONE_UA
        )
        phone = phone_context.new_page()
        phone.goto(base + "/login")
        _log_in(phone, email, PASSWORD)
        assert _flashes(phone) == ["Welcome back, Ann."]

        laptop.reload()
        told = _flashes(laptop)
        assert len(told) == 1
        assert told[0].startswith("A new device signed in to your account: Firefox 126 on Windows")
        rows = laptop.locator("#devices tbody tr")
        assert rows.count() == 2
        assert laptop.locator("#devices tr:has-text('this device')").count() == 1
        if javascript:
            _screenshot(laptop, "devices.png")

        _click(laptop, "#devices tr:has-text('Firefox') button:has-text('Revoke')")
        assert _flashes(laptop) == ["Signed out that device."]
        assert laptop.locator("#devices tbody tr").count() == 1
        _click(phone, "header a[href='/account']")  # its next click
        assert phone.url == base + "/login?next=/account"
        assert phone.locator("header a[href='/login']").count() == 1

        _log_in(phone, email, PASSWORD)
        assert phone.url == base + "/account"
        laptop.reload()
        laptop.fill("#password-form input[name=current_password]", PASSWORD)
        laptop.fill("#password-form input[name=new_password]", NEW_PASSWORD)
        _click(laptop, "#password-form button")
        assert _flashes(laptop) == ["Password changed. Your other devices were signed out."]
        laptop.reload()
        assert _flashes(laptop) == []
        assert laptop.locator("#devices tbody tr").count() == 1

        _click(phone, "header a[href='/account']")
        assert phone.url == base + "/login?next=/account"
        _log_in(phone, email, PASSWORD)
        assert _flashes(phone) == ["Invalid email or password."]
        _log_in(phone, email, NEW_PASSWORD)
        assert phone.url == base + "/account"

        _click(laptop, "#revoke-others")
        done, told = _flashes(laptop)  # the phone's new sign-in is news to the laptop again
        assert done == "Signed out everywhere else (1 other session(s))."
        assert told.startswith("A new device signed in to your account: Firefox 126 on Windows")
        _click(phone, "header .brand")
        assert phone.locator("header a[href='/login']").count() == 1
        laptop_context.close()
        phone_context.close()
