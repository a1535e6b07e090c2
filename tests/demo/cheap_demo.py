"""``coatcheck`` with argon2 at test cost, for demo tests about behaviour rather than hash cost.

``python -m tests.demo.cheap_demo demo ...`` runs the real command and the real demo; only the
demo's password hasher is built with one pass over 64 KiB instead of the production parameters,
so a test that signs in fifty times does not spend a minute hashing.
"""

from __future__ import annotations

from typing import Any

import coatcheck.demo.app as demo_app
from coatcheck.cli import main
from coatcheck.passwords import PasswordConfig, PasswordHasher

CHEAP = PasswordConfig(time_cost=1, memory_cost=64, parallelism=1, allow_weak_parameters=True)
_create_app = demo_app.create_app


def create_app(**kwargs: Any) -> Any:
    kwargs.setdefault("hasher", PasswordHasher(CHEAP))
    return _create_app(**kwargs)


demo_app.create_app = create_app

if __name__ == "__main__":
    raise SystemExit(main())
