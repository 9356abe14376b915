"""The PLM rating model of source §3.2.1: a pretrained encoder reads a user and an item, a head
predicts the rating.

A user is what they rated: :func:`render_example` writes their recent ratings as text (the first
segment of a BERT text pair) and the candidate item's description as the second segment, so the
encoder's attention can compare the two token by token. :class:`PLMRater` mean-pools the encoder
states, as all-MiniLM-L6-v2 was trained to be used, and a linear head maps the pooled vector to a
rating, trained with MSE against the true rating (the source's objective).

Leakage is the classic trap here: the history of a rating must only hold what the user had rated
before it. :func:`build_examples` enforces that by timestamp.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from llmrec_lab.encoders.text import canonical_model_name, mean_pool, resolve_model_path

SCALE = 5  # the top of the 1..5 star scale of both the worlds and MovieLens
Pair = tuple[str, str]


def _describe(text: str, rating: float) -> str:
    """One rated item as words a PLM already understands: a verb for the sign, stars for size."""
    verb = "liked" if rating >= 4 else "disliked" if rating <= 2 else "found ok"
    return f"{verb}: {text} ({rating:g}/{SCALE})"


def render_example(history: list[tuple[str, float]], candidate: str, max_history: int) -> Pair:
    """The text pair for one prediction: (the user's last ``max_history`` ratings, the candidate).

    ``history`` holds (item text, rating), most recent last; the oldest are dropped first. A user
    with no history gets a segment that says so, rather than an empty one the encoder never saw.
    """
    recent = history[-max_history:] if max_history > 0 else []
    profile = "; ".join(_describe(text, rating) for text, rating in recent)
    return profile or "no ratings yet", candidate


def _item_texts(items: pd.DataFrame) -> pd.Series:
    """Item text by item id, refusing duplicated ids (a rating would have two descriptions)."""
    texts = items.set_index("item_id")["text"]
    if not texts.index.is_unique:
        raise ValueError("items frame repeats an item_id")
    return texts


def _text_of(texts: pd.Series, item_ids: np.ndarray) -> list[str]:
    missing = sorted(set(item_ids) - set(texts.index))
    if missing:
        raise KeyError(f"ratings name item ids absent from the items frame: {missing[:10]}")
    return texts.loc[item_ids].tolist()


def build_examples(ratings: pd.DataFrame, items: pd.DataFrame, max_history: int,
                   context: pd.DataFrame | None = None) -> tuple[list[Pair], np.ndarray]:
    """One text pair and target per row of ``ratings``, in row order.

    The history of a row is the same user's ratings in ``context`` (default: ``ratings`` itself)
    with a timestamp strictly before the row's: never the row itself, never anything later, and
    nothing from the same timestamp, whose order is unknown. For test rows pass all ratings as
    ``context``: earlier test ratings are then history too, as they would be when serving.
    """
    context = ratings if context is None else context
    texts = _item_texts(items)
    ordered = context.sort_values(["user_id", "timestamp"], kind="stable")
    rated = list(zip(_text_of(texts, ordered["item_id"].to_numpy()),  # one lookup for all
                     ordered["rating"].astype(float)))
    users, stamps = ordered["user_id"].to_numpy(), ordered["timestamp"].to_numpy()
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1  # where each user's run of rows starts
    by_user = {users[a]: (stamps[a:b], rated[a:b])
               for a, b in zip([0, *cuts], [*cuts, len(users)]) if b > a}
    candidates = _text_of(texts, ratings["item_id"].to_numpy())
    pairs = []
    for user, ts, candidate in zip(ratings["user_id"], ratings["timestamp"], candidates):
        stamps, history = by_user.get(user, (np.empty(0), []))
        before = int(np.searchsorted(stamps, ts, side="left"))
        pairs.append(render_example(history[max(0, before - max_history):before], candidate,
                                    max_history))
    return pairs, ratings["rating"].to_numpy(np.float32)


def load_tokenizer(name: str | None = None) -> PreTrainedTokenizerBase:
    """The encoder's tokenizer, set to cut over-long histories from the left (the oldest part)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    tokenizer.truncation_side = "left"
    return tokenizer


def tokenize(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair],
             max_length: int = 256) -> BatchEncoding:
    """A padded batch; only the history is truncated, so the candidate is always read whole."""
    return tokenizer([p[0] for p in pairs], [p[1] for p in pairs], truncation="only_first",
                     max_length=max_length, padding=True, return_tensors="pt")


class PLMRater(nn.Module):
    """Pretrained encoder, mean pooling, linear head; predicts ratings offset by the training mean.

    ``name`` is any BERT-family model (default: the bundled MiniLM). Pass the training mean as
    ``rating_mean`` (a buffer, saved with the model): the first predictions are then sensible and
    the head only has to learn deviations from it. With ``n_features > 0`` the head reads
    ``Concat(h, features)``, the pooled vector and that many numbers per pair: the source's
    ``h_kg = Concat(h, e_i, r_i)`` when the numbers are the item's KG vectors (Chapter 3.3).
    """

    def __init__(self, name: str | None = None, rating_mean: float = 0.0,
                 dropout: float = 0.1, n_features: int = 0) -> None:
        super().__init__()
        self.model_name = canonical_model_name(name)
        self.encoder = AutoModel.from_pretrained(resolve_model_path(name))
        if getattr(self.encoder, "pooler", None) is not None:
            # Mean pooling replaces BERT's [CLS] pooler. Kept, its weights would count as
            # trainable under full fine-tuning yet never receive a gradient.
            self.encoder.pooler = None
        self.tokenizer = load_tokenizer(name)
        self.n_features = n_features
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + n_features, 1))
        # The features start at weight 0: the untrained rater is the text-only one, and features
        # the training cannot use add no noise. (At the default init, 64 unit-variance KG columns
        # would add noise of sd sqrt(64 / (3 * 448)) = 0.22 stars to every first prediction.)
        nn.init.zeros_(self.head[1].weight[:, hidden:])
        self.register_buffer("rating_mean", torch.tensor(float(rating_mean)))
        # these two are set by llmrec_lab.models.tuning_methods.apply_method
        self.method: str | None = None
        self.method_config: object | None = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) predicted ratings for a tokenized batch of text pairs (and their features)."""
        given = 0 if features is None else features.shape[-1]
        if given != self.n_features:
            raise ValueError(f"this rater's head reads {self.n_features} features per pair, "
                             f"got {given}")
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        pooled = mean_pool(states, attention_mask)
        if features is not None:
            pooled = torch.cat([pooled, features.to(pooled.dtype)], dim=-1)
        return self.head(pooled).squeeze(-1) + self.rating_mean


def predict(model: PLMRater, pairs: Sequence[Pair], batch_size: int = 64,
            max_length: int = 256, features: np.ndarray | None = None) -> np.ndarray:
    """Predicted ratings for text pairs (with a row of ``features`` each, if the head reads
    them), in eval mode (no dropout), in order."""
    was_training = model.training
    model.eval()
    device = model.rating_mean.device
    out = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            batch = dict(tokenize(model.tokenizer, pairs[start:start + batch_size], max_length))
            if features is not None:
                batch["features"] = torch.as_tensor(features[start:start + batch_size])
            out.append(model(**{k: v.to(device) for k, v in batch.items()}).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)
