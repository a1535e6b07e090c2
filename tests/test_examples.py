"""The README's FastAPI quick start works as printed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "fastapi_quickstart.py"


def _load(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_quickstart", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fastapi_quickstart", module)
    spec.loader.exec_module(module)
    return module


async def test_fastapi_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anonymous cart, login (cart kept), /me, CSRF-protected logout, /me refused afterwards."""
    monkeypatch.setenv("COATCHECK_STORE", f"sqlite:///{tmp_path / 'quick.db'}")
    module = _load(monkeypatch)
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
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as api:
            issued = await api.post(
                "/token", json={"email": "ann@example.com", "password": "s3cret-pass"}
            )
            bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
            assert (await api.get("/me", headers=bearer)).json() == {"email": "ann@example.com"}
            assert "set-cookie" not in (await api.get("/me", headers=bearer)).headers
    finally:
        await module.manager.close()
        module.hasher.close()


async def test_fastapi_quickstart_openapi_declares_both_schemes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/openapi.json declares the session cookie (apiKey in cookie, with the configured name)
    and the bearer scheme, and /me requires either of them while /login requires neither."""
    monkeypatch.setenv("COATCHECK_STORE", f"sqlite:///{tmp_path / 'quick.db'}")
    module = _load(monkeypatch)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=module.app), base_url="https://testserver"
        ) as c:
            spec = (await c.get("/openapi.json")).json()
    finally:
        await module.manager.close()
        module.hasher.close()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["sessionCookie"]["type"] == "apiKey"
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["sessionCookie"]["name"] == module.manager.config.cookie.effective_name
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["bearerToken"].items()
    assert spec["paths"]["/me"]["get"]["security"] == [{"sessionCookie": []}, {"bearerToken": []}]
    assert "security" not in spec["paths"]["/login"]["post"]
