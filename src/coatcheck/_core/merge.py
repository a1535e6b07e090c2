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
  element one side removed is not brought back by the other. An element of *base* that a side
  removed and inserted again elsewhere (a saved item removed and saved again goes to the end) was
  moved, not removed and added: it stays only if the other side kept it too, at its new place (at
  *mine*'s when both moved it). A list that did not exist in *base* (two tabs adding the first
  items of a cart) merges as edits of an empty list. An element changed in place is, to the
  merge, the old element removed and the new one inserted: when both sides change the same
  element differently, both new versions are kept.
- Lists longer than :data:`DIFF_LIMIT` elements merge by count instead, in linear time
  (:func:`merge_lists_by_count`): the same elements are kept and removed, but what *mine*
  inserted goes to the end rather than to its place.
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
from collections import Counter
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
    "merge_lists_by_count",
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
    """One side's edit of a base list: which base elements it kept in place, which it moved, and
    what it inserted where.

    ``inserted[g]`` holds what was inserted in gap ``g`` (before ``base[g]``, or at the end for
    ``g == len(base)``) as ``(element, origin)``: ``origin`` is the index in base of the element
    it moves there, or ``None`` for a new element. An inserted element equal to a base element
    the same side no longer has in place is that element, moved (paired in order, so each base
    element moves at most once).
    """

    __slots__ = ("inserted", "kept", "moved")

    def __init__(self, base_keys: Sequence[str], side: list[Any]) -> None:
        size = len(base_keys)
        self.kept = [False] * size
        self.moved = [False] * size
        self.inserted: list[list[tuple[Any, int | None]]] = [[] for _ in range(size + 1)]
        side_keys = [_canonical(v) for v in side]
        matcher = SequenceMatcher(None, base_keys, side_keys, autojunk=False)
        insertions: list[tuple[int, int]] = []  # (gap, index in side)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for i in range(i1, i2):
                    self.kept[i] = True
            elif tag in ("insert", "replace"):
                # A replaced run is its base elements removed and the new ones inserted in
                # their place, before the next element of base this side kept.
                insertions.extend((i1, j) for j in range(j1, j2))
        gone: dict[str, list[int]] = {}  # key -> base indices this side does not keep in place
        for i, key in enumerate(base_keys):
            if not self.kept[i]:
                gone.setdefault(key, []).append(i)
        for gap, j in insertions:
            origins = gone.get(side_keys[j])
            origin = origins.pop(0) if origins else None
            if origin is not None:
                self.moved[origin] = True
            self.inserted[gap].append((side[j], origin))

    def has(self, i: int) -> bool:
        """Whether this side still has base element ``i``, in place or moved."""
        return self.kept[i] or self.moved[i]


DIFF_LIMIT: Final = 256
"""Lists longer than this (any of the three) are merged by :func:`merge_lists_by_count`: the
sequence diff costs time quadratic in the length or worse (a 1,000-element list of a few
distinct values took 0.1-3 s), and the merge runs while the request's commit waits."""


def merge_lists(base: list[Any], mine: list[Any], theirs: list[Any]) -> list[Any]:
    """Merge two concurrent edits of the list *base* (see the module's rules)."""
    if max(len(base), len(mine), len(theirs)) > DIFF_LIMIT:
        return merge_lists_by_count(base, mine, theirs)
    base_keys = [_canonical(v) for v in base]
    mine_edits = _Edits(base_keys, mine)
    theirs_edits = _Edits(base_keys, theirs)
    # Where each base element both sides still have goes: mine's new place if mine moved it,
    # else theirs' if theirs did, else its place in base.
    survives = [mine_edits.has(i) and theirs_edits.has(i) for i in range(len(base))]

    def placed(edits: _Edits, origin: int | None) -> bool:
        if origin is None:
            return True  # a new element: always kept
        if not survives[origin]:
            return False  # the other side removed it
        return edits is mine_edits or not mine_edits.moved[origin]

    merged: list[Any] = []
    for gap in range(len(base) + 1):
        for edits in (theirs_edits, mine_edits):
            merged.extend(v for v, origin in edits.inserted[gap] if placed(edits, origin))
        if (
            gap < len(base)
            and survives[gap]
            and not (mine_edits.moved[gap] or theirs_edits.moved[gap])
        ):
            merged.append(base[gap])
    return merged


def merge_lists_by_count(base: list[Any], mine: list[Any], theirs: list[Any]) -> list[Any]:
    """:func:`merge_lists` in linear time, for long lists: the same elements, placed roughly.

    Each side's edit is read per value, by how many times it holds it against *base*: fewer is
    that many removed, more that many inserted (a move changes no count). An element stays as
    often as *base* held it, less the most either side removed (both removing one of two equal
    elements count as one removal), plus what each side inserted. Order: *theirs* as stored,
    without the occurrences only *mine* removed (its first ones), then what *mine* inserted, in
    *mine*'s order, at the end.
    """
    base_count = Counter(map(_canonical, base))
    mine_keys = [_canonical(v) for v in mine]
    theirs_keys = [_canonical(v) for v in theirs]
    # Occurrences of theirs to drop: what mine removed beyond what theirs removed too.
    drop = (base_count - Counter(mine_keys)) - (base_count - Counter(theirs_keys))
    merged: list[Any] = []
    for key, value in zip(theirs_keys, theirs, strict=True):
        if drop[key] > 0:
            drop[key] -= 1
        else:
            merged.append(value)
    # Mine's insertions: its occurrences of a value beyond what base held, in mine's order.
    seen: Counter[str] = Counter()
    for key, value in zip(mine_keys, mine, strict=True):
        seen[key] += 1
        if seen[key] > base_count[key]:
            merged.append(value)
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
