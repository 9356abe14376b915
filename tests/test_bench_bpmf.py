"""bench/bpmf_movielens.py runs end to end on the synthetic ML-100k fixture."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bpmf_bench_compares_both_models_on_the_same_ratings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLMREC_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "bpmf.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bpmf_movielens.py"), "--seeds",
                           "0", "1", "--folds", "2", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["data"].startswith("SYNTHETIC") and report["seeds"] == [0, 1]
    (row,) = report["folds"]
    assert row["fold"] == "u2" and len(row["bpmf_per_seed"]) == len(row["mf_per_seed"]) == 2
    iv = row["bpmf_minus_mf_sq"]
    assert iv["low"] <= iv["mean"] <= iv["high"] and iv["n"] > 0
    assert report["mean"] == {"mf": row["mf"], "bpmf": row["bpmf"]}
