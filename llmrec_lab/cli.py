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
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from llmrec_lab.config import (PROFILES, ParameterError, Range, get_profile, parse_setting,
                               pick_device)
from llmrec_lab.datasets.movielens import (COLD_FRAC, COLD_SEEDS, DATASET_PROTOCOLS, PROTOCOLS,
                                           check_protocol, load_movielens, protocol_folds)

if TYPE_CHECKING:  # imported where used, so that parsing the arguments stays fast
    from llmrec_lab.models.tower import TextTowerRater

PACKAGES = ("llmrec-lab", "torch", "torchvision", "transformers", "peft", "pykeen", "numpy",
            "pandas")
# llmrec_lab.models.tuning_methods.METHODS, spelled out so parsing the arguments does not import
# torch (a test checks they agree); the text tower has one more, "frozen"
TUNED = ("full", "lora", "adalora", "ia3", "prefix", "adapter")
TOWERS = ("frozen",) + TUNED
TEXT_PRIOR_BPMF = "bpmf-text"  # evaluate's Bayesian MF with the items' text vectors as prior


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
    from llmrec_lab.world.generate import WHAT, WorldConfig

    out: dict[str, int | float] = {}
    for pair in pairs:
        key, value = parse_setting(WorldConfig, pair, WHAT)
        if key in ("name", "seed"):
            raise ParameterError(f"--set {pair!r}: the world's {key} has its own argument")
        out[key] = value
    return out


def cmd_world(args: argparse.Namespace) -> dict:
    """Generate a world and write its files."""
    from llmrec_lab.metrics import rmse
    from llmrec_lab.world import make_world

    overrides = _parse_overrides(args.set)
    start = time.perf_counter()
    world = make_world(args.name, args.profile, seed=args.seed, **overrides)
    out = world.save(args.out)
    ratings = world.ratings["rating"].to_numpy()
    summary = {"world": args.name, "profile": get_profile(args.profile).name, "seed": args.seed,
               "out": str(out), "users": world.config.n_users, "items": world.config.n_items,
               "days": world.config.n_days, "ratings": len(world.ratings),
               "triples": len(world.triples),
               "oracle_rmse": (rmse(ratings, world.oracle_predict(world.ratings))
                               if len(ratings) else None),
               "seconds": round(time.perf_counter() - start, 2)}
    if not args.json:
        print(f"wrote {summary['ratings']} ratings, {summary['triples']} triples to {out}")
    return summary


def _evaluated_model(name: str) -> tuple[str, str]:
    """``(kind, method)`` of an ``evaluate --model`` name: ``("plm", method)``, ``("tower",
    method)`` or ``("id", name)``; checked before any data is loaded."""
    from llmrec_lab.models.baselines import MODELS

    for kind, methods in (("plm", TUNED), ("tower", TOWERS)):
        if name.startswith(kind + "-"):
            method = name.removeprefix(kind + "-")
            if method not in methods:
                raise ValueError(f"unknown model {name}; the {kind} models are "
                                 f"{', '.join(f'{kind}-{m}' for m in methods)}")
            return kind, method
    if name == TEXT_PRIOR_BPMF:
        return "text-prior", "bpmf"
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, "
                         f"{TEXT_PRIOR_BPMF}, plm-<method> or tower-<method>")
    return "id", name


def _fold_scores(args: argparse.Namespace, kind: str, method: str, train: pd.DataFrame,
                 test: pd.DataFrame, items: pd.DataFrame) -> dict:
    """Fit the model on one training fold; its RMSE and MAE on the test fold."""
    from llmrec_lab.metrics import mae, rmse
    from llmrec_lab.models.baselines import make_model

    if kind == "plm":
        return _plm_fold(args, method, train, test, items)
    if kind == "tower":
        model = _fit_tower(items, train, method, args)
    elif kind == "text-prior":
        from llmrec_lab.experiments.text_tower import fit_text_prior_bpmf

        model = fit_text_prior_bpmf(items, train, args.seed, args.encoder)
    else:
        model = make_model(method, seed=args.seed).fit(train)
    pred = model.predict(test["user_id"].to_numpy(), test["item_id"].to_numpy())
    truth = test["rating"].to_numpy()
    return {"rmse": rmse(truth, pred), "mae": mae(truth, pred), "n_train": len(train),
            "n_test": len(test)}


def cmd_evaluate(args: argparse.Namespace) -> dict:
    """Fit a model on each training fold and report RMSE and MAE on the matching test fold."""
    check_protocol(args.dataset, args.protocol)
    kind, method = _evaluated_model(args.model)
    if kind == "tower":
        _refuse_sample_sizes(args, "--model tower-<method>")
    data = load_movielens(args.dataset, args.data_dir)
    folds = []
    for k, (train, test) in enumerate(protocol_folds(data, args.protocol, args.seed), start=1):
        folds.append({"fold": k, **_fold_scores(args, kind, method, train, test, data.items)})
        if not args.json:
            print(f"fold {k}: RMSE {folds[-1]['rmse']:.4f}  MAE {folds[-1]['mae']:.4f}")
    mean = {m: float(np.mean([f[m] for f in folds])) for m in ("rmse", "mae")}
    if not args.json:
        print(f"mean:   RMSE {mean['rmse']:.4f}  MAE {mean['mae']:.4f}")
    return {"dataset": args.dataset, "protocol": args.protocol, "model": args.model,
            "seed": args.seed, "folds": folds, "mean": mean}


def cmd_fusion(args: argparse.Namespace) -> dict:
    """Fit a cross-modal fusion model on chosen modalities and report warm or cold metrics."""
    from llmrec_lab.world import make_world
    from llmrec_lab.experiments.fusion import run_fusion
    from llmrec_lab.models.fusion import MODALITIES, world_item_features

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
    from llmrec_lab.world import make_world
    from llmrec_lab.kg.build import world_kg
    from llmrec_lab.kg.embed import train_kge
    from llmrec_lab.experiments.knowledge_graphs import ablation
    from llmrec_lab.models.kg_rater import kg_features

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
    from llmrec_lab.world import make_world
    from llmrec_lab.experiments.long_term import make_policy, mf_scores
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
    from llmrec_lab.experiments.cross_encoder import FinetuneSettings

    overrides = {field: value for field, value in (("n_train", args.train), ("n_eval", args.eval),
                                                   ("epochs", args.epochs)) if value is not None}
    return FinetuneSettings.from_profile(args.profile, **overrides)


def _plm_fold(args: argparse.Namespace, method: str, train: pd.DataFrame, test: pd.DataFrame,
              items: pd.DataFrame) -> dict:
    """Fine-tune a PLM rater on a fold; its scores on a test sample of the budget's size."""
    from llmrec_lab.experiments.cross_encoder import fold_scores

    result = fold_scores(method, train, test, items, _finetune_settings(args), args.encoder,
                         args.seed)
    return {"rmse": result["test_rmse"], "mae": result["test_mae"],
            "n_train": result["n_train"], "n_test": result["n_test"]}


def _refuse_sample_sizes(args: argparse.Namespace, what: str) -> None:
    """--train and --eval size the cross-encoder's samples; a tower learns from every rating
    and is tested on all test ratings, so either option there is an error, not a silent no-op."""
    for option, value in (("--train", args.train), ("--eval", args.eval)):
        if value is not None:
            raise ValueError(f"{option} sizes the cross-encoder's samples; {what} learns from "
                             f"every training rating and is tested on every test rating")


def _fit_tower(items: pd.DataFrame, train: pd.DataFrame, method: str,
               args: argparse.Namespace) -> TextTowerRater:
    """A text tower fitted on ``train`` by ``method``
    (:func:`~llmrec_lab.experiments.text_tower.fit_tower`): tuning methods run the profile's
    ``finetune_epochs``, as the cross-encoder does. ``--epochs`` overrides the epochs of
    ``method``'s own stage."""
    from llmrec_lab.experiments.text_tower import fit_tower

    epochs = args.epochs or get_profile(args.profile).finetune_epochs
    return fit_tower(items, train, method, epochs, args.seed, args.encoder,
                     frozen_epochs=args.epochs if method == "frozen" else None)


def _minus(truth: np.ndarray, model: np.ndarray, other: np.ndarray, name: str) -> dict:
    """The paired 95% interval of a model's test RMSE minus another model's, as JSON; the
    verdict names the model ``name`` ("tower better")."""
    from llmrec_lab.stats import rmse_difference

    iv = rmse_difference(truth, model, other)
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high,
            "verdict": iv.verdict.replace("A", name, 1)}


def _finetune_tower(args: argparse.Namespace) -> dict:
    """Fit a text tower on a world's warm or cold split (early-stopped on the split's
    validation ratings); compare it with MF and the biases on the same test ratings."""
    from llmrec_lab.world import make_world
    from llmrec_lab.encoders.text import DEFAULT_TEXT_MODEL
    from llmrec_lab.experiments.text_tower import compare_towers
    from llmrec_lab.metrics import rmse

    _refuse_sample_sizes(args, "--architecture tower")
    overrides, setting = _parse_overrides(args.set), args.setting or "cold"
    start = time.perf_counter()
    world = make_world(args.world, args.profile, seed=args.seed, **overrides)
    own_stage = args.epochs if args.method == "frozen" else None  # as _fit_tower reads it
    run = compare_towers(world, setting, args.seed, methods=(args.method,),
                         epochs=args.epochs or get_profile(args.profile).finetune_epochs,
                         encoder=args.encoder, frozen_epochs=own_stage)
    name, truth = f"tower-{args.method}", run.ratings
    cost = run.cost.loc[name]
    result = {"architecture": "tower", "method": args.method, "world": args.world,
              "profile": get_profile(args.profile).name, "seed": args.seed, "setting": setting,
              "set": overrides, "encoder": args.encoder or DEFAULT_TEXT_MODEL,
              "n_train": run.n_train, "n_test": len(truth),
              "test_rmse": rmse(truth, run.predictions[name]),
              **{f"{m}_rmse": rmse(truth, run.predictions[m]) for m in ("mf", "biases")},
              "oracle_rmse": rmse(truth, run.oracle),
              "static_floor_rmse": rmse(truth, run.static),
              **{f"minus_{m}": _minus(truth, run.predictions[name], run.predictions[m], "tower")
                 for m in ("mf", "biases")},
              "ndcg@10": float(run.ndcg[name].mean()), "mf_ndcg@10": float(run.ndcg["mf"].mean()),
              "trainable": int(cost["trainable"]),
              "trainable_encoder": int(cost["trainable in encoder"]),
              "epochs_run": int(cost["epochs"]), "seconds": round(time.perf_counter() - start, 2)}
    if not args.json:
        print(f"tower-{args.method} ({setting}): RMSE {result['test_rmse']:.4f}, MF "
              f"{result['mf_rmse']:.4f}, biases {result['biases_rmse']:.4f}, static floor "
              f"{result['static_floor_rmse']:.4f}, noise floor {result['oracle_rmse']:.4f}; "
              f"minus MF {result['minus_mf']['estimate']:+.4f} "
              f"[{result['minus_mf']['low']:+.4f}, {result['minus_mf']['high']:+.4f}]")
    return result


def cmd_finetune(args: argparse.Namespace) -> dict:
    """Fine-tune a PLM rater on a world with one method; report cost and accuracy. Only the
    tower has a frozen method."""
    if args.architecture == "tower":
        return _finetune_tower(args)
    if args.method == "frozen":
        raise ValueError("--method frozen applies to --architecture tower only")
    return _finetune_cross(args)


def _finetune_cross(args: argparse.Namespace) -> dict:
    """The cross-encoder rater, fine-tuned on a sample of (history, item) pairs of a world's
    split (default warm); MF and the biases, fitted on every training rating of that split,
    are scored on the rater's test pairs, so the differences are paired."""
    from llmrec_lab.world import make_world
    from llmrec_lab.experiments.cross_encoder import make_examples, run_method
    from llmrec_lab.metrics import rmse
    from llmrec_lab.models.baselines import make_model
    from llmrec_lab.splits import split_for

    settings, setting = _finetune_settings(args), args.setting or "warm"
    start = time.perf_counter()
    world = make_world(args.world, args.profile, seed=args.seed, **_parse_overrides(args.set))
    train, valid, test = split_for(world.ratings, setting, args.seed)
    examples = make_examples(train, valid, test, world.items, settings, args.seed)
    result = run_method(args.method, examples, settings, args.encoder, args.seed)
    rows, truth, rater = examples.test_rows, examples.test[1], result.pop("test_predictions")
    del result["valid_predictions"]  # per pair: for chapters
    ids = {m: make_model(m, seed=args.seed).fit(train).predict(rows["user_id"].to_numpy(),
                                                                 rows["item_id"].to_numpy())
           for m in ("mf", "biases")}
    result.update(architecture="cross", world=args.world, profile=get_profile(args.profile).name,
                  seed=args.seed, setting=setting,
                  **{f"{m}_rmse": rmse(truth, p) for m, p in ids.items()},
                  **{f"minus_{m}": _minus(truth, rater, p, "rater") for m, p in ids.items()},
                  oracle_rmse=rmse(truth, world.oracle_predict(rows)),
                  static_floor_rmse=rmse(truth, world.static_predict(rows)),
                  seconds=round(time.perf_counter() - start, 2))
    if not args.json:
        print(f"{args.method} ({setting}): {result['trainable']:,} of {result['total']:,} "
              f"parameters trained; {result['seconds_per_epoch']:.1f} s/epoch; RMSE train "
              f"{result['train_rmse']:.3f}, valid {result['valid_rmse']:.3f}, test "
              f"{result['test_rmse']:.3f}, MF {result['mf_rmse']:.3f} on the same "
              f"{len(truth)} pairs (static floor {result['static_floor_rmse']:.3f}, noise floor "
              f"{result['oracle_rmse']:.3f})")
    return result


def _add_finetune_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=list(PROFILES), default=None,
                        help="sizes the fine-tuning budget (and a world)")
    parser.add_argument("--train", type=COUNT, default=None,
                        help="cross-encoder only: training pairs (default: profile)")
    parser.add_argument("--eval", type=COUNT, default=None,
                        help="cross-encoder only: pairs in each evaluation sample (default: "
                             "profile)")
    parser.add_argument("--epochs", type=COUNT, default=None,
                        help="epochs (default: profile). A text tower first runs a frozen "
                             "stage of TowerConfig's epochs (early-stopped); a tuned tower starts "
                             "from it and runs the profile's finetune_epochs; --epochs sets the "
                             "method's own stage")
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
    ev.add_argument("--dataset", choices=list(DATASET_PROTOCOLS), required=True)
    ev.add_argument("--data-dir", default=None,
                    help="directory holding the extracted dataset (default: $LLMREC_DATA_DIR, "
                         "else download into the cache)")
    ev.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                    help="u1-u5: ml-100k's official folds; kfold5: seeded 5-fold (default for "
                         f"ml-1m); cold-items: {COLD_SEEDS} draws (seeds --seed, --seed + 1, "
                         f"...), each holding out a seeded {COLD_FRAC * 100:.0f}%% of the "
                         "items with all their ratings")
    ev.add_argument("--model", required=True,
                    help="global-mean, biases, mf, bpmf (Bayesian MF by Gibbs sampling), "
                         f"{TEXT_PRIOR_BPMF} (bpmf with the frozen text vectors as the items' "
                         "prior), a fine-tuned cross-encoder rater plm-<method> "
                         f"(method: {', '.join(TUNED)}), or a text tower tower-<method> "
                         f"(method: {', '.join(TOWERS)})")
    ev.add_argument("--seed", type=SEED, default=0)
    _add_finetune_args(ev)
    ev.set_defaults(run=cmd_evaluate)

    ft = sub.add_parser("finetune", help="fine-tune a PLM rater on a world with one method")
    ft.add_argument("--world", choices=["shop", "screen"], default="shop")
    ft.add_argument("--architecture", choices=["cross", "tower"], default="cross",
                    help="cross: the cross-encoder rater on a sample of (history, item) pairs; "
                         "tower: the text tower, which learns from every rating and is compared "
                         "with MF and the biases on the same test ratings")
    ft.add_argument("--method", choices=list(TOWERS), default="lora",
                    help="how the encoder is tuned; frozen: the tower only")
    ft.add_argument("--setting", choices=["warm", "cold"], default=None,
                    help="warm: a random 70/10/20 split of the ratings (the cross-encoder's "
                         "default); cold (the tower's default): 20%% of the items held out for "
                         "test with all their ratings, 10%% more for validation")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a world parameter, e.g. --set n_users=500 (repeatable)")
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
        args.protocol = DATASET_PROTOCOLS[args.dataset][0]
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
