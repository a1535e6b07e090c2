"""``coatcheck`` with the demo's password hasher configured from the command line.

    python benchmarks/_demo_launcher.py [--password-option NAME=VALUE ...] [--aiosqlite-users]
        -- COATCHECK-ARGS

Runs the real ``coatcheck`` command (``coatcheck.cli.main``) with two possible changes, so that
``login_storm.py`` can compare set-ups of the same demo:

- ``--password-option``: the :class:`~coatcheck.passwords.PasswordConfig` setting the demo's
  hasher is built with (``parallelism=4``, ``max_concurrency=2``, ``pool_nice=0`` ...); values
  are integers, or ``none``;
- ``--aiosqlite-users``: the demo looks its users up in SQLite through aiosqlite, as before
  issue 9, instead of the sync driver in a worker thread.
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str]) -> int:
    options: dict[str, Any] = {}
    aiosqlite_users = False
    while argv and argv[0] in ("--password-option", "--aiosqlite-users"):
        if argv[0] == "--aiosqlite-users":
            aiosqlite_users, argv = True, argv[1:]
            continue
        name, _, value = argv[1].partition("=")
        options[name] = None if value.lower() == "none" else int(value)
        argv = argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]

    from coatcheck import cli
    from coatcheck.demo import app as demo_app
    from coatcheck.passwords import PasswordConfig, PasswordHasher

    if options:
        config = PasswordConfig(**options)

        def configured_hasher(*args: Any, **kwargs: Any) -> PasswordHasher:
            return PasswordHasher(config)

        demo_app.PasswordHasher = configured_hasher  # type: ignore[misc,assignment]
    if aiosqlite_users:
        from coatcheck.demo import users

        original_init = users.UserRepository.__init__

        def aiosqlite_init(self: users.UserRepository, url: str) -> None:
            original_init(self, url)
            if self._sqlite is not None:
                self._sqlite.dispose()
                self._sqlite = None

        users.UserRepository.__init__ = aiosqlite_init  # type: ignore[method-assign]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
