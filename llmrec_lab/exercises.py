"""Self-checks for the labs' exercises: run a learner's answer on hand-made cases and say what is
wrong with it, in words.

Each ``check_*`` function returns a short message when every case passes, and raises
:class:`ExerciseError` (an ``AssertionError``, so a notebook cell stops there) with an explanation
of the first failure otherwise: which input, what came back, what was expected, and, for the usual
mistakes, which mistake it looks like.

    >>> from llmrec_lab.exercises import check_rmse
    >>> check_rmse(my_rmse)
    'check_rmse: all 6 checks passed'
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["ExerciseError", "check_rmse", "check_ndcg", "check_split_no_leakage"]

SPLIT_KINDS = ("random", "temporal", "leave-last-out", "cold-start-items")


class ExerciseError(AssertionError):
    """An answer failed a check; the message says why."""


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _call(name: str, fn: Callable, *args) -> float:
    """``fn(*args)`` as a float, turning a crash or a non-number into a readable failure."""
    shown = ", ".join(repr(a.tolist()) if isinstance(a, np.ndarray) else repr(a) for a in args)
    try:
        value = fn(*args)
    except Exception as error:  # the learner's code may fail in any way: report it, in words
        raise ExerciseError(f"{name}({shown}) raised {type(error).__name__}: {error}") from error
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"{name}({shown}) returned {value!r}, not a number") from error


def check_rmse(fn: Callable) -> str:
    """Check ``fn(y_true, y_pred) -> float``, a root mean squared error.

    It must accept lists and arrays, return the root of the *mean* squared error, and refuse
    inputs of different shapes (numpy would otherwise broadcast them into a wrong number).
    """
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0, 2.0])
    errors = y - p
    wrong = {
        "the mean absolute error (MAE): square the errors before averaging":
            np.mean(np.abs(errors)),
        "the mean squared error: take the square root at the end": np.mean(errors ** 2),
        "the root of the *sum* of squared errors: average them, do not add them up":
            np.sqrt(np.sum(errors ** 2)),
    }
    passed = 0

    value = _call("rmse", fn, np.array([3.0, 4.0, 5.0]), np.array([3.0, 4.0, 5.0]))
    if not _close(value, 0.0):
        raise ExerciseError(f"perfect predictions must give 0, got {value}")
    passed += 1

    expected = float(np.sqrt(np.mean(errors ** 2)))
    value = _call("rmse", fn, y, p)
    if not _close(value, expected):
        hint = next((why for why, v in wrong.items() if _close(value, v)), None)
        raise ExerciseError(
            f"rmse({y.tolist()}, {p.tolist()}) returned {value:.4f}, expected "
            f"sqrt((1 + 0 + 1 + 4) / 4) = {expected:.4f}"
            + (f". It looks like {hint}." if hint else "."))
    passed += 1

    value = _call("rmse", fn, p, y)
    if not _close(value, expected):
        raise ExerciseError(f"rmse must be symmetric: swapping the arguments gave {value:.4f}, "
                            f"not {expected:.4f}")
    passed += 1

    value = _call("rmse", fn, [1, 5], [2, 3])
    if not _close(value, math.sqrt(2.5)):
        raise ExerciseError(f"rmse([1, 5], [2, 3]) returned {value}, expected sqrt(2.5) = "
                            f"{math.sqrt(2.5):.4f}: convert lists (and integers) to float arrays")
    passed += 1

    for a, b, why in [
        (np.ones(3), np.ones(4), "3 ratings and 4 predictions"),
        (np.ones(3), np.ones((3, 1)),
         "shapes (3,) and (3, 1), which numpy broadcasts to a 3 x 3 table of differences"),
    ]:
        try:
            value = fn(a, b)
        except Exception:  # any exception is a refusal, which is what is asked
            passed += 1
            continue
        raise ExerciseError(
            f"rmse accepted {why} and returned {value!r}. Compare the shapes first and raise a "
            f"ValueError when they differ: a silent wrong number is worse than an error.")
    return f"check_rmse: all {passed} checks passed"


def _dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: the gain at rank r (from 1) divided by log2(r + 1)."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def check_ndcg(fn: Callable) -> str:
    """Check ``fn(ranked, relevant, k) -> float``, NDCG@k with binary relevance.

    ``ranked`` is a list of item ids, best first; ``relevant`` a set of item ids (gain 1 each);
    ranks start at 1 and are discounted by ``1 / log2(rank + 1)``; the ideal list holds
    ``min(k, len(relevant))`` relevant items, so a user with few relevant items can reach 1.
    """
    cases = [
        # ranked, relevant, k, what it checks
        ([7, 3, 9], {7, 3, 9}, 3, "every item relevant, best first"),
        ([1, 2, 3], {2}, 3, "one relevant item, at rank 2"),
        ([1, 2, 3, 4], {9}, 3, "no relevant item in the list"),
        ([5, 1, 2], {5}, 3, "one relevant item, at the top, with k larger than |relevant|"),
        ([1, 2, 3, 4, 5], {1, 5}, 3, "a relevant item below rank k, which must not count"),
        ([4, 8, 6, 2], {6, 2, 9}, 4, "relevant items at ranks 3 and 4, one never ranked"),
    ]
    for ranked, relevant, k, what in cases:
        top = [1.0 if item in relevant else 0.0 for item in ranked[:k]]
        ideal = [1.0] * min(k, len(relevant))
        expected = _dcg(top) / _dcg(ideal)
        value = _call("ndcg", fn, ranked, relevant, k)
        if _close(value, expected):
            continue
        wrong = {
            "the ideal DCG counts k relevant items, but this user has only "
            f"{len(relevant)}: the ideal list has min(k, |relevant|) of them":
                _dcg(top) / _dcg([1.0] * k),
            "the ranking was not cut at k: only the first k items count":
                _dcg([1.0 if i in relevant else 0.0 for i in ranked]) / _dcg(ideal),
            "the ideal DCG was built from the relevant items in the ranked list only: it must "
            "count every relevant item, ranked or not": _dcg(top) / (_dcg(sorted(top)[::-1]) or 1),
            "this is the DCG without the normalisation: divide by the ideal DCG": _dcg(top),
        }
        hint = next((why for why, v in wrong.items() if _close(value, v)), None)
        if not math.isfinite(value):
            hint = ("a division by zero: the top item's discount is log2(1 + 1) = 1, and the "
                    "ideal DCG of a user with relevant items is never 0")
        raise ExerciseError(
            f"ndcg({ranked}, {relevant}, k={k}) ({what}) returned {value:.4f}, expected "
            f"{expected:.4f}" + (f". It looks like {hint}." if hint else "."))
    return f"check_ndcg: all {len(cases)} checks passed"


def check_split_no_leakage(train: pd.DataFrame, test: pd.DataFrame, kind: str) -> str:
    """Check that a (train, test) split of ratings does not leak test information into train.

    ``kind`` names what the split promises: ``random`` (no rating in both parts), ``temporal``
    (every test rating is at or after every train rating), ``leave-last-out`` (each test user's
    test ratings are at or after all their train ratings) or ``cold-start-items`` (no test item
    appears in train). Every kind also promises the ``random`` one.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"kind must be one of {SPLIT_KINDS}, got {kind!r}")
    needed = {"user_id", "item_id", "timestamp"}
    for name, part in (("train", train), ("test", test)):
        missing = needed - set(part.columns)
        if missing:
            raise ExerciseError(f"{name} lacks the column(s) {sorted(missing)}: keep whole rows "
                                f"of the ratings table in each part")
        if part.empty:
            raise ExerciseError(f"{name} is empty: a split must put ratings in both parts")

    key = ["user_id", "item_id", "timestamp"]
    both = train[key].merge(test[key].drop_duplicates(), on=key)
    if len(both):
        row = both.iloc[0]
        raise ExerciseError(
            f"{len(both)} rating(s) are in both train and test, e.g. user {row.user_id} on item "
            f"{row.item_id} at {row.timestamp}: the model is then tested on what it trained on. "
            f"Assign each row to exactly one part.")

    if kind == "temporal":
        cut = test["timestamp"].min()
        late = int((train["timestamp"] > cut).sum())
        if late:
            raise ExerciseError(
                f"{late} train rating(s) are later than the earliest test rating ({cut}): a "
                f"temporal split trains on the past only. Sort by time and cut once.")
    elif kind == "leave-last-out":
        last_train = train.groupby("user_id")["timestamp"].max()
        first_test = test.groupby("user_id")["timestamp"].min()
        common = first_test.index.intersection(last_train.index)
        leaking = common[(last_train[common] > first_test[common]).to_numpy()]
        if len(leaking):
            user = leaking[0]
            raise ExerciseError(
                f"{len(leaking)} user(s) have train ratings after their test ratings, e.g. user "
                f"{user} (last train {last_train[user]}, first test {first_test[user]}): hold "
                f"out each user's *last* ratings, sorting each user's ratings by time.")
    elif kind == "cold-start-items":
        shared = sorted(set(train["item_id"]) & set(test["item_id"]))
        if shared:
            raise ExerciseError(
                f"{len(shared)} test item(s) also appear in train, e.g. item {shared[0]}: for "
                f"cold-start items, move *all* ratings of the chosen items to test.")
    return f"check_split_no_leakage({kind!r}): no leakage found"
