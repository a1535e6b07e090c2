"""coatcheck: sessions and login for Python web apps, secure by default.

The public API is what this module re-exports (pinned by ``tests/test_public_api.py``), plus
the public modules: ``coatcheck.admin``, ``auth``, ``asgi``, ``wsgi``, ``errors``, ``hooks``,
``passwords``, ``redirects``, ``throttling``, ``testing``, ``stores.*`` (not those whose name starts
with ``_``) and ``integrations.*``. ``coatcheck._core`` and every ``_``-module are internal.
"""

from __future__ import annotations

from ._core.admin import SessionInfo
from ._core.config import CookieConfig, CSRFConfig, SessionConfig
from ._core.events import SessionEvent, ThrottledEvent
from ._core.record import SessionRecord
from ._core.session import Session
from ._core.stats import SessionStats
from .admin import AsyncSessionAdmin, SessionAdmin
from .auth import is_fresh, login, logout
from .errors import (
    CoatcheckError,
    ConfigurationError,
    ConflictError,
    HTTPError,
    NotSupportedError,
    PasswordError,
    SessionDataError,
    SessionTooLargeError,
    StoreError,
    StoreUnavailableError,
)
from .hooks import Hooks
from .manager import AsyncSessionManager, SessionManager
from .passwords import PasswordConfig, PasswordHasher
from .stores.base import AsyncStore, SyncStore
from .stores.url import async_store_from_url, sync_store_from_url
from .throttling import AsyncLoginGuard, LoginGuard, ThrottleConfig

__version__ = "0.1.0"

__all__ = [
    "AsyncLoginGuard",
    "AsyncSessionAdmin",
    "AsyncSessionManager",
    "AsyncStore",
    "CSRFConfig",
    "CoatcheckError",
    "ConfigurationError",
    "ConflictError",
    "CookieConfig",
    "HTTPError",
    "Hooks",
    "LoginGuard",
    "NotSupportedError",
    "PasswordConfig",
    "PasswordError",
    "PasswordHasher",
    "Session",
    "SessionAdmin",
    "SessionConfig",
    "SessionDataError",
    "SessionEvent",
    "SessionInfo",
    "SessionManager",
    "SessionRecord",
    "SessionStats",
    "SessionTooLargeError",
    "StoreError",
    "StoreUnavailableError",
    "SyncStore",
    "ThrottleConfig",
    "ThrottledEvent",
    "async_store_from_url",
    "is_fresh",
    "login",
    "logout",
    "sync_store_from_url",
]
