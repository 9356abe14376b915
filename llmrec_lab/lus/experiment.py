"""The chapter's experiment in three calls: score items, build the policies, compare them.

The notebook, the ``llmrec-lab lus`` command and the benchmark all go through these, so the
numbers they print come from one code path.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_lab.data.dynamics import Policy
from llmrec_lab.data.world import World
from llmrec_lab.lus.metrics import gap_closed, report
from llmrec_lab.lus.policies import (BanditPolicy, ConsumptionHistory, calibrated_policy,
                                     greedy_policy, item_categories, lus_policy, mmr_policy,
                                     oracle_policy, random_policy)
from llmrec_lab.lus.simulator import Run, simulate
from llmrec_lab.models.baselines import make_model, score_all

POLICIES = ("random", "greedy", "mmr", "calibrated", "lus", "learned", "oracle")


def mf_scores(world: World, epochs: int, seed: int = 0) -> np.ndarray:
    """Predicted ratings (users x items) of matrix factorisation fitted on the world's log."""
    model = make_model("mf", epochs=epochs, seed=seed).fit(world.ratings)
    return score_all(model, np.arange(world.config.n_users), np.arange(world.config.n_items))


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
        return lus_policy(scores, ConsumptionHistory.from_world(world), k)
    if name == "learned":
        return BanditPolicy(scores, ConsumptionHistory.from_world(world), k, seed=seed)
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
