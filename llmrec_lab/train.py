"""The training loop: fit ``model(input_ids, attention_mask, token_type_ids) -> (B,)`` to ratings.

``transformers.Trainer`` could run this, but it hides every step the course wants to show, and
its generic input pipeline (a DataLoader collating Python lists each step) costs a short-text
workload most of its speed: DESIGN.md measured the source's loop at 428 samples/s for bert-base
and a tuned loop at 5,743 on one H200. So the course writes by hand what the ecosystem lacks and
keeps each piece short. Read this file in order, as you would nanoGPT's ``train.py``:

1. :class:`TrainConfig`: every setting of a run, with its default.
2. ``Trainer.__init__``: the device, the seed, AdamW (:func:`llmrec_lab.optimizer.adamw`, fused
   on CUDA), a linear warmup-then-decay schedule, and the model wrapped for DDP or
   ``torch.compile`` if asked (:mod:`llmrec_lab.acceleration`, which a learner can skip).
3. :meth:`Trainer.fit`: resume from the latest checkpoint if any (:mod:`llmrec_lab.checkpoints`),
   then epochs of optimizer steps. :meth:`~Trainer.plan_epoch` gives an epoch's batches, texts
   of similar length together, in an order that depends only on (seed, epoch)
   (:mod:`llmrec_lab.text_batches`).
4. :meth:`Trainer.train_step`: autocast (bf16, or fp16 with loss scaling on GPUs without bf16),
   gradient accumulation, clipping, the optimizer and the schedule. The loss stays on the device;
   the host reads it every ``log_every`` steps, which is also when a NaN/inf loss is caught and
   reported with the step it happened at.
5. :meth:`Trainer.evaluation_point`: every ``eval_every`` steps (or each epoch): the mean
   training loss, validation RMSE and MAE, early stopping, the ``on_evaluate`` callback and a
   checkpoint. At the end ``fit`` restores the weights of the best validation RMSE.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from llmrec_lab.acceleration import compiled, data_parallel, process_group, training_device
from llmrec_lab.checkpoints import resume, save_checkpoint
from llmrec_lab.config import pick_dtype, seed_everything
from llmrec_lab.io import claim_folder
from llmrec_lab.metrics import mae, rmse
from llmrec_lab.optimizer import adamw
from llmrec_lab.text_batches import (Batch, TextPairDataset, device_batches, plan_batches,
                                     plan_steps)

StepHook = Callable[[nn.Module, int], None]
Penalty = Callable[[nn.Module], torch.Tensor | None]
OnEvaluate = Callable[["Trainer", dict, np.ndarray | None], None]


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
    """Fits ``model`` to ratings by MSE, plus ``penalty(model)`` where given.

    Hooks, all optional. ``step_hook(model, step)`` gets the index (from 0) of the optimizer step
    just taken, as PEFT's AdaLoRA ``update_and_allocate`` expects; it runs before the gradients
    are cleared. ``penalty(model)`` returns a regulariser added to every micro-batch's MSE (or
    None): AdaLoRA's orthogonality penalty, which peft adds only to a loss the model computes
    itself; the logged training loss is the objective, penalty included.
    ``on_evaluate(trainer, record, valid_pred)`` runs at each evaluation point with the record
    about to join ``history`` (add what you measure to it, e.g. a ``train_rmse``) and the
    validation predictions (None without validation data); ``trainer.improved`` says whether
    these weights are, so far, the ones ``fit`` keeps. ``eval_seconds`` sums the time spent in
    evaluation points, callbacks included, for callers that time the training alone.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: TextPairDataset,
                 valid_data: TextPairDataset | None = None,
                 step_hook: StepHook | None = None, penalty: Penalty | None = None,
                 on_evaluate: OnEvaluate | None = None) -> None:
        self.config, self.step_hook, self.penalty = config, step_hook, penalty
        self.on_evaluate = on_evaluate
        self.rank, self.world = process_group()
        self.device = training_device(config.device, self.rank, self.world)
        seed_everything(config.seed + self.rank)  # dropout differs across processes
        self.model = model.to(self.device)
        self.train_data = train_data.to(self.device)
        self.valid_data = valid_data.to(self.device) if valid_data is not None else None
        self.dtype = pick_dtype(self.device) if config.amp else torch.float32
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.optimizer = adamw(self.model, config.lr, config.weight_decay, config.head_lr,
                               fused=self.device.type == "cuda")
        self.steps_per_epoch = len(self.plan_epoch(0))
        total = self.steps_per_epoch * config.epochs
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, round(config.warmup_ratio * total), total)
        self.ddp = data_parallel(self.model, self.device, self.world)
        self.train_model = compiled(self.ddp or self.model, config.compile, config.bucket_lengths)
        self.step = self.epoch = self.position = self.bad_evals = 0
        self.best_rmse, self.stopped, self.history = math.inf, False, []
        self.best_state: dict[str, torch.Tensor] | None = None  # on the CPU
        self.improved, self.eval_seconds = False, 0.0
        self._losses: list[torch.Tensor] = []  # per-step losses not yet read by the host
        self._loss_sum, self._loss_count = 0.0, 0
        self.writer: SummaryWriter | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def plan_epoch(self, epoch: int) -> list[list[Batch]]:
        """This process's optimizer steps for ``epoch`` (:func:`~.text_batches.plan_steps`): the
        order depends only on (seed, epoch), so a resumed run replays it exactly."""
        cfg = self.config
        return plan_steps(self.train_data, np.random.default_rng([cfg.seed, epoch]),
                          cfg.batch_size, cfg.sort_chunk, cfg.bucket_lengths, cfg.grad_accum,
                          self.rank, self.world)

    def fit(self) -> list[dict]:
        """Train, evaluating and checkpointing as configured; return one record per evaluation."""
        cfg = self.config
        if cfg.checkpoint_dir:
            resume(self)
        self.model.train()
        if cfg.log_dir and self.is_main:  # TensorBoard adds files; it removes none
            self.writer = SummaryWriter(claim_folder(cfg.log_dir, "TensorBoard logs"))
        # Only rank 0 shows a bar. Passed explicitly, disable=False would override TQDM_DISABLE=1
        # (make book's way of keeping bars out of the pages), so rank 0 passes nothing.
        bar = tqdm(total=self.steps_per_epoch * cfg.epochs, initial=self.step, desc="train",
                   **({} if self.is_main else {"disable": True}))
        try:
            while self.epoch < cfg.epochs and not self.stopped:
                steps = self.plan_epoch(self.epoch)
                while self.position < len(steps) and not self.stopped:
                    self.train_step(steps[self.position])
                    self.position, self.step = self.position + 1, self.step + 1
                    bar.update()
                    if len(self._losses) >= cfg.log_every:
                        bar.set_postfix(loss=f"{self._flush_losses():.4f}")
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        self.evaluation_point()
                if self.position == len(steps):
                    self.epoch, self.position = self.epoch + 1, 0
                    if not cfg.eval_every:
                        self.evaluation_point()
            if not self.history or self.history[-1]["step"] != self.step:
                self.evaluation_point()
        finally:
            bar.close()
            if self.writer:
                self.writer.close()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history

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

    def train_step(self, group: list[Batch]) -> None:
        """One optimizer step over ``group``'s micro-batches; the loss stays on the device."""
        total = torch.zeros((), device=self.device)
        for i, (index, pad_to) in enumerate(group):
            batch = self.train_data.batch(index, pad_to)
            last = i == len(group) - 1  # DDP averages the gradients after the last one only
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

    def evaluation_point(self) -> None:
        """Record the training loss, evaluate, update early stopping, call ``on_evaluate``,
        checkpoint. ``eval_seconds`` counts from after the host has read the losses: that read
        waits for the training steps still running on the device, which are training time."""
        self._flush_losses()
        start = time.perf_counter()
        record = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0],
                  "train_loss": self._loss_sum / max(self._loss_count, 1)}
        self._loss_sum, self._loss_count = 0.0, 0
        pred = None
        if self.valid_data is not None:
            pred = self.predict(self.valid_data)
            metrics = self.evaluate(self.valid_data, pred)
            record.update(valid_rmse=metrics["rmse"], valid_mae=metrics["mae"])
        self.improved = self._early_stopping(record.get("valid_rmse"))
        if self.on_evaluate:
            self.on_evaluate(self, record, pred)
        self.history.append(record)
        for key in ("lr", "valid_rmse", "valid_mae"):
            if self.writer and key in record:
                self.writer.add_scalar(key.replace("_", "/", 1), record[key], self.step)
        if self.config.checkpoint_dir:
            save_checkpoint(self)
        self.eval_seconds += time.perf_counter() - start

    def _early_stopping(self, valid_rmse: float | None) -> bool:
        """Whether these weights are the best so far (then a copy is kept); sets ``stopped``
        after ``patience`` evaluations in a row without a better validation RMSE."""
        if valid_rmse is None:  # no validation data: fit() keeps the latest weights
            return True
        if valid_rmse < self.best_rmse:
            self.best_rmse, self.bad_evals = valid_rmse, 0
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in self.model.state_dict().items()}
            return True
        self.bad_evals += 1
        patience = self.config.patience
        self.stopped = patience is not None and self.bad_evals >= patience
        return False

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)

    @torch.no_grad()
    def predict(self, data: TextPairDataset) -> np.ndarray:
        """Predicted ratings for every row of ``data``, in its order (uncompiled, eval mode)."""
        data = data.to(self.device)
        was_training = self.model.training
        self.model.eval()
        out = torch.empty(len(data), device=self.device)
        batches = plan_batches(data.lengths_cpu, self.config.eval_batch_size, None)
        for idx, pad_to in device_batches(data, batches, self.config.bucket_lengths):
            batch = data.batch(idx, pad_to)
            batch.pop("labels")
            with self._autocast():
                out[idx] = self.model(**batch).float()
        self.model.train(was_training)
        return out.cpu().numpy()

    def evaluate(self, data: TextPairDataset, pred: np.ndarray | None = None) -> dict[str, float]:
        """RMSE and MAE on ``data`` of ``pred`` (default: :meth:`predict`), clipped to
        ``config.clip``; every process evaluates all of it."""
        truth, clip = data.labels.cpu().numpy(), self.config.clip
        pred = self.predict(data) if pred is None else pred
        return {"rmse": rmse(truth, pred, clip=clip), "mae": mae(truth, pred, clip=clip)}

