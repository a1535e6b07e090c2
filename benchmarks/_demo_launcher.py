"""``coatcheck`` with the demo's password hasher configured from the command line.

    python benchmarks/_demo_launcher.py [--password-option NAME=VALUE ...] -- COATCHECK-ARGS

Runs the real ``coatcheck`` command (``coatcheck.cli.main``); the only change is the
:class:`~coatcheck.passwords.PasswordConfig` the demo's hasher is built with, so that
``login_storm.py`` can compare hashing settings on the same demo (``parallelism=4``,
``max_concurrency=2``, ``pool_nice=0``, ``pool_idle=true`` ...). Values are integers,
``true``/``false`` or ``none``.
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str]) -> int:
    options: dict[str, Any] = {}
    while argv and argv[0] == "--password-option":
        name, _, value = argv[1].partition("=")
        if value.lower() in ("true", "false"):
            options[name] = value.lower() == "true"
        else:
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
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
