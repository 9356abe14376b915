"""Chapter 3.1's comparison: every model on the same test ratings and users, pooled seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_lab.splits import split_for
from llmrec_lab.world import make_world
from llmrec_lab.experiments.text_tower import (compare_towers, fit_fusion, pooled_table,
                                               tune_tower)
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import make_model
from llmrec_lab.stats import rmse_difference, runs_ndcg_difference


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """The frozen tower's embedding cache in this test's folder, not the user's."""
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def world():
    return make_world("shop", "ci", seed=1, n_users=40, n_items=30, text_style="reviews")


@pytest.fixture
def runs(world, tiny_bert, own_cache):
    return [compare_towers(world, "cold", seed, methods=("frozen", "lora"), epochs=1,
                           encoder=tiny_bert) for seed in (1, 2)]


def test_every_model_predicts_the_same_test_ratings(world, runs):
    run = runs[0]
    _, _, test = split_for(world.ratings, "cold", seed=1)
    assert list(run.predictions) == ["global-mean", "biases", "mf", "tower-lora", "tower-frozen"]
    assert np.array_equal(run.ratings, test["rating"].to_numpy())
    assert all(p.shape == run.ratings.shape for p in run.predictions.values())
    mf = make_model("mf", seed=1).fit(split_for(world.ratings, "cold", seed=1)[0])
    assert np.array_equal(run.predictions["mf"], mf.predict(test["user_id"], test["item_id"]))
    assert np.array_equal(run.oracle, world.oracle_predict(test))
    assert np.array_equal(run.static, world.static_predict(test))
    # the same users for every model, each with an NDCG in [0, 1]
    assert list(run.ndcg.columns) == [*run.predictions, "static floor"]
    assert run.ndcg.notna().all().all() and ((run.ndcg >= 0) & (run.ndcg <= 1)).all().all()


def test_fusion_joins_on_the_same_test_ratings(world, tiny_bert, own_cache):
    """With ``fusion=True`` the fusion model of text and ID predicts the same ratings, is
    ranked for the same users, and is the model :func:`fit_fusion` fits on that split."""
    run = compare_towers(world, "warm", 1, methods=("frozen",), encoder=tiny_bert, fusion=True)
    assert list(run.predictions) == ["global-mean", "biases", "mf", "tower-frozen", "fusion"]
    assert list(run.ndcg.columns) == [*run.predictions, "static floor"]
    assert "fusion" not in run.cost.index and "fusion" not in run.probe.index
    train, valid, test = split_for(world.ratings, "warm", seed=1)
    fusion = fit_fusion(world, train, valid, 1, tiny_bert)
    assert np.array_equal(run.predictions["fusion"],
                          fusion.predict(test["user_id"].to_numpy(), test["item_id"].to_numpy()))


def test_cross_encoder_is_compared_on_its_own_test_sample(world, tiny_bert, own_cache):
    """With ``cross``, the rater's test pairs are a sample of the split's test ratings; on that
    sample every model's errors are the full run's at the same positions, so the pooled table
    pairs them, and the rater's cost sits beside the towers'."""
    from llmrec_lab.experiments.cross_encoder import FinetuneSettings

    settings = FinetuneSettings(n_train=24, n_eval=10, epochs=1)
    run = compare_towers(world, "cold", 1, methods=("frozen",), encoder=tiny_bert, cross="lora",
                         cross_settings=settings)
    assert "cross-lora" not in run.predictions  # it did not score every test rating
    at = run.cross.positions
    assert len(at) == len(run.cross.predictions) == 10 and len(set(at)) == 10
    assert run.cross.n_train == 24
    _, _, test = split_for(world.ratings, "cold", seed=1)
    sample = run.on_cross_sample()
    assert np.array_equal(sample.ratings, test["rating"].to_numpy()[at])
    assert list(sample.predictions) == ["global-mean", "biases", "mf", "tower-frozen",
                                        "cross-lora"]
    assert np.array_equal(sample.predictions["mf"], run.predictions["mf"][at])
    assert np.array_equal(sample.static, run.static[at])
    table = pooled_table([sample])
    assert table.loc["cross-lora", "test RMSE"] == rmse(sample.ratings, run.cross.predictions)
    assert table["NDCG@10"].isna().all()  # the rater ranks no candidates
    assert table.loc["cross-lora", "minus mf"].startswith(("+", "-"))
    cost = run.cost.loc["cross-lora"]
    assert 0 < cost["trainable in encoder"] < cost["trainable"] and cost["epochs"] == 1
    with pytest.raises(ValueError, match="no cross-encoder"):
        sample.on_cross_sample()


def test_table_and_cost_describe_each_model(runs):
    run = runs[0]
    table = run.table()
    assert table.loc["mf", "test RMSE"] == rmse(run.ratings, run.predictions["mf"])
    assert table.loc["noise floor", "test RMSE"] == rmse(run.ratings, run.oracle)
    assert table.loc["static floor", "test RMSE"] == rmse(run.ratings, run.static)
    assert list(table.index) == [*run.predictions, "static floor", "noise floor"]
    # the static ranking is the static floor's NDCG; the noise floor ranks nothing
    assert table.loc["static floor", "NDCG@10"] == run.ndcg["static floor"].mean()
    assert np.isnan(table.loc["noise floor", "NDCG@10"])
    cost = run.cost
    assert cost.loc["tower-frozen", "trainable in encoder"] == 0
    assert 0 < cost.loc["tower-lora", "trainable in encoder"] < cost.loc["tower-lora",
                                                                          "trainable"]
    assert np.isnan(cost.loc["tower-frozen", "items / s"])
    assert cost.loc["tower-lora", "items / s"] > 0 and cost.loc["tower-lora", "epochs"] == 1
    assert (cost["state MB"] > 0).all()


def test_pooled_table_pairs_the_seeds(runs):
    table = pooled_table(runs)
    assert table.loc["mf", "test RMSE"] == pytest.approx(
        np.mean([rmse(r.ratings, r.predictions["mf"]) for r in runs]))
    expected = rmse_difference([r.ratings for r in runs],
                               [r.predictions["tower-lora"] for r in runs],
                               [r.predictions["mf"] for r in runs])
    assert table.loc["tower-lora", "minus mf"] == str(expected)
    assert table.loc["mf", "minus mf"] == "" and table.loc["noise floor", "minus mf"] == ""
    assert table.loc["tower-frozen", "minus tower-frozen"] == ""
    closed = table["static gap closed"]
    assert closed["global-mean"] == 0 and closed["static floor"] == 1
    errors = table["test RMSE"]
    assert closed["mf"] == pytest.approx((errors["global-mean"] - errors["mf"])
                                         / (errors["global-mean"] - errors["static floor"]))


def test_runs_ndcg_difference_is_negative_when_the_first_ranks_better(runs):
    better = runs_ndcg_difference(runs, "static floor", "global-mean")
    assert better.estimate == pytest.approx(np.mean([r.ndcg["global-mean"].mean()
                                                     - r.ndcg["static floor"].mean()
                                                     for r in runs]))
    assert runs_ndcg_difference(runs, "mf", "mf").estimate == 0


def test_bad_methods_are_named(world, tiny_bert):
    with pytest.raises(ValueError, match="methods=\\['bitfit'\\]"):
        compare_towers(world, methods=("bitfit",), encoder=tiny_bert)
    with pytest.raises(ValueError, match="cross='frozen'"):
        compare_towers(world, cross="frozen", encoder=tiny_bert)
    with pytest.raises(ValueError, match="unknown tuning method 'frozen'"):
        tune_tower(world.items, pd.DataFrame(), None, "frozen", 1)


def test_quality_probe_correlates_the_content_bias_with_quality(world, runs):
    from llmrec_lab.experiments import text_tower

    for run in runs:
        assert set(run.probe.index) == {"tower-frozen", "tower-lora"}
        # NaN where a tower kept its MF start: g is zero there, so c_i is constant
        assert (run.probe.isna() | run.probe.between(-1, 1)).all()
    items = world.items["item_id"].to_numpy()
    quality = world.truth.quality[items]

    class Reads:  # a tower whose content bias is the quality, rescaled, plus a little noise
        def content_bias(self, ids):
            noise = np.random.default_rng(0).normal(0, 0.01, len(ids))
            return 3 * world.truth.quality[ids] - 1 + noise

    assert text_tower.quality_probe(Reads(), world, items) > 0.99
    assert np.isnan(text_tower.quality_probe(Reads(), world, items[:2]))
    assert quality.std() > 0


def test_train_size_keeps_nested_subsets_and_the_same_test(world, tiny_bert, own_cache):
    small, large = (compare_towers(world, "warm", 1, methods=("frozen",), encoder=tiny_bert,
                                   train_size=n) for n in (100, 300))
    assert (small.n_train, large.n_train) == (100, 300)
    assert np.array_equal(small.ratings, large.ratings)
    with pytest.raises(ValueError, match="train_size=0"):
        compare_towers(world, "warm", 1, methods=("frozen",), encoder=tiny_bert, train_size=0)


def test_fit_tower_starts_from_mf_and_stops_on_its_own_share(world, tiny_bert, own_cache):
    from llmrec_lab.splits import random_split
    from llmrec_lab.experiments.text_tower import VALID_FRAC, fit_tower

    ratings = world.ratings
    frozen = fit_tower(world.items, ratings, "frozen", epochs=1, seed=1, encoder=tiny_bert)
    fit_part, valid = random_split(ratings, test_frac=VALID_FRAC, seed=1)
    assert frozen.mu_ == pytest.approx(fit_part["rating"].mean())  # trained on the 95% only
    mf = make_model("mf", seed=1).fit(fit_part)
    assert frozen.history_[0]["epoch"] == 0  # the MF start competes, scored on the 5%
    assert frozen.history_[0]["valid_rmse"] == pytest.approx(
        rmse(valid["rating"], mf.predict(valid["user_id"], valid["item_id"])))
    tuned = fit_tower(world.items, ratings, "ia3", epochs=1, seed=1, encoder=tiny_bert)
    assert tuned.config.method == "ia3" and tuned.history_[-1]["epoch"] <= 1
    with pytest.raises(ValueError, match="unknown tower method 'bitfit'"):
        fit_tower(world.items, ratings, "bitfit", epochs=1)
