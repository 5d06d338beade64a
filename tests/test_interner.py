"""The string dictionary gives every string one code whether it looks up by hash or by binary search."""

from __future__ import annotations

from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.segments import facts
from worker.segments.facts import Interner

words = st.text(alphabet="abcé@.", min_size=0, max_size=4)
batch = st.lists(st.one_of(words, st.none()), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(words, max_size=30), st.lists(st.tuples(batch, st.booleans(), st.booleans()), max_size=8))
def test_codes_are_the_same_by_hash_and_by_search(
    start: list[str], steps: list[tuple[list[str | None], bool, bool]]
) -> None:
    by_hash, by_search = Interner(), Interner()
    by_hash.codes(start)
    by_search.codes(start)
    with patch.object(facts, "SEARCH_BELOW", 0):  # every batch searches while no index is held
        _steps(by_hash, by_search, steps)
    assert by_search.strings == by_hash.strings and len(set(by_search.strings)) == len(by_search.strings)
    ordered = [by_search.strings[c] for c in by_search.order.tolist()]
    assert ordered == sorted(by_search.strings)


def _steps(by_hash: Interner, by_search: Interner, steps: list[tuple[list[str | None], bool, bool]]) -> None:
    for values, release, sort in steps:
        if release:
            by_search.release_index()  # small batches now binary-search the sorted order
        if sort:
            _ = by_search.order
        expected = by_hash.codes(values)
        got = by_search.codes(values)
        assert got.tolist() == expected.tolist()
        assert [by_search.strings[c] if c >= 0 else None for c in got.tolist()] == values
        assert by_search.lookup([v for v in values if v is not None]).tolist() == [c for c in got.tolist() if c >= 0]


def test_a_released_dictionary_interns_a_small_batch_without_building_its_hash() -> None:
    strings = Interner([f"user{i}@example.com" for i in range(1000)])
    strings.release_index()
    codes = strings.codes(["user7@example.com", "new@example.com", None, "new@example.com"])
    assert codes.tolist() == [7, 1000, -1, 1000] and strings._index is None
    assert strings.codes(["new@example.com"]).tolist() == [1000]
    assert [strings.strings[c] for c in strings.order.tolist()] == sorted(strings.strings)
