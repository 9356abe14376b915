"""Chapter 3.4's experiment: over a horizon of simulated days, does a policy that reads what
users had lately keep them more satisfied than greedy ranking by predicted rating, and how
much of the gap to the oracle does it close?

It runs in three calls: score items, build the policies, compare them. :func:`mf_scores` fits
the rating model (:func:`fit_mf`: MF chosen by validation RMSE, with the effect of the user's
recent history of a category taken out of its scores); :func:`make_policy` builds each policy
of :data:`POLICIES` (:mod:`llmrec_lab.lus.policies`), giving the LUS-aware ones the strengths
:func:`recency_effects` estimates from the log; :func:`compare` simulates each policy with one
seed (:mod:`llmrec_lab.lus.simulator`) and tables the LUS metrics.

The notebook, the ``llmrec-lab lus`` command, Chapter 4.3's case studies and the benchmark all
go through these, so the numbers they print come from one code path.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_lab.config import one_thread
from llmrec_lab.world.behaviour import Policy
from llmrec_lab.splits import random_split
from llmrec_lab.world import World
from llmrec_lab.lus.metrics import gap_closed, report
from llmrec_lab.lus.policies import (BanditPolicy, ConsumptionHistory, calibrated_policy,
                                     fit_recency_effects, greedy_policy, item_categories,
                                     lus_policy, mmr_policy, oracle_policy, random_policy,
                                     recency_features)
from llmrec_lab.lus.simulator import Run, simulate
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import RatingModel, make_model, score_all

POLICIES = ("random", "greedy", "mmr", "calibrated", "lus", "learned", "oracle")


MF_GRID = tuple((reg, factors) for reg in (0.1, 0.3) for factors in (16, 32))
"""(reg, factors) settings :func:`fit_mf` chooses among, by validation RMSE."""


def fit_mf(world: World, epochs: int, grid: tuple[tuple[float, int], ...] = MF_GRID,
           valid_frac: float = 0.1, seed: int = 0) -> tuple[RatingModel, pd.DataFrame]:
    """The chapter's rating model: MF that separates a user's taste from their recent history.

    Two random ``valid_frac`` shares of the logged ratings are held out, for two jobs. Each
    (reg, factors) of ``grid`` trains on the rest, early-stopped on the first held-out share
    (``valid``), and the lowest validation RMSE wins. Logged ratings also carry the user's
    state: a category had lately is rated lower, a fresh one higher. So the winner's residuals
    on ``valid`` (ratings it was not fitted to) are regressed on
    :func:`~llmrec_lab.lus.policies.recency_features`, and the same setting is refitted, for the
    winner's best number of epochs, on ratings with that effect taken out: its scores then
    estimate the rating of an item on its own, and it predicts a logged rating as score plus
    effect. Which of the two is kept is decided on the second share (``choice``), which neither
    the early stopping nor the effect has seen: decided on ``valid``, the model with the effect
    fitted there would be favoured in-sample.

    Both predictions are clipped to the rating scale seen in training, the rule by which MF
    early-stops and predicts. Only rating accuracy on held-out ratings decides; what a policy
    later does with the scores plays no part. Returns the model and the ``choice`` ratings with
    both models' predictions (columns ``rating``, ``plain``, ``with_recency``), so that a
    chapter can put an interval on the difference (:func:`llmrec_lab.stats.rmse_difference`).
    """
    category = item_categories(world)
    train, valid, choice = random_split(world.ratings, test_frac=valid_frac,
                                        valid_frac=valid_frac, seed=seed)
    with one_thread():
        fits = [make_model("mf", epochs=epochs, reg=reg, n_factors=factors, seed=seed)
                .fit(train, valid=valid) for reg, factors in grid]
    plain = min(fits, key=lambda m: min(h["valid_rmse"] for h in m.history_))
    best_epochs = min(plain.history_, key=lambda h: h["valid_rmse"])["epoch"]
    x = recency_features(world.ratings, category)
    effect = {name: x.loc[part.index].to_numpy() for name, part in
              (("train", train), ("valid", valid), ("choice", choice))}
    residual = valid["rating"].to_numpy() - plain.score(valid["user_id"], valid["item_id"])
    beta = np.linalg.lstsq(np.column_stack([np.ones(len(residual)), effect["valid"]]), residual,
                           rcond=None)[0][1:]
    with one_thread():
        adjusted = make_model("mf", epochs=best_epochs, reg=plain.reg,
                              n_factors=plain.n_factors, seed=seed).fit(
            train.assign(rating=train["rating"] - effect["train"] @ beta))
    u, i = choice["user_id"], choice["item_id"]
    held_out = pd.DataFrame({
        "rating": choice["rating"],
        "plain": np.clip(plain.score(u, i), *plain.scale_),
        "with_recency": np.clip(adjusted.score(u, i) + effect["choice"] @ beta, *plain.scale_)})
    better = (rmse(held_out["rating"], held_out["with_recency"])
              < rmse(held_out["rating"], held_out["plain"]))
    return (adjusted if better else plain), held_out


def mf_scores(world: World, epochs: int, seed: int = 0) -> np.ndarray:
    """Predicted ratings (users x items) of the rating model :func:`fit_mf` picks on the log."""
    model, _ = fit_mf(world, epochs, seed=seed)
    return score_all(model, np.arange(world.config.n_users), np.arange(world.config.n_items))


def recency_effects(world: World, scores: np.ndarray) -> tuple[float, float]:
    """The LUS re-ranker's ``(recency, fresh)`` strengths, estimated from the world's log.

    See :func:`~llmrec_lab.lus.policies.fit_recency_effects`: how much lower (higher) logged
    ratings are than ``scores`` predicts, per recent consumption of the category (for a fresh
    category). Neither strength may be negative.
    """
    r = world.ratings
    predicted = scores[r["user_id"].to_numpy(), r["item_id"].to_numpy()]
    recency, fresh = fit_recency_effects(r, predicted, item_categories(world))
    return max(recency, 0.0), max(fresh, 0.0)


def make_policy(name: str, world: World, scores: np.ndarray, seed: int = 0) -> Policy:
    """A fresh policy by name (one of :data:`POLICIES`), with the chapter's settings."""
    k = world.config.slate_size
    category = item_categories(world)
    if name == "random":
        return random_policy(world.config.n_items, k, seed=seed)
    if name == "greedy":
        return greedy_policy(scores, k)
    if name == "mmr":
        return mmr_policy(scores, category, k)
    if name == "calibrated":
        return calibrated_policy(scores, category, k)
    if name == "lus":
        recency, fresh = recency_effects(world, scores)
        return lus_policy(scores, ConsumptionHistory.from_world(world), k, recency, fresh)
    if name == "learned":
        _, fresh = recency_effects(world, scores)
        return BanditPolicy(scores, ConsumptionHistory.from_world(world), k, fresh=fresh,
                            seed=seed)
    if name == "oracle":
        return oracle_policy(world.truth, k)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


def compare(world: World, scores: np.ndarray, names: tuple[str, ...], days: int,
            seed: int = 0) -> tuple[pd.DataFrame, dict[str, Run]]:
    """Simulate each named policy for ``days`` with one seed; a table of :func:`report` rows.

    With both ``greedy`` and ``oracle`` among the names, ``gap_closed`` says what share of the
    greedy-to-oracle gap in cumulative satisfaction each policy closes.
    """
    runs = {name: simulate(world, make_policy(name, world, scores, seed), days, seed)
            for name in names}
    table = pd.DataFrame({name: report(run, world, scores) for name, run in runs.items()}).T
    if {"greedy", "oracle"} <= set(names):
        cs = table["cumulative_satisfaction"]
        table["gap_closed"] = [gap_closed(v, cs["greedy"], cs["oracle"]) for v in cs]
    return table, runs
