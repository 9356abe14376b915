"""Self-checks for the labs' exercises: run a learner's answer on hand-made cases and say what is
wrong with it, in words.

Each ``check_*`` function returns a short message when every case passes, and raises
:class:`ExerciseError` (an ``AssertionError``, so a notebook cell stops there) with an explanation
of the first failure otherwise: which input, what came back, what was expected, and, for the usual
mistakes, which mistake it looks like.

    >>> from llmrec_lab.exercises import check_rmse
    >>> check_rmse(my_rmse)
    'check_rmse: all 6 checks passed'
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["ExerciseError", "check_rmse", "check_ndcg", "check_split_no_leakage",
           "check_attention", "check_transe_score", "check_lora_params", "check_gap_closed",
           "check_masked_mse", "check_paired_interval", "check_token_accuracy", "check_history"]

SPLIT_KINDS = ("random", "temporal", "leave-last-out", "cold-start-items")


class ExerciseError(AssertionError):
    """An answer failed a check; the message says why."""


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _call(name: str, fn: Callable, *args, **kwargs) -> float:
    """``fn(*args, **kwargs)`` as a float, turning a crash or a non-number into a readable
    failure."""
    shown = ", ".join([repr(a.tolist()) if isinstance(a, np.ndarray) else repr(a) for a in args]
                      + [f"{key}={arg!r}" for key, arg in kwargs.items()])
    try:
        value = fn(*args, **kwargs)
    except Exception as error:  # the learner's code may fail in any way: report it, in words
        raise ExerciseError(f"{name}({shown}) raised {type(error).__name__}: {error}") from error
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"{name}({shown}) returned {value!r}, not a number") from error


def check_rmse(fn: Callable) -> str:
    """Check ``fn(y_true, y_pred) -> float``, a root mean squared error.

    It must accept lists and arrays, return the root of the *mean* squared error, and refuse
    inputs of different shapes (numpy would otherwise broadcast them into a wrong number).
    """
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0, 2.0])
    errors = y - p
    wrong = {
        "the mean absolute error (MAE): square the errors before averaging":
            np.mean(np.abs(errors)),
        "the mean squared error: take the square root at the end": np.mean(errors ** 2),
        "the root of the *sum* of squared errors: average them, do not add them up":
            np.sqrt(np.sum(errors ** 2)),
    }
    passed = 0

    value = _call("rmse", fn, np.array([3.0, 4.0, 5.0]), np.array([3.0, 4.0, 5.0]))
    if not _close(value, 0.0):
        raise ExerciseError(f"perfect predictions must give 0, got {value}")
    passed += 1

    expected = float(np.sqrt(np.mean(errors ** 2)))
    value = _call("rmse", fn, y, p)
    if not _close(value, expected):
        hint = next((why for why, v in wrong.items() if _close(value, v)), None)
        raise ExerciseError(
            f"rmse({y.tolist()}, {p.tolist()}) returned {value:.4f}, expected "
            f"sqrt((1 + 0 + 1 + 4) / 4) = {expected:.4f}"
            + (f". It looks like {hint}." if hint else "."))
    passed += 1

    value = _call("rmse", fn, p, y)
    if not _close(value, expected):
        raise ExerciseError(f"rmse must be symmetric: swapping the arguments gave {value:.4f}, "
                            f"not {expected:.4f}")
    passed += 1

    value = _call("rmse", fn, [1, 5], [2, 3])
    if not _close(value, math.sqrt(2.5)):
        raise ExerciseError(f"rmse([1, 5], [2, 3]) returned {value}, expected sqrt(2.5) = "
                            f"{math.sqrt(2.5):.4f}: convert lists (and integers) to float arrays")
    passed += 1

    for a, b, why in [
        (np.ones(3), np.ones(4), "3 ratings and 4 predictions"),
        (np.ones(3), np.ones((3, 1)),
         "shapes (3,) and (3, 1), which numpy broadcasts to a 3 x 3 table of differences"),
    ]:
        try:
            value = fn(a, b)
        except Exception:  # any exception is a refusal, which is what is asked
            passed += 1
            continue
        raise ExerciseError(
            f"rmse accepted {why} and returned {value!r}. Compare the shapes first and raise a "
            f"ValueError when they differ: a silent wrong number is worse than an error.")
    return f"check_rmse: all {passed} checks passed"


def _dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: the gain at rank r (from 1) divided by log2(r + 1)."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def check_ndcg(fn: Callable) -> str:
    """Check ``fn(ranked, relevant, k) -> float``, NDCG@k with binary relevance.

    ``ranked`` is a list of item ids, best first; ``relevant`` a set of item ids (gain 1 each);
    ranks start at 1 and are discounted by ``1 / log2(rank + 1)``; the ideal list holds
    ``min(k, len(relevant))`` relevant items, so a user with few relevant items can reach 1.
    """
    cases = [
        # ranked, relevant, k, what it checks
        ([7, 3, 9], {7, 3, 9}, 3, "every item relevant, best first"),
        ([1, 2, 3], {2}, 3, "one relevant item, at rank 2"),
        ([1, 2, 3, 4], {9}, 3, "no relevant item in the list"),
        ([5, 1, 2], {5}, 3, "one relevant item, at the top, with k larger than |relevant|"),
        ([1, 2, 3, 4, 5], {1, 5}, 3, "a relevant item below rank k, which must not count"),
        ([4, 8, 6, 2], {6, 2, 9}, 4, "relevant items at ranks 3 and 4, one never ranked"),
    ]
    for ranked, relevant, k, what in cases:
        top = [1.0 if item in relevant else 0.0 for item in ranked[:k]]
        ideal = [1.0] * min(k, len(relevant))
        expected = _dcg(top) / _dcg(ideal)
        value = _call("ndcg", fn, ranked, relevant, k)
        if _close(value, expected):
            continue
        wrong = {
            "the ideal DCG counts k relevant items, but this user has only "
            f"{len(relevant)}: the ideal list has min(k, |relevant|) of them":
                _dcg(top) / _dcg([1.0] * k),
            "the ranking was not cut at k: only the first k items count":
                _dcg([1.0 if i in relevant else 0.0 for i in ranked]) / _dcg(ideal),
            "the ideal DCG was built from the relevant items in the ranked list only: it must "
            "count every relevant item, ranked or not": _dcg(top) / (_dcg(sorted(top)[::-1]) or 1),
            "this is the DCG without the normalisation: divide by the ideal DCG": _dcg(top),
        }
        hint = next((why for why, v in wrong.items() if _close(value, v)), None)
        if not math.isfinite(value):
            hint = ("a division by zero: the top item's discount is log2(1 + 1) = 1, and the "
                    "ideal DCG of a user with relevant items is never 0")
        raise ExerciseError(
            f"ndcg({ranked}, {relevant}, k={k}) ({what}) returned {value:.4f}, expected "
            f"{expected:.4f}" + (f". It looks like {hint}." if hint else "."))
    return f"check_ndcg: all {len(cases)} checks passed"


def check_split_no_leakage(train: pd.DataFrame, test: pd.DataFrame, kind: str) -> str:
    """Check that a (train, test) split of ratings does not leak test information into train.

    ``kind`` names what the split promises: ``random`` (no rating in both parts), ``temporal``
    (every test rating is at or after every train rating), ``leave-last-out`` (each test user's
    test ratings are at or after all their train ratings) or ``cold-start-items`` (no test item
    appears in train). Every kind also promises the ``random`` one.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"kind must be one of {SPLIT_KINDS}, got {kind!r}")
    needed = {"user_id", "item_id", "timestamp"}
    for name, part in (("train", train), ("test", test)):
        missing = needed - set(part.columns)
        if missing:
            raise ExerciseError(f"{name} lacks the column(s) {sorted(missing)}: keep whole rows "
                                f"of the ratings table in each part")
        if part.empty:
            raise ExerciseError(f"{name} is empty: a split must put ratings in both parts")

    key = ["user_id", "item_id", "timestamp"]
    both = train[key].merge(test[key].drop_duplicates(), on=key)
    if len(both):
        row = both.iloc[0]
        raise ExerciseError(
            f"{len(both)} rating(s) are in both train and test, e.g. user {row.user_id} on item "
            f"{row.item_id} at {row.timestamp}: the model is then tested on what it trained on. "
            f"Assign each row to exactly one part.")

    if kind == "temporal":
        cut = test["timestamp"].min()
        late = int((train["timestamp"] > cut).sum())
        if late:
            raise ExerciseError(
                f"{late} train rating(s) are later than the earliest test rating ({cut}): a "
                f"temporal split trains on the past only. Sort by time and cut once.")
    elif kind == "leave-last-out":
        last_train = train.groupby("user_id")["timestamp"].max()
        first_test = test.groupby("user_id")["timestamp"].min()
        common = first_test.index.intersection(last_train.index)
        leaking = common[(last_train[common] > first_test[common]).to_numpy()]
        if len(leaking):
            user = leaking[0]
            raise ExerciseError(
                f"{len(leaking)} user(s) have train ratings after their test ratings, e.g. user "
                f"{user} (last train {last_train[user]}, first test {first_test[user]}): hold "
                f"out each user's *last* ratings, sorting each user's ratings by time.")
    elif kind == "cold-start-items":
        shared = sorted(set(train["item_id"]) & set(test["item_id"]))
        if shared:
            raise ExerciseError(
                f"{len(shared)} test item(s) also appear in train, e.g. item {shared[0]}: for "
                f"cold-start items, move *all* ratings of the chosen items to test.")
    return f"check_split_no_leakage({kind!r}): no leakage found"


def _call_array(name: str, fn: Callable, *args) -> np.ndarray:
    """``fn(*args)`` as a float array, turning a crash or a non-number into a readable failure."""
    try:
        value = fn(*args)
    except Exception as error:  # the learner's code may fail in any way: report it, in words
        raise ExerciseError(f"{name} raised {type(error).__name__}: {error}") from error
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"{name} returned {value!r}, not an array of numbers") from error


def _softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax that subtracts the maximum first, so large scores cannot overflow."""
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def check_attention(fn: Callable) -> str:
    """Check ``fn(queries, keys) -> weights``, scaled dot-product attention weights.

    ``queries`` is ``(n_queries, d)``, ``keys`` is ``(n_keys, d)``; the answer is
    ``(n_queries, n_keys)``: row ``q`` is the softmax over the keys of ``queries[q] . keys[k] /
    sqrt(d)``, so it sums to one. The check also feeds scores in the thousands, which a softmax
    that exponentiates them directly turns into ``inf / inf = nan``.
    """
    rng = np.random.default_rng(0)
    d, n_q, n_k = 4, 3, 5  # sqrt(d) = 2 differs from d and from 1; n_q != n_k shows the axis
    queries, keys = rng.normal(size=(n_q, d)), rng.normal(size=(n_k, d))
    scores = queries @ keys.T
    weights = _call_array("attention(queries (3 x 4), keys (5 x 4))", fn, queries, keys)
    if weights.shape != (n_q, n_k):
        raise ExerciseError(
            f"3 queries and 5 keys gave weights of shape {weights.shape}, expected (3, 5): one "
            f"row per query, one column per key (scores = queries @ keys.T)")
    if not np.isfinite(weights).all():
        raise ExerciseError("small scores gave non-finite weights: check the softmax")
    rows = weights.sum(axis=1)
    if not np.allclose(rows, 1.0, atol=1e-6):
        if np.allclose(weights.sum(axis=0), 1.0, atol=1e-6):
            why = ("the softmax ran over the queries (axis 0), so each *column* sums to one. "
                   "A query distributes its attention over the keys: softmax along the last "
                   "axis")
        else:
            why = ("apply a softmax over the keys: exp of each score divided by the row's sum "
                   "of exps")
        raise ExerciseError(f"each row of weights must sum to one, got row sums "
                            f"{np.round(rows, 4).tolist()}: {why}")
    if (weights < 0).any():
        raise ExerciseError("some weights are negative: dividing the scores by their sum is not "
                            "a softmax; exponentiate them first")
    expected = _softmax(scores / np.sqrt(d))
    if not np.allclose(weights, expected, rtol=1e-5, atol=1e-8):
        wrong = {
            "no scaling: divide the scores by sqrt(d) = 2, or a large d makes the softmax "
            "nearly one-hot and its gradients vanish": _softmax(scores),
            "the scores were divided by d = 4; the scale is sqrt(d) = 2, the standard "
            "deviation of a dot product of d unit-variance numbers": _softmax(scores / d),
            "the scores were multiplied by sqrt(d) instead of divided by it":
                _softmax(scores * np.sqrt(d)),
        }
        hint = next((why for why, v in wrong.items() if np.allclose(weights, v, rtol=1e-5)),
                    None)
        raise ExerciseError(
            f"the weights of query 0 are {np.round(weights[0], 4).tolist()}, expected "
            f"{np.round(expected[0], 4).tolist()}"
            + (f". It looks like {hint}." if hint else
               ": softmax over the keys of queries @ keys.T / sqrt(d)."))
    big = _call_array("attention(1000 * queries, keys)", fn, 1000 * queries, keys)
    if not np.isfinite(big).all():
        raise ExerciseError(
            "scores in the thousands gave non-finite weights (exp overflows to inf, and "
            "inf / inf is nan). Subtract each row's largest score before exponentiating: the "
            "softmax is unchanged by a shift, and the largest exponent becomes exp(0) = 1")
    big_expected = _softmax(1000 * scores / np.sqrt(d))
    if not np.allclose(big, big_expected, atol=1e-6):
        raise ExerciseError(f"scores in the thousands gave weights "
                            f"{np.round(big[0], 4).tolist()} for query 0, expected the nearly "
                            f"one-hot {np.round(big_expected[0], 4).tolist()}")
    return "check_attention: all 5 checks passed"


def check_transe_score(fn: Callable) -> str:
    """Check ``fn(h, r, t, p) -> score``, the TransE score ``-||h + r - t||_p``.

    ``h``, ``r``, ``t`` are vectors of one triple, or ``(n, d)`` arrays of ``n`` triples (then
    one score per row). The relation translates the head towards the tail, so a true triple
    has ``h + r`` close to ``t``; the score is the *negative* distance, higher for a more
    plausible triple; ``p`` is the norm's order (pykeen's TransE uses ``p = 1``).
    """
    h, r, t = np.array([1.0, 2.0, -1.0]), np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.0, 1.0])
    passed = 0
    for p in (1, 2):
        expected = -np.linalg.norm(h + r - t, ord=p)
        value = _call_array(f"score(h, r, t, p={p})", fn, h, r, t, p)
        if value.shape != ():
            raise ExerciseError(
                f"score(h, r, t, p={p}) for one triple returned an array of shape "
                f"{value.shape}, not one number: take the norm of h + r - t")
        value = float(value)
        if _close(value, expected):
            passed += 1
            continue
        other = 3 - p
        wrong = {
            "the distance itself: the score is its negative, so that a more plausible triple "
            "(a smaller distance) scores higher": -expected,
            f"the L{other} norm where p={p} was asked: pass ord=p to the norm":
                -np.linalg.norm(h + r - t, ord=other),
            "the squared distance: take the norm itself, not its square":
                -np.linalg.norm(h + r - t, ord=p) ** 2,
            "h - r + t: the relation is added to the head and the tail subtracted, h + r - t":
                -np.linalg.norm(h - r + t, ord=p),
            "the sum of the components of h + r - t, with no norm: positive and negative "
            "differences then cancel": -(h + r - t).sum(),
        }
        hint = next((why for why, v in wrong.items() if _close(value, v)), None)
        raise ExerciseError(
            f"score(h={h.tolist()}, r={r.tolist()}, t={t.tolist()}, p={p}) returned {value:.4f}, "
            f"expected -||h + r - t||_{p} = {expected:.4f}"
            + (f". It looks like {hint}." if hint else "."))

    value = _call("score", fn, h, r, h + r, 1)
    if not _close(value, 0.0):
        raise ExerciseError(f"a perfect translation, t = h + r, must score 0 (the best "
                            f"possible score), got {value}")
    passed += 1

    batch = np.stack([h, r, t]), np.stack([r, t, h]), np.stack([t, h, r])
    expected = -np.abs(batch[0] + batch[1] - batch[2]).sum(axis=1)
    values = _call_array("score on 3 triples at once (arrays of shape (3, 3)), p=1", fn,
                         *batch, 1)
    if values.shape != (3,):
        raise ExerciseError(
            f"three triples at once (h, r, t of shape (3, 3)) gave a result of shape "
            f"{values.shape}, expected (3,): one score per row. Take the norm along the last "
            f"axis (axis=-1); without it numpy computes one norm of the whole matrix")
    if not np.allclose(values, expected, rtol=1e-6):
        raise ExerciseError(f"three triples at once gave {values.tolist()}, expected "
                            f"{expected.tolist()}: take the norm of each row (axis=-1)")
    passed += 1
    return f"check_transe_score: all {passed} checks passed"


def check_lora_params(fn: Callable) -> str:
    """Check ``fn(d_in, d_out, rank, n_matrices) -> int``, the trainable parameters LoRA adds.

    LoRA freezes each adapted ``d_in -> d_out`` weight and trains two factors beside it, ``A``
    (``rank x d_in``) and ``B`` (``d_out x rank``), without biases (peft's default
    ``bias="none"``), so ``n_matrices`` adapted matrices add ``n_matrices * rank * (d_in +
    d_out)``. The cases include non-square matrices, where giving both factors one size shows.
    """
    cases = [
        # d_in, d_out, rank, n_matrices, what it checks
        (384, 384, 8, 12, "MiniLM: query and value projections in 6 layers, rank 8"),
        (1, 1, 1, 1, "the smallest case"),
        (768, 3072, 4, 1, "one non-square matrix (a feed-forward projection)"),
        (100, 10, 2, 3, "three non-square matrices"),
    ]
    for d_in, d_out, rank, n, what in cases:
        expected = n * rank * (d_in + d_out)
        value = _call("lora_params", fn, d_in, d_out, rank, n)
        if _close(value, expected):
            continue
        wrong = {
            "the size of the frozen weight W: LoRA trains only the factors A and B":
                n * d_in * d_out,
            "the frozen weights plus the factors: W stays frozen, count A and B only":
                n * (d_in * d_out + rank * (d_in + d_out)),
            "only one of the two factors: LoRA trains A (rank x d_in) and B (d_out x rank)":
                (n * rank * d_in, n * rank * d_out),
            "both factors counted at A's size, rank x d_in: B is d_out x rank, which differs "
            "when d_out != d_in": n * 2 * rank * d_in,
            "both factors counted at B's size, d_out x rank: A is rank x d_in, which differs "
            "when d_in != d_out": n * 2 * rank * d_out,
            "the count of one matrix: multiply by the number of adapted matrices":
                rank * (d_in + d_out),
            "the factors' sizes multiplied: A and B are separate tensors, so their sizes add":
                n * rank * d_in * rank * d_out,
            "a bias of d_out per matrix: the adapted layer's bias stays frozen "
            "(peft's bias='none')": n * (rank * (d_in + d_out) + d_out),
            "biases in A and B: peft builds both factors without bias":
                n * (rank * (d_in + d_out) + rank + d_out),
        }
        hint = next((why for why, v in wrong.items()
                     if any(_close(value, x) for x in np.atleast_1d(v))), None)
        raise ExerciseError(
            f"lora_params(d_in={d_in}, d_out={d_out}, rank={rank}, n_matrices={n}) ({what}) "
            f"returned {value:.12g}, expected {n} x {rank} x ({d_in} + {d_out}) = {expected}"
            + (f". It looks like {hint}." if hint else "."))
    return f"check_lora_params: all {len(cases)} checks passed"


def check_gap_closed(fn: Callable) -> str:
    """Check ``fn(value, greedy, oracle) -> float``, the share of the greedy-to-oracle gap closed.

    The share is ``(value - greedy) / (oracle - greedy)``: 0 at greedy, 1 at the oracle, negative
    below greedy, unclipped, and the same formula for a metric where less is better. With no
    gap (``greedy == oracle``) it is NaN, as in :func:`llmrec_lab.lus.metrics.gap_closed`, which
    marks one cell of a comparison table instead of losing the whole table to an error.
    """
    cases = [
        # value, greedy, oracle, what it checks
        (12.0, 10.0, 20.0, "a policy that closes a fifth of the gap"),
        (10.0, 10.0, 20.0, "greedy itself"),
        (20.0, 10.0, 20.0, "the oracle itself"),
        (8.0, 10.0, 20.0, "a policy worse than greedy"),
        (25.0, 10.0, 20.0, "a policy beyond the oracle"),
        (0.3, 0.4, 0.2, "a metric where less is better (churn)"),
    ]
    for value, greedy, oracle, what in cases:
        expected = (value - greedy) / (oracle - greedy)
        got = _call("gap_closed", fn, value, greedy, oracle)
        if _close(got, expected):
            continue
        wrong = {  # first match wins: the absolute value before the inverted sign
            "an absolute value: below greedy the share is negative": abs(expected),
            "the sign is inverted: a policy better than greedy closes a positive share, on a "
            "metric where less is better too (divide by oracle - greedy, sign included)":
                -expected,
            "a percentage: return the share (0.2), not the percentage (20)": 100 * expected,
            "the policy's value divided by the oracle's: divide by the gap, oracle - greedy":
                (value - greedy) / oracle if oracle else math.nan,
            "the policy's value as a share of the oracle's: measure from greedy, value - greedy, "
            "and divide by the gap, oracle - greedy": value / oracle if oracle else math.nan,
            "the share of the gap still open: the share closed is 1 minus that":
                (oracle - value) / (oracle - greedy),
            "a clipped share: below greedy the share is negative, beyond the oracle above 1":
                min(max(expected, 0.0), 1.0),
        }
        hint = next((why for why, v in wrong.items() if _close(got, v)), None)
        raise ExerciseError(
            f"gap_closed(value={value}, greedy={greedy}, oracle={oracle}) ({what}) returned "
            f"{got:g}, expected ({value} - {greedy}) / ({oracle} - {greedy}) = {expected:g}"
            + (f". It looks like {hint}." if hint else "."))
    no_gap = "when greedy equals the oracle there is no gap to close"
    try:
        got = fn(5.0, 5.0, 5.0)
    except Exception as error:  # a division by zero, or a deliberate refusal: explain either
        raise ExerciseError(f"gap_closed(5, 5, 5) raised {type(error).__name__}: {no_gap}. Return "
                            f"float('nan') then, as the library does, so that one cell of a "
                            f"table is marked, not the whole table lost.") from error
    if not (isinstance(got, (float, np.floating)) and math.isnan(got)):
        raise ExerciseError(f"gap_closed(5, 5, 5) returned {got!r}: {no_gap}, so no share "
                            f"(0, 1 or inf) is right. Return float('nan').")
    return f"check_gap_closed: all {len(cases) + 1} checks passed"


def check_masked_mse(fn: Callable) -> str:
    """Check ``fn(ratings, predictions, observed) -> float``, the MSE over observed pairs only.

    ``ratings`` and ``predictions`` are ``(n_users, n_items)`` arrays and ``observed`` a boolean
    array of the same shape that marks the cells with a rating. What unobserved cells of
    ``ratings`` hold is no rating at all: the check fills them with 0 once and with NaN once,
    and puts an observed rating of 0 (the source's scale is [0, 5]), so only the mask can say
    which cells count. Every observed rating weighs the same, as in the library's trainers.
    """
    observed = np.array([[1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 1]], dtype=bool)
    ratings = np.where(observed, [[4.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0],
                                  [3.0, 0.0, 0.0, 1.0]], 0.0)
    cases = [
        # predictions, what the unobserved cells of ratings hold
        (np.full(ratings.shape, 3.0), 0.0),
        (np.array([[3.5, 4.0, 1.0, 2.5], [1.0, 2.0, 3.0, 2.5], [2.0, 4.5, 0.5, 1.5]]), np.nan),
    ]
    for predictions, fill in cases:
        given = np.where(observed, ratings, fill)
        err = np.where(observed, ratings - predictions, 0.0) ** 2
        expected = float(err[observed].mean())
        value = _call("masked_mse", fn, given.copy(), predictions.copy(), observed.copy())
        if _close(value, expected):
            continue
        if math.isnan(value):
            raise ExerciseError(
                "masked_mse returned nan when the unobserved cells hold NaN: multiplying the "
                "errors by the mask keeps them (NaN * 0 is NaN). Select the observed cells "
                "instead, ratings[observed] - predictions[observed].")
        per_user = [err[u][observed[u]].mean() for u in range(len(err)) if observed[u].any()]
        nonzero = observed & (ratings != 0)
        wrong = {
            "every cell counted, the unobserved ones as ratings of 0: the source's sum over "
            "all items, which pulls every prediction towards 0":
                float(((given - predictions) ** 2).mean()),
            f"the observed errors summed but divided by all {ratings.size} cells instead of "
            f"the {int(observed.sum())} observed ones": float(err.sum() / ratings.size),
            "each user's mean taken first, then the mean over users: that weighs every user "
            "the same, not every rating": float(np.mean(per_user)),
            "the root mean squared error: the objective is the mean squared error, no root":
                math.sqrt(expected),
            "the observed cells found as ratings != 0 rather than from the mask: a rating of "
            "0 is a rating": float(((ratings - predictions)[nonzero] ** 2).mean()),
        }
        hint = next((why for why, v in wrong.items() if _close(value, v)), None)
        raise ExerciseError(
            f"masked_mse returned {value:.4f} for ratings {given.tolist()} (unobserved cells "
            f"hold {fill}), expected {expected:.4f}, the mean of the {int(observed.sum())} "
            f"observed squared errors" + (f". It looks like {hint}." if hint else "."))
    return f"check_masked_mse: all {len(cases)} checks passed"


def check_paired_interval(fn: Callable) -> str:
    """Check ``fn(loss_a, loss_b) -> (low, high)``, the 95% interval of the mean of
    ``loss_a - loss_b`` over paired units: Student's t on the per-unit differences, as
    :func:`llmrec_lab.stats.paired_interval` computes for one seed.

    Pairing is the point: the same users (or ratings) under two systems share everything about
    themselves, so the differences vary far less than either loss, and an interval that treats
    the two as separate samples is needlessly wide.
    """
    from scipy.stats import t as student_t

    rng = np.random.default_rng(0)
    base = rng.normal(10.0, 3.0, 40)  # what each user brings, whatever the system
    cases = [
        (base + rng.normal(-0.5, 0.4, 40), base, "40 users, A a little better on most"),
        (base[:6] + np.array([0.3, -0.1, 0.4, 0.2, 0.0, 0.5]), base[:6], "6 users: t, not z"),
        (base[:12], base[:12] + rng.normal(0.0, 1.0, 12), "12 users, no true difference"),
    ]
    for a, b, what in cases:
        d = a - b
        se = d.std(ddof=1) / np.sqrt(d.size)
        half = student_t.ppf(0.975, d.size - 1) * se
        expected = (d.mean() - half, d.mean() + half)
        try:
            got = tuple(float(x) for x in fn(a.copy(), b.copy()))
        except Exception as error:  # the learner's code may fail in any way: report it
            raise ExerciseError(f"paired interval ({what}) raised {type(error).__name__}: "
                                f"{error}; return a pair (low, high)") from error
        if len(got) == 2 and all(_close(g, e) for g, e in zip(got, expected)):
            continue
        welch = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        z = 1.959963984540054 * se
        wrong = {
            "the two losses treated as separate samples: take the difference per unit first, "
            "then one interval of those differences": (d.mean() - 1.96 * welch,
                                                       d.mean() + 1.96 * welch),
            "a normal (z) quantile: with few units use Student's t with n - 1 degrees of "
            "freedom": (d.mean() - z, d.mean() + z),
            "B - A: the interval is of A - B, so a negative one says A's loss is lower":
                (-d.mean() - half, -d.mean() + half),
            "the spread of the differences (their standard deviation), not the standard error "
            "of their mean: divide by the square root of n": (
                d.mean() - student_t.ppf(0.975, d.size - 1) * d.std(ddof=1),
                d.mean() + student_t.ppf(0.975, d.size - 1) * d.std(ddof=1)),
        }
        hint = next((why for why, w in wrong.items()
                     if len(got) == 2 and all(math.isclose(g, v, rel_tol=1e-3, abs_tol=1e-6)
                                              for g, v in zip(got, w))), None)
        raise ExerciseError(
            f"paired interval ({what}) returned {got}, expected "
            f"({expected[0]:.4f}, {expected[1]:.4f}): the mean of a - b plus or minus "
            f"t(0.975, n - 1) times the standard error of that mean"
            + (f". It looks like {hint}." if hint else "."))
    return f"check_paired_interval: all {len(cases)} checks passed"


def check_token_accuracy(fn: Callable) -> str:
    """Check ``fn(labels, predictions, ignore_index=-100) -> float``, a tagger's token accuracy.

    ``labels`` and ``predictions`` are integer arrays of shape ``(sentences, tokens)``. A label
    equal to ``ignore_index`` marks a position that is no word's first token ([CLS], [SEP], the
    padding, a word's later sub-words): the loss skips it (``-100`` is PyTorch's
    ``CrossEntropyLoss`` default), and so must the accuracy, or padding decides the score. The
    accuracy is the share of the remaining positions, all sentences pooled, where the prediction
    equals the label. In the cases the sentences hold different numbers of scored tokens (a mean
    of per-sentence accuracies then differs), no prediction equals ``ignore_index``, and one call
    passes another ``ignore_index`` (a hard-coded ``-100`` then shows).
    """
    cases = [
        # labels, predictions, ignore_index (None: the default), what it checks
        (np.array([[-100, 0, 3, 4, 0, -100], [-100, 3, -100, 0, -100, -100],
                   [-100, 0, 0, 0, 0, -100]]),
         np.array([[0, 0, 3, 0, 0, 0], [0, 0, 3, 0, 0, 0], [0, 0, 0, 0, 5, 0]]), None,
         "3 sentences: [CLS], [SEP], padding and a sub-word continuation labelled -100"),
        (np.array([[-1, 0, 3, 0, -1], [-1, 5, 6, -1, -1]]),
         np.array([[0, 0, 3, 3, 0], [0, 5, 0, 0, 0]]), -1, "2 sentences, ignore_index=-1"),
    ]
    for labels, predictions, ignore, what in cases:
        kwargs = {} if ignore is None else {"ignore_index": ignore}
        ignore = -100 if ignore is None else ignore
        scored = labels != ignore
        hits = (labels == predictions) & scored
        n_scored, n_hits, n_ignored = int(scored.sum()), int(hits.sum()), int((~scored).sum())
        expected = n_hits / n_scored
        value = _call("token_accuracy", fn, labels.copy(), predictions.copy(), **kwargs)
        if _close(value, expected):
            continue
        not_o = labels != 0
        wrong = {} if ignore == -100 else {
            f"the positions labelled {ignore} were scored, as wrong, although "
            f"ignore_index={ignore} was passed: use the argument, not a hard-coded -100":
                n_hits / labels.size,
        }
        wrong |= {
            f"the {n_ignored} ignored positions counted as correct, as in the source's report, "
            f"whose padding is labelled O and predicted O: score only the positions whose label "
            f"is not ignore_index": (n_hits + n_ignored) / labels.size,
            f"the {n_ignored} ignored positions counted as wrong: there the prediction is "
            f"compared with the label {ignore}, which no tag id equals. Score only the positions "
            f"whose label is not ignore_index": n_hits / labels.size,
            "the mean of the sentences' accuracies: that weighs a sentence with 2 scored tokens "
            "as much as one with 4. Pool the scored tokens of all sentences, then divide":
                float(np.mean([h[s].mean() for h, s in zip(labels == predictions, scored)])),
            f"a percentage: return the fraction ({expected:g}), not the percentage "
            f"({100 * expected:g})": 100 * expected,
            "the number of correct positions: divide it by the number of scored positions":
                n_hits,
            "the ignored positions scored instead of the others (labels == ignore_index where "
            "labels != ignore_index is meant)": float((predictions == labels)[~scored].mean()),
            "the tag O (id 0) skipped as if it were ignored: O is a tag, the commonest one; "
            "only ignore_index marks the positions to skip":
                (float((labels == predictions)[not_o].mean()),
                 float((labels == predictions)[not_o & scored].mean())),
        }
        hint = next((why for why, v in wrong.items()
                     if any(_close(value, x) for x in np.atleast_1d(v))), None)
        raise ExerciseError(
            f"token_accuracy ({what}) returned {value:.4f} for labels {labels.tolist()} and "
            f"predictions {predictions.tolist()}, expected {n_hits} correct of the {n_scored} "
            f"scored positions = {expected:.4f}" + (f". It looks like {hint}." if hint else "."))
    return f"check_token_accuracy: all {len(cases)} checks passed"


def _item_ids(name: str, value) -> list[int]:
    """A learner's list of item ids as ints, or a failure that says what came back instead."""
    if isinstance(value, pd.DataFrame):
        raise ExerciseError(f"{name} returned the rows (a DataFrame with columns "
                            f"{list(value.columns)}): return their item ids, oldest first, "
                            f"e.g. rows['item_id'].tolist()")
    if isinstance(value, (set, frozenset, dict)):
        raise ExerciseError(f"{name} returned a {type(value).__name__}, which keeps no order: "
                            f"return a list of item ids, oldest first")
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError("a string")
        items = list(value)
        ids = [int(x) for x in items]
        if any(float(x) != i for x, i in zip(items, ids)):
            raise ValueError("not whole numbers")
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"{name} returned {value!r}, not a list of item ids") from error
    return ids


def check_history(fn: Callable) -> str:
    """Check ``fn(ratings, user_id, timestamp) -> list[int]``, the history of one rating.

    The answer is the ids of the items that ``user_id`` rated strictly before ``timestamp``,
    oldest first; ratings with the same timestamp keep their order in the table. That is what
    :func:`llmrec_lab.models.plm_rater.build_examples` puts in a rating's history (before
    keeping the last few): a stable sort by time, then the ratings strictly earlier. A rating in
    its own history, or a later one, shows the model what it is asked to predict, and its test
    score then measures nothing. The check's table is not in time order, holds two ratings of
    the user at one timestamp, listed in the opposite order of their item ids, and another
    user's ratings interleaved; a user with no ratings (a new user) has an empty history.
    """
    rows = [  # user_id, item_id, timestamp; the rating of item 10 at 300 is the one predicted
        (1, 10, 300), (2, 20, 100), (1, 13, 200), (1, 11, 100), (1, 15, 500), (1, 12, 200),
        (2, 21, 250), (1, 14, 400),
    ]
    table = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"],
                         index=[7, 2, 5, 0, 6, 1, 4, 3])  # an index of a sampled table
    table.insert(2, "rating", [4.0, 2.0, 5.0, 3.0, 1.0, 4.0, 5.0, 2.0])
    shown = ", ".join(f"({u}, {i}, {t})" for u, i, t in rows)
    cases = [
        (1, 300, "user 1's rating of item 10"),
        (1, 100, "user 1's first rating"),
        (3, 300, "user 3, who has no ratings"),
    ]
    for user, ts, what in cases:
        name = f"history(ratings, user_id={user}, timestamp={ts}) ({what})"
        try:
            value = fn(table.copy(), user, ts)
        except Exception as error:  # the learner's code may fail in any way: report it, in words
            why = ("a user with no ratings has an empty history: return []" if user == 3 else
                   "return the item ids as a list")
            raise ExerciseError(f"{name} raised {type(error).__name__}: {error}; {why}") from error
        got = _item_ids(name, value)
        mine = table[table["user_id"] == user]
        time_of = dict(zip(mine["item_id"], mine["timestamp"]))
        before = mine[mine["timestamp"] < ts].sort_values("timestamp", kind="stable")
        expected = before["item_id"].tolist()
        if got == expected:
            continue
        at = [time_of.get(i) for i in got]
        in_order = set(got) == set(expected) and len(got) == len(expected) and len(got) > 1
        wrong = {
            f"other users' ratings are in it (items {sorted(set(got) - set(time_of))}): keep "
            f"only the rows whose user_id is {user}": not set(got) <= set(time_of),
            "all of the user's ratings, the later ones too: the history would show the model "
            "the future. Keep only the ratings with a timestamp strictly before the one "
            "predicted": len(got) > len(expected) and set(got) == set(time_of),
            f"ratings after {ts} are in it: the history would show the model the future. Keep "
            f"only the ratings strictly before the one predicted":
                any(t is not None and t > ts for t in at),
            f"the rating at {ts} itself is in its own history (<= where < is meant): the model "
            f"would read the rating it is asked to predict": ts in at,
            "newest first: a history lists the ratings oldest first, as build_examples writes "
            "it (render_example keeps the most recent, at the end)":
                in_order and all(a >= b for a, b in zip(at, at[1:])),
            "the two ratings with the same timestamp in another order than the table's: sort by "
            "timestamp alone with a stable sort (kind='stable'), as build_examples does":
                in_order and all(a <= b for a, b in zip(at, at[1:])),
            "the table's order: the table is not sorted by time, so sort the ratings by "
            "timestamp": in_order and got == [i for i in mine["item_id"] if i in set(expected)],
        }
        hint = next((why for why, matches in wrong.items() if matches), None)
        raise ExerciseError(
            f"{name} returned {got}, expected {expected}, the items user {user} rated before "
            f"{ts}, oldest first (rows (user_id, item_id, timestamp), in the table's order: "
            f"{shown})" + (f". It looks like {hint}." if hint else "."))
    return f"check_history: all {len(cases)} checks passed"
