"""Run ``coatcheck demo`` as a real process on a free port, for tests that drive it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.services import free_port


@contextmanager
def demo_server(
    data_dir: Path,
    *args: str,
    store: str | None = None,
    port: int | None = None,
    secret: str = "test-secret-0123456789-abcdefghijklmnop",
    cheap_hashing: bool = False,
) -> Iterator[str]:
    """Start the demo; yield its base URL; stop it. Its log goes to data_dir/demo-<port>.log.

    ``cheap_hashing=True`` runs it through :mod:`tests.demo.cheap_demo` (argon2 at test cost).
    """
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "tests.demo.cheap_demo" if cheap_hashing else "coatcheck",
        "--data-dir",
        str(data_dir),
        "demo",
        "--port",
        str(port),
        "--secret",
        secret,
        "--log-level",
        "warning",
        *args,
    ]
    if store:
        cmd += ["--store", store]
    log = open(data_dir / f"demo-{port}.log", "wb")  # noqa: SIM115 - closed in finally
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"demo exited: {(data_dir / f'demo-{port}.log').read_text()}")
            try:
                if httpx.get(base + "/api/me", timeout=1).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("demo did not start in 30 s")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
