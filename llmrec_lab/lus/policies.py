"""Recommendation policies for the simulator: what slate each returning user sees.

A policy is a callable ``(users, day, state) -> slates``
(see :data:`llmrec_lab.world.behaviour.Policy`).
All but the oracle read only ``state.consumed``: a real system knows what its users consumed
from its own logs, and nothing else about their state. Policies that remember (when did this
user last consume that category?) keep a :class:`ConsumptionHistory`, built from the world's
logged ratings and updated from ``state.consumed`` each day; so build a fresh policy per run.

- :func:`greedy_policy`: the top-``k`` predicted ratings, whatever happened to the user.
- :func:`mmr_policy`: maximal marginal relevance (Carbonell & Goldstein 1998), category overlap
  as the similarity.
- :func:`calibrated_policy`: calibrated re-ranking (Steck 2018): the slate's category mix
  should match the user's history.
- :func:`lus_policy`: the long-term-satisfaction-aware re-ranker: it discounts categories the
  user consumed recently, the observable proxy for boredom that the satisfaction model of
  :mod:`llmrec_lab.lus.satisfaction` finds predictive of return, and favours categories the
  user has not had for a week. :func:`fit_recency_effects` estimates both strengths from the
  logged ratings (:func:`recency_features` describes each rating's recent history).
- :class:`BanditPolicy`: learns the LUS re-ranker's strength online, an epsilon-greedy bandit
  whose reward is the visit's session depth plus whether the user is back the next day.
- :func:`oracle_policy`: the truth's myopic best, an upper bound for the greedy policies.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_lab.world.behaviour import (DAY_SECONDS, EPOCH, NOVELTY_DAYS, Policy, Truth, UserState,
                                       utility)
from llmrec_lab.world.generate import World, random_browsing
from llmrec_lab.metrics import top_k

RECENCY_DECAY = 0.8  # per day: how fast the LUS re-ranker forgets a consumption


def top_k_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored items per row that the user has not consumed yet."""
    return top_k(np.where(seen, -np.inf, scores), k)


def item_categories(world: World) -> np.ndarray:
    """Each item's category code, read from the public catalogue (not from the truth)."""
    return pd.Categorical(world.items["category"], categories=world.schema.categories).codes.astype(
        np.int64)


def random_policy(n_items: int, k: int = 5, seed: int = 0) -> Policy:
    """Uniformly random slates of ``k`` distinct items, as the world's logging system showed:
    the floor any recommender should clear."""
    return random_browsing(n_items, k, np.random.default_rng(seed))


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


class ConsumptionHistory:
    """What a system knows from its own logs: when, and how much, each user consumed each category.

    Built from the logged ratings up to ``day``; :meth:`update` then reads the consumptions
    made since the previous call from ``state.consumed`` (the simulator calls every policy
    once a day, so they happened yesterday). ``recent[u, c]`` counts user ``u``'s consumptions
    in category ``c``, each discounted by ``decay`` per day since.
    """

    def __init__(self, ratings: pd.DataFrame, category: np.ndarray, n_users: int,
                 n_categories: int, day: int, decay: float = RECENCY_DECAY):
        self.category, self.decay = category, decay
        u = ratings["user_id"].to_numpy()
        i = ratings["item_id"].to_numpy()
        d = (ratings["timestamp"].to_numpy() - EPOCH) // DAY_SECONDS
        c = category[i]
        self.consumed = np.zeros((n_users, len(category)), dtype=bool)
        self.consumed[u, i] = True
        self.last_day = np.full((n_users, n_categories), -10 * NOVELTY_DAYS, dtype=np.int64)
        np.maximum.at(self.last_day, (u, c), d)
        self.recent = np.zeros((n_users, n_categories))
        np.add.at(self.recent, (u, c), decay ** (day - d))
        self.day = day
        self.depth = np.zeros(n_users, dtype=np.int64)  # consumptions found by the last update

    @classmethod
    def from_world(cls, world: World, decay: float = RECENCY_DECAY) -> "ConsumptionHistory":
        """The history at the end of ``world``'s logged days."""
        return cls(world.ratings, item_categories(world), world.config.n_users,
                   len(world.schema.categories), world.config.n_days, decay)

    def update(self, day: int, state: UserState) -> None:
        """Advance to ``day``, booking what was consumed since the last call on its day."""
        u, i = np.nonzero(state.consumed & ~self.consumed)
        self.recent *= self.decay ** (day - self.day)
        np.add.at(self.recent, (u, self.category[i]), self.decay)
        self.last_day[u, self.category[i]] = day - 1
        self.depth = np.bincount(u, minlength=len(self.depth))
        self.consumed |= state.consumed
        self.day = day


def recency_features(ratings: pd.DataFrame, category: np.ndarray,
                     decay: float = RECENCY_DECAY) -> pd.DataFrame:
    """For each logged rating, what the log says about the user's state with its category.

    ``recent``: the user's earlier consumptions of the item's category, each discounted by
    ``decay`` per day since (earlier the same day: weight 1), the same count that
    :class:`ConsumptionHistory` keeps; ``fresh``: 1 where the user had not had the category
    for more than a week. Rows are in the order of ``ratings`` (same index).
    """
    r = ratings.sort_values(["user_id", "timestamp"], kind="stable")
    day = ((r["timestamp"].to_numpy() - EPOCH) // DAY_SECONDS).astype(np.int64)
    key = r["user_id"].to_numpy() * (int(category.max()) + 1) + category[r["item_id"].to_numpy()]
    frame = pd.DataFrame({"key": key, "day": day}, index=r.index)
    groups = frame.groupby("key", sort=False)["day"]
    recent = np.zeros(len(frame))
    for rows in groups.indices.values():  # one user's consumptions of one category, in time order
        d = day[rows]
        w = decay ** (d[-1] - d.astype(float))  # rescaled so nothing overflows
        recent[rows] = (np.cumsum(w) - w) / decay ** (d[-1] - d)
    prev = groups.shift(1).to_numpy()
    fresh = np.isnan(prev) | (day - prev > NOVELTY_DAYS)
    return pd.DataFrame({"recent": recent, "fresh": fresh.astype(float)},
                        index=r.index).loc[ratings.index]


def fit_recency_effects(ratings: pd.DataFrame, predicted: np.ndarray, category: np.ndarray,
                        decay: float = RECENCY_DECAY) -> tuple[float, float]:
    """How far logged ratings fall per recent consumption of the category, and rise when fresh.

    Least squares of the residual ``rating - predicted`` (``predicted`` from a rating model
    of user and item alone) on :func:`recency_features` and an intercept; returns
    ``(recency, fresh)`` in rating units, signed as :func:`lus_scores` uses them (a penalty
    per recent consumption, a bonus for a fresh category). Reads only the log.
    """
    x = recency_features(ratings, category, decay).to_numpy()
    x = np.column_stack([np.ones(len(x)), x])
    beta = np.linalg.lstsq(x, ratings["rating"].to_numpy() - predicted, rcond=None)[0]
    return float(-beta[1]), float(beta[2])


def _best_not_taken(score: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Each row's best-scored column not yet on the slate.

    Consumed items score -inf; they rank below every unseen item but above those already
    taken, so a user with fewer unseen items than slots still gets a slate of distinct items.
    """
    return np.where(taken, -np.inf, np.maximum(score, np.finfo(score.dtype).min)).argmax(axis=1)


def _greedy_slates(base: np.ndarray, category: np.ndarray, k: int,
                   repeat_penalty: float) -> np.ndarray:
    """Fill slates one slot at a time, docking ``repeat_penalty`` per same-category item shown."""
    n = base.shape[0]
    rows = np.arange(n)
    n_cat = int(category.max()) + 1
    in_slate = np.zeros((n, n_cat))
    taken = np.zeros(base.shape, dtype=bool)
    slates = np.empty((n, k), dtype=np.int64)
    for slot in range(k):
        pick = _best_not_taken(base - repeat_penalty * in_slate[:, category], taken)
        slates[:, slot] = pick
        taken[rows, pick] = True
        in_slate[rows, category[pick]] += 1
    return slates


def mmr_policy(scores: np.ndarray, category: np.ndarray, k: int = 5,
               diversity: float = 0.5) -> Policy:
    """Maximal marginal relevance: each slot maximises ``(1 - λ) score - λ max-similarity``.

    Similarity is 1 between items of one category and 0 otherwise, so an item whose category is
    already on the slate loses ``λ`` (in rating units, after the ``1 - λ`` scaling).
    """
    def policy(users: np.ndarray, day: int, state: UserState) -> np.ndarray:
        base = np.where(state.consumed[users], -np.inf, (1 - diversity) * scores[users])
        n = len(users)
        rows = np.arange(n)
        shown = np.zeros((n, int(category.max()) + 1), dtype=bool)
        taken = np.zeros(base.shape, dtype=bool)
        slates = np.empty((n, k), dtype=np.int64)
        for slot in range(k):
            pick = _best_not_taken(base - diversity * shown[:, category], taken)
            slates[:, slot] = pick
            taken[rows, pick] = True
            shown[rows, category[pick]] = True
        return slates

    return policy


def calibrated_policy(scores: np.ndarray, category: np.ndarray, k: int = 5,
                      weight: float = 0.5, alpha: float = 0.01, candidates: int = 50) -> Policy:
    """Calibrated re-ranking (Steck 2018): trade score against KL(p || q̃) over categories.

    ``p`` is the category mix of everything the user consumed (``state.consumed``), ``q̃`` the
    slate's mix smoothed with ``p`` (``(1 - alpha) q + alpha p``). Each slot adds the item that
    maximises ``(1 - weight) * sum of scores - weight * KL`` among the ``candidates`` best-scored
    unseen items.
    """
    n_cat = int(category.max()) + 1
    onehot = np.eye(n_cat)[category]  # items x categories

    def policy(users: np.ndarray, day: int, state: UserState) -> np.ndarray:
        n = len(users)
        if n == 0:
            return np.empty((0, k), dtype=np.int64)
        counts = state.consumed[users] @ onehot + 1e-3  # every category a sliver, so p > 0
        p = counts / counts.sum(axis=1, keepdims=True)
        cand = top_k_unseen(scores[users], state.consumed[users], candidates)  # (n, m)
        cand_scores = np.take_along_axis(scores[users], cand, axis=1)
        cand_seen = np.take_along_axis(state.consumed[users], cand, axis=1)  # only as fillers
        cand_onehot = onehot[cand]  # (n, m, C)
        rows = np.arange(n)
        slate_counts = np.zeros((n, n_cat))
        total = np.zeros(n)
        taken = np.zeros(cand.shape, dtype=bool)
        slates = np.empty((n, k), dtype=np.int64)
        for slot in range(k):
            q = (slate_counts[:, None, :] + cand_onehot) / (slot + 1)
            q = (1 - alpha) * q + alpha * p[:, None, :]
            kl = (p[:, None, :] * np.log(p[:, None, :] / q)).sum(axis=2)
            objective = (1 - weight) * (total[:, None] + cand_scores) - weight * kl
            pick = _best_not_taken(np.where(cand_seen, -np.inf, objective), taken)
            taken[rows, pick] = True
            slates[:, slot] = cand[rows, pick]
            total += cand_scores[rows, pick]
            slate_counts += cand_onehot[rows, pick]
        return slates

    return policy


def lus_scores(scores: np.ndarray, history: ConsumptionHistory, users: np.ndarray,
               recency: float, fresh: float) -> np.ndarray:
    """Predicted rating, minus ``recency`` per discounted recent consumption of the item's
    category, plus ``fresh`` where the user has not had the category for a week."""
    c = history.category
    stale = (history.day - history.last_day[users][:, c]) > NOVELTY_DAYS
    return scores[users] - recency * history.recent[users][:, c] + fresh * stale


def lus_policy(scores: np.ndarray, history: ConsumptionHistory, k: int = 5,
               recency: float = 0.3, fresh: float = 0.2, repeat: float = 0.3) -> Policy:
    """The LUS-aware re-ranker: predicted rating adjusted for what the user consumed lately.

    On top of :func:`lus_scores`, a category already on the slate costs ``repeat`` per item
    (users get bored within a session too). Reads only the system's own consumption log.
    """
    def policy(users: np.ndarray, day: int, state: UserState) -> np.ndarray:
        history.update(day, state)
        base = np.where(state.consumed[users], -np.inf,
                        lus_scores(scores, history, users, recency, fresh))
        return _greedy_slates(base, history.category, k, repeat)

    return policy


class BanditPolicy:
    """An epsilon-greedy bandit that learns the LUS re-ranker's ``recency`` strength online.

    Each arm is one ``recency`` value (``fresh`` and ``repeat`` fixed). Each visit gets the arm
    with the best mean reward so far, or a random arm with chance ``epsilon`` (every untried arm
    first). A day later the system sees the visit's session depth (from ``state.consumed``) and
    whether the user came back, and books ``depth / k + returned`` as the arm's reward: a
    one-step proxy for long-term value that a real system observes.
    """

    def __init__(self, scores: np.ndarray, history: ConsumptionHistory, k: int = 5,
                 arms: tuple[float, ...] = (0.0, 0.15, 0.3, 0.6, 1.0), fresh: float = 0.2,
                 repeat: float = 0.3, epsilon: float = 0.1, seed: int = 0):
        self.scores, self.history, self.k = scores, history, k
        self.arms, self.fresh, self.repeat, self.epsilon = np.asarray(arms), fresh, repeat, epsilon
        self.rng = np.random.default_rng(seed)
        self.reward_sum = np.zeros(len(arms))
        self.pulls = np.zeros(len(arms))
        self.last_users = np.empty(0, dtype=np.int64)
        self.last_arms = np.empty(0, dtype=np.int64)

    def _learn(self, users: np.ndarray) -> None:
        returned = np.isin(self.last_users, users)
        reward = self.history.depth[self.last_users] / self.k + returned
        np.add.at(self.reward_sum, self.last_arms, reward)
        np.add.at(self.pulls, self.last_arms, 1)

    def mean_reward(self) -> np.ndarray:
        """Each arm's mean reward so far (NaN for an untried arm)."""
        with np.errstate(invalid="ignore"):
            return self.reward_sum / self.pulls

    def _choose(self, n: int) -> np.ndarray:
        untried = np.flatnonzero(self.pulls == 0)
        if len(untried):
            return self.rng.choice(untried, size=n)
        explore = self.rng.random(n) < self.epsilon
        return np.where(explore, self.rng.integers(0, len(self.arms), n),
                        int(np.argmax(self.mean_reward())))

    def __call__(self, users: np.ndarray, day: int, state: UserState) -> np.ndarray:
        self.history.update(day, state)
        self._learn(users)
        arms = self._choose(len(users))
        slates = np.empty((len(users), self.k), dtype=np.int64)
        for a in np.unique(arms):
            rows = np.flatnonzero(arms == a)
            base = np.where(state.consumed[users[rows]], -np.inf,
                            lus_scores(self.scores, self.history, users[rows], self.arms[a],
                                       self.fresh))
            slates[rows] = _greedy_slates(base, self.history.category, self.k, self.repeat)
        self.last_users, self.last_arms = users, arms
        return slates
