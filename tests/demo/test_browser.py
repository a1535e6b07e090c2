"""The demo in a real browser (Debian's headless Chromium driven by Playwright): what a person
sees and clicks, including CSRF headers sent by the page's own script."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.demo.server import demo_server


def test_register_cart_logout_login_in_a_browser(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A person can register, fill a cart, log out, log back in with the cart kept, see their
    sessions, and sign out; the session cookie is HttpOnly (invisible to the page's script)."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    with demo_server(tmp_path) as base:
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/app")
        page.wait_for_selector("text=Not signed in.")

        page.fill("#cart-form input[name=item]", "umbrella")
        page.click("#cart-form button")
        page.wait_for_selector("#cart li:has-text('umbrella')")

        page.fill("#register-form input[name=email]", email)
        page.fill("#register-form input[name=name]", "Ann")
        page.fill("#register-form input[name=password]", "correct horse battery")
        page.click("#register-form button")
        page.wait_for_selector(f"text=Signed in as {email} (Ann)")
        page.wait_for_selector("#cart li:has-text('umbrella')")
        page.wait_for_selector("#sessions tr:has-text('(this one)')")
        assert "coatcheck_session=" not in page.evaluate("document.cookie")
        assert "XSRF-TOKEN=" in page.evaluate("document.cookie")
        page.screenshot(path=str(tmp_path / "signed-in.png"), full_page=True)

        page.click("#logout")
        page.wait_for_selector("text=Not signed in.")
        assert page.locator("#cart li").count() == 0

        page.fill("#cart-form input[name=item]", "boots")
        page.click("#cart-form button")
        page.wait_for_selector("#cart li:has-text('boots')")
        page.fill("#login-form input[name=email]", email)
        page.fill("#login-form input[name=password]", "correct horse battery")
        page.click("#login-form button")
        page.wait_for_selector(f"text=Signed in as {email}")
        page.wait_for_selector("#cart li:has-text('boots')")

        other = browser.new_context().new_page()
        other.goto(base + "/app")
        other.fill("#login-form input[name=email]", email)
        other.fill("#login-form input[name=password]", "correct horse battery")
        other.click("#login-form button")
        other.wait_for_selector(f"text=Signed in as {email}")

        page.reload()
        page.wait_for_selector("#sessions tr >> nth=1")
        page.click("#revoke-others")
        page.wait_for_selector("text=Signed out 1 other session(s).")
        other.reload()
        other.wait_for_selector("text=Not signed in.")
        context.close()


def test_sealed_cookies_in_a_browser(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On sealed:// with a revocation record, the page works end to end: the session list
    explains why it is empty, and signing out other sessions ends the other browser's."""
    from urllib.parse import quote

    email = f"{uuid.uuid4().hex[:8]}@example.com"
    store = "sealed://?revocations=" + quote(f"sqlite:///{tmp_path / 'rv.db'}", safe="")
    with demo_server(tmp_path, store=store) as base:
        page = browser.new_context().new_page()
        page.goto(base + "/app")
        page.fill("#cart-form input[name=item]", "umbrella")
        page.click("#cart-form button")
        page.wait_for_selector("#cart li:has-text('umbrella')")
        page.fill("#register-form input[name=email]", email)
        page.fill("#register-form input[name=password]", "correct horse battery")
        page.click("#register-form button")
        page.wait_for_selector(f"text=Signed in as {email}")
        page.wait_for_selector("#cart li:has-text('umbrella')")
        page.wait_for_selector("#sessions td:has-text('no list of them exists')")
        assert "coatcheck_session=" not in page.evaluate("document.cookie")

        other = browser.new_context().new_page()
        other.goto(base + "/app")
        other.fill("#login-form input[name=email]", email)
        other.fill("#login-form input[name=password]", "correct horse battery")
        other.click("#login-form button")
        other.wait_for_selector(f"text=Signed in as {email}")

        page.click("#revoke-others")
        page.wait_for_selector("text=Signed out your other sessions.")
        other.reload()
        other.wait_for_selector("text=Not signed in.")
        page.reload()
        page.wait_for_selector(f"text=Signed in as {email}")
