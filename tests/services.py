"""Reaching the real servers the tests use, and the CI rule for when one is missing.

On a laptop without PostgreSQL, MariaDB or Redis the tests that need them skip, saying why. Under
CI (``CI=true``) a missing server is a failure: CI must really test every backend we claim.
"""

from __future__ import annotations

import os
import socket

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


def require_service(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) when ``name`` does not answer on ``host:port``."""
    if port_open(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if under_ci():
        pytest.fail(f"{message}, and CI=true: a missing server is a failure under CI")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
