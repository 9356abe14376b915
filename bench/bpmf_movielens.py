"""Bayesian MF (BPMF, Gibbs sampling), plain and with the items' text as its prior, against MF
on MovieLens 100k's official folds u1-u5.

    python bench/bpmf_movielens.py [--models mf bpmf bpmf-text] [--seeds 0 1 2]
                                   [--folds 1 2 3 4 5] [--json PATH]

For each fold and seed, each model is fitted on uK.base as ``llmrec-lab evaluate --model NAME``
fits it (library defaults, that seed) and judged on uK.test: ``bpmf`` is
:class:`llmrec_lab.models.baselines.BayesianMF`, ``bpmf-text`` the same with the frozen
encoder's vectors of the items' texts (title, year, genres) as its items' prior
(:func:`llmrec_lab.experiments.text_tower.fit_text_prior_bpmf`). Printed per fold: each model's
RMSE (mean over the seeds) and fit seconds, and the paired 95% interval of each model's squared
error minus that of each model before it in ``--models`` (MF first) over the same test ratings,
seeds pooled (:func:`llmrec_lab.stats.paired_interval`; negative: the later model is better);
then the means over the folds, which is what the u1-u5 protocol reports. Data as in ``tower_movielens.py``: the real
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
from llmrec_lab.experiments.text_tower import fit_text_prior_bpmf
from llmrec_lab.io import atomic_write
from llmrec_lab.models.baselines import RatingModel, make_model
from tower_movielens import load_data, paired_interval, scored

MODELS = ("mf", "bpmf", "bpmf-text")


def fit(name: str, seed: int, train, items) -> RatingModel:
    """``name`` fitted on ``train`` as ``llmrec-lab evaluate --model name`` fits it."""
    if name == "bpmf-text":
        return fit_text_prior_bpmf(items, train, seed)
    return make_model(name, seed=seed).fit(train)


def fold_row(k: int, train, test, items, models: list[str], seeds: list[int]) -> dict:
    """Each model on one fold for every seed: RMSE, fit seconds, and paired intervals against
    each model before it."""
    row, sq = {"fold": f"u{k}"}, {name: [] for name in models}
    for name in models:
        errors, seconds = [], []
        for seed in seeds:
            start = time.perf_counter()
            model = fit(name, seed, train, items)
            seconds.append(time.perf_counter() - start)
            error, squared = scored(model, test)
            errors.append(error)
            sq[name].append(squared)
        row[name] = float(np.mean(errors))
        row[f"{name}_per_seed"] = errors
        row[f"{name}_fit_s"] = round(float(np.mean(seconds)), 1)
    for k, name in enumerate(models):
        for reference in models[:k]:
            row[f"{name}_minus_{reference}_sq"] = paired_interval(sq[name], sq[reference])
    return row


def _line(row: dict, name: str, models: list[str]) -> str:
    text = f"{name} {row[name]:.4f} ({row[f'{name}_fit_s']} s)"
    for reference in models[:models.index(name)]:
        iv = row[f"{name}_minus_{reference}_sq"]
        text += (f", squared error minus {reference}'s {iv['mean']:+.4f} "
                 f"[{iv['low']:+.4f}, {iv['high']:+.4f}]")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS[1:]), choices=MODELS[1:],
                        help="the models besides MF, which always runs (the reference)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", nargs="*", type=int, default=[1, 2, 3, 4, 5],
                        choices=[1, 2, 3, 4, 5])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        data, source = load_data(args.data_dir, workdir)
        models = ["mf", *dict.fromkeys(args.models)]
        print(f"data: {source}; seeds {args.seeds}", flush=True)
        rows = []
        for k, (train, test) in enumerate(movielens.protocol_folds(data, "u1-u5"), start=1):
            if k in args.folds:
                rows.append(fold_row(k, train, test, data.items, models, args.seeds))
                print(f"u{k}: " + "; ".join(_line(rows[-1], name, models) for name in models),
                      flush=True)
    mean = {name: float(np.mean([r[name] for r in rows])) for name in models}
    print("mean over the folds: " + ", ".join(f"{n} {v:.4f}" for n, v in mean.items()))
    if args.json:
        atomic_write(args.json, json.dumps(
            {"data": source, "seeds": args.seeds, "folds": rows, "mean": mean,
             "machine": platform.platform()}, indent=2).encode() + b"\n")


if __name__ == "__main__":
    main()
