"""The per-user session cap across processes, on every server store: two OS processes sign one
user in 10 times each against a cap of 3 (``tests/cap_worker.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coatcheck import SessionAdmin, SessionManager, sync_store_from_url
from coatcheck.testing import test_config
from tests.test_scale_out import shared_store

LOGINS = 10
CAP = 3


def _create_schema(url: str) -> None:
    store = sync_store_from_url(url)
    try:
        create = getattr(store, "create_schema", None)
        if create is not None:
            create()
    finally:
        store.close()


def _race(url: str, tmp_path: Path) -> list[dict[str, list[str]]]:
    """Start two workers, let them go at once, and return what each reports."""
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.cap_worker", url, str(go), str(LOGINS), str(CAP)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            ready = worker.stdout.readline().strip()
            if ready != "ready":
                worker.wait(10)
                raise AssertionError(f"worker did not start: {ready!r} {worker.stderr.read()!r}")  # type: ignore[union-attr]
        go.touch()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql", "redis", "redis-cluster"])
def test_two_processes_racing_logins_end_within_the_cap(kind: str, tmp_path: Path) -> None:
    """Two processes each sign one user in 10 times at once against max_sessions_per_user=3:
    once both are done, exactly 3 sessions are left, and every other session created was ended
    and reported to on_revoke with reason "cap" (by one process or both)."""
    with shared_store(kind, tmp_path) as url:
        _create_schema(url)
        started = time.monotonic()
        reports = _race(url, tmp_path)
        elapsed = time.monotonic() - started
        created = {sid for report in reports for sid in report["created"]}
        manager = SessionManager(sync_store_from_url(url), test_config())
        try:
            listed = {info.id for info in SessionAdmin(manager).sessions_of("u1")}
            stored = {sid for sid in created if manager.store.get(sid) is not None}
        finally:
            manager.close()
    evicted = {sid for report in reports for sid in report["evicted"]}
    assert len(created) == 2 * LOGINS
    assert len(stored) == CAP, (stored, elapsed)
    assert listed == stored  # what the user index says is what is stored
    assert evicted == created - stored
