"""Profiles, device and precision choice, and seeding.

Every notebook runs at three sizes. The library, not the notebook, decides which: a notebook
calls :func:`get_profile` once and passes the profile on, so its visible code is the same on a
CI runner, a laptop and a Colab GPU.

- ``ci``: seconds to a few minutes on 2 CPU cores; the numbers are small but the claims hold.
- ``cpu``: meaningful results on a laptop CPU.
- ``gpu``: full size, for a Colab T4 up to an H100.
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

PROFILE_ENV = "LLMREC_PROFILE"


@dataclass(frozen=True)
class Profile:
    """How big a run is: world sizes and training budgets."""

    name: str
    n_users: int  # users in a synthetic world
    n_items: int  # items in a synthetic world
    n_days: int  # days of logged interactions
    mf_epochs: int  # epochs for the matrix-factorisation baseline
    encode_batch: int  # texts per forward pass when encoding
    finetune_train: int  # Chapter 3.1: training pairs per fine-tuning run
    finetune_eval: int  # Chapter 3.1: pairs in each evaluation sample (probe, valid, test)
    finetune_epochs: int  # Chapter 3.1: epochs per fine-tuning run
    max_history: int  # past ratings written into a PLM rater's text pair


PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", n_users=300, n_items=120, n_days=40, mf_epochs=30, encode_batch=64,
                  finetune_train=96, finetune_eval=48, finetune_epochs=2, max_history=3),
    "cpu": Profile("cpu", n_users=2000, n_items=600, n_days=90, mf_epochs=40, encode_batch=64,
                   finetune_train=300, finetune_eval=150, finetune_epochs=2, max_history=5),
    "gpu": Profile("gpu", n_users=20000, n_items=4000, n_days=120, mf_epochs=40, encode_batch=512,
                   finetune_train=50000, finetune_eval=5000, finetune_epochs=3, max_history=10),
}


def default_profile_name() -> str:
    """The profile the hardware suggests: ``gpu`` when CUDA is present, else ``cpu``."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile, else ``$LLMREC_PROFILE``, else the hardware's default."""
    name = name or os.environ.get(PROFILE_ENV) or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (from {PROFILE_ENV} or argument); "
                         f"choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA if present, then Apple's MPS, else CPU; ``prefer`` overrides."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype worth using: bf16 where the GPU supports it, fp16 on older GPUs.

    On CPU we stay in fp32: bf16 autocast on 2 laptop cores is slower, not faster.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch, and return a NumPy generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a block on one CPU thread, for small networks (thousands of parameters, batches of a
    few hundred rows): their threads only wait on each other, and when other processes share
    the cores the waiting explodes (one fusion fit: 25 s on two threads beside another busy
    process, 1.7 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
