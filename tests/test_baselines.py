"""Baselines on a small synthetic world drawn from a known biases + rank-3 model with noise."""
import numpy as np
import pandas as pd
import pytest

from llmrec_lab.metrics import rmse
from llmrec_lab.models import baselines
from llmrec_lab.models.baselines import (BayesianMF, Biases, GlobalMean, MatrixFactorization,
                                         make_model, score_all)

MF_KW = dict(n_factors=8, epochs=10)  # small and quick


def synthetic(seed: int = 0, n_users: int = 150, n_items: int = 80, rank: int = 3,
              density: float = 0.4, noise: float = 0.3) -> pd.DataFrame:
    """Ratings ``3.2 + b_u + b_i + p_u . q_i + noise`` clipped to 1..5, with MovieLens-like ids."""
    rng = np.random.default_rng(seed)
    user_ids, item_ids = 1000 + np.arange(n_users), 1 + np.arange(n_items)
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    P, Q = rng.normal(0, 0.8, (n_users, rank)), rng.normal(0, 0.8, (n_items, rank))
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    y = 3.2 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(0, noise, len(u))
    return pd.DataFrame({"user_id": user_ids[u], "item_id": item_ids[i],
                         "rating": np.clip(y, 1, 5), "timestamp": np.arange(len(u))})


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = synthetic()
    test = ratings.sample(frac=0.2, random_state=0)
    return ratings.drop(test.index), test


@pytest.fixture(scope="module")
def fitted(split) -> dict:
    train, _ = split
    return {"global-mean": GlobalMean().fit(train), "biases": Biases().fit(train),
            "mf": MatrixFactorization(**MF_KW).fit(train)}


def rmse_on(model, frame: pd.DataFrame) -> float:
    return rmse(frame["rating"], model.predict(frame["user_id"], frame["item_id"]))


def test_global_mean_predicts_the_mean(split, fitted):
    train, test = split
    pred = fitted["global-mean"].predict(test["user_id"], test["item_id"])
    np.testing.assert_allclose(pred, train["rating"].mean())


def test_each_model_beats_the_one_before(split, fitted):
    _, test = split
    errors = [rmse_on(fitted[name], test) for name in ("global-mean", "biases", "mf")]
    assert errors[0] > errors[1] > errors[2], errors


def test_mf_is_deterministic_for_a_seed(split, fitted):
    train, test = split
    again = MatrixFactorization(**MF_KW).fit(train)
    other_seed = MatrixFactorization(**MF_KW, seed=1).fit(train)
    ids = test["user_id"], test["item_id"]
    np.testing.assert_array_equal(again.predict(*ids), fitted["mf"].predict(*ids))
    assert not np.array_equal(other_seed.predict(*ids), fitted["mf"].predict(*ids))


def test_early_stopping_keeps_the_best_epoch(split):
    train, test = split
    model = MatrixFactorization(**{**MF_KW, "epochs": 40, "reg": 1e-4}, patience=2)
    model.fit(train, valid=test)  # almost no regularisation: it overfits, so it must stop early
    best = min(h["valid_rmse"] for h in model.history_)
    assert len(model.history_) < 40
    assert rmse_on(model, test) == pytest.approx(best)


def test_each_epoch_ends_with_the_items_exact_least_squares_solution(split, fitted):
    # the loss is sum (score - r)^2 + reg * (b_u^2 + |p_u|^2 + b_i^2 + |q_i|^2) over the ratings;
    # the epoch's last step solves it exactly for the items, so its item gradient is zero there
    train, _ = split
    model = fitted["mf"]
    u, i = model.users_.get_indexer(train["user_id"]), model.items_.get_indexer(train["item_id"])
    err = model.score(train["user_id"], train["item_id"]) - train["rating"].to_numpy()
    n_items = len(model.items_)
    count = np.bincount(i, minlength=n_items)
    grad_b = np.bincount(i, err, n_items) + model.reg * count * model.bi_[:-1]
    grad_q = (np.stack([np.bincount(i, err * p, n_items) for p in model.P_[u].T], axis=1)
              + model.reg * count[:, None] * model.Q_[:-1])
    scale = np.abs(np.bincount(i, err, n_items)).max()  # what one term alone amounts to
    assert np.abs(grad_b).max() < 1e-4 * scale and np.abs(grad_q).max() < 1e-4 * scale


def test_a_huge_penalty_leaves_only_the_mean(split):
    train, test = split
    model = MatrixFactorization(**MF_KW, reg=1000.0).fit(train)  # biases are penalised too
    assert np.abs(model.Q_).max() < 1e-3 and np.abs(model.bi_).max() < 0.01
    np.testing.assert_allclose(model.predict(test["user_id"], test["item_id"]), model.mu_,
                               atol=0.01)


@pytest.mark.parametrize("name", ["biases", "mf"])
def test_unknown_ids_fall_back_to_known_biases(fitted, name):
    model = fitted[name]
    item, user = model.items_[0], model.users_[0]
    mu, b_item, b_user = model.mu_, model.bi_[0], model.bu_[0]
    scores = model.score(np.array([-1, -2, user, -1]), np.array([item, item, -5, -5]))
    np.testing.assert_allclose(scores, [mu + b_item, mu + b_item, mu + b_user, mu])


def test_predictions_are_clipped_to_the_training_scale():
    # user 0 and item 0 both rate/are rated high, so the unseen pair extrapolates past 5
    ratings = pd.DataFrame({"user_id": [0, 1, 1, 2], "item_id": [1, 0, 1, 2],
                            "rating": [5.0, 5.0, 4.0, 1.0], "timestamp": [0, 1, 2, 3]})
    model = Biases(reg_u=0.0, reg_i=0.0).fit(ratings)
    assert model.score(np.array([0]), np.array([0]))[0] > 5
    assert model.predict(np.array([0]), np.array([0]))[0] == 5.0


@pytest.mark.parametrize("name", ["global-mean", "biases", "mf"])
def test_predictions_stay_in_range_and_broadcast(fitted, name):
    model = fitted[name]
    grid = model.predict(model.users_.to_numpy()[:, None], model.items_.to_numpy()[None, :])
    assert grid.shape == (len(model.users_), len(model.items_))
    assert grid.min() >= model.scale_[0] and grid.max() <= model.scale_[1]


def test_score_all_matches_pairwise_scores(fitted):
    model = fitted["mf"]
    users, items = np.array([1000, 1003, 7, 1010]), np.array([5, 1, 999])
    matrix = score_all(model, users, items, chunk=3)  # chunks of 3 and 1 users
    pairwise = model.score(np.repeat(users, len(items)), np.tile(items, len(users)))
    np.testing.assert_allclose(matrix, pairwise.reshape(len(users), len(items)))


def test_make_model_builds_by_name_and_lists_valid_names():
    model = make_model("mf", seed=7, epochs=3)
    assert isinstance(model, MatrixFactorization) and (model.seed, model.epochs) == (7, 3)
    assert isinstance(make_model("biases", seed=7), Biases)  # deterministic: seed not needed
    with pytest.raises(ValueError, match="global-mean, biases, mf, bpmf"):
        make_model("svd")


def test_clear_errors_for_misuse(split):
    train, _ = split
    with pytest.raises(RuntimeError, match="not fitted"):
        Biases().predict(np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="lacks columns"):
        Biases().fit(train.drop(columns="rating"))
    with pytest.raises(ValueError, match="shape mismatch"):
        GlobalMean().fit(train).predict(np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(ValueError, match="reg must be > 0"):
        MatrixFactorization(reg=0.0)


BPMF_KW = dict(n_factors=8, sweeps=40, burn_in=15, noise_sd=0.3, keep=10)  # small and quick


@pytest.fixture(scope="module")
def bpmf(split) -> BayesianMF:
    return BayesianMF(**BPMF_KW).fit(split[0])


def test_bpmf_beats_mf_on_a_low_rank_world(split, fitted, bpmf):
    _, test = split
    assert rmse_on(bpmf, test) < rmse_on(fitted["mf"], test)


def test_bpmf_is_deterministic_for_a_seed(split, bpmf):
    train, test = split
    ids = test["user_id"], test["item_id"]
    np.testing.assert_array_equal(BayesianMF(**BPMF_KW).fit(train).predict(*ids),
                                  bpmf.predict(*ids))
    assert not np.array_equal(BayesianMF(**BPMF_KW, seed=1).fit(train).predict(*ids),
                              bpmf.predict(*ids))


def test_bpmf_averages_its_draws_clipped_for_ratings_unclipped_for_ranking(bpmf):
    users, items = np.array([1000, 1001, -1, 1002]), np.array([1, 2, 3, -7])
    draws = bpmf._draws(*bpmf._encode(users, items))
    assert draws.shape == (BPMF_KW["keep"], 4)
    np.testing.assert_allclose(bpmf.score(users, items), draws.mean(axis=0))
    np.testing.assert_allclose(bpmf.predict(users, items), np.clip(draws, 1, 5).mean(axis=0))
    # an unknown user or item has the all-zero row in every draw: the mean rating
    np.testing.assert_allclose(bpmf.score(users, items)[2:], bpmf.mu_)


def test_a_gibbs_step_draws_each_row_from_its_gaussian(monkeypatch):
    """With the prior held fixed, a user's draws have the mean and covariance of the Gaussian
    that its ratings and the items' vectors imply: the ridge solution, and the inverse of
    ``prior + precision * sum_i q_i q_i^T``."""
    rng = np.random.default_rng(0)
    k, prior_mean, prior = 2, np.array([0.3, -0.2]), np.array([[2.0, 0.5], [0.5, 1.0]])
    monkeypatch.setattr(baselines, "_normal_wishart", lambda rows, rng: (prior_mean, prior))
    items = rng.normal(size=(5, k))
    own, other = np.array([0, 0, 0, 1, 1]), np.array([0, 2, 4, 1, 3])
    residual, precision = rng.normal(size=5), 4.0
    side = baselines._GibbsSide(own, other, 2)
    draws = np.stack([side.draw(items, residual, np.zeros((2, k)), precision, rng)
                      for _ in range(20_000)])
    for user in (0, 1):
        q, r = items[other[own == user]], residual[own == user]
        cov = np.linalg.inv(prior + precision * q.T @ q)
        mean = cov @ (prior @ prior_mean + precision * q.T @ r)
        np.testing.assert_allclose(draws[:, user].mean(axis=0), mean, atol=0.01)
        np.testing.assert_allclose(np.cov(draws[:, user].T), cov, atol=0.01)


def test_bpmf_refuses_a_burn_in_past_its_sweeps_and_no_draws():
    with pytest.raises(ValueError, match="burn_in"):
        BayesianMF(sweeps=10, burn_in=10)
    with pytest.raises(ValueError, match="keep"):
        BayesianMF(keep=0)


def test_bpmf_with_item_vectors_predicts_cold_items_from_them():
    """Items whose vectors carry their true factors and bias: with the vectors, BPMF predicts
    items it never saw far better than the mean, which is all it has without them."""
    ratings = synthetic(seed=1)
    rng = np.random.default_rng(1)
    item_ids = np.sort(ratings["item_id"].unique())
    cold = rng.choice(item_ids, size=16, replace=False)
    train, test = ratings[~ratings["item_id"].isin(cold)], ratings[ratings["item_id"].isin(cold)]
    # the generator's own item biases and factors (what synthetic drew), slightly noised
    truth = synthetic_items(seed=1)
    vectors = truth[item_ids - 1] + rng.normal(0, 0.05, truth[item_ids - 1].shape)
    plain = BayesianMF(**BPMF_KW).fit(train)
    informed = BayesianMF(**BPMF_KW, item_ids=item_ids, item_vectors=vectors).fit(train)
    assert rmse_on(informed, test) < 0.8 * rmse_on(plain, test)
    np.testing.assert_allclose(plain.score(test["user_id"], test["item_id"]), plain.mu_)


def synthetic_items(seed: int, n_users: int = 150, n_items: int = 80, rank: int = 3
                    ) -> np.ndarray:
    """Each item's ``[b_i, q_i]`` as :func:`synthetic` draws them for ``seed``."""
    rng = np.random.default_rng(seed)
    rng.normal(0, 0.4, n_users)
    bi = rng.normal(0, 0.4, n_items)
    rng.normal(0, 0.8, (n_users, rank))
    return np.column_stack([bi, rng.normal(0, 0.8, (n_items, rank))])


def test_bpmf_item_vectors_are_checked(split):
    train, _ = split
    ids = np.sort(train["item_id"].unique())
    with pytest.raises(ValueError, match="one vector per id"):
        BayesianMF(item_ids=ids, item_vectors=np.zeros((len(ids) - 1, 2)))
    with pytest.raises(ValueError, match="does not list"):
        BayesianMF(**BPMF_KW, item_ids=ids[1:], item_vectors=np.zeros((len(ids) - 1, 2))
                   ).fit(train)


def test_the_vector_prior_draws_its_regression_from_the_matrix_normal_posterior():
    """Given the rows and their precision, ``B`` has the ridge solution as its mean, and its
    entries ``(f, c)`` and ``(g, d)`` covary by ``gram^-1[f, g] * precision^-1[c, d]``."""
    rng = np.random.default_rng(0)
    x, rows = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    precision = np.array([[2.0, 0.6], [0.6, 1.0]])
    prior = baselines._VectorPrior(x, reg=2.0)
    draws = np.stack([np.linalg.lstsq(x, prior.draw(rows, precision, rng), rcond=None)[0]
                      for _ in range(20_000)])  # B back from the shifts x B
    gram_inv = np.linalg.inv(x.T @ x + 2.0 * np.eye(3))
    np.testing.assert_allclose(draws.mean(axis=0), gram_inv @ x.T @ rows, atol=0.01)
    columns = np.linalg.inv(precision)
    assert draws[:, 0, 0].var() == pytest.approx(gram_inv[0, 0] * columns[0, 0], rel=0.05)
    cov = np.cov(draws[:, 0, 0], draws[:, 0, 1])[0, 1]  # one row of B, its two columns
    assert cov == pytest.approx(gram_inv[0, 0] * columns[0, 1], rel=0.1)
    assert np.allclose(prior.shift, x @ draws[-1])
