"""Profiles, device and precision choice, seeding, and the checking of user-set parameters.

Every notebook runs at three sizes. The library, not the notebook, decides which: a notebook
calls :func:`get_profile` once and passes the profile on, so its visible code is the same on a
CI runner, a laptop and a Colab GPU.

- ``ci``: seconds to a few minutes on 2 CPU cores; the numbers are small but the claims hold.
- ``cpu``: meaningful results on a laptop CPU.
- ``gpu``: full size, for a Colab T4 up to an H100.

Parameters that come from outside (``--set KEY=VALUE``, a saved ``config.json``, a notebook's
keyword) are checked where they enter, against a :class:`Range` or :class:`Choice` kept in the
dataclass field's metadata (:func:`param`, :func:`check_fields`). A bad value raises
:class:`ParameterError`, whose one-line message names the parameter, the value and what is
allowed, before any work starts.
"""
from __future__ import annotations

import math
import numbers
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import numpy as np
import torch

PROFILE_ENV = "LLMREC_PROFILE"


class ParameterError(ValueError):
    """A parameter is unknown or its value is outside what the code can honour.

    The message is one line naming the parameter, the value and the allowed range, so a command
    can print it as it is.
    """


def _shown(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short, always on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Range:
    """The numbers a parameter accepts: integers or finite reals between two bounds.

    ``low_open`` makes the lower bound strict (a standard deviation must be > 0).
    ``high=None`` leaves the top open.
    """

    kind: type  # int or float
    low: float
    high: float | None = None
    low_open: bool = False

    def describe(self) -> str:
        """The allowed values in words, e.g. ``an integer in 1..10000``."""
        if self.kind is int:
            return (f"an integer >= {self.low}" if self.high is None
                    else f"an integer in {self.low}..{self.high}")
        if self.high is None:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a finite number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the right type and lies in range (bools are not numbers here)."""
        if isinstance(value, bool) or not isinstance(
                value, numbers.Integral if self.kind is int else numbers.Real):
            return False
        if self.kind is float:
            try:  # an int too large for a float is as unusable as inf
                value = float(value)
            except OverflowError:
                return False
            if not math.isfinite(value):
                return False
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def normalise(self, value: Any) -> int | float:
        """The accepted value as a plain Python int or float (numpy scalars included); -0.0
        becomes 0.0, which numpy's samplers accept as a scale."""
        return self.kind(value) + 0

    def parse(self, text: str) -> int | float:
        """Read a value from text; text that is no number of the kind is returned unchanged,
        so :meth:`accepts` refuses it with the usual message."""
        try:
            return self.kind(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Choice:
    """The strings a parameter accepts."""

    values: tuple[str, ...]

    def describe(self) -> str:
        return f"one of {', '.join(self.values)}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def normalise(self, value: Any) -> str:
        return value

    def parse(self, text: str) -> str:
        return text


Spec = Range | Choice


def param(default: Any, spec: Spec) -> Any:
    """A dataclass field with a default and the :class:`Range` or :class:`Choice` it must meet."""
    return field(default=default, metadata={"spec": spec})


def checked_fields(cls: type) -> dict[str, Spec]:
    """The fields of a dataclass declared with :func:`param`, by name, with their specs."""
    return {f.name: f.metadata["spec"] for f in fields(cls) if "spec" in f.metadata}


def check_value(what: str, name: str, value: Any, spec: Spec) -> int | float | str:
    """``value`` normalised, or :class:`ParameterError` naming ``what name``, value and range."""
    if not spec.accepts(value):
        raise ParameterError(f"{what} {name}={_shown(value)} is not allowed: "
                             f"use {spec.describe()}")
    return spec.normalise(value)


def check_fields(obj: Any, what: str) -> None:
    """Check and normalise every :func:`param` field of a frozen dataclass instance in place."""
    for name, spec in checked_fields(type(obj)).items():
        object.__setattr__(obj, name, check_value(what, name, getattr(obj, name), spec))


def check_names(cls: type, names: Any, what: str) -> None:
    """Refuse names that are not :func:`param` fields of ``cls``, listing the known ones."""
    known = checked_fields(cls)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ParameterError(f"unknown {what}(s) {', '.join(map(_shown, unknown))}; "
                             f"known: {', '.join(known)}")


def parse_setting(cls: type, pair: str, what: str) -> tuple[str, int | float | str]:
    """``KEY=VALUE`` text as a checked ``(name, value)`` for a field of ``cls``."""
    name, sep, text = pair.partition("=")
    if not sep:
        raise ParameterError(f"{what} setting {_shown(pair)} is not KEY=VALUE")
    check_names(cls, [name], what)
    spec = checked_fields(cls)[name]
    return name, check_value(what, name, spec.parse(text.strip()), spec)


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
                   finetune_train=160, finetune_eval=100, finetune_epochs=2, max_history=3),
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
