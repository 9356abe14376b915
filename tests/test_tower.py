"""The text-tower rater: shapes, cold items from text, what each method trains, determinism."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_lab.splits import cold_start_items, random_split
from llmrec_lab.encoders.text import TextEncoder
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import Biases
from llmrec_lab.models.tower import TextTowerRater, TowerConfig
from llmrec_lab.models.tuning_methods import METHODS

from test_tuning_methods import EXPECTED, HEAD, SETTINGS

NOUNS = ("film", "story", "picture", "movie", "drama", "tale")
ID_TABLES = {"user_bias", "item_bias", "user_vec", "item_vec"}


def synthetic(n_users: int = 40, n_items: int = 40, per_user: int = 16,
              seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """Item texts and ratings where the rating depends on one word: "wonderful" items get about
    4.5 stars, "awful" ones about 1.5, plus a user bias and noise."""
    rng = np.random.default_rng(seed)
    good = np.arange(n_items) % 2 == 0
    ids = np.arange(100, 100 + n_items)
    texts = pd.Series([f"a {'wonderful' if g else 'awful'} {NOUNS[k % len(NOUNS)]}"
                       for k, g in enumerate(good)], index=ids)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    stars = 3 + 1.5 * np.where(good[items], 1, -1) + rng.normal(0, 0.3, n_users)[users]
    stars = np.clip(np.round(stars + rng.normal(0, 0.3, len(users))), 1, 5)
    return texts, pd.DataFrame({"user_id": users, "item_id": ids[items], "rating": stars})


def config(tiny_bert: str, tmp_path, **kw) -> TowerConfig:
    """A small, fast configuration on the tiny BERT."""
    base = dict(model_name=tiny_bert, factors=4, epochs=30, items_per_step=8, lr_head=1e-2,
                lr_embeddings=1e-2, weight_decay=0.0, valid_frac=0.0, cache_dir=str(tmp_path),
                device="cpu", method_config=SETTINGS)
    return TowerConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data() -> tuple[pd.Series, pd.DataFrame]:
    return synthetic()


def test_predictions_broadcast_and_unknown_ids_fall_back(data, tiny_bert, tmp_path):
    texts, ratings = data
    model = TextTowerRater(texts, config(tiny_bert, tmp_path, epochs=2)).fit(ratings)
    users, items = np.arange(5), texts.index.to_numpy()
    grid = model.predict(users[:, None], items[None, :])
    assert grid.shape == (5, len(items))
    assert ((grid >= 1) & (grid <= 5)).all()
    np.testing.assert_allclose(grid[2], model.predict(np.full(len(items), 2), items))
    # An item absent from the catalogue gets mu + b_u, as in the ID baselines.
    bu = model.bu_[model.users_.get_loc(3)]
    assert model.score(np.array([3]), np.array([-1]))[0] == pytest.approx(model.mu_ + bu)


def test_cold_items_are_predicted_from_their_text(data, tiny_bert, tmp_path):
    texts, ratings = data
    train, test = cold_start_items(ratings, frac_items=0.25, seed=0)
    model = TextTowerRater(texts, config(tiny_bert, tmp_path)).fit(train)
    cold = model.items_.get_indexer(test["item_id"].unique())
    assert not model.warm_[cold].any()
    assert (model.bi_[cold] == 0).all() and (model.Q_[cold] == 0).all()  # no ID terms
    assert (model.V_[cold] != 0).any() and (model.cb_[cold] != 0).all()  # the text's terms
    u = model.users_.get_indexer(test["user_id"])
    i = model.items_.get_indexer(test["item_id"])
    text_only = model.mu_ + model.bu_[u] + model.cb_[i] + (model.P_[u] * model.V_[i]).sum(1)
    np.testing.assert_allclose(model.score(test["user_id"], test["item_id"]), text_only)


def test_tower_beats_biases_on_cold_items(data, tiny_bert, tmp_path):
    texts, ratings = data
    train, test = cold_start_items(ratings, frac_items=0.25, seed=0)
    truth, pairs = test["rating"], (test["user_id"], test["item_id"])
    biases = rmse(truth, Biases().fit(train).predict(*pairs))
    tower = rmse(truth, TextTowerRater(texts, config(tiny_bert, tmp_path)).fit(train)
                 .predict(*pairs))
    assert biases > 1.2  # mu + b_u cannot tell a wonderful cold item from an awful one
    assert tower < 0.6 * biases


def test_frozen_method_trains_no_encoder_and_reuses_the_cache(data, tiny_bert, tmp_path,
                                                              monkeypatch):
    texts, ratings = data
    first = TextTowerRater(texts, config(tiny_bert, tmp_path, epochs=2)).fit(ratings)
    trainable = {n.split(".")[0] for n, p in first.net_.named_parameters() if p.requires_grad}
    assert trainable == ID_TABLES | {"text"}
    assert {n for n, _ in first.net_.text.named_parameters()} == {"head.weight", "head.bias"}

    def no_encoding(*args, **kwargs):
        raise AssertionError("the frozen tower encoded a text that was cached")

    monkeypatch.setattr(TextEncoder, "_embed", no_encoding)
    second = TextTowerRater(texts, config(tiny_bert, tmp_path, epochs=2)).fit(ratings)
    np.testing.assert_array_equal(second.net_.text.vectors, first.net_.text.vectors)


@pytest.mark.parametrize("method", METHODS)
def test_methods_change_only_their_own_parameters(data, tiny_bert, tmp_path, monkeypatch,
                                                  method):
    texts, ratings = data
    seen = {}
    train = TextTowerRater._train

    def snapshot_then_train(self, *args, **kw):
        seen["before"] = {n: p.detach().clone() for n, p in self.net_.named_parameters()}
        seen["trainable"] = {n for n, p in self.net_.named_parameters() if p.requires_grad}
        return train(self, *args, **kw)

    monkeypatch.setattr(TextTowerRater, "_train", snapshot_then_train)
    model = TextTowerRater(texts, config(tiny_bert, tmp_path, method=method, epochs=1))
    net = model.fit(ratings).net_
    changed = {n for n, p in net.named_parameters() if not p.equal(seen["before"][n])}
    assert changed <= seen["trainable"]  # nothing frozen moved
    encoder = {n for n in seen["trainable"] if n.startswith("text.encoder.")}
    assert encoder & changed  # the method's own weights moved
    count = sum(p.numel() for n, p in net.named_parameters() if n in encoder)
    if method == "full":
        assert count == sum(p.numel() for p in net.text.encoder.parameters())
    else:  # the same parameters as the cross-encoder's, less its (different) head
        assert count == EXPECTED[method] - HEAD


@pytest.mark.parametrize("method", ["frozen", "lora"])
def test_same_seed_same_predictions(data, tiny_bert, tmp_path, method):
    texts, ratings = data

    def predictions(seed: int) -> np.ndarray:
        cfg = config(tiny_bert, tmp_path, method=method, epochs=2, seed=seed, valid_frac=0.1)
        return TextTowerRater(texts, cfg).fit(ratings).predict(ratings["user_id"],
                                                              ratings["item_id"])

    first = predictions(0)
    np.testing.assert_array_equal(first, predictions(0))
    assert not np.array_equal(first, predictions(1))


def test_early_stopping_keeps_the_best_epoch(data, tiny_bert, tmp_path):
    texts, ratings = data
    cfg = config(tiny_bert, tmp_path, valid_frac=0.2, patience=2, lr_embeddings=5e-2,
                 reg=0.0, factors=16)
    model = TextTowerRater(texts, cfg).fit(ratings)
    curve = [h["valid_rmse"] for h in model.history_]
    assert len(curve) < cfg.epochs and np.argmin(curve) < len(curve) - 1  # it stopped late
    _, valid = random_split(ratings, test_frac=0.2, seed=0)
    assert model._rmse_on(valid) == pytest.approx(min(curve))


def test_epochs_encode_only_the_validation_items_and_the_kept_weights_the_catalogue(
        data, tiny_bert, tmp_path, monkeypatch):
    """Validating an epoch encodes the validation items' texts only; the catalogue is encoded
    once, at the end, with the kept weights: its tables are a fresh export's, with no NaN."""
    from llmrec_lab.models.tower import TunedText

    texts, ratings = data
    encoded, embed = [], TunedText.embed  # rows per encoder pass in eval mode

    def counted(self, rows):
        if not self.training:
            encoded.append(len(rows))
        return embed(self, rows)

    monkeypatch.setattr(TunedText, "embed", counted)
    model = TextTowerRater(texts, config(tiny_bert, tmp_path, method="lora", epochs=2,
                                         valid_frac=0.2)).fit(ratings)
    _, valid = random_split(ratings, test_frac=0.2, seed=0)
    n_valid = valid["item_id"].nunique()
    assert n_valid < len(texts)
    assert sum(encoded) == 2 * n_valid + len(texts)
    tables = {name: getattr(model, name) for name in ("bu_", "P_", "bi_", "Q_", "cb_", "V_")}
    assert not any(np.isnan(t).any() for t in tables.values())
    model._export()
    for name, table in tables.items():
        np.testing.assert_array_equal(getattr(model, name), table, err_msg=name)


@pytest.mark.parametrize("field, value", [
    ("method", "bitfit"), ("factors", 0), ("epochs", 0), ("items_per_step", 0),
    ("hidden", -1), ("lr_head", 0.0), ("lr_encoder", -1e-3), ("lr_embeddings", None),
    ("reg", -0.1), ("weight_decay", -1.0), ("encoder_weight_decay", -0.5), ("id_dropout", 1.0),
    ("valid_frac", -0.1),
    ("patience", 0), ("max_length", 1)])
def test_bad_settings_are_named_in_one_line(field, value):
    with pytest.raises(ValueError, match=rf"^TowerConfig\.{field}=[^\n]*$"):
        TowerConfig(**{field: value})


def test_bad_inputs_are_refused(data, tiny_bert, tmp_path):
    texts, ratings = data
    with pytest.raises(ValueError, match="repeat an item_id"):
        TextTowerRater(pd.concat([texts, texts]))
    with pytest.raises(ValueError, match="non-empty Series"):
        TextTowerRater(pd.Series([], dtype=str))
    stray = pd.concat([ratings, pd.DataFrame({"user_id": [0], "item_id": [7], "rating": [3.0]})])
    with pytest.raises(ValueError, match=r"item ids without a text: \[7\]"):
        TextTowerRater(texts, config(tiny_bert, tmp_path)).fit(stray)


def test_a_tuned_tower_starts_where_its_frozen_init_ended(data, tiny_bert, tmp_path):
    texts, ratings = data
    frozen = TextTowerRater(texts, config(tiny_bert, tmp_path, epochs=5)).fit(ratings)
    still = dict(lr_head=1e-12, lr_embeddings=1e-12, lr_encoder=1e-12)  # steps that move nothing
    tuned = TextTowerRater(texts, config(tiny_bert, tmp_path, method="lora", epochs=1, **still))
    pairs = (ratings["user_id"], ratings["item_id"])
    np.testing.assert_allclose(tuned.fit(ratings, init=frozen).score(*pairs),
                               frozen.score(*pairs), atol=1e-5)
    cold_start = TextTowerRater(texts, config(tiny_bert, tmp_path, method="lora", epochs=1,
                                              **still)).fit(ratings)
    assert np.abs(cold_start.score(*pairs) - frozen.score(*pairs)).max() > 0.1
    with pytest.raises(ValueError, match="other shapes"):
        TextTowerRater(texts, config(tiny_bert, tmp_path, method="lora", factors=8)).fit(
            ratings, init=frozen)
    with pytest.raises(ValueError, match="same ratings"):
        TextTowerRater(texts, config(tiny_bert, tmp_path, method="lora")).fit(
            ratings.iloc[:100], init=frozen)


def test_a_worse_tuned_epoch_does_not_replace_its_start(data, tiny_bert, tmp_path):
    texts, ratings = data
    frozen = TextTowerRater(texts, config(tiny_bert, tmp_path, epochs=5, valid_frac=0.2)).fit(
        ratings)
    wild = TextTowerRater(texts, config(tiny_bert, tmp_path, method="lora", epochs=1,
                                        valid_frac=0.2, lr_embeddings=50.0))  # wrecks the IDs
    wild.fit(ratings, init=frozen)
    start, tuned = wild.history_
    assert start["epoch"] == 0 and tuned["valid_rmse"] > start["valid_rmse"]
    pairs = (ratings["user_id"], ratings["item_id"])
    np.testing.assert_allclose(wild.score(*pairs), frozen.score(*pairs), atol=1e-5)


def test_a_tower_started_from_mf_is_that_mf_at_epoch_0(data, tiny_bert, tmp_path):
    from llmrec_lab.models.baselines import MatrixFactorization

    texts, ratings = data
    train, valid = random_split(ratings, test_frac=0.2, seed=0)
    train = train[train["item_id"] != texts.index[0]]  # one item MF never saw: cold for both
    mf = MatrixFactorization(n_factors=4, seed=0).fit(train)
    still = dict(lr_head=1e-12, lr_embeddings=1e-12)  # steps that move nothing
    tower = TextTowerRater(texts, config(tiny_bert, tmp_path, epochs=1, **still))
    tower.fit(train, init=mf, valid=valid)
    assert tower.history_[0]["epoch"] == 0
    assert tower.history_[0]["valid_rmse"] == pytest.approx(
        rmse(valid["rating"], mf.predict(valid["user_id"], valid["item_id"])))
    users, items = np.repeat(train["user_id"].unique()[:5], 3), np.tile(texts.index[:3], 5)
    np.testing.assert_allclose(tower.score(users, items), mf.score(users, items), atol=1e-5)
    with pytest.raises(ValueError, match="n_factors=8"):
        TextTowerRater(texts, config(tiny_bert, tmp_path, factors=8)).fit(train, init=mf)
