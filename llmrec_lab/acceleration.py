"""Where and how fast the training loop (:mod:`llmrec_lab.train`) runs: the device, data parallel
across processes, and ``torch.compile``. A learner can skip this file: on one CPU or GPU without
compile each function hands back what it was given, or the obvious device.

- data parallel with plain ``torch.distributed`` (gloo on CPU, nccl on GPU): when a process group
  is initialised, each process takes its slice of every global batch of
  ``batch_size * world_size`` texts (:func:`~llmrec_lab.text_batches.plan_steps`) and DDP
  averages the gradients (:func:`data_parallel`).
- compile: static shapes, one graph per bucket length (:mod:`llmrec_lab.text_batches`).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llmrec_lab.config import pick_device


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process when a process group is initialised, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def training_device(prefer: str | None, rank: int, world: int) -> torch.device:
    """``pick_device(prefer)``, with a CUDA index (``LOCAL_RANK`` under DDP) made current."""
    device = pick_device(prefer)
    if device.type == "cuda" and device.index is None:  # so data.to() sees it is there
        local = (int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
                 if world > 1 else torch.cuda.current_device())
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def data_parallel(model: nn.Module, device: torch.device,
                  world: int) -> DistributedDataParallel | None:
    """``model`` under DDP when there are several processes (``world > 1``), else ``None``.

    DDP averages the gradients across processes during ``backward``; ``no_sync()`` skips that
    on all micro-batches of a step but the last.
    """
    if world == 1:
        return None
    return DistributedDataParallel(model,
                                   device_ids=[device.index] if device.type == "cuda" else None)


def compiled(model: nn.Module, mode: bool | str,
             bucket_lengths: Sequence[int] | None) -> nn.Module:
    """``torch.compile(model)`` with static shapes if ``mode`` (``True``: the default mode, a
    str: that mode), else ``model``."""
    if not mode:
        return model
    # One static graph per (batch size, bucket length): allow a full and a last, smaller
    # batch per bucket before dynamo gives up and falls back to eager.
    limit = 2 * len(bucket_lengths or ()) + 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    return torch.compile(model, mode="default" if mode is True else mode, dynamic=False)
