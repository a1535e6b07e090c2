"""The errors coatcheck raises.

::

    CoatcheckError                 root of everything coatcheck raises on purpose
    ├── ConfigurationError         a setting that cannot be secure or work; raised at start-up
    ├── StoreError                 the store could not do it now: answered 503 + Retry-After
    │   ├── StoreUnavailableError  unreachable, failing, or slower than store_timeout
    │   └── ConflictError          a conditional write kept losing after bounded retries
    ├── PasswordError              a password was refused before hashing (too long, empty) (422)
    ├── SessionDataError           session data does not match SessionConfig.data_schema
    └── HTTPError                  an error with an HTTP status for the middleware to answer with
        ├── SessionTooLargeError   a sealed session would not fit in one cookie (413)
        └── NotSupportedError      the store cannot do this (listing sealed sessions...) (501)

Catch :class:`StoreError` to handle every "try again later" (both kinds carry ``retry_after``);
``tests/test_public_api.py`` checks that this drawing is the class tree and that every error
here is raised somewhere in coatcheck.

A forged, expired or malformed token is *not* an exception: it yields an anonymous session (cookie)
or a 401 (bearer), plus a log line.
"""

from __future__ import annotations


class CoatcheckError(Exception):
    """Root of every error coatcheck raises on purpose."""

    status_code: int = 500


class ConfigurationError(CoatcheckError, ValueError):
    """A setting that cannot be secure or cannot work, caught at start-up."""


class StoreError(CoatcheckError):
    """The session store could not do what was asked, for now: the middleware answers 503 with
    ``Retry-After: retry_after`` (the managers set ``SessionConfig.retry_after``)."""

    status_code = 503
    retry_after: int = 5


class StoreUnavailableError(StoreError):
    """The store is unreachable, failed, or was slower than ``store_timeout``."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConflictError(StoreError):
    """A conditional write lost to concurrent requests more times than the retry bound allows
    (``max_write_retries``), or a freshly generated id was already taken: trying again later
    most likely succeeds."""

    retry_after = 1


class PasswordError(CoatcheckError, ValueError):
    """A password was refused before hashing (empty or over the length cap)."""

    status_code = 422


class SessionDataError(CoatcheckError, ValueError):
    """Session data does not match the configured ``data_schema`` (raised at commit: a bug in the
    app; stored data that does not match is never raised on, it gives a fresh session)."""


class HTTPError(CoatcheckError):
    """An error that maps to an HTTP response; the middleware and helpers answer with it."""

    def __init__(
        self,
        status_code: int,
        body: dict[str, str],
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{status_code} {body}")
        self.status_code = status_code
        self.body = body
        self.headers = headers


class SessionTooLargeError(HTTPError):
    """A sealed session would need a cookie over the 4096 bytes every browser keeps.

    Raised when the session is committed; the middleware answers 413 ``session_too_large``
    instead of the app's response and sets no cookie, so the browser keeps its previous session.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            413,
            {
                "error": "session_too_large",
                "detail": f"the sealed session cookie would be {size} bytes; the limit is {limit}",
            },
        )
        self.size = size
        self.limit = limit


class NotSupportedError(HTTPError):
    """The configured store cannot do this (e.g. list the sessions kept in sealed cookies).

    Answered 501 ``not_supported`` with the reason when raised while handling a request.
    """

    def __init__(self, message: str) -> None:
        super().__init__(501, {"error": "not_supported", "detail": message})
        self.message = message

    def __str__(self) -> str:
        return self.message
