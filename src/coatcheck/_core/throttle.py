"""Login throttling against password guessing, as sans-I/O flows over the store's hit counters.

Counts live in the session store (``hit`` / ``clear_hits``), so every app instance on that store
shares them. Two scopes are counted: the account (a normalised email or user name) and the client
address. The rules:

- **Attempts are counted, not failures.** The store can count (``hit`` increments and answers in
  one atomic step) but cannot read a count without changing it, so "am I blocked?" cannot be asked
  without counting. :func:`check` therefore *is* the count: call it once per login attempt, before
  verifying the password, and refuse the attempt when it says so. :func:`succeeded` then forgets
  the account's count, so for an account the count is exactly "failed attempts since the last
  success, plus this one". The address count is never cleared by a success (or one valid account
  would let an attacker reset it), so for an address it is a rate limit on login attempts; its
  threshold is set higher for that reason.

  A separate "lock" marker that a failure sets and :func:`check` reads was considered and
  rejected: reading it with ``hit`` creates a window when none is active, and a lock written while
  such a window is open is swallowed by it, so concurrent requests could erase locks.

- **Thresholds, then exponential backoff, inside a time box.** A count lives in a fixed window
  of ``window`` seconds that opens at the scope's first attempt (the store's ``hit`` contract).
  The first ``threshold`` attempts of a window are free. The k-th attempt beyond it is allowed
  only once ``base_delay * (2**k - 1)`` seconds of the window have passed (each doubling step
  capped at ``max_delay``), so allowed attempts thin out exponentially. Refused attempts count
  too: retrying early only pushes the next chance further away. Whatever the count, everything is
  forgotten when the window ends, so no lock outlives ``window`` seconds after the attempt that
  opened it, and nobody can lock a victim out for longer than that with one burst.

- **Keys hold no personal data.** Store keys are HMAC-SHA256 of the normalised account or address
  under the application secret (:func:`throttle_keys`): a store dump reveals neither emails nor
  addresses, and keys from another deployment (another secret) do not match.
- IPv6 clients are counted per /64, the block one subscriber usually holds; otherwise an attacker
  would get 2**64 fresh addresses for free. An unknown address (``""``) is not counted at all,
  rather than lumping every such client into one shared bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import unicodedata
from dataclasses import dataclass

from ..errors import ConfigurationError, HTTPError
from .ops import ClearHits, Flow, Hit

__all__ = [
    "Decision",
    "ThrottleConfig",
    "ThrottleKeys",
    "check",
    "succeeded",
    "throttle_keys",
    "throttled_error",
]

_KEY_PREFIX = "throttle"
_IPV6_PREFIX = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class ThrottleConfig:
    """Login throttling thresholds; validated when built.

    With the defaults an account gets 5 free attempts per 15 minutes, then waits 1, 2, 4, 8 ...
    seconds between further ones: at most 14 guesses per account per window (5 + 9, since
    ``2**10 - 1`` seconds exceeds 15 minutes). An address gets 30 free attempts, then the same
    backoff. No refusal lasts past the end of the window, 15 minutes after the attempt that
    opened it.
    """

    account_threshold: int = 5
    """Free attempts per account per window (a success starts the count again)."""
    ip_threshold: int | None = 30
    """Free attempts per client address per window, successes included; ``None`` turns the
    address scope off (behind a proxy whose client address is not trusted, for example)."""
    window: float = 15 * 60
    """Seconds a count lives, from the first attempt that opened it; the longest any refusal
    can last."""
    base_delay: float = 1.0
    """Seconds between the first and second attempt beyond a threshold; each later gap doubles."""
    max_delay: float = 15 * 60
    """The longest single gap the doubling may reach."""

    def __post_init__(self) -> None:
        if type(self.account_threshold) is not int or self.account_threshold < 1:
            raise ConfigurationError("account_threshold must be a positive integer")
        if self.ip_threshold is not None and (
            type(self.ip_threshold) is not int or self.ip_threshold < 1
        ):
            raise ConfigurationError("ip_threshold must be a positive integer or None")
        if not 1 <= self.window <= 24 * 60 * 60:
            raise ConfigurationError("window must be between 1 second and 24 hours")
        if not 0.01 <= self.base_delay <= self.max_delay <= self.window:
            raise ConfigurationError("need 0.01 <= base_delay <= max_delay <= window (seconds)")


@dataclass(frozen=True, slots=True)
class ThrottleKeys:
    """The store keys one login attempt is counted under (``ip`` is ``None`` when not counted)."""

    account: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a login attempt may go on to the password check; if not, for how long to wait."""

    allowed: bool
    retry_after: int = 0
    """Whole seconds to send in ``Retry-After`` when refused (at least 1); 0 when allowed."""


ALLOWED = Decision(allowed=True)


def throttle_keys(secret: str, account: str, ip: str | None) -> ThrottleKeys:
    """Derive the store keys for ``account`` and client address ``ip`` under ``secret``.

    The account is compared after trimming, NFKC normalisation and case folding, so
    ``" Alice@Example.com"`` and ``"alice@example.com"`` share one count. Addresses are parsed:
    IPv4-mapped IPv6 counts as its IPv4 address, other IPv6 as its /64.
    """
    account_key = f"{_KEY_PREFIX}:acct:" + _hmac(secret, "acct:" + _normalise_account(account))
    address = _normalise_ip(ip)
    if not address:
        return ThrottleKeys(account=account_key, ip=None)
    return ThrottleKeys(
        account=account_key, ip=f"{_KEY_PREFIX}:ip:" + _hmac(secret, "ip:" + address)
    )


def check(config: ThrottleConfig, keys: ThrottleKeys, now: float) -> Flow[Decision]:
    """Count one login attempt and decide whether it may go on to the password check.

    Call it once per attempt, *before* verifying the password; when it refuses, answer with
    :func:`throttled_error` and do not verify. The address is counted first; an attempt refused
    for its address is not counted against the account, so one noisy address cannot keep adding
    to its victims' counts.
    """
    if keys.ip is not None and config.ip_threshold is not None:
        count, ends_at = yield Hit(keys.ip, now, config.window)
        by_ip = _decide(config, config.ip_threshold, count, ends_at, now)
        if not by_ip.allowed:
            return by_ip
    count, ends_at = yield Hit(keys.account, now, config.window)
    return _decide(config, config.account_threshold, count, ends_at, now)


def succeeded(keys: ThrottleKeys) -> Flow[None]:
    """Forget the account's count after a successful login (the address keeps its count)."""
    yield ClearHits(keys.account)


def throttled_error(decision: Decision) -> HTTPError:
    """The 429 answer for a refused attempt. It says nothing about the password or the account."""
    retry_after = max(1, decision.retry_after)
    return HTTPError(
        429,
        {"error": "too_many_attempts"},
        headers=(("retry-after", str(retry_after)),),
    )


# -- internals ------------------------------------------------------------------------------


def _decide(
    config: ThrottleConfig, threshold: int, count: int, ends_at: float, now: float
) -> Decision:
    beyond = count - threshold
    if beyond <= 0:
        return ALLOWED
    opened_at = ends_at - config.window
    if now >= opened_at + _backoff(config, beyond):
        return ALLOWED
    # The next attempt will be one further beyond; the window's end forgives everything.
    next_chance = min(opened_at + _backoff(config, beyond + 1), ends_at)
    return Decision(allowed=False, retry_after=max(1, math.ceil(next_chance - now)))


def _backoff(config: ThrottleConfig, beyond: int) -> float:
    """Seconds into the window before the ``beyond``-th attempt over the threshold is allowed.

    The gaps are base, 2*base, 4*base ..., each capped at ``max_delay``; this is their sum.
    """
    doubling = 0  # how many gaps are still below the cap (at most log2(max/base) + 1, ~17)
    while doubling < beyond and config.base_delay * (1 << doubling) < config.max_delay:
        doubling += 1
    return config.base_delay * ((1 << doubling) - 1) + (beyond - doubling) * config.max_delay


def _hmac(secret: str, message: str) -> str:
    return hmac.new(
        secret.encode("utf-8"), f"coatcheck.throttle:{message}".encode(), hashlib.sha256
    ).hexdigest()


def _normalise_account(account: str) -> str:
    return unicodedata.normalize("NFKC", account.strip()).casefold()


def _normalise_ip(ip: str | None) -> str:
    if not ip:
        return ""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()  # not an address (a test client, a socket path): count it as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, _IPV6_PREFIX), strict=False))
    return str(address)
