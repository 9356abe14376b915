"""Knowledge-graph embeddings with pykeen: train, score link prediction, export aligned arrays.

:func:`train_kge` holds out a share of the triples, trains TransE, RotatE or DistMult on the
rest with pykeen's pipeline, and scores the held-out triples by filtered link prediction (MRR,
Hits@k, both directions: every true head or tail other than the one asked for is removed from the
candidates before ranking). :func:`random_baseline` gives the same metrics for a scorer that
ranks candidates at random, computed exactly, so "above chance" is a number, not a feeling.

What a recommender needs from the result is a matrix whose row ``i`` belongs to item ``i``:
:meth:`KGEmbedding.aligned` builds it from any list of entity names, with a zero row and a
``False`` in the mask for an item the graph does not know (pykeen numbers entities in its own,
alphabetical order, which is why a bare ``entity_representations[0]`` is not item-aligned).
Complex embeddings (RotatE) are exported as real arrays of twice the width (real, imaginary).

Runs are deterministic for a seed on CPU (pykeen's ``random_seed``) and cached on disk:
``<cache>/kge/<model>-<key>/`` holds ``embeddings.safetensors`` and ``meta.json``, where the key
hashes the triples, the model and every hyperparameter and the seed. The folder is written whole
by :func:`llmrec_lab.io.atomic_folder`, and its files are byte-identical for a seed (no timings
are stored), so a cache can be compared or shipped.

pykeen calls ``gc.collect()`` after every epoch, which costs most of a second in a process that
holds a large heap (a notebook with transformers loaded), so we ``gc.freeze()`` the existing
objects for the duration of training. The tensors are tiny, so training also runs on one CPU
thread: on a busy 2-core machine two threads spent most of their time waiting for each other.
Together these cut a ci run from about a minute to a few seconds.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file, save_file

from llmrec_lab.config import Profile, get_profile
from llmrec_lab.io import atomic_folder, cache_dir as cache_root
from llmrec_lab.kg.build import TripleSet

MODELS = {"transe": "TransE", "rotate": "RotatE", "distmult": "DistMult"}
# Per profile. On a cpu graph (the screen world's 5,259 triples, seed 0) 150 epochs take 40% of
# the time of 300 and keep most of the filtered MRR: TransE 0.156 against 0.167, DistMult 0.343
# against 0.346 (random ranks: 0.011).
EPOCHS = {"ci": 150, "cpu": 150, "gpu": 500}
HITS = (1, 3, 10)


@dataclass(frozen=True)
class KGEConfig:
    """Everything a training run depends on besides the triples (all of it enters the cache key)."""

    model: str = "transe"
    dim: int = 32
    epochs: int = 150
    lr: float = 0.02
    negatives: int = 16  # negative samples per positive triple
    batch_size: int = 1024
    test_frac: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown KG embedding model {self.model!r}; "
                             f"choose one of {', '.join(MODELS)}")
        if not 0 < self.test_frac < 1:
            raise ValueError(f"test_frac must be in (0, 1), got {self.test_frac}")


@dataclass
class KGEmbedding:
    """Trained entity and relation embeddings, their labels, and link-prediction metrics."""

    entities: list[str]  # row order of entity_emb (pykeen's)
    relations: list[str]
    entity_emb: np.ndarray  # (n_entities, d) float32
    relation_emb: np.ndarray  # (n_relations, d') float32
    metrics: dict  # mrr, hits@k of the model and of a random ranker, on the held-out triples
    config: KGEConfig
    triples: pd.DataFrame  # the graph it was trained from (train and held-out parts)
    from_cache: bool = False

    @property
    def dim(self) -> int:
        return int(self.entity_emb.shape[1])

    def aligned(self, names) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``entity_emb`` for ``names`` in that order: ``(matrix, mask)``.

        A name the graph does not contain gets a zero row and ``mask`` False.
        """
        index = pd.Index(self.entities).get_indexer(list(names))
        mask = index >= 0
        out = np.zeros((len(index), self.dim), dtype=np.float32)
        out[mask] = self.entity_emb[index[mask]]
        return out, mask

    def items(self, item_ids, prefix: str = "item:") -> tuple[np.ndarray, np.ndarray]:
        """``e_i``: row ``k`` embeds ``f"{prefix}{item_ids[k]}"`` (a zero row, False, if absent)."""
        return self.aligned(f"{prefix}{i}" for i in item_ids)

    def neighbourhood(self, item_ids, prefix: str = "item:") -> tuple[np.ndarray, np.ndarray]:
        """``r_i``: the mean embedding of each item's neighbours (both directions, one hop).

        It summarises what the graph says about the item (its category, brand, director, actors,
        substitutes...) in entity space. Items without neighbours get a zero row and False.
        """
        names = [f"{prefix}{i}" for i in item_ids]
        position = {name: k for k, name in enumerate(names)}
        t = self.triples
        pairs = pd.concat([pd.DataFrame({"item": t["head"], "other": t["tail"]}),
                           pd.DataFrame({"item": t["tail"], "other": t["head"]})])
        pairs = pairs[pairs["item"].isin(position)]
        vectors, known = self.aligned(pairs["other"])
        rows = pairs["item"].map(position).to_numpy()[known]
        sums = np.zeros((len(names), self.dim), dtype=np.float64)
        np.add.at(sums, rows, vectors[known])
        counts = np.bincount(rows, minlength=len(names))
        mask = counts > 0
        sums[mask] /= counts[mask, None]
        return sums.astype(np.float32), mask


def random_baseline(train: pd.DataFrame, test: pd.DataFrame, n_entities: int) -> dict:
    """Exact expected filtered MRR and Hits@k of a ranker that orders candidates at random.

    For a test triple (h, r, t), the tail query keeps ``n = n_entities - (known tails of (h, r)
    other than t)`` candidates, over which a random ranker puts ``t`` at a uniform rank:
    E[1/rank] = H_n / n and P(rank <= k) = min(k, n) / n. Head queries likewise; both averaged.
    """
    known = pd.concat([train, test])
    n_tails = known.groupby(["head", "relation"])["tail"].nunique()
    n_heads = known.groupby(["relation", "tail"])["head"].nunique()
    filtered = np.concatenate([
        n_tails.loc[list(zip(test["head"], test["relation"]))].to_numpy(),
        n_heads.loc[list(zip(test["relation"], test["tail"]))].to_numpy()])
    n = n_entities - (filtered - 1)
    harmonic = np.cumsum(1.0 / np.arange(1, n_entities + 1))
    out = {"mrr": float(np.mean(harmonic[n - 1] / n))}
    out |= {f"hits@{k}": float(np.mean(np.minimum(k, n) / n)) for k in HITS}
    return out


def train_kge(kg: TripleSet, model: str = "transe", dim: int = 32, epochs: int | None = None,
              seed: int = 0, profile: Profile | str | None = None,
              cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
              **hyper) -> KGEmbedding:
    """Train (or load from the cache) a KG embedding; ``epochs`` defaults to the profile's.

    ``hyper`` may set ``lr``, ``negatives``, ``batch_size`` and ``test_frac`` (see
    :class:`KGEConfig`).
    """
    if epochs is None:
        p = profile if isinstance(profile, Profile) else get_profile(profile)
        epochs = EPOCHS[p.name]
    config = KGEConfig(model=model, dim=dim, epochs=epochs, seed=seed, **hyper)
    if len(kg) < 10:
        raise ValueError(f"a graph of {len(kg)} triples is too small to embed and evaluate")
    directory = _cache_path(kg, config, cache_dir)
    if use_cache and (directory / "meta.json").is_file():
        return _load(directory, kg, config)
    result = _train(kg, config)
    if use_cache:
        _save(result, directory)
    return result


@contextmanager
def _quiet_and_frozen():
    """Silence pykeen's logs, keep its per-epoch ``gc.collect()`` cheap, train on one thread."""
    loggers = [logging.getLogger(name) for name in ("pykeen", "torch_max_mem")]
    levels = [logger.level for logger in loggers]
    threads = torch.get_num_threads()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    torch.set_num_threads(1)
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(threads)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _train(kg: TripleSet, c: KGEConfig) -> KGEmbedding:
    from pykeen.pipeline import pipeline
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory.from_labeled_triples(kg.to_array())
    with _quiet_and_frozen():
        train, test = factory.split([1 - c.test_frac, c.test_frac], random_state=c.seed)
        result = pipeline(
            training=train, testing=test, model=MODELS[c.model],
            model_kwargs=dict(embedding_dim=c.dim), optimizer_kwargs=dict(lr=c.lr),
            negative_sampler_kwargs=dict(num_negs_per_pos=c.negatives),
            training_kwargs=dict(num_epochs=c.epochs, batch_size=c.batch_size, use_tqdm=False),
            evaluator_kwargs=dict(filtered=True),
            evaluation_kwargs=dict(use_tqdm=False, batch_size=256),
            random_seed=c.seed, device="cpu")
    metrics = {"mrr": float(result.get_metric("both.realistic.inverse_harmonic_mean_rank"))}
    metrics |= {f"hits@{k}": float(result.get_metric(f"both.realistic.hits_at_{k}")) for k in HITS}
    train_df, test_df = (pd.DataFrame(tf.label_triples(tf.mapped_triples),
                                      columns=["head", "relation", "tail"])
                         for tf in (train, test))
    metrics["random"] = random_baseline(train_df, test_df, factory.num_entities)
    metrics |= {"n_train": len(train_df), "n_test": len(test_df)}
    model = result.model
    with torch.no_grad():
        entity = model.entity_representations[0](indices=None)
        relation = model.relation_representations[0](indices=None)
    entities = [label for label, _ in sorted(factory.entity_to_id.items(), key=lambda x: x[1])]
    relations = [label for label, _ in sorted(factory.relation_to_id.items(), key=lambda x: x[1])]
    return KGEmbedding(entities, relations, _real(entity), _real(relation), metrics, c,
                       pd.concat([train_df, test_df], ignore_index=True))


def _real(x: torch.Tensor) -> np.ndarray:
    """A (n, d) complex tensor as (n, 2d) real: real parts, then imaginary parts."""
    x = x.detach().cpu()
    if x.is_complex():
        x = torch.cat([x.real, x.imag], dim=-1)
    return np.ascontiguousarray(x.reshape(len(x), -1).numpy().astype(np.float32))


def _cache_path(kg: TripleSet, c: KGEConfig, cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha256()
    for row in kg.triples.itertuples(index=False, name=None):
        digest.update("\t".join(row).encode() + b"\n")
    digest.update(json.dumps(asdict(c), sort_keys=True).encode())
    return Path(cache_dir or cache_root()) / "kge" / f"{c.model}-{digest.hexdigest()[:20]}"


def _save(e: KGEmbedding, directory: Path) -> None:
    """Write the arrays and the metadata as one folder, all or nothing.

    Another process that cached the same run first wrote the same bytes, so replacing its folder
    changes nothing.
    """
    meta = {"entities": e.entities, "relations": e.relations, "metrics": e.metrics,
            "config": asdict(e.config), "triples": e.triples.to_numpy().tolist()}
    with atomic_folder(directory, "KG embedding") as tmp:
        save_file({"entity": e.entity_emb, "relation": e.relation_emb},
                  str(tmp / "embeddings.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta))


def _load(directory: Path, kg: TripleSet, c: KGEConfig) -> KGEmbedding:
    meta = json.loads((directory / "meta.json").read_text())
    arrays = load_file(str(directory / "embeddings.safetensors"))
    return KGEmbedding(meta["entities"], meta["relations"], arrays["entity"], arrays["relation"],
                       meta["metrics"], c,
                       pd.DataFrame(meta["triples"], columns=["head", "relation", "tail"]),
                       from_cache=True)
