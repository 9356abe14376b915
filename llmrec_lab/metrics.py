"""Rating-error and top-k ranking metrics.

Rating error (:func:`rmse`, :func:`mae`) asks how close predicted stars are to the true ones.
Ranking metrics ask whether the items a user cares about appear near the top of a list, which
is what a recommender is actually judged on. The conventions, stated once:

- A user's relevant items are a ``set`` of item ids (binary relevance, gain 1 each) or a
  ``dict`` item id -> grade (graded relevance, gain ``2**grade - 1``; items with gain <= 0
  count as not relevant).
- Ranks are 1-based; the item at rank ``r`` is discounted by ``1 / log2(r + 1)``.
- A ranked list shorter than ``k`` is scored as is; it may not repeat an item.
- Metrics are undefined for a user with no relevant items: the per-user functions raise, and
  :func:`ranking_report` leaves such users out of the average and reports how many it kept.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

import numpy as np
import pandas as pd

Relevance = Set[int] | Mapping[int, float]


def rmse(y_true: np.ndarray, y_pred: np.ndarray,
         clip: tuple[float, float] | None = None) -> float:
    """Root mean squared error: punishes large misses more than :func:`mae` does.

    ``clip=(low, high)`` first clips the predictions to the rating scale, as a reported rating
    would be; whatever early-stops a model should read the RMSE under the same rule it reports.
    """
    a, b = _paired(y_true, y_pred, clip)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray,
        clip: tuple[float, float] | None = None) -> float:
    """Mean absolute error, in the units of the ratings (stars); ``clip`` as in :func:`rmse`."""
    a, b = _paired(y_true, y_pred, clip)
    return float(np.mean(np.abs(a - b)))


def _paired(y_true: np.ndarray, y_pred: np.ndarray,
            clip: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float arrays, refusing shapes that numpy would silently broadcast; the
    predictions clipped to ``clip`` where given (the one clipping rule of every rating metric)."""
    a, b = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: y_true {a.shape} vs y_pred {b.shape}")
    if a.size == 0:
        raise ValueError("cannot score empty arrays")
    return a, b if clip is None else np.clip(b, *clip)


def ndcg_at_k(ranked: Sequence[int], relevant: Relevance, k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k``, in [0, 1].

    DCG sums each top-k item's gain times its rank discount; the ideal DCG does the same for
    the best possible list, i.e. the ``min(k, |relevant|)`` largest gains in order. So a user
    with fewer than ``k`` relevant items can still reach 1.
    """
    gains, top = _checked_gains(relevant), _top(ranked, k)
    dcg = np.dot([gains.get(item, 0.0) for item in top], _discounts(len(top)))
    ideal = sorted(gains.values(), reverse=True)[:k]
    return float(dcg / np.dot(ideal, _discounts(len(ideal))))


def recall_at_k(ranked: Sequence[int], relevant: Relevance, k: int) -> float:
    """Share of all relevant items that reach the top ``k`` (denominator ``|relevant|``)."""
    gains = _checked_gains(relevant)
    return sum(item in gains for item in _top(ranked, k)) / len(gains)


def hit_rate_at_k(ranked: Sequence[int], relevant: Relevance, k: int) -> float:
    """1.0 if at least one relevant item is in the top ``k``, else 0.0."""
    gains = _checked_gains(relevant)
    return float(any(item in gains for item in _top(ranked, k)))


def _gains(relevant: Relevance) -> dict[int, float]:
    """Gain of each relevant item under the module's conventions (empty if none is relevant)."""
    if isinstance(relevant, Mapping):
        gains = {item: 2.0 ** grade - 1.0 for item, grade in relevant.items()}
    else:
        gains = dict.fromkeys(relevant, 1.0)
    return {item: g for item, g in gains.items() if g > 0}


def _checked_gains(relevant: Relevance) -> dict[int, float]:
    """:func:`_gains`, raising for a user with nothing relevant: every metric would be 0/0."""
    gains = _gains(relevant)
    if not gains:
        raise ValueError("ranking metrics are undefined for a user with no relevant items")
    return gains


def _top(ranked: Sequence[int], k: int) -> list[int]:
    """The first ``k`` items, checked: a repeated item would be counted twice."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = list(ranked[:k])
    if len(set(top)) != len(top):
        raise ValueError("ranked list repeats an item")
    return top


def _discounts(n: int) -> np.ndarray:
    """``1 / log2(rank + 1)`` for ranks 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest scores, best first.

    Uses a partial sort, so ties are broken deterministically but in no promised order.
    """
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_report(scores: np.ndarray, relevant: Sequence[Relevance], k: int,
                   exclude: Sequence[Set[int]] | None = None,
                   item_ids: np.ndarray | None = None) -> dict[str, float]:
    """Rank every item for every user and average NDCG, recall and hit rate at ``k``.

    The means of :func:`ranking_per_user` (see there for the arguments); ``"users"`` says how
    many users were averaged.
    """
    table = ranking_per_user(scores, relevant, k, exclude, item_ids)
    return {**{name: float(value) for name, value in table.mean().items()}, "users": len(table)}


def ranking_per_user(scores: np.ndarray, relevant: Sequence[Relevance], k: int,
                     exclude: Sequence[Set[int]] | None = None,
                     item_ids: np.ndarray | None = None) -> pd.DataFrame:
    """NDCG, recall and hit rate at ``k`` of each user, indexed by score row.

    ``scores`` is users x items; row ``u`` goes with ``relevant[u]`` and ``exclude[u]``.
    ``exclude`` holds items the user already saw in training: they are never recommended, so a
    model is not rewarded for repeating them. Both hold item ids, which are the column
    positions unless ``item_ids`` names the id of each column. Users with no relevant items are
    left out. A NaN score is refused: it has no place in a ranking, and dropping it would
    quietly shorten that user's list. Two models ranked for the same users give the same rows,
    so their per-user values pair up (:func:`llmrec_lab.stats.paired_interval`).
    """
    scores = np.array(scores, dtype=np.float64)  # a copy: excluded cells are overwritten
    if len(relevant) != scores.shape[0]:
        raise ValueError(f"{len(relevant)} relevant sets for {scores.shape[0]} score rows")
    nan_rows = int(np.isnan(scores).any(axis=1).sum())
    if nan_rows:
        raise ValueError(f"scores hold NaN in {nan_rows} of {scores.shape[0]} user rows; "
                         "score every item or drop those users first")
    ids = np.arange(scores.shape[1]) if item_ids is None else np.asarray(item_ids)
    if exclude is not None:
        _mask_seen(scores, exclude, pd.Index(ids))
    top = top_k(scores, k)
    rows = {}
    for u, rel in enumerate(relevant):
        if not _gains(rel):
            continue
        ranked = ids[top[u][np.isfinite(scores[u, top[u]])]]  # drop masked fillers
        rows[u] = (ndcg_at_k(ranked, rel, k), recall_at_k(ranked, rel, k),
                   hit_rate_at_k(ranked, rel, k))
    if not rows:
        raise ValueError("no user has a relevant item; nothing to average")
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=[f"ndcg@{k}", f"recall@{k}", f"hit_rate@{k}"])


def _mask_seen(scores: np.ndarray, exclude: Sequence[Set[int]], columns: pd.Index) -> None:
    """Set each user's already-seen items to -inf, in place; ids with no column are ignored."""
    if len(exclude) != scores.shape[0]:
        raise ValueError(f"{len(exclude)} exclude sets for {scores.shape[0]} score rows")
    for u, seen in enumerate(exclude):
        cols = columns.get_indexer(list(seen))
        scores[u, cols[cols >= 0]] = -np.inf

