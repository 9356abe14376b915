"""Chapter 4.3's case studies: the whole and its parts judged on the same ratings and users."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_lab.splits import split_for
from llmrec_lab.world import make_world
from llmrec_lab.evaluation import NOISE_FLOOR, STATIC_FLOOR, evaluate, ndcg_per_user
from llmrec_lab.experiments.case_studies import (BASELINE, ID_ONLY, SYSTEMS, WHOLE, LongRun,
                                                  best_part,
                                                  compare_parts, long_run, pooled,
                                                  satisfaction_table, tuned_text,
                                                  whole_minus_parts)
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import make_model
from llmrec_lab.models.fusion import FusionRater, ItemFeatures
from llmrec_lab.stats import paired_interval, rmse_difference


@pytest.fixture(scope="module")
def world():
    return make_world("shop", "ci", seed=3, n_users=60, n_items=40)


def _features(world, seed=0) -> ItemFeatures:
    """Random stand-ins for the text, image and KG vectors: the experiment's plumbing, without
    the encoders' cost (their own tests cover them). The text vectors carry the category, so
    that one part has something to read."""
    rng = np.random.default_rng(seed)
    n = world.config.n_items
    text = np.eye(20)[world.truth.category] + 0.1 * rng.normal(size=(n, 20))
    return ItemFeatures(np.arange(n), {"text": text, "image": rng.normal(size=(n, 20)),
                                       "kg": rng.normal(size=(n, 20))})


@pytest.fixture(scope="module")
def runs(world):
    out = []
    for seed in (0, 1):
        train, valid, test = split_for(world.ratings, "cold", seed)
        out.append(compare_parts(_features(world, seed), train, valid, test, "shop", "cold", seed,
                                 epochs=3, world=world))
    return out


def test_every_model_predicts_the_same_test_ratings(world, runs):
    run = runs[0]
    train, valid, test = split_for(world.ratings, "cold", 0)
    assert list(run.predictions) == [ID_ONLY, "text", "image", "KG", WHOLE]
    assert run.parts == [ID_ONLY, "text", "image", "KG"]
    assert np.array_equal(run.ratings, test["rating"].to_numpy())
    mf = make_model("mf", seed=0).fit(train)
    assert np.array_equal(run.predictions[ID_ONLY], mf.predict(test["user_id"], test["item_id"]))
    whole = FusionRater(_features(world, 0), seed=0, epochs=3).fit(train, valid)
    assert whole.tokens_ == ["text", "image", "kg", "id"]
    assert np.array_equal(run.predictions[WHOLE], whole.predict(test["user_id"], test["item_id"]))
    assert list(run.ndcg.columns) == [*run.predictions, STATIC_FLOOR]
    assert ((run.ndcg >= 0) & (run.ndcg <= 1)).all().all()
    table = run.table()
    assert list(table.index) == [*run.predictions, STATIC_FLOOR, NOISE_FLOOR]
    assert table.loc[NOISE_FLOOR, "test RMSE"] == rmse(run.ratings, world.oracle_predict(test))
    assert table.loc[STATIC_FLOOR, "test RMSE"] == rmse(run.ratings, world.static_predict(test))
    assert (table.loc[NOISE_FLOOR, "test RMSE"] < table.loc[STATIC_FLOOR, "test RMSE"]
            < table.loc[ID_ONLY, "test RMSE"])


def test_whole_minus_parts_pairs_the_same_ratings_and_users(runs):
    versus = whole_minus_parts(runs)
    assert list(versus.index) == runs[0].parts
    ys = [r.ratings for r in runs]
    expected = rmse_difference(ys, [r.predictions[WHOLE] for r in runs],
                               [r.predictions["text"] for r in runs])
    assert versus.loc["text", "RMSE"] == expected
    ndcg = paired_interval([1 - r.ndcg[WHOLE].to_numpy() for r in runs],
                           [1 - r.ndcg["KG"].to_numpy() for r in runs])
    assert versus.loc["KG", "NDCG@10 loss"] == ndcg
    means = pooled(runs)
    assert means.loc[WHOLE, "test RMSE"] == pytest.approx(
        np.mean([r.table().loc[WHOLE, "test RMSE"] for r in runs]))
    assert best_part(runs) == means.loc[runs[0].parts, "test RMSE"].idxmin() != WHOLE


def test_real_data_has_no_noise_floor(world):
    train, valid, test = split_for(world.ratings, "cold", 0)
    run = compare_parts(_features(world), train, valid, test, "movielens", "cold", 0, epochs=2)
    assert run.oracle is None and run.static is None and STATIC_FLOOR not in run.ndcg
    assert not {NOISE_FLOOR, STATIC_FLOOR} & set(run.table().index)


def test_long_run_pairs_users_across_systems(world):
    runs = [long_run(world, _features(world, seed), days=4, seed=seed, epochs=3)
            for seed in (0, 1)]
    run = runs[0]
    assert isinstance(run, LongRun)
    assert list(run.satisfaction.columns) == [f"{s} + {p}" for s, p in SYSTEMS] + ["oracle"]
    assert list(run.satisfaction.index) == list(range(world.config.n_users))
    assert (run.satisfaction.to_numpy() != 0).any()
    assert list(run.agreement.columns) == [ID_ONLY, WHOLE]
    assert (run.agreement.abs() <= 1 + 1e-9).all().all()
    table = satisfaction_table(runs)
    assert table.loc[BASELINE, "gap closed"] == 0
    assert table.loc["oracle", "gap closed"] == pytest.approx(1.0)
    iv = table.loc["oracle", f"minus {BASELINE}"]
    assert iv == paired_interval([r.satisfaction["oracle"].to_numpy() for r in runs],
                                 [r.satisfaction[BASELINE].to_numpy() for r in runs])
    # the same seed replays the same simulation
    again = long_run(world, _features(world, 0), days=4, seed=0, epochs=3)
    pd.testing.assert_frame_equal(again.satisfaction, run.satisfaction)


def test_tuned_text_replaces_only_the_text(world, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))
    features = _features(world)
    train, _, _ = split_for(world.ratings, "cold", 0)
    tuned = tuned_text(features, world.items, train, "lora", epochs=1, encoder=tiny_bert)
    assert tuned.content["text"].shape[0] == world.config.n_items
    assert np.array_equal(tuned.content["kg"], features.content["kg"])
    assert tuned.sources["text"] == "lora tower"
    norms = np.linalg.norm(tuned.content["text"], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)  # mean-pooled, L2-normalised


def test_ndcg_per_user_judges_the_same_users_as_evaluate(world):
    train, valid, test = split_for(world.ratings, "warm", 0)
    model = make_model("biases").fit(train)
    catalogue = world.items["item_id"].to_numpy()
    table = ndcg_per_user({"biases": model}, train, test, catalogue, cold=False, seed=0,
                          max_users=10, truth=world.truth)
    again = ndcg_per_user({"mf": make_model("mf", seed=0).fit(train)}, train, test, catalogue,
                          cold=False, seed=0, max_users=10)
    assert len(table) <= 10 and list(table.index) == list(again.index)
    assert set(table.index) <= set(test["user_id"])
    result = evaluate(model, world, train, test, max_users=10, seed=0)
    assert result["ndcg@10"] == pytest.approx(table["biases"].mean())
    assert result["oracle_ndcg@10"] == pytest.approx(table[STATIC_FLOOR].mean())
