"""Configurations that cannot be secure fail at start-up."""

from __future__ import annotations

import dataclasses

import pytest

from coatcheck._core.config import CookieConfig, CSRFConfig, SessionConfig
from coatcheck.errors import ConfigurationError

GOOD = "Zq3-lR9xT2pV8mK4nB7cW1yH6dF0sJ5g"


@pytest.mark.parametrize("secret", ["", "short", "a" * 40, "changeme", "ab" * 20])
def test_weak_secrets_rejected(secret: str) -> None:
    """Empty, short, well-known and low-entropy secrets are refused."""
    with pytest.raises(ConfigurationError):
        SessionConfig(secret=secret)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"same_site": "none", "secure": False},
        {"name": "__Host-x", "secure": False},
        {"name": "__Host-x", "domain": "example.com"},
        {"name": "__Host-x", "path": "/app"},
        {"name": "__Secure-x", "secure": False},
        {"name": "bad name"},
        {"name": "a;b"},
        {"same_site": "sometimes"},
        {"path": "relative"},
        {"domain": "evil.com; x=y"},
    ],
)
def test_insecure_cookie_configs_rejected(kwargs: dict[str, object]) -> None:
    """SameSite=None without Secure, __Host- with a Domain, and malformed attributes fail."""
    with pytest.raises(ConfigurationError):
        CookieConfig(**kwargs)  # type: ignore[arg-type]


def test_default_cookie_name_uses_the_strongest_valid_prefix() -> None:
    """__Host- when possible, __Secure- for a Secure cookie with a Domain or Path, else none."""
    assert CookieConfig().effective_name == "__Host-session"
    assert CookieConfig(secure=False).effective_name == "coatcheck_session"
    assert CookieConfig(domain="example.com").effective_name == "__Secure-session"
    assert CookieConfig(path="/app").effective_name == "__Secure-session"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle_timeout": 0},
        {"idle_timeout": 100, "absolute_timeout": 50},
        {"idle_timeout": 100, "touch_interval": 50},
        {"max_write_retries": 0},
        {"trusted_proxies": ("not-an-ip",)},
        {"login_path": "//evil"},
    ],
)
def test_bad_timeouts_rejected(kwargs: dict[str, object]) -> None:
    """Timeouts are positive, idle ≤ absolute, and the touch interval a small fraction of idle."""
    with pytest.raises(ConfigurationError):
        SessionConfig(secret=GOOD, **kwargs)  # type: ignore[arg-type]


def test_default_touch_interval_is_a_fraction_of_idle() -> None:
    """By default last_seen is written at most every min(60 s, idle/10)."""
    assert SessionConfig(secret=GOOD).effective_touch_interval == 60
    assert SessionConfig(secret=GOOD, idle_timeout=100).effective_touch_interval == 10
    # Worked out when built: a config made from another by replace() has its own.
    base = SessionConfig(secret=GOOD, idle_timeout=100)
    assert dataclasses.replace(base, idle_timeout=200).effective_touch_interval == 20
    assert dataclasses.replace(base, touch_interval=3).effective_touch_interval == 3
    assert dataclasses.replace(base, touch_interval=None).effective_touch_interval == 10


def test_csrf_trusted_origins_validated() -> None:
    with pytest.raises(ConfigurationError):
        CSRFConfig(trusted_origins=("evil.com",))


@pytest.mark.parametrize("cap", [0, -1, True, 2.5, "3"])
def test_session_cap_must_be_a_positive_whole_number(cap: object) -> None:
    """max_sessions_per_user is None (no cap) or an int of at least 1; anything else fails."""
    with pytest.raises(ConfigurationError, match="max_sessions_per_user"):
        SessionConfig(secret=GOOD, max_sessions_per_user=cap)  # type: ignore[arg-type]
    assert SessionConfig(secret=GOOD, max_sessions_per_user=1).max_sessions_per_user == 1
