"""The public API is exactly what coatcheck re-exports (a change here is a deliberate decision);
the error tree is the one errors.py draws; the demo, the examples and the docs use only public
names."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import coatcheck
import coatcheck.errors

ROOT = Path(__file__).parent.parent


def test_session_public_surface_is_pinned() -> None:
    """What an application may use on a Session: its mapping methods and these. The lifecycle
    internals the core reads at commit (changes, flags, the loaded record) are private."""
    from collections.abc import MutableMapping

    public = {
        name
        for name in dir(coatcheck.Session)
        if not name.startswith("_") and name not in dir(MutableMapping)
    }
    assert public == {
        "accessed", "add_to_set", "auth_hash", "auth_time", "bind_credential", "created_at",
        "csrf_token", "destroy", "discard_from_set", "flash", "flashes", "id", "increment", "ip",
        "is_destroyed", "is_modified", "is_new", "last_seen_at", "now", "presented_xsrf",
        "regenerate", "remember", "rotate_csrf", "token", "transport", "typed", "user_agent",
        "user_id",
    }  # fmt: skip


def test_all_is_pinned() -> None:
    """coatcheck.__all__ lists exactly the supported top-level names, and each exists."""
    assert sorted(coatcheck.__all__) == sorted(
        [
            "AsyncLoginGuard", "AsyncSessionAdmin", "AsyncSessionManager", "AsyncStore",
            "CSRFConfig",
            "CoatcheckError", "ConfigurationError", "ConflictError", "CookieConfig", "HTTPError",
            "Hooks", "LoginGuard", "NotSupportedError", "PasswordConfig", "PasswordError",
            "PasswordHasher", "SessionTooLargeError",
            "ThrottleConfig", "ThrottledEvent",
            "Session", "SessionAdmin", "SessionConfig", "SessionDataError", "SessionEvent",
            "SessionInfo",
            "SessionManager",
            "SessionRecord", "SessionStats", "StoreError", "StoreUnavailableError", "SyncStore",
            "async_store_from_url", "is_fresh", "login", "logout", "sync_store_from_url",
        ]
    )  # fmt: skip
    for name in coatcheck.__all__:
        assert hasattr(coatcheck, name), name


def test_login_stays_a_function_after_every_submodule_is_imported() -> None:
    """No submodule shadows a public name (a module named login once replaced login())."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(coatcheck.__path__, "coatcheck."):
        if ".demo" in info.name or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    assert callable(coatcheck.login)
    assert callable(coatcheck.logout)
    for name in coatcheck.__all__:
        assert not isinstance(getattr(coatcheck, name), type(coatcheck)), name


# -- the error tree ------------------------------------------------------------------------------


def _drawn_tree() -> list[tuple[int, str]]:
    """(depth, name) for each line of the tree drawn in coatcheck.errors' docstring: a name's
    depth is how many 4-column steps it stands right of the root's."""
    doc = coatcheck.errors.__doc__ or ""
    drawn = []
    root_column = None
    for line in doc.splitlines():
        found = re.match(r"^[\s│├└─]*([A-Z][A-Za-z]+Error)\b", line)
        if found:
            column = found.start(1)
            root_column = column if root_column is None else root_column
            drawn.append(((column - root_column) // 4, found.group(1)))
    return drawn


def _real_tree() -> list[tuple[int, str]]:
    """(depth, name) of coatcheck's error classes, depth first, in the docstring's order."""
    errors = {
        name: cls
        for name, cls in vars(coatcheck.errors).items()
        if inspect.isclass(cls) and issubclass(cls, coatcheck.errors.CoatcheckError)
    }
    order = {name: i for i, (_, name) in enumerate(_drawn_tree())}

    def walk(cls: type, depth: int) -> Iterator[tuple[int, str]]:
        yield depth, cls.__name__
        children = [c for c in errors.values() if c.__bases__[0] is cls]
        for child in sorted(children, key=lambda c: order.get(c.__name__, len(order))):
            yield from walk(child, depth + 1)

    return list(walk(coatcheck.errors.CoatcheckError, 0))


def test_the_error_tree_drawn_in_errors_py_is_the_class_tree() -> None:
    """The docstring of coatcheck.errors draws exactly the error classes and their parents."""
    assert _real_tree() == _drawn_tree()


def test_every_exported_error_is_exported_and_raised_somewhere() -> None:
    """Each error class is in coatcheck.__all__, and each one that is not only a category to
    catch is constructed somewhere in coatcheck's code (a raise, or a factory the middleware
    raises), so no exported error is a promise nothing keeps."""
    categories = {"CoatcheckError", "StoreError"}  # caught, never raised themselves
    source = "\n".join(
        path.read_text()
        for path in (ROOT / "src" / "coatcheck").rglob("*.py")
        if path.name != "errors.py" and "demo" not in path.parts
    )
    names = [name for _, name in _real_tree()]
    assert [n for n in names if n not in coatcheck.__all__] == []
    never_made = [n for n in names if n not in categories and f"{n}(" not in source]
    assert never_made == []


def test_conflicts_and_outages_are_caught_as_one_store_error() -> None:
    """A user catching StoreError (503, Retry-After) gets both ways a store can fail a request:
    unreachable or too slow, and writes that kept losing."""
    from coatcheck.errors import ConflictError, StoreError, StoreUnavailableError

    assert (
        issubclass(ConflictError, StoreError),
        issubclass(StoreUnavailableError, StoreError),
    ) == (True, True)
    assert (ConflictError.status_code, StoreUnavailableError("x").status_code) == (503, 503)


# -- the demo, the examples and the docs import only public names --------------------------------

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_IMPORT = re.compile(
    r"^[ \t]*(from[ \t]+\.*coatcheck[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]+)"
    r"|import[ \t]+coatcheck[\w.]*)",
    re.M,
)


def _sources() -> Iterator[tuple[str, str, str | None]]:
    """(where, code, package) for every place users copy imports from: Python code blocks (and
    code in any fenced block) of the README and docs, the examples, the demo's modules."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for n, block in enumerate(_FENCE.findall(doc.read_text())):
            for m in _IMPORT.finditer(block):
                yield f"{doc.relative_to(ROOT)} block {n}", m.group(1).strip(), None
    for path in sorted((ROOT / "examples").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text(), None
    demo = ROOT / "src" / "coatcheck" / "demo"
    for path in sorted(demo.rglob("*.py")):
        package = ".".join(["coatcheck", *path.relative_to(demo.parent).parent.parts])
        yield str(path.relative_to(ROOT)), path.read_text(), package


def _imported(code: str, package: str | None) -> Iterator[tuple[str, str | None]]:
    """(module, name) for each coatcheck import in ``code`` (name None for ``import x``)."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "coatcheck":
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                assert package is not None, f"a relative import outside the package: {code!r}"
                module = importlib.util.resolve_name("." * node.level + module, package)
            if module.split(".")[0] == "coatcheck":
                for alias in node.names:
                    yield module, alias.name


def _private_use(module: str, name: str | None) -> str | None:
    """Why importing ``name`` from ``module`` is not public API, or None when it is."""
    if module.startswith("coatcheck.demo"):
        return None  # the demo's own modules
    if any(part.startswith("_") for part in module.split(".")):
        return f"{module} is a private module"
    if name is None:
        return None
    if name.startswith("_"):
        return f"{name} is private"
    if importlib.util.find_spec(module) is not None and _is_submodule(module, name):
        return None  # "from coatcheck import auth": a public module
    exported = getattr(importlib.import_module(module), "__all__", None)
    if exported is not None and name not in exported:
        return f"{name} is not in {module}.__all__"
    return None


def _is_submodule(module: str, name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{module}.{name}") is not None
    except ModuleNotFoundError:
        return False


def test_the_demo_examples_and_docs_import_only_public_names() -> None:
    """No demo module, example or documented code imports from coatcheck._core, a ``_`` module,
    or a name its module does not export: what users copy must be public API."""
    checked = 0
    private = []
    for where, code, package in _sources():
        for module, name in _imported(code, package):
            checked += 1
            reason = _private_use(module, name)
            if reason is not None:
                private.append(f"{where}: from {module} import {name}: {reason}")
    assert private == []
    assert checked > 60  # the sources were found and read


def test_the_public_import_check_catches_private_imports() -> None:
    """The check above can fail: it flags a _core import, a private module, a private name, a
    name missing from __all__, and a relative import that resolves to _core."""
    flagged = [
        _private_use(module, name)
        for code, package in [
            ("from coatcheck._core.config import SessionConfig", None),
            ("import coatcheck.stores._redis_core", None),
            ("from coatcheck.cli import _secret", None),
            ("from coatcheck.throttling import Headers", None),
            ("from .._core.throttle import ThrottleConfig", "coatcheck.demo"),
        ]
        for module, name in _imported(code, package)
    ]
    assert all(reason is not None for reason in flagged)
    assert len(flagged) == 5
