"""Chapter 3.1's experiment code: examples without leakage, one run per method, the CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from llmrec_lab.cli import main
from llmrec_lab.datasets.movielens import write_fixture
from llmrec_lab.experiments import cross_encoder
from llmrec_lab.experiments.cross_encoder import FinetuneSettings, make_examples, run_method
from llmrec_lab.metrics import rmse
from llmrec_lab.models.tuning_methods import METHODS, method_penalty

TINY = FinetuneSettings(n_train=24, n_eval=8, epochs=2, max_history=2, batch_size=8,
                        evals_per_epoch=1)



def frames(n_users: int = 12, n_items: int = 8, per_user: int = 6):
    """Items with text, and ratings split into train / valid / test by a fixed rule."""
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item_id": np.arange(n_items),
                          "text": [f"item number {i}" for i in range(n_items)]})
    rows = [(u, i, float(rng.integers(1, 6)), t)
            for u in range(n_users)
            for t, i in enumerate(rng.choice(n_items, per_user, replace=False))]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    part = ratings["timestamp"] % 3
    return ratings[part != 2], ratings[(part == 2) & (ratings["user_id"] % 2 == 0)], \
        ratings[(part == 2) & (ratings["user_id"] % 2 == 1)], items


def test_examples_take_history_from_earlier_training_ratings_only():
    train, valid, test, items = frames()
    settings = FinetuneSettings(n_train=1000, n_eval=1000, max_history=10)
    examples = make_examples(train, valid, test, items, settings)
    assert len(examples.train[0]) == len(train) and len(examples.test[0]) == len(test)
    texts = items.set_index("item_id")["text"]
    held_out = pd.concat([valid, test])
    for (history, candidate), (_, row) in zip(examples.test[0], examples.test_rows.iterrows()):
        assert candidate == texts[row["item_id"]]
        earlier = train[(train["user_id"] == row["user_id"])
                        & (train["timestamp"] < row["timestamp"])]
        assert history.count("item number") == len(earlier)
        later_or_held = held_out[held_out["user_id"] == row["user_id"]]
        for item in later_or_held["item_id"]:
            assert f"{texts[item]} (" not in history


def test_examples_sample_sizes_and_refuse_empty_parts():
    train, valid, test, items = frames()
    examples = make_examples(train, valid, test, items, FinetuneSettings(n_train=5, n_eval=3))
    assert len(examples.train[1]) == 5 and len(examples.valid[1]) == len(examples.test[1]) == 3
    assert len(examples.probe[1]) == 3
    with pytest.raises(ValueError, match="need ratings"):
        make_examples(train, valid.iloc[:0], test, items, TINY)


@pytest.mark.parametrize("method", METHODS)
def test_run_method_reports_cost_curves_and_scores(tiny_bert, method):
    train, valid, test, items = frames()
    examples = make_examples(train, valid, test, items, TINY)
    result = run_method(method, examples, TINY, model_name=tiny_bert)
    assert result["method"] == method and result["n_train"] == 24 and result["n_test"] == 8
    assert (result["trainable"] == result["total"]) == (method == "full")
    assert result["steps"] == 2 * 3  # 24 pairs in batches of 8, two epochs
    assert [r["step"] for r in result["curve"]] == [3, 6]  # one evaluation per epoch
    for key in ("train_rmse", "valid_rmse", "test_rmse", "test_mae", "seconds_per_epoch"):
        assert np.isfinite(result[key]) and result[key] >= 0, key
    assert all(0 < r["valid_rmse"] < 4 and 0 < r["train_rmse"] < 4 for r in result["curve"])
    for split in ("valid", "test"):  # one per pair, clipped: for paired intervals
        pred = result.pop(f"{split}_predictions")
        assert pred.shape == (8,) and ((pred >= 1) & (pred <= 5)).all()
        truth = getattr(examples, split)[1]
        assert result[f"{split}_rmse"] == pytest.approx(rmse(truth, pred))
    json.dumps(result)  # the rest is plain types: the CLI prints it


def test_run_method_adds_adalora_penalty_to_every_step(tiny_bert, monkeypatch):
    penalties = []

    def recording(model):
        penalties.append(method_penalty(model))
        return penalties[-1]

    monkeypatch.setattr(cross_encoder, "method_penalty", recording)
    train, valid, test, items = frames()
    result = run_method("adalora", make_examples(train, valid, test, items, TINY), TINY,
                        model_name=tiny_bert)
    assert len(penalties) == result["steps"] == 6  # one micro-batch per step
    assert all(p is not None and p.item() > 0 for p in penalties)


def test_kept_predictions_are_those_of_the_restored_weights(tiny_bert, monkeypatch):
    checked = []

    class Checking(cross_encoder.Trainer):
        def fit(self):
            history = super().fit()
            valid = [h["valid_rmse"] for h in history]
            checked.append(valid.index(min(valid)) < len(valid) - 1)  # the best is not the last
            curve = self.on_evaluate
            for name, data in (("probe", curve.probe), ("valid", self.valid_data)):
                np.testing.assert_array_equal(curve.kept[name], self.predict(data), err_msg=name)
            return history

    monkeypatch.setattr(cross_encoder, "Trainer", Checking)
    train, valid, test, items = frames()
    settings = replace(TINY, evals_per_epoch=3, lr=0.3)  # too high: the later points get worse
    run_method("full", make_examples(train, valid, test, items, settings), settings,
               model_name=tiny_bert)
    assert checked == [True]


def test_run_method_feeds_side_features_to_the_head(tiny_bert):
    train, valid, test, items = frames()
    examples = make_examples(train, valid, test, items, TINY)
    seen = []

    def item_number(rows: pd.DataFrame) -> np.ndarray:
        seen.append(len(rows))
        return rows[["item_id"]].to_numpy(np.float32) / 8

    result = run_method("lora", examples, TINY, model_name=tiny_bert, features=item_number)
    assert result["n_features"] == 1 and sorted(seen) == [8, 8, 8, 24]  # one call per split
    assert run_method("lora", examples, TINY, model_name=tiny_bert)["n_features"] == 0


@pytest.mark.parametrize("features, message", [
    (lambda rows: np.zeros(len(rows)), r"train pairs: expected one row per rating \(24, d\)"),
    (lambda rows: np.zeros((3, 2)), r"train pairs: expected one row per rating"),
    (lambda rows: np.full((len(rows), 2), np.nan), "train pairs hold NaN"),
])
def test_run_method_names_bad_features(tiny_bert, features, message):
    train, valid, test, items = frames()
    with pytest.raises(ValueError, match=message):
        run_method("lora", make_examples(train, valid, test, items, TINY), TINY, tiny_bert,
                   features=features)


def test_run_method_rejects_unknown_method(tiny_bert):
    train, valid, test, items = frames()
    with pytest.raises(ValueError, match="unknown method"):
        run_method("bitfit", make_examples(train, valid, test, items, TINY), TINY, tiny_bert)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_finetune_json(tiny_bert, capsys):
    code, out, _ = run(capsys, "finetune", "--world", "shop", "--method", "lora", "--profile", "ci",
                       "--train", "16", "--eval", "8", "--epochs", "1", "--encoder", tiny_bert,
                       "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["method"] == "lora" and result["profile"] == "ci" and result["n_train"] == 16
    assert result["setting"] == "warm" and 0 < result["trainable"] < result["total"]
    assert 0 < result["oracle_rmse"] < 1.5 and result["seconds"] > 0


def test_cli_finetune_cross_pairs_mf_on_its_test_sample(tiny_bert, capsys):
    """MF and the biases in the cross-encoder's JSON are scored on the rater's own test pairs
    of the chosen split, and the interval is that of the paired differences."""
    from llmrec_lab.world import make_world
    from llmrec_lab.metrics import rmse
    from llmrec_lab.models.baselines import make_model
    from llmrec_lab.splits import split_for

    code, out, _ = run(capsys, "finetune", "--method", "lora", "--profile", "ci", "--setting",
                       "cold", "--seed", "1", "--train", "16", "--eval", "8", "--epochs", "1",
                       "--encoder", tiny_bert, "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["setting"] == "cold" and result["n_test"] == 8
    world = make_world("shop", "ci", seed=1)
    train, valid, test = split_for(world.ratings, "cold", seed=1)
    settings = FinetuneSettings.from_profile("ci", n_train=16, n_eval=8, epochs=1)
    rows = make_examples(train, valid, test, world.items, settings, seed=1).test_rows
    mf = make_model("mf", seed=1).fit(train).predict(rows["user_id"], rows["item_id"])
    assert result["mf_rmse"] == rmse(rows["rating"], mf)
    interval = result["minus_mf"]
    assert interval["estimate"] == pytest.approx(result["test_rmse"] - result["mf_rmse"])
    assert interval["low"] <= interval["estimate"] <= interval["high"]
    assert interval["verdict"] in ("rater better", "rater worse", "undecided")
    assert result["static_floor_rmse"] == rmse(rows["rating"], world.static_predict(rows))


def test_cli_evaluate_plm_on_movielens_fixture(tiny_bert, tmp_path, capsys):
    write_fixture("ml-100k", tmp_path, n_users=20, n_items=15, n_ratings=150)
    code, out, _ = run(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path),
                       "--model", "plm-ia3", "--train", "8", "--eval", "4", "--epochs", "1",
                       "--encoder", tiny_bert, "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["model"] == "plm-ia3" and [f["fold"] for f in result["folds"]] == [1, 2, 3, 4, 5]
    assert all(f["n_train"] == 8 and f["n_test"] == 4 for f in result["folds"])
    assert 0 < result["mean"]["mae"] <= result["mean"]["rmse"] < 4


@pytest.mark.parametrize("argv, message", [
    (("evaluate", "--dataset", "ml-100k", "--model", "plm-bitfit"), "unknown model plm-bitfit"),
    (("finetune", "--method", "lora", "--train", "0"), "argument --train: '0' is not allowed"),
    (("finetune", "--method", "bitfit"), "invalid choice"),
])
def test_cli_errors_are_one_line_with_code_2(tmp_path, capsys, argv, message):
    write_fixture("ml-100k", tmp_path, n_users=5, n_items=5, n_ratings=20)
    code, out, err = run(capsys, *argv, "--data-dir", str(tmp_path)) if argv[0] == "evaluate" \
        else run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
