"""Rating-prediction baselines every later model has to beat.

Three models of increasing power, all predicting ``mu + b_u + b_i + p_u . q_i`` with more
terms switched on: :class:`GlobalMean` (``mu`` only), :class:`Biases` (``mu + b_u + b_i``) and
:class:`MatrixFactorization` (all of it). They share :class:`RatingModel`: ``fit`` on a ratings
frame (``user_id``, ``item_id``, ``rating``), then ``predict`` for any ids. Id arrays broadcast
like NumPy's, so ``predict(users[:, None], items[None, :])`` gives a users x items matrix.

Ids are arbitrary integers, so each model indexes the ids it saw at fit time. Every learned
table keeps one extra all-zero row at the end, where unknown ids land: an unknown user gets
``mu + b_i``, an unknown item ``mu + b_u``, both unknown ``mu``, as in scikit-surprise.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from llmrec_lab.config import pick_device
from llmrec_lab.metrics import rmse

COLUMNS = ("user_id", "item_id", "rating")


class RatingModel(ABC):
    """Fit on a ratings frame; predict ratings for (user id, item id) pairs."""

    name: ClassVar[str]

    @abstractmethod
    def fit(self, ratings: pd.DataFrame) -> RatingModel:
        """Learn from ``ratings`` and return ``self``, so ``model = Model().fit(df)`` reads well."""

    @abstractmethod
    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Raw scores for row positions from :meth:`_encode` (unknown ids are the last row)."""

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Unclipped predictions: for ranking, where clipping at the top would create ties."""
        return self._score(*self._encode(user_ids, item_ids))

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Predicted ratings, clipped to the range seen in training (1..5 for MovieLens)."""
        return np.clip(self.score(user_ids, item_ids), *self.scale_)

    def _index(self, ratings: pd.DataFrame, items: pd.Index | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index the training ids, remember ``mu`` and the rating scale; return rows and ratings.

        ``items`` fixes the item index in advance (a content model knows the whole catalogue,
        cold items included); by default it is the items that appear in ``ratings``.
        """
        missing = set(COLUMNS) - set(ratings.columns)
        if missing:
            raise ValueError(f"ratings frame lacks columns {sorted(missing)}")
        if ratings.empty:
            raise ValueError("cannot fit on an empty ratings frame")
        self.users_ = pd.Index(ratings["user_id"].unique())
        self.items_ = pd.Index(ratings["item_id"].unique()) if items is None else items
        r = ratings["rating"].to_numpy(np.float64)
        self.mu_, self.scale_ = float(r.mean()), (float(r.min()), float(r.max()))
        return *self._encode(ratings["user_id"], ratings["item_id"]), r

    def _encode(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row positions of the ids; unknown ids map to the extra last row."""
        if not hasattr(self, "users_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(ratings) first")
        user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
        try:
            np.broadcast_shapes(user_ids.shape, item_ids.shape)
        except ValueError:
            raise ValueError(f"shape mismatch: user_ids {user_ids.shape} vs item_ids "
                             f"{item_ids.shape} do not broadcast") from None
        return _rows(self.users_, user_ids), _rows(self.items_, item_ids)


def _rows(index: pd.Index, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``index``, with ``len(index)`` (the zero row) for unknown ids."""
    rows = index.get_indexer(ids.ravel()).reshape(ids.shape)
    return np.where(rows < 0, len(index), rows)


class GlobalMean(RatingModel):
    """Predict the training mean for everyone: the floor any model must clear."""

    name = "global-mean"

    def fit(self, ratings: pd.DataFrame) -> GlobalMean:
        self._index(ratings)
        return self

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.full(np.broadcast_shapes(u.shape, i.shape), self.mu_)


class Biases(RatingModel):
    """``mu + b_u + b_i``: some users rate generously, some items are simply liked more.

    Fit by alternating least squares as scikit-surprise's ``BaselineOnly`` does: each step solves
    the item biases given the user biases in closed form, then the reverse. The ridge terms
    ``reg_i`` and ``reg_u`` act like that many phantom ratings at the mean, so a bias learned
    from few ratings stays near zero.
    """

    name = "biases"

    def __init__(self, reg_u: float = 15.0, reg_i: float = 10.0, n_epochs: int = 10):
        self.reg_u, self.reg_i, self.n_epochs = reg_u, reg_i, n_epochs

    def fit(self, ratings: pd.DataFrame) -> Biases:
        u, i, r = self._index(ratings)
        n_u, n_i = len(self.users_), len(self.items_)
        self.bu_, self.bi_ = np.zeros(n_u + 1), np.zeros(n_i + 1)
        for _ in range(self.n_epochs):
            self.bi_[:n_i] = _ridge_mean(i, r - self.mu_ - self.bu_[u], n_i, self.reg_i)
            self.bu_[:n_u] = _ridge_mean(u, r - self.mu_ - self.bi_[i], n_u, self.reg_u)
        return self

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return self.mu_ + self.bu_[u] + self.bi_[i]


def _ridge_mean(groups: np.ndarray, residuals: np.ndarray, n: int, reg: float) -> np.ndarray:
    """Per-group ``sum(residuals) / (reg + count)``: the L2-regularised least-squares bias."""
    return np.bincount(groups, residuals, minlength=n) / (reg + np.bincount(groups, minlength=n))


class MatrixFactorization(RatingModel):
    """Biased matrix factorisation, ``mu + b_u + b_i + p_u . q_i``, trained in PyTorch.

    Each user and item gets a ``n_factors``-dimensional vector; their dot product captures taste
    beyond popularity. Training minimises the squared error of mini-batches plus ``reg`` times
    the squared norms of the rows each example touches (as scikit-surprise's SVD does), so rare
    users and items are shrunk hardest. With a ``valid`` frame, training stops once validation
    RMSE has not improved for ``patience`` epochs and keeps the best epoch's parameters.
    ``history_`` records the curve. Runs are reproducible for a ``seed`` on CPU.
    """

    name = "mf"
    init_std = 0.1  # of the factor vectors; biases start at zero

    def __init__(self, n_factors: int = 32, epochs: int = 20, lr: float = 0.005, reg: float = 0.1,
                 batch_size: int = 512, optimizer: str = "adam", patience: int = 3, seed: int = 0,
                 device: str | None = None):
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.n_factors, self.epochs, self.lr, self.reg = n_factors, epochs, lr, reg
        self.batch_size, self.optimizer, self.patience = batch_size, optimizer, patience
        self.seed, self.device = seed, device

    def fit(self, ratings: pd.DataFrame, valid: pd.DataFrame | None = None) -> MatrixFactorization:
        u, i, r = self._index(ratings)
        gen = torch.Generator().manual_seed(self.seed)
        device = pick_device(self.device)
        params = self._init_params(gen, device)
        opt_class = torch.optim.Adam if self.optimizer == "adam" else torch.optim.SGD
        opt = opt_class(params, lr=self.lr)
        data = [torch.as_tensor(x, device=device) for x in (u, i, r.astype(np.float32))]
        self.history_, best, best_epoch = [], np.inf, 0
        for epoch in range(1, self.epochs + 1):
            train_rmse = self._run_epoch(params, opt, data, gen)
            self._export(params)
            valid_rmse = None if valid is None else self._rmse_on(valid)
            self.history_.append(dict(epoch=epoch, train_rmse=train_rmse, valid_rmse=valid_rmse))
            if valid_rmse is None:
                continue
            if valid_rmse < best:
                best, best_epoch, kept = valid_rmse, epoch, (self.bu_, self.bi_, self.P_, self.Q_)
            elif epoch - best_epoch >= self.patience:
                break
        if best_epoch:
            self.bu_, self.bi_, self.P_, self.Q_ = kept
        return self

    def _rmse_on(self, ratings: pd.DataFrame) -> float:
        """RMSE of the current (clipped) predictions on a held-out frame."""
        return rmse(ratings["rating"], self.predict(ratings["user_id"], ratings["item_id"]))

    def _init_params(self, gen: torch.Generator, device: torch.device) -> list[torch.Tensor]:
        """Biases at zero, factors small and random: ``[bu, bi, P, Q]``, ready for an optimiser."""
        n_u, n_i, f = len(self.users_), len(self.items_), self.n_factors
        params = [torch.zeros(n_u), torch.zeros(n_i),
                  torch.randn(n_u, f, generator=gen) * self.init_std,
                  torch.randn(n_i, f, generator=gen) * self.init_std]
        return [p.to(device).requires_grad_() for p in params]

    def _run_epoch(self, params: list[torch.Tensor], opt: torch.optim.Optimizer,
                   data: list[torch.Tensor], gen: torch.Generator) -> float:
        """One shuffled pass over the ratings; returns the RMSE over the epoch's batches."""
        bu, bi, P, Q = params
        u, i, r = data
        order = torch.randperm(len(r), generator=gen).to(u.device)
        sq_err = torch.zeros((), device=u.device)
        for batch in order.split(self.batch_size):
            ub, ib, rb = u[batch], i[batch], r[batch]
            pu, qi = P[ub], Q[ib]
            err = self.mu_ + bu[ub] + bi[ib] + (pu * qi).sum(1) - rb
            penalty = (pu ** 2).sum(1) + (qi ** 2).sum(1) + bu[ub] ** 2 + bi[ib] ** 2
            loss = 0.5 * (err ** 2 + self.reg * penalty).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sq_err += (err.detach() ** 2).sum()
        return float(sq_err / len(r)) ** 0.5

    def _export(self, params: list[torch.Tensor]) -> None:
        """Copy the parameters to NumPy, each with the zero row for unknown ids appended."""
        self.bu_, self.bi_, self.P_, self.Q_ = (
            np.concatenate([p.detach().cpu().numpy().astype(np.float64),
                            np.zeros((1, *p.shape[1:]))]) for p in params)

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        dot = np.einsum("...f,...f->...", self.P_[u], self.Q_[i])  # broadcasts without a copy
        return self.mu_ + self.bu_[u] + self.bi_[i] + dot


MODELS: dict[str, type[RatingModel]] = {
    m.name: m for m in (GlobalMean, Biases, MatrixFactorization)}


def make_model(name: str, seed: int | None = None, **kw) -> RatingModel:
    """Build a model by its ``name`` (as the CLI does), passing ``kw`` to its constructor.

    ``seed`` reaches only models that draw random numbers, so callers can pass one to any name.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[name]
    if seed is not None and "seed" in inspect.signature(cls).parameters:
        kw["seed"] = seed
    return cls(**kw)


def score_all(model: RatingModel, user_ids: np.ndarray, item_ids: np.ndarray,
              chunk: int = 1024) -> np.ndarray:
    """Unclipped scores of every item for every user (users x items), for ranking evaluation.

    Works through ``chunk`` users at a time so the temporaries stay small.
    """
    user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
    blocks = [model.score(user_ids[start:start + chunk, None], item_ids[None, :])
              for start in range(0, len(user_ids), chunk)]
    return np.concatenate(blocks) if blocks else np.empty((0, len(item_ids)))
