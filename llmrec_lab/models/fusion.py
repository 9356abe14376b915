"""Cross-modal fusion: the user's representation attends over the candidate item's modalities.

The source's fusion step, ``h_u^i = Attention(x_u, i)``, with the user as the query and the
item's modalities as the tokens:

- **the item** ``i`` is a set of modality tokens ``k_a``: its text embedding (MiniLM), its image
  embedding (a torchvision backbone), its KG vector ``Concat(e_i, r_i)`` (pykeen) and its
  item-ID embedding, each projected to ``dim``;
- **the user in each modality** ``p_a``: for content, the user's *history profile*, the mean of
  the (frozen) embeddings of the items they rated, weighted by the rating minus their mean
  rating (liked items pull towards, disliked items push away), projected like the items; for
  the ID, a user embedding. The query ``x_u`` is the sum of these parts;
- **values** ``v_a = p_a * k_a``: how well the item matches the user in that modality;
- **attention**: ``h = A * sum_a softmax_a(W_q x_u . kappa_a / sqrt(dim)) v_a`` over the ``A``
  tokens, where the key ``kappa_a`` is learned per modality and per presence, so the weights are
  each user's trust in each of the item's modalities (equal weights make ``h`` a plain sum);
  the rating is ``mu + b_u + sum_a c_a(z_a) + b_i + w . h``.

Values that are matches, not the item tokens themselves, and keys that do not read the item's
content: both came from measurements. The first version (item tokens as values, content keys)
did no better than text alone on cold items and was hurt by the image (Chapter 3.2).

Two alternatives replace the attention step: ``concat`` (one linear map of all values side by
side, the same for every user) and ``gating`` (each value scaled by its own sigmoid gate, which
reads the user and the token's key; the gates need not sum to one).

Missing modalities are explicit. An item without an image, an item never rated in training (no
ID embedding worth the name: a cold item), a user without a history or an unknown user: each
absent part is replaced by a learned "missing" vector of its own. Training drops each part at
random with probability ``modality_dropout``, so those vectors are trained and the model learns
to do without any one modality. The embeddings are frozen and computed once (and cached on disk
by the encoders), so training is a small network over lookup tables: seconds on a CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from llmrec_lab.config import one_thread, pick_device
from llmrec_lab.world import World
from llmrec_lab.metrics import rmse
from llmrec_lab.models.baselines import RatingModel

CONTENT = ("text", "image", "kg")
MODALITIES = CONTENT + ("id",)
FUSIONS = ("attention", "concat", "gating")


@dataclass
class ItemFeatures:
    """Frozen content embeddings of a catalogue: one ``(n_items, d)`` array per modality.

    Row ``k`` belongs to ``item_ids[k]``. A row of NaN marks a modality the item lacks (a
    product without a photo, say). ``sources`` says what produced each array.
    """

    item_ids: np.ndarray
    content: dict[str, np.ndarray]
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids)
        unknown = set(self.content) - set(CONTENT)
        if unknown:
            raise ValueError(f"unknown content modality {sorted(unknown)}; use {CONTENT}")
        for name, array in self.content.items():
            if array.ndim != 2 or len(array) != len(self.item_ids):
                raise ValueError(f"{name} features have shape {array.shape}; expected "
                                 f"({len(self.item_ids)}, d)")

    def present(self, modality: str) -> np.ndarray:
        """Which items have this modality (no NaN in their row)."""
        return ~np.isnan(self.content[modality]).any(axis=1)

    def without(self, modality: str, item_ids: Sequence[int]) -> "ItemFeatures":
        """A copy in which the given items lack ``modality``."""
        array = self.content[modality].astype(np.float32, copy=True)
        array[pd.Index(self.item_ids).get_indexer(np.asarray(item_ids))] = np.nan
        return ItemFeatures(self.item_ids, {**self.content, modality: array}, dict(self.sources))


def world_item_features(world: World, text_encoder=None, image_encoder=None,
                        image_size: int = 64, modalities: Sequence[str] = ("text", "image"),
                        kg=None) -> ItemFeatures:
    """Text embeddings of the item descriptions, image embeddings of the rendered pictures and,
    given a fitted :class:`~llmrec_lab.kg.embed.KGEmbedding` ``kg``, the source's KG block
    ``Concat(e_i, r_i)`` (the item's entity embedding and the mean of its neighbours').

    Defaults: :class:`~llmrec_lab.encoders.text.TextEncoder` (MiniLM) and
    :class:`~llmrec_lab.encoders.image.ImageEncoder` (ResNet-18, ImageNet weights if they can
    be loaded, else seeded random weights); ``sources`` records which. Only the content
    ``modalities`` asked for are computed.
    """
    from llmrec_lab.world.images import render_item_images
    from llmrec_lab.encoders.image import ImageEncoder
    from llmrec_lab.encoders.text import TextEncoder

    items = world.items.sort_values("item_id")
    content, sources = {}, {}
    if "text" in modalities:
        text_encoder = text_encoder or TextEncoder()
        content["text"] = text_encoder.encode(items["text"].tolist())
        sources["text"] = text_encoder.name
    if "image" in modalities:
        image_encoder = image_encoder or ImageEncoder()
        pictures = render_item_images(world, image_size)[items["item_id"].to_numpy()]
        content["image"] = image_encoder.encode(pictures)
        sources["image"] = f"{image_encoder.arch}, {image_encoder.weights_used}"
    if "kg" in modalities:
        if kg is None:
            raise ValueError("the kg modality needs a fitted KG embedding: pass kg=train_kge(...)")
        from llmrec_lab.models.kg_rater import kg_features

        content["kg"] = kg_features(kg, items["item_id"].to_numpy())
        sources["kg"] = f"{kg.config.model} on {len(kg.triples)} triples"
    return ItemFeatures(items["item_id"].to_numpy(), content, sources)


def reduce_content(x: np.ndarray, k: int | None) -> np.ndarray:
    """Standardise each column, keep the top ``k`` principal components (whitened), scale to
    unit mean norm. Unsupervised and catalogue-wide: a few hundred items cannot fit a projection
    from 384 or 512 dimensions without overfitting, but 16 components keep what varies most.
    ``k=None`` keeps every standardised column.
    """
    z = x.astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-6)
    if k is not None:
        if k > min(z.shape):
            raise ValueError(f"content_dim={k} exceeds the features' rank bound {min(z.shape)}")
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        z = z @ vt[:k].T
        z = z / (z.std(0) + 1e-6)
    return z / np.sqrt(z.shape[1])


class FusionNet(nn.Module):
    """The network: per-modality match tokens, a user query, a fusion step and a linear head.

    For each content modality ``a`` the item token is ``k_a = P_a z_a`` and the user's profile
    in the same space ``p_a = Q_a hist_a``; the value the fusion step sees is their match
    ``v_a = p_a * k_a`` (elementwise). The ID modality's value is ``U_u * E_i``, as in matrix
    factorisation. The rating offset is ``b_u + sum_a c_a(z_a) + b_i + w . h``, where ``c_a``
    reads an item bias from its content (quality words, say) and ``h`` fuses the values.
    """

    def __init__(self, n_users: int, n_items: int, content_dims: dict[str, int], use_id: bool,
                 fusion: str = "attention", dim: int = 32) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.content = list(content_dims)
        self.tokens = self.content + (["id"] if use_id else [])
        if not self.tokens:
            raise ValueError("need at least one modality")
        self.fusion, self.dim = fusion, dim
        n_tok = len(self.tokens)
        self.proj = nn.ModuleDict({a: nn.Linear(d, dim) for a, d in content_dims.items()})
        self.hist_proj = nn.ModuleDict({a: nn.Linear(d, dim, bias=False)
                                        for a, d in content_dims.items()})
        self.content_bias = nn.ModuleDict({a: nn.Linear(d, 1) for a, d in content_dims.items()})
        self.item_id = nn.Embedding(n_items, dim) if use_id else None
        self.item_bias = nn.Embedding(n_items, 1) if use_id else None
        self.user_id = nn.Embedding(n_users, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.missing_token = nn.Parameter(torch.zeros(n_tok, dim))
        self.missing_hist = nn.Parameter(torch.zeros(len(self.content), dim))
        self.missing_user = nn.Parameter(torch.zeros(dim))
        for emb in (self.item_id, self.user_id):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        for bias in (self.user_bias, self.item_bias):
            if bias is not None:
                nn.init.zeros_(bias.weight)
        # one key per (modality, present or missing): the weights answer "how much does this
        # user trust each of the item's modalities". Keys read from the item's content made
        # cold-item RMSE worse (they let the weights chase item noise), so they do not.
        self.key = nn.Parameter(0.1 * torch.randn(n_tok, 2, dim))
        self.query = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.query.weight)  # training starts from equal weights
        if fusion == "gating":
            self.gate = nn.Linear(dim, dim)
        if fusion == "concat":
            self.concat = nn.Linear(n_tok * dim, dim, bias=False)
        self.head = nn.Linear(dim, 1, bias=False)
        nn.init.ones_(self.head.weight)  # with equal weights, w . h starts as a sum of matches

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted rating offsets from ``mu`` and the fusion weights (attention or gates)."""
        item_has, values, bias = batch["item_has"], [], []
        user_id = torch.where(batch["user_has"][:, None], self.user_id(batch["user"]),
                              self.missing_user)
        q = user_id
        for k, a in enumerate(self.content):
            z, has = batch[f"item_{a}"], item_has[:, k:k + 1]
            item = torch.where(has, self.proj[a](z), self.missing_token[k])
            user = torch.where(batch["hist_has"][:, k:k + 1], self.hist_proj[a](batch[f"hist_{a}"]),
                               self.missing_hist[k])
            values.append(user * item)
            bias.append(self.content_bias[a](z).squeeze(-1) * has.squeeze(-1))
            q = q + user
        if self.item_id is not None:
            has = item_has[:, -1:]
            item = torch.where(has, self.item_id(batch["item"]), self.missing_token[-1])
            values.append(user_id * item)
            bias.append(self.item_bias(batch["item"]).squeeze(-1) * has.squeeze(-1))
        values = torch.stack(values, dim=1)  # (B, A, dim)
        keys = torch.where(item_has[..., None], self.key[:, 1], self.key[:, 0])  # (B, A, dim)
        n_tok = len(self.tokens)
        if self.fusion == "attention":
            scores = torch.einsum("bd,bad->ba", self.query(q), keys) / math.sqrt(self.dim)
            weights = torch.softmax(scores, dim=1)
            h = n_tok * torch.einsum("ba,bad->bd", weights, values)  # equal weights: a sum
        elif self.fusion == "gating":
            weights = torch.sigmoid(torch.einsum("bd,bad->ba", self.gate(q), keys))
            h = 2 * torch.einsum("ba,bad->bd", weights, values)  # gates start near 1/2
        else:
            weights = torch.ones(values.shape[:2], device=values.device)
            h = self.concat(values.flatten(1))
        user_bias = self.user_bias(batch["user"]).squeeze(-1) * batch["user_has"]
        return user_bias + torch.stack(bias, 1).sum(1) + self.head(h).squeeze(-1), weights

    def penalty(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Squared norms of the ID rows a batch touches (as in MF): rare ids are shrunk most."""
        user = batch["user"]
        rows = (self.user_id(user) ** 2).sum(-1) + self.user_bias(user).squeeze(-1) ** 2
        if self.item_id is not None:
            item = batch["item"]
            rows = rows + (self.item_id(item) ** 2).sum(-1) + self.item_bias(item).squeeze(-1) ** 2
        return rows.mean()


class FusionRater(RatingModel):
    """Rating model over any subset of ``("text", "image", "kg", "id")`` with one fusion step
    (by default every modality ``features`` holds, and the ID).

    ``fit(ratings, valid)`` trains with early stopping on ``valid`` (batches of about 1/16 of
    the ratings unless ``batch_size`` is given); ``history_`` has each epoch's ``train_rmse``
    (the data's error over the epoch's batches, penalty left out) and ``valid_rmse`` (of the
    clipped predictions, as reported). ``predict`` and ``score``
    work as for the baselines, and also for items never rated in training (cold items), as
    long as ``features`` covers them. :meth:`attention_weights` returns each (user, item)'s
    weights over :attr:`tokens_`.
    """

    name = "fusion"

    def __init__(self, features: ItemFeatures, modalities: Sequence[str] | None = None,
                 fusion: str = "attention", dim: int = 32, content_dim: int | None = 16,
                 epochs: int = 30, lr: float = 1e-2, reg: float = 0.3, weight_decay: float = 1e-4,
                 batch_size: int | None = None,
                 modality_dropout: float = 0.25, patience: int = 3, seed: int = 0,
                 device: str | None = None) -> None:
        modalities = (tuple(features.content) + ("id",) if modalities is None
                      else tuple(modalities))
        bad = set(modalities) - set(MODALITIES)
        if bad or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got "
                             f"{modalities}")
        missing = [a for a in modalities if a in CONTENT and a not in features.content]
        if missing:
            raise ValueError(f"features lack modality {missing}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.features, self.fusion, self.dim, self.content_dim = features, fusion, dim, content_dim
        self.content_ = [a for a in CONTENT if a in modalities]
        self.use_id = "id" in modalities
        self.tokens_ = self.content_ + (["id"] if self.use_id else [])
        self.epochs, self.lr, self.reg, self.weight_decay = epochs, lr, reg, weight_decay
        self.batch_size, self.modality_dropout = batch_size, modality_dropout
        self.patience = patience
        self.seed, self.device = seed, device

    # ----------------------------------------------------------------------------- fitting
    def fit(self, ratings: pd.DataFrame, valid: pd.DataFrame | None = None) -> "FusionRater":
        with one_thread():  # a small network over lookup tables
            return self._fit(ratings, valid)

    def _fit(self, ratings: pd.DataFrame, valid: pd.DataFrame | None) -> "FusionRater":
        u, i, r = self._index(ratings, items=pd.Index(self.features.item_ids))  # cold items too
        if (i == len(self.items_)).any():
            raise ValueError("ratings name items that the features do not cover")
        self.device_ = pick_device(self.device)
        self._prepare_tables(u, i, r)
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net_ = FusionNet(len(self.users_), len(self.items_),
                                  {a: self.item_content_[a].shape[1] for a in self.content_},
                                  self.use_id, self.fusion, self.dim).to(self.device_)
        self.batch_size_ = self.batch_size or int(np.clip(len(r) // 16, 512, 4096))
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr,
                                weight_decay=self.weight_decay, foreach=True)
        data = [torch.as_tensor(x, device=self.device_) for x in (u, i, r - self.mu_)]
        self.history_, best, best_epoch, kept = [], np.inf, 0, None
        for epoch in range(1, self.epochs + 1):
            train_rmse = self._run_epoch(opt, data, gen)
            valid_rmse = None if valid is None else rmse(
                valid["rating"], self.predict(valid["user_id"], valid["item_id"]))
            self.history_.append(dict(epoch=epoch, train_rmse=train_rmse, valid_rmse=valid_rmse))
            if valid_rmse is None:
                continue
            if valid_rmse < best:
                best, best_epoch = valid_rmse, epoch
                kept = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
            elif epoch - best_epoch >= self.patience:
                break
        if kept is not None:
            self.net_.load_state_dict(kept)
        self.net_.eval()
        return self

    def _prepare_tables(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        """Reduced item content, which items have an ID, and the users' history sums.

        The history profile of user ``u`` for modality ``a`` is ``S_u / A_u`` with
        ``S_u = sum_j w_uj z_j`` and ``A_u = sum_j |w_uj|`` over rated items that have ``a``,
        ``w_uj`` the rating minus the user's mean. Training examples subtract their own term
        (leave-one-out), so no rating is predicted from a profile that contains it.
        """
        dev, n_items = self.device_, len(self.items_)
        self.item_content_, self.item_has_content_ = {}, {}
        for a in self.content_:
            has = self.features.present(a)
            z = np.zeros((n_items, self.content_dim if self.content_dim else
                          self.features.content[a].shape[1]))
            z[has] = reduce_content(self.features.content[a][has], self.content_dim)
            z = np.vstack([z, np.zeros((1, z.shape[1]))])  # unknown item: nothing
            self.item_content_[a] = torch.as_tensor(z, dtype=torch.float32, device=dev)
            self.item_has_content_[a] = torch.as_tensor(np.append(has, False), device=dev)
        seen = np.zeros(n_items + 1, dtype=bool)
        seen[i] = True
        self.item_has_id_ = torch.as_tensor(seen, device=dev)
        n_users = len(self.users_)
        user_mean = np.bincount(u, r, n_users) / np.maximum(np.bincount(u, minlength=n_users), 1)
        w = r - user_mean[u]
        self.weight_ = torch.as_tensor(w, dtype=torch.float32, device=dev)  # per training row
        self.hist_sum_, self.hist_abs_ = {}, {}
        for a in self.content_:
            z = self.item_content_[a].cpu().numpy().astype(np.float64)
            has = self.item_has_content_[a].cpu().numpy()
            s = np.zeros((n_users + 1, z.shape[1]))
            np.add.at(s, u, w[:, None] * z[i] * has[i, None])
            total = np.bincount(u, np.abs(w) * has[i], n_users + 1)
            self.hist_sum_[a] = torch.as_tensor(s, dtype=torch.float32, device=dev)
            self.hist_abs_[a] = torch.as_tensor(total, dtype=torch.float32, device=dev)

    def _batch(self, u: torch.Tensor, i: torch.Tensor, own_weight: torch.Tensor | None = None,
               drop: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Gather one batch's inputs; ``own_weight`` removes the rated item from the history."""
        n_users = len(self.users_)
        user_has = u < n_users
        item_has = [self.item_has_content_[a][i] for a in self.content_]
        if self.use_id:
            item_has.append(self.item_has_id_[i])
        batch = {"user": torch.clamp(u, max=n_users - 1), "user_has": user_has,
                 "item": torch.clamp(i, max=len(self.items_) - 1),
                 "item_has": torch.stack(item_has, dim=1)}
        hist_has = []
        for a in self.content_:
            batch[f"item_{a}"] = self.item_content_[a][i]
            s, total = self.hist_sum_[a][u], self.hist_abs_[a][u]
            if own_weight is not None:
                own = own_weight * self.item_has_content_[a][i]
                s = s - own[:, None] * batch[f"item_{a}"]
                total = total - own.abs()
            has = total > 1e-6
            batch[f"hist_{a}"] = s / torch.where(has, total, 1.0)[:, None]
            hist_has.append(has & user_has)
        if hist_has:
            batch["hist_has"] = torch.stack(hist_has, dim=1)
        if drop is not None and self.modality_dropout > 0:
            p = self.modality_dropout
            for key in [k for k in ("item_has", "hist_has") if k in batch]:
                keep = torch.rand(batch[key].shape, generator=drop) >= p
                batch[key] = batch[key] & keep.to(u.device)
            keep_user = torch.rand(len(u), generator=drop) >= p / 2
            batch["user_has"] = batch["user_has"] & keep_user.to(u.device)
        return batch

    def _run_epoch(self, opt: torch.optim.Optimizer, data: list[torch.Tensor],
                   gen: torch.Generator) -> float:
        u, i, y = data
        self.net_.train()
        order = torch.randperm(len(y), generator=gen).to(u.device)
        sq_err = 0.0
        for rows in order.split(self.batch_size_):
            batch = self._batch(u[rows], i[rows], self.weight_[rows], drop=gen)
            pred, _ = self.net_(batch)
            mse = ((pred - y[rows].float()) ** 2).mean()
            loss = mse + self.reg * self.net_.penalty(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sq_err += float(mse.detach()) * len(rows)  # the data's error; the penalty is no error
        self.net_.eval()
        return (sq_err / len(y)) ** 0.5

    # -------------------------------------------------------------------------- predicting
    def _forward_all(self, u: np.ndarray, i: np.ndarray,
                     chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        shape = np.broadcast_shapes(u.shape, i.shape)
        u, i = (np.array(np.broadcast_to(x, shape)).ravel() for x in (u, i))
        preds, weights = [], []
        with torch.inference_mode():
            for start in range(0, len(u), chunk):
                ub = torch.as_tensor(u[start:start + chunk], device=self.device_)
                ib = torch.as_tensor(i[start:start + chunk], device=self.device_)
                p, w = self.net_(self._batch(ub, ib))
                preds.append(p.cpu().numpy())
                weights.append(w.cpu().numpy())
        n_tok = len(self.tokens_)
        pred = np.concatenate(preds) if preds else np.empty(0)
        weight = np.concatenate(weights) if weights else np.empty((0, n_tok))
        return (self.mu_ + pred.astype(np.float64)).reshape(shape), weight.reshape(*shape, n_tok)

    def _score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return self._forward_all(u, i)[0]

    def attention_weights(self, user_ids: np.ndarray, item_ids: np.ndarray) -> pd.DataFrame:
        """Each pair's fusion weights over :attr:`tokens_` (attention: sums to 1; gating: gates)."""
        if self.fusion == "concat":
            raise ValueError("concat fusion has no per-pair weights; use attention or gating")
        u, i = self._encode(np.ravel(user_ids), np.ravel(item_ids))
        return pd.DataFrame(self._forward_all(u, i)[1], columns=self.tokens_)

