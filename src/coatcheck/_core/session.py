"""The Session object an application reads and writes during one request.

It is a mutable mapping over JSON values, plus the user id, flash messages and a few lifecycle
requests (:meth:`Session.regenerate`, :meth:`Session.destroy`). It performs no I/O: it only
remembers what the request changed, so that :mod:`coatcheck._core.lifecycle` can commit exactly
that change, and re-apply it on top of a newer record if a concurrent request won the write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from .record import SessionRecord, Transport


@dataclass(frozen=True, slots=True)
class Changes:
    set: dict[str, Any]
    removed: frozenset[str]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


class Session(MutableMapping[str, Any]):
    """One visitor's session for the length of a request.

    Values must be JSON-serialisable (checked when set). Nested values may be mutated in place
    (``session["cart"].append(item)``): changes are found by comparing with the loaded data at
    commit, so nothing needs to be flagged by hand.
    """

    def __init__(
        self,
        *,
        record: SessionRecord | None,
        transport: Transport,
        now: float,
        user_agent: str = "",
        ip: str = "",
        flashes: list[Any] | None = None,
    ) -> None:
        self._record = record
        self.transport: Transport = transport
        self.now = now
        self.user_agent = user_agent
        self.ip = ip
        # The session owns the record the store handed out (stores return fresh objects), so no
        # copy is made; the snapshot used to find changes is taken on first access to the data.
        self._data: dict[str, Any] = record.data if record is not None else {}
        self._loaded: dict[str, str] | None = None
        self._user_id: str | None = record.user_id if record is not None else None
        self._user_changed = False
        self._incoming_flashes: list[Any] = list(flashes or [])
        self._outgoing_flashes: list[Any] = []
        self._drop_stored_flashes = False
        self._regenerate = False
        self._destroyed = False
        self._rotate_csrf = False
        self._remember: bool | None = None
        self._auth_time: float | None = record.auth_time if record is not None else None
        self._authenticated_now = False
        self.accessed = False
        self.presented_xsrf: list[str] = []
        """Values of the CSRF cookie the browser sent (so a missing or stale one is re-sent)."""
        self.token: str | None = None
        """The token issued by the last commit (a new or regenerated session), else ``None``."""

    # -- identity -------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The public id of the stored session (safe to log and show); ``None`` until stored."""
        return self._record.id if self._record is not None else None

    @property
    def is_new(self) -> bool:
        """True when no stored record backs this session yet."""
        return self._record is None

    @property
    def record(self) -> SessionRecord | None:
        return self._record

    @property
    def is_modified(self) -> bool:
        """True when committing would change the stored record (touches aside)."""
        return self.is_modified_by(self.changes())

    def is_modified_by(self, changes: Changes) -> bool:
        return bool(
            self._destroyed
            or self._regenerate
            or self._user_changed
            or self._outgoing_flashes
            or self._drop_stored_flashes
            or self._rotate_csrf
            or self._remember is not None
            or self._authenticated_now
            or changes.set
            or changes.removed
        )

    @property
    def is_destroyed(self) -> bool:
        return self._destroyed

    @property
    def regenerate_requested(self) -> bool:
        return self._regenerate

    # -- times and metadata ---------------------------------------------------------------
    @property
    def created_at(self) -> float:
        return self._record.created_at if self._record is not None else self.now

    @property
    def last_seen_at(self) -> float:
        return self._record.last_seen_at if self._record is not None else self.now

    @property
    def auth_time(self) -> float | None:
        """When the user last fully authenticated (password or equivalent), epoch seconds."""
        return self._auth_time

    @property
    def remember(self) -> bool:
        if self._remember is not None:
            return self._remember
        return self._record.remember if self._record is not None else False

    @property
    def csrf_token(self) -> str:
        """The synchronizer token of the stored session ('' until the session is stored)."""
        self.accessed = True
        return self._record.csrf_token if self._record is not None else ""

    # -- user -----------------------------------------------------------------------------
    @property
    def user_id(self) -> str | None:
        self.accessed = True
        return self._user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError("user_id must be a str (convert integer keys with str())")
        self.accessed = True
        if value != self._user_id:
            self._user_id = value
            self._user_changed = True

    def mark_authenticated(self, *, remember: bool | None = None) -> None:
        """Stamp a full authentication now: new id, new CSRF token, auth time = now."""
        self._authenticated_now = True
        self._auth_time = self.now
        if remember is not None:
            self._remember = remember
        self.regenerate()
        self.rotate_csrf()

    # -- mapping --------------------------------------------------------------------------
    def _touch_data(self) -> None:
        self.accessed = True
        if self._loaded is None:
            self._loaded = {k: _dumps(v) for k, v in self._data.items()}

    def __getitem__(self, key: str) -> Any:
        self._touch_data()
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError("session keys must be str")
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"session value for {key!r} is not JSON-serialisable: {exc}") from exc
        self._touch_data()
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._touch_data()
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._touch_data()
        return iter(self._data)

    def __len__(self) -> int:
        self._touch_data()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._touch_data()
        return key in self._data

    def __repr__(self) -> str:
        return f"<Session id={self.id!r} user_id={self._user_id!r} keys={sorted(self._data)!r}>"

    def changes(self) -> Changes:
        """What this request did to the data: keys set to a new value (nested mutation
        included, found by comparing with the JSON snapshot) and keys removed."""
        loaded = self._loaded
        if loaded is None:
            return Changes({}, frozenset())  # the data was never touched
        changed = {k: v for k, v in self._data.items() if loaded.get(k) != _dumps(v)}
        return Changes(changed, frozenset(loaded.keys() - self._data.keys()))

    # -- flash ----------------------------------------------------------------------------
    def flash(self, message: Any, category: str = "info") -> None:
        """Queue a message for the next request of this session (and only that one)."""
        _dumps(message)
        self.accessed = True
        self._outgoing_flashes.append({"message": message, "category": category})

    @property
    def flashes(self) -> list[dict[str, Any]]:
        """Messages flashed by an earlier request, delivered to this request only (exactly once)."""
        self.accessed = True
        return list(self._incoming_flashes)

    @property
    def outgoing_flashes(self) -> list[Any]:
        return list(self._outgoing_flashes)

    @property
    def drops_stored_flashes(self) -> bool:
        return self._drop_stored_flashes

    def forget_contents(self) -> None:
        """Drop all data and flash messages (queued, delivered and still stored) at commit."""
        self._touch_data()
        self._data.clear()
        self._incoming_flashes.clear()
        self._outgoing_flashes.clear()
        self._drop_stored_flashes = True

    # -- lifecycle requests ---------------------------------------------------------------
    def regenerate(self) -> None:
        """Issue a new id and secret at commit, keep the data, delete the old record."""
        self.accessed = True
        self._regenerate = True

    def rotate_csrf(self) -> None:
        self._rotate_csrf = True

    @property
    def csrf_rotation_requested(self) -> bool:
        return self._rotate_csrf

    def destroy(self) -> None:
        """Delete the stored session at commit and clear the cookie; the data is dropped now."""
        self._touch_data()
        self._destroyed = True
        self._data.clear()
        self._user_id = None

    @property
    def authenticated_now(self) -> bool:
        return self._authenticated_now

    @property
    def user_changed(self) -> bool:
        return self._user_changed

    def needs_storing(self) -> bool:
        """A new session is stored only once it holds something worth keeping."""
        return bool(self._data or self._user_id is not None or self._outgoing_flashes)
