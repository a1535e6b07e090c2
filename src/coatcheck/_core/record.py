"""The stored session record: one shape for every store.

Stores keep records as opaque JSON plus a few indexed columns (id, user id, expiry, version); they
never interpret anything else. JSON only, never pickle.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Transport = Literal["cookie", "bearer"]


@dataclass(slots=True)
class SessionRecord:
    """What a store keeps for one session.

    ``expires_at`` is the earlier of the idle and the absolute deadline, written by the core at each
    commit; stores use it for purging and native TTLs only. Whether a record is still valid is
    decided by the core (:func:`coatcheck._core.lifecycle.is_expired`), never by a store.
    """

    id: str
    secret_hash: str
    created_at: float
    last_seen_at: float
    expires_at: float
    absolute_expires_at: float
    version: int = 0
    user_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    flash: list[Any] = field(default_factory=list)
    csrf_token: str = ""
    auth_time: float | None = None
    transport: Transport = "cookie"
    remember: bool = False
    user_agent: str = ""
    ip: str = ""
    label: str = ""

    def copy(self) -> SessionRecord:
        """A deep enough copy: data and flash are rebuilt through JSON."""
        return record_from_json(record_to_json(self))


_FIELDS = {f.name for f in dataclasses.fields(SessionRecord)}


def record_to_dict(record: SessionRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _FIELDS}


def record_to_json(record: SessionRecord) -> str:
    return json.dumps(record_to_dict(record), separators=(",", ":"), sort_keys=True)


def record_from_dict(raw: dict[str, Any]) -> SessionRecord:
    """Build a record from a decoded JSON object, ignoring unknown keys (forward compatible)."""
    return SessionRecord(**{k: v for k, v in raw.items() if k in _FIELDS})


def record_from_json(raw: str | bytes) -> SessionRecord:
    decoded = json.loads(raw)
    if not isinstance(decoded, dict):
        raise ValueError("a session record must be a JSON object")
    return record_from_dict(decoded)
