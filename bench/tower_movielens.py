"""The text-tower rater on MovieLens 100k: warm RMSE on the official folds, and cold items.

    python bench/tower_movielens.py [--methods lora] [--folds 1 2 3 4 5] [--cold-seeds 0 1 2]
                                    [--epochs 30] [--tuned-epochs 3] [--json PATH]

Warm: each of the folds u1..u5 (train on uK.base, test on uK.test) with the biases, MF (as
``llmrec-lab evaluate`` fits it) and the frozen tower
(:func:`llmrec_lab.experiments.text_tower.fit_frozen`, early-stopped on 5% of the training
ratings), then one tuned tower per method in ``--methods``, each started from that frozen tower
and trained for ``--tuned-epochs`` more as Chapter 3.1 tunes it
(:func:`~llmrec_lab.experiments.text_tower.tune_tower`); its times exclude the frozen stage.
Cold: per seed of ``--cold-seeds``, the cold-items protocol's draw of that seed holds out a share
(``movielens.COLD_FRAC``) of the items with all their ratings; the tower is compared with the
bias model, which predicts ``mu + b_u`` for an item it never saw, by a paired 95% interval of
the difference in squared error over the same test ratings (negative: the tower is better).
The folds and draws come from :func:`llmrec_lab.datasets.movielens.protocol_folds`, the RMSEs
from :func:`llmrec_lab.metrics.rmse`.

Data: ``--data-dir`` or ``$LLMREC_DATA_DIR`` when it holds ml-100k; otherwise a synthetic
ML-100k-shaped fixture written to a temporary folder (figures that measure nothing but the
code path), and the output says which. Figures only, no asserts; times are wall seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec_lab import stats
from llmrec_lab.datasets import movielens
from llmrec_lab.experiments.text_tower import fit_frozen, tune_tower
from llmrec_lab.io import atomic_write
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import RatingModel, make_model
from llmrec_lab.models.tower import TextTowerRater, TowerConfig
from llmrec_lab.models.tuning_methods import METHODS
from llmrec_lab.stats import PerSeed


def paired_interval(sq_a: PerSeed, sq_b: PerSeed) -> dict[str, float]:
    """Mean of ``sq_a - sq_b`` (squared errors on the same test ratings; one array, or one per
    seed) with its 95% interval, from :func:`llmrec_lab.stats.paired_interval`, as plain JSON."""
    iv = stats.paired_interval(sq_a, sq_b)
    return {"mean": iv.estimate, "low": iv.low, "high": iv.high, "n": iv.n}


def load_data(data_dir: str | None, workdir: str) -> tuple[movielens.MovieLens, str]:
    """The real ml-100k if it can be found without downloading, else a fixture; and which."""
    try:
        data = movielens.load_movielens("ml-100k", data_dir, download=False)
        return data, f"real ML-100k from {data.source_dir}"
    except FileNotFoundError:
        if data_dir is not None or os.environ.get(movielens.DATA_ENV):
            raise  # a folder was named: a typo must not silently measure the fixture
    folder = movielens.write_fixture("ml-100k", workdir, n_users=120, n_items=150,
                                     n_ratings=4000, seed=0)
    return (movielens.load_movielens("ml-100k", folder.parent),
            "SYNTHETIC ML-100k-shaped fixture (the real data was not found)")


def timed(fit: Callable[[], TextTowerRater]) -> tuple[TextTowerRater, dict]:
    """Run one tower's ``fit``; return the tower and its cost (total seconds, epochs run, and
    seconds per epoch of training steps, without the per-epoch validation pass)."""
    start = time.perf_counter()
    model = fit()
    total = time.perf_counter() - start
    per_epoch = float(np.mean([h["seconds"] for h in model.history_]))
    return model, {"fit_s": round(total, 1), "epochs_run": len(model.history_),
                   "s_per_epoch": round(per_epoch, 2)}


def towers(items: pd.DataFrame, train: pd.DataFrame, methods: list[str], epochs: tuple[int, int],
           seed: int) -> dict[str, tuple[TextTowerRater, dict]]:
    """The frozen tower (``epochs[0]``), then each tuned method started from it (``epochs[1]``)."""
    fitted = {"frozen": timed(partial(fit_frozen, items, train, seed, epochs=epochs[0]))}
    for method in methods:
        fitted[method] = timed(partial(tune_tower, items, train, fitted["frozen"][0], method,
                                       epochs[1], seed))
    return fitted


def scored(model: RatingModel, test: pd.DataFrame) -> tuple[float, np.ndarray]:
    """``model``'s RMSE on ``test`` and its squared error on each test rating (what the paired
    intervals compare)."""
    truth = test["rating"].to_numpy()
    pred = model.predict(test["user_id"].to_numpy(), test["item_id"].to_numpy())
    return rmse(truth, pred), (pred - truth) ** 2


def warm_folds(data: movielens.MovieLens, methods: list[str], folds: list[int],
               epochs: tuple[int, int], seed: int) -> list[dict]:
    """RMSE of biases, MF and each tower on the chosen official folds; paired intervals of
    each tower against MF (and each tuned tower against the frozen one)."""
    rows = []
    for k, (train, test) in enumerate(movielens.protocol_folds(data, "u1-u5"), start=1):
        if k not in folds:
            continue
        row, sq = {"fold": f"u{k}"}, {}
        for name in ("biases", "mf"):
            start = time.perf_counter()
            row[name], sq[name] = scored(make_model(name, seed=seed).fit(train), test)
            row[f"{name}_fit_s"] = round(time.perf_counter() - start, 1)
        for method, (model, cost) in towers(data.items, train, methods, epochs, seed).items():
            row[f"tower-{method}"], sq[method] = scored(model, test)
            row[f"tower-{method}_minus_mf_sq"] = paired_interval(sq[method], sq["mf"])
            if method != "frozen":
                row[f"tower-{method}_minus_frozen_sq"] = paired_interval(sq[method], sq["frozen"])
            row.update({f"tower-{method}_{key}": value for key, value in cost.items()})
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def cold_items(data: movielens.MovieLens, methods: list[str], seeds: list[int],
               epochs: tuple[int, int]) -> list[dict]:
    """Per seed: the cold-items draw of that seed (a share of the items held out); tower vs
    biases on their ratings, paired."""
    rows = []
    for seed in seeds:
        [(train, test)] = movielens.protocol_folds(data, "cold-items", seed=seed, n_draws=1)
        row = {"seed": seed, "n_test": len(test)}
        row["biases"], sq_biases = scored(make_model("biases").fit(train), test)
        for method, (model, cost) in towers(data.items, train, methods, epochs, seed).items():
            row[f"tower-{method}"], sq = scored(model, test)
            row[f"tower-{method}_minus_biases_sq"] = paired_interval(sq, sq_biases)
            if method != "frozen":
                row[f"tower-{method}_minus_frozen_sq"] = paired_interval(sq, row["_sq_frozen"])
            row.update({f"tower-{method}_{key}": value for key, value in cost.items()})
            row[f"_sq_{method}"], row["_sq_biases"] = sq, sq_biases
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    """One row as ``key=value`` pairs, intervals as ``mean [low, high]``."""
    parts = []
    for key, value in row.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            value = f"{value['mean']:+.4f} [{value['low']:+.4f}, {value['high']:+.4f}]"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        parts.append(f"{key}={value}")
    return "  ".join(parts)


def summarise(warm: list[dict], cold: list[dict], methods: list[str]) -> dict:
    """Means over the folds; over the cold seeds, RMSEs and the pooled paired interval."""
    methods, summary = ["frozen", *methods], {}
    if warm:
        names = ["biases", "mf"] + [f"tower-{m}" for m in methods]
        summary["warm_mean_rmse"] = {n: float(np.mean([r[n] for r in warm])) for n in names}
    if cold:
        summary["cold_mean_rmse"] = {n: float(np.mean([r[n] for r in cold]))
                                     for n in ["biases"] + [f"tower-{m}" for m in methods]}
        biases = [r["_sq_biases"] for r in cold]  # one array per seed: stats pools them
        pooled = {m: [r[f"_sq_{m}"] for r in cold] for m in methods}
        summary["cold_pooled_minus_biases_sq"] = {
            m: paired_interval(pooled[m], biases) for m in methods}
        summary["cold_pooled_minus_frozen_sq"] = {
            m: paired_interval(pooled[m], pooled["frozen"]) for m in methods[1:]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=[], choices=METHODS,
                        help="tuned towers to run after the frozen one (default: none)")
    parser.add_argument("--folds", nargs="*", type=int, default=[1, 2, 3, 4, 5],
                        choices=range(1, 6), metavar="K")
    parser.add_argument("--cold-seeds", nargs="*", type=int, default=[0, 1, 2], metavar="SEED")
    parser.add_argument("--epochs", type=int, default=TowerConfig.epochs,
                        help="most epochs of the frozen tower (early stopping may end sooner)")
    parser.add_argument("--tuned-epochs", type=int, default=3,
                        help="most epochs of each tuned tower, after the frozen one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the warm-fold models")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    try:
        run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"tower_movielens: {err}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        data, source = load_data(args.data_dir, workdir)
        print(f"data: {source}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
              f"{torch.get_num_threads()}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
        start = time.perf_counter()
        epochs = (args.epochs, args.tuned_epochs)
        warm = warm_folds(data, args.methods, args.folds, epochs, args.seed)
        cold = cold_items(data, args.methods, args.cold_seeds, epochs)
    summary = summarise(warm, cold, args.methods)
    summary["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary, indent=1))
    if args.json:
        report = {"data": source, "methods": ["frozen", *args.methods], "epochs": epochs,
                  "warm": warm, "cold": [{k: v for k, v in r.items() if not k.startswith("_")}
                                         for r in cold], "summary": summary}
        atomic_write(args.json, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
