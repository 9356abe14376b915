"""Ways to split a ratings table, each answering a different evaluation question.

- :func:`random_split` and :func:`kfold`: how well are held-out ratings predicted?
- :func:`temporal_split`: how well does a model trained on the past predict the future?
- :func:`leave_last_out`: what does each user do next?
- :func:`cold_start_items`: can the model recommend items it has never seen rated?
- :func:`split_for`: the course's two protocols by name, ``"warm"`` (random) and ``"cold"``
  (held-out items), each with a validation part; the chapters' experiments split with it.

Every split labels each row once, so the parts are disjoint and together give back the input.
Rows keep their index and relative order, so a part can always be traced back to the input.
Splits that take ``valid_frac``/``valid_n`` return ``(train, valid, test)`` when it is positive,
else ``(train, test)``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN, VALID, TEST = 0, 1, 2


def _require(ratings: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in ratings.columns]
    if missing:
        raise ValueError(f"ratings lack column(s) {', '.join(missing)}")


def _check_fractions(test: float, valid: float) -> None:
    if not (0 < test < 1 and 0 <= valid and test + valid < 1):
        raise ValueError(f"need 0 < test fraction, 0 <= valid fraction and their sum < 1; "
                         f"got {test} and {valid}")


def _parts(ratings: pd.DataFrame, labels: np.ndarray,
           with_valid: bool) -> tuple[pd.DataFrame, ...]:
    """Materialise the parts a label array describes, in (train, [valid,] test) order."""
    wanted = (TRAIN, VALID, TEST) if with_valid else (TRAIN, TEST)
    return tuple(ratings[labels == part] for part in wanted)


def _label_order(order: np.ndarray, n_test: int, n_valid: int) -> np.ndarray:
    """Label the last ``n_test`` positions of ``order`` test and the ``n_valid`` before them valid."""
    labels = np.full(len(order), TRAIN)
    cut = len(order) - n_test
    labels[order[cut:]] = TEST
    labels[order[max(cut - n_valid, 0):cut]] = VALID
    return labels


def random_split(ratings: pd.DataFrame, test_frac: float = 0.2, seed: int = 0,
                 valid_frac: float = 0.0) -> tuple[pd.DataFrame, ...]:
    """Hold out a uniformly random ``test_frac`` of the ratings (and ``valid_frac`` for validation)."""
    _check_fractions(test_frac, valid_frac)
    n = len(ratings)
    order = np.random.default_rng(seed).permutation(n)
    labels = _label_order(order, round(test_frac * n), round(valid_frac * n))
    return _parts(ratings, labels, valid_frac > 0)


def temporal_split(ratings: pd.DataFrame, test_frac: float = 0.2,
                   valid_frac: float = 0.0) -> tuple[pd.DataFrame, ...]:
    """Cut at one global time: every test timestamp is >= every valid one >= every train one.

    Unlike a random split, no rating from the future can inform a prediction about the past.
    Ratings sharing the cut's timestamp keep their input order.
    """
    _require(ratings, "timestamp")
    _check_fractions(test_frac, valid_frac)
    n = len(ratings)
    order = np.argsort(ratings["timestamp"].to_numpy(), kind="stable")
    labels = _label_order(order, round(test_frac * n), round(valid_frac * n))
    return _parts(ratings, labels, valid_frac > 0)


def leave_last_out(ratings: pd.DataFrame, n: int = 1, valid_n: int = 0) -> tuple[pd.DataFrame, ...]:
    """Each user's last ``n`` ratings go to test (and the ``valid_n`` before them to valid).

    Users with no more than ``n + valid_n`` ratings stay wholly in train, since a user with
    nothing left to learn from cannot be evaluated fairly. Ties in time keep input order.
    """
    _require(ratings, "user_id", "timestamp")
    if n < 1 or valid_n < 0:
        raise ValueError(f"need n >= 1 and valid_n >= 0, got n={n}, valid_n={valid_n}")
    users = ratings["user_id"].to_numpy()
    order = np.lexsort((np.arange(len(users)), ratings["timestamp"].to_numpy(), users))
    _, start, count = np.unique(users[order], return_index=True, return_counts=True)
    from_end = np.repeat(start + count, count) - 1 - np.arange(len(users))
    eligible = np.repeat(count, count) > n + valid_n
    sorted_labels = np.where(~eligible, TRAIN,
                             np.where(from_end < n, TEST,
                                      np.where(from_end < n + valid_n, VALID, TRAIN)))
    labels = np.empty(len(users), dtype=int)
    labels[order] = sorted_labels
    return _parts(ratings, labels, valid_n > 0)


def cold_start_items(ratings: pd.DataFrame, frac_items: float = 0.1, seed: int = 0,
                     valid_frac: float = 0.0) -> tuple[pd.DataFrame, ...]:
    """Move all ratings of a random ``frac_items`` of the items to test; train never sees them.

    ``valid_frac`` likewise sets aside a second, disjoint set of items for validation.
    """
    _require(ratings, "item_id")
    _check_fractions(frac_items, valid_frac)
    items, item_of_row = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(items))
    item_labels = _label_order(order, round(frac_items * len(items)), round(valid_frac * len(items)))
    labels = item_labels[item_of_row]
    return _parts(ratings, labels, valid_frac > 0)


def kfold(ratings: pd.DataFrame, k: int = 5,
          seed: int = 0) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Seeded k-fold cross-validation: ``k`` (train, test) pairs whose tests partition the ratings.

    For ml-1m, which unlike ml-100k ships without official folds.
    """
    if not 2 <= k <= len(ratings):
        raise ValueError(f"need 2 <= k <= number of ratings ({len(ratings)}), got k={k}")
    fold_of = np.empty(len(ratings), dtype=int)
    shuffled = np.random.default_rng(seed).permutation(len(ratings))
    for fold, rows in enumerate(np.array_split(shuffled, k)):
        fold_of[rows] = fold
    return [(ratings[fold_of != fold], ratings[fold_of == fold]) for fold in range(k)]


def split_for(ratings: pd.DataFrame, setting: str, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """``(train, valid, test)``: ``"warm"`` is a random 70/10/20 split of the ratings;
    ``"cold"`` holds out all ratings of 20% of the items for test and 10% for validation."""
    if setting == "warm":
        return random_split(ratings, test_frac=0.2, valid_frac=0.1, seed=seed)
    if setting == "cold":
        return cold_start_items(ratings, frac_items=0.2, valid_frac=0.1, seed=seed)
    raise ValueError(f"unknown setting {setting!r}; use 'warm' or 'cold'")
