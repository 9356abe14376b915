"""The fusion rater: shapes, determinism, missing modalities, fusion variants and the CLI.

Synthetic item features stand in for the encoders here (their own tests cover them): the text
features encode the category, the image features the style, each with noise.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec_lab import cli
from llmrec_lab.splits import split_for
from llmrec_lab.world import make_world
from llmrec_lab.evaluation import evaluate
from llmrec_lab.models.fusion import (FusionRater, ItemFeatures, reduce_content,
                                      world_item_features)

FAST = dict(epochs=3, dim=8, content_dim=8)


@pytest.fixture(scope="module")
def world():
    return make_world("shop", "ci", seed=2, n_users=120, n_items=60, n_days=20)


@pytest.fixture(scope="module")
def features(world):
    rng = np.random.default_rng(0)
    n = world.config.n_items
    text = np.eye(8)[world.truth.category] + 0.3 * rng.normal(size=(n, 8))
    image = np.eye(6)[world.truth.style] + 0.3 * rng.normal(size=(n, 6))
    text = np.c_[text, rng.normal(size=(n, 4))].astype(np.float32)
    image = np.c_[image, rng.normal(size=(n, 6))].astype(np.float32)
    return ItemFeatures(np.arange(n), {"text": text, "image": image}, {"text": "t", "image": "i"})


@pytest.fixture(scope="module")
def cold(world):
    return split_for(world.ratings, "cold", seed=0)


@pytest.fixture(scope="module")
def fitted(features, cold):
    train, valid, _ = cold
    return FusionRater(features, **FAST).fit(train, valid)


def test_predictions_broadcast_and_stay_in_scale(fitted, world):
    users, items = np.arange(5), np.arange(world.config.n_items)
    grid = fitted.predict(users[:, None], items[None, :])
    assert grid.shape == (5, len(items))
    assert grid.min() >= 1 and grid.max() <= 5
    np.testing.assert_allclose(fitted.predict(users, items[:5]), np.diag(grid[:, :5]))


def test_fit_is_deterministic_for_a_seed(features, cold, fitted):
    train, valid, test = cold
    again = FusionRater(features, **FAST).fit(train, valid)
    np.testing.assert_allclose(again.predict(test["user_id"], test["item_id"]),
                               fitted.predict(test["user_id"], test["item_id"]), atol=1e-6)


def test_cold_items_lack_an_id_and_attention_sums_to_one(fitted, cold):
    train, _, test = cold
    assert set(test["item_id"]).isdisjoint(train["item_id"])
    weights = fitted.attention_weights(test["user_id"][:50], test["item_id"][:50])
    assert list(weights.columns) == ["text", "image", "id"]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    has_id = fitted.item_has_id_.cpu().numpy()
    assert not has_id[fitted.items_.get_indexer(test["item_id"])].any()
    assert has_id[fitted.items_.get_indexer(train["item_id"])].all()


def test_unknown_users_and_items_get_the_missing_tokens(fitted):
    unknown_user = fitted.predict(np.array([10_000]), np.array([0]))
    unknown_item = fitted.predict(np.array([0]), np.array([10_000]))
    assert np.isfinite(unknown_user).all() and np.isfinite(unknown_item).all()


def test_an_item_without_an_image_uses_the_missing_image_token(features, cold, fitted):
    train, valid, test = cold
    item = int(test["item_id"].iloc[0])
    blind = features.without("image", [item])
    assert not blind.present("image")[item] and blind.present("image").sum() == len(
        features.item_ids) - 1
    model = FusionRater(blind, **FAST).fit(train, valid)
    users = np.arange(5)
    assert np.isfinite(model.predict(users, np.full(5, item))).all()
    # with the missing token in place of the picture, the prediction changes
    fitted_pred = fitted.predict(users, np.full(5, item))
    assert not np.allclose(model.predict(users, np.full(5, item)), fitted_pred)


@pytest.mark.parametrize("modalities", [("id",), ("text",), ("image",), ("text", "image")])
def test_every_subset_of_modalities_fits(features, cold, modalities):
    train, valid, _ = cold
    model = FusionRater(features, modalities, **FAST).fit(train, valid)
    assert model.tokens_ == [m for m in ("text", "image", "id") if m in modalities]
    assert np.isfinite(model.predict(np.arange(3), np.arange(3))).all()


def test_gating_and_concat(features, cold):
    train, valid, test = cold
    gating = FusionRater(features, fusion="gating", **FAST).fit(train, valid)
    gates = gating.attention_weights(test["user_id"][:20], test["item_id"][:20]).to_numpy()
    assert ((gates > 0) & (gates < 1)).all()
    concat = FusionRater(features, fusion="concat", **FAST).fit(train, valid)
    assert np.isfinite(concat.predict(np.arange(3), np.arange(3))).all()
    with pytest.raises(ValueError, match="concat"):
        concat.attention_weights([0], [0])


def test_bad_arguments_are_named(features, world):
    with pytest.raises(ValueError, match="modalities"):
        FusionRater(features, ("sound",))
    with pytest.raises(ValueError, match="fusion"):
        FusionRater(features, fusion="sum")
    with pytest.raises(ValueError, match="lack modality"):
        FusionRater(ItemFeatures(features.item_ids, {"text": features.content["text"]}),
                    ("text", "image"))
    with pytest.raises(ValueError, match="shape"):
        ItemFeatures(np.arange(3), {"text": np.zeros((4, 2))})
    with pytest.raises(RuntimeError, match="not fitted"):
        FusionRater(features).predict([0], [0])
    with pytest.raises(ValueError, match="do not cover"):
        small = ItemFeatures(features.item_ids[:10],
                             {k: v[:10] for k, v in features.content.items()})
        FusionRater(small, **FAST).fit(world.ratings)


def test_untrained_attention_weighs_the_modalities_equally(features, cold):
    train, valid, test = cold
    model = FusionRater(features, **{**FAST, "epochs": 0}).fit(train, valid)
    weights = model.attention_weights(test["user_id"][:10], test["item_id"][:10])
    np.testing.assert_allclose(weights.to_numpy(), 1 / 3, atol=1e-6)


def test_train_rmse_is_the_data_error_without_the_penalty(features, cold):
    """With lr=0 nothing moves, so the ID penalty's weight must not change the recorded error."""
    train, valid, _ = cold
    curves = [FusionRater(features, **{**FAST, "epochs": 1, "lr": 0.0, "reg": reg})
              .fit(train, valid).history_[0] for reg in (0.0, 100.0)]
    assert curves[0]["train_rmse"] == pytest.approx(curves[1]["train_rmse"], rel=1e-6)
    assert curves[0]["valid_rmse"] == curves[1]["valid_rmse"]


def test_default_modalities_are_the_features_and_the_id(features, world):
    with_kg = ItemFeatures(features.item_ids, {**features.content,
                                               "kg": features.content["text"][:, :5]})
    assert FusionRater(with_kg).tokens_ == ["text", "image", "kg", "id"]
    assert FusionRater(features).tokens_ == ["text", "image", "id"]
    with pytest.raises(ValueError, match="fitted KG embedding"):
        world_item_features(world, modalities=("kg",))


def test_a_modality_helps_cold_items_only_where_the_world_puts_signal():
    """Finish tastes three times the default: the picture (here the style plus noise) must
    lower cold-item RMSE; with no finish tastes it must not."""
    gain = {}
    for strength in (3.0, 0.0):
        w = make_world("shop", "ci", seed=0, image=strength)
        rng, n = np.random.default_rng(0), w.config.n_items
        text = np.c_[np.eye(8)[w.truth.category] + 0.3 * rng.normal(size=(n, 8)),
                     rng.normal(size=(n, 4))]
        image = np.c_[np.eye(6)[w.truth.style] + 0.3 * rng.normal(size=(n, 6)),
                      rng.normal(size=(n, 6))]
        f = ItemFeatures(np.arange(n), {"text": text.astype(np.float32),
                                        "image": image.astype(np.float32)})
        train, valid, test = split_for(w.ratings, "cold", seed=0)
        rmse = {}
        for mods in (("text",), ("text", "image")):
            m = FusionRater(f, mods, epochs=20, dim=8, content_dim=8).fit(train, valid)
            rmse[mods] = evaluate(m, w, train, test, cold=True)["rmse"]
        gain[strength] = rmse[("text", "image")] - rmse[("text",)]
    assert gain[3.0] < -0.03
    assert gain[0.0] > -0.01
    assert gain[3.0] < gain[0.0] - 0.03


def test_reduce_content_whitens_to_unit_norm():
    x = np.random.default_rng(1).normal(size=(50, 20)) * np.arange(1, 21)
    z = reduce_content(x, 5)
    assert z.shape == (50, 5)
    np.testing.assert_allclose(np.mean(np.sum(z ** 2, axis=1)), 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match="content_dim"):
        reduce_content(x, 30)


def test_evaluate_reports_model_and_oracle(fitted, world, cold):
    train, _, test = cold
    metrics = evaluate(fitted, world, train, test, cold=True)
    assert set(metrics) == {"rmse", "ndcg@10", "oracle_rmse", "oracle_ndcg@10"}
    assert metrics["oracle_rmse"] < metrics["rmse"]
    assert 0 <= metrics["ndcg@10"] <= 1


def test_evaluate_ranks_a_seeded_sample_of_users(fitted, world, cold, monkeypatch):
    """NDCG over a sample: the same users for every call with a seed, all of them without a cap,
    and RMSE always over every test rating."""
    train, _, test = cold
    ranked = []  # the users of each users x items scoring call
    score = type(fitted).score

    def recording(self, u, i):
        if np.ndim(u) == 2:
            ranked.append(np.ravel(u).tolist())
        return score(self, u, i)

    monkeypatch.setattr(type(fitted), "score", recording)
    n_liked = test.loc[test["rating"] >= 4, "user_id"].nunique()
    assert n_liked > 10
    whole = evaluate(fitted, world, train, test, cold=True, max_users=None)
    capped = [evaluate(fitted, world, train, test, cold=True, max_users=10, seed=s)
              for s in (0, 0, 1)]
    assert [len(u) for u in ranked] == [n_liked, 10, 10, 10]
    assert ranked[1] == ranked[2] != ranked[3]
    assert capped[0] == capped[1]
    assert capped[0]["rmse"] == capped[2]["rmse"] == whole["rmse"]


def test_cli_fusion_prints_metrics_as_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path))
    code = cli.main(["fusion", "--world", "shop", "--modalities", "id", "--profile", "ci",
                     "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["modalities"] == "id" and result["setting"] == "cold"
    assert result["rmse"] > result["oracle_rmse"] > 0
    assert cli.main(["fusion", "--modalities", "text,smell", "--profile", "ci"]) == 2


def test_cli_fusion_embeds_the_kg_for_the_kg_modality(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path))
    code = cli.main(["fusion", "--world", "screen", "--modalities", "kg,id", "--kge", "distmult",
                     "--profile", "ci", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["modalities"] == "kg+id" and result["sources"]["kg"].startswith("distmult")
    assert result["rmse"] > result["oracle_rmse"] > 0
