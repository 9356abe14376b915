"""Full and parameter-efficient fine-tuning: what trains, what is saved, what AdaLoRA does."""
from __future__ import annotations

import json

import pytest
import torch

from llmrec_lab.models.plm_rater import PLMRater, tokenize
from llmrec_lab.peft import (CONFIG, METHODS, MethodConfig, apply_method, load_method,
                             method_step_hook, save_method, trainable_parameters)

from conftest import TINY_BERT

H, LAYERS, FFN = (TINY_BERT[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size"))
SETTINGS = MethodConfig(total_step=10)
PAIRS = [("liked: a quiet fridge (5/5)", "a quiet washer"),
         ("; ".join(["disliked: a loud phone (1/5)"] * 6), "another loud phone from the same brand")]
TARGETS = torch.tensor([5.0, 1.0])
HEAD = H + 1
# Trainable parameters of each method on the tiny BERT, from its shapes (head included).
EXPECTED = {
    "lora": LAYERS * 2 * (2 * H * SETTINGS.r) + HEAD,  # query and value: A (r x H) + B (H x r)
    "adalora": LAYERS * 2 * (2 * H * SETTINGS.init_r + SETTINGS.init_r) + HEAD,  # A, B, E
    "ia3": LAYERS * (H + H + H + FFN) + HEAD,  # key, value outputs; both output.dense inputs
    "prefix": LAYERS * 2 * SETTINGS.prefix_tokens * H + HEAD,  # key and value vectors
    "adapter": LAYERS * 2 * (2 * H * SETTINGS.adapter_size + SETTINGS.adapter_size + H) + HEAD,
}



def rater(tiny_bert: str, method: str) -> PLMRater:
    torch.manual_seed(1)
    return apply_method(PLMRater(tiny_bert, rating_mean=3.0), method, SETTINGS)


def train_steps(model: PLMRater, steps: int, lr: float = 1e-2) -> list[float]:
    """A plain MSE loop, as the trainer runs it, calling the method hook each step."""
    batch = tokenize(model.tokenizer, PAIRS)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(model(**batch), TARGETS)
        loss.backward()
        optimizer.step()
        method_step_hook(model, step)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("method", METHODS)
def test_trainable_parameter_counts(tiny_bert, method):
    base_total = trainable_parameters(PLMRater(tiny_bert))[1]
    trainable, total = trainable_parameters(rater(tiny_bert, method))
    if method == "full":
        assert trainable == total == base_total
    else:
        assert trainable == EXPECTED[method]
        assert total > base_total


@pytest.mark.parametrize("method", METHODS)
def test_one_step_changes_only_the_intended_parameters(tiny_bert, method):
    model = rater(tiny_bert, method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, 1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable  # nothing frozen moved
    assert {"head.1.weight", "head.1.bias"} <= changed
    assert changed - {"head.1.weight", "head.1.bias"}  # the method's own weights moved too
    assert all(p.grad is None for p in model.parameters())  # zero_grad(set_to_none)


def eval_loss(model: PLMRater) -> float:
    model.eval()
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(**tokenize(model.tokenizer, PAIRS)),
                                            TARGETS).item()


@pytest.mark.parametrize("method", ["prefix", "adapter"])
def test_hand_written_methods_change_outputs_and_train(tiny_bert, method):
    model = rater(tiny_bert, method).eval()
    batch = tokenize(model.tokenizer, PAIRS)
    torch.manual_seed(1)
    plain = PLMRater(tiny_bert, rating_mean=3.0).eval()
    with torch.no_grad():
        ours, theirs = model(**batch), plain(**batch)
    assert not torch.equal(ours, theirs)  # the method is on the forward path
    if method == "adapter":  # ... and starts near the identity, as Houlsby et al. intend
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=0)
    model.head.requires_grad_(False)  # so that only the method's own weights can lower the loss
    before = eval_loss(model)
    train_steps(model, 20, lr=0.1)
    assert eval_loss(model) < 0.95 * before


@pytest.mark.parametrize("method", METHODS)
def test_padding_does_not_change_predictions(tiny_bert, method):
    model = rater(tiny_bert, method).eval()
    with torch.no_grad():
        alone = model(**tokenize(model.tokenizer, PAIRS[:1]))
        batched = model(**tokenize(model.tokenizer, PAIRS))  # the first pair is now padded
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(tiny_bert, method, tmp_path):
    model = rater(tiny_bert, method)
    train_steps(model, 3)
    save_method(model, tmp_path)
    loaded = load_method(PLMRater(tiny_bert), tmp_path)
    batch = tokenize(model.tokenizer, PAIRS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch), model.eval()(**batch), atol=0, rtol=0)
    assert loaded.method == method and loaded.method_config == SETTINGS
    assert float(loaded.rating_mean) == 3.0


def test_load_refuses_a_checkpoint_of_another_method_or_model(tiny_bert, tmp_path):
    save_method(rater(tiny_bert, "lora"), tmp_path)
    meta = json.loads((tmp_path / CONFIG).read_text())
    (tmp_path / CONFIG).write_text(json.dumps({**meta, "method": "adapter"}))
    with pytest.raises(ValueError, match="does not fit"):
        load_method(PLMRater(tiny_bert), tmp_path)
    (tmp_path / CONFIG).write_text(json.dumps({**meta, "model": "bert-base-uncased"}))
    with pytest.raises(ValueError, match="trained on 'bert-base-uncased'"):
        load_method(PLMRater(tiny_bert), tmp_path)


def test_adalora_hook_allocates_the_rank_budget(tiny_bert, tmp_path):
    model = rater(tiny_bert, "adalora")
    train_steps(model, SETTINGS.total_step)
    config = model.encoder.peft_config["default"]
    assert config.rank_pattern  # set once the budgeting phase ends
    kept = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)
    assert kept <= SETTINGS.target_r * LAYERS * 2 < SETTINGS.init_r * LAYERS * 2
    save_method(model, tmp_path)  # the allocation survives a round trip, for later steps
    loaded = load_method(PLMRater(tiny_bert), tmp_path)
    assert loaded.encoder.peft_config["default"].rank_pattern == config.rank_pattern


def test_adalora_needs_total_step(tiny_bert):
    with pytest.raises(ValueError, match="total_step"):
        apply_method(PLMRater(tiny_bert), "adalora")


def test_bad_requests_are_refused(tiny_bert):
    model = PLMRater(tiny_bert)
    with pytest.raises(ValueError, match="unknown method"):
        apply_method(model, "bitfit")
    with pytest.raises(ValueError, match="unknown method setting"):
        apply_method(model, "lora", {"rank": 4})
    apply_method(model, "lora")
    with pytest.raises(ValueError, match="already has method"):
        apply_method(model, "ia3")
    with pytest.raises(ValueError, match="apply_method first"):
        save_method(PLMRater(tiny_bert), "unused")
