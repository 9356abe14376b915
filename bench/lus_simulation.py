"""How fast the long-term simulator runs: users x days per second, per policy.

    python bench/lus_simulation.py [--users 10000] [--items 600] [--days 60] [--history 30]
                                   [--policies greedy lus oracle]

Builds one shop world of ``--users`` users (``--history`` logged days), scores items with noisy
true ratings (a stand-in for a fitted model, so the figure is the simulator's, not training's),
then times :func:`llmrec_lab.lus.simulator.simulate` for ``--days`` days under each policy,
recording included. Prints the figures; no asserts.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from llmrec_lab.world.behaviour import expected_rating
from llmrec_lab.world.generate import WorldConfig, generate
from llmrec_lab.experiments.long_term import make_policy
from llmrec_lab.lus.metrics import report
from llmrec_lab.lus.simulator import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--history", type=int, default=30)
    parser.add_argument("--policies", nargs="+", default=["greedy", "lus", "oracle"])
    args = parser.parse_args()

    start = time.perf_counter()
    world = generate(WorldConfig(name="shop", n_users=args.users, n_items=args.items,
                                 n_days=args.history, seed=0))
    generated = time.perf_counter() - start
    users = np.arange(args.users)[:, None]
    items = np.arange(args.items)[None, :]
    scores = expected_rating(world.truth.static_utility(users, items), world.truth.noise_sd)
    scores += np.random.default_rng(0).normal(0.0, 0.4, scores.shape)
    print(f"world: {args.users} users, {args.items} items, {args.history} logged days, "
          f"generated in {generated:.1f} s; {os.cpu_count()} CPU cores visible")

    rows = []
    for name in args.policies:
        start = time.perf_counter()
        run = simulate(world, make_policy(name, world, scores), args.days, seed=0)
        seconds = time.perf_counter() - start
        metrics = report(run, world, scores)
        rows.append({"policy": name, "days": args.days, "seconds": round(seconds, 1),
                     "user_days_per_s": round(args.users * args.days / seconds),
                     "visits": int(run.visited.sum()), "consumptions": len(run.log),
                     "retained": round(metrics["retained"], 3),
                     "cumulative_satisfaction": round(metrics["cumulative_satisfaction"], 2)})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
