"""Driving apps in-process and timing them: the parts of the benchmark that know no library.

An ASGI app is called directly with a minimal scope, ``receive`` and ``send``; a WSGI app is
called directly with a minimal environ. No sockets, no server: what is left is the framework
(measured on its own as a baseline) plus the session layer.

A :class:`Jar` plays the browser: it sends back what the last response set, so a library that
re-issues a cookie (or a CSRF cookie) is measured the way a browser would drive it.
"""

from __future__ import annotations

import io
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Response = tuple[int, list[str]]
"""(status, Set-Cookie values) of one request."""
AsyncRequest = Callable[[str, str], Awaitable[Response]]
SyncRequest = Callable[[str, str], Response]

HOST = "testserver"
USER_AGENT = "coatcheck-bench/1.0"


class BenchError(RuntimeError):
    """A benchmark set-up or run went wrong (wrong status, missing session...)."""


class Jar:
    """The cookies a browser would hold for one visitor, as a ready-made ``Cookie`` header."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.header = ""

    def update(self, set_cookies: list[str]) -> None:
        for raw in set_cookies:
            first, _, attributes = raw.partition(";")
            name, _, value = first.strip().partition("=")
            expired = any(
                a.strip().lower() in ("max-age=0", "expires=thu, 01 jan 1970 00:00:00 gmt")
                for a in attributes.split(";")
            )
            if expired or value in ("", '""', "''"):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        self.header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())


# -- ASGI ---------------------------------------------------------------------------------------


def asgi_client(app: Callable[..., Awaitable[None]]) -> AsyncRequest:
    """``request(path, cookie_header)`` for an ASGI app, called in-process over HTTPS."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def request(path: str, cookie: str) -> Response:
        headers = [(b"host", HOST.encode()), (b"user-agent", USER_AGENT.encode())]
        if cookie:
            headers.append((b"cookie", cookie.encode("latin-1")))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": (HOST, 443),
            "state": {},
        }
        status = 0
        set_cookies: list[str] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                set_cookies.extend(
                    v.decode("latin-1") for k, v in message["headers"] if k.lower() == b"set-cookie"
                )

        await app(scope, receive, send)
        return status, set_cookies

    return request


def asgi_response_start(status: int = 200) -> dict[str, Any]:
    """A fresh ``http.response.start`` message (middleware may mutate its header list)."""
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
    }


ASGI_BODY = {"type": "http.response.body", "body": b"ok"}


# -- WSGI ---------------------------------------------------------------------------------------

_BASE_ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": HOST,
    "SERVER_PORT": "443",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": HOST,
    "HTTP_USER_AGENT": USER_AGENT,
    "REMOTE_ADDR": "127.0.0.1",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "https",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def wsgi_client(app: Callable[..., Any]) -> SyncRequest:
    """``request(path, cookie_header)`` for a WSGI callable, called in-process over HTTPS."""

    def request(path: str, cookie: str) -> Response:
        environ = dict(_BASE_ENVIRON)
        environ["PATH_INFO"] = path
        environ["wsgi.input"] = io.BytesIO(b"")
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            started.append((status, headers))

        result = app(environ, start_response)
        try:
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started[-1]
        return int(status[:3]), [v for k, v in headers if k.lower() == "set-cookie"]

    return request


# -- timing -------------------------------------------------------------------------------------


async def time_async(request: AsyncRequest, path: str, jar: Jar | None, n: int) -> tuple[int, int]:
    """Run ``n`` requests: (elapsed ns, non-200 responses). ``jar=None``: a new visitor each."""
    errors = 0
    start = time.perf_counter_ns()
    if jar is None:
        for _ in range(n):
            status, _ = await request(path, "")
            errors += status != 200
    else:
        for _ in range(n):
            status, set_cookies = await request(path, jar.header)
            errors += status != 200
            if set_cookies:
                jar.update(set_cookies)
    return time.perf_counter_ns() - start, errors


def time_sync(request: SyncRequest, path: str, jar: Jar | None, n: int) -> tuple[int, int]:
    """The sync twin of :func:`time_async`."""
    errors = 0
    start = time.perf_counter_ns()
    if jar is None:
        for _ in range(n):
            status, _ = request(path, "")
            errors += status != 200
    else:
        for _ in range(n):
            status, set_cookies = request(path, jar.header)
            errors += status != 200
            if set_cookies:
                jar.update(set_cookies)
    return time.perf_counter_ns() - start, errors


@dataclass
class Stats:
    """Per-request times (µs) of repeated batches, and for a session cell the paired overheads:
    each batch's mean minus the mean of the bare-framework batch run right next to it."""

    samples: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    requests: int = 0

    def add(self, per_request: float, n: int) -> None:
        self.samples.append(per_request)
        self.requests += n

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=10, method="inclusive")[-1]


# -- a throwaway Redis --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayRedis:
    """``redis-server`` on a free port, no persistence; stopped (and gone) on :meth:`stop`."""

    def __init__(self, executable: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BenchError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
