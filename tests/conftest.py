from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

import tests.backends
from coatcheck.stores.base import AsyncStore


def _collect() -> dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]]:
    found: dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]] = {}
    for info in pkgutil.iter_modules(tests.backends.__path__):
        module = importlib.import_module(f"tests.backends.{info.name}")
        found.update(getattr(module, "FACTORIES", {}))
    return found


BACKENDS = _collect()


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AsyncStore]:
    """A fresh, empty store of every backend (the contract suite runs once per backend)."""
    async with BACKENDS[request.param]() as s:
        yield s
