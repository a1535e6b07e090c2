"""Reaching the real servers the tests use, and the CI rule for when one is missing.

On a laptop without PostgreSQL, MariaDB or Redis the tests that need them skip, saying why. Under
CI (``CI=true``) a missing server is a failure: CI must really test every backend we claim.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import NoReturn

import pytest

PG_HOST, PG_PORT = os.environ.get("COATCHECK_PG_HOST", "127.0.0.1"), 5432
MYSQL_HOST, MYSQL_PORT = os.environ.get("COATCHECK_MYSQL_HOST", "127.0.0.1"), 3306
REDIS_HOST, REDIS_PORT = os.environ.get("COATCHECK_REDIS_HOST", "127.0.0.1"), 6379


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(message: str) -> NoReturn:
    """The one rule for a missing server or binary: skip on a laptop, fail under CI."""
    if under_ci():
        pytest.fail(f"{message}, and CI=true: a missing server is a failure under CI")
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) when ``name`` does not answer on ``host:port``."""
    if not port_open(host, port):
        unavailable(f"{name} is not reachable on {host}:{port}")


def retry_refused_bind(start: Callable[[], None], refusal: str, seconds: float = 5) -> None:
    """Run ``start`` again while it fails with ``refusal`` in its error, for up to ``seconds``.

    Test ports come from the ephemeral range, so a client socket elsewhere can briefly hold a
    server's port as its local address (a client reconnecting during a restart).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            start()
            return
        except RuntimeError as exc:
            if refusal not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
