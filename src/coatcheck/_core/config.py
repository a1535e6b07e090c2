"""Configuration: frozen, keyword-only dataclasses validated once, at start-up.

Default timeouts follow NIST SP 800-63B (AAL2: re-authenticate after 30 minutes of inactivity and
at least every 12 hours) and the OWASP Session Management Cheat Sheet (idle 15-30 minutes for
ordinary applications, an absolute limit of a few hours to a working day).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigurationError
from .schema import Validator, compile_schema

SameSite = Literal["lax", "strict", "none"]

MIN_SECRET_LENGTH = 32
_KNOWN_WEAK_SECRETS = frozenset(
    {"secret", "changeme", "change-me", "dev", "development", "password", "coatcheck"}
)
_COOKIE_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 6265 token
_DAY = 24 * 60 * 60


class _Default(float):
    """A default timeout, told apart from the same number set on purpose.

    Remember-me lifetimes left at their defaults follow the operator's own ``absolute_timeout``;
    one the operator set (even to the default's value) is obeyed as given.
    """

    __slots__ = ()


_DEFAULT_ABSOLUTE = _Default(12 * 60 * 60)
_DEFAULT_REMEMBER_IDLE = _Default(14 * _DAY)
_DEFAULT_REMEMBER_ABSOLUTE = _Default(30 * _DAY)


@dataclass(frozen=True, kw_only=True, slots=True)
class CookieConfig:
    """How the session cookie is spelled.

    ``name=None`` picks ``__Host-session`` when the cookie is Secure with no Domain and Path=/
    (the browser then guarantees it was set by this exact host over HTTPS), ``__Secure-session``
    for a Secure cookie with a Domain or another Path, and ``coatcheck_session`` only when not
    Secure (not plain ``session``, which Flask's and Starlette's own sessions use).
    The session cookie is always HttpOnly: no script ever needs the token.
    """

    name: str | None = None
    secure: bool = True
    same_site: SameSite = "lax"
    path: str = "/"
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.same_site not in ("lax", "strict", "none"):
            raise ConfigurationError(
                f"cookie same_site must be lax, strict or none, not {self.same_site!r}"
            )
        if self.same_site == "none" and not self.secure:
            raise ConfigurationError(
                "SameSite=None cookies must be Secure (browsers reject them otherwise)"
            )
        if not self.path.startswith("/") or any(c in self.path for c in ";\r\n\x00 "):
            raise ConfigurationError(f"cookie path must be an absolute path, not {self.path!r}")
        if self.domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]+", self.domain):
            raise ConfigurationError(f"cookie domain {self.domain!r} is not a host name")
        if self.name is not None:
            if not _COOKIE_NAME_RE.fullmatch(self.name):
                raise ConfigurationError(f"cookie name {self.name!r} is not an RFC 6265 token")
            _check_prefix(self.name, secure=self.secure, domain=self.domain, path=self.path)

    @property
    def effective_name(self) -> str:
        if self.name is not None:
            return self.name
        if not self.secure:
            return "coatcheck_session"
        if self.domain is None and self.path == "/":
            return "__Host-session"
        return "__Secure-session"


def _check_prefix(name: str, *, secure: bool, domain: str | None, path: str) -> None:
    if name.startswith("__Host-"):
        if not secure:
            raise ConfigurationError("a __Host- cookie must be Secure")
        if domain is not None:
            raise ConfigurationError("a __Host- cookie must not have a Domain")
        if path != "/":
            raise ConfigurationError("a __Host- cookie must have Path=/")
    elif name.startswith("__Secure-") and not secure:
        raise ConfigurationError("a __Secure- cookie must be Secure")


@dataclass(frozen=True, kw_only=True, slots=True)
class CSRFConfig:
    """CSRF protection for cookie-authenticated unsafe requests (on by default)."""

    enabled: bool = True
    cookie_name: str = "XSRF-TOKEN"
    header_names: tuple[str, ...] = ("x-xsrf-token", "x-csrf-token")
    form_field: str = "_csrf"
    trusted_origins: tuple[str, ...] = ()
    """Other origins (``https://admin.example.com``) allowed to send unsafe requests."""

    def __post_init__(self) -> None:
        if not _COOKIE_NAME_RE.fullmatch(self.cookie_name):
            raise ConfigurationError(
                f"CSRF cookie name {self.cookie_name!r} is not an RFC 6265 token"
            )
        if not self.header_names:
            raise ConfigurationError("at least one CSRF header name is needed")
        for origin in self.trusted_origins:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", origin):
                raise ConfigurationError(
                    f"trusted origin {origin!r} must look like https://host[:port]"
                )


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionConfig:
    """Everything the session core decides with; validated once, when built."""

    secret: str
    """The current secret: at least 32 characters of random data (``coatcheck secret`` prints
    one). It keys what coatcheck derives keys from: login-throttling counter names (HMAC) and,
    with the ``sealed://`` store, the AES-256-GCM keys that seal sessions into cookies. Tokens of
    server-store sessions need no key (only SHA-256 of their random secret is stored), so
    changing it does not end those sessions; it does end sealed sessions unless the old value is
    listed in ``previous_secrets``."""
    previous_secrets: tuple[str, ...] = ()
    """Older secrets still accepted when opening sealed cookies, oldest first (the list reads
    oldest -> newest, ending with ``secret``). A cookie sealed with one of them is re-sealed with
    ``secret`` on its next response; removing a secret from the list ends the cookies it sealed."""
    idle_timeout: float = 30 * 60
    absolute_timeout: float = _DEFAULT_ABSOLUTE
    touch_interval: float | None = None
    """How stale ``last_seen_at`` may get before a read-only request writes it; defaults to
    ``min(60 s, idle_timeout / 10)`` and must stay at or below a quarter of the idle timeout."""
    remember_idle_timeout: float = _DEFAULT_REMEMBER_IDLE
    """Idle timeout of remember-me sessions (``login(..., remember=True)``): 14 days, but never
    longer than an ``absolute_timeout`` you set, unless you set this too."""
    remember_absolute_timeout: float = _DEFAULT_REMEMBER_ABSOLUTE
    """Absolute timeout of remember-me sessions: 30 days, but never longer than an
    ``absolute_timeout`` you set, unless you set this too."""
    allow_remember: bool = True
    """``False`` turns remember-me off: ``login(..., remember=True)`` then gets the ordinary
    timeouts."""
    cookie: CookieConfig = field(default_factory=CookieConfig)
    csrf: CSRFConfig = field(default_factory=CSRFConfig)
    bearer: bool = True
    store_timeout: float = 2.0
    retry_after: int = 5
    max_write_retries: int = 64
    """How many times a write that lost a race is merged and tried again. Each lost race is
    another request's successful write, so this many concurrent writers of one session all land;
    beyond, a request answers 503 with ``Retry-After``."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed."""
    login_path: str = "/login"
    max_sessions_per_user: int | None = None
    """At most this many live sessions per user (bearer tokens included); each sign-in beyond it
    ends the user's least recently used other sessions (``on_revoke`` reason ``"cap"``).
    ``None``: no cap. Needs a server store; see :func:`coatcheck._core.events.after_sign_in`
    for why racing sign-ins on several processes still end within the cap."""
    data_schema: Any = None
    """A TypedDict, dataclass or pydantic model the session data must match, checked on load and
    at commit (:mod:`coatcheck._core.schema`); ``None`` for free-form data."""
    data_validator: Validator | None = field(default=None, init=False, repr=False, compare=False)
    effective_touch_interval: float = field(default=0.0, init=False, repr=False, compare=False)
    """``touch_interval``, or its default for ``idle_timeout``: worked out once, when built (every
    read-only request asks)."""

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or len(self.secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"the secret must be at least {MIN_SECRET_LENGTH} characters of random data "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.secret.lower() in _KNOWN_WEAK_SECRETS or len(set(self.secret)) < 8:
            raise ConfigurationError("the secret is a well-known or low-entropy value")
        if isinstance(self.previous_secrets, str):
            raise ConfigurationError("previous_secrets is a tuple of secrets, not one string")
        # A list is accepted and kept as a tuple, so the frozen config stays immutable.
        object.__setattr__(self, "previous_secrets", tuple(self.previous_secrets))
        for number, previous in enumerate(self.previous_secrets, 1):
            if not isinstance(previous, str) or len(previous) < MIN_SECRET_LENGTH:
                raise ConfigurationError(
                    f"previous secret #{number} must be at least {MIN_SECRET_LENGTH} characters"
                )
            if previous.lower() in _KNOWN_WEAK_SECRETS or len(set(previous)) < 8:
                raise ConfigurationError(
                    f"previous secret #{number} is a well-known or low-entropy value"
                )
        if len({*self.previous_secrets, self.secret}) != len(self.previous_secrets) + 1:
            raise ConfigurationError("a secret is listed twice (secret and previous_secrets)")
        for name in (
            "idle_timeout",
            "absolute_timeout",
            "remember_idle_timeout",
            "remember_absolute_timeout",
            "store_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.idle_timeout > self.absolute_timeout:
            raise ConfigurationError("idle_timeout cannot exceed absolute_timeout")
        self._bound_remember_me()
        if self.remember_idle_timeout > self.remember_absolute_timeout:
            raise ConfigurationError(
                "remember_idle_timeout cannot exceed remember_absolute_timeout"
            )
        if self.touch_interval is not None and not (
            0 <= self.touch_interval <= self.idle_timeout / 4
        ):
            raise ConfigurationError(
                "touch_interval must be between 0 and a quarter of idle_timeout, or steady "
                "activity could let a session expire"
            )
        if self.max_write_retries < 1:
            raise ConfigurationError("max_write_retries must be at least 1")
        if self.retry_after < 1:
            raise ConfigurationError("retry_after must be at least 1 second")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise ConfigurationError(
                    f"trusted proxy {proxy!r} is not an address or network"
                ) from exc
        if self.max_sessions_per_user is not None and (
            isinstance(self.max_sessions_per_user, bool)
            or not isinstance(self.max_sessions_per_user, int)
            or self.max_sessions_per_user < 1
        ):
            raise ConfigurationError("max_sessions_per_user must be a whole number, at least 1")
        if not self.login_path.startswith("/") or self.login_path.startswith("//"):
            raise ConfigurationError("login_path must be a same-site absolute path")
        if self.data_schema is not None:
            object.__setattr__(self, "data_validator", compile_schema(self.data_schema))
        touch = self.touch_interval
        object.__setattr__(
            self,
            "effective_touch_interval",
            touch if touch is not None else min(60.0, self.idle_timeout / 10),
        )

    def _bound_remember_me(self) -> None:
        """Remember-me lifetimes the operator did not set stay within the operator's policy.

        Without this, ``absolute_timeout=20`` would still let ``remember=True`` sessions live
        for 30 days. Setting either remember-me lifetime is a decision about remember-me, and
        lifts the bound (the other one then only stays within it). The bounded values stay
        marked as defaults, so ``dataclasses.replace`` with another ``absolute_timeout`` bounds
        them again.
        """
        if not self.allow_remember:
            object.__setattr__(self, "remember_idle_timeout", _Default(self.idle_timeout))
            object.__setattr__(self, "remember_absolute_timeout", _Default(self.absolute_timeout))
            return
        absolute = self.remember_absolute_timeout
        explicit = not (
            isinstance(absolute, _Default) and isinstance(self.remember_idle_timeout, _Default)
        )
        cap = (
            math.inf
            if explicit or isinstance(self.absolute_timeout, _Default)
            else self.absolute_timeout
        )
        if isinstance(absolute, _Default):
            absolute = _Default(min(_DEFAULT_REMEMBER_ABSOLUTE, cap))
            object.__setattr__(self, "remember_absolute_timeout", absolute)
        if isinstance(self.remember_idle_timeout, _Default):
            idle = _Default(min(_DEFAULT_REMEMBER_IDLE, cap, absolute))
            object.__setattr__(self, "remember_idle_timeout", idle)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every accepted secret, oldest -> newest: ``previous_secrets`` then ``secret``."""
        return (*self.previous_secrets, self.secret)

    def timeouts(self, *, remember: bool) -> tuple[float, float]:
        """(idle, absolute) for an ordinary or a remember-me session."""
        if remember:
            return self.remember_idle_timeout, self.remember_absolute_timeout
        return self.idle_timeout, self.absolute_timeout
