from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import argon2
import bcrypt
import pytest

from coatcheck import passwords
from coatcheck.errors import ConfigurationError, PasswordError
from coatcheck.passwords import (
    OWASP_ARGON2ID_FLOOR,
    CheckResult,
    PasswordConfig,
    PasswordHasher,
    check_password,
    check_password_async,
)

PASSWORD = "correct horse battery staple"
_BCRYPT_SAMPLE = "$2b$04$jxtL1wCCTxcaGVkdgNNmdOo1eywQREjFaXbdtm3I/HjcSOpeJSgOC"
# Cheap costs: these tests are about behaviour, not about the cost of a hash.
CHEAP = PasswordConfig(time_cost=1, memory_cost=64, parallelism=1, allow_weak_parameters=True)
WEAKER = PasswordConfig(time_cost=1, memory_cost=32, parallelism=1, allow_weak_parameters=True)
STRONGER = PasswordConfig(time_cost=2, memory_cost=128, parallelism=1, allow_weak_parameters=True)


def _make(config: PasswordConfig = CHEAP) -> Iterator[PasswordHasher]:
    hasher = PasswordHasher(config)
    yield hasher
    hasher.close()


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    yield from _make()


@pytest.fixture
def forbid_hashing(hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once ``hasher`` is built, any argon2 or bcrypt work fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("hashing ran for input that should have been refused first")

    monkeypatch.setattr(argon2.PasswordHasher, "hash", refuse)
    monkeypatch.setattr(argon2.PasswordHasher, "verify", refuse)
    monkeypatch.setattr(bcrypt, "checkpw", refuse)


def _bcrypt_hash(password: bytes, prefix: str = "$2b$") -> str:
    encoded = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode("ascii")
    return prefix + encoded[len("$2b$") :]


# -- hashing and verifying ------------------------------------------------------------------


def test_hash_then_verify_round_trips(hasher: PasswordHasher) -> None:
    """A password verifies against its own hash."""
    assert hasher.verify(hasher.hash(PASSWORD), PASSWORD) is True


def test_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    """A different password, even one differing only in case or a trailing space, is refused."""
    stored = hasher.hash(PASSWORD)
    results = [
        hasher.verify(stored, p) for p in ("wrong password", PASSWORD.upper(), PASSWORD + " ")
    ]
    assert results == [False, False, False]


def test_each_hash_is_salted(hasher: PasswordHasher) -> None:
    """Hashing the same password twice gives two different hashes."""
    assert hasher.hash(PASSWORD) != hasher.hash(PASSWORD)


def test_default_parameters_are_argon2id_at_or_above_the_owasp_floor() -> None:
    """The default configuration hashes with argon2id at or above an OWASP minimum row."""
    for hasher in _make(PasswordConfig()):
        params = argon2.extract_parameters(hasher.hash(PASSWORD))
        floor_met = any(
            params.memory_cost >= memory and params.time_cost >= passes
            for memory, passes in OWASP_ARGON2ID_FLOOR
        )
        assert (
            params.type,
            params.version,
            params.salt_len,
            params.hash_len,
            floor_met,
        ) == (argon2.Type.ID, 19, 16, 32, True)


def test_configured_parameters_are_the_ones_in_the_hash(hasher: PasswordHasher) -> None:
    """The encoded hash carries exactly the configured time, memory and lanes."""
    params = argon2.extract_parameters(hasher.hash(PASSWORD))
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 64, 1)


@pytest.mark.parametrize(
    ("memory_cost", "time_cost"), [(19_455, 2), (19_456, 1), (7_167, 10), (46 * 1024 - 1, 1)]
)
def test_costs_below_the_owasp_floor_are_refused(memory_cost: int, time_cost: int) -> None:
    """A configuration weaker than every OWASP row fails at start-up."""
    with pytest.raises(ConfigurationError, match="OWASP"):
        PasswordConfig(memory_cost=memory_cost, time_cost=time_cost, parallelism=1)


@pytest.mark.parametrize(
    "settings",
    [
        {"min_length": 7},
        {"max_bytes": 255},
        {"time_cost": 0},
        {"memory_cost": 8, "parallelism": 2, "allow_weak_parameters": True},
        {"max_concurrency": 0},
        {"min_length": 300, "max_bytes": 256},
        {"parallelism": True},
        {"pool_nice": -1},
        {"pool_nice": 20},
        {"pool_nice": True},
        {"pool_idle": 1},
        {"pool_idle": "yes"},
    ],
)
def test_unsound_settings_are_refused(settings: dict[str, Any]) -> None:
    """Lengths below NIST's minimums and impossible argon2 costs fail at start-up."""
    with pytest.raises(ConfigurationError):
        PasswordConfig(**settings)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=64,t=1,p=1$bm90IGEgc2FsdA$",
        "$argon2id$v=19$m=64,t=1,p=1$!!!$!!!",
        "$argon2id$v=19$m=x,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
        "$2b$04$garbage",
        "$2x$04$jxtL1wCCTxcaGVkdgNNmdOo1eywQREjFaXbdtm3I/HjcSOpeJSgOC",
        "$pbkdf2-sha256$29000$salt$hash",
    ],
)
def test_malformed_or_unknown_hash_gives_false(hasher: PasswordHasher, stored: str) -> None:
    """A stored hash that cannot be used answers False instead of raising."""
    assert hasher.verify(stored, PASSWORD) is False


def test_unusable_hash_is_logged_without_the_hash_or_password(
    hasher: PasswordHasher, caplog: pytest.LogCaptureFixture
) -> None:
    """An unusable hash leaves a log line that names neither the hash nor the password."""
    with caplog.at_level(logging.WARNING, logger="coatcheck.passwords"):
        hasher.verify("$argon2id$v=19$secretish", PASSWORD)
    assert (
        len(caplog.records),
        "secretish" in caplog.text,
        PASSWORD in caplog.text,
    ) == (1, False, False)


# -- input refused before hashing -----------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["", "x" * 1025, "é" * 513, "\U0001f600" * 257, "x" * 10_000_000, "bad \udcff surrogate"],
)
@pytest.mark.usefixtures("forbid_hashing")
def test_refused_input_raises_before_any_hashing(hasher: PasswordHasher, password: str) -> None:
    """Empty, over-long (counted in UTF-8 bytes) or unencodable input raises without hashing."""
    stored = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
    calls: list[Callable[[], object]] = [
        lambda: hasher.hash(password),
        lambda: hasher.verify(stored, password),
        lambda: hasher.verify(_BCRYPT_SAMPLE, password),
        lambda: hasher.dummy_verify(password),
        lambda: hasher.check_password(None, password),
    ]
    assert [_raises_password_error(call) for call in calls] == [True] * len(calls)


def _raises_password_error(call: Callable[[], object]) -> bool:
    try:
        call()
    except PasswordError:
        return True
    return False


def test_password_must_be_a_str(hasher: PasswordHasher) -> None:
    """Bytes are not silently accepted as a password."""
    with pytest.raises(TypeError):
        hasher.hash(PASSWORD.encode())  # type: ignore[arg-type]


def test_stored_hash_that_is_not_a_str_gives_false(hasher: PasswordHasher) -> None:
    """A stored hash of the wrong type (bytes from a driver) answers False."""
    assert hasher.verify(hasher.hash(PASSWORD).encode(), PASSWORD) is False  # type: ignore[arg-type]


@pytest.mark.usefixtures("forbid_hashing")
async def test_async_refused_input_raises_before_any_hashing(hasher: PasswordHasher) -> None:
    """The async methods refuse over-long input too, before anything reaches the pool."""
    with pytest.raises(PasswordError):
        await hasher.verify_async(_BCRYPT_SAMPLE, "x" * 1025)
    with pytest.raises(PasswordError):
        await hasher.check_password_async(None, "x" * 1025)


def test_password_at_the_byte_cap_is_accepted(hasher: PasswordHasher) -> None:
    """A password of exactly ``max_bytes`` UTF-8 bytes hashes and verifies."""
    password = "é" * 512
    assert hasher.verify(hasher.hash(password), password) is True


def test_min_length_applies_to_new_passwords_only(hasher: PasswordHasher) -> None:
    """A new 7-character password is refused; an existing one still verifies."""
    legacy = _bcrypt_hash(b"hunter2")
    with pytest.raises(PasswordError, match="at least 8"):
        hasher.hash("hunter2")
    assert hasher.verify(legacy, "hunter2") is True


def test_passwords_are_not_normalised(hasher: PasswordHasher) -> None:
    """Passwords are compared exactly as received: composed and decomposed forms differ."""
    stored = hasher.hash("caf\u00e9-latte")
    assert hasher.verify(stored, "cafe\u0301-latte") is False


# -- needs_rehash ---------------------------------------------------------------------------


def test_current_hash_needs_no_rehash(hasher: PasswordHasher) -> None:
    """A hash made with the current parameters is kept."""
    assert hasher.needs_rehash(hasher.hash(PASSWORD)) is False


def test_weaker_argon2_needs_rehash(hasher: PasswordHasher) -> None:
    """Less memory or fewer passes than configured asks for a rehash."""
    for weak in _make(WEAKER):
        assert hasher.needs_rehash(weak.hash(PASSWORD)) is True


def test_stronger_argon2_needs_no_rehash(hasher: PasswordHasher) -> None:
    """A hash stronger than the current configuration is not downgraded."""
    for strong in _make(STRONGER):
        assert hasher.needs_rehash(strong.hash(PASSWORD)) is False


def test_other_argon2_variants_need_rehash(hasher: PasswordHasher) -> None:
    """argon2i hashes still verify but are replaced by argon2id."""
    argon2i = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=argon2.Type.I)
    stored = argon2i.hash(PASSWORD)
    assert (hasher.verify(stored, PASSWORD), hasher.needs_rehash(stored)) == (True, True)


@pytest.mark.parametrize("stored", ["", "garbage", "$argon2id$broken", _BCRYPT_SAMPLE])
def test_unusable_or_legacy_hashes_need_rehash(hasher: PasswordHasher, stored: str) -> None:
    """Anything that is not a current argon2id hash asks for a rehash."""
    assert hasher.needs_rehash(stored) is True


# -- legacy bcrypt --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_hash_verifies_and_needs_rehash(hasher: PasswordHasher, prefix: str) -> None:
    """Legacy bcrypt hashes of every common prefix verify and are marked for rehash."""
    stored = _bcrypt_hash(PASSWORD.encode(), prefix)
    assert (
        hasher.verify(stored, PASSWORD),
        hasher.verify(stored, "wrong password"),
        hasher.needs_rehash(stored),
    ) == (True, False, True)


def test_bcrypt_refuses_passwords_over_72_bytes(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password longer than 72 bytes never matches a bcrypt hash, even with the right first 72
    bytes and even with a bcrypt that truncates silently (as bcrypt < 5 does)."""
    first_72 = "a" * 72
    stored = _bcrypt_hash(first_72.encode())
    real = bcrypt.checkpw

    def truncating_checkpw(password: bytes, hashed: bytes) -> bool:
        return real(password[:72], hashed)

    monkeypatch.setattr(bcrypt, "checkpw", truncating_checkpw)
    assert (
        hasher.verify(stored, first_72),
        hasher.verify(stored, first_72 + "anything after the cut"),
    ) == (True, False)


def test_bcrypt_hash_without_bcrypt_installed_gives_false(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the bcrypt package a bcrypt hash answers False and says what to install."""
    stored = _bcrypt_hash(PASSWORD.encode())
    monkeypatch.setattr(passwords, "_bcrypt", None)
    with caplog.at_level(logging.ERROR, logger="coatcheck.passwords"):
        result = hasher.verify(stored, PASSWORD)
    assert (result, "coatcheck[bcrypt]" in caplog.text) == (False, True)


# -- check_password (login) -----------------------------------------------------------------


def test_check_password_on_a_current_hash_has_no_new_hash(hasher: PasswordHasher) -> None:
    """A match on a current hash is ok with nothing to store."""
    assert hasher.check_password(hasher.hash(PASSWORD), PASSWORD) == CheckResult(ok=True)


def test_check_password_wrong_password(hasher: PasswordHasher) -> None:
    """A wrong password is not ok and gives no new hash, even on an outdated hash."""
    stored = _bcrypt_hash(PASSWORD.encode())
    assert hasher.check_password(stored, "wrong password") == CheckResult(ok=False)


def test_check_password_upgrades_bcrypt(hasher: PasswordHasher) -> None:
    """A match on a bcrypt hash returns a current argon2id hash of the same password."""
    result = hasher.check_password(_bcrypt_hash(PASSWORD.encode()), PASSWORD)
    assert result.new_hash is not None
    assert (
        result.ok,
        hasher.verify(result.new_hash, PASSWORD),
        hasher.needs_rehash(result.new_hash),
    ) == (True, True, False)


def test_check_password_upgrades_weak_argon2(hasher: PasswordHasher) -> None:
    """A match on a weaker argon2 hash returns a hash with the current parameters."""
    for weak in _make(WEAKER):
        result = hasher.check_password(weak.hash(PASSWORD), PASSWORD)
    assert result.new_hash is not None
    params = argon2.extract_parameters(result.new_hash)
    assert (result.ok, params.memory_cost, params.time_cost) == (True, 64, 1)


def test_check_password_rehash_ignores_min_length(hasher: PasswordHasher) -> None:
    """A short legacy password still gets upgraded: the user already has it."""
    result = hasher.check_password(_bcrypt_hash(b"hunter2"), "hunter2")
    assert (result.ok, result.new_hash is not None) == (True, True)


def test_check_password_function_spelling(hasher: PasswordHasher) -> None:
    """``check_password(hasher, ...)`` answers like the method."""
    stored = hasher.hash(PASSWORD)
    assert check_password(hasher, stored, PASSWORD) == CheckResult(ok=True)


# -- unknown accounts cost the same ---------------------------------------------------------


@pytest.fixture
def verify_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every stored hash argon2 is asked to verify, in order (the real verify still runs)."""
    seen: list[str] = []
    real = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, stored: str | bytes, password: str | bytes) -> Any:
        seen.append(stored if isinstance(stored, str) else stored.decode())
        return real(self, stored, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    return seen


def test_dummy_verify_runs_a_real_argon2_verify_with_current_parameters(
    hasher: PasswordHasher, verify_spy: list[str]
) -> None:
    """dummy_verify runs one argon2 verify against a hash made with the current parameters."""
    hasher.dummy_verify(PASSWORD)
    current = argon2.extract_parameters(hasher.hash(PASSWORD))
    assert [argon2.extract_parameters(h) for h in verify_spy] == [current]


def test_check_password_for_unknown_account_runs_dummy_verify(
    hasher: PasswordHasher, verify_spy: list[str]
) -> None:
    """A login for an account that does not exist still runs one argon2 verify and fails."""
    result = hasher.check_password(None, PASSWORD)
    assert (result, len(verify_spy)) == (CheckResult(ok=False), 1)


def test_unusable_hash_still_pays_for_a_verify(
    hasher: PasswordHasher, verify_spy: list[str]
) -> None:
    """A record with a broken hash costs an argon2 verify like any other failed login."""
    hasher.verify("garbage", PASSWORD)
    assert len(verify_spy) == 1


# -- async ----------------------------------------------------------------------------------


async def test_async_methods_match_the_sync_ones(hasher: PasswordHasher) -> None:
    """The async methods give the same answers as the sync ones."""
    stored = await hasher.hash_async(PASSWORD)
    legacy = _bcrypt_hash(PASSWORD.encode())
    upgraded = await check_password_async(hasher, legacy, PASSWORD)
    results = (
        await hasher.verify_async(stored, PASSWORD),
        await hasher.verify_async(stored, "wrong password"),
        await hasher.check_password_async(stored, PASSWORD),
        await hasher.check_password_async(None, PASSWORD),
        upgraded.ok and upgraded.new_hash is not None,
    )
    await hasher.dummy_verify_async(PASSWORD)
    assert results == (True, False, CheckResult(ok=True), CheckResult(ok=False), True)


async def test_async_verifies_are_bounded_and_keep_the_loop_responsive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """16 concurrent verify_async calls run at most max_concurrency at once, and a ticker on the
    event loop keeps ticking meanwhile."""
    limit = 3
    config = PasswordConfig(
        time_cost=1, memory_cost=1024, parallelism=1, max_concurrency=limit,
        allow_weak_parameters=True,
    )  # fmt: skip
    running = 0
    peak = 0
    lock = threading.Lock()
    real = argon2.PasswordHasher.verify

    def counting_verify(self: argon2.PasswordHasher, stored: Any, password: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)  # long enough for calls to overlap if nothing bounded them
            return real(self, stored, password)
        finally:
            with lock:
                running -= 1

    for hasher in _make(config):
        stored = hasher.hash(PASSWORD)
        monkeypatch.setattr(argon2.PasswordHasher, "verify", counting_verify)
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker(done: asyncio.Event = done, gaps: list[float] = gaps) -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        results = await asyncio.gather(*(hasher.verify_async(stored, PASSWORD) for _ in range(16)))
        done.set()
        await ticking
    assert (results, peak) == ([True] * 16, limit)
    assert max(gaps) < 0.5


def test_sync_callers_share_the_concurrency_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads calling the sync methods directly are held to the same bound as the pool."""
    limit = 2
    config = PasswordConfig(
        time_cost=1, memory_cost=64, parallelism=1, max_concurrency=limit,
        allow_weak_parameters=True,
    )  # fmt: skip
    running = 0
    peak = 0
    lock = threading.Lock()
    real = argon2.PasswordHasher.hash

    def counting_hash(self: argon2.PasswordHasher, password: Any, **kwargs: Any) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)
            return real(self, password, **kwargs)
        finally:
            with lock:
                running -= 1

    for hasher in _make(config):
        monkeypatch.setattr(argon2.PasswordHasher, "hash", counting_hash)
        threads = [threading.Thread(target=hasher.hash, args=(PASSWORD,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert peak == limit


# -- hashing threads at a lower priority ----------------------------------------------------

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature"
)


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _policy_of_this_thread() -> int:
    return os.sched_getscheduler(threading.get_native_id())


def _nice_while_hashing(
    config: PasswordConfig,
    monkeypatch: pytest.MonkeyPatch,
    *,
    use_async: bool,
    probe: Callable[[], int] = _nice_of_this_thread,
) -> list[int]:
    """Verify a password; ``probe()`` (the nice value) in the hashing thread and in a thread it
    starts."""
    seen: list[int] = []
    real = argon2.PasswordHasher.verify

    def observing_verify(self: argon2.PasswordHasher, stored: Any, password: Any) -> Any:
        seen.append(probe())
        # argon2 starts one thread per lane from the hashing thread: a thread started here
        # stands for them.
        child = threading.Thread(target=lambda: seen.append(probe()))
        child.start()
        child.join()
        return real(self, stored, password)

    hasher = PasswordHasher(config)
    try:
        stored = hasher.hash(PASSWORD)
        monkeypatch.setattr(argon2.PasswordHasher, "verify", observing_verify)
        if use_async:
            assert asyncio.run(hasher.verify_async(stored, PASSWORD)) is True
        else:
            assert hasher.verify(stored, PASSWORD) is True
    finally:
        hasher.close()
    return seen


@linux_only
def test_async_hashing_threads_run_pool_nice_steps_below_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool's threads, and threads they start (argon2's lanes), run pool_nice steps lower."""
    config = PasswordConfig(**_cheap_settings(), pool_nice=5)
    base = _nice_of_this_thread()
    seen = _nice_while_hashing(config, monkeypatch, use_async=True)
    expected = min(19, base + 5)
    assert (seen, _nice_of_this_thread()) == ([expected, expected], base)


@linux_only
def test_pool_nice_zero_leaves_hashing_at_the_process_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With pool_nice=0 the pool's threads keep the priority of the thread that made them."""
    base = _nice_of_this_thread()
    seen = _nice_while_hashing(
        PasswordConfig(**_cheap_settings(), pool_nice=0), monkeypatch, use_async=True
    )
    assert seen == [base, base]


@linux_only
def test_sync_methods_hash_at_the_callers_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync methods never lower the priority of the thread that calls them."""
    base = _nice_of_this_thread()
    seen = _nice_while_hashing(CHEAP, monkeypatch, use_async=False)
    assert (seen, _nice_of_this_thread()) == ([base, base], base)


@linux_only
def test_pool_idle_hashes_under_sched_idle_and_only_in_the_pool() -> None:
    """With pool_idle the pool's threads and their lane threads run under SCHED_IDLE (a core
    only when nothing else wants it); the sync methods and the caller keep their policy."""
    config = PasswordConfig(**_cheap_settings(), pool_idle=True)
    normal = _policy_of_this_thread()
    with pytest.MonkeyPatch.context() as patch:
        in_pool = _nice_while_hashing(config, patch, use_async=True, probe=_policy_of_this_thread)
    with pytest.MonkeyPatch.context() as patch:
        in_caller = _nice_while_hashing(
            config, patch, use_async=False, probe=_policy_of_this_thread
        )
    assert (in_pool, in_caller, _policy_of_this_thread()) == (
        [os.SCHED_IDLE, os.SCHED_IDLE],
        [normal, normal],
        normal,
    )


@linux_only
def test_a_refused_sched_idle_falls_back_to_pool_nice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the OS refuses SCHED_IDLE, the pool says so and lowers its nice value instead."""

    def refuse(*args: Any) -> None:
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(passwords.os, "sched_setscheduler", refuse)
    base = _nice_of_this_thread()
    with caplog.at_level(logging.WARNING, logger="coatcheck.passwords"):
        seen = _nice_while_hashing(
            PasswordConfig(**_cheap_settings(), pool_idle=True, pool_nice=3),
            monkeypatch,
            use_async=True,
        )
    assert (seen, "SCHED_IDLE" in caplog.text) == ([min(19, base + 3)] * 2, True)


def test_a_refused_priority_change_is_logged_and_hashing_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the OS refuses to lower the priority, the pool logs it once per thread and hashes."""

    def refuse(*args: Any) -> None:
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(passwords.sys, "platform", "linux")
    monkeypatch.setattr(passwords.os, "setpriority", refuse)
    with caplog.at_level(logging.WARNING, logger="coatcheck.passwords"):
        for hasher in _make(PasswordConfig(**_cheap_settings(), max_concurrency=1)):
            stored = hasher.hash(PASSWORD)
            ok = asyncio.run(hasher.verify_async(stored, PASSWORD))
    assert (ok, "could not lower" in caplog.text) == (True, True)


def test_no_priority_change_outside_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """Elsewhere setpriority would renice the whole process, so the pool leaves it alone."""
    calls: list[Any] = []
    monkeypatch.setattr(passwords.sys, "platform", "darwin")
    monkeypatch.setattr(passwords.os, "setpriority", lambda *args: calls.append(args))
    for hasher in _make():
        stored = hasher.hash(PASSWORD)
        ok = asyncio.run(hasher.verify_async(stored, PASSWORD))
    assert (ok, calls) == (True, [])


def _cheap_settings() -> dict[str, Any]:
    return {
        "time_cost": 1,
        "memory_cost": 64,
        "parallelism": 1,
        "allow_weak_parameters": True,
    }
