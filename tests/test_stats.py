"""Paired intervals: worked by hand, calibrated by simulation, and refusing what they cannot pair."""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import t as student_t

from llmrec_lab.stats import (compare_rmse, paired_interval, rmse_difference,
                               runs_rmse_difference, unpaired_interval)


def test_paired_interval_by_hand():
    # differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), se sqrt(5/3)/2
    a, b = np.array([2.0, 4, 6, 8]), np.array([1.0, 2, 3, 4])
    iv = paired_interval(a, b)
    half = student_t.ppf(0.975, 3) * np.sqrt(5 / 3) / 2  # t with n - 1 = 3 degrees of freedom
    assert iv.estimate == pytest.approx(2.5)
    assert (iv.low, iv.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert iv.verdict == "A worse" and iv.n == 4 and iv.seeds == 1


def test_seeds_count_equally_and_their_variances_add():
    a = [np.array([1.0, 2, 3]), np.array([0.0, 0, 0, 0, 0, 1])]
    b = [np.zeros(3), np.zeros(6)]
    iv = paired_interval(a, b)
    assert iv.estimate == pytest.approx((2 + 1 / 6) / 2)
    se = np.sqrt(1 / 3 + np.var([0, 0, 0, 0, 0, 1], ddof=1) / 6) / 2
    assert iv.high - iv.estimate == pytest.approx(student_t.ppf(0.975, 9 - 2) * se)
    assert iv.seeds == 2 and iv.n == 9


def test_pairing_removes_what_both_models_share():
    rng = np.random.default_rng(0)
    hard = rng.normal(0, 3, 500)  # per-rating difficulty both models pay
    a, b = hard ** 2 + 0.1, hard ** 2 + rng.normal(0, 0.01, 500)
    iv = paired_interval(a, b)
    assert iv.verdict == "A worse" and iv.high - iv.low < 0.01


def test_rmse_difference_matches_the_rmses():
    rng = np.random.default_rng(1)
    y = rng.integers(1, 6, 400).astype(float)
    a, b = y + rng.normal(0, 0.8, 400), y + rng.normal(0, 1.0, 400)
    iv = rmse_difference(y, a, b)
    exact = np.sqrt(np.mean((a - y) ** 2)) - np.sqrt(np.mean((b - y) ** 2))
    assert iv.estimate == pytest.approx(exact)
    assert iv.verdict == "A better"


def test_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(400):  # true RMSE difference: 0.9 - 1.0 = -0.1
        y = np.zeros(300)
        iv = rmse_difference(y, rng.normal(0, 0.9, 300), rng.normal(0, 1.0, 300))
        covered += iv.low <= -0.1 <= iv.high
    assert 0.91 <= covered / 400 <= 0.99


def test_equal_models_are_undecided():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    p = y + rng.normal(size=200)
    iv = rmse_difference(y, p, p.copy())
    assert iv.estimate == 0 and iv.verdict == "undecided"
    assert rmse_difference(y, y, y.copy()).verdict == "undecided"  # both exact


def test_compare_rmse_table():
    rng = np.random.default_rng(4)
    ys = [rng.normal(size=300) for _ in range(3)]
    preds = {"good": [y + rng.normal(0, 0.5, 300) for y in ys],
             "mf": [y + rng.normal(0, 1.0, 300) for y in ys]}
    table = compare_rmse(ys, preds, reference="mf")
    assert list(table.index) == ["good"] and table.index.name == "minus mf"
    assert table.loc["good", "verdict"] == "good better" and table.loc["good", "high"] < 0
    with pytest.raises(ValueError, match="reference 'x'"):
        compare_rmse(ys, preds, reference="x")


@pytest.mark.parametrize("a, b, message", [
    ([np.ones(3), np.ones(3)], [np.ones(3)], "2 seeds against 1"),
    (np.ones(3), np.ones(4), "seed 0: shape mismatch"),
    (np.ones(1), np.ones(1), "at least 2"),
    (np.array([1.0, np.nan]), np.ones(2), "finite"),
])
def test_refuses_what_it_cannot_pair(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_interval(a, b)


def test_refuses_a_bad_level():
    with pytest.raises(ValueError, match="level"):
        paired_interval(np.ones(3), np.zeros(3), level=1.0)


def test_unpaired_interval_is_welchs():
    a, b = np.array([1.0, 2, 3, 4]), np.array([0.0, 0, 1])
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    dof = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    half = student_t.ppf(0.975, dof) * np.sqrt(va + vb)
    iv = unpaired_interval(a, b)
    assert iv.estimate == pytest.approx(2.5 - 1 / 3)
    assert (iv.low, iv.high) == pytest.approx((iv.estimate - half, iv.estimate + half))
    assert iv.n == 7 and iv.seeds == 1


def test_unpaired_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)  # unequal sizes and spreads: where Welch's correction matters
    covered = sum(iv.low <= 0.2 <= iv.high for iv in
                  (unpaired_interval(rng.normal(0.2, 2.0, 15), rng.normal(0, 0.5, 60))
                   for _ in range(400)))
    assert 0.91 <= covered / 400 <= 0.99


def test_unpaired_interval_refuses_too_few_values():
    with pytest.raises(ValueError, match="at least 2 values"):
        unpaired_interval([1.0], [1.0, 2.0])


def test_runs_rmse_difference_pairs_each_runs_ratings_and_keeps_masked_ones():
    rng = np.random.default_rng(4)
    runs = [SimpleNamespace(ratings=y, predictions={"a": y + rng.normal(0, 0.5, y.size),
                                                    "b": y + rng.normal(0, 0.8, y.size)})
            for y in (rng.normal(3, 1, 200), rng.normal(3, 1, 150))]
    expected = rmse_difference([r.ratings for r in runs], [r.predictions["a"] for r in runs],
                               [r.predictions["b"] for r in runs])
    assert runs_rmse_difference(runs, "a", "b") == expected
    masks = [r.ratings > 3 for r in runs]
    kept = rmse_difference([r.ratings[m] for r, m in zip(runs, masks)],
                           [r.predictions["a"][m] for r, m in zip(runs, masks)],
                           [r.predictions["b"][m] for r, m in zip(runs, masks)])
    assert runs_rmse_difference(runs, "a", "b", masks) == kept != expected
    with pytest.raises(ValueError, match="1 masks for 2 runs"):
        runs_rmse_difference(runs, "a", "b", masks[:1])
