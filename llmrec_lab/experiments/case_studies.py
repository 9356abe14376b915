"""Chapter 4.3's case studies: does the whole pipeline beat its best part, and by how much?

A case is a catalogue whose items carry several kinds of content: the shop world (the source's
e-commerce case: categories and brands), the screen world (its video case: directors and
actors) and MovieLens (titles, years, genres; no pictures). The pipeline reads each item's
text with the language model, its picture with the image encoder, its facts through a TransE
embedding of the knowledge graph, fuses them with the item ID by attention (Chapter 3.2's
:class:`~llmrec_lab.models.fusion.FusionRater`), and ranks with the LUS-aware policy (Chapter
3.4). Its parts, each alone: the ID model (MF) and the fusion model on one kind of content.

- :func:`compare_parts` fits the whole and every part on one split and returns their
  predictions of the same test ratings and their NDCG@10 for the same users;
- :func:`long_run` simulates the world under the ID model's and the whole pipeline's scores,
  each with the greedy and with the LUS-aware policy, and returns each user's cumulative
  satisfaction, so that two systems pair up user by user;
- :func:`whole_minus_parts` and :func:`satisfaction_table` pool the seeds into verdicts.

The text vectors come from the frozen encoder; :func:`tuned_text` swaps in those of Chapter
3.1's text tower tuned on the training ratings, the source's fine-tuned language model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmrec_lab.splits import random_split
from llmrec_lab.world import World
from llmrec_lab.evaluation import NOISE_FLOOR, STATIC_FLOOR, ndcg_per_user
from llmrec_lab.experiments.long_term import make_policy, mf_scores
from llmrec_lab.experiments.text_tower import fit_tower
from llmrec_lab.kg.build import movielens_kg, world_kg
from llmrec_lab.kg.embed import train_kge
from llmrec_lab.lus.metrics import gap_closed
from llmrec_lab.lus.simulator import simulate
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import make_model, score_all
from llmrec_lab.models.fusion import FusionRater, ItemFeatures, world_item_features
from llmrec_lab.models.kg_rater import kg_features
from llmrec_lab.stats import paired_interval, runs_ndcg_difference, runs_rmse_difference

ID_ONLY = "ID only (MF)"
WHOLE = "whole"
PART_NAMES = {"text": "text", "image": "image", "kg": "KG"}
SYSTEMS = ((ID_ONLY, "greedy"), (ID_ONLY, "lus"), (WHOLE, "greedy"), (WHOLE, "lus"))
BASELINE = f"{ID_ONLY} + greedy"  # the system every other one is measured against


def movielens_features(movies, seed: int = 0, text_encoder=None, profile=None) -> ItemFeatures:
    """A MovieLens catalogue's text (title, year, genres) and KG features: TransE, embedded
    with ``seed``, of :func:`~llmrec_lab.kg.build.movielens_kg` over the films and the users'
    demographics (which reach no film: users have no edge to films in that graph)."""
    from llmrec_lab.encoders.text import TextEncoder

    text_encoder = text_encoder or TextEncoder()
    ids = movies.items["item_id"].to_numpy()
    kge = train_kge(movielens_kg(movies.items, movies.users), "transe", seed=seed,
                    profile=profile)
    return ItemFeatures(ids, {"text": text_encoder.encode(movies.items["text"].tolist()),
                              "kg": kg_features(kge, ids, prefix="movie:")},
                        {"text": text_encoder.name, "kg": f"transe on {len(kge.triples)} triples"})


def world_features(world: World, seed: int = 0, text_encoder=None, image_encoder=None,
                   profile=None) -> ItemFeatures:
    """A world's text, image and KG features (the graph embedded with ``seed``)."""
    kge = train_kge(world_kg(world), "transe", seed=seed, profile=profile)
    return world_item_features(world, text_encoder, image_encoder,
                               modalities=("text", "image", "kg"), kg=kge)


def tuned_text(features: ItemFeatures, items: pd.DataFrame, train: pd.DataFrame, method: str,
               epochs: int, seed: int = 0, encoder: str | None = None) -> ItemFeatures:
    """``features`` with the text vectors of Chapter 3.1's tower, tuned with ``method`` on
    ``train`` (the frozen tower for ``"frozen"``): the pipeline's fine-tuned text."""
    tower = fit_tower(items, train, method, epochs, seed, encoder)
    text = tower.text_vectors(features.item_ids)
    return ItemFeatures(features.item_ids, {**features.content, "text": text},
                        {**features.sources, "text": f"{tower.config.method} tower"})


@dataclass(frozen=True)
class PartsComparison:
    """One seed's whole-vs-parts comparison, every array aligned on the same test ratings."""

    case: str
    setting: str
    seed: int
    ratings: np.ndarray
    predictions: dict[str, np.ndarray]  # model -> clipped predictions of the test ratings
    ndcg: pd.DataFrame  # NDCG@10 per user (rows) and model (columns, and the static floor)
    oracle: np.ndarray | None  # a world's noise floor; None for real data
    static: np.ndarray | None  # a world's static floor; None for real data

    def table(self) -> pd.DataFrame:
        """Test RMSE and mean NDCG@10 per model (and the static and noise floors', for a
        world)."""
        rmses = {name: rmse(self.ratings, p) for name, p in self.predictions.items()}
        if self.oracle is not None:
            rmses[STATIC_FLOOR] = rmse(self.ratings, self.static)
            rmses[NOISE_FLOOR] = rmse(self.ratings, self.oracle)
        return pd.DataFrame({"test RMSE": pd.Series(rmses), "NDCG@10": self.ndcg.mean()},
                            index=list(rmses))  # the models' order, the floors last

    @property
    def parts(self) -> list[str]:
        return [name for name in self.predictions if name != WHOLE]


def compare_parts(features: ItemFeatures, train: pd.DataFrame, valid: pd.DataFrame,
                  test: pd.DataFrame, case: str, setting: str, seed: int = 0, epochs: int = 40,
                  world: World | None = None) -> PartsComparison:
    """The ID model, the fusion model on each content modality of ``features`` alone and on
    all of them with the ID (the whole), fitted on ``train`` (early-stopped on ``valid``) and
    judged on ``test``. With ``world``, the static and noise floors are judged too."""
    models = {ID_ONLY: make_model("mf", seed=seed).fit(train)}
    for modality in features.content:
        models[PART_NAMES[modality]] = FusionRater(features, (modality,), seed=seed,
                                                   epochs=epochs).fit(train, valid)
    models[WHOLE] = FusionRater(features, seed=seed, epochs=epochs).fit(train, valid)
    users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    return PartsComparison(
        case, setting, seed, test["rating"].to_numpy(),
        {name: m.predict(users, items) for name, m in models.items()},
        ndcg_per_user(models, train, test, features.item_ids, setting == "cold", seed,
                      truth=None if world is None else world.truth),
        None if world is None else world.oracle_predict(test),
        None if world is None else world.static_predict(test))


@dataclass(frozen=True)
class LongRun:
    """One seed's simulation of every system of :data:`SYSTEMS` (and the oracle) on one world.

    ``satisfaction``: each user's cumulative satisfaction (rows: users; columns: systems, named
    ``"<scores> + <policy>"``). ``agreement``: per user, the correlation between each score
    matrix's row and the user's true static utility of every item, which says how well each
    set of scores would rank the whole catalogue before any policy re-ranks it.
    """

    satisfaction: pd.DataFrame
    agreement: pd.DataFrame


def long_run(world: World, features: ItemFeatures, days: int, seed: int = 0,
             epochs: int = 40) -> LongRun:
    """Simulate ``days`` days of ``world`` under each of :data:`SYSTEMS` and the oracle.

    The ID scores are Chapter 3.4's (:func:`~llmrec_lab.experiments.long_term.mf_scores`); the
    whole pipeline's come from the fusion model fitted on the world's whole log (10% held out to
    stop it early). Every system faces the same users and the same dice (``seed``), so two columns
    pair up row by row.
    """
    train, valid = random_split(world.ratings, test_frac=0.1, seed=seed)
    whole = FusionRater(features, seed=seed, epochs=epochs).fit(train, valid)
    users, items = np.arange(world.config.n_users), np.arange(world.config.n_items)
    scores = {ID_ONLY: mf_scores(world, epochs, seed), WHOLE: score_all(whole, users, items)}
    runs = {f"{s} + {p}": (scores[s], p) for s, p in SYSTEMS}
    runs["oracle"] = (scores[WHOLE], "oracle")  # the oracle ignores the scores
    per_user = {}
    for name, (s, policy) in runs.items():
        log = simulate(world, make_policy(policy, world, s, seed), days, seed).log
        per_user[name] = log.groupby("user_id")["utility"].sum().reindex(users, fill_value=0.0)
    truth = world.truth.static_utility(users[:, None], items[None, :])
    return LongRun(pd.DataFrame(per_user).rename_axis("user_id"),
                   pd.DataFrame({name: _row_correlation(s, truth) for name, s in scores.items()},
                                index=pd.Index(users, name="user_id")))


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def satisfaction_table(runs: Sequence[LongRun], level: float = 0.95) -> pd.DataFrame:
    """Per system, seeds pooled: mean cumulative satisfaction per user, the share of the gap
    from :data:`BASELINE` to the oracle it closes, and the paired interval of its satisfaction
    minus the baseline's over the same users (positive: users are more satisfied)."""
    mean = pd.concat([r.satisfaction.mean() for r in runs], axis=1).mean(axis=1)
    return pd.DataFrame({
        "satisfaction per user": mean,
        "gap closed": [gap_closed(v, mean[BASELINE], mean["oracle"]) for v in mean],
        f"minus {BASELINE}": [paired_interval([r.satisfaction[name].to_numpy() for r in runs],
                                              [r.satisfaction[BASELINE].to_numpy() for r in runs],
                                              level) for name in mean.index]})


def whole_minus_parts(runs: Sequence[PartsComparison], level: float = 0.95) -> pd.DataFrame:
    """Per part, seeds pooled: the paired intervals of the whole's test RMSE and NDCG@10 loss
    (1 - NDCG) minus the part's. Negative: the whole is better, and so says the verdict."""
    return pd.DataFrame({part: {
        "RMSE": runs_rmse_difference(runs, WHOLE, part, level=level),
        "NDCG@10 loss": runs_ndcg_difference(runs, WHOLE, part, level)}
        for part in runs[0].parts}).T


def pooled(runs: Sequence[PartsComparison]) -> pd.DataFrame:
    """Mean test RMSE and NDCG@10 per model over the seeds of ``runs``."""
    return pd.concat([r.table() for r in runs]).groupby(level=0, sort=False).mean()


def best_part(runs: Sequence[PartsComparison]) -> str:
    """The part with the lowest test RMSE, seeds pooled: the whole's strongest rival."""
    table = pooled(runs)
    return str(table.loc[runs[0].parts, "test RMSE"].idxmin())
