"""Three-way merge of session data, for two requests that changed one session at once.

When a request's conditional write loses (another request wrote the session after this one read
it), the core merges three versions of each value this request changed: *base*, what this request
loaded; *mine*, what it wrote; *theirs*, the newer stored value. The rules, applied recursively:

- A side that left a value as it was in *base* yields to the side that changed it.
- Two objects (dicts) merge key by key. A key missing on a side counts as a value of its own
  (:data:`MISSING`), so a key added by one side and one removed by the other both survive.
- Two lists merge as edits of *base*: an element of *base* stays only if neither side removed it,
  and the elements each side inserted are kept, at their place relative to the elements of *base*
  they were inserted between (at one place: *theirs* first, then *mine*, the order in which they
  were written). So concurrent appends are all kept, concurrent removals all applied, and an
  element one side removed is not brought back by the other. A list that did not exist in *base*
  (two tabs adding the first items of a cart) merges as edits of an empty list. An element changed
  in place is, to the merge, the old element removed and the new one inserted: when both sides
  change the same element differently, both new versions are kept.
- Anything else both sides changed (a scalar set to two different values, an object replaced by a
  list, a value removed by one side and changed by the other) is a true conflict: *mine*, the later
  writer, wins.

What a merge of states cannot infer, such as "add 1 to a counter" (two requests that each turned
3 into 4 should give 5), is recorded as an operation instead (see :func:`apply_ops`) and applied
again on the newer value.

Everything here is a pure function of JSON values: deterministic, no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "MISSING",
    "Inapplicable",
    "Op",
    "apply_ops",
    "merge",
    "merge_lists",
    "same",
]


class _Missing:
    """The value of a key that is absent on one side of a merge."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

OpName: TypeAlias = Literal["incr", "add", "discard"]
Op: TypeAlias = tuple[OpName, Any]
"""One recorded operation on a top-level session key: ``("incr", n)``, ``("add", v)`` (set add)
or ``("discard", v)`` (set discard)."""


class Inapplicable(ValueError):
    """An operation cannot apply to the value it meets (a counter that became a string)."""


def same(a: Any, b: Any) -> bool:
    """Equality of JSON values as JSON sees it: ``1``, ``1.0`` and ``true`` all differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def merge(base: Any, mine: Any, theirs: Any) -> Any:
    """Merge two concurrent edits (*mine* and *theirs*) of the JSON value *base*.

    Any argument may be :data:`MISSING` (the key is absent on that side), and so may the result.
    ``merge(b, m, b) == m`` and ``merge(b, b, t) == t`` always hold.
    """
    if same(mine, base):
        return theirs
    if same(theirs, base):
        return mine
    if isinstance(mine, dict) and isinstance(theirs, dict) and isinstance(base, dict | _Missing):
        return _merge_dicts(base if isinstance(base, dict) else {}, mine, theirs)
    if isinstance(mine, list) and isinstance(theirs, list) and isinstance(base, list | _Missing):
        return merge_lists(base if isinstance(base, list) else [], mine, theirs)
    return mine  # a true conflict: the later writer wins


def _merge_dicts(
    base: dict[str, Any], mine: dict[str, Any], theirs: dict[str, Any]
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    # Their key order first (the stored order), then the keys only this request has. A key of
    # base that neither side still has was removed by both.
    for key in [*theirs, *(k for k in mine if k not in theirs)]:
        value = merge(base.get(key, MISSING), mine.get(key, MISSING), theirs.get(key, MISSING))
        if value is not MISSING:
            merged[key] = value
    return merged


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


class _Edits:
    """One side's edit of a base list: which base elements it kept, and what it inserted where.

    ``inserted[g]`` holds what was inserted in gap ``g``: before ``base[g]``, or at the end for
    ``g == len(base)``.
    """

    __slots__ = ("inserted", "kept")

    def __init__(self, base_keys: Sequence[str], side: list[Any]) -> None:
        size = len(base_keys)
        self.kept = [False] * size
        self.inserted: list[list[Any]] = [[] for _ in range(size + 1)]
        side_keys = [_canonical(v) for v in side]
        matcher = SequenceMatcher(None, base_keys, side_keys, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for i in range(i1, i2):
                    self.kept[i] = True
            elif tag in ("insert", "replace"):
                # A replaced run is its base elements removed and the new ones inserted in
                # their place, before the next element of base this side kept.
                self.inserted[i1].extend(side[j1:j2])


def merge_lists(base: list[Any], mine: list[Any], theirs: list[Any]) -> list[Any]:
    """Merge two concurrent edits of the list *base* (see the module's rules)."""
    base_keys = [_canonical(v) for v in base]
    mine_edits = _Edits(base_keys, mine)
    theirs_edits = _Edits(base_keys, theirs)
    merged: list[Any] = []
    for gap in range(len(base) + 1):
        merged.extend(theirs_edits.inserted[gap])
        merged.extend(mine_edits.inserted[gap])
        if gap < len(base) and mine_edits.kept[gap] and theirs_edits.kept[gap]:
            merged.append(base[gap])
    return merged


# -- operations ----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_ops(value: Any, ops: Sequence[Op]) -> Any:
    """``value`` (possibly :data:`MISSING`) with ``ops`` applied in order.

    A counter starts from 0 and a set from an empty list. Raises :class:`Inapplicable` when an
    operation meets a value of the wrong type.
    """
    for name, argument in ops:
        if name == "incr":
            if value is MISSING:
                value = 0
            if not _is_number(value):
                raise Inapplicable(f"cannot add {argument!r} to {value!r}")
            value = value + argument
        else:
            if value is MISSING:
                value = []
            if not isinstance(value, list):
                raise Inapplicable(f"{value!r} is not a set (a list)")
            present = any(same(element, argument) for element in value)
            if name == "add" and not present:
                value = [*value, argument]
            elif name == "discard" and present:
                value = [element for element in value if not same(element, argument)]
    return value
