"""Metrics against values worked out by hand."""
import math

import numpy as np
import pytest

from llmrec_lab.metrics import (hit_rate_at_k, mae, ndcg_at_k, ranking_per_user, ranking_report,
                                recall_at_k, rmse, top_k)


def test_rmse_and_mae_on_tiny_arrays():
    # errors 0, 0, 2: RMSE = sqrt(4 / 3), MAE = 2 / 3
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert rmse(np.ones((2, 2)), np.ones((2, 2))) == 0.0


@pytest.mark.parametrize("metric", [rmse, mae])
def test_rating_errors_refuse_mismatched_or_empty(metric):
    with pytest.raises(ValueError, match="shape mismatch"):
        metric([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="shape mismatch"):  # would broadcast to 3x3
        metric(np.ones(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match="empty"):
        metric([], [])


def test_ndcg_by_hand():
    # relevant 1 and 3 at ranks 1 and 3: DCG = 1/log2(2) + 1/log2(4) = 1.5
    # ideal puts both at ranks 1 and 2: IDCG = 1 + 1/log2(3) = 1.6309...
    assert ndcg_at_k([1, 2, 3, 4], {1, 3}, k=3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_graded_ndcg_by_hand():
    # gains 2^1-1 = 1 for item 10, 2^2-1 = 3 for item 30: DCG = 1/1 + 3/log2(4) = 2.5
    # ideal order 30, 10: IDCG = 3/1 + 1/log2(3)
    assert ndcg_at_k([10, 20, 30], {10: 1, 30: 2}, k=3) == pytest.approx(
        2.5 / (3 + 1 / math.log2(3)))


def test_perfect_ranking_scores_one():
    assert ndcg_at_k([4, 2, 7, 1], {2, 4, 7}, k=3) == pytest.approx(1.0)
    assert ndcg_at_k([30, 10, 20], {10: 1, 30: 2}, k=3) == pytest.approx(1.0)


def test_ideal_dcg_stops_at_k():
    # five relevant items, two slots, both filled with relevant ones: NDCG 1, recall 2/5
    assert ndcg_at_k([1, 2], {1, 2, 3, 4, 5}, k=2) == pytest.approx(1.0)
    assert recall_at_k([1, 2], {1, 2, 3, 4, 5}, k=2) == pytest.approx(0.4)


def test_short_ranked_list_is_scored_as_is():
    # the one relevant item sits at rank 2 of a list shorter than k
    assert ndcg_at_k([9, 1], {1}, k=5) == pytest.approx(1 / math.log2(3))


def test_recall_and_hit_rate_edge_cases():
    assert recall_at_k([5, 6, 7], {6, 8}, k=2) == 0.5
    assert recall_at_k([5, 6, 7], {6, 8}, k=1) == 0.0
    assert hit_rate_at_k([5, 6, 7], {6, 8}, k=1) == 0.0
    assert hit_rate_at_k([5, 6, 7], {6, 8}, k=2) == 1.0
    assert recall_at_k([], {1}, k=3) == 0.0
    assert hit_rate_at_k(np.array([3, 1]), {1: 2.0, 3: 0}, k=1) == 0.0  # grade 0 is not relevant


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, hit_rate_at_k])
def test_per_user_metrics_refuse_bad_input(metric):
    with pytest.raises(ValueError, match="no relevant items"):
        metric([1, 2], set(), k=2)
    with pytest.raises(ValueError, match="no relevant items"):
        metric([1, 2], {1: 0, 2: 0}, k=2)
    with pytest.raises(ValueError, match="k must be"):
        metric([1, 2], {1}, k=0)
    with pytest.raises(ValueError, match="repeats"):
        metric([1, 1, 2], {1}, k=3)


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 3, 2], [0, 1, 2]])
    assert top_k(scores, 10).shape == (2, 4)


def test_ranking_report_excludes_seen_and_users_without_relevant():
    scores = np.array([[0.9, 0.1, 0.8, 0.5],   # seen item 0 removed: ranks 2, 3 -> hit
                       [0.1, 0.2, 0.3, 0.4],   # ranks 3, 2; relevant 0 missed
                       [0.5, 0.5, 0.5, 0.5]])  # no relevant items: left out
    report = ranking_report(scores, [{2}, {0}, set()], k=2, exclude=[{0}, set(), set()])
    assert report == pytest.approx({"ndcg@2": 0.5, "recall@2": 0.5, "hit_rate@2": 0.5,
                                    "users": 2})


def test_ranking_per_user_rows_are_the_users_with_relevant_items():
    scores = np.array([[0.9, 0.1, 0.8, 0.5],
                       [0.5, 0.5, 0.5, 0.5],   # no relevant items: no row
                       [0.1, 0.2, 0.3, 0.4]])
    table = ranking_per_user(scores, [{2}, set(), {0}], k=2, exclude=[{0}, set(), set()])
    assert table.index.tolist() == [0, 2]
    assert table.loc[0, "hit_rate@2"] == 1.0 and table.loc[2, "hit_rate@2"] == 0.0
    assert table.loc[0, "ndcg@2"] == 1.0  # item 0 excluded: item 2 ranks first


def test_ranking_report_with_item_ids_matches_positions():
    scores = np.array([[0.9, 0.1, 0.8, 0.5]])
    by_position = ranking_report(scores, [{2}], k=2, exclude=[{0}])
    by_id = ranking_report(scores, [{12}], k=2, exclude=[{10}], item_ids=np.array([10, 11, 12, 13]))
    assert by_id == by_position


def test_ranking_report_never_recommends_excluded_fillers():
    # only item 3 is left after exclusion, so the top 3 is just [3]: recall 1/2, not inflated
    report = ranking_report(np.array([[4.0, 3.0, 2.0, 1.0]]), [{3, 0}], k=3, exclude=[{0, 1, 2}])
    assert report["recall@3"] == 0.5
    assert report["ndcg@3"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ranking_report_checks_lengths():
    with pytest.raises(ValueError, match="relevant sets"):
        ranking_report(np.zeros((2, 3)), [{1}], k=1)
    with pytest.raises(ValueError, match="exclude sets"):
        ranking_report(np.zeros((2, 3)), [{1}, {2}], k=1, exclude=[set()])
    with pytest.raises(ValueError, match="no user"):
        ranking_report(np.zeros((2, 3)), [set(), set()], k=1)


def test_rmse_clips_predictions_to_the_scale_when_asked():
    # clipped to 1..5 the predictions are 1 and 5: errors 0 and 0
    assert rmse([1, 5], [0.2, 6.0], clip=(1, 5)) == 0.0
    assert rmse([1, 5], [0.2, 6.0]) == pytest.approx(math.sqrt((0.64 + 1) / 2))


def test_ranking_report_refuses_nan_scores():
    scores = np.array([[1.0, np.nan, 0.5], [0.1, 0.2, 0.3], [np.nan, np.nan, 1.0]])
    with pytest.raises(ValueError, match="NaN in 2 of 3 user rows"):
        ranking_report(scores, [{1}, {2}, {0}], k=2)
