"""World sizes per profile, generation time, and the baselines' test RMSE against the noise floor.

    python bench/world_baselines.py [--profiles ci cpu] [--worlds shop screen] [--seeds 0 1 2]

Prints one row per (profile, world, seed) and the mean over seeds; figures only, no asserts.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from llmrec_lab.config import get_profile
from llmrec_lab.splits import split_for
from llmrec_lab.world import make_world
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import make_model


def measure(world_name: str, profile_name: str, seed: int) -> dict:
    profile = get_profile(profile_name)
    start = time.perf_counter()
    world = make_world(world_name, profile, seed=seed)
    generated = time.perf_counter() - start
    train, valid, test = split_for(world.ratings, "warm", seed)  # random 70/10/20
    y, u, i = (test[c].to_numpy() for c in ("rating", "user_id", "item_id"))
    row = {"profile": profile_name, "world": world_name, "seed": seed,
           "users": world.config.n_users, "items": world.config.n_items,
           "days": world.config.n_days, "ratings": len(world.ratings),
           "triples": len(world.triples), "gen_s": round(generated, 2),
           "oracle": rmse(y, world.oracle_predict(test))}
    for name in ("global-mean", "biases", "mf"):
        start = time.perf_counter()
        model = make_model(name, **({"epochs": profile.mf_epochs, "seed": seed}
                                    if name == "mf" else {}))
        model = model.fit(train, valid=valid) if name == "mf" else model.fit(train)
        row[name] = rmse(y, model.predict(u, i))
        row[f"{name}_s"] = round(time.perf_counter() - start, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["ci", "cpu"])
    parser.add_argument("--worlds", nargs="+", default=["shop", "screen"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    rows = [measure(w, p, s) for p in args.profiles for w in args.worlds for s in args.seeds]
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))
    metrics = ["ratings", "oracle", "global-mean", "biases", "mf", "gen_s", "mf_s"]
    summary = table.groupby(["profile", "world"])[metrics].agg(["mean", "std"])
    print("\nmean and sd over seeds")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
