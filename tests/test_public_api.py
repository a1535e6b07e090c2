"""The public API is exactly what coatcheck re-exports (a change here is a deliberate decision)."""

from __future__ import annotations

import coatcheck


def test_all_is_pinned() -> None:
    """coatcheck.__all__ lists exactly the supported top-level names, and each exists."""
    assert sorted(coatcheck.__all__) == sorted(
        [
            "AsyncLoginGuard", "AsyncSessionAdmin", "AsyncSessionManager", "AsyncStore",
            "CSRFConfig",
            "CoatcheckError", "ConfigurationError", "ConflictError", "CookieConfig", "HTTPError",
            "Hooks", "LoginGuard", "NotSupportedError", "PasswordError", "SessionTooLargeError",
            "ThrottleConfig", "ThrottledEvent",
            "Session", "SessionAdmin", "SessionConfig", "SessionDataError", "SessionEvent",
            "SessionInfo",
            "SessionManager",
            "SessionRecord", "StoreError", "StoreUnavailableError", "SyncStore",
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
