from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
from hypothesis import HealthCheck, settings

import tests.backends
from coatcheck.stores.base import AsyncStore


def _collect() -> dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]]:
    found: dict[str, Callable[[], AbstractAsyncContextManager[AsyncStore]]] = {}
    for info in pkgutil.iter_modules(tests.backends.__path__):
        module = importlib.import_module(f"tests.backends.{info.name}")
        found.update(getattr(module, "FACTORIES", {}))
    return found


BACKENDS = _collect()

# Property tests run a modest number of examples so the suite stays fast; ask for more locally
# with COATCHECK_FUZZ_EXAMPLES=5000 (a long fuzzing run). No deadline and no too_slow health
# check: the test machines are shared and their timings are noise, not a property of the code.
settings.register_profile(
    "coatcheck",
    max_examples=int(os.environ.get("COATCHECK_FUZZ_EXAMPLES", "75")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("coatcheck")


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AsyncStore]:
    """A fresh, empty store of every backend (the contract suite runs once per backend)."""
    async with BACKENDS[request.param]() as s:
        yield s
