"""bench/bpmf_movielens.py runs end to end on the synthetic ML-100k fixture."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bpmf_bench_compares_both_models_on_the_same_ratings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLMREC_DATA_DIR"}
    env.update(PYTHONPATH=str(ROOT), LLMREC_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "bpmf.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bpmf_movielens.py"), "--seeds",
                           "0", "1", "--folds", "2", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["data"].startswith("SYNTHETIC") and report["seeds"] == [0, 1]
    (row,) = report["folds"]
    models = ("mf", "bpmf", "bpmf-text")
    assert row["fold"] == "u2" and all(len(row[f"{m}_per_seed"]) == 2 for m in models)
    for name, reference in (("bpmf", "mf"), ("bpmf-text", "mf"), ("bpmf-text", "bpmf")):
        iv = row[f"{name}_minus_{reference}_sq"]
        assert iv["low"] <= iv["mean"] <= iv["high"] and iv["n"] > 0
    assert "mf_minus_bpmf_sq" not in row
    assert report["mean"] == {m: row[m] for m in models}
