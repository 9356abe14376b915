"""Long-term satisfaction: the simulator's bookkeeping, the policies, the metrics, the CLI."""
import json

import numpy as np
import pandas as pd
import pytest

from llmrec_lab.cli import main
from llmrec_lab.world import behaviour
from llmrec_lab.world.behaviour import expected_rating
from llmrec_lab.world.generate import WorldConfig, generate, random_browsing
from llmrec_lab.experiments import long_term
from llmrec_lab.experiments.long_term import (POLICIES, compare, fit_mf, make_policy,
                                              recency_effects)
from llmrec_lab.lus import metrics as M
from llmrec_lab.lus.policies import (ConsumptionHistory, fit_recency_effects, item_categories,
                                     recency_features)
from llmrec_lab.lus.satisfaction import (SatisfactionModel, behaviour_features, evaluate,
                                         labelled_panel)
from llmrec_lab.lus.simulator import simulate
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import make_model, score_all

DAYS = 25


@pytest.fixture(scope="module")
def world():
    return generate(WorldConfig(name="shop", n_users=150, n_items=80, n_days=15, seed=5))


@pytest.fixture(scope="module")
def scores(world):
    """Noisy true ratings: a stand-in for a fitted model that costs no training."""
    users = np.arange(world.config.n_users)[:, None]
    items = np.arange(world.config.n_items)[None, :]
    truth = expected_rating(world.truth.static_utility(users, items), world.truth.noise_sd)
    return truth + np.random.default_rng(0).normal(0, 0.4, truth.shape)


@pytest.fixture(scope="module")
def greedy_run(world, scores):
    return simulate(world, make_policy("greedy", world, scores), DAYS, seed=1)


def test_same_seed_same_run(world, scores, greedy_run):
    again = simulate(world, make_policy("greedy", world, scores), DAYS, seed=1)
    pd.testing.assert_frame_equal(greedy_run.log, again.log)
    pd.testing.assert_frame_equal(greedy_run.slates, again.slates)
    other = simulate(world, make_policy("greedy", world, scores), DAYS, seed=2)
    assert not greedy_run.log.equals(other.log)


def test_recording_does_not_change_the_run(world, scores, greedy_run):
    rng = np.random.default_rng([world.config.seed, 1000, 1])
    start = world.config.n_days
    plain = behaviour.rollout(world.truth, make_policy("greedy", world, scores),
                              range(start, start + DAYS), rng, world.state.copy())
    pd.testing.assert_frame_equal(plain.log, greedy_run.log)
    assert world.state.consumed.sum() < greedy_run.state.consumed.sum()  # world left untouched


def test_user_state_bookkeeping(greedy_run):
    run = greedy_run
    assert not (run.visited & run.churned).any(), "a churned user came back"
    assert (run.p_return[run.churned] == 0).all()
    assert (np.diff(run.churned.astype(int), axis=0) >= 0).all(), "a churned user un-churned"
    np.testing.assert_array_equal(run.daily["active"], (~run.churned).sum(axis=1))
    np.testing.assert_array_equal(run.daily["visitors"], run.visited.sum(axis=1))
    d = run.log["day"].to_numpy() - run.days[0]
    assert run.visited[d, run.log["user_id"].to_numpy()].all(), "a consumption without a visit"
    assert len(run.slates) == run.visited.sum()
    assert run.log.groupby(["user_id", "item_id"]).size().max() == 1  # nothing consumed twice
    assert run.churned[-1].any() and not run.churned[0].all()


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_shows_k_distinct_unseen_items(world, scores, name):
    policy = make_policy(name, world, scores)
    users = np.arange(0, world.config.n_users, 3)
    state = world.state.copy()
    slates = policy(users, world.config.n_days, state)
    k = world.config.slate_size
    assert slates.shape == (len(users), k)
    assert all(len(set(row)) == k for row in slates.tolist())
    if name != "random":
        assert not state.consumed[users[:, None], slates].any()


@pytest.mark.parametrize("name", [name for name in POLICIES if name != "random"])
def test_a_user_with_fewer_unseen_items_than_slots_still_gets_distinct_items(world, scores, name):
    state = world.state.copy()
    state.consumed[0] = True
    state.consumed[0, [7, 40]] = False  # two unseen items for five slots
    slate = make_policy(name, world, scores)(np.array([0]), world.config.n_days, state)[0]
    assert len(set(slate.tolist())) == len(slate) and {7, 40} <= set(slate.tolist())


def test_random_browsing_draws_distinct_items_uniformly():
    rng = np.random.default_rng(0)
    slates = random_browsing(6, 3, rng)(np.arange(60_000), 0, None)
    assert all(len(set(row)) == 3 for row in slates[:2000].tolist())
    ordered = pd.Series(map(tuple, slates.tolist())).value_counts()
    assert len(ordered) == 6 * 5 * 4  # every ordered slate of distinct items occurs ...
    assert ordered.max() / ordered.min() < 1.3  # ... about equally often (500 expected each)
    np.testing.assert_array_equal(np.sort(random_browsing(4, 4, rng)(np.arange(3), 0, None)),
                                  np.tile(np.arange(4), (3, 1)))
    with pytest.raises(ValueError, match="slate size k must be in 1..4"):
        random_browsing(4, 5, rng)


def test_simulator_refuses_a_slate_that_repeats_an_item(world):
    def repeating(users, day, state):
        return np.tile([0, 1, 2, 3, 0], (len(users), 1))

    with pytest.raises(ValueError, match="repeat an item"):
        simulate(world, repeating, 2)


def test_diversifying_policies_diversify(world, scores):
    table, _ = compare(world, scores, ("greedy", "mmr", "lus", "oracle"), DAYS, seed=1)
    assert table.loc["mmr", "ild"] > table.loc["greedy", "ild"]
    assert table.loc["lus", "ild"] > table.loc["greedy", "ild"]
    assert table.loc["oracle", "ndcg"] == pytest.approx(1.0)
    assert table.loc["greedy", "gap_closed"] == 0 and table.loc["oracle", "gap_closed"] == 1


def test_calibrated_policy_matches_history(world, scores):
    category = item_categories(world)
    users = np.arange(world.config.n_users)
    state = world.state.copy()
    n_cat = len(world.schema.categories)
    target = M.category_mix(*np.nonzero(state.consumed), category, world.config.n_users, n_cat)
    kl = {name: M.calibration_kl(make_policy(name, world, scores)(users, 15, state), users,
                                 target, category) for name in ("greedy", "calibrated")}
    assert kl["calibrated"] < kl["greedy"]


def test_consumption_history_books_yesterday():
    category = np.array([0, 0, 1])
    ratings = pd.DataFrame({"user_id": [0], "item_id": [0], "rating": [4.0],
                            "timestamp": [behaviour.EPOCH + 2 * behaviour.DAY_SECONDS]})
    h = ConsumptionHistory(ratings, category, n_users=2, n_categories=2, day=3, decay=0.5)
    assert h.recent[0, 0] == pytest.approx(0.5) and h.last_day[0, 0] == 2
    state = behaviour.UserState(boredom=None, last_consumed=None, expectation=None,
                                satisfaction=None, low_streak=None, churned=None,
                                consumed=np.array([[1, 0, 1], [0, 1, 0]], dtype=bool))
    h.update(4, state)
    np.testing.assert_allclose(h.recent, [[0.25, 0.5], [0.5, 0.0]])
    assert h.last_day[0, 1] == 3 and h.last_day[1, 0] == 3 and h.last_day[0, 0] == 2
    np.testing.assert_array_equal(h.depth, [1, 1])


def test_recency_features_on_a_hand_made_log():
    category = np.array([0, 0, 0, 0, 1])
    day = np.array([0, 0, 2, 12, 2]) * behaviour.DAY_SECONDS
    ratings = pd.DataFrame({"user_id": [0, 0, 0, 0, 0], "item_id": [3, 1, 2, 0, 4],
                            "rating": [3.0] * 5,
                            "timestamp": behaviour.EPOCH + day + [60, 0, 0, 0, 0]},
                           index=[10, 11, 12, 13, 14])
    x = recency_features(ratings, category, decay=0.5)
    assert list(x.index) == [10, 11, 12, 13, 14]  # the input's order and index
    # item 1 first (nothing before), item 3 later that day (weight 1), item 2 two days on
    np.testing.assert_allclose(x["recent"], [1.0, 0.0, 2 * 0.25, 0.5 ** 10 + 2 * 0.5 ** 12, 0.0])
    np.testing.assert_array_equal(x["fresh"], [0, 1, 0, 1, 1])  # 10 days apart: fresh again


def test_fit_recency_effects_recovers_a_known_effect(world):
    category = item_categories(world)
    x = recency_features(world.ratings, category)
    rng = np.random.default_rng(0)
    predicted = rng.normal(3.5, 0.5, len(x))
    ratings = world.ratings.assign(rating=predicted + 0.2 - 0.4 * x["recent"] + 0.25 * x["fresh"]
                                   + rng.normal(0, 0.1, len(x)))
    recency, fresh = fit_recency_effects(ratings, predicted, category)
    assert recency == pytest.approx(0.4, abs=0.02) and fresh == pytest.approx(0.25, abs=0.02)


def test_rating_model_separates_taste_from_recent_history(world):
    model, held_out = fit_mf(world, epochs=15, grid=((0.1, 16), (0.3, 16)))
    assert model.reg in (0.1, 0.3) and model.n_factors == 16
    y = held_out["rating"]
    assert rmse(y, held_out["with_recency"]) < rmse(y, held_out["plain"])  # boredom shows
    scores = score_all(model, np.arange(world.config.n_users), np.arange(world.config.n_items))
    assert scores.shape == (world.config.n_users, world.config.n_items)
    recency, fresh = recency_effects(world, scores)
    assert recency > 0.1 and fresh > 0.0


def test_rating_model_is_chosen_on_ratings_no_fit_has_seen(world, monkeypatch):
    """The effect is fitted on the early-stopping ratings; the choice needs ratings of its own."""
    seen, fitted = set(), []

    def spying(*args, **kw):
        model = make_model(*args, **kw)
        fit = model.fit

        def record(ratings, valid=None):
            seen.update(ratings.index)
            seen.update([] if valid is None else valid.index)
            fitted.append(model)
            return fit(ratings, valid=valid)

        model.fit = record
        return model

    monkeypatch.setattr(long_term, "make_model", spying)
    _, held_out = fit_mf(world, epochs=4, grid=((0.1, 16),))
    held = world.ratings.drop(index=list(seen))
    assert len(held) == pytest.approx(0.1 * len(world.ratings), abs=1)
    plain = fitted[0]
    assert held_out.index.equals(held.index)
    expected = np.clip(plain.score(held["user_id"], held["item_id"]), 1, 5)
    np.testing.assert_allclose(held_out["plain"], expected)


def test_recency_effects_follow_the_world(world, scores):
    """Boredom and novelty show up as strengths; in the control world they (nearly) vanish."""
    recency, fresh = recency_effects(world, scores)
    assert 0.2 < recency < 1.0 and 0.05 < fresh < 0.6
    control = generate(WorldConfig(name="shop", n_users=150, n_items=80, n_days=15, seed=5,
                                   boredom=0.0, novelty=0.0))
    users = np.arange(150)[:, None]
    items = np.arange(80)[None, :]
    truth = expected_rating(control.truth.static_utility(users, items), control.truth.noise_sd)
    recency, fresh = recency_effects(control, truth)
    assert recency < 0.05 and fresh < 0.1  # fresh: a little confounding by taste is left


def test_long_term_metrics_on_a_hand_made_log():
    log = pd.DataFrame({"user_id": [0, 0, 0, 1, 1], "day": [0, 0, 3, 1, 2],
                        "utility": [1.0, 2.0, 3.0, 4.0, 2.0], "rating": [1, 2, 3, 4, 2]})
    assert M.cumulative_satisfaction(log, n_users=4) == pytest.approx(12 / 4)
    assert M.return_interval(log) == pytest.approx((3 + 1) / 2)
    assert M.session_depth(log) == pytest.approx(5 / 4)
    daily = pd.DataFrame({"day": [7, 8], "active": [4, 3]})
    curve = M.retention_curve(daily, n_users=4)
    assert curve.to_dict() == {7: 1.0, 8: 0.75}
    assert np.isnan(M.return_interval(log[log["day"] == 0]))


def test_beyond_accuracy_metrics_on_hand_made_slates():
    category = np.array([0, 0, 1, 2])
    assert M.intra_list_diversity(np.array([[0, 1]]), category) == 0
    assert M.intra_list_diversity(np.array([[0, 2, 3]]), category) == 1
    assert M.intra_list_diversity(np.array([[0, 1, 2]]), category) == pytest.approx(2 / 3)
    popularity = np.array([5.0, 1.0, 1.0, 1.0])  # +1 smoothing: p = 6/12, 2/12, ...
    assert M.novelty(np.array([[0], [1]]), popularity) == pytest.approx(
        (1 + np.log2(6)) / 2)
    assert M.coverage(np.array([[0, 1], [1, 0]]), n_items=4) == 0.5
    target = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    assert M.calibration_kl(np.array([[0, 2]]), np.array([0]), target, category) == 0
    miscal = M.calibration_kl(np.array([[0, 1]]), np.array([0]), target, category, alpha=0.01)
    assert miscal == pytest.approx(0.5 * np.log(0.5 / 0.995) + 0.5 * np.log(0.5 / 0.005))
    assert M.category_mix([0, 0, 1], [0, 2, 3], category, 3, 3).tolist() == [
        [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]]
    assert M.gap_closed(7.0, greedy=5.0, oracle=9.0) == 0.5
    with np.errstate(all="raise"):  # no division by zero when there is no gap
        assert np.isnan(M.gap_closed(7.0, greedy=5.0, oracle=5.0))


def test_behaviour_features_on_a_hand_made_log():
    log = pd.DataFrame({"user_id": [0, 0, 0, 1], "item_id": [0, 1, 2, 2],
                        "rating": [4.0, 2.0, 5.0, 3.0], "day": [0, 0, 2, 1]})
    f = behaviour_features(log, np.array([0, 1, 1]), n_users=3, days=np.array([1, 3]),
                           decay=0.5).set_index(["day", "user_id"])
    assert set(f.index) == {(1, 0), (3, 0), (3, 1)}  # user 2 never visited
    row = f.loc[(3, 0)]
    assert row["days_since_visit"] == 1 and row["mean_gap"] == 2 and row["last_depth"] == 1
    assert row["visits_week"] == 2
    assert row["rating_recent"] == pytest.approx(3 + 0.3 * (5 - 3))
    assert row["rating_trend"] == pytest.approx(0.3 * 2 - 0.05 * 2)
    mix = np.array([0.125, 0.125 + 0.5])  # day-0 counts halve twice, day-2 counts once
    share = mix / mix.sum()
    assert row["diversity"] == pytest.approx(1 - (share ** 2).sum())
    assert row["repeat_share"] == pytest.approx(share.max())


def test_satisfaction_model_predicts_returns(world, greedy_run):
    panel = labelled_panel(world, greedy_run)
    assert not panel[["returned", "p_true"]].isna().any().any()
    train, test = panel[panel["user_id"] % 2 == 0], panel[panel["user_id"] % 2 == 1]
    result = evaluate(SatisfactionModel().fit(train), test)
    assert 0.55 < result["auc"] <= result["auc_truth"] + 0.02
    assert result["ece_observed"] < 0.1 and result["spearman_satisfaction"] > 0.2


def test_cli_lus(capsys):
    assert main(["lus", "--world", "shop", "--policy", "oracle", "--days", "3",
                 "--profile", "ci", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["policy"] == "oracle" and result["days"] == 3
    assert result["metrics"]["ndcg"] == pytest.approx(1.0)
    assert 0 < result["metrics"]["retained"] <= 1


def test_cli_lus_rejects_bad_days(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it before any work
        main(["lus", "--policy", "greedy", "--days", "0", "--profile", "ci"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--days" in err and len(err.strip().splitlines()) == 1
