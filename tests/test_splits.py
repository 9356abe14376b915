"""Every split is a deterministic partition of its input with no leakage of its own kind."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from llmrec_lab.splits import (cold_start_items, kfold, leave_last_out, random_split,
                                    temporal_split)

FAST = settings(max_examples=60, deadline=None, database=None)


@st.composite
def ratings_frames(draw, min_size: int = 0) -> pd.DataFrame:
    """Small ratings tables with distinct (user, item) pairs, many timestamp ties and a
    shuffled non-default index, so splits can't lean on a RangeIndex or sorted input."""
    pairs = draw(st.lists(st.tuples(st.integers(1, 8), st.integers(1, 12)),
                          min_size=min_size, max_size=60, unique=True))
    n = len(pairs)
    stamps = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    ratings = pd.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs],
                            "rating": np.ones(n), "timestamp": stamps})
    ratings = ratings.astype({"user_id": "int64", "item_id": "int64", "timestamp": "int64"})
    ratings.index = draw(st.permutations(range(100, 100 + n)))
    return ratings


def assert_partition(parts: tuple[pd.DataFrame, ...], ratings: pd.DataFrame) -> None:
    """Parts are disjoint, unchanged rows of the input, and together give it all back."""
    index = pd.Index([]).append([part.index for part in parts])
    assert not index.has_duplicates
    assert sorted(index) == sorted(ratings.index)
    for part in parts:
        pd.testing.assert_frame_equal(part, ratings.loc[part.index])


@pytest.fixture
def ratings() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 500
    return pd.DataFrame({"user_id": rng.integers(1, 40, n), "item_id": np.arange(n) % 97 + 1,
                         "rating": rng.integers(1, 6, n).astype(float),
                         "timestamp": rng.integers(0, 1000, n)})


@FAST
@given(ratings_frames(), st.floats(0.05, 0.5), st.floats(0.0, 0.4), st.integers(0, 3))
def test_random_split(ratings, test_frac, valid_frac, seed):
    parts = random_split(ratings, test_frac, seed, valid_frac)
    assert len(parts) == (3 if valid_frac > 0 else 2)
    assert_partition(parts, ratings)
    assert len(parts[-1]) == round(test_frac * len(ratings))


@FAST
@given(ratings_frames(), st.floats(0.05, 0.5), st.floats(0.0, 0.4))
def test_temporal_split_never_trains_on_the_future(ratings, test_frac, valid_frac):
    parts = temporal_split(ratings, test_frac, valid_frac)
    assert_partition(parts, ratings)
    for earlier, later in zip(parts, parts[1:]):
        if len(earlier) and len(later):
            assert earlier.timestamp.max() <= later.timestamp.min()


@FAST
@given(ratings_frames(), st.integers(1, 3), st.integers(0, 2))
def test_leave_last_out(ratings, n, valid_n):
    parts = leave_last_out(ratings, n, valid_n)
    assert_partition(parts, ratings)
    train, test = parts[0], parts[-1]
    counts = ratings.user_id.value_counts()
    expected = {u: n for u, c in counts.items() if c > n + valid_n}
    assert test.user_id.value_counts().to_dict() == expected
    for user, held in test.groupby("user_id"):
        assert train[train.user_id == user].timestamp.max() <= held.timestamp.min()
    if valid_n:
        assert parts[1].user_id.value_counts().to_dict() == {u: valid_n for u in expected}


@FAST
@given(ratings_frames(), st.floats(0.05, 0.5), st.floats(0.0, 0.4), st.integers(0, 3))
def test_cold_start_items_never_seen_in_train(ratings, frac, valid_frac, seed):
    parts = cold_start_items(ratings, frac, seed, valid_frac)
    assert_partition(parts, ratings)
    item_sets = [set(part.item_id) for part in parts]
    assert all(not a & b for i, a in enumerate(item_sets) for b in item_sets[i + 1:])
    assert len(item_sets[-1]) == round(frac * ratings.item_id.nunique())


@FAST
@given(ratings_frames(min_size=4), st.integers(2, 4), st.integers(0, 3))
def test_kfold_tests_partition(ratings, k, seed):
    folds = kfold(ratings, k, seed)
    assert_partition(tuple(test for _, test in folds), ratings)
    for train, test in folds:
        assert_partition((train, test), ratings)


@pytest.mark.parametrize("split", [
    lambda r, s: random_split(r, 0.2, s, 0.1),
    lambda r, s: cold_start_items(r, 0.2, s, 0.1),
    lambda r, s: kfold(r, 5, s)[0],
])
def test_seeded_splits_are_deterministic(ratings, split):
    same = [part.index for part in split(ratings, 7)]
    assert all(a.equals(b) for a, b in zip(same, [part.index for part in split(ratings, 7)]))
    assert not all(a.equals(b) for a, b in zip(same, [part.index for part in split(ratings, 8)]))


def test_leave_last_out_breaks_time_ties_by_input_order():
    ratings = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [10, 11, 12],
                            "rating": [1.0, 2.0, 3.0], "timestamp": [5, 5, 4]})
    train, test = leave_last_out(ratings)
    assert test.item_id.tolist() == [11] and train.item_id.tolist() == [10, 12]


@pytest.mark.parametrize("call, match", [
    (lambda r: random_split(r, 0.0), "test fraction"),
    (lambda r: random_split(r, 0.6, valid_frac=0.4), "sum < 1"),
    (lambda r: temporal_split(r.drop(columns="timestamp")), "timestamp"),
    (lambda r: leave_last_out(r, n=0), "n >= 1"),
    (lambda r: cold_start_items(r.drop(columns="item_id")), "item_id"),
    (lambda r: kfold(r.head(3), k=5), "k <= number of ratings"),
])
def test_bad_arguments(ratings, call, match):
    with pytest.raises(ValueError, match=match):
        call(ratings)
