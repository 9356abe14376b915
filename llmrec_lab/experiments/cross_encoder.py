"""Chapter 3.1's cross-encoder runs: what does fine-tuning a language-model rater with each
method cost, and what does it achieve? Shared by its notebook, ``llmrec-lab finetune`` and
``llmrec-lab evaluate --model plm-<method>``.

:func:`make_examples` turns train/valid/test rating frames into text pairs (a sample of each, the
history of every pair drawn from the *training* ratings before it only), and :func:`run_method`
fine-tunes a fresh :class:`~llmrec_lab.models.plm_rater.PLMRater` with one method of
:mod:`llmrec_lab.models.tuning_methods` and returns a plain dict of what it cost and what it
achieved:

- ``trainable`` / ``total`` parameters (``trainable_encoder``: those outside the head), and
  ``state_bytes``: the bytes of the training state,
  counted exactly from the tensors by :func:`llmrec_lab.optimizer.state_bytes` (every parameter in
  fp32, plus a gradient and AdamW's two moment buffers for each trainable one). Activations are
  not in it: they depend on batch and sequence length, not on the method, because every method
  back-propagates through the whole encoder.
- ``seconds_per_epoch``: wall time of the optimisation steps only (evaluations excluded).
- ``curve``: one record per evaluation, with the RMSE on a fixed sample of training pairs and on
  the validation pairs, both in eval mode and clipped to the star scale, so the train-valid
  gap is measured the same way on both sides, and the mean training loss since the previous one (the objective: for AdaLoRA,
  MSE plus its orthogonality penalty).
- ``train_rmse``, ``valid_rmse``, ``test_rmse`` (and ``test_mae``) of the weights the trainer
  kept (best validation RMSE), predictions clipped to the star scale as the ID baselines' are.
- ``valid_predictions``, ``test_predictions``: those clipped predictions, one per pair, so that a
  chapter can pair two raters' errors on the same pairs (:func:`llmrec_lab.stats.rmse_difference`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd

from llmrec_lab.config import Profile, get_profile, seed_everything
from llmrec_lab.splits import random_split
from llmrec_lab.metrics import mae, rmse
from llmrec_lab.models.plm_rater import SCALE, Pair, PLMRater, build_examples
from llmrec_lab.models.tuning_methods import (LEARNING_RATES, METHODS, MethodConfig,
                                              apply_method, method_penalty, method_step_hook,
                                              trainable_parameters)
from llmrec_lab.optimizer import state_bytes
from llmrec_lab.text_batches import TextPairDataset
from llmrec_lab.train import TrainConfig, Trainer


@dataclass(frozen=True)
class FinetuneSettings:
    """The budget of one run: how many pairs, how long, how often to evaluate."""

    n_train: int = 256  # training pairs (a sample of the training ratings)
    n_eval: int = 128  # pairs in each of the train probe, validation and test samples
    epochs: int = 3
    max_history: int = 5  # past ratings written into each pair's first segment
    batch_size: int = 16
    evals_per_epoch: int = 2  # points on the learning curves per epoch
    max_length: int = 128  # tokens per pair (the history is cut from the left)
    lr: float | None = None  # None: LEARNING_RATES[method]
    head_lr: float | None = None  # the head's learning rate; None: the same as the encoder's

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> FinetuneSettings:
        p = profile if isinstance(profile, Profile) else get_profile(profile)
        sizes = dict(n_train=p.finetune_train, n_eval=p.finetune_eval, epochs=p.finetune_epochs,
                     max_history=p.max_history)
        return cls(**{**sizes, **overrides})


SPLITS = ("train", "probe", "valid", "test")
Features = Callable[[pd.DataFrame], np.ndarray]  # rating rows -> one row of numbers per rating


@dataclass
class Examples:
    """Text pairs and targets for training, a training probe, validation and test."""

    train: tuple[list[Pair], np.ndarray]
    probe: tuple[list[Pair], np.ndarray]  # a sample of the training pairs, for the curves
    valid: tuple[list[Pair], np.ndarray]
    test: tuple[list[Pair], np.ndarray]
    rows: dict[str, pd.DataFrame]  # the ratings behind each of the four, by name

    @property
    def test_rows(self) -> pd.DataFrame:
        """The test ratings behind ``test``, for baselines and the oracle."""
        return self.rows["test"]


def _sample(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if n < 1:
        raise ValueError(f"a sample needs at least one rating, got n={n}")
    return frame.iloc[np.sort(rng.choice(len(frame), min(n, len(frame)), replace=False))]


def make_examples(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame,
                  items: pd.DataFrame, settings: FinetuneSettings, seed: int = 0) -> Examples:
    """Sample ``n_train`` training and ``n_eval`` probe, validation and test ratings as pairs.

    Every pair's history comes from ``train`` only, strictly before the rating: the rater sees a
    subset of what an ID model fitted on ``train`` sees, never a held-out rating.
    """
    if min(len(train), len(valid), len(test)) == 0:
        raise ValueError(f"train, valid and test need ratings, got {len(train)}, {len(valid)}, "
                         f"{len(test)}")
    rng = np.random.default_rng(seed)
    rows = {"train": _sample(train, settings.n_train, rng)}
    rows["probe"] = _sample(rows["train"], settings.n_eval, rng)
    rows["test"] = _sample(test, settings.n_eval, rng)
    rows["valid"] = _sample(valid, settings.n_eval, rng)
    pairs = {name: build_examples(r, items, settings.max_history, context=train)
             for name, r in rows.items()}
    return Examples(**{name: pairs[name] for name in SPLITS}, rows=rows)


class _ProbeCurve:
    """The trainer's ``on_evaluate`` callback: at each evaluation, the RMSE on a training probe
    (``train_rmse`` in the record); and the probe and validation predictions of the evaluation
    whose weights the trainer keeps (the best validation RMSE), so they need not be predicted
    again once training ends."""

    def __init__(self, probe: TextPairDataset) -> None:
        self.probe, self.kept = probe, {}

    def __call__(self, trainer: Trainer, record: dict, valid_pred: np.ndarray | None) -> None:
        probe = trainer.predict(self.probe)
        record["train_rmse"] = rmse(self.probe.labels.cpu().numpy(), probe,
                                    clip=trainer.config.clip)  # as valid_rmse is
        if trainer.improved:
            self.kept = {"probe": probe, "valid": valid_pred}


def _dataset(tokenizer, data: tuple[list[Pair], np.ndarray], max_length: int,
             features: np.ndarray | None) -> TextPairDataset:
    pairs, targets = data
    return TextPairDataset.from_texts(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs],
                                      targets, max_length, features)


def _features(features: Features, rows: pd.DataFrame, split: str) -> np.ndarray:
    """``features(rows)`` checked: a finite 2-D array with one row per rating."""
    x = np.asarray(features(rows), dtype=np.float32)
    if x.ndim != 2 or len(x) != len(rows):
        raise ValueError(f"features for the {split} pairs: expected one row per rating "
                         f"({len(rows)}, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"features for the {split} pairs hold NaN or inf")
    return x


def _scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"rmse": rmse(truth, pred, clip=(1, SCALE)), "mae": mae(truth, pred, clip=(1, SCALE))}


def run_method(method: str, examples: Examples, settings: FinetuneSettings | None = None,
               model_name: str | None = None, seed: int = 0,
               method_config: MethodConfig | None = None,
               features: Features | None = None) -> dict:
    """Fine-tune a fresh rater with ``method`` on ``examples``; return the metrics dict.

    ``model_name`` is any BERT-layout encoder (default: the bundled MiniLM). ``features`` maps
    rating rows to one row of numbers each, which the rater's head reads beside the pooled
    text (``Concat(h, features)``); Chapter 3.3 passes the items' KG vectors this way.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    settings = settings or FinetuneSettings()
    seed_everything(seed)
    y_train = examples.train[1]
    side = {name: None if features is None else _features(features, examples.rows[name], name)
            for name in SPLITS}
    model = PLMRater(model_name, rating_mean=float(np.mean(y_train)),
                     n_features=0 if features is None else side["train"].shape[1])
    steps_per_epoch = math.ceil(len(y_train) / settings.batch_size)
    method_config = replace(method_config or MethodConfig(),
                            total_step=steps_per_epoch * settings.epochs)
    apply_method(model, method, method_config)
    trainable, total = trainable_parameters(model)
    in_encoder = sum(p.numel() for name, p in model.named_parameters()
                     if p.requires_grad and name.startswith("encoder."))
    data = {name: _dataset(model.tokenizer, getattr(examples, name), settings.max_length,
                           side[name]) for name in SPLITS}
    lr = settings.lr or LEARNING_RATES[method]
    # Not compiled, so no bucket lengths: each batch is padded to its own longest text only.
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=lr,
                         head_lr=settings.head_lr,
                         eval_every=max(1, steps_per_epoch // settings.evals_per_epoch),
                         eval_batch_size=64, bucket_lengths=None, clip=(1, SCALE), seed=seed)
    curve = _ProbeCurve(data["probe"])
    trainer = Trainer(model, config, data["train"], data["valid"], method_step_hook,
                      method_penalty, on_evaluate=curve)
    start = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - start - trainer.eval_seconds
    predictions = {**curve.kept, "test": trainer.predict(data["test"])}
    scores = {name: _scores(data[name].labels.numpy(), predictions[name])
              for name in SPLITS[1:]}
    return {"method": method, "lr": lr, "trainable": trainable, "trainable_encoder": in_encoder,
            "total": total,
            "trainable_share": trainable / total, "n_features": model.n_features,
            "state_bytes": state_bytes(model),
            "seconds_per_epoch": train_seconds / settings.epochs,
            "train_rmse": scores["probe"]["rmse"], "valid_rmse": scores["valid"]["rmse"],
            "test_rmse": scores["test"]["rmse"], "test_mae": scores["test"]["mae"],
            "valid_predictions": np.clip(predictions["valid"], 1, SCALE),
            "test_predictions": np.clip(predictions["test"], 1, SCALE),
            "n_train": len(y_train), "n_test": len(data["test"]), "steps": trainer.step,
            "curve": [{k: r[k] for k in ("step", "epoch", "train_loss", "train_rmse",
                                         "valid_rmse")} for r in trainer.history],
            "settings": asdict(settings)}


def fold_scores(method: str, train: pd.DataFrame, test: pd.DataFrame, items: pd.DataFrame,
                settings: FinetuneSettings | None = None, model_name: str | None = None,
                seed: int = 0) -> dict:
    """:func:`run_method` on one train/test fold: 10% of the training fold, drawn at random,
    validates (early stopping); the metrics are those of a test sample of ``n_eval`` ratings."""
    settings = settings or FinetuneSettings()
    fit, valid = random_split(train, test_frac=0.1, seed=seed)
    return run_method(method, make_examples(fit, valid, test, items, settings, seed), settings,
                      model_name, seed)
