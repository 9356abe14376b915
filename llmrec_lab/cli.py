"""The ``llmrec-lab`` command: environment info, world generation, and evaluation protocols.

Each subcommand is a thin wrapper over library functions a notebook can call too; with
``--json`` the last line of output is one JSON object, so scripts and tests can read it.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

import numpy as np
import pandas as pd

from llmrec_lab.config import PROFILES, get_profile, pick_device

PACKAGES = ("llmrec-lab", "torch", "torchvision", "transformers", "peft", "pykeen", "numpy",
            "pandas")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line on stderr and exit code 2, not a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace) -> dict:
    """Versions, device, profile, and which text models load without a network."""
    from llmrec_lab.encoders.text import offline_models

    info = {"python": platform.python_version(),
            "packages": {p: _package_version(p) for p in PACKAGES},
            "device": str(pick_device()), "profile": get_profile().name,
            "offline_models": offline_models()}
    if not args.json:
        print(f"python {info['python']}; device {info['device']}; profile {info['profile']}")
        for name, v in info["packages"].items():
            print(f"  {name:14s} {v}")
        for name, ok in info["offline_models"].items():
            print(f"  {'loads offline' if ok else 'needs download'}: {name}")
    return info


def _parse_overrides(pairs: Sequence[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--set {pair!r}: expected KEY=NUMBER") from None
    return out


def cmd_world(args: argparse.Namespace) -> dict:
    """Generate a world and write its files."""
    from llmrec_lab.data.world import make_world

    overrides = _parse_overrides(args.set)
    start = time.perf_counter()
    world = make_world(args.name, args.profile, seed=args.seed, **overrides)
    out = world.save(args.out)
    oracle = world.oracle_predict(world.ratings)
    summary = {"world": args.name, "profile": get_profile(args.profile).name, "seed": args.seed,
               "out": str(out), "users": world.config.n_users, "items": world.config.n_items,
               "days": world.config.n_days, "ratings": len(world.ratings),
               "triples": len(world.triples),
               "oracle_rmse": float(np.sqrt(np.mean((oracle - world.ratings["rating"]) ** 2))),
               "seconds": round(time.perf_counter() - start, 2)}
    if not args.json:
        print(f"wrote {summary['ratings']} ratings, {summary['triples']} triples to {out}")
    return summary


def _folds(args: argparse.Namespace) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """The train/test folds a protocol names, with its data source."""
    from llmrec_lab.data import movielens

    if args.dataset == "ml-100k" and args.protocol == "u1-u5":
        return movielens.official_folds(movielens.load_movielens("ml-100k", args.data_dir))
    if args.protocol == "kfold5":
        data = movielens.load_movielens(args.dataset, args.data_dir)
        return movielens.kfold(data.ratings, k=5, seed=args.seed)
    raise ValueError(f"protocol {args.protocol!r} is not defined for {args.dataset} "
                     f"(ml-100k: u1-u5 or kfold5; ml-1m: kfold5)")


def cmd_evaluate(args: argparse.Namespace) -> dict:
    """Fit a model on each training fold and report RMSE and MAE on the matching test fold."""
    from llmrec_lab.metrics import mae, rmse
    from llmrec_lab.models.baselines import make_model

    folds = []
    for k, (train, test) in enumerate(_folds(args), start=1):
        model = make_model(args.model, seed=args.seed).fit(train)
        pred = model.predict(test["user_id"].to_numpy(), test["item_id"].to_numpy())
        truth = test["rating"].to_numpy()
        folds.append({"fold": k, "rmse": rmse(truth, pred), "mae": mae(truth, pred),
                      "n_train": len(train), "n_test": len(test)})
        if not args.json:
            print(f"fold {k}: RMSE {folds[-1]['rmse']:.4f}  MAE {folds[-1]['mae']:.4f}")
    mean = {m: float(np.mean([f[m] for f in folds])) for m in ("rmse", "mae")}
    if not args.json:
        print(f"mean:   RMSE {mean['rmse']:.4f}  MAE {mean['mae']:.4f}")
    return {"dataset": args.dataset, "protocol": args.protocol, "model": args.model,
            "folds": folds, "mean": mean}


def cmd_lus(args: argparse.Namespace) -> dict:
    """Simulate a policy on a world past its logged history and report the LUS metrics."""
    from llmrec_lab.data.world import make_world
    from llmrec_lab.lus.experiment import make_policy, mf_scores
    from llmrec_lab.lus.metrics import report
    from llmrec_lab.lus.simulator import simulate

    if args.days < 1:
        raise ValueError(f"--days must be at least 1, got {args.days}")
    profile = get_profile(args.profile)
    start = time.perf_counter()
    world = make_world(args.world, profile, seed=args.seed)
    scores = None if args.policy in ("random", "oracle") else mf_scores(world, profile.mf_epochs)
    run = simulate(world, make_policy(args.policy, world, scores, seed=args.seed), args.days,
                   seed=args.seed)
    result = {"world": args.world, "profile": profile.name, "policy": args.policy,
              "days": args.days, "seed": args.seed, "metrics": report(run, world, scores),
              "seconds": round(time.perf_counter() - start, 2)}
    if not args.json:
        for name, value in result["metrics"].items():
            print(f"{name:24s} {value:.4f}")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llmrec-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    info = sub.add_parser("info", help="versions, device, profile, offline models")
    info.set_defaults(run=cmd_info)

    world = sub.add_parser("world", help="generate a synthetic world and write its files")
    world.add_argument("name", choices=["shop", "screen"])
    world.add_argument("--profile", choices=list(PROFILES), default=None)
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--out", required=True, help="directory to write the world into")
    world.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a world parameter, e.g. --set image=0 (repeatable)")
    world.set_defaults(run=cmd_world)

    ev = sub.add_parser("evaluate", help="RMSE and MAE of a model under a protocol")
    ev.add_argument("--dataset", choices=["ml-100k", "ml-1m"], required=True)
    ev.add_argument("--data-dir", default=None,
                    help="directory holding the extracted dataset (default: $LLMREC_DATA_DIR, "
                         "else download into the cache)")
    ev.add_argument("--protocol", choices=["u1-u5", "kfold5"], default=None,
                    help="u1-u5: ml-100k's official folds; kfold5: seeded 5-fold (default for ml-1m)")
    ev.add_argument("--model", required=True, help="global-mean, biases or mf")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(run=cmd_evaluate)

    lus = sub.add_parser("lus", help="simulate a policy and report long-term satisfaction")
    lus.add_argument("--world", choices=["shop", "screen"], default="shop")
    lus.add_argument("--policy", choices=["random", "greedy", "mmr", "calibrated", "lus",
                                          "learned", "oracle"], default="greedy")
    lus.add_argument("--days", type=int, default=60)
    lus.add_argument("--profile", choices=list(PROFILES), default=None)
    lus.add_argument("--seed", type=int, default=0)
    lus.set_defaults(run=cmd_lus)

    for p in (info, world, ev, lus):
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "protocol", "unset") is None:
        args.protocol = "u1-u5" if args.dataset == "ml-100k" else "kfold5"
    try:
        result = args.run(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"llmrec-lab {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
