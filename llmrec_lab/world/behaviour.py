"""How a world's users live from day to day: utility, choice, rating, boredom, satisfaction, churn.

This is the ground truth that every lab compares against, and the engine both of the world's
logged history (:mod:`llmrec_lab.world.generate`) and of the long-horizon simulations of the
long-term-satisfaction chapter. One day for one returning user goes like this:

1. a policy shows a slate of ``k`` items;
2. the user consumes the slate item they like best (utility plus Gumbel noise: a logit choice),
   rates it ``clip(round(U + noise), 1, 5)``, and browses on with a chance that rises with how
   much they liked it (session depth);
3. each consumption adds boredom with its category and moves satisfaction, a moving average of
   experienced utility against the user's expectation, which itself drifts slowly towards what
   they get (people grow used to good service, so a falling utility disappoints);
4. overnight boredom decays; tomorrow's chance to return is a logistic function of satisfaction;
   a run of visits that leave satisfaction under the user's threshold ends in churn.

    U_ui(t) = mu + b_u + taste_u[c_i] + style_u[s_i] + maker_u[m_i] + w_u q_i - p_u tier_i + a_i
              - boredom_u[c_i](t) + novelty_u * [category c_i not consumed in the last week]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

NOVELTY_DAYS = 7  # a category not consumed for this many days counts as fresh again
SATISFACTION_RATE = 0.2  # weight of the newest experience in the satisfaction average
ADAPTATION_RATE = 0.05  # how fast expectations follow experience
RETURN_SLOPE = 3.0  # how strongly satisfaction moves the logit of returning
DEPTH_SLOPE = 2.0  # how strongly liking an item moves the logit of browsing on
DEPTH_BIAS = 0.0  # logit of browsing on after an item that met expectations
CHURN_PATIENCE = 3  # consecutive disappointing visits before a user leaves for good
DAY_SECONDS = 86_400
EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z, day 0 of every world

Policy = Callable[[np.ndarray, int, "UserState"], np.ndarray]
"""A policy maps the day's returning users (ids), the day and the users' state to slates (n, k).

Only an oracle may read the state's hidden parts; every other policy reads ``state.consumed``
alone, which mirrors what a real system knows from its own logs.
"""


@dataclass
class Truth:
    """Everything a world knows and a recommender never sees. Arrays are indexed by id."""

    mu: float
    noise_sd: float
    # items
    category: np.ndarray
    brand: np.ndarray
    maker: np.ndarray
    style: np.ndarray
    tier: np.ndarray
    quality: np.ndarray
    appeal: np.ndarray  # the idiosyncratic part that only interactions reveal
    # users
    bias: np.ndarray
    taste_category: np.ndarray  # (users, categories)
    taste_style: np.ndarray  # (users, styles)
    taste_maker: np.ndarray  # (users, makers)
    quality_weight: np.ndarray
    price_sensitivity: np.ndarray
    boredom_rate: np.ndarray
    recovery_rate: np.ndarray
    novelty_appetite: np.ndarray
    churn_threshold: np.ndarray
    return_logit: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.bias)

    @property
    def n_items(self) -> int:
        return len(self.category)

    @property
    def n_categories(self) -> int:
        return self.taste_category.shape[1]

    def static_utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utility without boredom or novelty; ``users`` and ``items`` broadcast together."""
        return (self.mu + self.bias[users] + self.taste_category[users, self.category[items]]
                + self.taste_style[users, self.style[items]]
                + self.taste_maker[users, self.maker[items]]
                + self.quality_weight[users] * self.quality[items]
                - self.price_sensitivity[users] * (self.tier[items] - 1) + self.appeal[items])


@dataclass
class UserState:
    """The part of the truth that changes from day to day."""

    boredom: np.ndarray  # (users, categories)
    last_consumed: np.ndarray  # (users, categories): day of the last consumption, or very early
    expectation: np.ndarray  # (users,) the utility a user has come to expect
    satisfaction: np.ndarray  # (users,)
    low_streak: np.ndarray  # (users,) disappointing visits in a row
    churned: np.ndarray  # (users,) bool
    consumed: np.ndarray  # (users, items) bool: nobody consumes the same item twice

    @classmethod
    def fresh(cls, truth: Truth) -> "UserState":
        n_u, n_c = truth.n_users, truth.n_categories
        return cls(boredom=np.zeros((n_u, n_c)),
                   last_consumed=np.full((n_u, n_c), -10 * NOVELTY_DAYS),
                   expectation=truth.mu + truth.bias.copy(),
                   satisfaction=np.zeros(n_u), low_streak=np.zeros(n_u, dtype=np.int64),
                   churned=np.zeros(n_u, dtype=bool),
                   consumed=np.zeros((n_u, truth.n_items), dtype=bool))

    def copy(self) -> "UserState":
        return UserState(*(getattr(self, f).copy() for f in self.__dataclass_fields__))


def utility(truth: Truth, state: UserState, users: np.ndarray, items: np.ndarray,
            day: int) -> np.ndarray:
    """True utility today: the static part, minus boredom, plus the novelty bonus."""
    cats = truth.category[items]
    fresh = (day - state.last_consumed[users, cats]) > NOVELTY_DAYS
    return (truth.static_utility(users, items) - state.boredom[users, cats]
            + truth.novelty_appetite[users] * fresh)


def rating_probabilities(u: np.ndarray, noise_sd: float) -> np.ndarray:
    """P(rating = 1..5 | U) for ``clip(round(U + N(0, sd)), 1, 5)``; last axis has 5 entries."""
    edges = np.array([1.5, 2.5, 3.5, 4.5])
    cdf = norm.cdf((edges - np.asarray(u)[..., None]) / noise_sd)
    cdf = np.concatenate([np.zeros_like(cdf[..., :1]), cdf, np.ones_like(cdf[..., :1])], axis=-1)
    return np.diff(cdf, axis=-1)


def expected_rating(u: np.ndarray, noise_sd: float) -> np.ndarray:
    """E[rating | U]: the oracle's prediction, whose error is the noise floor."""
    return rating_probabilities(u, noise_sd) @ np.arange(1.0, 6.0)


def return_probability(truth: Truth, state: UserState) -> np.ndarray:
    """Chance that each user comes back today; zero once churned."""
    p = 1.0 / (1.0 + np.exp(-(truth.return_logit + RETURN_SLOPE * state.satisfaction)))
    return np.where(state.churned, 0.0, p)


def _consume(truth: Truth, state: UserState, users: np.ndarray, slates: np.ndarray, day: int,
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Let each returning user work through their slate; return one record per consumption."""
    n, k = slates.shape
    available = ~state.consumed[users[:, None], slates]
    browsing = np.ones(n, dtype=bool)
    records: dict[str, list[np.ndarray]] = {key: [] for key in
                                             ("user", "item", "utility", "position")}
    for position in range(k):
        u_slate = utility(truth, state, users[:, None], slates, day)  # boredom moves as they go
        taste = np.where(available, u_slate + rng.gumbel(size=(n, k)), -np.inf)
        pick = taste.argmax(axis=1)
        go = browsing & available.any(axis=1)
        rows = np.flatnonzero(go)
        users_now, items_now = users[rows], slates[rows, pick[rows]]
        u_now = u_slate[rows, pick[rows]]
        records["user"].append(users_now)
        records["item"].append(items_now)
        records["utility"].append(u_now)
        records["position"].append(np.full(len(rows), position))
        _update_after_consumption(truth, state, users_now, items_now, u_now, day)
        available[rows[:, None], np.arange(k)[None, :]] &= slates[rows] != items_now[:, None]
        liked = u_now - state.expectation[users_now]
        keep_going = rng.random(len(rows)) < 1.0 / (1.0 + np.exp(-DEPTH_BIAS - DEPTH_SLOPE * liked))
        browsing[:] = False
        browsing[rows[keep_going]] = True
        if not browsing.any():
            break
    return {key: np.concatenate(v) if v else np.array([]) for key, v in records.items()}


def _update_after_consumption(truth: Truth, state: UserState, users: np.ndarray,
                              items: np.ndarray, u: np.ndarray, day: int) -> None:
    cats = truth.category[items]
    state.consumed[users, items] = True
    state.boredom[users, cats] += truth.boredom_rate[users]
    state.last_consumed[users, cats] = day
    surprise = u - state.expectation[users]
    state.satisfaction[users] += SATISFACTION_RATE * (surprise - state.satisfaction[users])
    state.expectation[users] += ADAPTATION_RATE * surprise


def _end_of_day(truth: Truth, state: UserState, visitors: np.ndarray) -> None:
    state.boredom *= (1.0 - truth.recovery_rate)[:, None]
    low = state.satisfaction[visitors] < truth.churn_threshold[visitors]
    state.low_streak[visitors] = np.where(low, state.low_streak[visitors] + 1, 0)
    state.churned |= state.low_streak >= CHURN_PATIENCE


@dataclass
class Rollout:
    """What happened under a policy: one row per consumption, and one row per day."""

    log: pd.DataFrame
    daily: pd.DataFrame
    state: UserState


def rollout(truth: Truth, policy: Policy, days: range, rng: np.random.Generator,
            state: UserState | None = None) -> Rollout:
    """Replay ``days`` of the world under ``policy``, starting from ``state`` (fresh if None)."""
    state = UserState.fresh(truth) if state is None else state
    logs, daily = [], []
    for day in days:
        visitors = np.flatnonzero(rng.random(truth.n_users) < return_probability(truth, state))
        rec = _consume(truth, state, visitors, np.asarray(policy(visitors, day, state)), day, rng)
        rec["day"] = np.full(len(rec["user"]), day)
        logs.append(rec)
        daily.append({"day": day, "active": int((~state.churned).sum()),
                      "visitors": len(visitors), "consumptions": len(rec["user"]),
                      "mean_utility": float(rec["utility"].mean()) if len(rec["user"]) else np.nan,
                      "mean_satisfaction": float(state.satisfaction[~state.churned].mean())
                      if (~state.churned).any() else np.nan})
        _end_of_day(truth, state, visitors)
    return Rollout(_log_frame(truth, logs, rng), pd.DataFrame(daily), state)


def _log_frame(truth: Truth, logs: list[dict[str, np.ndarray]],
               rng: np.random.Generator) -> pd.DataFrame:
    """Turn consumption records into rated, timestamped rows."""
    cols = {key: np.concatenate([rec[key] for rec in logs]) for key in logs[0]}
    u = cols["utility"]
    rating = np.clip(np.rint(u + rng.normal(0.0, truth.noise_sd, size=len(u))), 1, 5)
    second = (cols["user"] * 7919) % 43_200 + 60 * cols["position"]  # spread visits over a day
    return pd.DataFrame({
        "user_id": cols["user"].astype(np.int64), "item_id": cols["item"].astype(np.int64),
        "rating": rating, "timestamp": (EPOCH + cols["day"] * DAY_SECONDS + second).astype(np.int64),
        "day": cols["day"].astype(np.int64), "position": cols["position"].astype(np.int64),
        "utility": u, "expected_rating": expected_rating(u, truth.noise_sd)})
