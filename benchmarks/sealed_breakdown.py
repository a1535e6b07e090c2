#!/usr/bin/env python3
"""Where a sealed-cookie read goes, next to the same work in Starlette's signed cookie.

    python benchmarks/sealed_breakdown.py

CPU time (``time.process_time_ns``, so other processes on a shared machine disturb it less than
wall time) per call, median of 7 batches, for the benchmark's payload (user ``"42"`` and a
5-item cart). Not part of the test suite; nothing here asserts on a time.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from base64 import b64decode, b64encode
from collections.abc import Callable
from pathlib import Path
from typing import Any

import itsdangerous

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _targets import cart

from coatcheck import SessionConfig
from coatcheck._core.http import RequestView
from coatcheck._core.ops import Flow
from coatcheck._core.record import SessionRecord
from coatcheck._core.sealed import dump_payload, load_payload
from coatcheck._core.sealed_flow import SealedMode

NOW = 1_800_000_000.0


def finish(flow: Flow[Any]) -> Any:
    """Run a flow that yields no store operation (sealed:// without revocations)."""
    try:
        next(flow)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the flow asked for a store")


def timed(label: str, call: Callable[[], object], n: int = 20_000) -> float:
    samples = []
    for _ in range(7):
        started = time.process_time_ns()
        for _ in range(n):
            call()
        samples.append((time.process_time_ns() - started) / n / 1000)
    median = sorted(samples)[len(samples) // 2]
    print(f"| {label} | {median:.1f} µs |")
    return median


def main() -> int:
    mode = SealedMode(SessionConfig(secret=secrets.token_urlsafe(32)), revocations=False)
    record = SessionRecord(
        id="A" * 24,
        secret_hash="",
        created_at=NOW,
        last_seen_at=NOW,
        expires_at=NOW + 1800,
        absolute_expires_at=NOW + 43_200,
        user_id="42",
        data={"cart": cart()},
        csrf_token="c" * 43,
    )
    seal = mode.sealer.seal(dump_payload(record, NOW))
    signer = itsdangerous.TimestampSigner(secrets.token_urlsafe(32))
    payload = {"user_id": "42", "cart": cart()}
    signed = signer.sign(b64encode(json.dumps(payload).encode()))
    request = RequestView.from_asgi_headers(
        "GET",
        "https",
        [
            (b"host", b"testserver"),
            (b"user-agent", b"coatcheck-bench/1.0"),
            (b"cookie", f"__Host-session={seal}; XSRF-TOKEN={'c' * 43}".encode()),
        ],
        "127.0.0.1",
    )

    def open_seal() -> object:
        opened = mode.sealer.open(seal)
        assert opened is not None
        return load_payload(opened[0])

    def read_request() -> object:
        session = finish(mode.open(request, NOW + 10, form_csrf=None)).session
        _ = session.user_id, session.get("cart")
        return finish(mode.commit(session, NOW + 10))

    print("| step | CPU time per call |\n|---|---:|")
    timed("sealed: open the seal and check the payload", open_seal)
    timed(
        "Starlette: unsign, base64-decode, json.loads",
        lambda: json.loads(b64decode(signer.unsign(signed, max_age=14 * 86_400))),
    )
    timed(
        "sealed: dump the payload and seal it", lambda: mode.sealer.seal(dump_payload(record, NOW))
    )
    timed(
        "Starlette: json.dumps, base64-encode, sign",
        lambda: signer.sign(b64encode(json.dumps(payload).encode())),
    )
    timed(
        "sealed: the whole open flow (cookies, expiry, CSRF, Session)",
        lambda: finish(mode.open(request, NOW + 10, form_csrf=None)),
    )
    timed("sealed: open, the app reads the cart, commit (no re-seal)", read_request)
    return 0


if __name__ == "__main__":
    sys.exit(main())
