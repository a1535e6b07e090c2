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


DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_relative_links_in_docs_resolve() -> None:
    """Every relative link in the README and docs names a file that exists, and every anchor a
    heading of that file: a promise one click away must be there."""
    broken = []
    for doc in DOCS:
        for target in _LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_test_named_in_docs_exists() -> None:
    """Each `tests/...py::test_name` named anywhere in the docs is a test function there."""
    missing = []
    for doc in DOCS:
        for path, name in set(
            re.findall(r"(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z0-9_]+)", doc.read_text())
        ):
            file = ROOT / path
            defined = (
                {
                    node.name
                    for node in ast.walk(ast.parse(file.read_text()))
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                }
                if file.exists()
                else set()
            )
            if name not in defined:
                missing.append(f"{doc.relative_to(ROOT)}: {path}::{name}")
    assert not missing, "\n".join(sorted(missing))


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
