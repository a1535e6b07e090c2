"""Docs that name tests keep naming tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_test_named_in_security_md_exists() -> None:
    """Each `tests/...py::test_name` in docs/security.md is a test function in that file."""
    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z0-9_]+)", text))
    assert len(named) > 30
    missing = []
    for path, name in sorted(named):
        tree = ast.parse((ROOT / path).read_text())
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_test_named_in_reliability_md_exists() -> None:
    """Each test or test file docs/reliability.md names exists (a test function in that file)."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    files = set(re.findall(r"`(tests/[A-Za-z0-9_/]+\.py)", text))
    named = set(re.findall(r"(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z0-9_]+)", text))
    assert len(named) > 10
    missing = [path for path in sorted(files) if not (ROOT / path).exists()]
    for path, name in sorted(named):
        tree = ast.parse((ROOT / path).read_text())
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert missing == []
