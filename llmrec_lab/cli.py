"""The ``llmrec-lab`` command: environment info, world generation, and evaluation protocols.

Each subcommand is a thin wrapper over library functions a notebook can call too; with
``--json`` the last line of output is one JSON object, so scripts and tests can read it. Any
error ends the command with one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from llmrec_lab.config import (PROFILES, ParameterError, Range, get_profile, parse_setting,
                               pick_device)

PACKAGES = ("llmrec-lab", "torch", "torchvision", "transformers", "peft", "pykeen", "numpy",
            "pandas")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line on stderr and exit code 2, not a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _in(allowed: Range) -> Callable[[str], int | float]:
    """An argparse type for numbers in ``allowed``, so a bad option fails before any work."""
    def convert(text: str) -> int | float:
        value = allowed.parse(text)
        if not allowed.accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: use {allowed.describe()}")
        return value
    return convert


SEED = _in(Range(int, 0))
COUNT = _in(Range(int, 1))


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


def _parse_overrides(pairs: Sequence[str]) -> dict[str, int | float]:
    """``--set KEY=VALUE`` pairs as checked world parameters (the world's name and seed have
    their own arguments)."""
    from llmrec_lab.data.world import WHAT, WorldConfig

    out: dict[str, int | float] = {}
    for pair in pairs:
        key, value = parse_setting(WorldConfig, pair, WHAT)
        if key in ("name", "seed"):
            raise ParameterError(f"--set {pair!r}: the world's {key} has its own argument")
        out[key] = value
    return out


def cmd_world(args: argparse.Namespace) -> dict:
    """Generate a world and write its files."""
    from llmrec_lab.data.world import make_world

    overrides = _parse_overrides(args.set)
    start = time.perf_counter()
    world = make_world(args.name, args.profile, seed=args.seed, **overrides)
    out = world.save(args.out)
    oracle = world.oracle_predict(world.ratings)
    error = oracle - world.ratings["rating"].to_numpy()
    summary = {"world": args.name, "profile": get_profile(args.profile).name, "seed": args.seed,
               "out": str(out), "users": world.config.n_users, "items": world.config.n_items,
               "days": world.config.n_days, "ratings": len(world.ratings),
               "triples": len(world.triples),
               "oracle_rmse": float(np.sqrt(np.mean(error**2))) if len(error) else None,
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
    plm_method = args.model.removeprefix("plm-") if args.model.startswith("plm-") else None
    if plm_method is not None:
        items = _plm_items(args, plm_method)
    for k, (train, test) in enumerate(_folds(args), start=1):
        if plm_method is not None:
            folds.append({"fold": k, **_plm_fold(args, plm_method, train, test, items)})
        else:
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


def cmd_fusion(args: argparse.Namespace) -> dict:
    """Fit a cross-modal fusion model on chosen modalities and report warm or cold metrics."""
    from llmrec_lab.data.world import make_world
    from llmrec_lab.models.fusion import MODALITIES, run_fusion, world_item_features

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if not modalities or set(modalities) - set(MODALITIES):
        raise ValueError(f"--modalities {args.modalities!r}: use a comma-separated subset of "
                         f"{', '.join(MODALITIES)}")
    profile = get_profile(args.profile)
    start = time.perf_counter()
    world = make_world(args.world, profile, seed=args.seed, **_parse_overrides(args.set))
    kge = None
    if "kg" in modalities:
        from llmrec_lab.kg.build import world_kg
        from llmrec_lab.kg.embed import train_kge

        kge = train_kge(world_kg(world), args.kge, profile=profile, seed=args.seed)
    features = world_item_features(world, modalities=modalities, kg=kge)
    result = run_fusion(world, features, modalities, args.setting, seed=args.seed,
                        fusion=args.fusion, epochs=profile.mf_epochs)
    del result["test_ratings"], result["test_predictions"]  # per rating: for chapters
    result.update(world=args.world, profile=profile.name, fusion=args.fusion,
                  sources=features.sources, seconds=round(time.perf_counter() - start, 2))
    if not args.json:
        print(f"{result['modalities']} ({args.fusion}, {args.setting}): RMSE {result['rmse']:.4f} "
              f"(oracle {result['oracle_rmse']:.4f}), NDCG@10 {result['ndcg@10']:.4f} "
              f"(oracle {result['oracle_ndcg@10']:.4f})")
    return result


def cmd_kg(args: argparse.Namespace) -> dict:
    """Embed a world's knowledge graph, score link prediction, and compare KG fusion RMSE."""
    from llmrec_lab.data.world import make_world
    from llmrec_lab.kg.build import world_kg
    from llmrec_lab.kg.embed import train_kge
    from llmrec_lab.models.kg_rater import ablation, kg_features

    profile = get_profile(args.profile)
    start = time.perf_counter()
    world = make_world(args.world, profile, seed=args.seed, **_parse_overrides(args.set))
    kge = train_kge(world_kg(world), args.kge, profile=profile, seed=args.seed)
    blocks = {"kg": {"kg": kg_features(kge, world.items["item_id"].to_numpy())}}
    fusion = ablation(world, blocks, args.setting, seed=args.seed)
    result = {"world": args.world, "profile": profile.name, "kge": args.kge, "seed": args.seed,
              "link_prediction": kge.metrics, "setting": args.setting,
              "rmse": {"oracle": fusion["oracle"], "biases": fusion["biases"],
                       "kg": fusion["kg"]},
              "seconds": round(time.perf_counter() - start, 2)}
    if not args.json:
        m = kge.metrics
        print(f"{args.kge} link prediction: MRR {m['mrr']:.3f} (random {m['random']['mrr']:.3f}),"
              f" Hits@10 {m['hits@10']:.3f} (random {m['random']['hits@10']:.3f})")
        print(f"{args.setting} RMSE: biases {fusion['biases']:.4f}, with KG {fusion['kg']:.4f}, "
              f"oracle {fusion['oracle']:.4f}")
    return result


def cmd_lus(args: argparse.Namespace) -> dict:
    """Simulate a policy on a world past its logged history and report the LUS metrics."""
    from llmrec_lab.data.world import make_world
    from llmrec_lab.lus.experiment import make_policy, mf_scores
    from llmrec_lab.lus.metrics import report
    from llmrec_lab.lus.simulator import simulate

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


def _finetune_settings(args: argparse.Namespace):
    """The profile's fine-tuning budget, with any of --train, --eval, --epochs overriding it."""
    from llmrec_lab.finetune import FinetuneSettings

    overrides = {field: value for field, value in (("n_train", args.train), ("n_eval", args.eval),
                                                   ("epochs", args.epochs)) if value is not None}
    return FinetuneSettings.from_profile(args.profile, **overrides)


def _plm_items(args: argparse.Namespace, method: str) -> pd.DataFrame:
    """The MovieLens items (with their text) for ``--model plm-<method>``, the method checked."""
    from llmrec_lab.data import movielens
    from llmrec_lab.peft import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown model plm-{method}; the PLM raters are "
                         f"{', '.join('plm-' + m for m in METHODS)}")
    return movielens.load_movielens(args.dataset, args.data_dir).items


def _plm_fold(args: argparse.Namespace, method: str, train: pd.DataFrame, test: pd.DataFrame,
              items: pd.DataFrame) -> dict:
    """Fine-tune a PLM rater on a fold; its scores on a test sample of the budget's size."""
    from llmrec_lab.finetune import fold_scores

    result = fold_scores(method, train, test, items, _finetune_settings(args), args.encoder,
                         args.seed)
    return {"rmse": result["test_rmse"], "mae": result["test_mae"],
            "n_train": result["n_train"], "n_test": result["n_test"]}


def cmd_finetune(args: argparse.Namespace) -> dict:
    """Fine-tune a PLM rater on a world with one method; report cost and accuracy."""
    from llmrec_lab.data.world import make_world
    from llmrec_lab.finetune import make_examples, run_method, split_world
    from llmrec_lab.metrics import rmse

    settings = _finetune_settings(args)
    start = time.perf_counter()
    world = make_world(args.world, args.profile, seed=args.seed)
    examples = make_examples(*split_world(world, args.seed), world.items, settings, args.seed)
    result = run_method(args.method, examples, settings, args.encoder, args.seed)
    del result["valid_predictions"], result["test_predictions"]  # per pair: for chapters
    result.update(world=args.world, profile=get_profile(args.profile).name, seed=args.seed,
                  oracle_rmse=rmse(examples.test[1], world.oracle_predict(examples.test_rows)),
                  seconds=round(time.perf_counter() - start, 2))
    if not args.json:
        print(f"{args.method}: {result['trainable']:,} of {result['total']:,} parameters trained; "
              f"{result['seconds_per_epoch']:.1f} s/epoch; RMSE train {result['train_rmse']:.3f}, "
              f"valid {result['valid_rmse']:.3f}, test {result['test_rmse']:.3f} "
              f"(noise floor {result['oracle_rmse']:.3f})")
    return result


def _add_finetune_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=list(PROFILES), default=None,
                        help="sizes the fine-tuning budget (and a world)")
    parser.add_argument("--train", type=COUNT, default=None, help="training pairs (default: profile)")
    parser.add_argument("--eval", type=COUNT, default=None,
                        help="pairs in each evaluation sample (default: profile)")
    parser.add_argument("--epochs", type=COUNT, default=None, help="epochs (default: profile)")
    parser.add_argument("--encoder", default=None,
                        help="BERT-family model name or folder (default: the bundled MiniLM)")


def _add_world_run_args(parser: argparse.ArgumentParser, world: str,
                        experiment: bool = False) -> None:
    """--world, --profile and --seed; with ``experiment``, also --setting and --set."""
    parser.add_argument("--world", choices=["shop", "screen"], default=world)
    parser.add_argument("--profile", choices=list(PROFILES), default=None)
    parser.add_argument("--seed", type=SEED, default=0)
    if experiment:
        parser.add_argument("--setting", choices=["warm", "cold"], default="cold",
                            help="warm: random split of ratings; cold: held-out items")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a world parameter, e.g. --set image=0 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llmrec-lab", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    info = sub.add_parser("info", help="versions, device, profile, offline models")
    info.set_defaults(run=cmd_info)

    world = sub.add_parser("world", help="generate a synthetic world and write its files")
    world.add_argument("name", choices=["shop", "screen"])
    world.add_argument("--profile", choices=list(PROFILES), default=None)
    world.add_argument("--seed", type=SEED, default=0)
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
    ev.add_argument("--model", required=True,
                    help="global-mean, biases, mf, or a fine-tuned PLM rater plm-<method> "
                         "(method: full, lora, adalora, ia3, prefix, adapter)")
    ev.add_argument("--seed", type=SEED, default=0)
    _add_finetune_args(ev)
    ev.set_defaults(run=cmd_evaluate)

    ft = sub.add_parser("finetune", help="fine-tune a PLM rater on a world with one method")
    ft.add_argument("--world", choices=["shop", "screen"], default="shop")
    ft.add_argument("--method", choices=["full", "lora", "adalora", "ia3", "prefix", "adapter"],
                    default="lora")
    ft.add_argument("--seed", type=SEED, default=0)
    _add_finetune_args(ft)
    ft.set_defaults(run=cmd_finetune)

    lus = sub.add_parser("lus", help="simulate a policy and report long-term satisfaction")
    _add_world_run_args(lus, "shop")
    lus.add_argument("--policy", choices=["random", "greedy", "mmr", "calibrated", "lus",
                                          "learned", "oracle"], default="greedy")
    lus.add_argument("--days", type=COUNT, default=60)
    lus.set_defaults(run=cmd_lus)

    fu = sub.add_parser("fusion", help="cross-modal fusion of text, image and ID features")
    _add_world_run_args(fu, "shop", experiment=True)
    fu.add_argument("--modalities", default="text,image,id",
                    help="comma-separated subset of text, image, kg, id")
    fu.add_argument("--fusion", choices=["attention", "concat", "gating"], default="attention")
    fu.add_argument("--kge", choices=["transe", "rotate", "distmult"], default="transe",
                    help="KG embedding model for the kg modality")
    fu.set_defaults(run=cmd_fusion)

    kg = sub.add_parser("kg", help="knowledge-graph embeddings: link prediction and fusion RMSE")
    _add_world_run_args(kg, "screen", experiment=True)
    kg.add_argument("--kge", choices=["transe", "rotate", "distmult"], default="transe")
    kg.set_defaults(run=cmd_kg)

    for p in (info, world, ev, lus, ft, fu, kg):
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return parser


def _one_line(err: Exception) -> str:
    """An exception as one line: the message of the errors the library raises on bad input,
    the exception's type too for anything unexpected."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if not isinstance(err, (ValueError, OSError, KeyError)):
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "protocol", "unset") is None:
        args.protocol = "u1-u5" if args.dataset == "ml-100k" else "kfold5"
    try:
        result = args.run(args)
    except Exception as err:  # every failure becomes one line unless --debug asks for more
        if args.debug:
            raise
        print(f"llmrec-lab {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
