"""Satisfaction modelling: predict from behaviour in the logs whether a user comes back.

Satisfaction itself is hidden; what a system logs is behaviour. :func:`behaviour_features`
turns a consumption log into one row per (user, day) with what was known that morning:

- ``days_since_visit`` and ``mean_gap``: the gap since the last visit and the usual gap;
- ``visits_week``: visits in the last 7 days;
- ``last_depth``: items consumed on the last visit (session depth);
- ``rating_recent`` and ``rating_trend``: a fast moving average of the user's ratings, and
  fast minus slow (is it going down?);
- ``diversity``: Gini-Simpson diversity of recent consumption over categories (0: one
  category only), from counts discounted by ``decay`` per day;
- ``repeat_share``: the largest category's share of those recent counts.

The label is whether the user visited that day. :class:`SatisfactionModel` fits a logistic
regression on them; :func:`evaluate` scores it against the simulator's truth: AUC on the
observed returns beside the AUC of the true return probability (the ceiling), calibration
against observed returns and against the true probability, and how well the predicted chance
to return ranks users by their true satisfaction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llmrec_lab.world.behaviour import DAY_SECONDS, EPOCH
from llmrec_lab.world import World
from llmrec_lab.lus.policies import item_categories
from llmrec_lab.lus.simulator import Run

FEATURES = ("days_since_visit", "mean_gap", "visits_week", "last_depth", "rating_recent",
            "rating_trend", "diversity", "repeat_share")
FAST, SLOW = 0.3, 0.05  # weights of the newest visit in the fast and slow rating averages


def full_log(world: World, run: Run) -> pd.DataFrame:
    """The world's logged history followed by the run's log: user, item, rating, day."""
    hist = world.ratings.assign(day=(world.ratings["timestamp"] - EPOCH) // DAY_SECONDS)
    cols = ["user_id", "item_id", "rating", "day"]
    return pd.concat([hist[cols], run.log[cols]], ignore_index=True)


def behaviour_features(log: pd.DataFrame, category: np.ndarray, n_users: int, days: np.ndarray,
                       decay: float = 0.8) -> pd.DataFrame:
    """One row per (user, day in ``days``) with the features above, from ``log`` rows before it.

    Users who never visited before a day have no row for it: there is nothing to go on.
    """
    n_cat = int(category.max()) + 1
    last_visit = np.full(n_users, -1, dtype=np.int64)
    n_visits = np.zeros(n_users)
    gap_sum = np.zeros(n_users)
    recent_visits: list[np.ndarray] = []
    last_depth = np.zeros(n_users)
    fast, slow = np.zeros(n_users), np.zeros(n_users)
    mix = np.zeros((n_users, n_cat))
    by_day = dict(tuple(log.groupby("day")))
    wanted = set(int(d) for d in days)
    rows = []
    for day in range(int(log["day"].min()), int(max(days)) + 1):
        if day in wanted:
            known = np.flatnonzero(last_visit >= 0)
            week = np.zeros(n_users)
            for visitors in recent_visits[-7:]:
                week[visitors] += 1
            share = mix[known] / mix[known].sum(axis=1, keepdims=True)
            rows.append(pd.DataFrame({
                "user_id": known, "day": day,
                "days_since_visit": day - last_visit[known],
                "mean_gap": np.where(n_visits[known] > 1,
                                     gap_sum[known] / np.maximum(n_visits[known] - 1, 1),
                                     day - last_visit[known]),
                "visits_week": week[known], "last_depth": last_depth[known],
                "rating_recent": fast[known], "rating_trend": fast[known] - slow[known],
                "diversity": 1.0 - (share ** 2).sum(axis=1), "repeat_share": share.max(axis=1)}))
        mix *= decay
        today = by_day.get(day)
        if today is None:
            recent_visits.append(np.empty(0, dtype=np.int64))
            continue
        u = today["user_id"].to_numpy()
        np.add.at(mix, (u, category[today["item_id"].to_numpy()]), 1.0)
        visitors = np.unique(u)
        depth = np.bincount(u, minlength=n_users)[visitors]
        mean_rating = np.bincount(u, today["rating"].to_numpy(), minlength=n_users)[visitors] / depth
        first = last_visit[visitors] < 0
        gap_sum[visitors] += np.where(first, 0, day - last_visit[visitors])
        fast[visitors] = np.where(first, mean_rating, fast[visitors] + FAST * (mean_rating - fast[visitors]))
        slow[visitors] = np.where(first, mean_rating, slow[visitors] + SLOW * (mean_rating - slow[visitors]))
        n_visits[visitors] += 1
        last_visit[visitors] = day
        last_depth[visitors] = depth
        recent_visits.append(visitors)
    return pd.concat(rows, ignore_index=True)


def labelled_panel(world: World, run: Run) -> pd.DataFrame:
    """Features for every simulated day, with the observed return and the truth beside them."""
    panel = behaviour_features(full_log(world, run), item_categories(world),
                               world.config.n_users, run.days)
    d = panel["day"].to_numpy() - run.days[0]
    u = panel["user_id"].to_numpy()
    return panel.assign(returned=run.visited[d, u], p_true=run.p_return[d, u],
                        satisfaction=run.satisfaction[d, u], churned=run.churned[d, u])


@dataclass
class SatisfactionModel:
    """Logistic regression of ``returned`` on the standardised behaviour features."""

    features: tuple[str, ...] = FEATURES

    def fit(self, panel: pd.DataFrame) -> "SatisfactionModel":
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.model_.fit(panel[list(self.features)].to_numpy(), panel["returned"].to_numpy())
        return self

    def predict(self, panel: pd.DataFrame) -> np.ndarray:
        """Predicted chance to return that day."""
        return self.model_.predict_proba(panel[list(self.features)].to_numpy())[:, 1]

    def coefficients(self) -> pd.Series:
        """Logit change per standard deviation of each feature."""
        return pd.Series(self.model_[-1].coef_[0], index=list(self.features), name="coef")


def calibration_table(p: np.ndarray, observed: np.ndarray, p_true: np.ndarray,
                      bins: int = 10) -> pd.DataFrame:
    """Per decile of predicted probability: mean prediction, observed rate, mean true chance."""
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "predicted": p, "observed": observed.astype(float),
                          "true": p_true})
    table = frame.groupby("bin").agg(predicted=("predicted", "mean"),
                                     observed=("observed", "mean"), true=("true", "mean"),
                                     n=("predicted", "size"))
    return table


def expected_calibration_error(table: pd.DataFrame, against: str = "observed") -> float:
    """Mean |prediction - reference| over the bins of :func:`calibration_table`, weighted by size."""
    return float(np.average((table["predicted"] - table[against]).abs(), weights=table["n"]))


def evaluate(model: SatisfactionModel, panel: pd.DataFrame) -> dict[str, float]:
    """How well the model's chance to return matches the truth on ``panel``."""
    p = model.predict(panel)
    y = panel["returned"].to_numpy()
    table = calibration_table(p, y, panel["p_true"].to_numpy())
    alive = ~panel["churned"].to_numpy()
    return {"auc": float(roc_auc_score(y, p)),
            "auc_truth": float(roc_auc_score(y, panel["p_true"])),
            "ece_observed": expected_calibration_error(table, "observed"),
            "ece_truth": expected_calibration_error(table, "true"),
            "mae_truth": float(np.mean(np.abs(p - panel["p_true"]))),
            "spearman_satisfaction": float(spearmanr(p[alive],
                                                     panel["satisfaction"].to_numpy()[alive])[0])}
