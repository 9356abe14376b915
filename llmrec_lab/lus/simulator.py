"""Continue a world past its logged history under a policy, and summarise what it did to users."""
from __future__ import annotations

import numpy as np

from llmrec_lab.data.dynamics import Policy, Rollout, rollout
from llmrec_lab.data.world import World


def simulate(world: World, policy: Policy, days: int, seed: int = 0) -> Rollout:
    """Replay ``days`` more days of ``world`` under ``policy``, from where its history ended.

    The world itself is left untouched; the same seed gives the same users' choices, so two
    policies run with one seed face the same dice wherever they show the same thing.
    """
    start = world.config.n_days
    rng = np.random.default_rng([world.config.seed, 1000, seed])
    return rollout(world.truth, policy, range(start, start + days), rng, world.state.copy())


def summarize(run: Rollout, n_users: int) -> dict[str, float]:
    """Short-term (utility and rating per consumption) beside long-term (visits, retention)."""
    log, daily = run.log, run.daily
    return {"mean_utility": float(log["utility"].mean()),
            "mean_rating": float(log["rating"].mean()),
            "total_utility": float(log["utility"].sum()),
            "consumptions": int(len(log)),
            "visits": int(daily["visitors"].sum()),
            "retained": float(daily["active"].iloc[-1] / n_users)}
