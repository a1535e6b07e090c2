# --8<-- [start:setup]
"""A server-rendered site on Flask with coatcheck: sign-up, log-in with ``next``, flash
messages, a devices page (revoke one, sign out everywhere else), password change and logout.
Printed in full in docs/guide.md and driven through its whole flow by tests/test_guide.py."""

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template, request

from coatcheck import (
    CookieConfig,
    HTTPError,
    LoginGuard,
    PasswordError,
    SessionAdmin,
    SessionConfig,
    SessionManager,
    login,
    logout,
    sync_store_from_url,
)
from coatcheck.integrations.flask import (
    Coatcheck,
    current_user,
    get_session,
    login_required,
    revoke_session,
    safe_next,
)
from coatcheck.passwords import PasswordHasher
from coatcheck.throttling import canonical_login_name

# Over plain http:// (local development) browsers drop Secure cookies: COATCHECK_DEV=1 turns
# Secure off, and the session cookie is then "coatcheck_session" instead of "__Host-session".
cookie = CookieConfig(secure=False) if os.environ.get("COATCHECK_DEV") == "1" else CookieConfig()
manager = SessionManager(
    sync_store_from_url(os.environ.get("COATCHECK_STORE", "sqlite:///sessions.db")),
    SessionConfig(
        secret=os.environ.get("COATCHECK_SECRET") or secrets.token_urlsafe(32), cookie=cookie
    ),
)
admin = SessionAdmin(manager)
guard = LoginGuard(manager)  # login throttling, counted in the session store
hasher = PasswordHasher()
app = Flask(__name__, template_folder=Path(__file__).parent / "templates" / "flask")
# --8<-- [end:setup]


# --8<-- [start:users]
class Users:
    """Your user table (here in memory): id, email, password hash."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, str]] = {}

    def by_email(self, email: str) -> dict[str, str] | None:
        return next((u for u in self.by_id.values() if u["email"] == email), None)

    def add(self, email: str, password_hash: str) -> dict[str, str]:
        user = {"id": str(len(self.by_id) + 1), "email": email, "password_hash": password_hash}
        self.by_id[user["id"]] = user
        return user


users = Users()


def error_page(error: HTTPError) -> str:
    """coatcheck's refusals (403 CSRF, 401, 429, 503...) as a page, for browsers; API clients
    still get JSON. No session helpers here: a refusal can come before the session opened."""
    return render_template("error.html", status=error.status_code, error=error.body["error"])


Coatcheck(
    app,
    manager=manager,
    user_loader=users.by_id.get,
    user_credential=lambda user: user["password_hash"],  # old-password sessions end
    login_view=manager.config.login_path,  # @login_required pages go to /login?next=...
    error_renderer=error_page,
)


def see_other(url: str, headers: list[tuple[str, str]] | None = None) -> Any:
    response = redirect(url, 303)
    for name, value in headers or []:
        response.headers.add(name, value)
    return response


# --8<-- [end:users]


# --8<-- [start:signup]
@app.get("/")
def home() -> Any:
    return render_template("home.html")


@app.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    if request.method == "GET":
        return render_template("signup.html")
    try:
        email = canonical_login_name(request.form.get("email", ""))
    except ValueError:
        return render_template("signup.html", error="That is not an email address."), 422
    if users.by_email(email) is not None:
        return render_template("signup.html", error="That email is taken."), 409
    try:
        password_hash = hasher.hash(request.form.get("password", ""))
    except PasswordError as exc:  # too short (under 8 characters) or too long
        return render_template("signup.html", error=str(exc)), 422
    user = users.add(email, password_hash)
    session = get_session()
    login(session, user["id"], credential=password_hash)  # bound to this password
    session.flash("Welcome! Your account is ready.", "success")
    # This browser gets a device cookie: its owner is never throttled with an attacker.
    return see_other("/", guard.device_cookie(user["id"]))


# --8<-- [end:signup]


# --8<-- [start:login]
@app.route("/login", methods=["GET", "POST"])
def login_page() -> Any:
    next_url = safe_next(request.args.get("next"))  # only paths on this site
    if request.method == "GET":
        return render_template("login.html", next=next_url)
    session = get_session()
    try:
        email = canonical_login_name(request.form.get("email", ""))
    except ValueError:
        email = ""
    user = users.by_email(email)
    attempt = guard.check(  # raises a 429 HTTPError (Retry-After) when throttled
        email or None,
        session.ip,
        identity=user["id"] if user else None,
        device=request.cookies.get(guard.device_cookie_name),
        credential=user["password_hash"] if user else None,  # device cookies die with it
    )
    checked = hasher.check_password(  # also costs a hash for unknown emails
        user["password_hash"] if user else None, request.form.get("password", "")
    )
    if user is None or not checked.ok:
        error = "Wrong email or password."
        return render_template("login.html", next=next_url, error=error), 401
    if checked.new_hash is not None:  # hashed with older parameters: upgrade it
        user["password_hash"] = checked.new_hash
    device = guard.succeeded(attempt)  # forget the failures; a fresh device cookie
    login(
        session,
        user["id"],
        remember="remember" in request.form,  # a long-lived, revocable session
        credential=user["password_hash"],
    )
    session.flash(f"Signed in as {user['email']}.", "success")
    return see_other(next_url, device)


# --8<-- [end:login]


# --8<-- [start:devices]
@app.get("/devices")
@login_required  # a browser goes to /login?next=/devices; an API client gets a 401
def devices() -> Any:
    listed = admin.sessions_of(current_user()["id"])  # SessionInfo, most recently seen first
    this_device = get_session().id  # SessionInfo.id is the same public id
    return render_template("devices.html", sessions=listed, this_device=this_device)


@app.post("/devices/<session_id>/revoke")
@login_required
def revoke(session_id: str) -> Any:
    # False when the id is not one of this user's sessions; this one's own id is a logout.
    if revoke_session(session_id, owner=current_user()["id"]):
        get_session().flash("That device is signed out.", "success")
    return see_other("/devices")


@app.post("/devices/revoke-others")
@login_required
def revoke_others() -> Any:
    ended = admin.revoke_all(current_user()["id"], keep=get_session().id)
    get_session().flash(f"Signed out of {ended} other device(s).", "success")
    return see_other("/devices")


# --8<-- [end:devices]


# --8<-- [start:password]
@app.route("/password", methods=["GET", "POST"])
@login_required
def change_password() -> Any:
    if request.method == "GET":
        return render_template("password.html")
    user = current_user()
    if not hasher.check_password(user["password_hash"], request.form["current_password"]).ok:
        return render_template("password.html", error="The current password is wrong."), 401
    try:
        new_hash = hasher.hash(request.form.get("new_password", ""))
    except PasswordError as exc:
        return render_template("password.html", error=str(exc)), 422
    user["password_hash"] = new_hash
    # End every other session, rotate this one (remember-me kept), bind it to the new password.
    session = get_session()
    ended = admin.password_changed(session, credential=new_hash)
    session.flash(f"Password changed; {ended} other device(s) signed out.", "success")
    # Device cookies are bound to the password: this browser gets one for the new one.
    presented = request.cookies.get(guard.device_cookie_name)
    return see_other("/devices", guard.device_cookie(user["id"], presented, credential=new_hash))


@app.post("/logout")
def sign_out() -> Any:
    session = get_session()
    logout(session)
    session.flash("You have been signed out.")  # carried into the new anonymous session
    return see_other("/")


# --8<-- [end:password]
