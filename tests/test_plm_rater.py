"""The PLM rater: leakage-free history rendering, tokenization, forward pass, ranking."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec_lab.models.plm_rater import (PLMRater, build_examples, predict, render_example,
                                         tokenize)



def items_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": np.arange(n), "text": [f"item{i}" for i in range(n)]})


def test_render_keeps_most_recent_history_last():
    history = [("old", 1.0), ("mid", 3.0), ("new", 5.0)]
    first, second = render_example(history, "candidate text", max_history=2)
    assert first == "found ok: mid (3/5); liked: new (5/5)"
    assert second == "candidate text"
    assert render_example([], "c", 5)[0] == "no ratings yet"
    assert render_example(history, "c", 0)[0] == "no ratings yet"
    assert render_example([("bad", 2.0)], "c", 3)[0] == "disliked: bad (2/5)"


def _naive_history(context: pd.DataFrame, row: tuple,
                   max_history: int) -> str:
    """Reference: the user's context ratings strictly before the row, oldest first."""
    past = context[(context.user_id == row.user_id) & (context.timestamp < row.timestamp)]
    past = past.sort_values("timestamp", kind="stable")
    return render_example([(f"item{i}", float(r)) for i, r in zip(past.item_id, past.rating)],
                          "", max_history)[0]


def test_build_examples_has_no_leakage():
    rng = np.random.default_rng(0)
    n = 200
    ratings = pd.DataFrame({"user_id": rng.integers(0, 6, n), "item_id": rng.integers(0, 30, n),
                            "rating": rng.integers(1, 6, n).astype(float),
                            "timestamp": rng.integers(0, 40, n)})  # many same-time ties
    pairs, targets = build_examples(ratings, items_frame(30), max_history=4)
    assert len(pairs) == n and targets.dtype == np.float32
    np.testing.assert_array_equal(targets, ratings["rating"].to_numpy(np.float32))
    for (history, candidate), row in zip(pairs, ratings.itertuples()):
        assert candidate == f"item{row.item_id}"
        assert history == _naive_history(ratings, row, 4)


def test_build_examples_draws_test_history_from_context():
    train = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [0, 1, 2], "rating": [5.0, 2.0, 4.0],
                          "timestamp": [0, 1, 0]})
    test = pd.DataFrame({"user_id": [1, 1], "item_id": [3, 4], "rating": [4.0, 1.0],
                         "timestamp": [5, 5]})
    pairs, _ = build_examples(test, items_frame(5), 10, context=pd.concat([train, test]))
    expected = "liked: item0 (5/5); disliked: item1 (2/5)"
    assert [p[0] for p in pairs] == [expected, expected]  # same-time test rows never leak


def test_build_examples_names_missing_items():
    ratings = pd.DataFrame({"user_id": [0], "item_id": [99], "rating": [3.0], "timestamp": [0]})
    with pytest.raises(KeyError, match="99"):
        build_examples(ratings, items_frame(3), 2)


def test_tokenize_drops_oldest_history_and_keeps_candidate(tiny_bert):
    model = PLMRater(tiny_bert)
    history = "; ".join(f"liked: oldest{i}" if i == 0 else f"liked: word{i}" for i in range(60))
    batch = tokenize(model.tokenizer, [(history, "the whole candidate")], max_length=32)
    tokens = model.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert len(tokens) == 32
    assert "oldest" not in "".join(tokens)
    assert tokens[-4:] == ["the", "whole", "candidate", "[SEP]"]


def test_forward_shape_and_mean_offset(tiny_bert):
    model = PLMRater(tiny_bert, rating_mean=3.5).eval()
    batch = tokenize(model.tokenizer, [("liked: a (5/5)", "b"), ("no ratings yet", "c d e")])
    out = model(**batch)
    assert out.shape == (2,)
    torch.nn.init.zeros_(model.head[1].weight)
    torch.nn.init.zeros_(model.head[1].bias)
    torch.testing.assert_close(model(**batch), torch.full((2,), 3.5))
    assert "rating_mean" in model.state_dict()
    assert model.encoder.pooler is None  # mean pooling replaces it


def test_head_reads_concat_of_pooled_text_and_features(tiny_bert):
    model = PLMRater(tiny_bert, rating_mean=3.0, n_features=2).eval()
    pairs = [("liked: a (5/5)", "b"), ("no ratings yet", "c d e")]
    features = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    # untrained, the features have weight 0: the rater is the text-only one
    np.testing.assert_allclose(predict(model, pairs, features=features),
                               predict(model, pairs, features=np.zeros_like(features)))
    head = model.head[1]
    hidden = head.in_features - 2
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.weight[0, hidden:] = torch.tensor([0.5, -0.25])  # the head reads the features only
    np.testing.assert_allclose(predict(model, pairs, features=features), [3.5, 2.5], atol=1e-6)
    with pytest.raises(ValueError, match="reads 2 features per pair, got 0"):
        predict(model, pairs)
    with pytest.raises(ValueError, match="reads 0 features per pair, got 2"):
        predict(PLMRater(tiny_bert), pairs, features=features)


def test_predict_ignores_batch_neighbours(tiny_bert):
    model = PLMRater(tiny_bert)
    short = ("liked: x (4/5)", "y")
    long = ("; ".join(["disliked: a long history entry (1/5)"] * 8), "another candidate")
    alone = predict(model, [short])
    together = predict(model, [short, long], batch_size=2)
    np.testing.assert_allclose(together[:1], alone, atol=1e-5)
    assert model.training  # predict restores the mode it found


def test_real_minilm_forward():
    model = PLMRater(rating_mean=3.0).eval()
    assert model.encoder.config.hidden_size == 384
    pairs, _ = build_examples(
        pd.DataFrame({"user_id": [0, 0], "item_id": [0, 1], "rating": [5.0, 2.0],
                      "timestamp": [0, 1]}),
        pd.DataFrame({"item_id": [0, 1], "text": ["A quiet fridge.", "A loud phone."]}), 5)
    assert predict(model, pairs).shape == (2,)
