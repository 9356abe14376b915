"""Full and parameter-efficient fine-tuning of a :class:`PLMRater`, behind one function.

:func:`apply_method` turns a fresh rater into one of six trainable set-ups; the regression head is
always trained, everything not named below stays frozen:

- ``full``: every weight.
- ``lora``, ``adalora``, ``ia3``: peft's own implementations, on peft's default target modules
  for the architecture (BERT: LoRA and AdaLoRA on query and value; IA3 on key, value and both
  output projections). AdaLoRA reallocates rank during training: the trainer calls
  :func:`method_step_hook` after every optimizer step. AdaLoRA also adds an orthogonality
  penalty to the loss, which peft applies only to a model that computes its own loss; ours is
  formed by the trainer, which adds :func:`method_penalty` to it.
- ``prefix``: prefix tuning, by hand, because peft 0.21 refuses it for BERT encoders ("Model
  does not support past key values"). Each layer gets learned key and value vectors of
  ``prefix_tokens`` virtual tokens that every real token can attend to.
- ``adapter``: Houlsby bottleneck adapters, by hand, because peft has none and the ``adapters``
  package pins an older transformers. Each layer gets one after its attention output projection
  and one after its feed-forward output projection.

:func:`save_method` stores only what training changed (plus the rating offset) with safetensors
and a JSON config, so a checkpoint's size is the method's real storage cost; :func:`load_method`
rebuilds the method on a fresh rater and loads it back.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import AdaLoraConfig, IA3Config, LoraConfig, PeftConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from llmrec_lab.io import atomic_folder
from llmrec_lab.models.plm_rater import PLMRater

METHODS = ("full", "lora", "adalora", "ia3", "prefix", "adapter")
# Learning rates per method, from the usual ranges of the methods' papers: full fine-tuning moves
# pretrained weights and wants a small step; the small added modules want a larger one.
LEARNING_RATES = {"full": 1e-4, "lora": 1e-3, "adalora": 2e-3, "ia3": 3e-3, "prefix": 3e-3,
                  "adapter": 1e-3}
WEIGHTS, CONFIG = "method.safetensors", "method.json"
PREFIX_ATTENTION = "llmrec_prefix_sdpa"


@dataclass(frozen=True)
class MethodConfig:
    """The knobs of every method; each method reads only its own."""

    r: int = 8  # LoRA rank
    alpha: int = 16  # LoRA and AdaLoRA scaling numerator (the update is scaled by alpha / rank)
    dropout: float = 0.1  # LoRA and AdaLoRA dropout on the low-rank branch's input
    init_r: int = 12  # AdaLoRA: rank every matrix starts with
    target_r: int = 8  # AdaLoRA: average rank left once the budget is allocated
    total_step: int = 0  # AdaLoRA: optimizer steps of the whole run (required by its schedule)
    orth_reg_weight: float = 0.5  # AdaLoRA: weight of its orthogonality penalty (peft's default)
    prefix_tokens: int = 16  # prefix tuning: virtual key/value tokens per layer
    adapter_size: int = 8  # adapters: bottleneck width


def _as_config(config: MethodConfig | dict | None) -> MethodConfig:
    if isinstance(config, MethodConfig):
        return config
    config = config or {}
    unknown = set(config) - {f.name for f in fields(MethodConfig)}
    if unknown:
        raise ValueError(f"unknown method setting(s): {', '.join(sorted(unknown))}")
    return MethodConfig(**config)


def apply_method(model: PLMRater, name: str, config: MethodConfig | dict | None = None) -> PLMRater:
    """Make ``model`` trainable the ``name`` way (see the module doc), in place, and return it."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    if model.method is not None:
        raise ValueError(f"this rater already has method {model.method!r}; start from a fresh one")
    config = _as_config(config)
    if name != "full":
        model.requires_grad_(False)
    if name in ("lora", "adalora", "ia3"):
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            model.encoder = get_peft_model(model.encoder, _peft_config(name, config))
    elif name == "prefix":
        add_prefixes(model.encoder, config.prefix_tokens)
    elif name == "adapter":
        add_adapters(model.encoder, config.adapter_size)
    model.head.requires_grad_(True)
    model.method, model.method_config = name, config
    return model


def _peft_config(name: str, c: MethodConfig) -> PeftConfig:
    """peft's config for ``name``; target modules are left to peft's per-architecture defaults."""
    if name == "lora":
        return LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout)
    if name == "adalora":
        # The AdaLoRA paper's schedule: full-rank warm-up for the first 10% of steps, budget
        # pruning in between, fixed ranks for the last 20%.
        return AdaLoraConfig(init_r=c.init_r, target_r=c.target_r, lora_alpha=c.alpha,
                             lora_dropout=c.dropout, total_step=c.total_step,
                             tinit=c.total_step // 10, tfinal=c.total_step // 5,
                             orth_reg_weight=c.orth_reg_weight)
    return IA3Config()


def method_step_hook(model: PLMRater, global_step: int) -> None:
    """Per-step bookkeeping of a method; call after ``optimizer.step()``, before ``zero_grad()``.

    Only AdaLoRA has any: it scores each rank's importance from the current gradients and
    masks the least important ranks down to the budget. For the other methods it does nothing.
    """
    if model.method == "adalora":
        model.encoder.base_model.update_and_allocate(global_step)


def method_penalty(model: PLMRater) -> torch.Tensor | None:
    """The weighted regulariser a method adds to the training loss, or None if it has none.

    Only AdaLoRA has one: ``orth_reg_weight`` (read from peft's config) times
    :func:`adalora_orthogonality`, which keeps its SVD factors P and Q near-orthogonal so that
    the singular values it prunes really measure each rank's importance. peft adds the same term
    in ``AdaLoraModel.forward``, but only to the ``loss`` of a model that returns one; a
    :class:`PLMRater` returns ratings and the trainer forms the MSE, so it adds this instead.
    A weight of 0 gives None: the loss is then exactly the MSE.
    """
    if model.method != "adalora":
        return None
    weight = _adalora_config(model).orth_reg_weight
    if weight < 0:
        raise ValueError(f"orth_reg_weight must be at least 0, got {weight}")
    return weight * adalora_orthogonality(model) if weight else None


def adalora_orthogonality(model: PLMRater) -> torch.Tensor:
    """AdaLoRA's orthogonality penalty, unweighted, as peft 0.21 computes it.

    The mean, over every adapted matrix's factors, of the Frobenius norms ``||A A^T - I||`` (A:
    r x in, the right factor Q) and ``||B^T B - I||`` (B: out x r, the left factor P), with masked
    ranks included, as in peft. peft has no function for it (the lines sit inside
    ``AdaLoraModel.forward``), so they are repeated here, selecting parameters as it does; its
    gathering of DeepSpeed ZeRO-3 shards is left out, as nothing here shards parameters.
    """
    adalora = model.encoder.base_model
    name = adalora.trainable_adapter_name
    norms = []
    for n, p in adalora.model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and name in n:
            gram = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            norms.append(torch.linalg.matrix_norm(gram - eye))  # Frobenius
    if not norms:
        raise ValueError("this AdaLoRA encoder has no lora_A / lora_B factors")
    return torch.stack(norms).mean()


def _adalora_config(model: PLMRater) -> AdaLoraConfig:
    return model.encoder.peft_config[model.encoder.active_adapter]


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; total includes any added method parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _layers(encoder: PreTrainedModel) -> nn.ModuleList:
    """The transformer layers of a BERT-layout encoder, which the hand-written methods edit."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(encoder).__name__} does not have BERT's layout "
                         "(encoder.layer[i].attention.self); prefix and adapter need it")
    return layers


class Prefix(nn.Module):
    """One layer's prefix: key and value vectors of ``tokens`` virtual tokens, per head."""

    def __init__(self, heads: int, tokens: int, head_dim: int) -> None:
        super().__init__()
        # Standard normal, as peft initialises its prefix embedding for the models it supports.
        self.key = nn.Parameter(torch.randn(heads, tokens, head_dim))
        self.value = nn.Parameter(torch.randn(heads, tokens, head_dim))


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA attention with the layer's prefix prepended to the keys and values (B, H, L, d).

    Real tokens are not visible to the prefix, so the mask gains always-visible columns only.
    """
    prefix = module.prefix
    batch = key.shape[0]
    key = torch.cat([prefix.key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix.value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
    if attention_mask is not None:  # boolean (True: attend) or additive float, (B, 1, Q, K)
        visible = True if attention_mask.dtype == torch.bool else 0.0
        pad = attention_mask.new_full((*attention_mask.shape[:-1], prefix.key.shape[1]), visible)
        attention_mask = torch.cat([pad, attention_mask], dim=-1)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


# transformers' documented way to plug in an attention function: register it with its mask
# builder, then select it per model with set_attn_implementation.
AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)


def add_prefixes(encoder: PreTrainedModel, tokens: int) -> None:
    """Give every self-attention module a trainable :class:`Prefix` and switch to using it."""
    config = encoder.config
    head_dim = config.hidden_size // config.num_attention_heads
    for layer in _layers(encoder):
        layer.attention.self.prefix = Prefix(config.num_attention_heads, tokens, head_dim)
    encoder.set_attn_implementation(PREFIX_ATTENTION)


class Adapter(nn.Module):
    """Houlsby bottleneck: ``x + up(gelu(down(x)))``, initialised near the identity."""

    def __init__(self, hidden: int, size: int) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(hidden, size), nn.Linear(size, hidden)
        for linear in (self.down, self.up):  # Houlsby et al.: N(0, 1e-2) weights, zero biases
            nn.init.normal_(linear.weight, std=1e-2)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x)))

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook for the projection it follows: replaces the output by the adapted one."""
        return self(output)


def add_adapters(encoder: PreTrainedModel, size: int) -> None:
    """Insert an :class:`Adapter` after each layer's attention and feed-forward projections.

    Both sit before their sub-layer's residual sum and LayerNorm, as in Houlsby et al. A forward
    hook on the projection applies the adapter, so the encoder's own weights keep their names.
    """
    hidden = encoder.config.hidden_size
    for layer in _layers(encoder):
        for block in (layer.attention.output, layer.output):
            block.adapter = Adapter(hidden, size)
            block.dense.register_forward_hook(block.adapter.hook)


def _method_state(model: PLMRater) -> dict[str, torch.Tensor]:
    """What a method checkpoint holds: every trainable tensor, and the rating offset."""
    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    state["rating_mean"] = model.rating_mean
    return state


def save_method(model: PLMRater, directory: str | os.PathLike) -> Path:
    """Write ``method.safetensors`` (trainable tensors) and ``method.json`` as ``directory``.

    Both files appear together or not at all (:func:`llmrec_lab.io.atomic_folder`), and
    ``directory`` must be absent, empty or a method saved before.
    """
    if model.method is None:
        raise ValueError("this rater has no method; call apply_method first")
    state = {k: v.contiguous().cpu() for k, v in _method_state(model).items()}
    meta = {"method": model.method, "config": asdict(model.method_config),
            "model": model.model_name}
    if model.method == "adalora":  # the ranks AdaLoRA kept, which later steps keep masking to
        meta["rank_pattern"] = _adalora_config(model).rank_pattern
    with atomic_folder(directory, f"{model.method} method") as tmp:
        save_file(state, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(meta, indent=1))
    return Path(directory)


def load_method(base_model: PLMRater, directory: str | os.PathLike) -> PLMRater:
    """Apply the saved method to a fresh rater of the same encoder and load its tensors."""
    directory = Path(directory)
    meta = json.loads((directory / CONFIG).read_text())
    if meta["model"] != base_model.model_name:
        raise ValueError(f"{directory} was trained on {meta['model']!r}, not on "
                         f"{base_model.model_name!r}")
    model = apply_method(base_model, meta["method"], meta["config"])
    state = load_file(directory / WEIGHTS)
    expected = set(_method_state(model))
    if set(state) != expected:
        raise ValueError(f"{directory / WEIGHTS} does not fit a {meta['method']!r} rater of "
                         f"this encoder: missing {sorted(expected - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - expected)[:5]}")
    model.load_state_dict(state, strict=False)
    if meta.get("rank_pattern"):
        _adalora_config(model).rank_pattern = meta["rank_pattern"]
    return model
