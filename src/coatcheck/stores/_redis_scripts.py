"""The Redis store's Lua scripts, loaded from ``stores/lua/*.lua``, and how they are called.

Rules of the scripts:

- A script that touches a record key touches nothing else; so do the scripts on a user index or
  a hit counter (one key each: atomic on Cluster whatever the key). Only ``expiry_add`` and
  ``unindex_due`` name several keys: the keys of one expiry shard pair, which share a hash tag.
- Indexes clean themselves without ``purge_expired``: ``index_add`` drops entries whose horizon
  ended more than ``TTL_MARGIN`` before the writer's time (the contract lets ``sessions_of`` omit
  expired records), and ``expiry_add`` drops the entries whose records Redis's TTL has certainly
  removed, judged by Redis's own clock. An expiry entry is never dropped while its record may
  still exist, so ``purge_expired`` counts exactly even when a test's fake clock jumps.
- ``cas`` decides whether a write the caller sent without index entries is covered by the
  indexes the stored hash says it has (same owner, ``expires_at`` within the horizon, the new
  TTL ending before the index keys do); when it is not, it writes nothing and answers
  ``NOT_COVERED``, and the caller sends the write again with its index entries.
- Numbers travel as decimal strings formatted by Python (repr of a float round-trips exactly).
  Scripts never reply with a fractional Lua number (Redis would truncate it to an integer) and
  never hand a computed Lua number to a command that wants an integer (how Redis formats Lua
  numbers differs between versions): they pass ARGV strings or ``string.format('%d', ...)``.
- Field names, sentinels and reply codes are never spelled in a script: every script starts with
  the one line of ``local`` constants built from :data:`LUA_CONSTANTS`, on the same line as the
  file's first line, so Redis's error line numbers are the file's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import TypeAlias

from ._redis_keys import (
    ANONYMOUS,
    FIELD_COUNT,
    FIELD_EXPIRES_AT,
    FIELD_HORIZON,
    FIELD_OWNER,
    FIELD_RECORD,
    FIELD_UNTIL,
    FIELD_USER,
    FIELD_VERSION,
    FIELD_WINDOW_END,
    LAPSE_GRACE,
    USER_MARK,
)

Arg: TypeAlias = str | int
Command: TypeAlias = tuple[Arg, ...]

INSERT_VERSION = "0"
"""The expected version of an insert (the store contract's ``expected_version=0``), as sent."""
NOT_REINDEXED = ""
"""Sent to ``cas`` in place of a horizon: this write carries no index entries."""

# Replies of cas (and put_back, take_if_version).
WRITTEN = 1
LOST = 0
NOT_COVERED = -1
# The first item of purge_record's reply.
MISSING = 0
DELETED = 1
LIVE = 2

SWEEP_LIMIT = 100
"""Expiry entries of lapsed records ``expiry_add`` drops at most per call."""

LUA_CONSTANTS: Mapping[str, str | int] = MappingProxyType(
    {
        "FIELD_VERSION": FIELD_VERSION,
        "FIELD_EXPIRES_AT": FIELD_EXPIRES_AT,
        "FIELD_RECORD": FIELD_RECORD,
        "FIELD_USER": FIELD_USER,
        "FIELD_OWNER": FIELD_OWNER,
        "FIELD_HORIZON": FIELD_HORIZON,
        "FIELD_UNTIL": FIELD_UNTIL,
        "FIELD_COUNT": FIELD_COUNT,
        "FIELD_WINDOW_END": FIELD_WINDOW_END,
        "ANONYMOUS": ANONYMOUS,
        "USER_MARK": USER_MARK,
        "INSERT_VERSION": INSERT_VERSION,
        "NOT_REINDEXED": NOT_REINDEXED,
        "WRITTEN": WRITTEN,
        "LOST": LOST,
        "NOT_COVERED": NOT_COVERED,
        "MISSING": MISSING,
        "DELETED": DELETED,
        "LIVE": LIVE,
        "LAPSE_GRACE_MS": round(LAPSE_GRACE * 1000),
        "SWEEP_LIMIT": SWEEP_LIMIT,
    }
)
"""Every constant the scripts share with Python, by the name the scripts use."""


_LUA_FILES = resources.files("coatcheck.stores").joinpath("lua")


def _lua_literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    # The constants are plain ASCII: refuse anything a Lua string literal would need to escape.
    if not value.isascii() or not value.isprintable() or "'" in value or "\\" in value:
        raise ValueError(f"not a plain Lua string constant: {value!r}")
    return f"'{value}'"


def lua_preamble(constants: Mapping[str, str | int] = LUA_CONSTANTS) -> str:
    """One line of Lua that declares ``constants`` as locals, without a line break."""
    names = ", ".join(constants)
    values = ", ".join(_lua_literal(value) for value in constants.values())
    return f"local {names} = {values}; "


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script, called by SHA; the source is kept for the EVAL fallback."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    @classmethod
    def load(cls, name: str) -> LuaScript:
        """The script in ``lua/<name>.lua``, with the shared constants declared before it."""
        text = _LUA_FILES.joinpath(f"{name}.lua").read_text("utf-8")
        return cls(name, lua_preamble() + text)

    def call(self, keys: Sequence[str], *args: Arg) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


CAS = LuaScript.load("cas")
INDEX_ADD = LuaScript.load("index_add")
EXPIRY_ADD = LuaScript.load("expiry_add")
UNINDEX_DUE = LuaScript.load("unindex_due")
PURGE_RECORD = LuaScript.load("purge_record")
HIT = LuaScript.load("hit")
TAKE_IF_VERSION = LuaScript.load("take_if_version")
PUT_BACK = LuaScript.load("put_back")

SCRIPTS = (CAS, INDEX_ADD, EXPIRY_ADD, UNINDEX_DUE, PURGE_RECORD, HIT, TAKE_IF_VERSION, PUT_BACK)
_SOURCE_BY_SHA = {script.sha: script.source for script in SCRIPTS}


def as_eval(command: Command) -> Command:
    """``command`` with a script called by SHA sent with its source instead (after NOSCRIPT)."""
    if command[0] == "EVALSHA" and isinstance(command[1], str) and command[1] in _SOURCE_BY_SHA:
        return ("EVAL", _SOURCE_BY_SHA[command[1]], *command[2:])
    return command
