"""Rating-prediction baselines every later model has to beat.

Three models of increasing power, all predicting ``mu + b_u + b_i + p_u . q_i`` with more
terms switched on: :class:`GlobalMean` (``mu`` only), :class:`Biases` (``mu + b_u + b_i``) and
:class:`MatrixFactorization` (all of it); then :class:`BayesianMF`, which averages
``mu + p_u . q_i`` over draws from the factors' posterior instead of fitting one set, the
strongest ID-only model here on MovieLens 100k. They share :class:`RatingModel`: ``fit`` on a
ratings frame (``user_id``, ``item_id``, ``rating``), then ``predict`` for any ids. Id arrays
broadcast like NumPy's, so ``predict(users[:, None], items[None, :])`` gives a users x items
matrix.

Ids are arbitrary integers, so each model indexes the ids it saw at fit time. Every learned
table keeps one extra all-zero row at the end, where unknown ids land: an unknown user gets
``mu + b_i``, an unknown item ``mu + b_u``, both unknown ``mu``, as in scikit-surprise.
"""
from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.stats
import torch

from llmrec_lab.config import one_thread, pick_device
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
        return table_rows(self.users_, user_ids), table_rows(self.items_, item_ids)


def table_rows(index: pd.Index, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``index``, with ``len(index)`` (the zero row) for unknown ids:
    how a fitted model's parameter tables are read, and how another model of the same ids (the
    text tower started from MF) finds its rows in them."""
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
    """Biased matrix factorisation, ``mu + b_u + b_i + p_u . q_i``, by alternating least squares.

    Each user and item gets a bias and a ``n_factors``-dimensional vector; the dot product of the
    vectors captures taste beyond popularity. The loss is the squared error plus ``reg`` times the
    squared norms of the parameters each rating touches (as in scikit-surprise's SVD): a user with
    ``n`` ratings pays ``reg * n`` per unit of squared norm, the same weight relative to their
    ``n`` squared errors as every other user, so one ``reg`` suits light and heavy raters alike.

    With the items held fixed, that loss is one small ridge regression per user, which has an
    exact solution (:func:`_solve_rows`); then the same for the items, with the users fixed. One
    such pair of steps is an epoch. Each step solves the loss exactly, so it can only fall, and a
    few epochs suffice where stochastic gradient descent needs many passes and a learning rate.
    With a ``valid`` frame, training stops once validation RMSE has not improved for
    ``patience`` epochs and keeps the best epoch's parameters. ``history_`` records the curve.
    Runs are reproducible for a ``seed`` on CPU.
    """

    name = "mf"
    # biases start at zero, factors this spread: from much smaller ones the first epochs are spent
    # growing them out of the penalty
    init_std = 0.3

    # reg 0.13 is what a validation split (10% of each u1-u5 training fold) chooses from
    # 0.08-0.2 on ml-100k, never the test folds; 8 and 12 epochs were within 0.0001 there
    def __init__(self, n_factors: int = 32, epochs: int = 8, reg: float = 0.13,
                 patience: int = 3, seed: int = 0, device: str | None = None):
        if reg <= 0:
            raise ValueError(f"reg must be > 0 (it keeps every least-squares step solvable), "
                             f"got {reg}")
        self.n_factors, self.epochs, self.reg, self.patience = n_factors, epochs, reg, patience
        self.seed, self.device = seed, device

    def fit(self, ratings: pd.DataFrame, valid: pd.DataFrame | None = None) -> MatrixFactorization:
        with one_thread():  # every step is a few ms of work: a second thread mostly waits
            return self._fit(ratings, valid)

    def _fit(self, ratings: pd.DataFrame, valid: pd.DataFrame | None) -> MatrixFactorization:
        u, i, r = self._index(ratings)
        n_u, n_i = len(self.users_), len(self.items_)
        device = pick_device(self.device)
        gen = torch.Generator().manual_seed(self.seed)
        users, items = (self._init_rows(n, gen).to(device) for n in (n_u, n_i))
        by_user = _RatingRows(u, i, r - self.mu_, (n_u, n_i), device)
        by_item = _RatingRows(i, u, r - self.mu_, (n_i, n_u), device)
        self.history_, best, best_epoch = [], np.inf, 0
        for epoch in range(1, self.epochs + 1):
            users = _solve_rows(by_user, items, self.reg)
            items = _solve_rows(by_item, users, self.reg)
            self._export(users, items)
            train_rmse = rmse(r, self._score(u, i))
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

    def _init_rows(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` rows of ``[bias, factors]``: the bias at zero, the factors small and random."""
        factors = torch.randn(n, self.n_factors, generator=gen) * self.init_std
        return torch.cat([torch.zeros(n, 1), factors], dim=1)

    def _rmse_on(self, ratings: pd.DataFrame) -> float:
        """RMSE of the current (clipped) predictions on a held-out frame."""
        return rmse(ratings["rating"], self.predict(ratings["user_id"], ratings["item_id"]))

    def _export(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Split the tables into NumPy biases and factors, each with a zero row for unknown ids."""
        users, items = (np.concatenate([t.cpu().numpy().astype(np.float64),
                                        np.zeros((1, t.shape[1]))]) for t in (users, items))
        self.bu_, self.P_, self.bi_, self.Q_ = users[:, 0], users[:, 1:], items[:, 0], items[:, 1:]

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        dot = np.einsum("...f,...f->...", self.P_[u], self.Q_[i])  # broadcasts without a copy
        return self.mu_ + self.bu_[u] + self.bi_[i] + dot


class BayesianMF(RatingModel):
    """Bayesian matrix factorisation (BPMF, Salakhutdinov and Mnih 2008), fitted by Gibbs sampling.

    :class:`MatrixFactorization` picks one set of vectors under a penalty ``reg`` chosen by hand.
    Here the vectors have a Gaussian prior whose mean and precision are themselves drawn from
    their conjugate (Normal-Wishart) prior, so how strongly to shrink is learnt from the data,
    per direction of the factor space. A Gibbs sweep draws the users' prior, every user's vector
    given the items' (one small Gaussian per user: the ridge solution of MF plus noise of the
    right shape), then the same for the items. After ``burn_in`` sweeps the prediction is the
    average of ``mu + p_u . q_i`` over the draws: an average over plausible models, which a user
    with three ratings cannot pull far and which MF's single point estimate overfits.

    ``noise_sd`` is the assumed spread of a rating around its prediction. Predictions average
    ``keep`` draws spread evenly over the sweeps after burn-in. Reproducible for a ``seed``.

    With ``item_vectors`` (one row per id of ``item_ids``, the catalogue: say a frozen text
    encoder's vectors of the items' texts), an item's prior mean is ``mean + B^T x_i`` instead of
    ``mean``, with ``B`` drawn each sweep from its posterior (a Bayesian ridge regression of the
    item vectors on ``x``, penalty ``vector_reg``: Macau, Simm et al. 2015). An item with few
    ratings then starts from what its text says, and one with none (a cold item) is predicted
    from its text alone.
    """

    name = "bpmf"

    # vector_reg 3 is what a validation split (10% of u1.base's ratings, seed 0, MiniLM's
    # vectors of the items' texts) chose from 0.3, 1 and 3 on ml-100k: RMSE 0.8948, 0.8918,
    # 0.8909, and 0.8974 with a penalty of 1000 (the vectors all but ignored); never the test folds
    def __init__(self, n_factors: int = 20, sweeps: int = 200, burn_in: int = 40,
                 noise_sd: float = 0.7, keep: int = 40, seed: int = 0,
                 item_ids: np.ndarray | None = None, item_vectors: np.ndarray | None = None,
                 vector_reg: float = 3.0):
        if not 0 <= burn_in < sweeps:
            raise ValueError(f"burn_in must be in [0, sweeps), got {burn_in} with sweeps={sweeps}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the draws a prediction averages), got {keep}")
        if (item_ids is None) != (item_vectors is None) or (
                item_ids is not None and len(item_ids) != len(item_vectors)):
            raise ValueError("item_ids and item_vectors go together, one vector per id")
        self.n_factors, self.sweeps, self.burn_in = n_factors, sweeps, burn_in
        self.noise_sd, self.keep, self.seed = noise_sd, keep, seed
        self.item_ids, self.item_vectors, self.vector_reg = item_ids, item_vectors, vector_reg

    def fit(self, ratings: pd.DataFrame) -> BayesianMF:
        catalogue = None if self.item_ids is None else pd.Index(self.item_ids)
        if catalogue is not None and not ratings["item_id"].isin(catalogue).all():
            raise ValueError("ratings hold items that item_ids does not list")
        u, i, r = self._index(ratings, items=catalogue)
        rng = np.random.default_rng(self.seed)
        vectors = None if catalogue is None else _VectorPrior(self.item_vectors, self.vector_reg)
        sides = [_GibbsSide(u, i, len(self.users_)),
                 _GibbsSide(i, u, len(self.items_), vectors)]
        tables = [0.1 * rng.standard_normal((n, self.n_factors))
                  for n in (len(self.users_), len(self.items_))]
        kept_at = set(np.linspace(self.burn_in, self.sweeps - 1, self.keep).round().astype(int))
        self.samples_, residual = [], r - self.mu_
        for sweep in range(self.sweeps):
            for side, (own, other) in zip(sides, ((0, 1), (1, 0))):
                tables[own] = side.draw(tables[other], residual, tables[own],
                                        self.noise_sd ** -2, rng)
            if sweep in kept_at:  # each table with an all-zero row for unknown ids
                self.samples_.append([np.vstack([t, np.zeros((1, self.n_factors))])
                                      for t in tables])
        return self

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.mean(self._draws(u, i), axis=0)

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """The average of the draws' predictions, each clipped to the rating scale first: the
        posterior mean of a prediction on that scale, which a draw far outside it cannot drag."""
        draws = self._draws(*self._encode(user_ids, item_ids))
        return np.mean(np.clip(draws, *self.scale_), axis=0)

    def _draws(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """``mu + p_u . q_i`` under each kept draw: (draws, *broadcast shape)."""
        return self.mu_ + np.stack([np.einsum("...f,...f->...", users[u], items[i])
                                    for users, items in self.samples_])


class _GibbsSide:
    """One side (users or items) of :class:`BayesianMF`: its rows' ratings as a sparse sum, and
    the regression on side vectors that sets each row's prior mean, if it has one."""

    def __init__(self, own: np.ndarray, other: np.ndarray, n: int,
                 vectors: _VectorPrior | None = None):
        self.other, self.vectors = other, vectors
        # rows x ratings indicator: a product with it sums each row's ratings' terms at once
        self.sum_rows = scipy.sparse.csr_matrix(
            (np.ones(len(own)), (own, np.arange(len(own)))), shape=(n, len(own)))

    def draw(self, other_table: np.ndarray, residual: np.ndarray, own_table: np.ndarray,
             precision: float, rng: np.random.Generator) -> np.ndarray:
        """New rows for this side: the prior's mean and precision drawn given the current rows
        (less their shifts ``x B``, with side vectors, and then ``B`` given them), then each
        row from its Gaussian given the other side's rows, its ratings and its prior mean."""
        shift = 0.0 if self.vectors is None else self.vectors.shift
        mean, prior = _normal_wishart(own_table - shift, rng)
        if self.vectors is not None:
            shift = self.vectors.draw(own_table - mean, prior, rng)
        n, k = own_table.shape
        v = other_table[self.other]
        gram = (self.sum_rows @ (v[:, :, None] * v[:, None, :]).reshape(len(v), k * k))
        precisions = prior + precision * gram.reshape(n, k, k)
        targets = precision * (self.sum_rows @ (v * residual[:, None])) + (mean + shift) @ prior
        lower = np.linalg.cholesky(precisions)
        centre = np.linalg.solve(precisions, targets[:, :, None])[..., 0]
        # x = centre + L^-T z has covariance (L L^T)^-1, the inverse of the row's precision
        noise = np.linalg.solve(np.swapaxes(lower, 1, 2), rng.standard_normal((n, k, 1)))[..., 0]
        return centre + noise


class _VectorPrior:
    """Rows' prior means ``B^T x`` from side vectors ``x``: ``B`` is drawn given the rows."""

    def __init__(self, x: np.ndarray, reg: float):
        self.x = np.asarray(x, dtype=np.float64)
        gram = self.x.T @ self.x + reg * np.eye(self.x.shape[1])
        self.gram, self.lower = gram, np.linalg.cholesky(gram)
        self.shift = 0.0  # x B for the current B; B starts at zero

    def draw(self, rows: np.ndarray, precision: np.ndarray, rng: np.random.Generator,
             ) -> np.ndarray:
        """Draw ``B`` given ``rows`` (minus their prior's mean) and the prior's precision, from
        its matrix-normal posterior: mean the ridge solution, row covariance ``gram^-1``,
        column covariance ``precision^-1``. Return the new shifts ``x B``."""
        ridge = np.linalg.solve(self.gram, self.x.T @ rows)
        noise = np.linalg.solve(self.lower.T, rng.standard_normal(ridge.shape))
        columns = np.linalg.cholesky(np.linalg.inv(precision))
        self.shift = self.x @ (ridge + noise @ columns.T)
        return self.shift


def _normal_wishart(rows: np.ndarray, rng: np.random.Generator,
                    beta0: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw the mean and precision of the rows' Gaussian prior from their Normal-Wishart
    posterior, with BPMF's hyperprior: mean 0, scale matrix I, ``beta0`` pseudo-rows."""
    n, k = rows.shape
    centre, spread = rows.mean(axis=0), np.cov(rows.T, bias=True).reshape(k, k)
    shrunk = beta0 * n / (beta0 + n) * np.outer(centre, centre)
    scale = np.linalg.inv(np.eye(k) + n * spread + shrunk)
    precision = scipy.stats.wishart.rvs(df=k + n, scale=(scale + scale.T) / 2, random_state=rng)
    mean = rng.multivariate_normal(n * centre / (beta0 + n),
                                   np.linalg.inv((beta0 + n) * precision))
    return mean, precision


class _RatingRows:
    """The ratings grouped by one side (users, or items): what :func:`_solve_rows` sums over.

    ``seen`` is the sparse 0/1 matrix of who rated what, ``residual`` holds ``r - mu`` at the same
    places, and ``counts`` is each row's number of ratings. Both matrices are stored row by row
    (CSR), the layout in which a product with a dense matrix sums over each row's ratings fastest.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, residual: np.ndarray,
                 shape: tuple[int, int], device: torch.device):
        where = torch.as_tensor(np.stack([rows, cols]))
        with warnings.catch_warnings():  # torch calls its CSR support "beta"; we use only `@`
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            self.seen, self.residual = (
                torch.sparse_coo_tensor(where, torch.as_tensor(v, dtype=torch.float32), shape,
                                        check_invariants=True).to_sparse_csr().to(device)
                for v in (np.ones(len(rows)), residual))
        self.counts = torch.as_tensor(np.bincount(rows, minlength=shape[0]), dtype=torch.float32,
                                      device=device)


def _solve_rows(ratings: _RatingRows, other: torch.Tensor, reg: float) -> torch.Tensor:
    """Every row's best ``[bias, factors]`` given the other side's table ``other``, exactly.

    For a user ``u`` (the item step is the mirror image), each rated item ``j`` contributes the
    features ``x_j = [1, q_j]`` and the target ``r_uj - mu - b_j``, so ``[b_u, p_u]`` is a ridge
    regression with the closed form ``(sum_j x_j x_j' + reg n_u I) [b_u, p_u] = sum_j (r_uj - mu
    - b_j) x_j``. The sums over each row's ratings are sparse matrix products, and one batched
    Cholesky solve handles all rows at once.
    """
    x = torch.cat([torch.ones_like(other[:, :1]), other[:, 1:]], dim=1)
    k = x.shape[1]
    upper, mirror = _triangle(k, x.device)
    pairs = (x[:, :, None] * x[:, None, :]).reshape(len(x), k * k).index_select(1, upper)
    gram = (ratings.seen @ pairs).index_select(1, mirror).reshape(-1, k, k)
    gram.diagonal(dim1=1, dim2=2).add_(reg * ratings.counts[:, None])  # + reg n I, in place
    target = ratings.residual @ x - ratings.seen @ (other[:, :1] * x)
    return torch.cholesky_solve(target[:, :, None], torch.linalg.cholesky(gram))[:, :, 0]


def _triangle(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices that let a ``k x k`` symmetric matrix be summed through its upper triangle only.

    ``upper`` picks the entries on or above the diagonal from a flattened matrix; ``mirror``
    rebuilds the whole flattened matrix from those. Summing ``k (k + 1) / 2`` numbers per rating
    instead of ``k * k`` halves the dearest step of :func:`_solve_rows`.
    """
    rows, cols = torch.triu_indices(k, k, device=device)
    position = torch.empty(k, k, dtype=torch.long, device=device)
    position[rows, cols] = position[cols, rows] = torch.arange(len(rows), device=device)
    return rows * k + cols, position.flatten()


MODELS: dict[str, type[RatingModel]] = {
    m.name: m for m in (GlobalMean, Biases, MatrixFactorization, BayesianMF)}


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
