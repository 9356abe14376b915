"""The learners' self-checks accept correct answers and explain the usual wrong ones."""
import math
import re

import numpy as np
import pytest

from llmrec_lab.data.splits import cold_start_items, leave_last_out, random_split, temporal_split
from llmrec_lab.data.world import make_world
from llmrec_lab.exercises import ExerciseError, check_ndcg, check_rmse, check_split_no_leakage
from llmrec_lab.metrics import ndcg_at_k, rmse


def test_check_rmse_accepts_the_library_and_a_plain_answer():
    def plain(y, p):
        y, p = np.asarray(y, float), np.asarray(p, float)
        if y.shape != p.shape:
            raise ValueError("shapes differ")
        return np.sqrt(np.mean((y - p) ** 2))

    assert check_rmse(rmse) == "check_rmse: all 6 checks passed"
    assert "passed" in check_rmse(plain)


@pytest.mark.parametrize("answer, explanation", [
    (lambda y, p: np.mean(np.abs(np.subtract(y, p, dtype=float))), "mean absolute error"),
    (lambda y, p: np.mean(np.subtract(y, p, dtype=float) ** 2), "take the square root"),
    (lambda y, p: np.sqrt(np.sum(np.subtract(y, p, dtype=float) ** 2)), "average them"),
    (lambda y, p: np.sqrt(np.mean(np.subtract(y, p, dtype=float) ** 2)),
     re.escape("shapes (3,) and (3, 1)")),
    (lambda y, p: math.sqrt(sum((a - b) ** 2 for a, b in zip(y, p)) / len(y)), "3 ratings and 4"),
    (lambda y, p: 1 // 0, "raised ZeroDivisionError"),
    (lambda y, p: "zero", "not a number"),
])
def test_check_rmse_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_rmse(answer)


def test_check_ndcg_accepts_the_library():
    assert check_ndcg(ndcg_at_k) == "check_ndcg: all 6 checks passed"


def _ndcg(ranked, relevant, k, ideal_len=None, cut=True, normalise=True, first_rank=1):
    gains = [1.0 if item in relevant else 0.0 for item in (ranked[:k] if cut else ranked)]
    dcg = sum(g / math.log2(r + first_rank) for r, g in enumerate(gains, start=1))
    n = min(k, len(relevant)) if ideal_len is None else ideal_len(ranked, relevant, k)
    ideal = sum(1 / math.log2(r + first_rank) for r in range(1, n + 1))
    return dcg / ideal if normalise else dcg


@pytest.mark.parametrize("answer, explanation", [
    (lambda r, rel, k: _ndcg(r, rel, k, ideal_len=lambda r, rel, k: k), "min\\(k, \\|relevant\\|\\)"),
    (lambda r, rel, k: _ndcg(r, rel, k, cut=False), "not cut at k"),
    (lambda r, rel, k: _ndcg(r, rel, k, normalise=False), "without the normalisation"),
    (lambda r, rel, k: _ndcg(r, rel, k, ideal_len=lambda r, rel, k: max(1, sum(
        i in rel for i in r[:k]))), "ranked list only"),
    (lambda r, rel, k: _ndcg(r, rel, k, first_rank=0), "division by zero"),
    (lambda r, rel, k: 0.5, "expected 1.0000"),
])
def test_check_ndcg_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_ndcg(answer)


@pytest.fixture(scope="module")
def ratings():
    return make_world("shop", "ci", seed=0, n_days=5).ratings


@pytest.mark.parametrize("kind, split", [
    ("random", lambda r: random_split(r, test_frac=0.2, seed=0)),
    ("temporal", lambda r: temporal_split(r, test_frac=0.2)),
    ("leave-last-out", lambda r: leave_last_out(r, n=1)),
    ("cold-start-items", lambda r: cold_start_items(r, frac_items=0.2, seed=0)),
])
def test_the_library_splits_pass_their_own_check(ratings, kind, split):
    train, test = split(ratings)
    assert check_split_no_leakage(train, test, kind) == (
        f"check_split_no_leakage({kind!r}): no leakage found")


def test_leaky_splits_are_explained(ratings):
    train, test = random_split(ratings, test_frac=0.2, seed=0)
    with pytest.raises(ExerciseError, match="in both train and test"):
        check_split_no_leakage(ratings, test, "random")
    with pytest.raises(ExerciseError, match="later than the earliest test rating"):
        check_split_no_leakage(train, test, "temporal")
    with pytest.raises(ExerciseError, match="train ratings after their test ratings"):
        check_split_no_leakage(train, test, "leave-last-out")
    with pytest.raises(ExerciseError, match="also appear in train"):
        check_split_no_leakage(train, test, "cold-start-items")
    with pytest.raises(ExerciseError, match="test is empty"):
        check_split_no_leakage(train, test.iloc[:0], "random")
    with pytest.raises(ExerciseError, match="lacks the column"):
        check_split_no_leakage(train.drop(columns="timestamp"), test, "random")
    with pytest.raises(ValueError, match="kind must be one of"):
        check_split_no_leakage(train, test, "by-user")
