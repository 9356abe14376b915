"""A small trainer for (text pair -> rating) regression with a pretrained encoder.

``transformers.Trainer`` could run this, but it hides every step the course wants to show, and
its generic input pipeline (a DataLoader collating Python lists each step) costs a short-text
workload most of its speed: DESIGN.md measured the source's loop at 428 samples/s for bert-base
and a tuned loop at 5,743 on one H200. So this file writes by hand what the ecosystem lacks and
keeps each piece short:

- data: texts are tokenised once (fast tokenizer) into one matrix that moves to the training
  device; a batch is gathered there by index, so the loop does no per-step host work.
- length buckets: indices are shuffled, sorted by length within chunks of ``sort_chunk`` batches
  and cut into batches, so a batch holds texts of similar length; each batch is padded to the
  smallest of ``bucket_lengths`` that fits it, which keeps padding small and gives
  ``torch.compile`` a handful of fixed shapes (``dynamic=True`` on varying lengths recompiled
  itself down to 37 samples/s in DESIGN's measurements).
- the step: autocast (bf16, or fp16 with loss scaling on GPUs without bf16), gradient
  accumulation, clipping, AdamW (fused on CUDA) and a linear warmup-then-decay schedule. The loss
  stays on the device; the host reads it every ``log_every`` steps, which is also when a NaN/inf
  loss is caught and reported with the step it happened at.
- evaluation, early stopping on validation RMSE (the best weights are restored at the end), and
  checkpoints that resume exactly: model and best weights as safetensors, optimizer, scheduler,
  loss scaler, RNG states and data position with ``torch.save`` (loaded only with
  ``weights_only=True``), written into a temporary directory and renamed into place.
- data parallel with plain ``torch.distributed`` (gloo on CPU, nccl on GPU): when a process group
  is initialised, each process takes its slice of every global batch of
  ``batch_size * world_size`` texts and DDP averages the gradients.
- memory: :func:`state_bytes` counts the training state of a model exactly from its tensors
  (every parameter, plus a gradient and AdamW's two moments for each trainable one), the cost
  Chapter 3.1 compares between fine-tuning methods.

Steps are counted from 0: ``step_hook(model, step)`` gets the index of the optimizer step just
taken, as PEFT's AdaLoRA ``update_and_allocate`` expects; it runs before the gradients are cleared.
``penalty(model)``, if given, returns a regulariser added to every micro-batch's MSE (or None):
AdaLoRA's orthogonality penalty, which peft adds only to a loss the model computes itself. The
logged training loss is the objective, penalty included.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from llmrec_lab.config import pick_device, pick_dtype, seed_everything
from llmrec_lab.io import atomic_folder, claim_folder, remove_folder
from llmrec_lab.metrics import mae, rmse

StepHook = Callable[[nn.Module, int], None]
Penalty = Callable[[nn.Module], torch.Tensor | None]
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


def pad_length(longest: int, buckets: Sequence[int] | None, width: int) -> int:
    """The smallest bucket that fits ``longest`` tokens (else ``longest``), capped at ``width``."""
    fits = [b for b in buckets or () if b >= longest]
    return min(min(fits) if fits else longest, width)


@dataclass
class TrainConfig:
    """Everything a run needs besides the model and the data."""

    epochs: int = 3
    batch_size: int = 64  # texts per process and micro-batch; DDP's global batch is x world size
    lr: float = 5e-5
    head_lr: float | None = None  # for parameters named head.*: a new head may learn faster
    weight_decay: float = 0.01  # on matrices only, not on biases and LayerNorm weights
    warmup_ratio: float = 0.1  # fraction of the steps with a linear warmup, then linear decay to 0
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0
    amp: bool = True  # autocast on CUDA: bf16, or fp16 with loss scaling where bf16 is missing
    compile: bool | str = False  # torch.compile, static shapes (a graph per bucket); a str: mode
    bucket_lengths: tuple[int, ...] | None = (32, 48, 64, 96, 128)  # None: pad to batch's longest
    sort_chunk: int = 50  # batches per sorting chunk: larger pads less but mixes lengths less
    patience: int | None = None  # evaluations without a better validation RMSE before stopping
    clip: tuple[float, float] | None = None  # rating scale: evaluation clips predictions to it,
    # so early stopping reads the RMSE that is reported
    eval_every: int | None = None  # steps between evaluations and checkpoints; None: each epoch
    eval_batch_size: int = 256
    checkpoint_dir: str | None = None  # fit() resumes from the latest checkpoint found here
    log_dir: str | None = None  # TensorBoard event files
    log_every: int = 50  # steps between host reads of the loss (logging and the NaN check)
    seed: int = 0
    device: str | None = None  # default: pick_device(), or cuda:LOCAL_RANK under DDP


class Trainer:
    """Fits ``model(input_ids, attention_mask, token_type_ids) -> (B,)`` to ratings by MSE,
    plus ``penalty(model)`` where given."""

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: TextPairDataset,
                 valid_data: TextPairDataset | None = None,
                 step_hook: StepHook | None = None, penalty: Penalty | None = None) -> None:
        self.config, self.step_hook, self.penalty = config, step_hook, penalty
        distributed = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        self.device = self._device()
        seed_everything(config.seed + self.rank)  # dropout differs across processes
        self.model = model.to(self.device)
        self.train_data = train_data.to(self.device)
        self.valid_data = valid_data.to(self.device) if valid_data is not None else None
        self.dtype = pick_dtype(self.device) if config.amp else torch.float32
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.optimizer = self._optimizer()
        self.steps_per_epoch = len(self.plan_epoch(0))
        total = self.steps_per_epoch * config.epochs
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, round(config.warmup_ratio * total), total)
        self.ddp = (DistributedDataParallel(self.model, device_ids=self._device_ids())
                    if self.world > 1 else None)
        self.train_model = self._compiled(self.ddp or self.model)
        self.step = self.epoch = self.position = self.bad_evals = 0
        self.best_rmse, self.stopped, self.history = math.inf, False, []
        self._best_state: dict[str, torch.Tensor] | None = None
        self._losses: list[torch.Tensor] = []  # per-step losses not yet read by the host
        self._loss_sum, self._loss_count = 0.0, 0
        self.writer: SummaryWriter | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- setup -------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        device = pick_device(self.config.device)
        if device.type == "cuda" and device.index is None:  # so data.to() sees it is there
            local = (int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
                     if self.world > 1 else torch.cuda.current_device())
            device = torch.device("cuda", local)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def _device_ids(self) -> list[int] | None:
        return [self.device.index] if self.device.type == "cuda" else None

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW; weight decay on matrices only; ``head_lr`` for the head's parameters."""
        cfg, groups = self.config, {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                head = cfg.head_lr is not None and name.startswith("head.")
                key = (cfg.head_lr if head else cfg.lr, cfg.weight_decay if p.ndim >= 2 else 0.0)
                groups.setdefault(key, []).append(p)
        return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd}
                                  for (lr, wd), ps in groups.items()],
                                 lr=cfg.lr, fused=self.device.type == "cuda")

    def _compiled(self, model: nn.Module) -> nn.Module:
        if not self.config.compile:
            return model
        # One static graph per (batch size, bucket length): allow a full and a last, smaller
        # batch per bucket before dynamo gives up and falls back to eager.
        limit = 2 * len(self.config.bucket_lengths or ()) + 2
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        mode = "default" if self.config.compile is True else self.config.compile
        return torch.compile(model, mode=mode, dynamic=False)

    def plan_epoch(self, epoch: int) -> list[list[Batch]]:
        """This process's optimizer steps for ``epoch``: groups of ``grad_accum`` micro-batches.

        The order depends only on (seed, epoch), so a resumed run replays it exactly.
        """
        cfg, data = self.config, self.train_data
        rng = np.random.default_rng([cfg.seed, epoch])
        batches = [np.array_split(b, self.world)[self.rank]
                   for b in plan_batches(data.lengths_cpu, cfg.batch_size * self.world, rng,
                                         cfg.sort_chunk)
                   if len(b) >= self.world]  # every process needs at least one text
        micro = list(zip(_on_device(batches, data.input_ids.device),
                         _pad_lengths(batches, data, cfg.bucket_lengths)))
        return [micro[i:i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]

    # --- training ----------------------------------------------------------------------------

    def fit(self) -> list[dict]:
        """Train, evaluating and checkpointing as configured; return one record per evaluation."""
        if self.config.checkpoint_dir:
            self._resume()
        self.model.train()
        if self.config.log_dir and self.is_main:  # TensorBoard adds files; it removes none
            self.writer = SummaryWriter(claim_folder(self.config.log_dir, "TensorBoard logs"))
        # Only rank 0 shows a bar. Passed explicitly, disable=False would override TQDM_DISABLE=1
        # (make book's way of keeping bars out of the pages), so rank 0 passes nothing.
        quiet = {} if self.is_main else {"disable": True}
        bar = tqdm(total=self.steps_per_epoch * self.config.epochs, initial=self.step,
                   desc="train", **quiet)
        try:
            self._loop(bar)
        finally:
            bar.close()
            if self.writer:
                self.writer.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.history

    def _loop(self, bar: tqdm) -> None:
        cfg = self.config
        while self.epoch < cfg.epochs and not self.stopped:
            steps = self.plan_epoch(self.epoch)
            while self.position < len(steps) and not self.stopped:
                self._train_step(steps[self.position])
                self.position, self.step = self.position + 1, self.step + 1
                bar.update()
                if len(self._losses) >= cfg.log_every:
                    bar.set_postfix(loss=f"{self._flush_losses():.4f}")
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._eval_point()
            if self.position == len(steps):
                self.epoch, self.position = self.epoch + 1, 0
                if not cfg.eval_every:
                    self._eval_point()
        if not self.history or self.history[-1]["step"] != self.step:
            self._eval_point()

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)

    def objective(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch (with ``labels``): MSE, plus the penalty if any.

        The penalty is computed outside autocast, in the parameters' own precision.
        """
        batch = dict(batch)
        labels = batch.pop("labels")
        with self._autocast():
            loss = F.mse_loss(self.train_model(**batch).float(), labels)
        extra = self.penalty(self.model) if self.penalty else None
        return loss if extra is None else loss + extra

    def _train_step(self, group: list[Batch]) -> None:
        """One optimizer step over ``group``'s micro-batches; the loss stays on the device."""
        total = torch.zeros((), device=self.device)
        for i, (index, pad_to) in enumerate(group):
            batch = self.train_data.batch(index, pad_to)
            last = i == len(group) - 1
            with self.ddp.no_sync() if self.ddp and not last else contextlib.nullcontext():
                loss = self.objective(batch) / len(group)
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if self.config.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.step_hook:
            self.step_hook(self.model, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self._losses.append(total)

    def _flush_losses(self) -> float:
        """Read the pending losses (one host sync), fail on NaN/inf, log; return their mean."""
        if not self._losses:
            return math.nan
        values = torch.stack(self._losses).cpu().tolist()
        first = self.step - len(values)
        self._losses.clear()
        for k, value in enumerate(values):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training loss is {value} at step {first + k} (counting from 0, epoch "
                    f"{self.epoch}); lower the learning rate or check the data for NaN/inf")
            if self.writer:
                self.writer.add_scalar("train/loss", value, first + k)
        self._loss_sum += sum(values)
        self._loss_count += len(values)
        return sum(values) / len(values)

    def _eval_point(self) -> None:
        """Record the training loss, evaluate, update early stopping, checkpoint."""
        self._flush_losses()
        record = {"step": self.step, "epoch": self.epoch,
                  "lr": self.scheduler.get_last_lr()[0],
                  "train_loss": self._loss_sum / max(self._loss_count, 1)}
        self._loss_sum, self._loss_count = 0.0, 0
        if self.valid_data is not None:
            metrics = self.evaluate(self.valid_data)
            record.update(valid_rmse=metrics["rmse"], valid_mae=metrics["mae"])
            self._early_stopping(metrics["rmse"])
        self.history.append(record)
        if self.writer:
            for key in ("lr", "valid_rmse", "valid_mae"):
                if key in record:
                    self.writer.add_scalar(key.replace("_", "/", 1), record[key], self.step)
        if self.config.checkpoint_dir:
            self.save_checkpoint()

    def _early_stopping(self, valid_rmse: float) -> None:
        if valid_rmse < self.best_rmse:
            self.best_rmse, self.bad_evals = valid_rmse, 0
            self._best_state = {k: v.detach().to("cpu", copy=True)
                                for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1
            patience = self.config.patience
            self.stopped = patience is not None and self.bad_evals >= patience

    # --- evaluation --------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, data: TextPairDataset) -> np.ndarray:
        """Predicted ratings for every row of ``data``, in its order (uncompiled, eval mode)."""
        data, cfg = data.to(self.device), self.config
        was_training = self.model.training
        self.model.eval()
        out = torch.empty(len(data), device=self.device)
        batches = plan_batches(data.lengths_cpu, cfg.eval_batch_size, None)
        for idx, pad_to in zip(_on_device(batches, self.device),
                               _pad_lengths(batches, data, cfg.bucket_lengths)):
            batch = data.batch(idx, pad_to)
            batch.pop("labels")
            with self._autocast():
                out[idx] = self.model(**batch).float()
        self.model.train(was_training)
        return out.cpu().numpy()

    def evaluate(self, data: TextPairDataset) -> dict[str, float]:
        """RMSE and MAE of the predictions on ``data`` (every process evaluates all of it)."""
        truth, pred = data.labels.cpu().numpy(), self.predict(data)
        if self.config.clip is not None:
            pred = np.clip(pred, *self.config.clip)
        return {"rmse": rmse(truth, pred), "mae": mae(truth, pred)}

    # --- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Write ``step-<n>/`` atomically (:func:`llmrec_lab.io.atomic_folder`), drop older ones.

        The checkpoint folder must be absent, empty or ours (:func:`llmrec_lab.io.claim_folder`).
        Every process must call it: the RNG states of all processes are gathered to rank 0.
        Returns the directory on rank 0, ``None`` elsewhere.
        """
        rng = self._rng_state()
        rngs = [rng] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng)
        if not self.is_main:
            return None
        root = claim_folder(self.config.checkpoint_dir, "trainer checkpoints")
        final = root / f"step-{self.step:08d}"
        with atomic_folder(final, "trainer checkpoint") as tmp:
            save_model(self.model, str(tmp / "model.safetensors"))
            if self._best_state is not None:
                save_file(self._best_state, str(tmp / "best.safetensors"))
            # optimizer, scheduler and RNG states are nested Python objects: torch.save, loaded
            # back with weights_only=True
            torch.save(self._state(rngs), tmp / "state.pt")
        for old in root.glob("step-*"):
            if old != final:
                remove_folder(old)
        return final

    def _state(self, rngs: list[dict]) -> dict:
        return {"step": self.step, "epoch": self.epoch, "position": self.position,
                "best_rmse": self.best_rmse, "bad_evals": self.bad_evals,
                "stopped": self.stopped, "history": self.history,
                "batch_size": self.config.batch_size, "world_size": self.world,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs}

    def _resume(self) -> None:
        found = sorted(Path(self.config.checkpoint_dir).glob("step-*"))
        if not found:
            return
        path = found[-1]
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        saved = (state["batch_size"], state["world_size"])
        if saved != (self.config.batch_size, self.world):
            raise ValueError(f"{path} was saved with batch_size={saved[0]} on {saved[1]} "
                             f"process(es); this run has {self.config.batch_size} on "
                             f"{self.world}, so the data order would not replay")
        load_model(self.model, str(path / "model.safetensors"), device=str(self.device))
        if (path / "best.safetensors").exists():
            self._best_state = load_file(str(path / "best.safetensors"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for key in ("step", "epoch", "position", "best_rmse", "bad_evals", "stopped", "history"):
            setattr(self, key, state[key])
        _set_rng_state(state["rng"][self.rank])

    def _rng_state(self) -> dict:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"python": random.getstate(),
                "numpy": (name, keys.tolist(), pos, has_gauss, gauss),  # plain types: weights_only
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def state_bytes(model: nn.Module) -> int:
    """Bytes of the training state: parameters, plus gradient and two AdamW moments if trainable."""
    total = 0
    for p in model.parameters():
        size = p.numel() * p.element_size()
        total += size * (4 if p.requires_grad else 1)
    return total


def _on_device(batches: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
    """All batches' indices in one host-to-device copy: a copy per step could stall the GPU."""
    return torch.from_numpy(np.concatenate(batches)).to(device).split([len(b) for b in batches])


def _pad_lengths(batches: list[np.ndarray], data: TextPairDataset,
                 buckets: Sequence[int] | None) -> list[int]:
    return [pad_length(int(data.lengths_cpu[b].max()), buckets, data.width) for b in batches]


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
