"""Verdicts from paired intervals: is model A better than model B on the same test ratings?

Every comparison in the course is *paired*: both models score the same test ratings, so most of
what makes one test set harder than another cancels in the per-rating difference, and the
interval is far narrower than two separate error bars would suggest. A verdict is the sign of
the interval, never a fixed tolerance: a tolerance of 0.02 stars says nothing when the sampling
error of a 150-rating test set is 0.06.

Several seeds (worlds, splits, initialisations) enter as one array per seed. Each seed counts
equally; the interval covers the test ratings' sampling error within the seeds, which is the
error the course's verdicts are about ("on ratings like these, is A better?").

The interval is Student's t with the pooled degrees of freedom (the normal interval once there
are more than a few dozen units, and honest for five seeds of a simulation, where the seeds
themselves are the units). A paired bootstrap gives the same answer at the sizes the course
uses and costs thousands of resamples, so it is left out.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

PerSeed = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class Interval:
    """An estimate of ``A - B`` with its interval. For losses (every paired comparison of the
    course) negative means A is better, which is what :attr:`verdict` says in words."""

    estimate: float
    low: float
    high: float
    n: int
    seeds: int
    level: float

    @property
    def verdict(self) -> str:
        """``"A better"`` or ``"A worse"`` when the interval excludes zero, else ``"undecided"``."""
        if self.high < 0:
            return "A better"
        if self.low > 0:
            return "A worse"
        return "undecided"

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_interval(loss_a: PerSeed, loss_b: PerSeed, level: float = 0.95) -> Interval:
    """Interval for the mean of ``loss_a - loss_b`` over paired units (ratings, users).

    ``loss_a`` and ``loss_b`` are one array per seed (or a single array), each pair of the same
    length: A's and B's loss on the same units, e.g. squared errors or per-user NDCG with a
    minus sign. The estimate is the mean over seeds of each seed's mean difference.
    """
    diffs = [a - b for a, b in zip(*_per_seed(loss_a, loss_b), strict=True)]
    means = np.array([d.mean() for d in diffs])
    variances = np.array([d.var(ddof=1) / d.size for d in diffs])
    return _interval(means, variances, [d.size for d in diffs], level)


def unpaired_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Interval:
    """Interval for ``mean(a) - mean(b)`` when the two samples are different units (Welch).

    For what cannot be paired: two groups of users, say, each user one value (average a user's
    ratings first, so that each unit counts once). The degrees of freedom are Welch's.
    """
    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (a, b))
    if min(a.size, b.size) < 2:
        raise ValueError(f"need at least 2 values in each sample, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("values must be finite")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if va + vb else 1.0
    return _around(float(a.mean() - b.mean()), float(np.sqrt(va + vb)), dof, a.size + b.size,
                   1, level)


def rmse_difference(y_true: PerSeed, pred_a: PerSeed, pred_b: PerSeed,
                    level: float = 0.95) -> Interval:
    """Interval for ``RMSE(A) - RMSE(B)`` on the same test ratings, one array per seed.

    ``RMSE_a - RMSE_b = (MSE_a - MSE_b) / (RMSE_a + RMSE_b)``: the paired interval of the squared
    errors' difference, divided by the sum of the two RMSEs (the delta method; the sum varies
    far less than the difference, so it is treated as fixed).
    """
    ys, pa = _per_seed(y_true, pred_a)
    _, pb = _per_seed(y_true, pred_b)
    means, variances = [], []
    for y, a, b in zip(ys, pa, pb, strict=True):
        if not y.shape == a.shape == b.shape:
            raise ValueError(f"shape mismatch: y_true {y.shape}, pred_a {a.shape}, "
                             f"pred_b {b.shape}")
        sq_a, sq_b = (a - y) ** 2, (b - y) ** 2
        scale = np.sqrt(sq_a.mean()) + np.sqrt(sq_b.mean())
        if scale == 0:  # both predictions exact: no difference and no spread
            means.append(0.0)
            variances.append(0.0)
            continue
        d = sq_a - sq_b
        means.append(d.mean() / scale)
        variances.append(d.var(ddof=1) / d.size / scale ** 2)
    return _interval(np.array(means), np.array(variances), [y.size for y in ys], level)


def runs_rmse_difference(runs: Sequence, a: str, b: str, masks: Sequence[np.ndarray] | None = None,
                         level: float = 0.95) -> Interval:
    """:func:`rmse_difference` of models ``a`` and ``b`` over the seeds of an experiment.

    Each run (one seed) holds ``ratings`` (the test ratings) and ``predictions`` (model name ->
    predictions of those ratings), as the experiments of :mod:`llmrec_lab.experiments` return
    them. ``masks`` (one boolean array per run) keeps a subset of each run's ratings: a group of
    users, say.
    """
    keep = masks if masks is not None else [slice(None)] * len(runs)
    if len(keep) != len(runs):
        raise ValueError(f"{len(keep)} masks for {len(runs)} runs")
    return rmse_difference([r.ratings[m] for r, m in zip(runs, keep)],
                           [r.predictions[a][m] for r, m in zip(runs, keep)],
                           [r.predictions[b][m] for r, m in zip(runs, keep)], level)


def runs_ndcg_difference(runs: Sequence, a: str, b: str, level: float = 0.95) -> Interval:
    """The paired interval of model ``a``'s NDCG loss (1 - NDCG) minus ``b``'s over the same
    users, seeds pooled: negative means ``a`` ranks better, as for RMSE, and so says the verdict.

    Each run (one seed) holds ``ndcg``, a table of NDCG per user (rows) and model (columns), as
    the experiments of :mod:`llmrec_lab.experiments` return it.
    """
    return paired_interval([1 - r.ndcg[a].to_numpy() for r in runs],
                           [1 - r.ndcg[b].to_numpy() for r in runs], level)


def compare_rmse(y_true: PerSeed, predictions: Mapping[str, PerSeed], reference: str,
                 level: float = 0.95) -> pd.DataFrame:
    """Each model's RMSE difference from ``reference``, one row per model (the table a chapter
    prints beside its RMSE table): estimate, interval bounds and verdict."""
    if reference not in predictions:
        raise ValueError(f"reference {reference!r} is not among the models {list(predictions)}")
    rows = {}
    for name, pred in predictions.items():
        if name == reference:
            continue
        iv = rmse_difference(y_true, pred, predictions[reference], level)
        rows[name] = {"difference": iv.estimate, "low": iv.low, "high": iv.high,
                      "verdict": iv.verdict.replace("A", name, 1)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(f"minus {reference}")


def _per_seed(a: PerSeed, b: PerSeed) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both inputs as lists of float arrays, one per seed, checked to pair up."""
    a_list, b_list = _as_list(a), _as_list(b)
    if len(a_list) != len(b_list):
        raise ValueError(f"{len(a_list)} seeds against {len(b_list)}")
    for s, (x, y) in enumerate(zip(a_list, b_list)):
        if x.shape != y.shape:
            raise ValueError(f"seed {s}: shape mismatch {x.shape} vs {y.shape}")
        if x.size < 2:
            raise ValueError(f"seed {s}: need at least 2 paired values, got {x.size}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"seed {s}: values must be finite")
    return a_list, b_list


def _as_list(x: PerSeed) -> list[np.ndarray]:
    """A list or tuple of arrays is one array per seed; anything else (an array, a Series, a
    list of numbers) is a single seed."""
    if isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) >= 1:
        return [np.asarray(v, dtype=np.float64).ravel() for v in x]
    return [np.asarray(x, dtype=np.float64).ravel()]


def _interval(means: np.ndarray, variances: np.ndarray, sizes: list[int],
              level: float) -> Interval:
    """The seeds' mean difference, its standard error and the pooled degrees of freedom."""
    return _around(float(means.mean()), float(np.sqrt(variances.sum()) / len(means)),
                   sum(sizes) - len(sizes), sum(sizes), len(means), level)


def _around(estimate: float, se: float, dof: float, n: int, seeds: int,
            level: float) -> Interval:
    """Student's t interval of ``level`` around ``estimate``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    half = float(student_t.ppf(0.5 + level / 2, dof) * se)
    return Interval(estimate=estimate, low=estimate - half, high=estimate + half, n=n,
                    seeds=seeds, level=level)
