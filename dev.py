#!/usr/bin/env python3
"""The project's two commands, for a fresh machine with only Python 3.11+ and pip.

    python3 dev.py demo [coatcheck demo options]   serve the demo on http://127.0.0.1:8000
    python3 dev.py test [pytest options]           lint, type-check and run the whole test suite

Both create ``.venv`` on first use and (re)install the project into it whenever
``pyproject.toml`` changes. Nothing is installed outside ``.venv``, except that ``test`` installs
Debian's ``chromium`` package for the browser tests when it is missing and apt-get is usable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"


def run(*cmd: str | Path, check: bool = True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check).returncode


def ensure_venv(extra: str) -> None:
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
        run(BIN / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extra.encode()).hexdigest()
    stamp = VENV / f".installed-{extra}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    run(BIN / "python", "-m", "pip", "install", "-q", "-e", f".[{extra}]")
    stamp.write_text(digest)


def ensure_chromium() -> None:
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env)
    if not Path("/usr/bin/chromium").exists():
        print("note: no /usr/bin/chromium; the browser tests will skip (or fail under CI=true)")


def demo(args: list[str]) -> int:
    ensure_venv("demo")
    os.execv(str(BIN / "coatcheck"), [str(BIN / "coatcheck"), "demo", *args])
    return 0  # not reached


def test(args: list[str]) -> int:
    ensure_venv("dev")
    ensure_chromium()
    run(BIN / "ruff", "check", "src", "tests", "benchmarks", "examples", "dev.py")
    run(BIN / "ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "dev.py")
    run(BIN / "mypy")
    coverage = ["--cov", "--cov-report=term"] if not args else []
    return run(BIN / "python", "-m", "pytest", *coverage, *args, check=False)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    try:
        return demo(rest) if command == "demo" else test(rest)
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1


if __name__ == "__main__":
    raise SystemExit(main())
