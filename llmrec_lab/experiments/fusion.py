"""Chapter 3.2's experiment: which of an item's modalities (text, image, knowledge graph, ID)
carry what, and does fusing them beat the best single one, on items with ratings (warm) and
on items nobody has rated yet (cold)?

:func:`run_fusion` is one cell of the chapter's grid: one set of modalities on one split of one
world. It splits the ratings by the course's protocol
(:func:`~llmrec_lab.splits.split_for`), fits a
:class:`~llmrec_lab.models.fusion.FusionRater` on the modalities, early-stopped on the split's
validation ratings, and returns its metrics (:func:`~llmrec_lab.evaluation.evaluate`) with its
predictions of the test ratings. Those rows are the same for every set of modalities given the
seed, so two sets pair up rating by rating and a verdict is the sign of a paired interval
(:mod:`llmrec_lab.stats`). The chapter's notebook and ``llmrec-lab fusion`` both call it.
"""
from __future__ import annotations

from collections.abc import Sequence

from llmrec_lab.splits import split_for
from llmrec_lab.world import World
from llmrec_lab.evaluation import evaluate
from llmrec_lab.models.fusion import FusionRater, ItemFeatures


def run_fusion(world: World, features: ItemFeatures, modalities: Sequence[str],
               setting: str = "warm", seed: int = 0, **kw) -> dict:
    """Split, fit a :class:`~llmrec_lab.models.fusion.FusionRater` on the given modalities and
    evaluate it.

    Beside the metrics, ``test_ratings`` and ``test_predictions`` (arrays over the split's test
    rows, the same rows for every model of a seed) let a chapter pair two models' errors
    (:func:`llmrec_lab.stats.rmse_difference`).
    """
    train, valid, test = split_for(world.ratings, setting, seed)
    model = FusionRater(features, modalities, seed=seed, **kw).fit(train, valid)
    return {"modalities": "+".join(modalities), "setting": setting, "seed": seed,
            **evaluate(model, world, train, test, cold=setting == "cold"),
            "epochs": len(model.history_), "test_ratings": test["rating"].to_numpy(),
            "test_predictions": model.predict(test["user_id"].to_numpy(),
                                              test["item_id"].to_numpy())}
