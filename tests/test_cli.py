"""The llmrec-lab command: JSON on the last line, one-line errors with exit code 2."""
import json

import pytest

from llmrec_lab.cli import main
from llmrec_lab.config import ParameterError
from llmrec_lab.datasets.movielens import write_fixture
from llmrec_lab.world import World


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse exits on bad arguments
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_world_writes_a_loadable_world(tmp_path, capsys):
    code, out, _ = run(capsys, "world", "screen", "--profile", "ci", "--seed", "2",
                       "--out", str(tmp_path / "w"), "--set", "kg=0", "--set", "n_users=40",
                       "--set", "noise_sd=0.5", "--json")
    assert code == 0
    summary = last_json(out)
    world = World.load(summary["out"])
    assert world.config.kg == 0 and world.config.seed == 2 and world.config.noise_sd == 0.5
    assert world.config.n_users == summary["users"] == 40
    assert summary["ratings"] == len(world.ratings)
    assert 0 < summary["oracle_rmse"] < 1


@pytest.mark.parametrize("model", ["global-mean", "biases", "mf", "bpmf"])
def test_evaluate_ml100k_official_folds(tmp_path, capsys, model):
    write_fixture("ml-100k", tmp_path, n_users=40, n_items=30, n_ratings=500)
    code, out, _ = run(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path),
                       "--protocol", "u1-u5", "--model", model, "--json")
    assert code == 0
    result = last_json(out)
    assert [f["fold"] for f in result["folds"]] == [1, 2, 3, 4, 5]
    assert sum(f["n_test"] for f in result["folds"]) == 500  # u1..u5 test folds partition the data
    assert 0 < result["mean"]["mae"] <= result["mean"]["rmse"] < 4


def test_evaluate_ml1m_defaults_to_seeded_kfold(tmp_path, capsys):
    write_fixture("ml-1m", tmp_path, n_users=30, n_items=25, n_ratings=300)
    args = ("evaluate", "--dataset", "ml-1m", "--data-dir", str(tmp_path), "--model", "biases",
            "--json")
    first, second = last_json(run(capsys, *args)[1]), last_json(run(capsys, *args)[1])
    assert first["protocol"] == "kfold5" and first == second


def test_evaluate_human_output(tmp_path, capsys):
    write_fixture("ml-100k", tmp_path, n_users=20, n_items=15, n_ratings=150)
    code, out, _ = run(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path),
                       "--model", "global-mean")
    assert code == 0 and "fold 5: RMSE" in out and out.strip().splitlines()[-1].startswith("mean:")


@pytest.mark.parametrize("argv, fragment", [
    (["evaluate", "--dataset", "ml-100k", "--model", "mf", "--protocol", "u9"], "invalid choice"),
    (["evaluate", "--dataset", "ml-10m", "--model", "mf"], "invalid choice"),
    (["world", "shop"], "--out"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_one_line_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_errors_from_the_library_are_one_line(tmp_path, capsys):
    write_fixture("ml-1m", tmp_path)
    cases = [
        ["evaluate", "--dataset", "ml-1m", "--data-dir", str(tmp_path), "--protocol", "u1-u5",
         "--model", "mf"],
        ["evaluate", "--dataset", "ml-1m", "--data-dir", str(tmp_path), "--model", "svd++"],
        ["evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path / "empty"), "--model", "mf"],
        ["world", "shop", "--out", str(tmp_path / "w"), "--set", "sparkle=1"],
    ]
    for argv in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and "error" in err, err


@pytest.mark.parametrize("setting, fragment", [
    ("n_users=1.5", "n_users='1.5' is not allowed: use an integer in 1..1000000"),
    ("n_days=0", "n_days=0 is not allowed: use an integer in 1..10000"),
    ("boredom=-1", "boredom=-1.0 is not allowed: use a finite number in [0, 100]"),
    ("noise_sd=nan", "noise_sd=nan is not allowed: use a finite number in (0, 100]"),
    ("image=inf", "image=inf is not allowed: use a finite number in [0, 100]"),
    ("sparkle=1", "unknown world parameter(s) 'sparkle'; known: name, n_users"),
    ("n_users", "'n_users' is not KEY=VALUE"),
    ("seed=3", "--set 'seed=3': the world's seed has its own argument"),
])
def test_bad_world_parameter_is_one_line_naming_it(tmp_path, capsys, setting, fragment):
    out = tmp_path / "w"
    code, stdout, err = run(capsys, "world", "shop", "--profile", "ci", "--out", str(out),
                            "--set", setting)
    assert code == 2 and stdout == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("llmrec-lab world: error: ") and fragment in err
    assert not out.exists()


@pytest.mark.parametrize("argv, fragment", [
    (["world", "shop", "--out", "w", "--seed", "-1"], "argument --seed: '-1' is not allowed: use "
                                                      "an integer >= 0"),
    (["lus", "--days", "0"], "argument --days: '0' is not allowed: use an integer >= 1"),
    (["finetune", "--train", "0"], "argument --train: '0' is not allowed"),
    (["finetune", "--epochs", "1.5"], "argument --epochs: '1.5' is not allowed"),
    (["evaluate", "--dataset", "ml-1m", "--model", "mf", "--eval", "-2"], "argument --eval"),
])
def test_bad_numeric_option_is_refused_by_the_parser(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err


def test_unexpected_errors_are_one_line_unless_debug(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr("llmrec_lab.world.make_world", broken)
    argv = ["world", "shop", "--out", str(tmp_path / "w")]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err == "llmrec-lab world: error: RuntimeError: disk on fire second line\n"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", *argv])


def test_debug_shows_the_parameter_error(tmp_path):
    with pytest.raises(ParameterError, match="n_days=0"):
        main(["--debug", "world", "shop", "--out", str(tmp_path / "w"), "--set", "n_days=0"])


def test_info_reports_offline_default_model(capsys, monkeypatch):
    monkeypatch.setenv("LLMREC_PROFILE", "ci")
    code, out, _ = run(capsys, "info", "--json")
    info = last_json(out)
    assert code == 0 and info["profile"] == "ci"
    assert info["offline_models"]["sentence-transformers/all-MiniLM-L6-v2"] is True
    assert info["packages"]["torch"] != "not installed"


TINY_WORLD = ("--profile", "ci", "--set", "n_users=40", "--set", "n_items=30")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """The frozen tower's embedding cache in this test's folder, not the user's."""
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))


def test_tuning_methods_spelled_out_for_the_parser_match_the_library():
    from llmrec_lab.cli import TOWERS, TUNED
    from llmrec_lab.models.tower import TOWER_METHODS
    from llmrec_lab.models.tuning_methods import METHODS

    assert TUNED == METHODS and TOWERS == TOWER_METHODS


@pytest.mark.parametrize("method, setting", [("frozen", "warm"), ("lora", "cold")])
def test_finetune_tower_reports_mf_and_biases_on_the_same_split(tiny_bert, own_cache, capsys,
                                                                method, setting):
    from llmrec_lab.splits import split_for
    from llmrec_lab.world import make_world
    from llmrec_lab.metrics import rmse
    from llmrec_lab.models.baselines import make_model

    code, out, _ = run(capsys, "finetune", "--architecture", "tower", "--method", method,
                       "--setting", setting, "--seed", "1", *TINY_WORLD, "--encoder", tiny_bert,
                       "--json")
    assert code == 0
    result = last_json(out)
    assert result["architecture"] == "tower" and result["method"] == method
    assert result["setting"] == setting and result["set"] == {"n_users": 40, "n_items": 30}
    world = make_world("shop", "ci", seed=1, n_users=40, n_items=30)
    train, _, test = split_for(world.ratings, setting, seed=1)
    assert (result["n_train"], result["n_test"]) == (len(train), len(test))
    pairs, truth = (test["user_id"], test["item_id"]), test["rating"]
    for name in ("mf", "biases"):
        assert result[f"{name}_rmse"] == rmse(truth, make_model(name, seed=1).fit(train)
                                             .predict(*pairs))
        interval = result[f"minus_{name}"]
        assert set(interval) == {"estimate", "low", "high", "verdict"}
        # equal when the tower kept its start, MF (TextTowerRater.fit's init)
        assert interval["low"] <= interval["estimate"] <= interval["high"]
        # the paired estimate of a difference of RMSEs on the same ratings is that difference
        assert interval["estimate"] == pytest.approx(result["test_rmse"] - result[f"{name}_rmse"])
    assert 0 < result["oracle_rmse"] < result["static_floor_rmse"] < result["biases_rmse"]
    assert (result["trainable_encoder"] > 0) == (method != "frozen")
    assert result["trainable"] > result["trainable_encoder"] and result["seconds"] > 0


def test_evaluate_cold_items_holds_out_whole_items_over_five_seeds(tmp_path, capsys):
    from llmrec_lab.datasets.movielens import load_movielens, protocol_folds

    write_fixture("ml-100k", tmp_path, n_users=40, n_items=30, n_ratings=500)
    data = load_movielens("ml-100k", tmp_path)
    folds = protocol_folds(data, "cold-items", seed=3)
    assert len(folds) == 5
    held_out = []
    for train, test in folds:
        assert len(train) + len(test) == len(data.ratings)
        assert not set(test["item_id"]) & set(train["item_id"])  # cold: no rating in training
        assert len(set(test["item_id"])) == round(0.2 * data.ratings["item_id"].nunique())
        held_out.append(frozenset(test["item_id"]))
    assert len(set(held_out)) == 5  # each seed holds out other items
    code, out, _ = run(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path),
                       "--protocol", "cold-items", "--seed", "3", "--model", "biases", "--json")
    result = last_json(out)
    assert code == 0 and result["protocol"] == "cold-items" and result["seed"] == 3
    assert [(f["fold"], f["n_test"]) for f in result["folds"]] == [
        (k, len(test)) for k, (_, test) in enumerate(folds, start=1)]
    assert 0 < result["mean"]["mae"] <= result["mean"]["rmse"] < 4


@pytest.mark.parametrize("model, protocol", [("tower-frozen", "u1-u5"),
                                             ("tower-ia3", "cold-items"),
                                             ("bpmf-text", "cold-items")])
def test_evaluate_tower_on_movielens_fixture(tiny_bert, own_cache, tmp_path, capsys, model,
                                             protocol):
    write_fixture("ml-100k", tmp_path, n_users=20, n_items=15, n_ratings=150)
    code, out, _ = run(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path),
                       "--protocol", protocol, "--model", model, "--epochs", "1",
                       "--encoder", tiny_bert, "--json")
    assert code == 0
    result = last_json(out)
    assert result["model"] == model and [f["fold"] for f in result["folds"]] == [1, 2, 3, 4, 5]
    assert all(f["n_train"] + f["n_test"] == 150 for f in result["folds"])  # every rating used
    assert 0 < result["mean"]["mae"] <= result["mean"]["rmse"] < 4


@pytest.mark.parametrize("argv, fragment", [
    (["finetune", "--architecture", "tower", "--method", "bitfit"], "invalid choice: 'bitfit'"),
    (["evaluate", "--dataset", "ml-100k", "--model", "tower-bitfit"],
     "unknown model tower-bitfit; the tower models are tower-frozen, tower-full"),
    (["evaluate", "--dataset", "ml-100k", "--model", "tower-lora", "--train", "8"],
     "--train sizes the cross-encoder's samples"),
    (["finetune", "--architecture", "tower", "--eval", "8"], "--eval sizes the cross-encoder's"),
    (["finetune", "--method", "frozen"], "--method frozen applies to --architecture tower only"),
    (["finetune", "--architecture", "tower", "--setting", "lukewarm"], "invalid choice"),
    (["finetune", "--architecture", "tower", "--set", "n_items=0"], "n_items=0 is not allowed"),
])
def test_bad_tower_combinations_one_line_exit_2(tmp_path, capsys, argv, fragment):
    write_fixture("ml-100k", tmp_path, n_users=5, n_items=5, n_ratings=20)
    extra = ["--data-dir", str(tmp_path)] if argv[0] == "evaluate" else []
    code, out, err = run(capsys, *argv, *extra)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and fragment in err
