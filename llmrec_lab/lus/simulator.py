"""Continue a world past its logged history under a policy, and summarise what it did to users.

:func:`simulate` wraps the policy in a recorder that keeps, each day, what a system never sees
but an evaluation needs: every user's true chance to return and satisfaction, who has churned,
and the slates shown with their NDCG against the user's true utility that day. The recorder
reads the state before the policy acts and changes nothing, so the same seed gives the same run
whether or not anyone looks at the record.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmrec_lab.world.behaviour import (Policy, Truth, UserState, expected_rating,
                                       return_probability, rollout, utility)
from llmrec_lab.world import World
from llmrec_lab.metrics import top_k


@dataclass
class Run:
    """One simulated stretch: the consumption log, the daily table, the end state and the record.

    ``log`` and ``daily`` are as in :class:`llmrec_lab.world.behaviour.Rollout`. The panel arrays
    are (days, users): ``p_return`` the true chance each user had to come back that day,
    ``satisfaction`` their satisfaction that morning, ``churned`` whether they had left,
    ``visited`` whether they came. ``slates`` has one row per visit (``day``, ``user_id``,
    ``ndcg``, and the items in ``slot0`` ... ``slot{k-1}``).
    """

    log: pd.DataFrame
    daily: pd.DataFrame
    state: UserState
    days: np.ndarray
    p_return: np.ndarray
    satisfaction: np.ndarray
    churned: np.ndarray
    visited: np.ndarray
    slates: pd.DataFrame

    def slate_matrix(self) -> np.ndarray:
        """The shown slates as an (visits, k) array of item ids."""
        return self.slates.filter(like="slot").to_numpy()


def _checked(slates: np.ndarray, day: int) -> np.ndarray:
    """The policy's slates, refused if one repeats an item: NDCG would count it twice and the
    diversity and coverage metrics would skew."""
    ordered = np.sort(slates, axis=1)
    repeats = int((ordered[:, 1:] == ordered[:, :-1]).any(axis=1).sum())
    if repeats:
        raise ValueError(f"the policy showed {repeats} slate(s) on day {day} that repeat an item;"
                         " a slate must hold distinct items")
    return slates


class _Recorder:
    """Call the policy, noting the truth of the morning and the slates it showed."""

    def __init__(self, truth: Truth, policy: Policy):
        self.truth, self.policy = truth, policy
        self.items = np.arange(truth.n_items)[None, :]
        self.p_return, self.satisfaction, self.churned, self.visited = [], [], [], []
        self.days, self.slates, self.users, self.ndcg = [], [], [], []

    def __call__(self, users: np.ndarray, day: int, state: UserState) -> np.ndarray:
        self.days.append(day)
        self.p_return.append(return_probability(self.truth, state))
        self.satisfaction.append(state.satisfaction.copy())
        self.churned.append(state.churned.copy())
        visited = np.zeros(self.truth.n_users, dtype=bool)
        visited[users] = True
        self.visited.append(visited)
        slates = _checked(np.asarray(self.policy(users, day, state), dtype=np.int64), day)
        self.ndcg.append(self._ndcg(users, slates, day, state))
        self.slates.append(slates)
        self.users.append(users)
        return slates

    def _ndcg(self, users: np.ndarray, slates: np.ndarray, day: int,
              state: UserState) -> np.ndarray:
        """NDCG@k of each slate, gain ``E[rating | U today] - 1``, ideal over unseen items."""
        if len(users) == 0:
            return np.empty(0)
        u = np.where(state.consumed[users], -np.inf,
                     utility(self.truth, state, users[:, None], self.items, day))
        k = slates.shape[1]
        discount = 1.0 / np.log2(np.arange(2, k + 2))

        def gain(cols: np.ndarray) -> np.ndarray:  # E[rating] grows with U: rank by U first
            picked = np.take_along_axis(u, cols, axis=1)
            return np.where(np.isfinite(picked),
                            expected_rating(picked, self.truth.noise_sd) - 1.0, 0.0)

        dcg = gain(slates) @ discount
        ideal = gain(top_k(u, k)) @ discount
        return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)

    def slate_frame(self) -> pd.DataFrame:
        k = max((s.shape[1] for s in self.slates), default=0)
        slates = np.concatenate(self.slates) if self.slates else np.empty((0, k), dtype=np.int64)
        frame = pd.DataFrame({
            "day": np.repeat(self.days, [len(u) for u in self.users]).astype(np.int64),
            "user_id": np.concatenate(self.users).astype(np.int64),
            "ndcg": np.concatenate(self.ndcg)})
        for slot in range(slates.shape[1]):
            frame[f"slot{slot}"] = slates[:, slot]
        return frame


def simulate(world: World, policy: Policy, days: int, seed: int = 0) -> Run:
    """Replay ``days`` more days of ``world`` under ``policy``, from where its history ended.

    The world itself is left untouched; the same seed gives the same users' choices, so two
    policies run with one seed face the same dice wherever they show the same thing. A policy
    must show distinct items on a slate: one that repeats an item raises ``ValueError``.
    """
    start = world.config.n_days
    rng = np.random.default_rng([world.config.seed, 1000, seed])
    recorder = _Recorder(world.truth, policy)
    out = rollout(world.truth, recorder, range(start, start + days), rng, world.state.copy())
    return Run(log=out.log, daily=out.daily, state=out.state, days=np.asarray(recorder.days),
               p_return=np.array(recorder.p_return), satisfaction=np.array(recorder.satisfaction),
               churned=np.array(recorder.churned), visited=np.array(recorder.visited),
               slates=recorder.slate_frame())


def summarize(run: Run, n_users: int) -> dict[str, float]:
    """Short-term (utility and rating per consumption) beside long-term (visits, retention)."""
    log, daily = run.log, run.daily
    return {"mean_utility": float(log["utility"].mean()),
            "mean_rating": float(log["rating"].mean()),
            "total_utility": float(log["utility"].sum()),
            "consumptions": int(len(log)),
            "visits": int(daily["visitors"].sum()),
            "retained": float(daily["active"].iloc[-1] / n_users)}
