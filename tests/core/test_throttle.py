from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from coatcheck._core.config import SessionConfig
from coatcheck._core.ops import ClearHits, Hit
from coatcheck._core.throttle import (
    Decision,
    ThrottleConfig,
    ThrottleKeys,
    canonical_login_name,
    check,
    device_subject,
    issue_device_cookie,
    succeeded,
    throttle_keys,
    throttled_error,
    valid_device,
)
from coatcheck.errors import ConfigurationError
from coatcheck.manager import AsyncSessionManager, SessionManager
from coatcheck.stores.memory import AsyncMemoryStore, MemoryStore

SECRET = "k3Q9-xv2LmZ8pT4rW7yB1nC6dF0hJ5sA"
OTHER_SECRET = "Zq8-1mN4bV7cX0zL3kJ6hG9fD2sA5pO"
T0 = 1_700_000_000.0
CONFIG = ThrottleConfig()  # 5 per account, 30 per address, 15-minute window, 1 s base delay


class Login:
    """Login attempts against one memory store, with the clock set by the test."""

    def __init__(self, config: ThrottleConfig = CONFIG) -> None:
        self.config = config
        self.manager = SessionManager(MemoryStore(), SessionConfig(secret=SECRET))
        self.now = T0
        self.last: dict[tuple[str | None, str, str | None, str | None], Decision] = {}

    def keys(
        self,
        account: str | None = "alice@example.com",
        ip: str = "203.0.113.7",
        identity: str | None = None,
        device: str | None = None,
    ) -> ThrottleKeys:
        return throttle_keys(SECRET, account, ip, identity=identity, device=device)

    def attempt(
        self,
        account: str | None = "alice@example.com",
        ip: str = "203.0.113.7",
        *,
        identity: str | None = None,
        device: str | None = None,
    ) -> Decision:
        decision = self.manager.run(
            check(self.config, self.keys(account, ip, identity, device), self.now)
        )
        self.last[(account, ip, identity, device)] = decision
        return decision

    def succeed(
        self,
        account: str | None = "alice@example.com",
        ip: str = "203.0.113.7",
        *,
        identity: str | None = None,
        device: str | None = None,
    ) -> None:
        """Finish the last attempt made with these arguments as a success."""
        decision = self.last[(account, ip, identity, device)]
        keys = self.keys(account, ip, identity, device)
        self.manager.run(succeeded(self.config, keys, decision, self.now))


@pytest.fixture
def login() -> Login:
    return Login()


def _drive_check(config: ThrottleConfig, count: int, opened_at: float, now: float) -> Decision:
    """Run ``check`` for an account-only key as if the store answered ``count`` for it."""
    flow = check(config, ThrottleKeys(account="a", ip=None), now)
    op = next(flow)
    assert op == Hit("a", now, config.window)
    with pytest.raises(StopIteration) as stop:
        flow.send((count, opened_at + config.window))
    decision: Decision = stop.value.value
    return decision


# -- thresholds and backoff -----------------------------------------------------------------


def test_attempts_up_to_the_threshold_are_allowed(login: Login) -> None:
    """The first five attempts on an account in a window all go through."""
    assert [login.attempt().allowed for _ in range(5)] == [True] * 5


def test_attempt_beyond_the_threshold_is_refused_with_a_429(login: Login) -> None:
    """The sixth immediate attempt is refused, and the answer is a 429 with Retry-After."""
    for _ in range(5):
        login.attempt()
    decision = login.attempt()
    error = throttled_error(decision)
    assert (decision.allowed, decision.retry_after > 0) == (False, True)
    assert (error.status_code, error.body, error.headers) == (
        429,
        {"error": "too_many_attempts"},
        (("retry-after", str(decision.retry_after)),),
    )


def test_retry_after_grows_with_further_attempts(login: Login) -> None:
    """Each refused attempt pushes the next chance further: 3, 7, 15, 31 seconds away."""
    for _ in range(5):
        login.attempt()
    assert [login.attempt().retry_after for _ in range(4)] == [3, 7, 15, 31]


def test_waiting_out_the_backoff_earns_one_more_attempt(login: Login) -> None:
    """After the threshold, an attempt made once its delay has passed is allowed."""
    for _ in range(5):
        login.attempt()
    login.now = T0 + 1
    first = login.attempt()
    second = login.attempt()
    assert (first.allowed, second) == (True, Decision(allowed=False, retry_after=6))


def test_at_most_fourteen_guesses_per_window_with_the_defaults(login: Login) -> None:
    """An attacker who waits out every delay gets 5 + 9 guesses in a window, and no fifteenth."""
    allowed = [login.attempt().allowed for _ in range(5)]
    for beyond in range(1, 10):
        login.now = T0 + (2**beyond - 1)  # 1, 3, 7 ... 511 s: exactly when each is allowed
        allowed.append(login.attempt().allowed)
    login.now = T0 + CONFIG.window - 1
    assert (allowed, login.attempt().allowed) == ([True] * 14, False)


def test_retry_after_never_reaches_past_the_window(login: Login) -> None:
    """However many refused attempts pile up, Retry-After points no later than the window's end."""
    for _ in range(200):
        decision = login.attempt()
    assert decision == Decision(allowed=False, retry_after=int(CONFIG.window))


def test_the_block_ends_by_itself_when_the_window_ends(login: Login) -> None:
    """After a flood of attempts the account is usable again once the window is over."""
    for _ in range(200):
        login.attempt()
    login.now = T0 + CONFIG.window - 1
    still_blocked = login.attempt()
    login.now = T0 + CONFIG.window
    assert (still_blocked.allowed, login.attempt().allowed) == (False, True)


def test_huge_counts_are_decided_without_overflow() -> None:
    """A count in the billions is refused until the window's end, quickly and without error."""
    decision = _drive_check(CONFIG, 10**9, opened_at=T0, now=T0 + 10)
    assert decision == Decision(allowed=False, retry_after=int(CONFIG.window) - 10)


def test_each_gap_is_capped_at_max_delay() -> None:
    """With max_delay=4 the gaps go 1, 2, 4, 4, 4: the fifth extra attempt is allowed at 15 s."""
    config = ThrottleConfig(account_threshold=1, window=100, base_delay=1, max_delay=4)
    beyond_5 = 1 + 5
    assert (
        _drive_check(config, beyond_5, opened_at=T0, now=T0 + 14.9).allowed,
        _drive_check(config, beyond_5, opened_at=T0, now=T0 + 15),
    ) == (False, Decision(allowed=True))


# -- success and scopes ---------------------------------------------------------------------


def test_success_clears_the_account_count(login: Login) -> None:
    """After a successful login the account gets its five free attempts again."""
    for _ in range(5):
        login.attempt()
    login.succeed()
    assert [login.attempt().allowed for _ in range(6)] == [True] * 5 + [False]


def test_success_clears_both_account_keys_and_credits_the_address() -> None:
    """``succeeded`` clears the name and identity keys and hits the address's credit counter;
    it never clears an address counter."""
    keys = throttle_keys(SECRET, "alice@example.com", "203.0.113.7", identity="u1")
    decision = Decision(allowed=True, credit_until=T0 + 10)
    assert list(succeeded(CONFIG, keys, decision, T0)) == [
        ClearHits(keys.account or ""),
        ClearHits(keys.identity or ""),
        Hit(keys.ip_credit or "", T0, 10),  # a window that would end with the check's
    ]


def test_no_credit_once_a_window_the_check_saw_has_ended() -> None:
    """A success arriving after the address window ended gives no credit: it would land in a
    fresh window and be counted against nothing."""
    keys = throttle_keys(SECRET, "alice@example.com", "203.0.113.7")
    decision = Decision(allowed=True, credit_until=T0 + 10)
    assert Hit(keys.ip_credit or "", T0 + 10, CONFIG.window) not in list(
        succeeded(CONFIG, keys, decision, T0 + 10)
    )


def test_success_does_not_clear_the_address_failures() -> None:
    """Logging in to one's own account does not wipe the address's failed attempts."""
    login = Login(ThrottleConfig(ip_threshold=3))
    for account in ("a@example.com", "b@example.com", "c@example.com"):
        login.attempt(account)
    login.attempt("mine@example.com")
    login.succeed("mine@example.com")
    assert login.attempt("d@example.com").allowed is False


def _address_allowed(threshold: int, attempts: int, credits: int, credits_end: float) -> bool:
    """Run the address part of ``check`` as if the store answered these two counts."""
    config = ThrottleConfig(ip_threshold=threshold, window=100, max_delay=100)
    flow = check(config, throttle_keys(SECRET, None, "203.0.113.7"), T0)
    next(flow)
    second = flow.send((attempts, T0 + 100))
    assert second == Hit(throttle_keys(SECRET, None, "203.0.113.7").ip_credit or "", T0, 100)
    with pytest.raises(StopIteration) as stop:
        flow.send((credits, credits_end))
    decision: Decision = stop.value.value
    return decision.allowed


@pytest.mark.parametrize(
    ("attempts", "credits", "credits_end", "failures"),
    [
        (10, 10, T0 + 100, 10),
        (10, 15, T0 + 100, 5),
        (10, 20, T0 + 100, 0),
        (10, 23, T0 + 100, 0),  # credits landing between this check's two hits
        (10, 3, T0 + 100, 10),  # attempts in flight, not yet past their credits hit
        (10, 25, T0 + 0.5, 10),  # the credits window is the previous one: count attempts
    ],
)
def test_address_failures_from_the_two_counters(
    attempts: int, credits: int, credits_end: float, failures: int
) -> None:
    """failures = attempts - (credits - attempts), within [0, attempts]; the credits window is
    opened to end with the attempts window, and where it is still the previous one (ends
    differ, an instant at a window's edge) every attempt counts, as if there were no success."""
    at_threshold = _address_allowed(max(1, failures), attempts, credits, credits_end)
    below = (
        _address_allowed(failures - 1, attempts, credits, credits_end) if failures > 1 else False
    )
    assert (at_threshold, below) == (True, False)


def test_address_counts_failed_attempts_only(login: Login) -> None:
    """An office behind one NAT: 31 people (and 100) sign in within the window and none is
    refused, because successes are credited back to the address."""
    for n in range(100):
        assert login.attempt(f"user{n}@example.com").allowed, n
        login.succeed(f"user{n}@example.com")
    allowed = [login.attempt(f"bad{n}@example.com").allowed for n in range(31)]
    assert allowed == [True] * 30 + [False]


def test_a_parallel_burst_is_counted_before_any_is_verified(login: Login) -> None:
    """Attempts are presumed failed until they succeed, so 40 guesses sent at once from one
    address (none finished yet) cannot all pass: the 31st is refused."""
    allowed = [login.attempt(f"user{n}@example.com").allowed for n in range(40)]
    assert allowed == [True] * 30 + [False] * 10


def test_one_address_trying_many_accounts_is_blocked(login: Login) -> None:
    """Thirty failed attempts on thirty accounts pass; the next, on a fresh account, is
    refused."""
    allowed = [login.attempt(f"user{n}@example.com").allowed for n in range(30)]
    assert (allowed, login.attempt("fresh@example.com").allowed) == ([True] * 30, False)


def test_one_account_from_many_addresses_is_blocked(login: Login) -> None:
    """The account count is shared by every address, so spreading guesses out does not help."""
    allowed = [login.attempt(ip=f"198.51.100.{n}").allowed for n in range(6)]
    assert allowed == [True] * 5 + [False]


def test_attempts_refused_by_address_do_not_count_against_the_account() -> None:
    """A blocked address hammering an account leaves the account's own count alone."""
    login = Login(ThrottleConfig(ip_threshold=3))
    for _ in range(50):
        login.attempt(ip="203.0.113.66")
    allowed = [login.attempt(ip="198.51.100.1").allowed for _ in range(3)]
    assert allowed == [True, True, False]  # 3 counted from the noisy address, then 2 more


def test_address_scope_can_be_turned_off() -> None:
    """With ip_threshold=None only the account is counted."""
    login = Login(ThrottleConfig(ip_threshold=None))
    assert [login.attempt(f"user{n}@example.com").allowed for n in range(100)] == [True] * 100


def test_unknown_address_is_not_counted() -> None:
    """An empty client address yields no address key, so ``check`` hits the account keys only."""
    keys = throttle_keys(SECRET, "alice@example.com", "")
    flow = check(CONFIG, keys, T0)
    first = next(flow)
    second = flow.send((1, T0 + CONFIG.window))
    assert (keys.ip, [first, second]) == (
        None,
        [Hit(keys.account or "", T0, CONFIG.window), Hit(keys.identity or "", T0, CONFIG.window)],
    )


async def test_flows_run_on_the_async_manager_too() -> None:
    """The same flows run unchanged on the async driver."""
    manager = AsyncSessionManager(AsyncMemoryStore(), SessionConfig(secret=SECRET))
    keys = throttle_keys(SECRET, "alice@example.com", "203.0.113.7")
    decisions = [await manager.run(check(CONFIG, keys, T0)) for _ in range(6)]
    await manager.run(succeeded(CONFIG, keys, decisions[0], T0))
    after = await manager.run(check(CONFIG, keys, T0))
    assert ([d.allowed for d in decisions], after.allowed) == ([True] * 5 + [False], True)


# -- one account, many spellings --------------------------------------------------------------


def test_spellings_the_lookup_resolves_to_one_account_share_its_count(login: Login) -> None:
    """A database that finds alice for "àlice", "ALİCE" or "a\u200blice" gives no spelling a
    fresh count: the identity it resolves to is counted too."""
    spellings = ["alice@example.com", "àlice@example.com", "alicé@example.com", "ålice@example.com"]
    spellings += ["ālice@example.com", "alice@exämple.com", "a\u200blice@example.com"]
    allowed = [
        login.attempt(spelling, f"198.51.100.{n}", identity="user-1").allowed
        for n, spelling in enumerate(spellings)
    ]
    assert allowed == [True] * 5 + [False] * 2


@pytest.mark.parametrize(
    "variant",
    [
        "àlice@example.com",
        "ALÌCE@EXAMPLE.COM",
        "al\u200bice@example.com",
        "al\u202eice@example.com",
        "alice\u0301@example.com",
        "\u00a0alice@example.com",
    ],
)
def test_accented_and_invisible_spellings_share_the_name_key(variant: str) -> None:
    """Even when the lookup finds no account, accents and invisible characters do not make a
    fresh count for the submitted name."""
    assert throttle_keys(SECRET, variant, None).account == (
        throttle_keys(SECRET, "alice@example.com", None).account
    )


def test_unknown_and_known_accounts_cost_the_same_round_trips() -> None:
    """An unknown account is counted under two keys as a known one is, so the number of store
    operations does not tell an attacker whether the account exists."""

    def ops(identity: str | None) -> int:
        flow = check(
            CONFIG, throttle_keys(SECRET, "a@example.com", "1.2.3.4", identity=identity), T0
        )
        count = 0
        next(flow)
        try:
            while True:
                count += 1
                flow.send((1, T0 + CONFIG.window))
        except StopIteration:
            return count

    assert (ops(None), ops("user-1")) == (4, 4)


@pytest.mark.parametrize("account", ["\ud800@example.com", "a\x00b", "\udfff", "", " "])
def test_any_string_gives_a_key(account: str) -> None:
    """Lone surrogates, NUL and empty names give keys, never a UnicodeEncodeError (the JSON
    body of a login can carry any of them)."""
    keys = throttle_keys(SECRET, account, "203.0.113.7", identity=account)
    assert (keys.account or "").startswith("throttle:acct:")


def test_purposes_keep_separate_counts() -> None:
    """A registration limiter's address counts are not the login's."""
    login = throttle_keys(SECRET, None, "203.0.113.7")
    register = throttle_keys(SECRET, None, "203.0.113.7", purpose="register")
    assert (login.account, login.ip == register.ip) == (None, False)


# -- device cookies -------------------------------------------------------------------------


def test_a_device_is_counted_on_its_own_not_on_the_account(login: Login) -> None:
    """With the account locked by an attacker, the owner's browser (a valid device cookie) is
    still allowed: its attempts are counted on the device's own key."""
    for n in range(20):
        login.attempt(ip=f"198.51.100.{n}", identity="user-1")
    assert login.attempt(ip="192.0.2.50", identity="user-1").allowed is False
    owner = login.attempt(ip="192.0.2.50", identity="user-1", device="nonce-of-owner")
    assert owner.allowed is True


def test_a_device_gets_its_own_threshold_and_backoff(login: Login) -> None:
    """Guessing from one device cookie is throttled like an account: five, then refusals."""
    allowed = [
        login.attempt(identity="user-1", device="nonce-1", ip=f"198.51.100.{n}").allowed
        for n in range(6)
    ]
    assert allowed == [True] * 5 + [False]


def test_success_through_a_device_leaves_the_account_count_alone(login: Login) -> None:
    """The owner signing in from a known browser does not reset the attacker's count."""
    for n in range(5):
        login.attempt(ip=f"198.51.100.{n}", identity="user-1")
    login.attempt(identity="user-1", device="nonce-1")
    login.succeed(identity="user-1", device="nonce-1")
    assert login.attempt(ip="198.51.100.99", identity="user-1").allowed is False


def test_device_cookies_can_be_turned_off() -> None:
    """With device_threshold=None a device key changes nothing: the account is counted."""
    login = Login(ThrottleConfig(device_threshold=None))
    for n in range(5):
        login.attempt(ip=f"198.51.100.{n}", identity="user-1")
    assert login.attempt(identity="user-1", device="nonce-1").allowed is False


def test_a_device_is_not_locked_out_by_its_own_address(login: Login) -> None:
    """Found by an attack: failures from the owner's address (an office NAT, an attacker on the
    same network) locked the owner's browser out, device cookie or not, because the address was
    checked first. A valid device cookie is counted on its own key only."""
    for n in range(40):
        login.attempt(f"someone{n}@example.com", ip="192.0.2.7")
    assert login.attempt(ip="192.0.2.7", identity="user-1").allowed is False
    owner = login.attempt(ip="192.0.2.7", identity="user-1", device="nonce-of-owner")
    assert owner.allowed is True


def test_device_cookies_die_with_the_credential() -> None:
    """Found by an attack: device cookies hoarded while the old password was known each gave
    five more guesses at the new one. Bound to the credential, they end with a password change
    (and a cookie bound to one account's credential is not another account's)."""
    before, after = device_subject("1", "hash-1"), device_subject("1", "hash-2")
    cookie = issue_device_cookie(SECRET, before, T0, 100)
    assert valid_device(SECRET, cookie, before, T0) is not None
    assert valid_device(SECRET, cookie, after, T0) is None
    assert valid_device(SECRET, cookie, device_subject("2", "hash-1"), T0) is None
    assert device_subject("1") == "user:1"  # no credential given: bound to the account only


def test_device_cookie_is_bound_to_its_account() -> None:
    """A device cookie validates for the account it was issued to, not another, and only until
    it expires."""
    cookie = issue_device_cookie(SECRET, "user:1", T0, 100)
    assert (
        valid_device(SECRET, cookie, "user:1", T0) is not None,
        valid_device(SECRET, cookie, "user:2", T0),
        valid_device(SECRET, cookie, "user:1", T0 + 100),
        valid_device(OTHER_SECRET, cookie, "user:1", T0),
    ) == (True, None, None, None)


@pytest.mark.parametrize(
    "forge",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),  # MAC tampered
        lambda c: c.split(".")[0] + ".9999999999." + c.split(".")[2],  # expiry extended
        lambda c: "x" * 5000,
        lambda c: "~".join(["junk"] * 10 + [c]),  # valid entry pushed past the entry cap
        lambda c: c + "\x00",
        lambda c: "\ud800",
        lambda c: "",
    ],
)
def test_forged_device_cookies_are_not_valid(forge: Any) -> None:
    """Tampered, extended, oversized, padded and garbage device cookies give no device."""
    cookie = issue_device_cookie(SECRET, "user:1", T0, 100)
    assert valid_device(SECRET, forge(cookie), "user:1", T0) is None


def test_one_browser_keeps_entries_for_several_accounts() -> None:
    """A shared computer: signing in to a second account keeps the first account's entry; the
    account's own older entry is replaced; at most four entries are kept."""
    first = issue_device_cookie(SECRET, "user:1", T0, 100)
    both = issue_device_cookie(SECRET, "user:2", T0, 100, first)
    again = issue_device_cookie(SECRET, "user:1", T0, 100, both)
    many = again
    for n in range(3, 10):
        many = issue_device_cookie(SECRET, f"user:{n}", T0, 100, many)
    assert (
        valid_device(SECRET, both, "user:1", T0) is not None,
        valid_device(SECRET, both, "user:2", T0) is not None,
        len(again.split("~")),
        len(many.split("~")),
    ) == (True, True, 2, 4)


# -- canonical login names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("submitted", "canonical"),
    [
        (" Alice@Example.COM ", "alice@example.com"),
        ("\uff41lice@example.com", "alice@example.com"),
        ("Straße@example.de", "strasse@example.de"),
        ("àlice@example.com", "àlice@example.com"),
        ("a\u0300lice@example.com", "àlice@example.com"),
    ],
)
def test_canonical_login_name(submitted: str, canonical: str) -> None:
    """Trimmed, NFKC-normalised and case-folded: one spelling per account on every database
    (accents are kept: they may be part of a real address)."""
    assert canonical_login_name(submitted) == canonical


@pytest.mark.parametrize(
    "refused",
    [
        "",
        "   ",
        "a\x00b@example.com",
        "alice@example.com\r\nBcc: x",
        "al\u202eice@example.com",
        "al\u200bice@example.com",
        "\ud800@example.com",
        "a b@example.com",
        "a\ue000@example.com",
        "x" * 321,
    ],
)
def test_canonical_login_name_refuses_hostile_characters(refused: str) -> None:
    """NUL, CR/LF, bidi overrides, zero-width, lone surrogates, spaces, private use, empty and
    over-long names are refused with a ValueError (an app's 422)."""
    with pytest.raises(ValueError, match="name"):
        canonical_login_name(refused)


# -- keys -----------------------------------------------------------------------------------


def test_keys_are_hmacs_without_the_email_or_address() -> None:
    """Keys are HMAC-SHA256 hex digests; neither the email nor the address appears in them."""
    keys = throttle_keys(SECRET, "alice@example.com", "203.0.113.7")
    expected = hmac.new(
        SECRET.encode(), b"coatcheck.throttle:acct:alice@example.com", hashlib.sha256
    ).hexdigest()
    text = f"{keys.account} {keys.ip} {keys.identity} {keys.ip_credit}"
    assert (keys.account, "alice" in text, "203.0.113" in text) == (
        f"throttle:acct:{expected}",
        False,
        False,
    )


def test_different_secrets_give_different_keys() -> None:
    """Two deployments with different secrets never share a key."""
    ours = throttle_keys(SECRET, "alice@example.com", "203.0.113.7")
    theirs = throttle_keys(OTHER_SECRET, "alice@example.com", "203.0.113.7")
    assert (ours.account == theirs.account, ours.ip == theirs.ip) == (False, False)


def test_account_and_address_keys_are_separated() -> None:
    """An account spelled like an address does not share the address's key."""
    keys = throttle_keys(SECRET, "203.0.113.7", "203.0.113.7")
    assert keys.account.removeprefix("throttle:acct:") != (keys.ip or "").removeprefix(
        "throttle:ip:"
    )


@pytest.mark.parametrize(
    "spelling",
    [
        "alice@example.com",
        " Alice@Example.COM ",
        "ALICE@EXAMPLE.COM",
        "\uff41\uff4c\uff49\uff43\uff45@example.com",
    ],
)
def test_account_spellings_share_one_key(spelling: str) -> None:
    """Case, surrounding spaces and compatibility forms do not make a fresh count."""
    assert throttle_keys(SECRET, spelling, None).account == (
        throttle_keys(SECRET, "alice@example.com", None).account
    )


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:203.0.113.7", "203.0.113.7", True),
        ("203.0.113.7", "203.0.113.8", False),
        (" 203.0.113.7", "203.0.113.7", True),
        ("testclient", "testclient", True),
        ("testclient", "otherclient", False),
    ],
)
def test_addresses_are_grouped_as_one_subscriber(first: str, second: str, same: bool) -> None:
    """IPv6 addresses in one /64 share a count; IPv4-mapped IPv6 counts as the IPv4 address;
    a value that is not an address is counted as given."""
    a = throttle_keys(SECRET, "alice@example.com", first).ip
    b = throttle_keys(SECRET, "alice@example.com", second).ip
    assert (a == b) is same


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"account_threshold": 0},
        {"ip_threshold": 0},
        {"account_threshold": 2.5},
        {"window": 0},
        {"window": 2 * 24 * 60 * 60},
        {"base_delay": 0},
        {"base_delay": 10, "max_delay": 5},
        {"max_delay": 16 * 60},
        {"device_threshold": 0},
        {"device_lifetime": 401 * 24 * 60 * 60},
    ],
)
def test_unsound_settings_are_refused(settings: dict[str, Any]) -> None:
    """Thresholds below one, windows outside 1 s-24 h and delays out of order fail at start-up."""
    with pytest.raises(ConfigurationError):
        ThrottleConfig(**settings)


def test_refused_decision_error_always_asks_for_at_least_a_second() -> None:
    """Retry-After is never 0, even for a decision built with 0."""
    assert throttled_error(Decision(allowed=False)).headers == (("retry-after", "1"),)


def test_a_refusal_under_one_spelling_pushes_back_the_others(login: Login) -> None:
    """Refused attempts under the usual spelling still count for the account it resolves to,
    so a second spelling found later gets no fresh backoff: 20 refused guesses, then a minute
    later another spelling of the same account is still refused."""
    for _ in range(25):
        login.attempt("ian@example.com", identity="user-1")
    login.now = T0 + 60
    assert login.attempt("\u0131an@example.com", identity="user-1").allowed is False


def test_interleaved_parallel_checks_never_let_more_than_the_threshold_through() -> None:
    """Forty checks from one address running truly in parallel (every attempts hit before any
    credits hit): no more than the 30 free failures go on to a password check."""
    store = MemoryStore()
    keys = throttle_keys(SECRET, None, "203.0.113.7")
    flows = [check(CONFIG, keys, T0) for _ in range(40)]
    attempts_hits = [next(flow) for flow in flows]
    credits_hits = [
        flow.send(store.hit(*op.args())) for flow, op in zip(flows, attempts_hits, strict=True)
    ]
    decisions: list[Decision] = []
    for flow, op in zip(flows, credits_hits, strict=True):
        with pytest.raises(StopIteration) as stop:
            flow.send(store.hit(*op.args()))
        decisions.append(stop.value.value)
    assert sum(d.allowed for d in decisions) <= 30
