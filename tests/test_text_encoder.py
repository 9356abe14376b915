"""The text encoder: offline MiniLM embeddings, mask-aware pooling, and the on-disk cache."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from llmrec_lab.encoders import text
from llmrec_lab.encoders.text import (DEFAULT_TEXT_MODEL, EmbeddingCache, TextEncoder,
                                      load_text_model, mean_pool, offline_models,
                                      resolve_model_path, text_key)
from llmrec_lab.io import FolderNotOurs

TEXTS = ["a quiet washing machine", "a silent washer", "an action movie with car chases"]


class TextCounter:
    """Counts the texts that reach a model's forward pass."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.n = 0
        encoder.model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        self.n += kwargs["input_ids"].shape[0]


def counted(encoder: TextEncoder) -> tuple[TextEncoder, TextCounter]:
    return encoder, TextCounter(encoder)


def save_tiny_bert(path: Path, seed: int) -> Path:
    """A small random BertModel with the bundled tokenizer: a second, different 'model'."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> TextEncoder:
    return TextEncoder(cache_dir=tmp_path_factory.mktemp("cache"))


def test_default_model_is_bundled_and_gives_unit_384_vectors(minilm):
    assert Path(resolve_model_path()).is_dir()
    assert resolve_model_path("minilm") == resolve_model_path(DEFAULT_TEXT_MODEL)
    emb = minilm.encode(TEXTS)
    assert emb.shape == (3, 384) and emb.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_similar_texts_are_closer(minilm):
    washing, washer, movie = minilm.encode(TEXTS)
    assert washing @ washer > washing @ movie + 0.3


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                           [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [2.0, 2.0]]))


def test_batching_keeps_order_and_ignores_neighbours(minilm):
    texts = ["short", "a much longer description " * 8, "medium length text here"]
    together = minilm.encode(texts)
    alone = np.concatenate([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("one string")


def test_cache_serves_repeats_without_the_model(tmp_path):
    first, counter = counted(TextEncoder(cache_dir=tmp_path))
    emb = first.encode(TEXTS + TEXTS[:1])
    assert counter.n == 3  # a duplicate is encoded once
    second, counter = counted(TextEncoder(cache_dir=tmp_path))
    np.testing.assert_array_equal(second.encode(TEXTS), emb[:3])
    assert counter.n == 0
    second.encode(TEXTS + ["a new text"])
    assert counter.n == 1


def test_cache_invalidates_when_the_model_changes(tmp_path):
    cache, tiny = tmp_path / "cache", tmp_path / "tiny"
    TextEncoder(cache_dir=cache).encode(TEXTS)
    first, counter = counted(TextEncoder(str(save_tiny_bert(tiny, seed=0)), cache_dir=cache))
    emb = first.encode(TEXTS)
    assert counter.n == 3 and emb.shape == (3, 16)
    retrained, counter = counted(TextEncoder(str(save_tiny_bert(tiny, seed=1)), cache_dir=cache))
    assert counter.n == 0
    assert not np.allclose(retrained.encode(TEXTS), emb)
    assert counter.n == 3


def test_many_small_writes_are_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "MAX_SHARDS", 2)
    encoder = TextEncoder(cache_dir=tmp_path)
    emb = np.concatenate([encoder.encode([t]) for t in TEXTS])
    assert len(list(encoder.cache.directory.glob("shard-*"))) <= 2
    reloaded, counter = counted(TextEncoder(cache_dir=tmp_path))
    np.testing.assert_array_equal(reloaded.encode(TEXTS), emb)
    assert counter.n == 0


@pytest.mark.parametrize("target", ["index.json", "shard"])
def test_corrupted_cache_is_rebuilt_with_a_warning(tmp_path, target):
    emb = TextEncoder(cache_dir=tmp_path).encode(TEXTS)
    (directory,) = tmp_path.iterdir()
    path = directory / target if target == "index.json" else next(directory.glob("shard-*"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="corrupt"):
        encoder, counter = counted(TextEncoder(cache_dir=tmp_path))
    np.testing.assert_allclose(encoder.encode(TEXTS), emb, atol=1e-6)
    assert counter.n == 3
    with warnings.catch_warnings():  # repaired: no warning, no work
        warnings.simplefilter("error", UserWarning)
        encoder, counter = counted(TextEncoder(cache_dir=tmp_path))
        encoder.encode(TEXTS)
    assert counter.n == 0


def test_unknown_hub_model_fails_clearly_offline():
    with pytest.raises(OSError, match="not cached.*bundled default"):
        load_text_model("no-such-org/no-such-model", local_files_only=True)


def test_offline_models_reports_the_bundled_default():
    status = offline_models()
    assert status[DEFAULT_TEXT_MODEL] is True and "bert-base-uncased" in status


def test_cache_lives_in_the_course_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path))
    cache = EmbeddingCache(None, "some/model", {"dim": 2})
    assert cache.directory.parent == tmp_path / "embeddings"


def _filled_cache(root: Path) -> EmbeddingCache:
    """An embedding cache with two puts (two shards), no model needed."""
    cache = EmbeddingCache(root, "some/model", {"dim": 2})
    vectors = np.arange(len(TEXTS) * 2, dtype=np.float32).reshape(-1, 2)
    cache.put([text_key(t) for t in TEXTS[:2]], vectors[:2])
    cache.put([text_key(TEXTS[2])], vectors[2:])
    return cache


def test_cache_files_are_byte_identical_for_the_same_texts(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "MAX_SHARDS", 1)  # the second put compacts: that path too
    first, second = _filled_cache(tmp_path / "a"), _filled_cache(tmp_path / "b")
    files = sorted(p.name for p in first.directory.iterdir())
    assert files == sorted(p.name for p in second.directory.iterdir())
    assert len([f for f in files if f.startswith("shard-")]) == 1
    assert all((first.directory / f).read_bytes() == (second.directory / f).read_bytes()
               for f in files)


def test_cache_refuses_a_folder_of_user_files(tmp_path):
    directory = _filled_cache(tmp_path).directory
    for path in directory.iterdir():
        path.unlink()
    (directory / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOurs, match="holds files llmrec-lab did not write"):
        EmbeddingCache(tmp_path, "some/model", {"dim": 2})
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]
