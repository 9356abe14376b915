"""The llmrec-lab command: JSON on the last line, one-line errors with exit code 2."""
import json

import pytest

from llmrec_lab.cli import main
from llmrec_lab.config import ParameterError
from llmrec_lab.data.movielens import write_fixture
from llmrec_lab.data.world import World


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


@pytest.mark.parametrize("model", ["global-mean", "biases", "mf"])
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

    monkeypatch.setattr("llmrec_lab.data.world.make_world", broken)
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
