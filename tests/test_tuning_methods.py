"""Full and parameter-efficient fine-tuning: what trains, what is saved, what AdaLoRA does."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from llmrec_lab.models.plm_rater import PLMRater, tokenize
from llmrec_lab.models.tuning_methods import (CONFIG, METHODS, MethodConfig,
                                              adalora_orthogonality, apply_method, load_method,
                                              method_penalty, method_step_hook, save_method,
                                              trainable_parameters)
from llmrec_lab.text_batches import TextPairDataset
from llmrec_lab.train import TrainConfig, Trainer

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



def rater(tiny_bert: str, method: str, settings: MethodConfig = SETTINGS) -> PLMRater:
    torch.manual_seed(1)
    return apply_method(PLMRater(tiny_bert, rating_mean=3.0), method, settings)


def train_steps(model: PLMRater, steps: int, lr: float = 1e-2) -> list[float]:
    """An MSE loop as the trainer runs it: the method's penalty added, its hook called each step."""
    batch = tokenize(model.tokenizer, PAIRS)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(model(**batch), TARGETS)
        penalty = method_penalty(model)
        if penalty is not None:
            loss = loss + penalty
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


def test_adalora_penalty_is_peft_own_orthogonality_term(tiny_bert, monkeypatch):
    model = rater(tiny_bert, "adalora")
    peft_config = model.encoder.peft_config["default"]
    assert peft_config.orth_reg_weight == SETTINGS.orth_reg_weight == 0.5  # passed on to peft
    penalty = adalora_orthogonality(model)
    # peft's random A and B (std 0.02) are far from orthonormal: each Gram matrix is near 0, so
    # each norm is near ||I|| = sqrt(init_r).
    assert penalty.item() > 0.5 * SETTINGS.init_r ** 0.5
    # What peft's own AdaLoraModel.forward adds to a loss that the wrapped model returns.
    adalora = model.encoder.base_model
    monkeypatch.setattr(adalora.model, "forward",
                        lambda *args, **kwargs: SimpleNamespace(loss=torch.zeros(())))
    peft_term = adalora().loss
    torch.testing.assert_close(method_penalty(model), peft_term, rtol=1e-6, atol=0)
    torch.testing.assert_close(peft_term, 0.5 * penalty, rtol=1e-6, atol=0)
    # The penalty trains the factors towards orthogonality, and only them.
    grads = torch.autograd.grad(penalty, [p for p in model.parameters() if p.requires_grad],
                                allow_unused=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    moved = {n for n, g in zip(names, grads) if g is not None and g.abs().sum() > 0}
    assert moved and all("lora_A" in n or "lora_B" in n for n in moved)
    assert len(moved) == LAYERS * 2 * 2  # A and B of query and value in every layer


def objective_and_mse(model: PLMRater) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's loss of one batch, and the plain MSE of the same batch (eval mode: no
    dropout, so both see the same predictions)."""
    data = TextPairDataset.from_texts(model.tokenizer, [p[0] for p in PAIRS],
                                      [p[1] for p in PAIRS], TARGETS.tolist())
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=2, device="cpu"), data,
                      penalty=method_penalty)
    model.eval()
    batch = data.batch(torch.arange(len(data)), data.width)
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(model(**{k: v for k, v in batch.items()
                                                    if k != "labels"}), batch["labels"])
        return trainer.objective(batch), mse


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_trainer_loss_is_mse_plus_weighted_orthogonality_for_adalora(tiny_bert, weight):
    model = rater(tiny_bert, "adalora", replace(SETTINGS, orth_reg_weight=weight))
    loss, mse = objective_and_mse(model)
    with torch.no_grad():
        penalty = adalora_orthogonality(model)
    assert penalty > 0
    if weight:
        torch.testing.assert_close(loss, mse + weight * penalty, rtol=1e-6, atol=0)
        assert loss > mse + 1.0
    else:
        assert method_penalty(model) is None
        assert torch.equal(loss, mse)  # exactly the MSE


@pytest.mark.parametrize("method", [m for m in METHODS if m != "adalora"])
def test_other_methods_have_no_penalty(tiny_bert, method):
    model = rater(tiny_bert, method)
    assert method_penalty(model) is None
    loss, mse = objective_and_mse(model)
    assert torch.equal(loss, mse)
