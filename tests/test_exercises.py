"""The learners' self-checks accept correct answers and explain the usual wrong ones."""
import math
import re

import numpy as np
import pytest
from scipy.stats import t as student_t

from llmrec_lab.splits import cold_start_items, leave_last_out, random_split, temporal_split
from llmrec_lab.world import make_world
from llmrec_lab.exercises import ExerciseError, check_ndcg, check_rmse, check_split_no_leakage
from llmrec_lab.exercises import check_attention, check_transe_score
from llmrec_lab.exercises import check_gap_closed, check_lora_params
from llmrec_lab.exercises import check_masked_mse, check_paired_interval
from llmrec_lab.exercises import check_history, check_token_accuracy
from llmrec_lab.lus.metrics import gap_closed
from llmrec_lab.metrics import ndcg_at_k, rmse
from llmrec_lab.stats import paired_interval


def test_check_rmse_accepts_the_library_and_a_plain_answer():
    def plain(y, p):
        y, p = np.asarray(y, float), np.asarray(p, float)
        if y.shape != p.shape:
            raise ValueError("shapes differ")
        return np.sqrt(np.mean((y - p) ** 2))

    assert check_rmse(rmse) == "check_rmse: all 6 checks passed"
    assert "passed" in check_rmse(plain)


@pytest.mark.parametrize("answer, explanation", [
    (lambda y, p: np.mean(np.abs(np.subtract(y, p, dtype=float))), "mean absolute error"),
    (lambda y, p: np.mean(np.subtract(y, p, dtype=float) ** 2), "take the square root"),
    (lambda y, p: np.sqrt(np.sum(np.subtract(y, p, dtype=float) ** 2)), "average them"),
    (lambda y, p: np.sqrt(np.mean(np.subtract(y, p, dtype=float) ** 2)),
     re.escape("shapes (3,) and (3, 1)")),
    (lambda y, p: math.sqrt(sum((a - b) ** 2 for a, b in zip(y, p)) / len(y)), "3 ratings and 4"),
    (lambda y, p: 1 // 0, "raised ZeroDivisionError"),
    (lambda y, p: "zero", "not a number"),
])
def test_check_rmse_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_rmse(answer)


def test_check_ndcg_accepts_the_library():
    assert check_ndcg(ndcg_at_k) == "check_ndcg: all 6 checks passed"


def _ndcg(ranked, relevant, k, ideal_len=None, cut=True, normalise=True, first_rank=1):
    gains = [1.0 if item in relevant else 0.0 for item in (ranked[:k] if cut else ranked)]
    dcg = sum(g / math.log2(r + first_rank) for r, g in enumerate(gains, start=1))
    n = min(k, len(relevant)) if ideal_len is None else ideal_len(ranked, relevant, k)
    ideal = sum(1 / math.log2(r + first_rank) for r in range(1, n + 1))
    return dcg / ideal if normalise else dcg


@pytest.mark.parametrize("answer, explanation", [
    (lambda r, rel, k: _ndcg(r, rel, k, ideal_len=lambda r, rel, k: k), "min\\(k, \\|relevant\\|\\)"),
    (lambda r, rel, k: _ndcg(r, rel, k, cut=False), "not cut at k"),
    (lambda r, rel, k: _ndcg(r, rel, k, normalise=False), "without the normalisation"),
    (lambda r, rel, k: _ndcg(r, rel, k, ideal_len=lambda r, rel, k: max(1, sum(
        i in rel for i in r[:k]))), "ranked list only"),
    (lambda r, rel, k: _ndcg(r, rel, k, first_rank=0), "division by zero"),
    (lambda r, rel, k: 0.5, "expected 1.0000"),
])
def test_check_ndcg_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_ndcg(answer)


@pytest.fixture(scope="module")
def ratings():
    return make_world("shop", "ci", seed=0, n_days=5).ratings


@pytest.mark.parametrize("kind, split", [
    ("random", lambda r: random_split(r, test_frac=0.2, seed=0)),
    ("temporal", lambda r: temporal_split(r, test_frac=0.2)),
    ("leave-last-out", lambda r: leave_last_out(r, n=1)),
    ("cold-start-items", lambda r: cold_start_items(r, frac_items=0.2, seed=0)),
])
def test_the_library_splits_pass_their_own_check(ratings, kind, split):
    train, test = split(ratings)
    assert check_split_no_leakage(train, test, kind) == (
        f"check_split_no_leakage({kind!r}): no leakage found")


def test_leaky_splits_are_explained(ratings):
    train, test = random_split(ratings, test_frac=0.2, seed=0)
    with pytest.raises(ExerciseError, match="in both train and test"):
        check_split_no_leakage(ratings, test, "random")
    with pytest.raises(ExerciseError, match="later than the earliest test rating"):
        check_split_no_leakage(train, test, "temporal")
    with pytest.raises(ExerciseError, match="train ratings after their test ratings"):
        check_split_no_leakage(train, test, "leave-last-out")
    with pytest.raises(ExerciseError, match="also appear in train"):
        check_split_no_leakage(train, test, "cold-start-items")
    with pytest.raises(ExerciseError, match="test is empty"):
        check_split_no_leakage(train, test.iloc[:0], "random")
    with pytest.raises(ExerciseError, match="lacks the column"):
        check_split_no_leakage(train.drop(columns="timestamp"), test, "random")
    with pytest.raises(ValueError, match="kind must be one of"):
        check_split_no_leakage(train, test, "by-user")


def _attention(queries, keys, scale=None, axis=-1, stable=True):
    """Softmax attention weights, with switches for the usual mistakes."""
    scores = np.asarray(queries) @ np.asarray(keys).T
    scores = scores / (np.sqrt(np.shape(queries)[-1]) if scale is None else scale)
    if stable:
        scores = scores - scores.max(axis=axis, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=axis, keepdims=True)


def test_check_attention_accepts_numpy_and_torch_answers():
    torch = pytest.importorskip("torch")

    def with_torch(queries, keys):
        q, k = torch.as_tensor(queries), torch.as_tensor(keys)
        return torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1)

    assert check_attention(_attention) == "check_attention: all 5 checks passed"
    assert "passed" in check_attention(with_torch)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the unstable answer overflows on purpose
@pytest.mark.parametrize("answer, explanation", [
    (lambda q, k: _attention(q, k, scale=1.0), "no scaling"),
    (lambda q, k: _attention(q, k, scale=q.shape[-1]), "divided by d = 4"),
    (lambda q, k: _attention(q, k, scale=q.shape[-1] ** -0.5), "multiplied by sqrt\\(d\\)"),
    (lambda q, k: _attention(q, k, axis=0), "ran over the queries"),
    (lambda q, k: _attention(q, k).T, re.escape("shape (5, 3), expected (3, 5)")),
    (lambda q, k: q @ k.T, "apply a softmax over the keys"),
    (lambda q, k: (q @ k.T) / (q @ k.T).sum(axis=1, keepdims=True), "exponentiate them first"),
    (lambda q, k: _attention(q, k, stable=False), "Subtract each row's largest score"),
    (lambda q, k: _attention(q / max(1, np.abs(q).max() / 10), k), "nearly one-hot"),
    (lambda q, k: 1 // 0, "raised ZeroDivisionError"),
])
def test_check_attention_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_attention(answer)


def _transe(h, r, t, p):
    return -np.linalg.norm(np.asarray(h) + r - t, ord=p, axis=-1)


def test_check_transe_score_accepts_numpy_and_pykeen():
    modules = pytest.importorskip("pykeen.nn.modules")
    torch = pytest.importorskip("torch")

    def with_pykeen(h, r, t, p):
        h, r, t = (torch.as_tensor(x) for x in (h, r, t))
        return modules.TransEInteraction(p=p)(h, r, t)

    assert check_transe_score(_transe) == "check_transe_score: all 4 checks passed"
    assert "passed" in check_transe_score(with_pykeen)


@pytest.mark.parametrize("answer, explanation", [
    (lambda h, r, t, p: -_transe(h, r, t, p), "the score is its negative"),
    (lambda h, r, t, p: _transe(h, r, t, 2), "the L2 norm where p=1 was asked"),
    (lambda h, r, t, p: _transe(h, r, t, 3 - p), "the L2 norm where p=1 was asked"),
    (lambda h, r, t, p: -_transe(h, r, t, p) * _transe(h, r, t, p), "squared distance"),
    (lambda h, r, t, p: _transe(h, -r, -t, p), re.escape("h - r + t")),
    (lambda h, r, t, p: -(h + r - t).sum(axis=-1), "with no norm"),
    (lambda h, r, t, p: -(h + r - t), re.escape("an array of shape (3,), not one number")),
    (lambda h, r, t, p: -np.linalg.norm(h + r - t, ord=p), "along the last axis"),
    (lambda h, r, t, p: "zero", "not an array of numbers"),
])
def test_check_transe_score_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_transe_score(answer)


def _lora(d_in, d_out, rank, n):
    return n * rank * (d_in + d_out)


def test_check_lora_params_counts_what_peft_trains():
    """The check's formula is peft's: A and B per adapted Linear, no biases, the rest frozen."""
    from peft import LoraConfig, get_peft_model
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.value, self.out = nn.Linear(10, 4), nn.Linear(4, 6), nn.Linear(6, 1)

    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["query", "value"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == _lora(10, 4, 2, 1) + _lora(4, 6, 2, 1) == 48
    assert check_lora_params(_lora) == "check_lora_params: all 4 checks passed"


@pytest.mark.parametrize("answer, explanation", [
    (lambda i, o, r, n: n * i * o, "size of the frozen weight W"),
    (lambda i, o, r, n: n * (i * o + r * (i + o)), "frozen weights plus the factors"),
    (lambda i, o, r, n: n * r * i, "only one of the two factors"),
    (lambda i, o, r, n: n * r * o, "only one of the two factors"),
    (lambda i, o, r, n: n * 2 * r * i, "at A's size"),
    (lambda i, o, r, n: n * 2 * r * o, "at B's size"),
    (lambda i, o, r, n: r * (i + o), "count of one matrix"),
    (lambda i, o, r, n: n * r * i * r * o, "sizes add"),
    (lambda i, o, r, n: n * (r * (i + o) + o), "adapted layer's bias stays frozen"),
    (lambda i, o, r, n: n * (r * (i + o) + r + o), "without bias"),
    (lambda i, o, r, n: 7, re.escape("expected 12 x 8 x (384 + 384) = 73728.")),
    (lambda i, o, r, n: "many", "not a number"),
])
def test_check_lora_params_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_lora_params(answer)


def test_check_gap_closed_accepts_the_library():
    assert check_gap_closed(gap_closed) == "check_gap_closed: all 7 checks passed"


@pytest.mark.parametrize("answer, explanation", [
    (lambda v, g, o: (g - v) / (o - g), "sign is inverted"),
    (lambda v, g, o: (v - g) / abs(o - g), "sign is inverted"),
    (lambda v, g, o: 100 * (v - g) / (o - g), "a percentage"),
    (lambda v, g, o: (v - g) / o, "divided by the oracle's"),
    (lambda v, g, o: v / o, "as a share of the oracle's"),
    (lambda v, g, o: (o - v) / (o - g), "still open"),
    (lambda v, g, o: min(max((v - g) / (o - g), 0.0), 1.0), "clipped share"),
    (lambda v, g, o: abs((v - g) / (o - g)), "absolute value"),
    (lambda v, g, o: (v - g) / (o - g), "raised ZeroDivisionError: when greedy equals"),
    (lambda v, g, o: (v - g) / (o - g) if o != g else [][0], "raised IndexError: when greedy"),
    (lambda v, g, o: (v - g) / (o - g) if o != g else 0.0, re.escape("returned 0.0")),
    (lambda v, g, o: (v - g) / (o - g) if o != g else math.inf, "returned inf"),
    (lambda v, g, o: 0.5, "expected \\(12.0 - 10.0\\) / \\(20.0 - 10.0\\) = 0.2\\."),
])
def test_check_gap_closed_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_gap_closed(answer)


def _masked_mse(r, p, o):
    return float(np.mean((np.asarray(r)[o] - np.asarray(p)[o]) ** 2))


def test_check_masked_mse_accepts_a_plain_answer_and_torch():
    import torch

    def with_torch(r, p, o):
        r, p, o = torch.as_tensor(r), torch.as_tensor(p), torch.as_tensor(o)
        return torch.nn.functional.mse_loss(p[o], r[o]).item()

    assert check_masked_mse(_masked_mse) == "check_masked_mse: all 2 checks passed"
    assert "passed" in check_masked_mse(with_torch)


def _per_user(r, p, o):
    return float(np.mean([np.mean((r[u][o[u]] - p[u][o[u]]) ** 2) for u in range(len(r))
                          if o[u].any()]))


@pytest.mark.parametrize("answer, explanation", [
    (lambda r, p, o: float(np.mean((r - p) ** 2)), "unobserved ones as ratings of 0"),
    (lambda r, p, o: float(np.sum(o * (r - p) ** 2) / r.size), "divided by all 12 cells"),
    (_per_user, "weighs every user the same"),
    (lambda r, p, o: math.sqrt(_masked_mse(r, p, o)), "no root"),
    (lambda r, p, o: _masked_mse(r, p, r != 0), "a rating of 0 is a rating"),
    (lambda r, p, o: float(np.sum(o * (r - p) ** 2) / o.sum()), re.escape("NaN * 0 is NaN")),
    (lambda r, p, o: _masked_mse(r, p, o) + 1, "expected 3.1667, the mean of the 6 observed"),
    (lambda r, p, o: r[9], "raised IndexError"),
])
def test_check_masked_mse_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_masked_mse(answer)


def _library_paired(a, b):
    iv = paired_interval(a, b)
    return iv.low, iv.high


def test_check_paired_interval_accepts_the_library():
    assert check_paired_interval(_library_paired) == "check_paired_interval: all 3 checks passed"


def _unpaired_z(a, b):
    half = 1.96 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return a.mean() - b.mean() - half, a.mean() - b.mean() + half


def _z_quantile(a, b):
    d = a - b
    half = 1.959963984540054 * d.std(ddof=1) / np.sqrt(d.size)
    return d.mean() - half, d.mean() + half


def _spread(a, b):
    d = a - b
    half = student_t.ppf(0.975, d.size - 1) * d.std(ddof=1)
    return d.mean() - half, d.mean() + half


@pytest.mark.parametrize("answer, explanation", [
    (_unpaired_z, "treated as separate samples"),
    (_z_quantile, "normal (z) quantile"),
    (lambda a, b: _library_paired(b, a), "B - A"),
    (_spread, "not the standard error"),
    (lambda a, b: (a - b).mean(), "return a pair"),
])
def test_check_paired_interval_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=re.escape(explanation)):
        check_paired_interval(answer)


def _token_accuracy(labels, predictions, ignore_index=-100):
    scored = labels != ignore_index
    return float((labels == predictions)[scored].mean())


def test_check_token_accuracy_accepts_a_plain_answer_and_torch():
    import torch

    def with_torch(labels, predictions, ignore_index=-100):
        labels, predictions = torch.as_tensor(labels), torch.as_tensor(predictions)
        scored = labels.ne(ignore_index)
        return (labels.eq(predictions) & scored).sum().item() / scored.sum().item()

    assert check_token_accuracy(_token_accuracy) == "check_token_accuracy: all 2 checks passed"
    assert "passed" in check_token_accuracy(with_torch)


def _per_sentence(labels, predictions, ignore_index=-100):
    return float(np.mean([(l == p)[l != ignore_index].mean()
                          for l, p in zip(labels, predictions)]))


@pytest.mark.parametrize("answer, explanation", [
    (lambda l, p, ignore_index=-100: float(np.mean((l == p) | (l == ignore_index))),
     "counted as correct, as in the source's report"),
    (lambda l, p, ignore_index=-100: float(np.mean(l == p)), "ignored positions counted as wrong"),
    (_per_sentence, "mean of the sentences' accuracies"),
    (lambda l, p, ignore_index=-100: 100 * _token_accuracy(l, p, ignore_index),
     re.escape("a percentage: return the fraction (0.7), not the percentage (70)")),
    (lambda l, p, ignore_index=-100: int(((l == p) & (l != ignore_index)).sum()),
     "number of correct positions"),
    (lambda l, p, ignore_index=-100: float((l == p)[l == ignore_index].mean()),
     "ignored positions scored instead of the others"),
    (lambda l, p, ignore_index=-100: float((l == p)[l != 0].mean()), "tag O .id 0. skipped"),
    (lambda l, p, ignore_index=-100: float((l == p)[(l != 0) & (l != ignore_index)].mean()),
     "tag O .id 0. skipped"),
    (lambda l, p, ignore_index=-100: _token_accuracy(l, p), "use the argument, not a hard-coded"),
    (lambda l, p: _token_accuracy(l, p), "raised TypeError"),
    (lambda l, p, ignore_index=-100: "high", "not a number"),
    (lambda l, p, ignore_index=-100: 0.5,
     re.escape("expected 7 correct of the 10 scored positions = 0.7000.")),
])
def test_check_token_accuracy_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_token_accuracy(answer)


def _history(ratings, user_id, timestamp, before=lambda t, ts: t < ts, newest_first=False,
             by=("timestamp",), sort=True, everyone=False):
    """The item ids of a rating's history, with switches for the usual mistakes."""
    mine = ratings if everyone else ratings[ratings["user_id"] == user_id]
    mine = mine[before(mine["timestamp"], timestamp)]
    if sort:
        mine = mine.sort_values(list(by), ascending=not newest_first, kind="stable")
    return mine["item_id"].tolist()


def test_check_history_matches_build_examples():
    """A history the check accepts is the one build_examples renders, for every row of a world."""
    from llmrec_lab.models.plm_rater import build_examples, render_example

    world = make_world("shop", "ci", seed=0, n_days=5)
    ratings = world.ratings.sample(frac=1.0, random_state=0)  # not in time order
    texts = world.items.set_index("item_id")["text"]
    rated = ratings.set_index(["user_id", "item_id"])["rating"]
    rows = ratings.head(50)
    pairs, _ = build_examples(rows, world.items, max_history=3, context=ratings)
    for row, pair in zip(rows.itertuples(), pairs):
        history = [(texts[i], rated[row.user_id, i])
                   for i in _history(ratings, row.user_id, row.timestamp)]
        assert render_example(history, pair[1], 3) == pair
    assert check_history(_history) == "check_history: all 3 checks passed"


@pytest.mark.parametrize("answer, explanation", [
    (lambda r, u, t: _history(r, u, t, before=lambda x, ts: x <= ts), "the rating at 300 itself"),
    (lambda r, u, t: _history(r, u, t, before=lambda x, ts: x == x), "all of the user's ratings"),
    (lambda r, u, t: _history(r, u, t, before=lambda x, ts: x != ts), "ratings after 300"),
    (lambda r, u, t: _history(r, u, t, newest_first=True), "newest first"),
    (lambda r, u, t: _history(r, u, t)[::-1], "newest first"),
    (lambda r, u, t: _history(r, u, t, everyone=True), re.escape("other users' ratings are in it "
                                                                 "(items [20, 21])")),
    (lambda r, u, t: _history(r, u, t, sort=False), "the table's order"),
    (lambda r, u, t: _history(r, u, t, by=("timestamp", "item_id")), "same timestamp"),
    (lambda r, u, t: r[(r.user_id == u) & (r.timestamp < t)].sort_values("timestamp"),
     "returned the rows"),
    (lambda r, u, t: set(_history(r, u, t)), "keeps no order"),
    (lambda r, u, t: _history(r.groupby("user_id").get_group(u), u, t),
     "raised KeyError.*empty history"),
    (lambda r, u, t: [(i, t) for i in _history(r, u, t)], "not a list of item ids"),
    (lambda r, u, t: _history(r, u, t)[1:],  # no hint: the message ends with the table
     re.escape("returned [13, 12], expected [11, 13, 12]") + r".*\(1, 14, 400\)\)\.$"),
])
def test_check_history_explains_what_is_wrong(answer, explanation):
    with pytest.raises(ExerciseError, match=explanation):
        check_history(answer)
