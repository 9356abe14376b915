"""Our MatrixFactorization against scikit-surprise's SVD, both at their defaults, on ml-100k u1-u5.

    LLMREC_DATA_DIR=/folder/holding/ml-100k python bench/mf_vs_surprise.py [--json PATH]

Both models fit each fold's ``u{k}.base`` and predict its ``u{k}.test`` in this one process, in
turn, so they share whatever else the machine is doing. Each time covers fit plus prediction from
the ratings frame (for surprise that includes building its trainset, its counterpart of our id
indexing). Prints per-fold RMSE and seconds, the totals, and the time ratios ours / surprise in
wall seconds and in CPU seconds (which barely move when other processes share the cores).

Uses the real files when ``$LLMREC_DATA_DIR`` holds ml-100k, else an ml-100k-shaped fixture (943
users, 1,682 items, 100,000 synthetic ratings) written to a temporary folder, and says which.
scikit-surprise is optional and not a dependency of llmrec-lab (``pip install scikit-surprise``);
without it only our figures are printed. Figures only: nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_lab.datasets.movielens import DATA_ENV, official_folds, write_fixture
from llmrec_lab.io import atomic_write
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import MatrixFactorization

Folds = list[tuple[pd.DataFrame, pd.DataFrame]]


def real_folds() -> Folds | None:
    """The published folds when ``$LLMREC_DATA_DIR`` holds ml-100k, else ``None``."""
    folder = os.environ.get(DATA_ENV)
    if not folder or not (Path(folder) / "ml-100k" / "u1.base").is_file():
        return None
    return official_folds(folder, download=False)


def fixture_folds() -> Folds:
    """Folds of a synthetic release shaped like ml-100k, written to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_fixture("ml-100k", tmp, n_users=943, n_items=1682, n_ratings=100_000)
        return official_folds(folder.parent, download=False)


def ours(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> np.ndarray:
    """Test predictions of our MF at its defaults."""
    model = MatrixFactorization(seed=seed).fit(train)
    return model.predict(test["user_id"].to_numpy(), test["item_id"].to_numpy())


def surprise_svd(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> np.ndarray:
    """Test predictions of scikit-surprise's SVD at its defaults (it clips to 1..5 as we do)."""
    from surprise import SVD, Dataset, Reader

    columns = ["user_id", "item_id", "rating"]
    data = Dataset.load_from_df(train[columns], Reader(rating_scale=(1, 5)))
    algo = SVD(random_state=seed).fit(data.build_full_trainset())
    pairs = list(test[columns].itertuples(index=False, name=None))
    return np.array([p.est for p in algo.test(pairs)])


def measure(model: Callable, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    """RMSE, wall seconds and CPU seconds (all threads of this process) of one fit and predict.

    CPU seconds barely move when other processes compete for the cores; wall seconds do.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    pred = model(train, test, seed)
    return {"rmse": rmse(test["rating"].to_numpy(), pred), "s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu}


def have_surprise() -> bool:
    try:
        import surprise  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()
    folds = real_folds()
    data = "real ml-100k" if folds is not None else "ml-100k-shaped fixture (synthetic ratings)"
    folds = folds if folds is not None else fixture_folds()
    models: dict[str, Callable] = {"ours": ours}
    if have_surprise():
        models["surprise"] = surprise_svd
    else:
        print("scikit-surprise is not installed (pip install scikit-surprise): our MF only")
    print(f"data: {data}; both fit on one CPU thread (our MF sets it; surprise's SVD has one)")
    rows = [{"fold": f"u{k}", **{f"{name}_{key}": value for name, model in models.items()
                                 for key, value in measure(model, train, test, args.seed).items()}}
            for k, (train, test) in enumerate(folds, start=1)]
    table = pd.DataFrame(rows).set_index("fold")
    summary = {"mean_rmse": table.filter(like="_rmse").mean().to_dict(),
               "total": table.filter(like="_s").sum().to_dict()}
    if "surprise" in models:
        summary["ratio_ours_over_surprise"] = {
            key: summary["total"][f"ours_{key}"] / summary["total"][f"surprise_{key}"]
            for key in ("s", "cpu_s")}
    table.loc["mean"] = table.mean()
    table.loc["total"] = table.iloc[:-1].sum()
    table.loc["total", table.columns.str.endswith("_rmse")] = np.nan
    print(table.round(4).to_string(na_rep=""))
    for key, ratio in summary.get("ratio_ours_over_surprise", {}).items():
        clock = "wall" if key == "s" else "CPU"
        print(f"time ratio ours / surprise ({clock} seconds): {ratio:.2f}")
    if args.json:
        figures = {"data": data, "folds": rows, **summary}
        atomic_write(args.json, json.dumps(figures, indent=2).encode())


if __name__ == "__main__":
    main()
