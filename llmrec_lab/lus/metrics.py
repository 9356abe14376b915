"""Long-term, short-term and beyond-accuracy metrics of a simulated run.

Long-term: cumulative satisfaction, the retention curve, the return interval, session depth.
Short-term: the immediate rating of what users consumed and the NDCG of the slates they saw.
Beyond accuracy: intra-list diversity, novelty, catalogue coverage and calibration (KL).

Cumulative satisfaction is the true utility users drew from the service over the horizon,
per user: every consumption adds its utility, so a policy earns it by pleasing users *and* by
keeping them coming back; a user who churns stops adding. Each function takes plain frames and
arrays, so it can be checked on a hand-made case; :func:`report` applies them all to a run.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_lab.world import World
from llmrec_lab.lus.policies import item_categories
from llmrec_lab.lus.simulator import Run


def cumulative_satisfaction(log: pd.DataFrame, n_users: int) -> float:
    """Total true utility of all consumptions, per user (``log`` needs ``utility``)."""
    return float(log["utility"].sum() / n_users)


def retention_curve(daily: pd.DataFrame, n_users: int) -> pd.Series:
    """Share of all users not yet churned on each day (``daily`` needs ``day``, ``active``)."""
    return pd.Series(daily["active"].to_numpy() / n_users, index=daily["day"].to_numpy(),
                     name="retained")


def _visits(log: pd.DataFrame) -> pd.DataFrame:
    return log[["user_id", "day"]].drop_duplicates().sort_values(["user_id", "day"])


def return_interval(log: pd.DataFrame) -> float:
    """Mean days between a user's consecutive visits (NaN if nobody visited twice)."""
    v = _visits(log)
    gaps = v.groupby("user_id")["day"].diff().dropna()
    return float(gaps.mean()) if len(gaps) else float("nan")


def session_depth(log: pd.DataFrame) -> float:
    """Mean consumptions per visit (a visit is one user on one day)."""
    return float(len(log) / len(_visits(log)))


def intra_list_diversity(slates: np.ndarray, category: np.ndarray) -> float:
    """Mean share of item pairs on a slate that differ in category (0: one category, 1: all apart)."""
    c = category[np.asarray(slates)]
    k = c.shape[1]
    differ = (c[:, :, None] != c[:, None, :]).sum(axis=(1, 2)) / 2
    return float(np.mean(differ / (k * (k - 1) / 2)))


def novelty(slates: np.ndarray, popularity: np.ndarray) -> float:
    """Mean self-information ``-log2 p(i)`` of shown items; ``p`` from ``popularity`` counts + 1."""
    p = (popularity + 1.0) / (popularity + 1.0).sum()
    return float(np.mean(-np.log2(p[np.asarray(slates)])))


def coverage(slates: np.ndarray, n_items: int) -> float:
    """Share of the catalogue shown at least once."""
    return float(len(np.unique(slates)) / n_items)


def category_mix(user_ids: np.ndarray, item_ids: np.ndarray, category: np.ndarray, n_users: int,
                 n_categories: int) -> np.ndarray:
    """Each user's distribution over categories of the given (user, item) pairs (users x C)."""
    counts = np.zeros((n_users, n_categories))
    np.add.at(counts, (np.asarray(user_ids), category[np.asarray(item_ids)]), 1.0)
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.full_like(counts, 1.0 / n_categories), where=total > 0)


def calibration_kl(slates: np.ndarray, users: np.ndarray, target: np.ndarray,
                   category: np.ndarray, alpha: float = 0.01) -> float:
    """Steck's miscalibration: mean KL(p_u || (1 - alpha) q + alpha p_u) over slates.

    ``target`` (users x C) is each user's category mix ``p``; ``q`` is the slate's mix.
    """
    slates, users = np.asarray(slates), np.asarray(users)
    n_cat = target.shape[1]
    q = np.eye(n_cat)[category[slates]].mean(axis=1)
    p = target[users]
    q = (1 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return float(terms.sum(axis=1).mean())


def gap_closed(value: float, greedy: float, oracle: float) -> float:
    """Share of the greedy-to-oracle gap a policy closes: 0 at greedy, 1 at the oracle.

    NaN when greedy equals the oracle: with no gap there is no share to close. A NaN marks that
    one cell of a comparison table, where an error would lose the whole table.
    """
    if oracle == greedy:
        return float("nan")
    return float((value - greedy) / (oracle - greedy))


def report(run: Run, world: World, scores: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of a run on ``world``; with a model's ``scores``, its predicted rating too.

    Popularity (for novelty) and each user's category mix (for calibration) come from the
    world's logged history, which is what the system knew when the run began.
    """
    n_users, n_items = world.config.n_users, world.config.n_items
    category = item_categories(world)
    slates, users = run.slate_matrix(), run.slates["user_id"].to_numpy()
    hist = world.ratings
    popularity = np.bincount(hist["item_id"], minlength=n_items).astype(float)
    target = category_mix(hist["user_id"].to_numpy(), hist["item_id"].to_numpy(), category,
                          n_users, len(world.schema.categories))
    out = {"cumulative_satisfaction": cumulative_satisfaction(run.log, n_users),
           "retained": float(retention_curve(run.daily, n_users).iloc[-1]),
           "return_interval": return_interval(run.log),
           "session_depth": session_depth(run.log),
           "visits_per_user": float(run.daily["visitors"].sum() / n_users),
           "immediate_rating": float(run.log["rating"].mean()),
           "ndcg": float(run.slates["ndcg"].mean()),
           "ild": intra_list_diversity(slates, category),
           "novelty": novelty(slates, popularity),
           "coverage": coverage(slates, n_items),
           "calibration_kl": calibration_kl(slates, users, target, category)}
    if scores is not None:
        out["predicted_rating"] = float(np.take_along_axis(scores[users], slates, axis=1).mean())
    return out
