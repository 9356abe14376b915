"""The trainer's optimizer (:mod:`llmrec_lab.train`) and what its training state costs.

:func:`adamw` builds AdamW with weight decay on matrices only and, optionally, a learning rate of
its own for a new head. :func:`state_bytes` counts the memory a model's training state takes
under it, exactly from the tensors: every parameter, plus a gradient and AdamW's two moments for
each trainable one. That is the cost Chapter 3.1 compares between fine-tuning methods.
"""
from __future__ import annotations

import torch
from torch import nn


def adamw(model: nn.Module, lr: float, weight_decay: float, head_lr: float | None = None,
          fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases and LayerNorm weights); ``head_lr``,
    if given, for the parameters named ``head.*``: a new head may learn faster."""
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            head = head_lr is not None and name.startswith("head.")
            key = (head_lr if head else lr, weight_decay if p.ndim >= 2 else 0.0)
            groups.setdefault(key, []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": group_lr, "weight_decay": wd}
                              for (group_lr, wd), ps in groups.items()], lr=lr, fused=fused)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the training state: parameters, plus gradient and two AdamW moments if trainable.

    Activations are not in it: they depend on batch and sequence length, not on the method.
    """
    return sum(p.numel() * p.element_size() * (4 if p.requires_grad else 1)
               for p in model.parameters())
