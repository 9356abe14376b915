"""Chapter 3.3's experiment: where does a knowledge graph help a rating model? On items nobody
has rated yet (cold), on users with few ratings, and not on a control world whose graph carries
no signal?

:func:`ablation_predictions` fits the bias model and one
:class:`~llmrec_lab.models.kg_rater.KGRater` per variant (a name and its feature blocks: the
full graph's vectors, the graph without a relation, a placebo) on one split of one world, and
returns every model's prediction of the same test ratings beside the oracle's, so that two
models pair up rating by rating and a verdict is the sign of a paired interval
(:mod:`llmrec_lab.stats`). :func:`ablation` summarises the table as test RMSEs; the chapter's
notebook and ``llmrec-lab kg`` call these.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_lab.splits import cold_start_items, random_split
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import Biases
from llmrec_lab.models.kg_rater import KGRater


def ablation_predictions(world, variants: dict[str, dict[str, np.ndarray]],
                         split: str = "cold", seed: int = 0, few: float = 0.25) -> pd.DataFrame:
    """The test ratings of one split with each model's prediction: a column for the bias
    model, one per variant (name -> blocks), and the oracle's.

    ``split`` is ``"cold"`` (20% of the items never seen in training) or ``"warm"`` (20% of the
    ratings at random). The column ``few`` marks the test ratings of users in the lowest
    ``few`` quantile of training ratings. Every model is scored on the same rows, so a chapter
    can pair their errors (:func:`llmrec_lab.stats.rmse_difference`).
    """
    if split not in ("cold", "warm"):
        raise ValueError(f"split must be 'cold' or 'warm', got {split!r}")
    ratings = world.ratings
    train, test = (cold_start_items(ratings, 0.2, seed=seed) if split == "cold"
                   else random_split(ratings, 0.2, seed=seed))
    counts = train["user_id"].value_counts()
    out = test[["user_id", "item_id", "rating"]].reset_index(drop=True)
    out["few"] = out["user_id"].map(counts).fillna(0).to_numpy() <= counts.quantile(few)
    out["oracle"] = world.oracle_predict(test)
    ids = world.items["item_id"].to_numpy()
    models = {"biases": Biases().fit(train)}
    models |= {name: KGRater(ids, blocks, seed=seed).fit(train)
               for name, blocks in variants.items()}
    for name, model in models.items():
        out[name] = model.predict(out["user_id"].to_numpy(), out["item_id"].to_numpy())
    return out


def ablation(world, variants: dict[str, dict[str, np.ndarray]], split: str = "cold",
             seed: int = 0, few: float = 0.25) -> dict[str, float]:
    """Test RMSE of the bias model, each variant and the oracle on one split
    (:func:`ablation_predictions` summarised). For ``"warm"`` the result also has
    ``<name>@few``: the RMSE over the test ratings of users with few training ratings."""
    table = ablation_predictions(world, variants, split, seed, few)
    names = ["oracle", "biases", *variants]
    out = {name: rmse(table["rating"], table[name]) for name in names}
    if split == "warm":
        sparse = table[table["few"]]
        out |= {f"{name}@few": rmse(sparse["rating"], sparse[name]) for name in names[1:]}
    return out
