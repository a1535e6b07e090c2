"""Throwaway PostgreSQL and MariaDB servers for tests that hang, kill and restart their database.

Each server runs as a child process on a free port, in a temporary folder of its own, and is
stopped, reaped and removed however the test ends. ``initdb``/``mariadb-install-db`` run once per
test process (lazily, into a template folder removed at interpreter exit); every server starts
from a copy of that template, so starting one costs a file copy and the server's own start
(about 0.2 s), not a fresh install.

PostgreSQL refuses to run as root: as root, its commands run as the ``postgres`` OS user through
``setpriv`` (which execs in place, so the child's pid is the server's), and its folders belong to
that user. :meth:`~SQLServer.pause` and :meth:`~SQLServer.kill` signal the postmaster and every
backend (each backend is a session of its own, so they are found by parent pid): stopping the
postmaster alone would leave established connections served, and killing it alone would leave its
backends holding the shared memory (a restart refuses to start on it). The temporary folders
come from :mod:`tempfile`, so ``TMPDIR``, if set, must be traversable by that user.

Both servers skip fsync but write every commit out before acknowledging it, so a SIGKILL (a
crash of the server process, not of the machine) loses no committed session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pymysql

from tests.services import free_port, retry_refused_bind, unavailable

START_TIMEOUT = 20.0
DATABASE = "coatcheck"  # the database each throwaway server is created with
Kind = Literal["postgres", "mariadb"]


def _pg_bindir() -> Path | None:
    configured = os.environ.get("COATCHECK_PG_BINDIR")
    if configured:
        return Path(configured)
    installed = Path("/usr/lib/postgresql").glob("*/bin")
    versions = sorted(
        (p for p in installed if p.parent.name.isdigit()), key=lambda p: -int(p.parent.name)
    )
    for candidate in versions:
        if (candidate / "postgres").exists():
            return candidate
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def _mariadb_binaries() -> tuple[str, str] | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    server = shutil.which("mariadbd", path=path)
    install = shutil.which("mariadb-install-db", path=path)
    return (server, install) if server and install else None


def _as_root() -> bool:
    return os.geteuid() == 0


def _missing(kind: Kind) -> str | None:
    """Why a throwaway server of ``kind`` cannot run here, or None."""
    if kind == "postgres":
        bindir = _pg_bindir()
        if bindir is None or not (bindir / "initdb").exists():
            return "PostgreSQL's initdb/postgres not found (set COATCHECK_PG_BINDIR)"
        if _as_root():
            if shutil.which("setpriv") is None:
                return "running as root and setpriv is not on PATH (PostgreSQL refuses root)"
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres OS user to run PostgreSQL as"
        return None
    if _mariadb_binaries() is None:
        return "mariadbd or mariadb-install-db not found"
    return None


def require_sql_binaries(kind: Kind) -> None:
    """Skip (laptop) or fail (CI) when a throwaway server of ``kind`` cannot be started."""
    reason = _missing(kind)
    if reason is not None:
        unavailable(reason)


def _postgres_ids() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, when we are root; None when we run it as ourselves."""
    if not _as_root():
        return None
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _as_postgres(argv: list[str]) -> list[str]:
    if _as_root():
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]
    return argv


def _chown_tree(root: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    os.chown(root, *ids)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), *ids)


def _run(argv: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=120
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({done.returncode}):\n{log.read_text(errors='replace')[-2000:]}"
        )


# --- templates: one install per test process --------------------------------------------------

_templates: dict[Kind, Path] = {}
_template_failures: dict[Kind, str] = {}
_template_lock = threading.Lock()


def _template(kind: Kind) -> Path:
    """The data folder every server of ``kind`` is copied from, made on first use."""
    with _template_lock:
        if kind in _template_failures:  # fail fast instead of retrying a slow install per test
            raise RuntimeError(f"the {kind} template failed earlier: {_template_failures[kind]}")
        if kind not in _templates:
            folder = Path(tempfile.mkdtemp(prefix=f"coatcheck-{kind}-template-"))
            try:
                (_make_postgres_template if kind == "postgres" else _make_mariadb_template)(folder)
            except BaseException as exc:
                _template_failures[kind] = repr(exc)
                shutil.rmtree(folder, ignore_errors=True)
                raise
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _templates[kind] = folder
        return _templates[kind] / "data"


def _make_postgres_template(folder: Path) -> None:
    bindir = _pg_bindir()
    assert bindir is not None
    _chown_tree(folder, _postgres_ids())
    argv = [str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]
    _run(_as_postgres([*argv, "-D", str(folder / "data")]), folder / "initdb.log")
    # initdb makes the "postgres" database; our own one comes from a first start.
    server = _start_on_a_free_port("postgres", folder)
    assert isinstance(server, PostgresServer)
    try:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"'.encode())
    finally:
        server.stop()


def _make_mariadb_template(folder: Path) -> None:
    binaries = _mariadb_binaries()
    assert binaries is not None
    argv = [
        binaries[1],
        "--no-defaults",
        f"--datadir={folder / 'data'}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *_MARIADB_SIZES,
    ]
    if _as_root():
        argv.append("--user=root")
    _run(argv, folder / "install-db.log")
    (folder / "data" / DATABASE).mkdir()  # an empty database is a folder (db.opt is optional)


_MARIADB_SIZES = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"]


# --- servers ---------------------------------------------------------------------------------


class SQLServer:
    """A database server child process on a fixed port and data folder, restartable in place."""

    kind: Kind
    scheme: str
    _shutdown_signal = signal.SIGTERM

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The store URL (no driver: each twin picks its own) for the test database."""
        user = "postgres" if self.kind == "postgres" else "root"
        return f"{self.scheme}://{user}@127.0.0.1:{self.port}/{DATABASE}"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server on its port and data folder; return once it answers a query.

        A bind refused because a client socket briefly holds the port is retried.
        """
        retry_refused_bind(self._start_once, "Address already in use")

    def _start_once(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the child holds its own copy
        try:
            self.process = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches it only through us
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.kind} on port {self.port} exited:\n{tail}")
            if self._ready():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.kind} on port {self.port} did not answer in {START_TIMEOUT} s")

    def _pids(self) -> list[int]:
        """Every process of the server, the main one first."""
        assert self.process is not None, "the server is not running"
        return [self.process.pid]

    def _signal(self, signum: int, pids: list[int] | None = None) -> None:
        for pid in self._pids() if pids is None else pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def pause(self) -> None:
        """SIGSTOP every process of the server: sockets stay open, nothing answers (a hang).

        Returns once every thread of every process has stopped: a signal takes effect
        asynchronously, and a thread that had not stopped yet could still answer a query sent
        right after kill() returned (seen on MariaDB, whose connections are threads).
        """
        assert self.process is not None, "the server is not running"
        os.kill(self.process.pid, signal.SIGSTOP)  # first, so that it forks no new backend
        pids = self._pids()
        self._signal(signal.SIGSTOP, pids)
        deadline = time.monotonic() + 5
        while not all(_stopped(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} on port {self.port} did not stop")
            time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT every process of the server: it answers again, its connections intact."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL every process of the server and reap it: no goodbye to clients, a crash."""
        if self.process is None:
            return
        os.kill(self.process.pid, signal.SIGSTOP)  # first, so that it forks no new backend
        pids = self._pids()
        self._signal(signal.SIGKILL, pids)
        self.process.wait()
        self.process = None
        _wait_gone(pids[1:])

    def stop(self) -> None:
        """Shut the server down cleanly (falls back to :meth:`kill` after a few seconds)."""
        if self.process is None:
            return
        pids = self._pids()
        self._signal(signal.SIGCONT, pids)  # a paused server cannot act on the shutdown signal
        self.process.send_signal(self._shutdown_signal)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self.process = None
        _wait_gone(pids[1:])

    def restart(self) -> None:
        """Kill the server and start it again on the same port and data folder."""
        self.kill()
        self.start()


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def _stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (or the process is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue  # a thread that exited meanwhile
        if stat.rpartition(")")[2].split()[0] not in ("T", "t", "Z", "X"):
            return False
    return True


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int]) -> None:
    """Wait (briefly) until none of ``pids`` is alive.

    Orphaned backends are reaped by the machine's init, which may leave them zombies for a
    moment; a zombie holds no port and no shared memory, so it counts as gone.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = [_proc_stat(pid) for pid in pids]
        if all(fields is None or fields[0] == "Z" for fields in states):
            return
        time.sleep(0.02)


class PostgresServer(SQLServer):
    """A ``postgres`` child process (as the ``postgres`` OS user when we are root)."""

    kind: Kind = "postgres"
    scheme = "postgresql"
    _shutdown_signal = signal.SIGINT  # fast shutdown

    def dsn(self, database: str = DATABASE) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=2"

    def _argv(self) -> list[str]:
        bindir = _pg_bindir()
        assert bindir is not None
        return _as_postgres(
            [
                str(bindir / "postgres"),
                "-D", str(self.data),
                "-p", str(self.port),
                "-k", str(self.folder),
                "-c", "listen_addresses=127.0.0.1",
                # No fsync (a killed process loses nothing the kernel has), but every commit is
                # written before it returns, so a SIGKILL loses no committed transaction.
                "-c", "fsync=off",
                "-c", "synchronous_commit=on",
                "-c", "full_page_writes=off",
                "-c", "max_connections=100",
            ]
        )  # fmt: skip

    def _pids(self) -> list[int]:
        # Each backend calls setsid(), so no process group holds them all: find them by parent.
        assert self.process is not None, "the server is not running"
        return [self.process.pid, *_children(self.process.pid)]

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=1) as conn:
                conn.execute(b"SELECT 1")
        except psycopg.Error:
            return False
        return True


class MariaDBServer(SQLServer):
    """A ``mariadbd`` child process (one process: SIGSTOP/SIGKILL reach all of it)."""

    kind: Kind = "mariadb"
    scheme = "mysql"

    def _argv(self) -> list[str]:
        binaries = _mariadb_binaries()
        assert binaries is not None
        argv = [
            binaries[0],
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.folder / 's.sock'}",
            f"--pid-file={self.folder / 'mariadbd.pid'}",
            f"--tmpdir={self.folder}",
            "--skip-name-resolve",
            "--skip-log-bin",
            # Every commit is written to the kernel (fsync once a second): a SIGKILL of the
            # server loses no committed transaction, as with the default, without fsync costs.
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            *_MARIADB_SIZES,
        ]
        if _as_root():
            argv.append("--user=root")
        return argv

    def _ready(self) -> bool:
        try:
            conn = pymysql.connect(
                host="127.0.0.1",
                port=self.port,
                user="root",
                password="",
                database=DATABASE,
                connect_timeout=1,
                read_timeout=2,
            )
        except pymysql.err.Error:
            return False
        conn.close()
        return True


_SERVERS: dict[Kind, type[SQLServer]] = {"postgres": PostgresServer, "mariadb": MariaDBServer}


def _start_on_a_free_port(kind: Kind, folder: Path) -> SQLServer:
    """Start a server on ``folder``'s data, trying another port if the free one was taken
    meanwhile (other test processes start servers too)."""
    for attempt in range(3):
        server = _SERVERS[kind](free_port(), folder)
        try:
            server.start()
        except RuntimeError:
            if attempt == 2:
                raise
        else:
            return server
    raise AssertionError("unreachable")


@contextlib.contextmanager
def sql_server(kind: Kind) -> Iterator[SQLServer]:
    """A throwaway server of ``kind`` in a temporary folder of its own, with an empty database
    ``coatcheck``: stopped, reaped and removed however the block ends. Skips (or fails under
    CI) when its binaries are missing."""
    require_sql_binaries(kind)
    folder = Path(tempfile.mkdtemp(prefix=f"coatcheck-{kind}-"))
    server: SQLServer | None = None
    try:
        shutil.copytree(_template(kind), folder / "data", symlinks=True)
        if kind == "postgres":
            _chown_tree(folder, _postgres_ids())
        server = _start_on_a_free_port(kind, folder)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
