"""Login throttling against password guessing, as sans-I/O flows over the store's hit counters.

Counts live in the session store (``hit`` / ``clear_hits``), so every app instance on that store
shares them. An attempt is counted in up to three scopes:

- **The account**, twice: under the canonical form of the name as submitted (NFKC, case-folded,
  accents and invisible characters dropped: :func:`throttle_name`) and under the identity the
  application's lookup resolved it to (its user id). A database whose collation finds
  ``alice@…`` for ``àlice@…`` therefore gives the second spelling no fresh count.
- **The device**, instead of the account, when the browser presents a valid *device cookie* for
  that account (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): an HMAC'd,
  account-bound value issued on every successful login (:func:`issue_device_cookie`). A browser
  that signed in to the account before is throttled on its own count, so an attacker's failures
  elsewhere never lock its owner out; the attacker, who has no such cookie, stays on the account's
  count.
- **The client address**, which counts *failed* attempts only: an office behind one NAT may sign
  in all day. See "Counting failures" below.

The rules:

- **The check is the count.** The store can count (``hit`` increments and answers in one atomic
  step) but cannot read a count without changing it, so "am I blocked?" cannot be asked without
  counting. :func:`check` therefore counts the attempt in every scope, before the password is
  verified, and refuses it when a scope says so. :func:`succeeded` then forgets the account's (or
  the device's) count, so that count is "failed attempts since the last success, plus this one".

- **Counting failures per address.** Every attempt is first presumed to fail, so a burst of
  parallel guesses is counted before any of them is verified. The address has two counters,
  hit in this order by every check: ``attempts`` and ``credits``; a success hits ``credits`` once
  more. Failures are then ``attempts - (credits - attempts)``. The credits window is opened to
  end exactly when the attempts window ends, so both count the same stretch of time; a credit
  is only given while that window is open. For the instant at a window's edge when the credits
  window is still the previous one (their ends differ), every attempt counts, as if there had
  been no success. Under concurrency the count is exact to within what is in flight.

- **Thresholds, then exponential backoff, inside a time box.** A count lives in a fixed window
  of ``window`` seconds that opens at the scope's first attempt (the store's ``hit`` contract).
  The first ``threshold`` attempts of a window are free. The k-th attempt beyond it is allowed
  only once ``base_delay * (2**k - 1)`` seconds of the window have passed (each doubling step
  capped at ``max_delay``), so allowed attempts thin out exponentially. Refused attempts count
  too: retrying early only pushes the next chance further away. Whatever the count, everything is
  forgotten when the window ends, so no lock outlives ``window`` seconds after the attempt that
  opened it, and nobody can lock a victim out for longer than that with one burst.

- **Keys hold no personal data.** Store keys are HMAC-SHA256 of the scope and value under the
  application secret (:func:`throttle_keys`): a store dump reveals neither emails nor addresses,
  and keys from another deployment (another secret) do not match. A ``purpose`` other than
  ``"login"`` (``"register"``) keeps another limiter's counts apart.
- IPv6 clients are counted per /64, the block one subscriber usually holds; otherwise an attacker
  would get 2**64 fresh addresses for free. An unknown address (``""``) is not counted at all,
  rather than lumping every such client into one shared bucket.
- Nothing here raises on what a client sent: any ``str`` (lone surrogates, NUL, bidi controls)
  gives a key. :func:`canonical_login_name` is the strict gate for names an application stores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import unicodedata
from dataclasses import dataclass

from ..errors import ConfigurationError, HTTPError
from .ops import ClearHits, Flow, Hit

__all__ = [
    "Decision",
    "ThrottleConfig",
    "ThrottleKeys",
    "canonical_login_name",
    "check",
    "issue_device_cookie",
    "succeeded",
    "throttle_keys",
    "throttle_name",
    "throttled_error",
    "valid_device",
]

_KEY_PREFIX = "throttle"
_IPV6_PREFIX = 64
_DAY = 24 * 60 * 60
_SAME_WINDOW = 1.0  # seconds: two counters' windows that end this close were opened together

MAX_DEVICE_ENTRIES = 4
"""Accounts one browser keeps a device cookie entry for (a shared family computer)."""
_DEVICE_ENTRY_RE = re.compile(r"([A-Za-z0-9_-]{22})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})")
_DEVICE_SEPARATOR = "~"
_MAX_DEVICE_COOKIE = MAX_DEVICE_ENTRIES * 64

# Characters no login name may contain: controls (NUL, CR, LF...), format characters (bidi
# overrides, zero-width joiners), surrogates, private-use and unassigned code points, and
# separators (spaces inside a name are a typo or a trick).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# What the throttle key ignores on top of case and compatibility forms: accents (combining
# marks) and everything refused above, so invisible or accented spellings share one count.
_FOLDED_AWAY = _REFUSED_CATEGORIES | {"Mn", "Me"}


@dataclass(frozen=True, kw_only=True, slots=True)
class ThrottleConfig:
    """Login throttling thresholds; validated when built.

    With the defaults an account gets 5 free attempts per 15 minutes, then waits 1, 2, 4, 8 ...
    seconds between further ones: at most 14 guesses per account per window (5 + 9, since
    ``2**10 - 1`` seconds exceeds 15 minutes), 1,344 a day. A browser holding a device cookie for
    the account gets the same budget on its own. An address gets 30 free *failed* attempts, then
    the same backoff. No refusal lasts past the end of the window, 15 minutes after the attempt
    that opened it.
    """

    account_threshold: int = 5
    """Free attempts per account per window (a success starts the count again)."""
    ip_threshold: int | None = 30
    """Free failed attempts per client address per window (successes are not counted);
    ``None`` turns the address scope off (behind a proxy whose client address is not trusted,
    for example)."""
    window: float = 15 * 60
    """Seconds a count lives, from the first attempt that opened it; the longest any refusal
    can last."""
    base_delay: float = 1.0
    """Seconds between the first and second attempt beyond a threshold; each later gap doubles."""
    max_delay: float = 15 * 60
    """The longest single gap the doubling may reach."""
    device_threshold: int | None = 5
    """Free attempts per device cookie per window; ``None`` turns device cookies off (every
    attempt is then counted on the account)."""
    device_lifetime: float = 180 * _DAY
    """Seconds a device cookie is honoured after the login that issued it (each successful
    login issues a fresh one)."""

    def __post_init__(self) -> None:
        if type(self.account_threshold) is not int or self.account_threshold < 1:
            raise ConfigurationError("account_threshold must be a positive integer")
        for name in ("ip_threshold", "device_threshold"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigurationError(f"{name} must be a positive integer or None")
        if not 1 <= self.window <= _DAY:
            raise ConfigurationError("window must be between 1 second and 24 hours")
        if not 0.01 <= self.base_delay <= self.max_delay <= self.window:
            raise ConfigurationError("need 0.01 <= base_delay <= max_delay <= window (seconds)")
        if not 60 <= self.device_lifetime <= 400 * _DAY:
            # Browsers cap cookie lifetimes at 400 days.
            raise ConfigurationError("device_lifetime must be between 1 minute and 400 days")


@dataclass(frozen=True, slots=True)
class ThrottleKeys:
    """The store keys one attempt is counted under (``None``: that scope is not counted)."""

    account: str | None
    """The submitted name, in its throttle form (:func:`throttle_name`)."""
    ip: str | None
    """The client address's attempts counter."""
    identity: str | None = None
    """The account the application's lookup resolved the name to."""
    device: str | None = None
    """The presented, valid device cookie's own counter; replaces the account scope."""
    ip_credit: str | None = None
    """The client address's credits counter (see "Counting failures")."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether an attempt may go on to the password check; if not, for how long to wait."""

    allowed: bool
    retry_after: int = 0
    """Whole seconds to send in ``Retry-After`` when refused (at least 1); 0 when allowed."""
    credit_until: float | None = None
    """Until when a success may still credit the address counters (``None``: nothing to
    credit)."""


ALLOWED = Decision(allowed=True)


# -- names ----------------------------------------------------------------------------------


def canonical_login_name(value: str, *, max_length: int = 320) -> str:
    """The one spelling under which to store and look up a login name (an email address).

    Surrounding whitespace is trimmed, then the name is NFKC-normalised and case-folded, so
    ``" Alice@Example.com"``, ``"alice@example.com"`` and its full-width form are one account on
    every database whatever its collation. Raises :class:`ValueError` for an empty or over-long name
    and for one containing control, NUL, format (bidi override, zero-width), surrogate,
    private-use, unassigned or whitespace characters: they make look-alike accounts, break
    databases (NUL) or cannot be encoded (lone surrogates).
    """
    if not isinstance(value, str):
        raise ValueError("the name must be a string")
    name = unicodedata.normalize("NFKC", value.strip())
    name = unicodedata.normalize("NFKC", name.casefold())
    if not name:
        raise ValueError("the name is empty")
    if len(name) > max_length:
        raise ValueError(f"the name is longer than {max_length} characters")
    for char in name:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError(f"the name contains a forbidden character (U+{ord(char):04X})")
    return name


def throttle_name(value: str) -> str:
    """The form of a submitted name that its throttle count is kept under; never raises.

    Like :func:`canonical_login_name`, and further: accents are dropped and invisible characters
    removed, so ``àlice@…``, ``alice@…`` and ``al\\u200bice@…`` share one count even where the
    application keeps them apart. Folding more here only makes guessing dearer.
    """
    name = unicodedata.normalize("NFKD", value.strip().casefold())
    kept = "".join(c for c in name if unicodedata.category(c) not in _FOLDED_AWAY)
    return unicodedata.normalize("NFKC", kept).casefold()


# -- keys -----------------------------------------------------------------------------------


def throttle_keys(
    secret: str,
    account: str | None,
    ip: str | None,
    *,
    identity: str | None = None,
    device: str | None = None,
    purpose: str = "login",
) -> ThrottleKeys:
    """Derive the store keys for one attempt under ``secret``.

    ``account`` is the name as submitted (compared as :func:`throttle_name`), ``identity`` the
    user id the application's lookup found for it (``None`` when it found none: the name then
    stands in, so the number of store round trips does not reveal whether the account exists),
    ``device`` the nonce of a device cookie :func:`valid_device` accepted. Addresses are parsed:
    IPv4-mapped IPv6 counts as its IPv4 address, other IPv6 as its /64. ``account=None`` counts
    the address only (a per-address limit on some other action).
    """
    label = "coatcheck.throttle" if purpose == "login" else f"coatcheck.throttle.{purpose}"

    def key(scope: str, value: str) -> str:
        return f"{_KEY_PREFIX}:{scope}:" + _hmac(secret, f"{label}:{scope}:{value}")

    account_key = identity_key = device_key = None
    if account is not None:
        name = throttle_name(account)
        account_key = key("acct", name)
        identity_key = key("user", identity) if identity is not None else key("unknown", name)
        if device is not None:
            device_key = key("device", device)
    address = _normalise_ip(ip)
    if not address:
        return ThrottleKeys(account_key, None, identity_key, device_key)
    return ThrottleKeys(
        account_key, key("ip", address), identity_key, device_key, key("ipcredit", address)
    )


# -- flows ----------------------------------------------------------------------------------


def check(config: ThrottleConfig, keys: ThrottleKeys, now: float) -> Flow[Decision]:
    """Count one attempt and decide whether it may go on to the password check.

    Call it once per attempt, *before* verifying the password; when it refuses, answer with
    :func:`throttled_error` and do not verify. With a device key (a browser that signed in to
    this account with its current credential before) only the device is counted: neither the
    account's count nor its address's, so an attacker -- from anywhere, or from behind the
    owner's own NAT -- cannot lock the owner's browser out. Otherwise the address is counted
    first; an attempt refused for its address is not counted against the account, so one noisy
    address cannot keep adding to its victims' counts; then the attempt is counted under both
    account keys and refused if either refuses.
    """
    credit_until: float | None = None
    if keys.device is not None and config.device_threshold is not None:
        count, ends_at = yield Hit(keys.device, now, config.window)
        return _decide(config, config.device_threshold, count, ends_at, now)
    if keys.ip is not None and keys.ip_credit is not None and config.ip_threshold is not None:
        attempts, ends_at = yield Hit(keys.ip, now, config.window)
        # A credits window that opens now is made to end with the attempts window.
        credits, credits_end = yield Hit(keys.ip_credit, now, ends_at - now)
        if abs(credits_end - ends_at) < _SAME_WINDOW:
            # Attempts in flight (counted, not yet credited) make this larger, credits landing
            # between this check's two hits smaller, each by what is in flight at the instant.
            failures = min(attempts, max(0, 2 * attempts - credits))
            credit_until = ends_at
        else:
            # The credits window is left over from the attempts window before (an instant at
            # a window's edge): every attempt counts, as if there had been no success.
            failures, credit_until = attempts, None
        by_ip = _decide(config, config.ip_threshold, failures, ends_at, now)
        if not by_ip.allowed:
            return by_ip
    scopes = [(k, config.account_threshold) for k in (keys.account, keys.identity) if k]
    # Both account keys name one account: each attempt is counted under both, even one the
    # first refuses, or a refusal under one spelling would not push back the next chance of
    # another spelling of the same account.
    refusals = []
    for key, threshold in scopes:
        count, ends_at = yield Hit(key, now, config.window)
        decision = _decide(config, threshold, count, ends_at, now)
        if not decision.allowed:
            refusals.append(decision)
    if refusals:
        return max(refusals, key=lambda d: d.retry_after)
    return Decision(allowed=True, credit_until=credit_until)


def succeeded(
    config: ThrottleConfig, keys: ThrottleKeys, decision: Decision, now: float
) -> Flow[None]:
    """Finish an attempt that succeeded: forget its count and credit its address.

    A success through a device cookie forgets that device's count only, so the owner signing in
    does not reset an attacker's count on the account. The address counters are never cleared
    (one valid account would let an attacker reset them); they are credited with this success.
    """
    if keys.device is not None and config.device_threshold is not None:
        yield ClearHits(keys.device)
    else:
        for key in (keys.account, keys.identity):
            if key:
                yield ClearHits(key)
    credit_until = decision.credit_until
    if keys.ip_credit is not None and credit_until is not None and now < credit_until:
        yield Hit(keys.ip_credit, now, credit_until - now)


def throttled_error(decision: Decision) -> HTTPError:
    """The 429 answer for a refused attempt. It says nothing about the password or the account."""
    retry_after = max(1, decision.retry_after)
    return HTTPError(
        429,
        {"error": "too_many_attempts"},
        headers=(("retry-after", str(retry_after)),),
    )


# -- device cookies -------------------------------------------------------------------------


def device_subject(identity: str, credential: str | bytes | None = None) -> str:
    """What a device cookie for the account ``identity`` is bound to: the account and, when
    given, its current credential (the password hash), so that a password change ends every
    device cookie issued before it -- someone who once knew the password cannot hoard device
    cookies (each with its own guesses) to try for the new one."""
    if credential is None:
        return f"user:{identity}"
    raw = credential.encode("utf-8", "surrogatepass") if isinstance(credential, str) else credential
    return f"user:{identity}:" + hashlib.sha256(raw).hexdigest()[:32]


def valid_device(secret: str, cookie: str | None, subject: str, now: float) -> str | None:
    """The nonce of the first entry of a device cookie issued for ``subject`` and not expired.

    ``subject`` is what the cookie is bound to (the user id); anything else (another account's
    entry, a forged or truncated one, an expired one, an oversized cookie) gives ``None``.
    """
    if not cookie or len(cookie) > _MAX_DEVICE_COOKIE:
        return None
    for entry in cookie.split(_DEVICE_SEPARATOR)[:MAX_DEVICE_ENTRIES]:
        match = _DEVICE_ENTRY_RE.fullmatch(entry)
        if match is None:
            continue
        nonce, expires, mac = match.groups()
        if int(expires) <= now:
            continue
        if hmac.compare_digest(mac, _device_mac(secret, subject, nonce, expires)):
            return nonce
    return None


def issue_device_cookie(
    secret: str, subject: str, now: float, lifetime: float, previous: str | None = None
) -> str:
    """A fresh device cookie value for ``subject``, keeping other accounts' live entries.

    The new entry comes first; entries of ``previous`` that are well formed, not expired and not
    for ``subject`` follow, up to :data:`MAX_DEVICE_ENTRIES` in all.
    """
    nonce = secrets.token_urlsafe(16)
    expires = str(int(now + lifetime))
    entries = [f"{nonce}.{expires}.{_device_mac(secret, subject, nonce, expires)}"]
    if previous and len(previous) <= _MAX_DEVICE_COOKIE:
        for entry in previous.split(_DEVICE_SEPARATOR)[:MAX_DEVICE_ENTRIES]:
            match = _DEVICE_ENTRY_RE.fullmatch(entry)
            if match is None or int(match.group(2)) <= now or entry in entries:
                continue
            if valid_device(secret, entry, subject, now) is not None:
                continue  # this account's older entry: replaced by the new one
            entries.append(entry)
            if len(entries) == MAX_DEVICE_ENTRIES:
                break
    return _DEVICE_SEPARATOR.join(entries)


def _device_mac(secret: str, subject: str, nonce: str, expires: str) -> str:
    digest = hmac.new(
        secret.encode("utf-8", "surrogatepass"),
        f"coatcheck.device:{subject}:{nonce}:{expires}".encode("utf-8", "surrogatepass"),
        hashlib.sha256,
    ).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


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
    # surrogatepass: a lone surrogate from a JSON body must give a key, not a UnicodeEncodeError.
    return hmac.new(
        secret.encode("utf-8", "surrogatepass"),
        message.encode("utf-8", "surrogatepass"),
        hashlib.sha256,
    ).hexdigest()


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
