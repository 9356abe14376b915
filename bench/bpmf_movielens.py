"""Bayesian MF (BPMF, Gibbs sampling) against MF on MovieLens 100k's official folds u1-u5.

    python bench/bpmf_movielens.py [--seeds 0 1 2] [--folds 1 2 3 4 5] [--json PATH]

For each fold and seed, MF and :class:`llmrec_lab.models.baselines.BayesianMF` are fitted on
uK.base as ``llmrec-lab evaluate --model mf|bpmf`` fits them (library defaults, that seed) and
judged on uK.test. Printed per fold: each model's RMSE (mean over the seeds) and fit seconds, and
the paired 95% interval of BPMF's squared error minus MF's over the same test ratings, seeds
pooled (:func:`llmrec_lab.stats.paired_interval`; negative: BPMF is better); then the means over
the folds, which is what the u1-u5 protocol reports. Data as in ``tower_movielens.py``: the real
ml-100k from ``--data-dir`` or ``$LLMREC_DATA_DIR``, else a synthetic fixture, and the output
says which. Figures only, no asserts; times are wall seconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from llmrec_lab.datasets import movielens
from llmrec_lab.io import atomic_write
from llmrec_lab.models.baselines import make_model
from tower_movielens import load_data, paired_interval, scored

MODELS = ("mf", "bpmf")


def fold_row(k: int, train, test, seeds: list[int]) -> dict:
    """Both models on one fold for every seed: RMSE, fit seconds and BPMF's paired interval."""
    row, sq = {"fold": f"u{k}"}, {name: [] for name in MODELS}
    for name in MODELS:
        errors, seconds = [], []
        for seed in seeds:
            start = time.perf_counter()
            model = make_model(name, seed=seed).fit(train)
            seconds.append(time.perf_counter() - start)
            error, squared = scored(model, test)
            errors.append(error)
            sq[name].append(squared)
        row[name] = float(np.mean(errors))
        row[f"{name}_per_seed"] = errors
        row[f"{name}_fit_s"] = round(float(np.mean(seconds)), 1)
    row["bpmf_minus_mf_sq"] = paired_interval(sq["bpmf"], sq["mf"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", nargs="*", type=int, default=[1, 2, 3, 4, 5],
                        choices=[1, 2, 3, 4, 5])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        data, source = load_data(args.data_dir, workdir)
        print(f"data: {source}; seeds {args.seeds}", flush=True)
        rows = []
        for k, (train, test) in enumerate(movielens.protocol_folds(data, "u1-u5"), start=1):
            if k in args.folds:
                rows.append(fold_row(k, train, test, args.seeds))
                iv = rows[-1]["bpmf_minus_mf_sq"]
                print(f"u{k}: MF {rows[-1]['mf']:.4f} ({rows[-1]['mf_fit_s']} s), BPMF "
                      f"{rows[-1]['bpmf']:.4f} ({rows[-1]['bpmf_fit_s']} s); squared error, "
                      f"BPMF - MF {iv['mean']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]",
                      flush=True)
    mean = {name: float(np.mean([r[name] for r in rows])) for name in MODELS}
    print("mean over the folds: " + ", ".join(f"{n} {v:.4f}" for n, v in mean.items()))
    if args.json:
        atomic_write(args.json, json.dumps(
            {"data": source, "seeds": args.seeds, "folds": rows, "mean": mean,
             "machine": platform.platform()}, indent=2).encode() + b"\n")


if __name__ == "__main__":
    main()
