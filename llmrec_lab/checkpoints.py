"""Checkpoints of a :class:`~llmrec_lab.train.Trainer` that resume exactly.

A checkpoint is a folder ``step-<n>/`` under ``TrainConfig.checkpoint_dir`` holding:

- ``model.safetensors``: the current weights, and ``best.safetensors``: the weights of the best
  validation RMSE so far (the ones ``fit()`` restores at the end);
- ``state.pt``: everything else a resumed run needs to take the same steps: the trainer's
  progress (step, epoch, position in the epoch's batches, early-stopping state, history), the
  optimizer, scheduler and loss scaler, and the RNG states of every process. These are nested
  Python objects, so they go through ``torch.save``, and are loaded back only with
  ``weights_only=True`` (plain types and tensors, no code).

The data order needs no saving: it depends only on (seed, epoch), and the position says where in
the epoch to go on. A folder is written into a temporary directory and renamed into place
(:func:`llmrec_lab.io.atomic_folder`), so an interruption never leaves half a checkpoint, and
older checkpoints are removed once the new one is in place.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, load_model, save_file, save_model

from llmrec_lab.io import atomic_folder, claim_folder, remove_folder

# The trainer's attributes that say how far it got: saved, and set back on resuming.
PROGRESS = ("step", "epoch", "position", "best_rmse", "bad_evals", "stopped", "history")


def save_checkpoint(trainer) -> Path | None:
    """Write ``trainer``'s (a :class:`~llmrec_lab.train.Trainer`) ``step-<n>/`` atomically
    (:func:`llmrec_lab.io.atomic_folder`), drop older ones.

    The checkpoint folder must be absent, empty or ours (:func:`llmrec_lab.io.claim_folder`).
    Every process must call it: the RNG states of all processes are gathered to rank 0.
    Returns the directory on rank 0, ``None`` elsewhere.
    """
    rng = rng_state()
    rngs = [rng] * trainer.world
    if trainer.world > 1:
        dist.all_gather_object(rngs, rng)
    if not trainer.is_main:
        return None
    root = claim_folder(trainer.config.checkpoint_dir, "trainer checkpoints")
    final = root / f"step-{trainer.step:08d}"
    with atomic_folder(final, "trainer checkpoint") as tmp:
        save_model(trainer.model, str(tmp / "model.safetensors"))
        if trainer.best_state is not None:
            save_file(trainer.best_state, str(tmp / "best.safetensors"))
        state = {key: getattr(trainer, key) for key in PROGRESS}
        state.update(batch_size=trainer.config.batch_size, world_size=trainer.world,
                     optimizer=trainer.optimizer.state_dict(),
                     scheduler=trainer.scheduler.state_dict(),
                     scaler=trainer.scaler.state_dict(), rng=rngs)
        torch.save(state, tmp / "state.pt")
    for old in root.glob("step-*"):
        if old != final:
            remove_folder(old)
    return final


def resume(trainer) -> Path | None:
    """Load the latest checkpoint under ``checkpoint_dir`` into ``trainer``; return its folder,
    or ``None`` if there is none. Refuses one saved with another batch size or process count,
    whose data order would not replay."""
    found = sorted(Path(trainer.config.checkpoint_dir).glob("step-*"))
    if not found:
        return None
    path = found[-1]
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    saved = (state["batch_size"], state["world_size"])
    if saved != (trainer.config.batch_size, trainer.world):
        raise ValueError(f"{path} was saved with batch_size={saved[0]} on {saved[1]} "
                         f"process(es); this run has {trainer.config.batch_size} on "
                         f"{trainer.world}, so the data order would not replay")
    load_model(trainer.model, str(path / "model.safetensors"), device=str(trainer.device))
    if (path / "best.safetensors").exists():
        trainer.best_state = load_file(str(path / "best.safetensors"))
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    for key in PROGRESS:
        setattr(trainer, key, state[key])
    set_rng_state(state["rng"][trainer.rank])
    return path


def rng_state() -> dict:
    """The states of Python's, NumPy's, torch's and CUDA's global RNGs, in types that
    ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (name, keys.tolist(), pos, has_gauss, gauss),  # plain types: weights_only
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore the global RNGs from :func:`rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
