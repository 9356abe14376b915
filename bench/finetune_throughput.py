"""Fine-tuning throughput: the source's training loop against ``llmrec_lab.train``'s path.

Two BertModel sizes with a regression head on [CLS] and RANDOM weights (configs built here, no
download), on synthetic token sequences whose lengths follow a lognormal clipped to 8..128
(mean about 51 tokens, the length of a user-item text pair in the course):

- ``source``: the loop style of the source course: fp32, eager attention, every text padded to
  128, batch 16, plain AdamW, ``loss.item()`` each step (tokenisation is done beforehand, which
  flatters it);
- ``ours``: :class:`llmrec_lab.train.Trainer`: bf16 autocast, SDPA attention, length buckets
  with dynamic padding, batch 256, fused AdamW, data resident on the device, and optionally
  ``torch.compile`` against the fixed bucket lengths.

Figures (printed, and written with ``--json``; nothing here asserts on time):

- samples/s, and real tokens/s (non-pad tokens: padding is waste, not work);
- FLOP/s = 6 x N x real tokens/s, N = non-embedding parameters (encoder layers and head): the
  usual forward + backward matmul estimate (Kaplan et al., 2020). Attention scores add about
  12 x layers x T x hidden per token, 1-2% at these lengths, and are left out;
- MFU = FLOP/s over the datasheet's dense bf16 peak, looked up by the GPU's name (other GPUs
  and CPUs get FLOP/s only);
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process's ``ru_maxrss`` on CPU
  (a high-water mark over the whole process, so later rows cannot be lower than earlier ones).

``ours`` runs two epochs over the same rows, sorted into length buckets as one chunk, so both
epochs see the same shapes: the first warms up (and compiles), the second is timed.

    python bench/finetune_throughput.py --model both --json bench.json   # one GPU
    python bench/finetune_throughput.py --quick                          # 2 CPU cores, ~1 min

On one H200 the first command took 4.6 minutes, 3.7 of them compiling (5 bucket shapes per
model, forward and backward); ``--no-compile`` skips that.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from llmrec_lab.config import pick_device
from llmrec_lab.train import TextPairDataset, TrainConfig, Trainer

SIZES = {"minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536),
         "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072)}
# Dense bf16 tensor-core peaks (fp16 for the T4, which has no bf16); the first match wins.
PEAK_FLOPS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
              ("L4", 121e12), ("T4", 65e12)]
VOCAB, MAX_LEN, CLS, SEP = 30522, 128, 101, 102


class Rater(nn.Module):
    """BertModel + a linear head on [CLS]: ``(B, T) -> (B,)`` rating predictions."""

    def __init__(self, size: str, attention: str) -> None:
        super().__init__()
        config = BertConfig(vocab_size=VOCAB, max_position_embeddings=512, **SIZES[size])
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
                "peak_memory_bytes": self.peak_memory_bytes,
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


def source_loop(size: str, device: torch.device, batch_size: int, steps: int,
                rng: np.random.Generator) -> Result:
    """fp32, eager attention, pad to 128, plain AdamW, a host sync per step; 1 warm-up step."""
    torch.manual_seed(0)
    model = Rater(size, "eager").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    data = synthetic(batch_size * (steps + 1), rng)
    losses = []
    for step in range(steps + 1):
        if step == 1:
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
    timed = data.lengths_cpu[batch_size:]
    return Result(size, "source", batch_size, steps, seconds, len(timed), int(timed.sum()),
                  len(timed) * MAX_LEN, 6 * non_embedding_params(model), peak_memory(device))


def our_loop(size: str, device: torch.device, batch_size: int, steps: int,
             compile: bool | str, rng: np.random.Generator) -> Result:
    """Trainer.fit over two epochs of the same rows; the second is timed."""
    torch.manual_seed(0)
    model = Rater(size, "sdpa")
    data = synthetic(batch_size * steps, rng)
    config = TrainConfig(epochs=2, batch_size=batch_size, lr=2e-5, compile=compile,
                         sort_chunk=steps, log_every=10 ** 9, device=str(device))
    reset_peak_memory(device)
    timer = EpochTimer(steps - 1, device)
    trainer = Trainer(model, config, data, step_hook=timer)
    trainer.fit()
    sync(device)
    seconds = time.perf_counter() - timer.start
    pads = [pad for group in trainer.plan_epoch(1) for _, pad in group]
    loop = f"ours+compile:{compile}" if compile else "ours"
    return Result(size, loop, batch_size, steps, seconds,
                  len(data), int(data.lengths_cpu.sum()), batch_size * sum(pads),
                  6 * non_embedding_params(model), peak_memory(device),
                  warmup_seconds=timer.start - timer.created,
                  extra={"shapes": sorted(set(pads))})


class EpochTimer:
    """A step hook that syncs once, after the last warm-up step, and starts the clock."""

    def __init__(self, last_warmup_step: int, device: torch.device) -> None:
        self.last_warmup_step, self.device = last_warmup_step, device
        self.created, self.start = time.perf_counter(), math.nan

    def __call__(self, model: nn.Module, step: int) -> None:
        if step == self.last_warmup_step:
            sync(self.device)
            self.start = time.perf_counter()


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return f"{device.type} ({torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_FLOPS if key in name), None)


def report(rows: list[dict], device_name: str, peak: float | None) -> None:
    print(f"device: {device_name}; peak bf16 {peak / 1e12:.0f} TFLOP/s" if peak
          else f"device: {device_name}; no known peak, FLOP/s only")
    print(f"{'model':<10} {'loop':<20} {'batch':>5} {'samples/s':>10} {'tokens/s':>10} "
          f"{'pad eff':>7} {'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9} {'warm-up s':>9}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        warm = f"{r['warmup_seconds']:.1f}" if r["warmup_seconds"] is not None else "-"
        print(f"{r['model']:<10} {r['loop']:<20} {r['batch_size']:>5} "
              f"{r['samples_per_s']:>10,.0f} {r['real_tokens_per_s']:>10,.0f} "
              f"{r['padding_efficiency']:>7.2f} {r['flops_per_s'] / 1e12:>8.2f} {mfu:>6} "
              f"{r['peak_memory_bytes'] / 2 ** 20:>9,.0f} {warm:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*SIZES, "both"], default="both")
    parser.add_argument("--steps", type=int, help="timed steps per loop (default 50, quick 1)")
    parser.add_argument("--device", help="default: the best available")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time our loop under torch.compile (default: on CUDA only)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode, e.g. reduce-overhead for CUDA graphs")
    parser.add_argument("--quick", action="store_true",
                        help="CPU smoke run: 1 timed step, batch 4, for both loops")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args()
    device = pick_device(args.device)
    compile = device.type == "cuda" if args.compile is None else args.compile
    steps = args.steps or (1 if args.quick else 50)
    source_batch, our_batch = (4, 4) if args.quick else (16, 256)
    sizes = list(SIZES) if args.model == "both" else [args.model]
    device_name, peak = peak_flops(device)
    rows = []
    for size in sizes:
        rng = np.random.default_rng(0)
        results = [source_loop(size, device, source_batch, steps, rng),
                   our_loop(size, device, our_batch, steps, False, rng)]
        if compile:
            results.append(our_loop(size, device, our_batch, steps, args.compile_mode, rng))
        rows += [r.figures(peak) for r in results]
        report(rows[-len(results):], device_name, peak)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "peak_flops": peak, "torch": torch.__version__,
                       "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
