"""The coatcheck command on real stores: migrate, stats, sessions, users, revoke, purge."""

from __future__ import annotations

import calendar
import io
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from coatcheck import SessionAdmin, SessionConfig, SessionManager, login, sync_store_from_url
from coatcheck._core.http import RequestView
from coatcheck.cli import build_parser, main
from coatcheck.testing import FakeClock, test_config
from tests.demo.server import demo_server
from tests.services import require_service

SECRET = "cli-test-secret-0123456789abcdefghij"


def make_session(url: str, user_id: str, clock: FakeClock, agent: str = "curl/8") -> str:
    manager = SessionManager(sync_store_from_url(url), test_config(), clock=clock)
    try:
        request = RequestView("POST", "http", [("user-agent", agent)], "192.0.2.7")
        session = manager.open(request).session
        login(session, user_id)
        token = manager.commit(session).token
        assert token is not None
        return token.split(".")[0]
    finally:
        manager.close()


@pytest.fixture
def url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--data-dir", str(tmp_path), "migrate", "--store", url, "--secret", SECRET]) == 0
    assert capsys.readouterr().out.startswith("schema ready")
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_migrate_prints_ddl(capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path) -> None:
    """`migrate --sql` prints the CREATE TABLE and index statements."""
    code, out = run(
        capsys, "--data-dir", str(tmp_path), "migrate", "--store", url, "--sql", "--secret", SECRET
    )
    assert code == 0
    assert "CREATE TABLE" in out
    assert "CREATE INDEX" in out


def test_migrate_and_the_admin_commands_use_the_urls_table_prefix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`migrate --sql` prints the DDL of the URL's table_prefix, `migrate` creates those tables,
    and the other commands find the sessions in them."""
    url = f"sqlite:///{tmp_path / 's.db'}?table_prefix=app_"
    data, secret = ["--data-dir", str(tmp_path)], ["--secret", SECRET]
    code, out = run(capsys, *data, "migrate", "--store", url, "--sql", *secret)
    assert code == 0
    assert "CREATE TABLE app_sessions" in out
    assert "CREATE TABLE app_hits" in out
    assert "coatcheck_" not in out
    assert main([*data, "migrate", "--store", url, *secret]) == 0
    capsys.readouterr()
    with sqlite3.connect(tmp_path / "s.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"app_sessions", "app_hits"}
    make_session(url, "alice", FakeClock(start=time.time()))
    code, out = run(capsys, *data, "users", "--store", url, *secret)
    assert (code, out.split()) == (0, ["alice"])


@pytest.mark.parametrize("sql", [True, False])
def test_migrate_refuses_an_unknown_url_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sql: bool
) -> None:
    """A misspelt option in the store URL makes migrate (with or without --sql) exit 2 naming
    it, instead of printing or creating the default tables."""
    url = f"sqlite:///{tmp_path / 's.db'}?tabel_prefix=app_"
    flags = ["--sql"] if sql else []
    code = main(
        ["--data-dir", str(tmp_path), "migrate", "--store", url, *flags, "--secret", SECRET]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "'tabel_prefix'" in captured.err
    assert "table_prefix" in captured.err.replace("'tabel_prefix'", "")
    assert not (tmp_path / "s.db").exists()


def test_sessions_users_and_revoke(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    """Operators can list a user's sessions with metadata, list users, and revoke sessions."""
    clock = FakeClock(start=time.time())
    a = make_session(url, "alice", clock, "Firefox")
    b = make_session(url, "alice", clock, "Safari")
    make_session(url, "bob", clock)
    common = ["--data-dir", str(tmp_path)]

    code, out = run(
        capsys, *common, "sessions", "--store", url, "--user", "alice", "--json", "--secret", SECRET
    )
    rows = json.loads(out)["sessions"]
    assert code == 0
    assert sorted(r["id"] for r in rows) == sorted([a, b])
    assert {r["user_agent"] for r in rows} == {"Firefox", "Safari"}
    assert {r["ip"] for r in rows} == {"192.0.2.7"}

    code, out = run(capsys, *common, "users", "--store", url, "--secret", SECRET)
    assert out.split() == ["alice", "bob"]

    code, out = run(capsys, *common, "revoke", "--store", url, "--session", a, "--secret", SECRET)
    assert (code, out.strip()) == (0, "revoked")
    code, out = run(capsys, *common, "revoke", "--store", url, "--session", a, "--secret", SECRET)
    assert code == 1

    make_session(url, "alice", clock)
    code, out = run(
        capsys,
        *common,
        "revoke",
        "--store",
        url,
        "--user",
        "alice",
        "--keep",
        b,
        "--secret",
        SECRET,
    )
    assert "revoked 1 session(s)" in out
    code, out = run(
        capsys, *common, "sessions", "--store", url, "--user", "alice", "--json", "--secret", SECRET
    )
    assert [r["id"] for r in json.loads(out)["sessions"]] == [b]


def test_purge_deletes_only_expired(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    """`purge` removes sessions whose deadline passed and keeps live ones."""
    old = FakeClock(start=time.time() - 24 * 3600)
    for _ in range(3):
        make_session(url, "old", old)
    live = make_session(url, "new", FakeClock(start=time.time()))
    code, out = run(
        capsys,
        "--data-dir",
        str(tmp_path),
        "purge",
        "--store",
        url,
        "--batch",
        "2",
        "--secret",
        SECRET,
    )
    assert code == 0
    assert out.startswith("purged 3 expired sessions")
    store = sync_store_from_url(url)
    try:
        assert store.get(live) is not None
        assert store.sessions_of("old") == []
    finally:
        store.close()


def test_bad_store_url_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An unknown scheme exits 2 with a message, not a traceback."""
    assert (
        main(["--data-dir", str(tmp_path), "users", "--store", "ftp://x", "--secret", SECRET]) == 2
    )
    assert "unknown store URL scheme" in capsys.readouterr().err


def test_secret_prints_a_new_random_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """`coatcheck secret` prints 43 base64url characters (256 bits), different each time."""
    first = run(capsys, "secret")
    second = run(capsys, "secret")
    assert first[0] == second[0] == 0
    for _, out in (first, second):
        assert len(out.strip()) == 43
        assert set(out.strip()) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert first[1] != second[1]
    assert SessionConfig(secret=first[1].strip()).secret == first[1].strip()


def test_previous_secrets_from_flags_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--previous-secret (repeated) or COATCHECK_PREVIOUS_SECRETS lists older secrets."""
    from coatcheck.cli import _config, build_parser

    old = ["old-one-0123456789-abcdefghijklmnopqr", "old-two-0123456789-abcdefghijklmnopqr"]
    argv = ["--data-dir", str(tmp_path), "users", "--secret", SECRET]
    flags = build_parser().parse_args(
        [*argv, "--previous-secret", old[0], "--previous-secret", old[1]]
    )
    assert _config(flags).secrets == (*old, SECRET)
    monkeypatch.setenv("COATCHECK_PREVIOUS_SECRETS", f"{old[0]}, {old[1]}")
    assert _config(build_parser().parse_args(argv)).previous_secrets == tuple(old)


def test_sealed_store_admin_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """On sealed://, listing says why it cannot (exit 2); revoking works with a revocation
    record (revoke one needs --owner) and says why not without one."""
    from urllib.parse import quote

    common = ["--data-dir", str(tmp_path), "--secret", SECRET]
    plain = "sealed://"
    revoking = "sealed://?revocations=" + quote(f"sqlite:///{tmp_path / 'rv.db'}", safe="")
    assert main([common[0], common[1], "migrate", "--store", revoking, *common[2:]]) == 0
    capsys.readouterr()
    code = main([common[0], common[1], "sessions", "--store", plain, "--user", "u", *common[2:]])
    assert code == 2
    assert "cookies" in capsys.readouterr().err
    code = main([common[0], common[1], "revoke", "--store", plain, "--user", "u", *common[2:]])
    assert code == 2
    assert "revocation record" in capsys.readouterr().err

    code, out = run(
        capsys, common[0], common[1], "revoke", "--store", revoking, "--user", "u", *common[2:]
    )
    assert (code, out.strip()) == (0, "revoked every sealed session of user u issued until now")
    session_id = "A" * 24
    code = main(
        [common[0], common[1], "revoke", "--store", revoking, "--session", session_id, *common[2:]]
    )
    assert code == 2
    assert "owner" in capsys.readouterr().err
    code, out = run(
        capsys,
        common[0],
        common[1],
        "revoke",
        "--store",
        revoking,
        "--session",
        session_id,
        "--owner",
        "u",
        *common[2:],
    )
    assert (code, out.strip()) == (0, "revoked")


# -- issue 7 defects and issue 8's demo settings ---------------------------------------------


def test_dev_secret_file_is_created_private(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The development secret file is created 0600 in one step: even under umask 000 it is
    never written world-readable and chmod-ed afterwards. The next run reads the same secret."""

    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("the secret file was created with wider permissions first")

    monkeypatch.setattr(Path, "chmod", no_chmod)
    monkeypatch.delenv("COATCHECK_SECRET", raising=False)
    old_umask = os.umask(0)
    try:
        url = f"sqlite:///{tmp_path / 's.db'}"
        assert main(["--data-dir", str(tmp_path), "users", "--store", url]) == 0
        mode = stat.S_IMODE((tmp_path / "secret").stat().st_mode)
        first = (tmp_path / "secret").read_text()
        assert main(["--data-dir", str(tmp_path), "users", "--store", url]) == 0
    finally:
        os.umask(old_umask)
    assert (mode, (tmp_path / "secret").read_text()) == (0o600, first)
    assert "development secret" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo", "--data-dir", "after"], "after"),
        (["--data-dir", "before", "demo"], "before"),
        (["--data-dir", "before", "demo", "--data-dir", "after"], "after"),
        (["demo"], ".coatcheck"),
        (["users", "--data-dir", "after"], "after"),
    ],
)
def test_data_dir_is_accepted_after_the_subcommand(argv: list[str], expected: str) -> None:
    """`coatcheck demo --data-dir X` works as its --help says, as does the form before it."""
    assert build_parser().parse_args(argv).data_dir == expected


def test_a_wildcard_bind_needs_allowed_hosts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--host 0.0.0.0` answers every address, so the demo refuses to start without
    --allowed-host instead of answering any Host (DNS rebinding)."""
    wildcard = "0.0.0.0"  # noqa: S104 - the demo must refuse it; nothing binds
    code = main(["demo", "--data-dir", str(tmp_path), "--host", wildcard, "--secret", SECRET])
    assert (code, "--allowed-host" in capsys.readouterr().err) == (2, True)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_demo_timeouts_must_be_positive_seconds(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A timeout flag that is not a positive, finite number of seconds is a usage error."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["demo", "--absolute-timeout", value])
    assert (exited.value.code, "positive number of seconds" in capsys.readouterr().err) == (
        2,
        value != "soon",
    )


def test_the_insecure_cookie_warning_says_coatcheck_once(tmp_path: Path) -> None:
    """The demo with --https-cookies over plain HTTP warns once, and the line names coatcheck
    once (the logger name), not "coatcheck: coatcheck:"."""
    with demo_server(tmp_path, "--https-cookies", "--log-level", "warning") as base:
        httpx.post(base + "/api/cart", json={"item": "x"})
        port = base.rsplit(":", 1)[1]
    log = (tmp_path / f"demo-{port}.log").read_text()
    warnings = [line for line in log.splitlines() if "Secure cookie over plain HTTP" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("WARNING coatcheck: setting a Secure cookie")


# -- stats, --json everywhere, purge's progress bar (issue 13 item 4) --------------------------


def populate(url: str) -> None:
    """Two users' cookie sessions, a bearer token, an anonymous cart and two expired sessions:
    live 5 (signed in 4, anonymous 1; cookie 4, bearer 1), users 2, expired 2."""
    now = FakeClock(start=time.time())
    make_session(url, "alice", now)
    make_session(url, "alice", now)
    make_session(url, "bob", now)
    old = FakeClock(start=time.time() - 24 * 3600)
    make_session(url, "carol", old)
    make_session(url, "alice", old)
    manager = SessionManager(sync_store_from_url(url), test_config(), clock=now)
    try:
        manager.issue_token("bob")
        session = manager.open(RequestView("POST", "http", [], "192.0.2.7")).session
        session["cart"] = ["book"]
        assert manager.commit(session).token is not None
    finally:
        manager.close()


STATS_TEXT = """\
live sessions            5
  signed in              4
  anonymous              1
  cookie                 4
  bearer                 1
signed-in users          2
expired, awaiting purge  2
"""


def test_stats_counts_sessions_users_transports_and_expired(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    """`stats` prints live sessions (signed in, anonymous, by transport), signed-in users and
    expired sessions awaiting purge; `--json` prints the same as one object."""
    populate(url)
    common = ["--data-dir", str(tmp_path), "stats", "--store", url, "--secret", SECRET]
    assert run(capsys, *common) == (0, STATS_TEXT)
    code, out = run(capsys, *common, "--json")
    stats = json.loads(out)
    at = stats.pop("at")
    expected = {
        "live": 5,
        "signed_in": 4,
        "anonymous": 1,
        "users": 2,
        "by_transport": {"cookie": 4, "bearer": 1},
        "expired": 2,
    }
    assert (0, expected) == (code, stats)
    counted_at = calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(time.time() - counted_at) < 120  # "at" is the UTC time the count was taken


@pytest.fixture(params=["postgres", "mysql", "redis"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty store on a shared server, in a database (SQL) or key prefix (Redis) of its own,
    removed afterwards."""
    from tests.backends.redis import delete_prefix_sync, new_prefix, shared_url
    from tests.backends.sql import _SERVERS, _unique_name

    if request.param == "redis":
        prefix = new_prefix()
        url = f"{shared_url()}?prefix={prefix}"
        yield url
        client = redis.Redis.from_url(shared_url())
        try:
            delete_prefix_sync(client, prefix)
        finally:
            client.close()
        return
    server = _SERVERS[request.param]
    require_service(server.label, server.host, server.port)
    name = _unique_name()
    q = server.quote
    server.admin(f"CREATE DATABASE {q}{name}{q}", None)
    try:
        yield f"{server.backend}://{server.username}@{server.host}:{server.port}/{name}"
    finally:
        server.admin(server.drop_database.format(name=name), None)


def test_stats_on_server_stores(
    capsys: pytest.CaptureFixture[str], server_url: str, tmp_path: Path
) -> None:
    """`stats` gives the same counts on PostgreSQL, MariaDB and Redis as on SQLite."""
    common = ["--data-dir", str(tmp_path), "--store", server_url, "--secret", SECRET]
    assert main(["migrate", *common]) == 0
    populate(server_url)
    capsys.readouterr()
    assert run(capsys, "stats", *common) == (0, STATS_TEXT)


def test_stats_on_sealed_and_memory_stores_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """sealed:// has no sessions to count: exit 2 with the reason and nothing on stdout.
    memory:// lives in one process: the command says it sees only its own empty store."""
    common = ["--data-dir", str(tmp_path), "--secret", SECRET]
    assert main(["stats", "--store", "sealed://", *common]) == 2
    out, err = capsys.readouterr()
    assert (out, "cannot be counted" in err) == ("", True)
    assert main(["stats", "--store", "memory://", "--json", *common]) == 0
    out, err = capsys.readouterr()
    assert (json.loads(out)["live"], "lives in one process" in err) == (0, True)


def test_json_output_of_every_listing_command(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    """`users`, `sessions`, `revoke` and `purge` print one JSON object each, with the fields
    the README documents."""
    populate(url)
    common = ["--data-dir", str(tmp_path), "--store", url, "--secret", SECRET]

    code, out = run(capsys, "users", *common, "--json")
    assert (code, json.loads(out)) == (0, {"users": ["alice", "bob"]})

    code, out = run(capsys, "sessions", *common, "--user", "bob", "--json")
    listed = json.loads(out)
    rows = listed.pop("sessions")
    assert (code, listed) == (0, {"user_id": "bob"})
    expected_keys = {
        "id", "user_id", "created_at", "last_seen_at", "expires_at", "auth_time", "transport",
        "remember", "user_agent", "ip", "label",
    }  # fmt: skip
    assert [expected_keys, expected_keys] == [set(r) for r in rows]
    assert sorted(r["transport"] for r in rows) == ["bearer", "cookie"]
    cookie = next(r for r in rows if r["transport"] == "cookie")

    code, out = run(capsys, "revoke", *common, "--session", cookie["id"], "--json")
    assert (0, {"session_id": cookie["id"], "revoked": 1}) == (code, json.loads(out))
    code, out = run(capsys, "revoke", *common, "--session", cookie["id"], "--json")
    assert (1, {"session_id": cookie["id"], "revoked": 0}) == (code, json.loads(out))
    code, out = run(capsys, "revoke", *common, "--user", "alice", "--json")
    assert (code, json.loads(out)) == (0, {"user_id": "alice", "kept": None, "revoked": 2})

    code, out = run(capsys, "purge", *common, "--json")
    purged = json.loads(out)
    # revoke --user alice deleted her expired session too: only carol's is left to purge.
    assert (0, 1, float) == (code, purged["purged"], type(purged["seconds"]))
    assert sorted(purged) == ["purged", "seconds"]


def test_revoke_json_on_sealed_sessions_counts_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Sealed sessions cannot be counted: `revoke --json` answers "revoked": null."""
    from urllib.parse import quote

    revoking = "sealed://?revocations=" + quote(f"sqlite:///{tmp_path / 'rv.db'}", safe="")
    common = ["--data-dir", str(tmp_path), "--store", revoking, "--secret", SECRET, "--json"]
    code, out = run(capsys, "revoke", *common, "--user", "u", "--keep", "K" * 24)
    assert (code, json.loads(out)) == (0, {"user_id": "u", "kept": "K" * 24, "revoked": None})
    code, out = run(capsys, "revoke", *common, "--session", "A" * 24, "--owner", "u")
    assert (code, json.loads(out)) == (0, {"session_id": "A" * 24, "revoked": None})


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_purge_draws_a_progress_bar_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str],
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, purge redraws one line on stderr (carriage returns, no dependency) up to
    the full count of expired sessions, then ends the line; piped, stderr stays empty."""
    old = FakeClock(start=time.time() - 24 * 3600)
    for n in range(7):
        make_session(url, f"old-{n}", old)
    common = ["--data-dir", str(tmp_path), "--store", url, "--secret", SECRET]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["purge", *common, "--batch", "2"]) == 0
    drawn = terminal.getvalue()
    assert drawn.startswith("\rpurging [")
    assert drawn.endswith("\n")
    final = drawn.rstrip().rsplit("\r", 1)[-1]
    assert final.startswith("purging [" + "#" * 30 + "] 7/7 100%")
    assert "purged 7 expired sessions" in capsys.readouterr().out

    monkeypatch.undo()
    make_session(url, "old-again", old)
    assert main(["purge", *common]) == 0
    out, err = capsys.readouterr()
    assert (err, out.startswith("purged 1 expired sessions")) == ("", True)


def test_purge_bar_counts_without_a_total_on_sealed_stores(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sealed:// store cannot count what it will purge: the terminal shows a running count."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert (
        main(["--data-dir", str(tmp_path), "purge", "--store", "sealed://", "--secret", SECRET])
        == 0
    )
    assert terminal.getvalue().startswith("\rpurging: 0 deleted")


def test_purge_interrupted_reports_what_it_purged(
    capsys: pytest.CaptureFixture[str],
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C during purge exits 130 and says how many sessions were purged before it."""
    old = FakeClock(start=time.time() - 24 * 3600)
    for n in range(3):
        make_session(url, f"old-{n}", old)
    real = SessionAdmin.purge_expired
    calls = []

    def interrupted(self: SessionAdmin, **kwargs: int | None) -> int:
        calls.append(kwargs)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SessionAdmin, "purge_expired", interrupted)
    code = main(
        ["--data-dir", str(tmp_path), "purge", "--store", url, "--batch", "2", "--secret", SECRET]
    )
    assert (
        code,
        capsys.readouterr().err,
    ) == (130, "interrupted after purging 2 expired sessions\n")


@pytest.mark.parametrize("batch", ["0", "-1", "many"])
def test_purge_batch_must_be_a_positive_whole_number(
    batch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`purge --batch` refuses zero, negative and non-numbers as a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["purge", "--batch", batch])
    assert (exited.value.code, "positive whole number" in capsys.readouterr().err) == (2, True)


def test_the_readme_shows_what_stats_prints() -> None:
    """The README's `coatcheck stats` example is the output this test suite checks."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert STATS_TEXT in readme


@pytest.mark.parametrize(
    ("expected", "done", "drawn"),
    [
        (200, 199, "purging [" + "#" * 29 + "-] 199/200 99%"),
        (200, 250, "purging [" + "#" * 30 + "] 250/250 100%"),
        (0, 0, "purging [" + "#" * 30 + "] 0/0 100%"),
        (None, 42, "purging: 42 deleted"),
    ],
)
def test_the_bar_is_full_only_when_done(expected: int | None, done: int, drawn: str) -> None:
    """The bar and the percentage round down (99.5% is not 100%); more purged than counted
    stretches the bar; nothing to purge is a full bar; an unknown total draws a counter."""
    from coatcheck.cli import Progress

    terminal = Terminal()
    bar = Progress.on(terminal)
    assert bar is not None
    bar.expected = expected
    bar.show(done)
    assert terminal.getvalue().startswith("\r" + drawn + "  ")
