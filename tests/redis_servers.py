"""Throwaway Redis servers for tests: a single server a test may kill, and clusters (3 masters,
optionally each with replicas, for failover tests).

Servers run as child processes (never ``--daemonize``), so a test can kill and restart them and
``wait()`` reaps them at once. Everything started here is stopped and reaped on the way out, also
when a test fails; the shared cluster, started lazily by the first test that needs it, is stopped
at interpreter exit (the contract suite's factories take no fixtures, so no fixture can own it).
"""

from __future__ import annotations

import atexit
import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.services import retry_refused_bind, unavailable

START_TIMEOUT = 10.0


def require_redis_binaries() -> None:
    """Skip (laptop) or fail (CI) when redis-server or redis-cli is not on PATH."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if not missing:
        return
    unavailable(f"{' and '.join(missing)} not found on PATH")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (both below 65536)."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if _port_free(port) and _port_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair found")


def send(port: int, *args: str, timeout: float = 1.0) -> str:
    """Send one command over a raw socket and return the reply's text (for readiness checks)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload.encode())
        chunks = b""
        while True:
            chunk = conn.recv(65536)
            chunks += chunk
            if not chunk or _complete(chunks):
                return chunks.decode(errors="replace")


def _complete(reply: bytes) -> bool:
    return _reply_end(reply, 0) is not None


def _reply_end(reply: bytes, start: int) -> int | None:
    """Where the RESP reply starting at ``start`` ends, or None when more bytes are needed."""
    line_end = reply.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, header = reply[start : start + 1], reply[start + 1 : line_end]
    position = line_end + 2
    if kind in (b"+", b"-", b":"):
        return position
    if kind == b"$":
        length = int(header)
        if length < 0:
            return position
        return position + length + 2 if len(reply) >= position + length + 2 else None
    if kind == b"*":
        for _ in range(max(int(header), 0)):
            end = _reply_end(reply, position)
            if end is None:
                return None
            position = end
        return position
    raise ValueError(f"unexpected RESP reply {reply[:40]!r}")


class RedisServer:
    """One ``redis-server`` child process on a fixed port, in its own folder."""

    def __init__(self, port: int, directory: Path, *extra: str) -> None:
        self.port = port
        self.directory = directory
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it answers PING.

        A bind refused because a client socket briefly holds the port is retried.
        """
        retry_refused_bind(self._start_once, "Failed listening")

    def _start_once(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "nodes.conf").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.process = None
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{log}")
            with contextlib.suppress(OSError):
                if send(self.port, "PING").startswith("+PONG"):
                    return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def kill(self) -> None:
        """SIGKILL the server and reap it: no goodbye to clients, like a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill and start again on the same port, with an empty dataset and script cache."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGKILL late
            self.kill()


def start_on_a_free_port(directory: Path, *extra: str) -> RedisServer:
    """Start a server on a free port pair, trying another pair if the port was taken meanwhile
    (other test processes start servers too)."""
    for attempt in range(3):
        server = RedisServer(free_port_pair(), directory, *extra)
        try:
            server.start()
        except RuntimeError:
            if attempt == 2:
                raise
        else:
            return server
    raise AssertionError("unreachable")


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A throwaway standalone server, stopped and reaped however the block ends."""
    require_redis_binaries()
    server = start_on_a_free_port(directory)
    try:
        yield server
    finally:
        server.stop()


class Cluster:
    """A Redis Cluster of ``size`` masters, each with ``replicas`` replicas; slots spread by
    ``redis-cli --cluster create``.

    With replicas, every node also gets ``--repl-ping-replica-period 1`` and
    ``--repl-diskless-sync-delay 0`` (without them clients see no replicas for ~12 s), and the
    cluster counts as ready only once every node lists every node in ``CLUSTER SLOTS`` and every
    replica's link to its master is up. A master killed (``cluster.node(port).kill()``) is
    replaced by its replica after ``node_timeout`` ms, the other masters' agreement and an
    election; :meth:`masters` shows the new topology.
    """

    def __init__(
        self, directory: Path, size: int = 3, *, replicas: int = 0, node_timeout: int = 5000
    ) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []
        self.size = size
        self.replicas = replicas
        self.node_timeout = node_timeout

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def total(self) -> int:
        return self.size * (1 + self.replicas)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        replication = (
            ("--repl-ping-replica-period", "1", "--repl-diskless-sync-delay", "0")
            if self.replicas
            else ()
        )
        for n in range(self.total):
            node = start_on_a_free_port(
                self.directory / f"node{n}",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout),
                *replication,
            )  # fmt: skip
            self.nodes.append(node)
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(self._node_ready(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _node_ready(self, port: int) -> bool:
        info = send(port, "CLUSTER", "INFO")
        if "cluster_state:ok" not in info or f"cluster_known_nodes:{self.total}" not in info:
            return False
        if not self.replicas:
            return True
        listed = send(port, "CLUSTER", "SLOTS")
        if not all(node_id in listed for node_id in self.node_ids().values()):
            return False
        replication = send(port, "INFO", "replication")
        return "role:master" in replication or "master_link_status:up" in replication

    def node_ids(self) -> dict[int, str]:
        """Port -> cluster node id, for the nodes that are up."""
        ids: dict[int, str] = {}
        for node in self.nodes:
            if node.process is not None:
                ids[node.port] = send(node.port, "CLUSTER", "MYID").split("\r\n")[1]
        return ids

    def masters(self, via: int | None = None) -> dict[int, tuple[int, int]]:
        """Port of each live master -> the (first, last) slot range it serves (one per master
        after ``--cluster create``), read from ``CLUSTER NODES`` of node ``via`` (default: the
        first live node)."""
        if via is None:
            via = next(node.port for node in self.nodes if node.process is not None)
        found: dict[int, tuple[int, int]] = {}
        for line in send(via, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            first, _, last = fields[8].partition("-")
            found[port] = (int(first), int(last or first))
        return found

    def master_of(self, slot: int) -> int:
        """The port of the live master serving ``slot``."""
        for port, (first, last) in self.masters().items():
            if first <= slot <= last:
                return port
        raise LookupError(f"no live master serves slot {slot}")

    def replicas_in_sync(self, master_port: int) -> bool:
        """True when every replica of that master has acknowledged its whole replication stream
        (so killing the master loses no write made before)."""
        info = send(master_port, "INFO", "replication")
        offset = _info_field(info, "master_repl_offset")
        replicas = [line for line in info.splitlines() if line.startswith("slave")]
        return bool(replicas) and all(f"offset={offset}," in line for line in replicas)

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _info_field(info: str, name: str) -> str:
    for line in info.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise LookupError(name)


_shared_lock = threading.Lock()
_shared: Cluster | None = None
_shared_failure: str | None = None


def shared_cluster() -> Cluster:
    """The session's cluster: started on first use, stopped and removed at interpreter exit."""
    global _shared, _shared_failure
    require_redis_binaries()
    with _shared_lock:
        if _shared_failure is not None:  # fail fast instead of retrying a slow start per test
            raise RuntimeError(f"the test cluster failed to start earlier: {_shared_failure}")
        if _shared is None:
            directory = Path(tempfile.mkdtemp(prefix="coatcheck-redis-cluster-"))
            cluster = Cluster(directory)
            try:
                cluster.start()
            except BaseException as exc:
                _shared_failure = repr(exc)
                shutil.rmtree(directory, ignore_errors=True)
                raise
            atexit.register(_stop_shared, cluster, directory)
            _shared = cluster
        return _shared


def _stop_shared(cluster: Cluster, directory: Path) -> None:
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)
