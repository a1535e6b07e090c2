"""The ``coatcheck`` command: serve the demo, create schemas, count, list, revoke and purge
sessions, and print a new secret.

Every subcommand that touches sessions takes ``--store URL`` (or ``COATCHECK_STORE``), the same URL
the middleware and the demo use (``sealed://`` too), and ``--secret`` with ``--previous-secret``
(or ``COATCHECK_SECRET`` and ``COATCHECK_PREVIOUS_SECRETS``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ._core.config import CookieConfig, SessionConfig
from .admin import SessionAdmin, SessionInfo
from .errors import CoatcheckError, NotSupportedError
from .manager import SessionManager
from .stores.url import redact, sync_store_from_url

log = logging.getLogger("coatcheck")
DEFAULT_DATA_DIR = ".coatcheck"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - compared against, never bound to


def _data_dir(args: argparse.Namespace) -> Path:
    path = Path(args.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _secret(args: argparse.Namespace) -> str:
    """--secret, else $COATCHECK_SECRET, else a dev secret generated once and kept on disk."""
    if args.secret:
        return str(args.secret)
    from_env = os.environ.get("COATCHECK_SECRET")
    if from_env:
        return from_env
    path = _data_dir(args) / "secret"
    secret = secrets.token_urlsafe(32)
    try:
        # Created 0600 in one step: a file written first and chmod-ed after is briefly readable
        # by everyone. O_EXCL: never write through a file (or symlink) someone else put there.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
    else:
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
    print(
        f"warning: no --secret or COATCHECK_SECRET given; using the development secret in {path}. "
        "Set COATCHECK_SECRET in production.",
        file=sys.stderr,
    )
    return secret


def _store_url(args: argparse.Namespace) -> str:
    url = args.store or os.environ.get("COATCHECK_STORE")
    if url:
        return str(url)
    return f"sqlite:///{(_data_dir(args) / 'sessions.db').resolve()}"


def _previous_secrets(args: argparse.Namespace) -> tuple[str, ...]:
    """--previous-secret (repeated), else $COATCHECK_PREVIOUS_SECRETS (comma or space separated),
    oldest first."""
    if args.previous_secret:
        return tuple(args.previous_secret)
    listed = os.environ.get("COATCHECK_PREVIOUS_SECRETS", "")
    return tuple(s for s in listed.replace(",", " ").split() if s)


def _config(args: argparse.Namespace, **overrides: Any) -> SessionConfig:
    return SessionConfig(
        secret=_secret(args), previous_secrets=_previous_secrets(args), **overrides
    )


def _sync_admin(args: argparse.Namespace) -> SessionAdmin:
    url = _store_url(args)
    if url.lower().startswith("memory:"):
        print(
            "note: memory:// lives in one process; this command sees its own new, empty store, "
            "not your app's (use a server store, or admin.stats() inside the app)",
            file=sys.stderr,
        )
    store = sync_store_from_url(url)
    return SessionAdmin(SessionManager(store, _config(args)))


def cmd_demo(args: argparse.Namespace) -> int:
    import uvicorn

    from .demo.app import create_app
    from .stores.url import async_store_from_url

    url = _store_url(args)
    if url.split(":", 1)[0].split("+")[0] in (
        "sqlite",
        "postgresql",
        "postgres",
        "mysql",
        "mariadb",
    ):
        from .stores._sql_engine import store_url  # needs SQLAlchemy, as this store does

        # The users table shares the database, not the session store's options (table_prefix...).
        users_url = args.users or store_url(url).url.render_as_string(hide_password=False)
        _migrate(url)
    else:
        users_url = args.users or f"sqlite:///{(_data_dir(args) / 'demo-users.db').resolve()}"
        if url.lower().startswith("sealed:"):
            _migrate(url)  # the revocation store's schema, when it is a SQL database
    secure = bool(args.https_cookies)
    timeouts: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "idle_timeout",
            "absolute_timeout",
            "remember_idle_timeout",
            "remember_absolute_timeout",
        )
        if getattr(args, name) is not None  # unset: the library default (and its rules)
    }
    if args.idle_timeout is None and args.absolute_timeout is not None:
        # A short absolute timeout alone: the idle one shrinks with it rather than refusing.
        timeouts["idle_timeout"] = min(30 * 60.0, args.absolute_timeout)
    config = _config(
        args, **timeouts, allow_remember=not args.no_remember, cookie=CookieConfig(secure=secure)
    )
    allowed_hosts = _allowed_hosts(args)
    if not secure:
        print(
            "note: the demo serves plain HTTP, so its cookies are not Secure and not __Host- "
            "(pass --https-cookies behind TLS). Library defaults are Secure + __Host-.",
            file=sys.stderr,
        )
    app = create_app(
        store=async_store_from_url(url),
        config=config,
        users_url=users_url,
        allowed_hosts=allowed_hosts,
    )
    print(
        f"coatcheck demo on http://{args.host}:{args.port}  (store: {redact(url)})", file=sys.stderr
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=False)
    return 0


def _allowed_hosts(args: argparse.Namespace) -> list[str]:
    """--allowed-host values, else the bound address (with its loopback names).

    Answering any Host lets a hostile page reach the demo through DNS rebinding; a wildcard
    bind has no address to default to, so it needs --allowed-host.
    """
    if args.allowed_host:
        return list(args.allowed_host)
    host = args.host.strip("[]")
    if host in _WILDCARD_HOSTS:
        raise CoatcheckError(
            f"--host {args.host} answers on every address: say which host names to serve with "
            "--allowed-host NAME (repeatable; '*' for any)"
        )
    hosts = [host]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        hosts += ["localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(hosts))


def _migrate(url: str) -> None:
    store = sync_store_from_url(url)
    try:
        create = getattr(store, "create_schema", None)
        if create is not None:
            create()
    finally:
        store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    url = _store_url(args)
    if args.sql:
        from .stores.sql import schema_ddl

        print(schema_ddl(url))
        return 0
    _migrate(url)
    print(f"schema ready on {redact(url)}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    admin = _sync_admin(args)
    progress = None if args.json else Progress.on(sys.stderr)
    started = time.perf_counter()
    purged = 0
    try:
        if progress is not None:
            progress.expected = _expired_count(admin)
        while True:
            # One batch per call, so that the bar moves between batches (admin.purge_expired()
            # runs this same loop inside one call).
            deleted = admin.purge_expired(batch=args.batch, max_batches=1)
            purged += deleted
            if progress is not None:
                progress.show(purged)
            if deleted < args.batch:
                break
    except KeyboardInterrupt:
        if progress is not None:
            progress.finish()
            progress = None
        print(f"interrupted after purging {purged} expired sessions", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.finish()  # also before an error message, which then gets its own line
        admin.manager.close()
    seconds = time.perf_counter() - started
    if args.json:
        _print_json({"purged": purged, "seconds": round(seconds, 3)})
    else:
        print(f"purged {purged} expired sessions in {seconds:.2f}s")
    return 0


def _expired_count(admin: SessionAdmin) -> int | None:
    """How many sessions purge has ahead of it (the bar's length), or None when the store cannot
    count them (sealed://, which purges revocation records only)."""
    try:
        return admin.stats().expired
    except NotSupportedError:
        return None


class Progress:
    """A one-line progress bar on a terminal, redrawn in place at most 10 times a second."""

    WIDTH = 30
    INTERVAL = 0.1

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.expected: int | None = None
        """The bar's length; None draws a counter instead."""
        self._started = time.monotonic()
        self._drawn_at: float | None = None
        self._done = 0
        self._width = 0

    @classmethod
    def on(cls, stream: TextIO) -> Progress | None:
        """A bar on ``stream`` if it is a terminal; None otherwise (logs and pipes get nothing)."""
        isatty = getattr(stream, "isatty", None)
        return cls(stream) if isatty is not None and isatty() else None

    def show(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if self._drawn_at is None or now - self._drawn_at >= self.INTERVAL:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final figures and end the line."""
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        done = self._done
        rate = done / max(now - self._started, 1e-6)
        if self.expected is not None:
            # Sessions keep expiring while purge runs: the bar's end moves with what was found.
            total = max(self.expected, done)
            part, whole = (done, total) if total else (1, 1)  # nothing to purge: done
            # Rounded down, so that a full bar and 100% mean done.
            filled = self.WIDTH * part // whole
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            line = f"purging [{bar}] {done}/{total} {100 * part // whole}%  {rate:.0f}/s"
        else:
            line = f"purging: {done} deleted  {rate:.0f}/s"
        # \r returns to the line's start; padding blanks what a longer previous line left.
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)


def cmd_stats(args: argparse.Namespace) -> int:
    admin = _sync_admin(args)
    try:
        now = admin.manager.clock()
        stats = admin.stats()
    finally:
        admin.manager.close()
    if args.json:
        _print_json(
            {
                "at": _iso(now),
                "live": stats.live,
                "signed_in": stats.signed_in,
                "anonymous": stats.anonymous,
                "users": stats.users,
                "by_transport": {"cookie": stats.cookie, "bearer": stats.bearer},
                "expired": stats.expired,
            }
        )
        return 0
    rows = [
        ("live sessions", stats.live),
        ("  signed in", stats.signed_in),
        ("  anonymous", stats.anonymous),
        ("  cookie", stats.cookie),
        ("  bearer", stats.bearer),
        ("signed-in users", stats.users),
        ("expired, awaiting purge", stats.expired),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


def _session_row(info: SessionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "user_id": info.user_id,
        "created_at": _iso(info.created_at),
        "last_seen_at": _iso(info.last_seen_at),
        "expires_at": _iso(info.expires_at),
        "auth_time": _iso(info.auth_time) if info.auth_time is not None else None,
        "transport": info.transport,
        "remember": info.remember,
        "user_agent": info.user_agent,
        "ip": info.ip,
        "label": info.label,
    }


def cmd_sessions(args: argparse.Namespace) -> int:
    admin = _sync_admin(args)
    try:
        infos = admin.sessions_of(args.user)
    finally:
        admin.manager.close()
    if args.json:
        _print_json({"user_id": args.user, "sessions": [_session_row(i) for i in infos]})
        return 0
    for info in infos:
        print(
            f"{info.id}  {info.transport:6}  last seen {_iso(info.last_seen_at)}  "
            f"{info.ip or '-'}  {info.user_agent[:60]}"
        )
    print(f"{len(infos)} live session(s) for user {args.user}")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    admin = _sync_admin(args)
    try:
        user_ids = admin.user_ids()
    finally:
        admin.manager.close()
    if args.json:
        _print_json({"users": user_ids})
        return 0
    for user_id in user_ids:
        print(user_id)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    admin = _sync_admin(args)
    sealed = admin.manager.sealed is not None
    try:
        if args.session:
            ok = admin.revoke(args.session, owner=args.owner)
        else:
            count = admin.revoke_all(args.user, keep=args.keep)
    finally:
        admin.manager.close()
    if args.session:
        if args.json:
            # A sealed session cannot be known to exist: its revocation is not a count.
            revoked = None if sealed else int(ok)
            _print_json({"session_id": args.session, "revoked": revoked})
        else:
            print("revoked" if ok else "no such session")
        return 0 if ok else 1
    if args.json:
        _print_json({"user_id": args.user, "kept": args.keep, "revoked": None if sealed else count})
    elif sealed:
        kept = f" except {args.keep}" if args.keep else ""
        print(f"revoked every sealed session of user {args.user} issued until now{kept}")
    else:
        print(f"revoked {count} session(s) of user {args.user}")
    return 0


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def cmd_secret(args: argparse.Namespace) -> int:
    """Print a new random secret (256 bits, base64url: 43 characters)."""
    print(secrets.token_urlsafe(32))
    return 0


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return seconds


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coatcheck", description=__doc__)
    data_dir_help = "where the dev secret and default SQLite files live"
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=data_dir_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        # Accepted after the subcommand too (`coatcheck demo --data-dir X`); SUPPRESS keeps the
        # value given before it when this one is absent.
        p.add_argument("--data-dir", default=argparse.SUPPRESS, help=data_dir_help)
        p.add_argument(
            "--store", help="store URL (default: $COATCHECK_STORE or sqlite file in --data-dir)"
        )
        p.add_argument(
            "--secret", help="secret (default: $COATCHECK_SECRET or a persisted dev secret)"
        )
        p.add_argument(
            "--previous-secret",
            action="append",
            metavar="SECRET",
            help="an older secret still accepted for sealed cookies (repeat, oldest first; "
            "default: $COATCHECK_PREVIOUS_SECRETS)",
        )

    demo = sub.add_parser("demo", help="serve the demo app")
    common(demo)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--idle-timeout", type=_seconds, help="seconds (default 1800)")
    demo.add_argument("--absolute-timeout", type=_seconds, help="seconds (default 43200)")
    demo.add_argument(
        "--remember-idle-timeout",
        type=_seconds,
        help="seconds, for remember-me logins (default 1209600, 14 d; never longer than "
        "--absolute-timeout unless a --remember-* timeout is given)",
    )
    demo.add_argument(
        "--remember-absolute-timeout",
        type=_seconds,
        help="seconds, for remember-me logins (default 2592000, 30 d; same bound)",
    )
    demo.add_argument(
        "--no-remember", action="store_true", help="ignore 'remember': every login is ordinary"
    )
    demo.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name to answer (repeatable; default: the --host address, plus localhost "
        "names for a loopback address)",
    )
    demo.add_argument(
        "--users", help="SQL URL for the demo's user table (default: the store, or a SQLite file)"
    )
    demo.add_argument(
        "--https-cookies", action="store_true", help="Secure + __Host- cookies (behind TLS)"
    )
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(func=cmd_demo)

    migrate = sub.add_parser("migrate", help="create the store's schema (SQL stores)")
    common(migrate)
    migrate.add_argument("--sql", action="store_true", help="print the DDL instead of running it")
    migrate.set_defaults(func=cmd_migrate)

    json_help = "print one JSON object (the schema is in the README)"
    purge = sub.add_parser(
        "purge", help="delete expired sessions in bounded batches (a progress bar on a terminal)"
    )
    common(purge)
    purge.add_argument("--batch", type=_positive_int, default=500)
    purge.add_argument("--json", action="store_true", help=json_help)
    purge.set_defaults(func=cmd_purge)

    stats = sub.add_parser(
        "stats", help="count live sessions, signed-in users, transports, expired sessions"
    )
    common(stats)
    stats.add_argument("--json", action="store_true", help=json_help)
    stats.set_defaults(func=cmd_stats)

    sessions = sub.add_parser("sessions", help="list a user's live sessions")
    common(sessions)
    sessions.add_argument("--user", required=True)
    sessions.add_argument("--json", action="store_true", help=json_help)
    sessions.set_defaults(func=cmd_sessions)

    users = sub.add_parser("users", help="list signed-in users")
    common(users)
    users.add_argument("--json", action="store_true", help=json_help)
    users.set_defaults(func=cmd_users)

    revoke = sub.add_parser("revoke", help="revoke one session or all of a user's sessions")
    common(revoke)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", help="a public session id")
    target.add_argument("--user", help="revoke every session of this user")
    revoke.add_argument("--keep", help="with --user: a session id to keep")
    revoke.add_argument(
        "--owner", help="with --session: the session's user (needed for sealed:// sessions)"
    )
    revoke.add_argument("--json", action="store_true", help=json_help)
    revoke.set_defaults(func=cmd_revoke)

    secret = sub.add_parser("secret", help="print a new random secret (for COATCHECK_SECRET)")
    secret.set_defaults(func=cmd_secret)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except CoatcheckError as exc:
        print(f"coatcheck: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
