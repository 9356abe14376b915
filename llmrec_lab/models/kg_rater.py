"""A rating model that fuses knowledge-graph embeddings with a bias model through an MLP.

The source fuses ``h_kg = Concat(h, e_i, r_i)`` (and, in its case studies, ``r_ij``: what links
the candidate item i to the items j the user already rated). We build exactly that second form,
because the first one, fed raw to a network, does not generalise at this data size: in the ci
worlds an MLP over ``Concat(user id, item id, e_i, r_i)`` memorised items through their
embeddings and made cold-start RMSE *worse* than ignoring the graph (see the chapter's notes).

For a user u and a candidate item i, each feature block (the KG block ``[e_i, r_i]`` from
:func:`kg_features`; optionally the frozen MiniLM text embedding) gives one number, the user's
*affinity* to i through that block::

    a_block(u, i) = sum_j w_ij res_uj / (lam + sum_j w_ij),   w_ij = exp((cos_ij - 1) / tau)

where j runs over the items u rated in training, ``res_uj`` is u's rating of j minus the bias
model's prediction, and ``cos_ij`` the cosine similarity of i and j in that block. If u liked
other films by i's director (close in KG space), ``a_kg`` is high. The affinities and a support
count per block are concatenated and an MLP maps them to a correction of
``mu + b_u + b_i`` (:class:`~llmrec_lab.models.baselines.Biases`). An item never rated in
training still has its KG and text vectors, hence its affinities: that is the cold-start path.
A training pair never sees its own rating (``w_ii = 0``), so training and test affinities are
computed alike. With no blocks the model is the bias model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from llmrec_lab.config import one_thread
from llmrec_lab.models.baselines import Biases, RatingModel


def kg_features(kge, item_ids, prefix: str = "item:") -> np.ndarray:
    """``Concat(e_i, r_i)`` for each item id, z-scored per column (zeros where the KG lacks it)."""
    e, _ = kge.items(item_ids, prefix)
    r, _ = kge.neighbourhood(item_ids, prefix)
    return standardize(np.hstack([e, r]))


def standardize(features: np.ndarray) -> np.ndarray:
    """Z-score each column over the items; a constant column becomes 0.

    In float32 a constant column's spread is rounding noise (up to about 1e-6 of its values),
    and dividing by it would blow the noise up to +-1: a spread that small counts as none.
    """
    sd = features.std(axis=0)
    constant = sd <= 1e-5 * np.abs(features).max(axis=0)
    return ((features - features.mean(axis=0)) / np.where(constant, np.inf, sd)).astype(np.float32)


def kernel(vectors: np.ndarray, tau: float) -> np.ndarray:
    """``exp((cos - 1) / tau)`` between all rows (centred first), with a zero diagonal."""
    x = vectors - vectors.mean(axis=0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    w = np.exp((x @ x.T - 1.0) / tau)
    np.fill_diagonal(w, 0.0)
    return w


class KGRater(RatingModel):
    """Bias model + MLP over per-block affinities of the user to the item (see module doc).

    ``item_ids`` lists the items the blocks describe, ``blocks`` maps a name to an
    ``(len(item_ids), d)`` array aligned with it. Items outside ``item_ids`` get no affinity.
    """

    name = "kg-mlp"

    def __init__(self, item_ids=None, blocks: dict[str, np.ndarray] | None = None,
                 tau: float = 0.2, lam: float = 1.0, hidden: int = 16, epochs: int = 30,
                 lr: float = 0.01, seed: int = 0):
        blocks = dict(blocks or {})
        if blocks and item_ids is None:
            raise ValueError("feature blocks need the item_ids their rows describe")
        for name, x in blocks.items():
            if len(x) != len(item_ids):
                raise ValueError(f"block {name!r} has {len(x)} rows for {len(item_ids)} item ids")
        self.item_ids = pd.Index([] if item_ids is None else list(item_ids))
        self.blocks, self.tau, self.lam = blocks, tau, lam
        self.hidden, self.epochs, self.lr, self.seed = hidden, epochs, lr, seed

    def fit(self, ratings: pd.DataFrame) -> KGRater:
        with one_thread():  # a 16-unit MLP
            return self._fit(ratings)

    def _fit(self, ratings: pd.DataFrame) -> KGRater:
        self._index(ratings)
        self.base_ = Biases().fit(ratings)
        users, items = ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy()
        residual = ratings["rating"].to_numpy() - self.base_.score(users, items)
        # residuals and "rated" flags of each training user on the described items
        cols = self.item_ids.get_indexer(items)
        rows = self.users_.get_indexer(users)
        ok = cols >= 0
        self.res_ = np.zeros((len(self.users_) + 1, len(self.item_ids)), dtype=np.float64)
        self.rated_ = np.zeros_like(self.res_)
        np.add.at(self.res_, (rows[ok], cols[ok]), residual[ok])
        np.add.at(self.rated_, (rows[ok], cols[ok]), 1.0)
        self.kernels_ = {name: kernel(x, self.tau) for name, x in self.blocks.items()}
        x = torch.as_tensor(self._inputs(users, items), dtype=torch.float32)
        y = torch.as_tensor(residual, dtype=torch.float32)
        torch.manual_seed(self.seed)
        self.mlp_ = nn.Sequential(nn.Linear(x.shape[1], self.hidden), nn.ReLU(),
                                  nn.Linear(self.hidden, 1))
        opt = torch.optim.Adam(self.mlp_.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        self.history_ = []
        for _ in range(self.epochs):
            order, total = torch.randperm(len(y), generator=gen), 0.0
            for batch in order.split(512):
                loss = ((self.mlp_(x[batch]).squeeze(-1) - y[batch]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            self.history_.append(float(np.sqrt(total / len(y))))
        return self

    def _inputs(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Per pair: a zero column (an input even without blocks), then per block the affinity
        and log(1 + support)."""
        return self._affinities(_positions(self.users_, user_ids),
                                self.item_ids.get_indexer(item_ids))

    def _affinities(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """:meth:`_inputs` for user rows and block columns (-1: the blocks lack the item)."""
        known = cols >= 0
        out = [np.zeros(len(rows))]
        for w in self.kernels_.values():
            num, den = np.zeros(len(rows)), np.zeros(len(rows))
            # sum_j w_ij res_uj per pair, a chunk of pairs at a time to bound the temporaries
            for start in range(0, len(rows), 4096):
                part = np.flatnonzero(known[start:start + 4096]) + start
                weights = w[cols[part]]
                num[part] = np.einsum("pj,pj->p", self.res_[rows[part]], weights)
                den[part] = np.einsum("pj,pj->p", self.rated_[rows[part]], weights)
            out += [num / (self.lam + den), np.log1p(den)]
        return np.stack(out, axis=1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "mlp_"):
            raise RuntimeError("KGRater is not fitted; call fit(ratings) first")

    def affinities(self, user_ids, item_ids) -> np.ndarray:
        """``(n, 2 * blocks)``: each pair's affinity and log(1 + support) per block, the numbers
        the MLP reads; a PLM rater's head can read them too (Chapter 3.3)."""
        self._check_fitted()
        return self._inputs(np.asarray(user_ids), np.asarray(item_ids))[:, 1:]

    def _predict(self, base: np.ndarray, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            correction = self.mlp_(torch.as_tensor(x, dtype=torch.float32)).squeeze(-1)
        return base + correction.numpy().astype(np.float64)

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Unclipped predictions from ids: an item unseen in training keeps its KG affinities
        (:meth:`_score`, which sees only training rows, would treat it as featureless)."""
        u, i = np.asarray(user_ids), np.asarray(item_ids)
        shape = np.broadcast_shapes(u.shape, i.shape)
        u, i = (np.broadcast_to(a, shape).ravel() for a in (u, i))
        self._check_fitted()
        return self._predict(self.base_.score(u, i), self._inputs(u, i)).reshape(shape)

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        shape = np.broadcast_shapes(u.shape, i.shape)
        u, i = (np.broadcast_to(a, shape).ravel() for a in (u, i))
        known = i < len(self.items_)
        cols = np.full(len(i), -1)
        cols[known] = self.item_ids.get_indexer(self.items_[i[known]])
        base = self.base_._score(u, i)  # same id indexing: both indexed the same ratings
        return self._predict(base, self._affinities(u, cols)).reshape(shape)


def item_vectors(rows: pd.DataFrame, item_ids, vectors: np.ndarray) -> np.ndarray:
    """Each rating's item vector (``vectors[k]`` describes ``item_ids[k]``; zeros if absent).

    With :func:`kg_features` as ``vectors`` this is the source's ``Concat(e_i, r_i)`` per pair.
    """
    cols = pd.Index(item_ids).get_indexer(rows["item_id"])
    out = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
    out[cols >= 0] = vectors[cols[cols >= 0]]
    return out


def _positions(index: pd.Index, ids: np.ndarray) -> np.ndarray:
    """Row of each id in ``index``; unknown ids get the extra last row (no history)."""
    rows = index.get_indexer(ids)
    return np.where(rows < 0, len(index), rows)

