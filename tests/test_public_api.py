"""The public API is exactly what coatcheck re-exports (a change here is a deliberate decision)."""

from __future__ import annotations

import coatcheck


def test_all_is_pinned() -> None:
    """coatcheck.__all__ lists exactly the supported top-level names, and each exists."""
    assert sorted(coatcheck.__all__) == sorted(
        [
            "AsyncSessionAdmin", "AsyncSessionManager", "AsyncStore", "CSRFConfig",
            "CoatcheckError", "ConfigurationError", "ConflictError", "CookieConfig", "HTTPError",
            "PasswordError",
            "Session", "SessionAdmin", "SessionConfig", "SessionInfo", "SessionManager",
            "SessionRecord", "StoreError", "StoreUnavailableError", "SyncStore",
            "async_store_from_url", "is_fresh", "login", "logout", "sync_store_from_url",
        ]
    )  # fmt: skip
    for name in coatcheck.__all__:
        assert hasattr(coatcheck, name), name
