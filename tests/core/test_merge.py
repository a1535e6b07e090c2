"""The three-way merge of concurrent session writes (pure functions, property-tested)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coatcheck._core.merge import (
    MISSING,
    Inapplicable,
    apply_ops,
    merge,
    merge_lists,
    merge_lists_by_count,
    same,
)

# -- examples -----------------------------------------------------------------------------------


def test_one_side_changed_takes_that_side() -> None:
    """A value only one side changed comes from that side, whichever side it is."""
    assert merge(1, 2, 1) == 2
    assert merge(1, 1, 3) == 3


def test_true_scalar_conflict_later_writer_wins() -> None:
    """Both sides setting one scalar to different values: mine (the later writer) wins."""
    assert merge("a", "b", "c") == "b"


def test_concurrent_appends_are_both_kept_theirs_first() -> None:
    """Two requests appending to one list keep both items, the earlier writer's first."""
    assert merge(["x"], ["x", "mine"], ["x", "theirs"]) == ["x", "theirs", "mine"]


def test_first_items_of_a_list_that_did_not_exist() -> None:
    """Two tabs adding the first item of a cart that did not exist when both loaded: both kept."""
    assert merge(MISSING, ["a"], ["b"]) == ["b", "a"]


def test_same_item_appended_twice_is_kept_twice() -> None:
    """Two tabs adding the same item each add one: a list is not a set."""
    assert merge(["x"], ["x", "apple"], ["x", "apple"]) == ["x", "apple", "apple"]


def test_removals_of_different_elements_both_apply() -> None:
    """One side removes b, the other removes c: both are gone."""
    assert merge(["a", "b", "c", "d"], ["a", "c", "d"], ["a", "b", "d"]) == ["a", "d"]


def test_removed_element_is_not_brought_back() -> None:
    """An element one side removed stays removed although the other side appended elsewhere."""
    assert merge(["a", "b"], ["b"], ["a", "b", "c"]) == ["b", "c"]


def test_nested_dicts_merge_key_by_key() -> None:
    """Two requests changing different keys of one nested object keep both changes."""
    base = {"prefs": {"theme": "light", "lang": "en"}, "n": 1}
    mine = {"prefs": {"theme": "dark", "lang": "en"}, "n": 1}
    theirs = {"prefs": {"theme": "light", "lang": "fr", "tz": "UTC"}, "n": 1}
    expected = {"prefs": {"theme": "dark", "lang": "fr", "tz": "UTC"}, "n": 1}
    assert expected == merge(base, mine, theirs)


def test_key_removed_by_one_side_and_untouched_by_other_is_removed() -> None:
    """A key deleted by one side and left alone by the other is deleted."""
    assert merge({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": 2, "c": 3}) == {"a": 1, "c": 3}


def test_removed_versus_changed_is_a_conflict_mine_wins() -> None:
    """A value removed by mine but changed by theirs: mine, the later writer, wins."""
    assert merge(1, MISSING, 2) is MISSING
    assert merge(1, 2, MISSING) == 2


def test_json_types_are_not_confused() -> None:
    """1, 1.0 and true are different JSON values: changing one into another is a change."""
    assert merge(1, True, 1) is True
    assert merge(1, 1.0, 1) == 1.0
    assert not same(1, True)
    assert not same([1], [1.0])
    assert same({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})


def test_type_change_conflict_mine_wins() -> None:
    """An object on one side and a list on the other is a true conflict."""
    assert merge({}, {"a": 1}, ["a"]) == {"a": 1}
    assert merge("s", ["a"], ["b"]) == ["a"]


def test_apply_ops_counter_and_set() -> None:
    """Counters start at 0, sets at an empty list; adds are idempotent, discards too."""
    assert apply_ops(MISSING, [("incr", 2), ("incr", 3)]) == 5
    assert apply_ops([1], [("add", 2), ("add", 1), ("discard", 3)]) == [1, 2]
    assert apply_ops(["a", "b"], [("discard", "a")]) == ["b"]


def test_apply_ops_on_wrong_type_is_inapplicable() -> None:
    """An operation that meets a value of another type says so instead of guessing."""
    with pytest.raises(Inapplicable):
        apply_ops("text", [("incr", 1)])
    with pytest.raises(Inapplicable):
        apply_ops(True, [("incr", 1)])
    with pytest.raises(Inapplicable):
        apply_ops({"a": 1}, [("add", 1)])


# -- properties ---------------------------------------------------------------------------------

_fresh = itertools.count(1_000_000)

json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def list_edit(draw: st.DrawFn, base: list[int]) -> tuple[list[int], set[int], set[int]]:
    """A random edit of ``base``: inserts of fresh unique elements and removals, in any order.

    Returns the edited list, what it inserted and which base elements it removed.
    """
    current = list(base)
    inserted: set[int] = set()
    removed: set[int] = set()
    for _ in range(draw(st.integers(0, 6))):
        if current and draw(st.booleans()):
            victim = current.pop(draw(st.integers(0, len(current) - 1)))
            if victim in inserted:
                inserted.discard(victim)  # its own insert, undone: no trace of it either way
            else:
                removed.add(victim)
        else:
            element = next(_fresh)
            current.insert(draw(st.integers(0, len(current))), element)
            inserted.add(element)
    return current, inserted, removed


@st.composite
def concurrent_list_edits(
    draw: st.DrawFn,
) -> tuple[list[int], tuple[list[int], set[int], set[int]], tuple[list[int], set[int], set[int]]]:
    base = draw(st.lists(st.integers(0, 999), max_size=8, unique=True))
    return base, draw(list_edit(base)), draw(list_edit(base))


@given(concurrent_list_edits())
def test_no_append_and_no_removal_is_lost(
    edits: tuple[
        list[int], tuple[list[int], set[int], set[int]], tuple[list[int], set[int], set[int]]
    ],
) -> None:
    """For random concurrent edits of one list, every element either side inserted is in the
    merge, every base element either side removed is not, and the rest of base is kept in order."""
    base, (mine, mine_in, mine_out), (theirs, theirs_in, theirs_out) = edits
    merged = merge_lists(base, mine, theirs)
    assert mine_in | theirs_in <= set(merged)
    assert not (mine_out | theirs_out) & set(merged)
    kept = [x for x in base if x not in mine_out | theirs_out]
    assert kept == [x for x in merged if x in set(base)]
    assert len(merged) == len(kept) + len(mine_in) + len(theirs_in)
    # Each side's own elements keep their relative order.
    assert [x for x in merged if x in set(mine)] == [x for x in mine if x in set(merged)]
    assert [x for x in merged if x in set(theirs)] == [x for x in theirs if x in set(merged)]


@given(json_values, json_values, json_values)
def test_merge_is_deterministic(base: Any, mine: Any, theirs: Any) -> None:
    """The same three inputs always merge to the same value."""
    assert same(merge(base, mine, theirs), merge(base, mine, theirs))


@given(json_values, json_values)
def test_merge_with_unchanged_theirs_is_mine(base: Any, mine: Any) -> None:
    """merge(base, mine, base) == mine: with nobody else writing, a request's write is exact."""
    assert same(merge(base, mine, base), mine)


@given(json_values, json_values)
def test_merge_with_unchanged_mine_is_theirs(base: Any, theirs: Any) -> None:
    """merge(base, base, theirs) == theirs: a request that changed nothing changes nothing."""
    assert same(merge(base, base, theirs), theirs)


@given(
    st.dictionaries(st.text(max_size=2), json_values, max_size=5),
    st.dictionaries(st.text(max_size=2), json_values, max_size=3),
    st.dictionaries(st.text(max_size=2), json_values, max_size=3),
)
def test_dict_keys_changed_by_one_side_only_come_from_that_side(
    base: dict[str, Any], mine_changes: dict[str, Any], theirs_changes: dict[str, Any]
) -> None:
    """Keys set by exactly one side come from that side; untouched keys keep their base value."""
    mine = {**base, **mine_changes}
    theirs = {**base, **theirs_changes}
    merged = merge(base, mine, theirs)
    assert isinstance(merged, dict)
    for key in set(base) | set(mine) | set(theirs):
        in_mine = key in mine_changes and not same(mine_changes[key], base.get(key, MISSING))
        in_theirs = key in theirs_changes and not same(theirs_changes[key], base.get(key, MISSING))
        if in_mine and not in_theirs:
            assert same(merged[key], mine[key])
        elif in_theirs and not in_mine:
            assert same(merged[key], theirs[key])
        elif not in_mine and not in_theirs:
            assert same(merged[key], base[key])


def test_an_element_moved_by_one_side_and_removed_by_the_other_stays_removed() -> None:
    """Attack round 9: tab 2 removes a saved story while tab 1 removes and saves another again
    (which moves it to the end); the story tab 2 removed must not come back."""
    assert merge_lists(["B", "D"], ["B"], ["D", "B"]) == ["B"]
    assert merge_lists(["C", "T"], ["C"], ["T", "C"]) == ["C"]
    assert merge(["C", "T"], ["T", "C"], ["C"]) == ["C"]
    # Moved by one side, kept by the other: at its new place, once.
    assert merge_lists(["C", "T"], ["C", "T", "X"], ["T", "C"]) == ["T", "C", "X"]
    # Moved by both: once, at mine's place (the later writer).
    assert merge_lists(["a", "b", "c"], ["b", "c", "a"], ["b", "a", "c"]) == ["b", "c", "a"]


@st.composite
def list_edit_with_moves(draw: st.DrawFn, base: list[int]) -> list[int]:
    """A random edit of ``base`` of removals, fresh inserts and moves (an element taken out and
    put back elsewhere, as removing and saving again does)."""
    current = list(base)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["remove", "insert", "move"]))
        if kind == "insert" or not current:
            current.insert(draw(st.integers(0, len(current))), next(_fresh))
            continue
        element = current.pop(draw(st.integers(0, len(current) - 1)))
        if kind == "move":
            current.insert(draw(st.integers(0, len(current))), element)
    return current


@st.composite
def concurrent_edits_with_moves(draw: st.DrawFn) -> tuple[list[int], list[int], list[int]]:
    base = draw(st.lists(st.integers(0, 999), max_size=8, unique=True))
    return base, draw(list_edit_with_moves(base)), draw(list_edit_with_moves(base))


@given(concurrent_edits_with_moves())
def test_moves_never_bring_back_what_the_other_side_removed(
    edits: tuple[list[int], list[int], list[int]],
) -> None:
    """With moves in the mix: a base element either side no longer has is not in the merge, one
    both sides still have is in it exactly once, and every new element exactly once."""
    base, mine, theirs = edits
    merged = merge_lists(base, mine, theirs)
    for element in base:
        expected = 1 if element in mine and element in theirs else 0
        assert merged.count(element) == expected, (element, base, mine, theirs, merged)
    for element in {*mine, *theirs} - set(base):
        assert merged.count(element) == 1
    assert len(merged) == len(set(merged))


@given(concurrent_edits_with_moves())
def test_merging_by_count_keeps_and_removes_what_the_diff_does(
    edits: tuple[list[int], list[int], list[int]],
) -> None:
    """The long-list merge, on the same random edits (removals, inserts, moves): a base element
    either side no longer has is gone, one both have is there once, every new element once;
    theirs' order is kept, and mine's inserts follow in mine's order."""
    base, mine, theirs = edits
    merged = merge_lists_by_count(base, mine, theirs)
    for element in base:
        expected = 1 if element in mine and element in theirs else 0
        assert merged.count(element) == expected
    for element in {*mine, *theirs} - set(base):
        assert merged.count(element) == 1
    assert [x for x in merged if x in set(theirs)] == [x for x in theirs if x in set(merged)]
    mine_new = [x for x in mine if x not in set(base)]
    assert merged[len(merged) - len(mine_new) :] == mine_new


def test_merging_by_count_with_equal_elements() -> None:
    """Counts of equal elements: both sides removing one of two is one removal; both adding one
    is two additions (concurrent appends all kept); a move changes nothing."""
    assert merge_lists_by_count(["a", "a"], ["a"], ["a"]) == ["a"]
    assert merge_lists_by_count(["a"], ["a", "a"], ["a", "a"]) == ["a", "a", "a"]
    assert merge_lists_by_count(["x", "a", "b"], ["b", "a"], ["a", "b", "x"]) == ["a", "b"]
    assert merge_lists_by_count([{"id": 1}], [], [{"id": 1}, {"id": 2}]) == [{"id": 2}]


def test_long_lists_are_merged_by_count_not_by_a_diff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past DIFF_LIMIT elements the sequence diff (quadratic or worse: a reversed list of a few
    distinct values took seconds) is never run; the merge still applies both sides' edits."""
    import coatcheck._core.merge as merge_module

    def no_diff(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sequence diff ran on a long list")

    monkeypatch.setattr(merge_module, "SequenceMatcher", no_diff)
    base = [i % 7 for i in range(3000)]
    mine = [*base[::-1], "mine"]
    theirs = [*base[:-1], "theirs"]
    merged = merge_lists(base, mine, theirs)
    assert merged == merge_lists_by_count(base, mine, theirs)
    assert merged.count("mine") == merged.count("theirs") == 1
    assert len(merged) == 3000 - 1 + 2
    short = ["a", "b"]
    with pytest.raises(AssertionError, match="sequence diff"):
        merge_lists(short, ["b", "a"], ["a"])  # short lists still go through the diff
