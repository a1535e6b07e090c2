"""One OS process signing one user in N times over HTTP, for ``tests/test_session_cap.py``.

``python -m tests.cap_worker <store URL> <go file> <logins> <cap>``: builds a small ASGI app on an
:class:`~coatcheck.AsyncSessionManager` over the store, prints ``ready``, waits for the go file
(so that two workers start together), signs user ``u1`` in ``logins`` times, each time as a new
client, and prints one JSON line: the ids it created and the ids its ``on_revoke`` hook saw
ended with reason ``"cap"``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coatcheck import AsyncSessionManager, Hooks, SessionEvent, async_store_from_url, login
from coatcheck.asgi import SessionMiddleware
from coatcheck.integrations.starlette import get_session
from coatcheck.testing import test_config

COOKIE = "coatcheck_session"


def wait_for(go: Path) -> None:
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.005)


async def main(url: str, go: Path, logins: int, cap: int) -> None:
    evicted: list[str] = []

    def on_revoke(event: SessionEvent) -> None:
        if event.reason == "cap" and event.session_id is not None:
            evicted.append(event.session_id)

    manager = AsyncSessionManager(
        async_store_from_url(url),
        test_config(max_sessions_per_user=cap),
        hooks=Hooks(on_revoke=on_revoke),
    )

    async def sign_in(request: Request) -> Response:
        login(get_session(request), "u1")
        return Response(status_code=204)

    app = Starlette(routes=[Route("/login", sign_in, methods=["POST"])])
    app.add_middleware(SessionMiddleware, manager=manager)
    transport = httpx.ASGITransport(app=app)
    print("ready", flush=True)
    await asyncio.to_thread(wait_for, go)
    created: list[str] = []
    for _ in range(logins):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post("/login")
            response.raise_for_status()
            created.append(client.cookies[COOKIE].split(".")[0])
    await manager.close()
    print(json.dumps({"created": created, "evicted": evicted}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
