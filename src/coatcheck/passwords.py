"""Password hashing: argon2id for every new hash, legacy bcrypt verify, rehash on login.

Rules written here (see ``docs/passwords.md`` for the numbers and the measurements):

- New hashes are argon2id. The default parameters are RFC 9106's second recommended option
  (64 MiB, 3 passes, 4 lanes), well above the OWASP Password Storage Cheat Sheet floor
  (19 MiB, 2 passes, 1 lane, or an equivalent row of its table). A configuration below that floor
  is refused at start-up unless ``allow_weak_parameters`` says it is for tests.
- A password is used exactly as received (OWASP ASVS 5.0 6.2.8): no truncation, no case folding,
  no Unicode normalisation, no trimming. It is refused *before any hashing* with
  :class:`~coatcheck.errors.PasswordError` when it is empty, when its UTF-8 form is longer than
  ``max_bytes`` (so a megabyte "password" costs nothing), or when it cannot be encoded.
  ``min_length`` applies to new passwords only (:meth:`PasswordHasher.hash`).
- :meth:`PasswordHasher.verify` never raises because of a wrong password or an unusable stored
  hash: it answers ``False`` and logs the unusable hash (never the hash or the password).
- bcrypt hashes (``$2a$``, ``$2b$``, ``$2y$``) are verified, never created, and always need a
  rehash. A password over 72 bytes never matches a bcrypt hash: bcrypt reads only the first 72
  bytes, so accepting longer input would let a different password match.
- An unknown account costs the same as a known one: :meth:`PasswordHasher.dummy_verify` runs a
  real argon2 verify, with the current parameters, against a hash of a random value.
- The ``*_async`` methods run the same code in a thread pool owned by the hasher (argon2 and
  bcrypt release the GIL), so the event loop keeps serving other requests. At most
  ``max_concurrency`` hashes run at once across sync and async callers together, which bounds the
  memory spent on hashing to ``max_concurrency * memory_cost`` KiB.
- On Linux the pool's threads run ``pool_nice`` steps below the process's scheduling priority,
  and so do the lane threads argon2 starts from them (a new thread inherits its creator's nice
  value). Hashes still use every idle core, but a thread with a request to serve gets the CPU
  first: a burst of logins no longer starves page reads (issue 9; numbers in
  ``docs/passwords.md``). With ``pool_idle`` they use the ``SCHED_IDLE`` policy instead (only
  cores nothing else wants). The sync methods hash in the caller's thread, at its priority.
- Stored hashes are trusted data: their parameters are not second-guessed (a hash whose
  ``memory_cost`` is larger than the configured one costs that much to verify).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar, TypeVarTuple

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import ConfigurationError, PasswordError

_bcrypt: ModuleType | None
try:
    import bcrypt as _bcrypt
except ImportError:  # optional: only needed to verify legacy hashes (coatcheck[bcrypt])
    _bcrypt = None

__all__ = [
    "BCRYPT_MAX_BYTES",
    "OWASP_ARGON2ID_FLOOR",
    "CheckResult",
    "PasswordConfig",
    "PasswordHasher",
    "check_password",
    "check_password_async",
]

log = logging.getLogger("coatcheck.passwords")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

OWASP_ARGON2ID_FLOOR: tuple[tuple[int, int], ...] = (
    (47_104, 1),
    (19_456, 2),
    (12_288, 3),
    (9_216, 4),
    (7_168, 5),
)
"""The OWASP Password Storage Cheat Sheet's equivalent argon2id minimums, as
``(memory_cost KiB, time_cost)`` pairs with one lane. A configuration passes when it is at or above
one of them in both memory and passes."""

BCRYPT_MAX_BYTES = 72
"""bcrypt reads at most this many bytes of a password; longer passwords never match."""

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_ARGON2_PREFIX = "$argon2"
_SALT_BYTES = 16
_TAG_BYTES = 32
_NIST_MIN_LENGTH = 8
# 64 characters (the NIST SP 800-63B minimum a verifier must allow) of 4-byte UTF-8.
_MIN_MAX_BYTES = 64 * 4
_MAX_NICE = 19  # the lowest priority a Unix nice value expresses


@dataclass(frozen=True, kw_only=True, slots=True)
class PasswordConfig:
    """How passwords are hashed and which passwords are accepted; validated when built."""

    time_cost: int = 3
    """argon2id passes over memory."""
    memory_cost: int = 64 * 1024
    """argon2id memory per hash, in KiB."""
    parallelism: int = 4
    """argon2id lanes (and threads) per hash."""
    min_length: int = 8
    """Fewest characters (code points) a *new* password may have. NIST SP 800-63B rev. 4 asks
    for 15 when the password is the only factor; 8 is its floor when it is one of two."""
    max_bytes: int = 1024
    """Longest password accepted, in UTF-8 bytes; longer input is refused before hashing."""
    max_concurrency: int | None = None
    """Most hashes computed at once by one hasher; ``None`` means the number of CPUs."""
    pool_nice: int = 10
    """How many nice steps (0-19) below the process the async methods' hashing threads run, on
    Linux; 0 leaves them at the process's priority. At 10 the scheduler gives a thread
    serving requests about nine times the CPU of a hashing thread when both want a core, so
    reads stay fast during a login burst, while idle cores still go to hashing."""
    pool_idle: bool = False
    """On Linux, run the async methods' hashing threads under the ``SCHED_IDLE`` policy instead
    of a nice value: they get a core only when no normal thread wants it, and a thread woken to
    serve a request takes the core from them at once."""
    allow_weak_parameters: bool = False
    """Accept argon2 costs below the OWASP floor. Only for test suites, which need cheap hashes."""

    def __post_init__(self) -> None:
        for name in ("time_cost", "memory_cost", "parallelism", "min_length", "max_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, not {value!r}")
        if self.memory_cost < 8 * self.parallelism:
            raise ConfigurationError("argon2 needs memory_cost >= 8 * parallelism (KiB)")
        if not self.allow_weak_parameters and not any(
            self.memory_cost >= memory and self.time_cost >= passes
            for memory, passes in OWASP_ARGON2ID_FLOOR
        ):
            raise ConfigurationError(
                f"argon2id m={self.memory_cost} KiB, t={self.time_cost} is below the OWASP floor "
                "(e.g. m=19456, t=2); set allow_weak_parameters=True only in tests"
            )
        if self.min_length < _NIST_MIN_LENGTH:
            raise ConfigurationError(
                f"min_length must be at least {_NIST_MIN_LENGTH} (NIST SP 800-63B)"
            )
        if self.max_bytes < _MIN_MAX_BYTES:
            raise ConfigurationError(
                f"max_bytes must be at least {_MIN_MAX_BYTES} so that any 64-character password "
                "fits (NIST SP 800-63B)"
            )
        if self.min_length > self.max_bytes:
            raise ConfigurationError("min_length cannot exceed max_bytes")
        if self.max_concurrency is not None and (
            type(self.max_concurrency) is not int or self.max_concurrency < 1
        ):
            raise ConfigurationError("max_concurrency must be a positive integer or None")
        if type(self.pool_nice) is not int or not 0 <= self.pool_nice <= _MAX_NICE:
            raise ConfigurationError(
                f"pool_nice must be an integer from 0 to {_MAX_NICE}, not {self.pool_nice!r}"
            )
        if type(self.pool_idle) is not bool:
            raise ConfigurationError(f"pool_idle must be True or False, not {self.pool_idle!r}")

    @property
    def concurrency(self) -> int:
        """The effective bound on hashes computed at once."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of a login's password check.

    ``new_hash`` is set only when the password matched and its stored hash is outdated (bcrypt,
    or argon2 weaker than the current parameters): store it in place of the old one.
    """

    ok: bool
    new_hash: str | None = None


class PasswordHasher:
    """Hashes new passwords with argon2id and checks passwords against stored hashes.

    Build one per application at start-up and share it: it owns a small thread pool for the
    async methods and pre-computes the hash :meth:`dummy_verify` checks against (which costs one
    hash, once). :meth:`close` releases the pool.
    """

    def __init__(self, config: PasswordConfig | None = None) -> None:
        self.config = config if config is not None else PasswordConfig()
        self._argon2 = argon2.PasswordHasher(
            time_cost=self.config.time_cost,
            memory_cost=self.config.memory_cost,
            parallelism=self.config.parallelism,
            hash_len=_TAG_BYTES,
            salt_len=_SALT_BYTES,
            type=argon2.Type.ID,
        )
        concurrency = self.config.concurrency
        # One bound shared by the sync methods and the pool's threads: memory spent on hashing
        # stays at concurrency * memory_cost whoever calls.
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency,
            thread_name_prefix="coatcheck-password",
            initializer=_lower_thread_priority,
            initargs=(self.config.pool_nice, self.config.pool_idle),
        )
        # A random value nobody knows, hashed with the current parameters: verifying against it
        # costs what verifying a real, current hash costs, and never succeeds.
        self._dummy_hash = self._hash_bytes(secrets.token_bytes(32))

    # -- sync -------------------------------------------------------------------------------

    def hash(self, password: str) -> str:
        """An argon2id hash of a new password, in the PHC string format.

        Raises :class:`~coatcheck.errors.PasswordError`, before any hashing, when the password is
        empty, shorter than ``min_length`` characters or longer than ``max_bytes`` bytes.
        """
        return self._hash_bytes(self._encode(password, new=True))

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (argon2, or legacy bcrypt).

        A wrong password, a malformed or unknown hash, or a bcrypt hash with bcrypt missing all
        give ``False``. Only refused input (empty, over ``max_bytes``) raises
        :class:`~coatcheck.errors.PasswordError`, before any hashing.
        """
        return self._verify_bytes(stored_hash, self._encode(password, new=False))

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` should be replaced by a fresh hash at the next login.

        True for bcrypt and anything not argon2id, and for argon2id weaker than the current
        configuration in memory, passes, salt or tag length. A hash at or above the current
        costs is kept; the lane count does not change what a guess costs an attacker, so a
        different ``parallelism`` alone is no reason to rehash.
        """
        if not isinstance(stored_hash, str) or not stored_hash.startswith(_ARGON2_PREFIX):
            return True
        try:
            stored = argon2.extract_parameters(stored_hash)
        except InvalidHashError:
            return True
        return (
            stored.type is not argon2.Type.ID
            or stored.version < argon2.low_level.ARGON2_VERSION
            or stored.time_cost < self.config.time_cost
            or stored.memory_cost < self.config.memory_cost
            or stored.salt_len < _SALT_BYTES
            or stored.hash_len < _TAG_BYTES
        )

    def dummy_verify(self, password: str) -> None:
        """Spend what a real :meth:`verify` spends, for a login whose account does not exist.

        Refuses the same input as :meth:`verify`, so both paths fail alike.
        """
        self._dummy_verify_bytes(self._encode(password, new=False))

    def check_password(self, stored_hash: str | None, password: str) -> CheckResult:
        """Check a login's password; ``stored_hash=None`` means the account does not exist.

        An unknown account gets a dummy verify (same cost, ``ok=False``). A match on an outdated
        hash returns the replacement hash in ``new_hash``; the rehash ignores ``min_length``, as
        the user already has this password.
        """
        return self._check_bytes(stored_hash, self._encode(password, new=False))

    # -- async: the same code, in the hasher's pool -----------------------------------------

    async def hash_async(self, password: str) -> str:
        """:meth:`hash`, off the event loop."""
        return await self._in_pool(self._hash_bytes, self._encode(password, new=True))

    async def verify_async(self, stored_hash: str, password: str) -> bool:
        """:meth:`verify`, off the event loop."""
        encoded = self._encode(password, new=False)
        return await self._in_pool(self._verify_bytes, stored_hash, encoded)

    async def dummy_verify_async(self, password: str) -> None:
        """:meth:`dummy_verify`, off the event loop."""
        await self._in_pool(self._dummy_verify_bytes, self._encode(password, new=False))

    async def check_password_async(self, stored_hash: str | None, password: str) -> CheckResult:
        """:meth:`check_password`, off the event loop."""
        encoded = self._encode(password, new=False)
        return await self._in_pool(self._check_bytes, stored_hash, encoded)

    def close(self) -> None:
        """Stop the pool; queued async calls are cancelled. The sync methods keep working."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals --------------------------------------------------------------------------

    async def _in_pool(self, function: Callable[[*Ts], T], *args: *Ts) -> T:
        # Input was checked on the loop already, so refused passwords never wait in the queue.
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def _encode(self, password: str, *, new: bool) -> bytes:
        if not isinstance(password, str):
            raise TypeError(f"a password is a str, not {type(password).__name__}")
        if not password:
            raise PasswordError("the password is empty")
        limit = self.config.max_bytes
        # Every character is at least one byte: a long str is refused before it is encoded.
        if len(password) > limit:
            raise PasswordError(f"the password is longer than {limit} bytes")
        try:
            encoded = password.encode("utf-8")
        except UnicodeEncodeError:
            raise PasswordError("the password is not valid text") from None
        if len(encoded) > limit:
            raise PasswordError(f"the password is longer than {limit} bytes")
        if new and len(password) < self.config.min_length:
            raise PasswordError(
                f"the password must be at least {self.config.min_length} characters"
            )
        return encoded

    def _hash_bytes(self, encoded: bytes) -> str:
        with self._slots:
            return self._argon2.hash(encoded)

    def _verify_bytes(self, stored_hash: str, encoded: bytes) -> bool:
        if not isinstance(stored_hash, str):
            return self._unusable(encoded, "the stored password hash is not a str")
        if stored_hash.startswith(_BCRYPT_PREFIXES):
            return self._verify_bcrypt(stored_hash, encoded)
        if not stored_hash.startswith(_ARGON2_PREFIX):
            return self._unusable(encoded, "the stored password hash has an unknown format")
        try:
            with self._slots:
                return self._argon2.verify(stored_hash, encoded)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            return self._unusable(encoded, "the stored argon2 hash is malformed")

    def _verify_bcrypt(self, stored_hash: str, encoded: bytes) -> bool:
        if len(encoded) > BCRYPT_MAX_BYTES:
            # bcrypt would compare only the first 72 bytes: refuse rather than match a password
            # that merely starts like the right one.
            return False
        if _bcrypt is None:
            log.error(
                "a bcrypt password hash needs the bcrypt package: pip install coatcheck[bcrypt]"
            )
            return False
        try:
            with self._slots:
                return bool(_bcrypt.checkpw(encoded, stored_hash.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            log.warning("the stored bcrypt hash is malformed")
            return False

    def _unusable(self, encoded: bytes, reason: str) -> bool:
        log.warning("%s; the password check fails", reason)
        # Pay the usual price anyway, so a broken record does not stand out by its speed.
        self._dummy_verify_bytes(encoded)
        return False

    def _dummy_verify_bytes(self, encoded: bytes) -> None:
        try:
            with self._slots:
                self._argon2.verify(self._dummy_hash, encoded)
        except VerifyMismatchError:
            pass

    def _check_bytes(self, stored_hash: str | None, encoded: bytes) -> CheckResult:
        if stored_hash is None:
            self._dummy_verify_bytes(encoded)
            return CheckResult(ok=False)
        if not self._verify_bytes(stored_hash, encoded):
            return CheckResult(ok=False)
        if not self.needs_rehash(stored_hash):
            return CheckResult(ok=True)
        return CheckResult(ok=True, new_hash=self._hash_bytes(encoded))


def _lower_thread_priority(steps: int, idle: bool = False) -> None:
    """Lower the calling thread's scheduling priority by ``steps`` nice steps, or to the
    ``SCHED_IDLE`` policy when ``idle`` (Linux only; where the OS refuses ``SCHED_IDLE``, the
    nice steps are used instead).

    On Linux a nice value belongs to a thread and ``setpriority(PRIO_PROCESS, tid)`` changes
    just that thread; elsewhere it would change the whole process, so nothing is done there.
    Raising a priority back needs privileges: this is only ever called in the pool's own threads,
    which live as long as the pool and serve nothing but hashes.
    """
    if not sys.platform.startswith("linux"):
        return
    thread_id = threading.get_native_id()
    if idle:
        try:
            os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError as exc:
            log.warning("could not move the password hashing threads to SCHED_IDLE: %s", exc)
    if steps == 0:
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(_MAX_NICE, current + steps))
    except OSError as exc:  # a sandbox may forbid it: hash at the normal priority then
        log.warning("could not lower the password hashing threads' priority: %s", exc)


def check_password(hasher: PasswordHasher, stored_hash: str | None, password: str) -> CheckResult:
    """:meth:`PasswordHasher.check_password`, spelled as a function."""
    return hasher.check_password(stored_hash, password)


async def check_password_async(
    hasher: PasswordHasher, stored_hash: str | None, password: str
) -> CheckResult:
    """:meth:`PasswordHasher.check_password_async`, spelled as a function."""
    return await hasher.check_password_async(stored_hash, password)
