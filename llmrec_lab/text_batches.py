"""The data side of the trainer (:mod:`llmrec_lab.train`): text pairs tokenised once, cut into
batches of similar length.

- data: texts are tokenised once (fast tokenizer) into one matrix that moves to the training
  device; a batch is gathered there by index, so the loop does no per-step host work. A generic
  input pipeline (a DataLoader collating Python lists each step) costs a short-text workload
  most of its speed (see :mod:`llmrec_lab.train` for the measurements).
- length buckets: indices are shuffled, sorted by length within chunks of ``sort_chunk`` batches
  and cut into batches (:func:`plan_batches`), so a batch holds texts of similar length; each
  batch is padded to the smallest of the bucket lengths that fits it (:func:`pad_length`), which
  keeps padding small and gives ``torch.compile`` a handful of fixed shapes (``dynamic=True`` on
  varying lengths recompiled itself down to 37 samples/s in DESIGN's measurements).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

Batch = tuple[torch.Tensor, int]  # (row indices on the data's device, padded length)


class TextPairDataset:
    """Tokenised text pairs and their ratings, as tensors that can live on the training device.

    Rows are stored padded to the longest text only so they fit one matrix; a batch is cut back
    to its own bucket length by :meth:`batch`. Optional ``features`` (one row of numbers per
    pair) travel with the batch to the model's ``features`` argument.
    """

    def __init__(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                 lengths: torch.Tensor, labels: torch.Tensor,
                 features: torch.Tensor | None = None) -> None:
        rows = {"input_ids": input_ids.shape[0], "token_type_ids": token_type_ids.shape[0],
                "lengths": len(lengths), "labels": len(labels)}
        if features is not None:
            rows["features"] = features.shape[0]
        if len(set(rows.values())) > 1:
            raise ValueError(f"every field needs one row per pair, got rows {rows}")
        self.input_ids, self.token_type_ids = input_ids, token_type_ids
        self.lengths, self.labels = lengths, labels.float()
        self.features = None if features is None else features.float()
        self.lengths_cpu = lengths.cpu().numpy()  # batches are planned on the host, without syncs

    @classmethod
    def from_texts(cls, tokenizer: PreTrainedTokenizerBase, left: Sequence[str],
                   right: Sequence[str] | None, labels: Sequence[float],
                   max_length: int = 128, features: np.ndarray | None = None) -> TextPairDataset:
        """Tokenise every pair once (truncated to ``max_length`` tokens, not padded).

        ``features``, one row of numbers per pair, reach the model as its ``features`` argument
        (the KG vectors of Chapter 3.3, for example).
        """
        n = len(left)
        if n == 0 or len(labels) != n or (right is not None and len(right) != n):
            raise ValueError(f"got {n} left texts, "
                             f"{'no' if right is None else len(right)} right texts and "
                             f"{len(labels)} labels; they must match and not be empty")
        enc = tokenizer(list(left), None if right is None else list(right), truncation=True,
                        max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=True)
        rows, types = enc["input_ids"], enc["token_type_ids"]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n)
        ids = np.full((n, lengths.max()), tokenizer.pad_token_id, dtype=np.int32)
        tt = np.zeros(ids.shape, dtype=np.int8)
        for i, length in enumerate(lengths):
            ids[i, :length], tt[i, :length] = rows[i], types[i]
        return cls(torch.from_numpy(ids), torch.from_numpy(tt), torch.from_numpy(lengths),
                   torch.as_tensor(np.asarray(labels, dtype=np.float32)),
                   None if features is None else torch.as_tensor(features, dtype=torch.float32))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def width(self) -> int:
        """The longest text, in tokens."""
        return self.input_ids.shape[1]

    def to(self, device: torch.device) -> TextPairDataset:
        """The same data on ``device`` (itself if it is already there)."""
        if self.input_ids.device == device:
            return self
        return TextPairDataset(self.input_ids.to(device), self.token_type_ids.to(device),
                               self.lengths.to(device), self.labels.to(device),
                               None if self.features is None else self.features.to(device))

    def batch(self, idx: torch.Tensor, pad_to: int) -> dict[str, torch.Tensor]:
        """Gather rows ``idx`` (on the data's device) and cut them to ``pad_to`` tokens."""
        positions = torch.arange(pad_to, device=idx.device)
        batch = {"input_ids": self.input_ids[idx, :pad_to].long(),
                 "attention_mask": (positions < self.lengths[idx, None]).long(),
                 "token_type_ids": self.token_type_ids[idx, :pad_to].long(),
                 "labels": self.labels[idx]}
        if self.features is not None:
            batch["features"] = self.features[idx]
        return batch


def plan_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                 sort_chunk: int = 50) -> list[np.ndarray]:
    """Cut row indices into batches of texts of similar length.

    With ``rng``: shuffle, sort by length within chunks of ``sort_chunk`` batches, cut, and
    shuffle the batches (``sort_chunk=1`` gives plain random batches). Without: sort everything,
    which is what evaluation wants.
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order, chunk, batches = rng.permutation(len(lengths)), batch_size * sort_chunk, []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def plan_steps(data: TextPairDataset, rng: np.random.Generator, batch_size: int,
               sort_chunk: int, buckets: Sequence[int] | None, grad_accum: int = 1,
               rank: int = 0, world: int = 1) -> list[list[Batch]]:
    """One pass over ``data`` as optimizer steps: groups of ``grad_accum`` micro-batches.

    Under data parallel (``world`` processes), process ``rank`` takes its slice of every global
    batch of ``batch_size * world`` texts.
    """
    batches = [np.array_split(b, world)[rank]
               for b in plan_batches(data.lengths_cpu, batch_size * world, rng, sort_chunk)
               if len(b) >= world]  # every process needs at least one text
    micro = device_batches(data, batches, buckets)
    return [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]


def pad_length(longest: int, buckets: Sequence[int] | None, width: int) -> int:
    """The smallest bucket that fits ``longest`` tokens (else ``longest``), capped at ``width``."""
    fits = [b for b in buckets or () if b >= longest]
    return min(min(fits) if fits else longest, width)


def device_batches(data: TextPairDataset, batches: list[np.ndarray],
                   buckets: Sequence[int] | None) -> list[Batch]:
    """Each batch of row indices as a :data:`Batch`: the indices on the data's device, and the
    bucket length it is padded to.

    All batches' indices move in one host-to-device copy: a copy per step could stall the GPU.
    """
    device = data.input_ids.device
    on_device = torch.from_numpy(np.concatenate(batches)).to(device).split(
        [len(b) for b in batches])
    return [(index, pad_length(int(data.lengths_cpu[b].max()), buckets, data.width))
            for index, b in zip(on_device, batches)]
