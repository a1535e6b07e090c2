"""Counting a store's sessions at one moment: what ``coatcheck stats`` and ``admin.stats()`` show.

Rules of the count, the same on every store:

- A record is *live* while its stored ``expires_at`` is after ``now``, and *expired* (waiting
  for ``purge_expired``) from then on: exactly the line ``purge_expired`` draws. Stores hold no
  policy, so a timeout shortened in the configuration since a record was written is not applied
  here (opening that session would find it expired).
- A live record is *signed in* when it has a user id; *users* counts the distinct ones.
- Its transport is read from the record's JSON text with one regular expression,
  :data:`TRANSPORT_TAIL`, which SQL databases run themselves (so the SQL stores answer with one
  aggregate query, parsing no JSON) and the other stores run in Python. It matches the *end* of
  the JSON that :func:`~coatcheck._core.record.record_to_json` writes (keys sorted, no spaces,
  ASCII only): ``"transport":"bearer","user_agent":"…","user_id":…,"version":N}``. Why that is
  exact: the sequence ``transport":"`` holds quotes that no backslash precedes, so they are
  structural (inside a JSON string every quote is escaped); the string patterns then follow the
  real strings quote for quote, so the match ends at the closing brace of the top-level object
  only if the matched keys belong to it. A ``"transport"`` key inside ``data`` or ``flash`` (which
  sort before it) cannot be followed by the top-level tail. A record that is not what
  ``record_to_json`` writes matches neither transport and is counted in neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .record import Transport

# A JSON string as record_to_json writes it (ASCII, escapes as backslash pairs), in the syntax
# PostgreSQL, MySQL/MariaDB, SQLite (Python's re) all read alike: no (?:), no \d, no lazy
# quantifiers. The unrolled form ([^"\\]*(\\.[^"\\]*)*) never backtracks between alternatives.
_JSON_STRING = r'"[^"\\]*(\\.[^"\\]*)*"'
TRANSPORT_TAIL = (
    r'"transport":"{transport}","user_agent":'
    + _JSON_STRING
    + r',"user_id":(null|'
    + _JSON_STRING
    + r'),"version":[0-9]+[}]$'
)
"""The regular expression (with ``{transport}`` to fill in) that matches a stored record's JSON
when its transport is that one; see the module's rules."""

TRANSPORTS: tuple[Transport, ...] = ("cookie", "bearer")


def transport_pattern(transport: Transport) -> str:
    """:data:`TRANSPORT_TAIL` for one transport, for a database's regular expression operator."""
    return TRANSPORT_TAIL.replace("{transport}", transport)


_PATTERNS = tuple((transport, re.compile(transport_pattern(transport))) for transport in TRANSPORTS)


def transport_of(record_json: str | bytes) -> Transport | None:
    """The transport a stored record's JSON text names, or ``None`` when the text is not a record
    as :func:`~coatcheck._core.record.record_to_json` writes one."""
    text = record_json.decode("utf-8", "replace") if isinstance(record_json, bytes) else record_json
    for transport, pattern in _PATTERNS:
        if pattern.search(text) is not None:
            return transport
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStats:
    """How many sessions a store holds at one moment (never who they are).

    ``live``: stored sessions not expired; ``signed_in``: those with a user; ``users``: distinct
    users among them; ``cookie`` and ``bearer``: live sessions by transport (a record that is not
    as coatcheck writes it counts in neither); ``expired``: sessions past their deadline, still
    stored until ``purge_expired`` deletes them (Redis's own TTLs also drop them about a minute
    later).
    """

    live: int
    signed_in: int
    users: int
    cookie: int
    bearer: int
    expired: int

    @property
    def anonymous(self) -> int:
        """Live sessions without a user (an anonymous cart, a flash message)."""
        return self.live - self.signed_in


class Tally:
    """Counts records one at a time into a :class:`SessionStats` (for stores that walk their
    records: memory, Redis); SQL counts in the database by the same rules."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._live = self._signed_in = self._expired = 0
        self._transports = dict.fromkeys(TRANSPORTS, 0)
        self._users: set[str] = set()

    def add(self, user_id: str | None, expires_at: float, record_json: str | bytes) -> None:
        """Count one stored record, from its indexed user id and deadline and its JSON text."""
        if expires_at <= self.now:
            self._expired += 1
            return
        self._live += 1
        if user_id is not None:
            self._signed_in += 1
            self._users.add(user_id)
        transport = transport_of(record_json)
        if transport is not None:
            self._transports[transport] += 1

    def add_all(self, rows: Iterable[tuple[str | None, float, str | bytes]]) -> Tally:
        for row in rows:
            self.add(*row)
        return self

    def result(self) -> SessionStats:
        return SessionStats(
            live=self._live,
            signed_in=self._signed_in,
            users=len(self._users),
            cookie=self._transports["cookie"],
            bearer=self._transports["bearer"],
            expired=self._expired,
        )
