"""Fine-tuning throughput: the source's training loop against ``llmrec_lab.train``'s path.

Two BertModel sizes with a regression head on [CLS] and RANDOM weights (configs built here, no
download), on synthetic token sequences whose lengths follow a lognormal clipped to 8..128
(mean about 51 tokens, the length of a user-item text pair in the course):

- ``source``: the loop style of the source course: fp32, eager attention, every text padded to
  128, batch 16, plain AdamW, ``loss.item()`` each step (tokenisation is done beforehand, which
  flatters it);
- ``ours``: :class:`llmrec_lab.train.Trainer`: bf16 autocast, SDPA attention, texts sorted
  into batches of similar length, each padded to its own longest text, batch 256, fused AdamW,
  data resident on the device, and optionally ``torch.compile``, which pads to fixed bucket
  lengths instead. On a CPU the trainer stays in fp32 and uses plain AdamW (``pick_dtype``),
  and the batch defaults to the source's 16: a 256-text bert-base step takes minutes on 2
  cores, and a CPU gains little from a larger batch.

Figures (printed, and written with ``--json``; nothing here asserts on time):

- samples/s, and real tokens/s (non-pad tokens: padding is waste, not work);
- FLOP/s = 6 x N x real tokens/s, N = non-embedding parameters (encoder layers and head): the
  usual forward + backward matmul estimate (Kaplan et al., 2020). Attention scores add about
  12 x layers x T x hidden per token, 1-2% at these lengths, and are left out;
- MFU = FLOP/s over the datasheet's dense bf16 peak, looked up by the GPU's name (other GPUs
  and CPUs get FLOP/s only);
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process's ``ru_maxrss`` on CPU
  (a high-water mark over the whole process, so later rows cannot be lower than earlier ones);
- the 1-minute load average before and after each loop (``os.getloadavg``): on a shared CPU
  another process's load lowers every figure.

Each loop runs ``--warmup`` untimed steps, then ``--steps`` timed ones. Under ``torch.compile``
ours warms up for a whole epoch instead: it runs two epochs over the same rows, sorted into
length buckets as one chunk, so both epochs see the same shapes; the first compiles, the second
is timed. A :class:`Loop` names one way to run ours (eager; the whole model compiled in a
mode; each encoder layer compiled alone; which buckets); ``bench/gpu_evidence.py`` times several
and, with ``profile_steps``, profiles a few steps after each timed window (:class:`StepClock`).

    python bench/finetune_throughput.py --model both --json bench.json   # one GPU
    python bench/finetune_throughput.py --json cpu.json                  # 2 CPU cores
    python bench/finetune_throughput.py --quick                          # smoke run, ~1 min

On one H200 the first command took 4.6 minutes, 3.7 of them compiling (5 bucket shapes per
model, forward and backward); ``--no-compile`` skips that. On a CPU, compiling is off unless
asked for; the defaults there time 2 warm-up and 10 timed steps per loop at batch 16.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import DeviceType
from transformers import BertConfig, BertModel

from llmrec_lab.config import pick_device
from llmrec_lab.io import atomic_write
from llmrec_lab.text_batches import TextPairDataset
from llmrec_lab.train import TrainConfig, Trainer

SIZES = {"minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536),
         "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072)}
# Dense bf16 tensor-core peaks (fp16 for the T4, which has no bf16); the first match wins.
PEAK_FLOPS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
              ("L4", 121e12), ("T4", 65e12)]
VOCAB, MAX_LEN, CLS, SEP = 30522, 128, 101, 102


class Rater(nn.Module):
    """BertModel of ``shape`` (a :data:`SIZES` entry) + a linear head on [CLS]: ``(B, T) -> (B,)``
    rating predictions."""

    def __init__(self, shape: dict, attention: str) -> None:
        super().__init__()
        config = BertConfig(vocab_size=VOCAB, max_position_embeddings=512, **shape)
        config._attn_implementation = attention
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.head(hidden[:, 0]).squeeze(-1)


def non_embedding_params(model: Rater) -> int:
    embeddings = sum(p.numel() for p in model.encoder.embeddings.parameters())
    return sum(p.numel() for p in model.parameters()) - embeddings


def synthetic(n: int, rng: np.random.Generator) -> TextPairDataset:
    """``n`` random token rows, [CLS] ... [SEP], lengths lognormal with mean about 51."""
    sigma = 0.4
    lengths = np.clip(np.round(rng.lognormal(np.log(51) - sigma ** 2 / 2, sigma, n)), 8, MAX_LEN)
    lengths = lengths.astype(np.int64)
    ids = rng.integers(1000, VOCAB, (n, MAX_LEN), dtype=np.int32)
    ids[:, 0] = CLS
    ids[np.arange(n), lengths - 1] = SEP
    ids[np.arange(MAX_LEN) >= lengths[:, None]] = 0
    return TextPairDataset(torch.from_numpy(ids), torch.zeros(n, MAX_LEN, dtype=torch.int8),
                           torch.from_numpy(lengths),
                           torch.from_numpy(rng.uniform(1, 5, n).astype(np.float32)))


@dataclass
class Result:
    model: str
    loop: str
    batch_size: int
    steps: int
    seconds: float
    samples: int
    real_tokens: int
    padded_tokens: int
    flops_per_sample_token: float  # 6 N
    peak_memory_bytes: int
    warmup_steps: int
    warmup_seconds: float | None = None
    extra: dict = field(default_factory=dict)

    def figures(self, peak: float | None) -> dict:
        flops = self.flops_per_sample_token * self.real_tokens / self.seconds
        return {"model": self.model, "loop": self.loop, "batch_size": self.batch_size,
                "steps": self.steps, "seconds": self.seconds,
                "samples_per_s": self.samples / self.seconds,
                "real_tokens_per_s": self.real_tokens / self.seconds,
                "mean_real_tokens": self.real_tokens / self.samples,
                "padding_efficiency": self.real_tokens / self.padded_tokens,
                "flops_per_s": flops, "mfu": flops / peak if peak else None,
                "peak_memory_bytes": self.peak_memory_bytes, "warmup_steps": self.warmup_steps,
                "warmup_seconds": self.warmup_seconds, **self.extra}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def source_loop(size: str, device: torch.device, batch_size: int, steps: int, warmup: int,
                rng: np.random.Generator, shape: dict | None = None) -> Result:
    """fp32, eager attention, pad to 128, plain AdamW, a host sync per step.

    ``shape`` replaces ``SIZES[size]`` (a dry run's tiny model); ``size`` still names the row.
    """
    torch.manual_seed(0)
    model = Rater(shape or SIZES[size], "eager").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    data = synthetic(batch_size * (warmup + steps), rng)
    losses = []
    created = start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            reset_peak_memory(device)
            start = time.perf_counter()
        rows = slice(step * batch_size, (step + 1) * batch_size)
        batch = data.batch(torch.arange(data.labels.numel())[rows], MAX_LEN)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        loss = F.mse_loss(model(**batch), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    timed = data.lengths_cpu[batch_size * warmup:]
    return Result(size, "source", batch_size, steps, seconds, len(timed), int(timed.sum()),
                  len(timed) * MAX_LEN, 6 * non_embedding_params(model), peak_memory(device),
                  warmup, start - created)


@dataclass(frozen=True)
class Loop:
    """One way to run our loop: eager, or compiled with a mode, whole or layer by layer.

    ``buckets`` are the padded lengths a batch may take (``TrainConfig.bucket_lengths``); None
    pads each batch to its own longest text, which suits eager mode only (every length would
    be a new graph for the compiler).
    """

    name: str
    mode: str | None = None  # torch.compile mode ("default", "reduce-overhead", ...); None: eager
    per_layer: bool = False  # compile each encoder layer (one small graph, reused 6 or 12 times)
    buckets: tuple[int, ...] | None = None

    @property
    def compiled(self) -> bool:
        return self.mode is not None


EAGER = Loop("ours")


def compiled_loop(mode: str) -> Loop:
    """The whole model under ``torch.compile(mode=mode)`` over the trainer's default buckets."""
    return Loop(f"ours+compile:{mode}", mode, buckets=TrainConfig.bucket_lengths)


def our_loop(size: str, device: torch.device, batch_size: int, steps: int, warmup: int,
             loop: Loop, rng: np.random.Generator, shape: dict | None = None,
             profile_steps: int = 0) -> Result:
    """Trainer.fit; ``steps`` steps after the warm-up are timed, then ``profile_steps`` profiled.

    Eager: one epoch of ``warmup + steps + profile_steps`` batches. Compiled: epochs of ``steps``
    batches, the first of which is the warm-up, so that every bucket shape is compiled before
    the clock starts; the second is timed; a third, if profiling, holds the profiled steps.
    ``shape`` replaces ``SIZES[size]``.
    """
    torch.manual_seed(0)
    model = Rater(shape or SIZES[size], "sdpa")
    if loop.compiled:
        torch._dynamo.reset()  # an earlier loop's graphs would count towards the recompile limit
    if loop.per_layer:
        for layer in model.encoder.encoder.layer:
            layer.compile(mode=loop.mode, dynamic=False)
    epochs = 2 + (profile_steps > 0) if loop.compiled else 1
    first = steps if loop.compiled else warmup  # the first timed step
    data = synthetic(batch_size * (steps if loop.compiled else warmup + steps + profile_steps),
                     rng)
    whole = loop.mode if loop.compiled and not loop.per_layer else False
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=2e-5, compile=whole,
                         bucket_lengths=loop.buckets, sort_chunk=len(data), log_every=10 ** 9,
                         device=str(device))
    reset_peak_memory(device)
    clock = StepClock(first, first + steps - 1, device, profile_steps)
    trainer = Trainer(model, config, data, step_hook=clock)
    trainer.fit()
    timed = [micro for epoch in range(epochs) for group in trainer.plan_epoch(epoch)
             for micro in group][first:first + steps]
    rows = np.concatenate([index.cpu().numpy() for index, _ in timed])
    extra = {"shapes": sorted({pad for _, pad in timed}), "mode": loop.mode,
             "per_layer": loop.per_layer, "buckets": loop.buckets}
    if clock.profile is not None:
        extra["profile"] = clock.profile
    return Result(size, loop.name, batch_size, len(timed), clock.stop - clock.start,
                  len(rows), int(data.lengths_cpu[rows].sum()),
                  sum(len(index) * pad for index, pad in timed),
                  6 * non_embedding_params(model), peak_memory(device), first,
                  warmup_seconds=clock.start - clock.created, extra=extra)


class StepClock:
    """A step hook that times steps ``first..last`` (syncing at both ends), then profiles the
    next ``profile_steps`` steps with :mod:`torch.profiler` (see :func:`profile_summary`)."""

    def __init__(self, first: int, last: int, device: torch.device,
                 profile_steps: int = 0) -> None:
        self.first, self.last, self.device, self.profile_steps = first, last, device, profile_steps
        self.created, self.start, self.stop = time.perf_counter(), math.nan, math.nan
        self.profiler: torch.profiler.profile | None = None
        self.profile: dict | None = None

    def __call__(self, model: nn.Module, step: int) -> None:
        if step in (self.first - 1, self.last, self.last + self.profile_steps):
            sync(self.device)
        now = time.perf_counter()
        if step == self.first - 1:
            self.start = now
        if step == self.last + self.profile_steps and self.profiler is not None:
            self.profiler.stop()
            self.profile = profile_summary(self.profiler, self.device, self.profile_steps,
                                           now - self.profile_start)
            self.profiler = None
        if step == self.last:
            self.stop = now
            if self.profile_steps:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if self.device.type == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.start()
                self.profile_start = time.perf_counter()


def profile_summary(profiler: torch.profiler.profile, device: torch.device, steps: int,
                    seconds: float, top: int = 12) -> dict:
    """Where ``steps`` profiled steps spent their time, per step.

    On a GPU: ``top_kernels``, the kernels (and copies) by time on the device; ``top_ops``,
    the host-side operators by the device time of the kernels they launched (a compiled graph
    shows as one operator, its Triton kernels as kernels); and ``device_busy_share``, the
    kernels' summed time over the steps' wall time. Well below 1, the GPU waits on the host
    (Python, kernel launches, syncs) and faster kernels would not help; near 1, the time is in
    the kernels listed. On a CPU: the operators by self CPU time.
    """
    events = profiler.key_averages()
    if device.type != "cuda":
        ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
        return {"steps": steps, "wall_ms_per_step": 1e3 * seconds / steps, "clock": "cpu",
                "top_ops": _rows(ops[:top], "self_cpu_time_total", steps)}
    # device-side user annotations (a compiled region's span) overlap the kernels they hold
    on_device = [e for e in events if e.device_type != DeviceType.CPU
                 and not getattr(e, "is_user_annotation", False)]
    on_host = [e for e in events if e.device_type == DeviceType.CPU and e.self_device_time_total]
    busy_us = sum(e.self_device_time_total for e in on_device)
    kernels = sorted(on_device, key=lambda e: e.self_device_time_total, reverse=True)
    ops = sorted(on_host, key=lambda e: e.self_device_time_total, reverse=True)
    return {"steps": steps, "wall_ms_per_step": 1e3 * seconds / steps, "clock": "device",
            "busy_ms_per_step": busy_us / 1e3 / steps,
            "device_busy_share": busy_us / 1e6 / seconds,
            "kernels_per_step": sum(e.count for e in on_device) / steps,
            "top_kernels": _rows(kernels[:top], "self_device_time_total", steps),
            "top_ops": _rows(ops[:top], "self_device_time_total", steps)}


def _rows(events: list, key: str, steps: int) -> list[dict]:
    """Profiler averages as plain rows: name, calls and milliseconds per step."""
    return [{"name": e.key, "calls_per_step": e.count / steps,
             "ms_per_step": getattr(e, key) / 1e3 / steps} for e in events]


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return f"{device.type} ({torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_FLOPS if key in name), None)


def report(rows: list[dict], device_name: str, peak: float | None) -> None:
    print(f"device: {device_name}; peak bf16 {peak / 1e12:.0f} TFLOP/s" if peak
          else f"device: {device_name}; no known peak, FLOP/s only")
    print(f"{'model':<10} {'loop':<20} {'batch':>5} {'steps':>5} {'samples/s':>10} "
          f"{'tokens/s':>10} {'pad eff':>7} {'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9} "
          f"{'warm-up s':>9} {'load avg':>11}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        warm = f"{r['warmup_seconds']:.1f}" if r["warmup_seconds"] is not None else "-"
        load = f"{r['load_before']:.2f}-{r['load_after']:.2f}"
        print(f"{r['model']:<10} {r['loop']:<20} {r['batch_size']:>5} {r['steps']:>5} "
              f"{r['samples_per_s']:>10,.1f} {r['real_tokens_per_s']:>10,.0f} "
              f"{r['padding_efficiency']:>7.2f} {r['flops_per_s'] / 1e12:>8.3f} {mfu:>6} "
              f"{r['peak_memory_bytes'] / 2 ** 20:>9,.0f} {warm:>9} {load:>11}")


def with_load(run, peak: float | None) -> dict:
    """``run()``'s figures, with the 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    figures = run().figures(peak)
    return {**figures, "load_before": before, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*SIZES, "both"], default="both")
    parser.add_argument("--steps", type=int,
                        help="timed steps per loop (default: 50 on CUDA, 10 on CPU, 3 quick)")
    parser.add_argument("--warmup", type=int,
                        help="untimed steps before them (default 2, quick 1; compiled: an epoch)")
    parser.add_argument("--source-batch", type=int, help="the source loop's batch (default 16)")
    parser.add_argument("--our-batch", type=int,
                        help="our loop's batch (default: 256 on CUDA, 16 elsewhere)")
    parser.add_argument("--device", help="default: the best available")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (default: torch's, one per core)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time our loop under torch.compile (default: on CUDA only)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode, e.g. reduce-overhead for CUDA graphs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run, not a figure: batch 4, 1 warm-up and 3 timed steps")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    compile = cuda if args.compile is None else args.compile
    steps = args.steps or (3 if args.quick else 50 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else 1 if args.quick else 2
    if steps < 1 or warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    source_batch = args.source_batch or (4 if args.quick else 16)
    our_batch = args.our_batch or (4 if args.quick else 256 if cuda else 16)
    sizes = list(SIZES) if args.model == "both" else [args.model]
    device_name, peak = peak_flops(device)
    rows = []
    for size in sizes:
        rng = np.random.default_rng(0)
        runs = [lambda: source_loop(size, device, source_batch, steps, warmup, rng),
                lambda: our_loop(size, device, our_batch, steps, warmup, EAGER, rng)]
        if compile:
            runs.append(lambda: our_loop(size, device, our_batch, steps, warmup,
                                         compiled_loop(args.compile_mode), rng))
        rows += [with_load(run, peak) for run in runs]
        report(rows[-len(runs):], device_name, peak)
    if args.json:
        figures = {"device": device_name, "peak_flops": peak, "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "results": rows}
        atomic_write(args.json, json.dumps(figures, indent=2).encode())


if __name__ == "__main__":
    main()
