"""Ranking evaluation shared by the experiments: NDCG@k per user, the same users for every model.

Rating accuracy needs only predictions and :func:`llmrec_lab.metrics.rmse`. Ranking needs a
protocol: whose lists are judged, among which candidates, with which items already seen. It
lives here once, so that Chapter 3.1's towers, Chapter 3.2's fusion models and Chapter 4.3's
pipelines rank by the same rules, and two models ranked for the same users pair up
(:func:`llmrec_lab.stats.paired_interval`). :func:`evaluate` reports one fitted model on a
split of a world: its RMSE and NDCG@k next to the oracle's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from llmrec_lab.metrics import ranking_per_user, rmse

if TYPE_CHECKING:  # annotations only: the protocol needs no model code
    from llmrec_lab.world import World
    from llmrec_lab.models.baselines import RatingModel

NOISE_FLOOR = "noise floor"  # the oracle that knows each rating's moment (World.oracle_predict)
STATIC_FLOOR = "static floor"  # the best from user and item alone (World.static_predict)


def ndcg_per_user(models: Mapping[str, object], train: pd.DataFrame, test: pd.DataFrame,
                  catalogue: np.ndarray, cold: bool, seed: int = 0, k: int = 10,
                  max_users: int | None = 500, truth=None) -> pd.DataFrame:
    """NDCG@k of each model (a column per name; each has ``score(users, items)``) per user.

    Judged: at most ``max_users`` of the users who rated a test item 4 or more, drawn with
    ``seed`` (the same users for every model given the same test). Relevant: the test items the
    user rated 4 or more. Candidates: on a cold split (``cold``) the test's items, which
    training never saw; on a warm one every item of ``catalogue`` the user did not rate in
    training. Scoring each user against the whole catalogue was most of an evaluation's cost
    (1.2 million pairs in the ``cpu`` world); per-user NDCG@10 there has a standard deviation
    of about 0.1, so 500 users give a standard error of about 0.005.

    With ``truth`` (a world's :class:`~llmrec_lab.world.behaviour.Truth`), a column
    :data:`STATIC_FLOOR` ranks by the true static utility: the best a model of (user, item)
    can rank.
    """
    liked = test[test["rating"] >= 4].groupby("user_id")["item_id"].apply(set)
    users = liked.index.to_numpy()
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    relevant = liked.loc[users].tolist()
    items = np.sort(test["item_id"].unique() if cold else np.unique(catalogue))
    seen = None if cold else (train.groupby("user_id")["item_id"].apply(set)
                              .reindex(users, fill_value=set()).tolist())
    grid = users[:, None], items[None, :]
    scores = {name: m.score(*grid) for name, m in models.items()}
    if truth is not None:
        scores[STATIC_FLOOR] = truth.static_utility(*grid)
    table = pd.DataFrame({name: ranking_per_user(s, relevant, k, seen, items)[f"ndcg@{k}"]
                          for name, s in scores.items()})
    table.index = users[table.index]
    return table.rename_axis("user_id")


def evaluate(model: RatingModel, world: World, train: pd.DataFrame, test: pd.DataFrame,
             k: int = 10, cold: bool = False, max_users: int | None = 500,
             seed: int = 0) -> dict[str, float]:
    """RMSE on ``test`` and NDCG@k of ranking, next to the oracle's.

    RMSE uses every test rating; NDCG follows :func:`ndcg_per_user` (warm: candidates are the
    items a user did not rate in training; cold: the test's items) and the oracle ranks by true
    static utility.
    """
    y = test["rating"].to_numpy()
    ndcg = ndcg_per_user({"model": model}, train, test, world.items["item_id"].to_numpy(), cold,
                         seed, k, max_users, truth=world.truth).mean()
    key = f"ndcg@{k}"
    return {"rmse": rmse(y, model.predict(test["user_id"].to_numpy(), test["item_id"].to_numpy())),
            key: float(ndcg["model"]),
            "oracle_rmse": rmse(y, world.oracle_predict(test)),
            f"oracle_{key}": float(ndcg[STATIC_FLOOR])}
