"""The README's FastAPI quick start works as printed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import httpx
import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "fastapi_quickstart.py"


async def test_fastapi_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anonymous cart, login (cart kept), /me, CSRF-protected logout, /me refused afterwards."""
    monkeypatch.setenv("COATCHECK_STORE", f"sqlite:///{tmp_path / 'quick.db'}")
    spec = importlib.util.spec_from_file_location("fastapi_quickstart", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fastapi_quickstart", module)
    spec.loader.exec_module(module)
    transport = httpx.ASGITransport(app=module.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            assert (await c.post("/cart", json={"item": "tea"})).json() == ["tea"]
            csrf = {"X-XSRF-TOKEN": c.cookies["XSRF-TOKEN"]}
            bad = await c.post(
                "/login", json={"email": "ann@example.com", "password": "nope"}, headers=csrf
            )
            assert bad.status_code == 401
            ok = await c.post(
                "/login", json={"email": "ann@example.com", "password": "s3cret-pass"}, headers=csrf
            )
            assert ok.status_code == 200
            assert (await c.get("/me")).json() == {"email": "ann@example.com"}
            csrf = {"X-XSRF-TOKEN": c.cookies["XSRF-TOKEN"]}
            assert (await c.post("/cart", json={"item": "cake"}, headers=csrf)).json() == [
                "tea",
                "cake",
            ]
            assert (await c.post("/logout")).status_code == 403  # no CSRF token
            assert (await c.post("/logout", headers=csrf)).status_code == 204
            assert (await c.get("/me")).status_code == 401
    finally:
        await module.manager.close()
        module.hasher.close()
