"""Recommendation policies for the simulator: what slate each returning user sees.

A policy is a callable ``(users, day, state) -> slates`` (see :data:`llmrec_lab.data.dynamics.Policy`).
All but the oracle read only ``state.consumed``: a real system knows what its users consumed
from its own logs, and nothing else about their state.
"""
from __future__ import annotations

import numpy as np

from llmrec_lab.data.dynamics import Policy, Truth, UserState, utility
from llmrec_lab.metrics import top_k


def top_k_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored items per row that the user has not consumed yet."""
    return top_k(np.where(seen, -np.inf, scores), k)


def random_policy(n_items: int, k: int = 5, seed: int = 0) -> Policy:
    """Uniformly random slates: the floor any recommender should clear."""
    rng = np.random.default_rng(seed)
    return lambda users, day, state: rng.integers(0, n_items, size=(len(users), k))


def greedy_policy(scores: np.ndarray, k: int = 5) -> Policy:
    """Show each user the ``k`` unseen items with the highest predicted rating.

    ``scores`` is a (users x items) matrix from any rating model. This is what a system tuned
    for immediate accuracy does, whatever has happened to the user since.
    """
    return lambda users, day, state: top_k_unseen(scores[users], state.consumed[users], k)


def oracle_policy(truth: Truth, k: int = 5) -> Policy:
    """Show the ``k`` unseen items with the highest true utility today, boredom included.

    It sees the truth, so no real system can do as well; it is still myopic (it maximises
    today's utility), which makes it an upper bound for greedy policies, not for every policy.
    """
    items = np.arange(truth.n_items)[None, :]

    def policy(users: np.ndarray, day: int, state: UserState) -> np.ndarray:
        return top_k_unseen(utility(truth, state, users[:, None], items, day),
                            state.consumed[users], k)

    return policy
