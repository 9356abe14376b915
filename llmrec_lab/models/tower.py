"""A hybrid rater whose item tower reads the item's text: a language model that learns from
every rating on a CPU (Chapter 3.1).

The prediction is matrix factorisation with a second, text-made item vector::

    r(u, i) = mu + b_u + b_i + c_i + p_u . (q_i + v_i),    (c_i, v_i) = g(PLM(text_i))

``PLM(text_i)`` is the item's description, mean-pooled and L2-normalised exactly as
:class:`~llmrec_lab.encoders.text.TextEncoder` embeds it; ``g`` is a small linear (or 2-layer)
map from the encoder's width (384 for MiniLM) to one content bias ``c_i`` and a content vector
``v_i`` of ``factors`` numbers. ``b_i`` and ``q_i`` are the item's ID terms, learned only for
items rated in training: a cold item has ``b_i = 0`` and ``q_i = 0`` and is predicted from its
text alone. Training drops the ID terms of a random ``id_dropout`` share of the items at each
step, so the text path is trained to stand on its own, as it must for cold items.

Why it is cheap. The cross-encoder of :mod:`llmrec_lab.models.plm_rater` reads a (history, item)
text pair, so every rating costs a full encoder pass and a CPU affords a few hundred of them.
Here the encoder reads the item's text alone, so one pass serves all of that item's ratings:
each step samples ``items_per_step`` items, encodes their texts once (forward and backward), and
takes the MSE over *all* their training ratings. An epoch costs ``n_items`` encoder passes, not
``n_ratings``: on ML-100k 1,682 instead of 80,000 (48 times fewer), and no rating is left out.
With the encoder frozen it is cheaper still: the text vectors are computed once (and cached on
disk by the text encoder), and training is a linear model over lookup tables. Measured on
ML-100k with one thread on a shared 2-core CPU: a frozen epoch takes 0.2 to 2 seconds, a LoRA
epoch 35 to 60 (``bench/tower_movielens.py``). So a tuned tower is best started from a fitted
frozen one (``fit(ratings, init=frozen)``) and given a few epochs of its own.

The encoder is adapted with the course's methods by
:func:`llmrec_lab.models.tuning_methods.apply_method`, the same call that adapts the
cross-encoder: :class:`TunedText` has the ``encoder``, ``head``, ``method`` and
``method_config`` attributes it edits. ``method="frozen"`` uses :class:`FrozenText` instead,
which holds no encoder at all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from llmrec_lab.config import pick_device, seed_everything
from llmrec_lab.splits import random_split
from llmrec_lab.encoders.text import TextEncoder, mean_pool, resolve_model_path
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import MatrixFactorization, RatingModel, table_rows
from llmrec_lab.models.tuning_methods import (LEARNING_RATES, METHODS, MethodConfig,
                                              apply_method, method_penalty, method_step_hook)

TOWER_METHODS = ("frozen",) + METHODS
INIT_STD = 0.1  # of the user and item ID vectors, as in MatrixFactorization


@dataclass(frozen=True)
class TowerConfig:
    """Everything a :class:`TextTowerRater` fit depends on (checked when built)."""

    method: str = "frozen"  # "frozen", or a method of llmrec_lab.models.tuning_methods
    factors: int = 32  # length of p_u, q_i and the content vector v_i
    hidden: int = 0  # g's hidden width; 0: g is one linear map
    epochs: int = 30
    items_per_step: int = 32  # items whose texts one step encodes; it uses all their ratings
    lr_encoder: float | None = None  # None: tuning_methods.LEARNING_RATES[method]
    lr_head: float = 3e-3
    lr_embeddings: float = 5e-3  # biases and ID vectors
    reg: float = 0.1  # L2 on the bias and ID-vector rows each rating touches, as MF's reg
    weight_decay: float = 5.0  # AdamW's (decoupled) on g: its 384 inputs overfit easily
    encoder_weight_decay: float = 0.01  # AdamW's on the encoder's trainable weights
    id_dropout: float = 0.25  # share of each step's items trained on their text alone
    valid_frac: float = 0.05  # share of the ratings held out for early stopping; 0: none
    patience: int = 3  # epochs without a better validation RMSE before stopping
    max_length: int = 128  # tokens per item text (TextEncoder's default)
    model_name: str | None = None  # any BERT-layout encoder; None: the bundled MiniLM
    method_config: MethodConfig = field(default_factory=MethodConfig)
    cache_dir: str | None = None  # the frozen method's embedding cache; None: the default
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if self.method not in TOWER_METHODS:
            raise ValueError(f"TowerConfig.method={self.method!r}: choose one of "
                             f"{', '.join(TOWER_METHODS)}")
        counts = dict(factors=(1, self.factors), hidden=(0, self.hidden), epochs=(1, self.epochs),
                      items_per_step=(1, self.items_per_step), patience=(1, self.patience),
                      max_length=(2, self.max_length))
        for name, (low, value) in counts.items():
            if not isinstance(value, int) or value < low:
                raise ValueError(f"TowerConfig.{name}={value!r}: must be an integer >= {low}")
        for name in ("lr_head", "lr_embeddings", "lr_encoder"):
            value = getattr(self, name)
            if not (value is None and name == "lr_encoder" or _positive(value)):
                raise ValueError(f"TowerConfig.{name}={value!r}: must be a number > 0")
        for name in ("reg", "weight_decay", "encoder_weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TowerConfig.{name}={getattr(self, name)!r}: must be >= 0")
        for name in ("id_dropout", "valid_frac"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TowerConfig.{name}={getattr(self, name)!r}: must be in [0, 1)")


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def _head(width: int, factors: int, hidden: int) -> nn.Module:
    """g: text vector -> (content bias, content vector), one linear map or two with a GELU."""
    if hidden == 0:
        return nn.Linear(width, 1 + factors)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1 + factors))


class FrozenText(nn.Module):
    """The frozen tower: the catalogue's text vectors, fixed, and the trainable head g."""

    def __init__(self, vectors: np.ndarray, factors: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("vectors", torch.as_tensor(vectors, dtype=torch.float32))
        self.head = _head(self.vectors.shape[1], factors, hidden)
        self.method = "frozen"  # tuning_methods.method_penalty and method_step_hook: no-ops

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """The cached text vectors of the catalogue rows ``rows``."""
        return self.vectors[rows]

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), 1 + factors): g of the cached vectors of the catalogue rows ``rows``."""
        return self.head(self.embed(rows))


class TunedText(nn.Module):
    """The trainable tower: encoder, mean pooling, L2 normalisation, head g.

    At initialisation its text vectors are exactly :class:`TextEncoder`'s, so every method starts
    from the frozen tower's input. ``method`` and ``method_config`` are set by
    :func:`llmrec_lab.models.tuning_methods.apply_method`.
    """

    def __init__(self, texts: list[str], name: str | None, factors: int, hidden: int,
                 max_length: int) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(resolve_model_path(name))
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused by mean pooling; it would never get a gradient
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
        self.head = _head(self.encoder.config.hidden_size, factors, hidden)
        self.texts, self.max_length = texts, max_length
        self.method: str | None = None
        self.method_config: MethodConfig | None = None

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """One encoder pass over the texts of the catalogue rows ``rows``: their text vectors,
        mean-pooled and L2-normalised as :class:`TextEncoder`'s."""
        batch = self.tokenizer([self.texts[r] for r in rows.tolist()], padding=True,
                               truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = batch.to(self.head_device)
        states = self.encoder(**batch).last_hidden_state
        return F.normalize(mean_pool(states, batch["attention_mask"]), dim=-1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), 1 + factors): g of the text vectors of the catalogue rows ``rows``."""
        return self.head(self.embed(rows))

    @property
    def head_device(self) -> torch.device:
        return next(self.head.parameters()).device


class HybridTower(nn.Module):
    """``mu + b_u + b_i + c_i + p_u . (q_i + v_i)`` over user and catalogue rows (module doc)."""

    def __init__(self, text: FrozenText | TunedText, n_users: int, n_items: int, factors: int,
                 mu: float) -> None:
        super().__init__()
        self.text = text
        self.user_bias, self.item_bias = (nn.Parameter(torch.zeros(n)) for n in (n_users, n_items))
        self.user_vec, self.item_vec = (nn.Parameter(torch.randn(n, factors) * INIT_STD)
                                        for n in (n_users, n_items))
        self.register_buffer("mu", torch.tensor(float(mu)))

    def forward(self, users: torch.Tensor, items: torch.Tensor, content: torch.Tensor,
                keep_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and each rating's L2 penalty, one per (user, item, content row) triple.

        ``content`` is the text tower's output for each rating's item; ``keep_id`` (0 or 1 per
        rating) switches the item's ID terms on or off.
        """
        bu, bi = self.user_bias[users], self.item_bias[items] * keep_id
        pu, qi = self.user_vec[users], self.item_vec[items] * keep_id[:, None]
        pred = self.mu + bu + bi + content[:, 0] + (pu * (qi + content[:, 1:])).sum(-1)
        penalty = bu ** 2 + bi ** 2 + (pu ** 2).sum(-1) + (qi ** 2).sum(-1)
        return pred, penalty


def _as_texts(texts: pd.Series | pd.DataFrame) -> pd.Series:
    """Item text by item id, from a Series or an items frame with ``item_id`` and ``text``."""
    if isinstance(texts, pd.DataFrame):
        if not {"item_id", "text"} <= set(texts.columns):
            raise ValueError("texts frame needs columns 'item_id' and 'text'")
        texts = texts.set_index("item_id")["text"]
    if not isinstance(texts, pd.Series) or texts.empty:
        raise ValueError("texts must be a non-empty Series of item texts indexed by item_id")
    if not texts.index.is_unique:
        raise ValueError("texts repeat an item_id; each item needs one text")
    if not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts must all be non-empty strings")
    return texts


class TextTowerRater(RatingModel):
    """The hybrid text-tower rater behind the :class:`RatingModel` interface (module doc).

    ``texts`` is the whole catalogue (cold items included): a Series of item texts indexed by
    item id, or an items frame with ``item_id`` and ``text``. ``fit`` holds out ``valid_frac``
    of the ratings, trains for up to ``epochs`` epochs and keeps the epoch with the best
    validation RMSE; ``history_`` records each epoch: training and validation RMSE, and the
    seconds its training steps took (the catalogue pass that scores the validation ratings is
    not counted). Same ratings, texts and config on a CPU give identical predictions.
    """

    name = "text-tower"

    def __init__(self, texts: pd.Series | pd.DataFrame, config: TowerConfig | None = None) -> None:
        self.texts = _as_texts(texts)
        self.config = config or TowerConfig()

    def fit(self, ratings: pd.DataFrame, init: TextTowerRater | MatrixFactorization | None = None,
            valid: pd.DataFrame | None = None) -> TextTowerRater:
        """Learn from every rating of ``ratings``; return self.

        ``valid`` (ratings, of cold items too) decides early stopping; without it the fit holds
        out ``valid_frac`` of ``ratings`` at random for that. Items of the catalogue without a
        training rating stay cold: text only, no ID terms.

        ``init`` is where training starts, and that start competes in early stopping as epoch
        0, so the fit never validates worse than its start:

        - a :class:`MatrixFactorization` fitted on the same ratings: its biases and vectors
          start the ID terms, and g starts at zero, so epoch 0 *is* that MF and the text has to
          earn its place (``factors`` must equal MF's ``n_factors``);
        - a tower fitted on the same ratings (a frozen one, typically): its ID tables and g.
          Every method's encoder starts as the frozen text encoder (LoRA's update starts at
          zero), so a tuned tower starts where the cheap frozen one ended, and a few of its
          expensive epochs suffice.
        """
        c = self.config
        unknown = sorted(set(ratings.get("item_id", [])) - set(self.texts.index))
        if unknown:
            raise ValueError(f"ratings name item ids without a text: {unknown[:10]}")
        if valid is None and c.valid_frac > 0:
            ratings, valid = random_split(ratings, test_frac=c.valid_frac, seed=c.seed)
        u, i, r = self._index(ratings, items=pd.Index(self.texts.index))
        seed_everything(c.seed)
        self.net_ = self._build().to(pick_device(c.device))
        counts = np.bincount(i, minlength=len(self.items_))
        steps = -(-int((counts > 0).sum()) // c.items_per_step)  # per epoch
        if c.method != "frozen":  # AdaLoRA's rank schedule needs the run's length
            apply_method(self.net_.text, c.method,
                         replace(c.method_config, total_step=steps * c.epochs))
        if isinstance(init, MatrixFactorization):
            self._start_from_mf(init)
        elif init is not None:
            self._start_from(init)
        self._train(u, i, r, counts, valid, score_start=init is not None)
        return self

    def _build(self) -> HybridTower:
        """A fresh network for the indexed users and items, its text tower per ``method``."""
        c, texts = self.config, self.texts.tolist()
        if c.method == "frozen":
            encoder = TextEncoder(c.model_name, c.device, max_length=c.max_length,
                                  cache_dir=c.cache_dir)
            text = FrozenText(encoder.encode(texts), c.factors, c.hidden)
        else:
            text = TunedText(texts, c.model_name, c.factors, c.hidden, c.max_length)
        return HybridTower(text, len(self.users_), len(self.items_), c.factors, self.mu_)

    def _start_from(self, init: TextTowerRater) -> None:
        """Load ``init``'s ID tables and head g, refusing a tower of other ids or shapes."""
        if not (hasattr(init, "net_") and init.users_.equals(self.users_)
                and init.items_.equals(self.items_)):
            raise ValueError("init must be a tower fitted on the same ratings (same users, "
                             "items and valid_frac)")
        ours = self.net_.state_dict()
        state = {k: v for k, v in init.net_.state_dict().items()
                 if k in ours and not k.startswith("text.encoder.")}
        wrong = [k for k, v in state.items() if v.shape != ours[k].shape]
        if wrong:
            raise ValueError(f"init's {', '.join(wrong)} have other shapes; use the same factors "
                             "and hidden")
        self.net_.load_state_dict(state, strict=False)

    @torch.no_grad()
    def _start_from_mf(self, mf: MatrixFactorization) -> None:
        """MF's mu, biases and vectors as the ID terms (zero for ids MF never saw), g at zero."""
        if not hasattr(mf, "P_") or mf.n_factors != self.config.factors:
            raise ValueError(f"init must be a fitted MatrixFactorization with n_factors="
                             f"{self.config.factors} (the tower's factors)")
        net = self.net_
        users, items = table_rows(mf.users_, self.users_), table_rows(mf.items_, self.items_)
        for mine, theirs in ((net.user_bias, mf.bu_[users]), (net.item_bias, mf.bi_[items]),
                             (net.user_vec, mf.P_[users]), (net.item_vec, mf.Q_[items])):
            mine.copy_(torch.as_tensor(theirs, dtype=mine.dtype))
        net.mu.fill_(mf.mu_)
        last = net.text.head if isinstance(net.text.head, nn.Linear) else net.text.head[-1]
        last.weight.zero_()
        last.bias.zero_()

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with one learning rate each for the ID terms, the head g and the encoder."""
        c, net = self.config, self.net_
        ids = [net.user_bias, net.item_bias, net.user_vec, net.item_vec]
        head = list(net.text.head.parameters())
        taken = {id(p) for p in ids + head}
        encoder = [p for p in net.parameters() if p.requires_grad and id(p) not in taken]
        groups = [dict(params=ids, lr=c.lr_embeddings, weight_decay=0.0),
                  dict(params=head, lr=c.lr_head, weight_decay=c.weight_decay)]
        if encoder:
            groups.append(dict(params=encoder, lr=c.lr_encoder or LEARNING_RATES[c.method],
                               weight_decay=c.encoder_weight_decay))
        return torch.optim.AdamW(groups)

    def _train(self, u: np.ndarray, i: np.ndarray, r: np.ndarray, counts: np.ndarray,
               valid: pd.DataFrame | None, score_start: bool = False) -> None:
        """Epochs over the rated items in random order; keep the best validation epoch.

        With ``score_start`` (a tower started from ``init``) the starting point is epoch 0 and
        competes too: a tuned epoch that validates worse than the frozen tower it started from
        does not replace it.
        """
        c, net = self.config, self.net_
        device = net.mu.device
        rng = np.random.default_rng(c.seed)
        by_item = np.argsort(i, kind="stable")  # rating positions grouped by item row
        starts = np.concatenate([[0], np.cumsum(counts)])
        data = [torch.as_tensor(x, device=device) for x in (u, i, r.astype(np.float32))]
        optimizer, step = self._optimizer(), 0
        self.warm_ = counts > 0
        self.history_, best, best_epoch, kept = [], np.inf, 0, None
        checked = None if valid is None else self._catalogue_rows(valid["item_id"])
        if score_start and valid is not None:
            self._export(checked)
            best = self._rmse_on(valid)
            kept = {k: v.detach().clone() for k, v in net.state_dict().items()}
            self.history_.append(dict(epoch=0, train_rmse=None, seconds=0.0, valid_rmse=best))
        for epoch in range(1, c.epochs + 1):
            start, sq_err = time.perf_counter(), 0.0
            net.train()
            order = rng.permutation(np.flatnonzero(self.warm_))
            for rows in (order[k:k + c.items_per_step] for k in range(0, len(order),
                                                                      c.items_per_step)):
                positions = np.concatenate([by_item[starts[k]:starts[k + 1]] for k in rows])
                sq_err += self._step(optimizer, rows, positions, data, rng, step)
                step += 1
            record = dict(epoch=epoch, train_rmse=(sq_err / len(r)) ** 0.5,
                          seconds=time.perf_counter() - start, valid_rmse=None)
            self.history_.append(record)
            if valid is None:
                continue
            self._export(checked)
            record["valid_rmse"] = self._rmse_on(valid)
            if record["valid_rmse"] < best:
                best, best_epoch = record["valid_rmse"], epoch
                kept = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif epoch - best_epoch >= c.patience:
                break
        if kept is not None:
            net.load_state_dict(kept)
        self._export()  # the kept weights, over the whole catalogue: once per fit

    def _step(self, optimizer: torch.optim.Optimizer, rows: np.ndarray, positions: np.ndarray,
              data: list[torch.Tensor], rng: np.random.Generator, step: int) -> float:
        """One optimizer step on the items ``rows`` (catalogue rows) and all their ratings.

        The texts of ``rows`` go through the encoder once; each rating picks its item's output
        by position. Returns the summed squared error, for the epoch's training RMSE.
        """
        c, net = self.config, self.net_
        device = net.mu.device
        u, i, r = (x[torch.as_tensor(positions, device=device)] for x in data)
        rows_t = torch.as_tensor(rows, device=device)
        slot = torch.empty(len(self.items_), dtype=torch.long, device=device)
        slot[rows_t] = torch.arange(len(rows), device=device)  # item row -> place in the batch
        keep_id = torch.as_tensor(rng.random(len(rows)) >= c.id_dropout, dtype=torch.float32,
                                  device=device)
        content = net.text(rows_t)
        pred, penalty = net(u, i, content[slot[i]], keep_id[slot[i]])
        err = pred - r
        loss = (err ** 2 + c.reg * penalty).mean()
        extra = method_penalty(net.text)  # AdaLoRA's orthogonality term; None for the rest
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method_step_hook(net.text, step)
        return float((err.detach() ** 2).sum())

    def _catalogue_rows(self, item_ids: pd.Series) -> np.ndarray:
        """The catalogue rows of the distinct known ids among ``item_ids``."""
        rows = self.items_.get_indexer(pd.unique(np.asarray(item_ids)))
        return np.sort(rows[rows >= 0])

    @torch.no_grad()
    def _export(self, rows: np.ndarray | None = None, chunk: int = 256) -> None:
        """Copy the parameters to NumPy for :meth:`predict`: one encoder pass over the texts of
        the catalogue ``rows`` (None: all) for the content terms, NaN for the other rows; cold
        items get zero ID terms; unknown ids the extra zero row.

        Validating an epoch needs the content of the validation items only. On the cold split
        that is a tenth of the catalogue, and encoding all of it after every epoch would cost a
        tuned tower about as much as its training does."""
        net = self.net_
        was_training = net.training
        net.eval()
        wanted = torch.arange(len(self.items_)) if rows is None else torch.as_tensor(rows)
        content = torch.full((len(self.items_), 1 + self.config.factors), torch.nan,
                             dtype=torch.float64)
        content[wanted] = torch.cat([net.text(part.to(net.mu.device))
                                     for part in wanted.split(chunk)]).double().cpu()
        net.train(was_training)

        def table(t: torch.Tensor) -> np.ndarray:
            t = t.detach().double().cpu().numpy()
            return np.concatenate([t, np.zeros((1, *t.shape[1:]))])

        warm = np.append(self.warm_, False)
        self.bu_, self.P_ = table(net.user_bias), table(net.user_vec)
        self.bi_ = np.where(warm, table(net.item_bias), 0.0)
        self.Q_ = np.where(warm[:, None], table(net.item_vec), 0.0)
        self.cb_, self.V_ = table(content[:, 0]), table(content[:, 1:])

    def content_bias(self, item_ids: np.ndarray) -> np.ndarray:
        """``c_i``, what the fitted tower reads from each item's text as its appeal to everyone:
        on a cold item, all the item-side evidence a prediction has beyond the user's terms."""
        rows = self.items_.get_indexer(np.asarray(item_ids))
        if (rows < 0).any():
            raise ValueError("content_bias: some item ids are not in the catalogue")
        return self.cb_[rows]

    @torch.no_grad()
    def text_vectors(self, item_ids: np.ndarray, chunk: int = 256) -> np.ndarray:
        """The (tuned) encoder's text vector of each item, before g: what another model can
        read as the item's text features once the tower has been tuned on the ratings."""
        rows = self.items_.get_indexer(np.asarray(item_ids))
        if (rows < 0).any():
            raise ValueError("text_vectors: some item ids are not in the catalogue")
        text, was_training = self.net_.text, self.net_.training
        self.net_.eval()
        parts = torch.as_tensor(rows, device=self.net_.mu.device).split(chunk)
        vectors = torch.cat([text.embed(part) for part in parts]).float().cpu().numpy()
        self.net_.train(was_training)
        return vectors

    def _rmse_on(self, ratings: pd.DataFrame) -> float:
        """RMSE of the current (clipped) predictions on a held-out frame."""
        return rmse(ratings["rating"], self.predict(ratings["user_id"], ratings["item_id"]))

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        dot = np.einsum("...f,...f->...", self.P_[u], self.Q_[i] + self.V_[i])
        return self.mu_ + self.bu_[u] + self.bi_[i] + self.cb_[i] + dot
