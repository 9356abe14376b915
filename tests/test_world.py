"""The synthetic worlds: determinism, files, ground truth and the signals each channel carries."""
import filecmp

import numpy as np
import pytest
from safetensors.numpy import load_file

from llmrec_lab.data import dynamics
from llmrec_lab.data.world import FILES, World, WorldConfig, generate, make_world

SMALL = dict(n_users=120, n_items=60, n_days=15)


@pytest.fixture(scope="module", params=["shop", "screen"])
def world(request) -> World:
    return generate(WorldConfig(name=request.param, seed=3, **SMALL))


def test_same_seed_same_files(tmp_path, world):
    again = generate(world.config)
    a, b = world.save(tmp_path / "a"), again.save(tmp_path / "b")
    tables = [f for f in FILES if f != "truth.safetensors"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, tables, shallow=False)
    assert sorted(match) == sorted(tables), (mismatch, errors)
    # safetensors orders its JSON header by a hash map, so compare the tensors, not the bytes
    ta, tb = load_file(a / "truth.safetensors"), load_file(b / "truth.safetensors")
    assert ta.keys() == tb.keys()
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_other_seed_other_world(world):
    other = generate(WorldConfig(name=world.config.name, seed=4, **SMALL))
    assert not world.ratings.equals(other.ratings)


def test_save_load_round_trip(tmp_path, world):
    loaded = World.load(world.save(tmp_path / "w"))
    assert loaded.config == world.config
    assert loaded.ratings.equals(world.ratings)
    np.testing.assert_allclose(loaded.truth.taste_category, world.truth.taste_category)
    np.testing.assert_array_equal(loaded.state.consumed, world.state.consumed)
    assert loaded.truth.noise_sd == world.truth.noise_sd
    np.testing.assert_allclose(loaded.oracle_predict(world.ratings),
                               world.oracle_predict(world.ratings), rtol=1e-5)


def test_load_names_missing_file(tmp_path, world):
    path = world.save(tmp_path / "w")
    (path / "triples.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="triples.tsv"):
        World.load(path)


def test_save_replaces_existing_world_whole(tmp_path, world):
    path = world.save(tmp_path / "w")
    generate(WorldConfig(name=world.config.name, seed=9, **SMALL)).save(path)
    assert World.load(path).config.seed == 9
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no temporary directories left


def test_ratings_are_well_formed(world):
    r = world.ratings
    assert list(r.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert r["rating"].between(1, 5).all() and (r["rating"] % 1 == 0).all()
    assert not r.duplicated(["user_id", "item_id"]).any()  # nobody consumes an item twice
    assert r["user_id"].between(0, world.config.n_users - 1).all()
    assert r["item_id"].between(0, world.config.n_items - 1).all()
    assert r["timestamp"].is_monotonic_increasing or r["timestamp"].diff().min() > -86_400


def test_texts_never_mention_style_or_maker(world):
    s = world.schema
    for text in world.items["text"]:
        assert not any(style in text for style in s.styles)
        assert not any(maker in text for maker in s.makers)
    assert all(c in t for c, t in zip(world.items["category"], world.items["text"]))


def test_kg_reveals_maker(world):
    s, t = world.schema, world.truth
    triples = world.triples
    assert not triples.duplicated().any()
    assert (triples["relation"] == "based_in").sum() == len(np.unique(t.maker))
    if s.maker_per_brand:
        made_by = triples[triples.relation == "made_by"].set_index("head")["tail"]
        for i in range(5):
            assert made_by[f"brand:{s.brands[t.brand[i]]}"] == f"maker:{s.makers[t.maker[i]]}"
    else:
        directed = triples[triples.relation == "director_is"].set_index("head")["tail"]
        assert directed["item:0"] == f"director:{s.makers[t.maker[0]]}"


def test_oracle_is_the_noise_floor(world):
    r = world.ratings
    oracle = world.oracle_predict(r)
    floor = np.sqrt(np.mean((oracle - r["rating"]) ** 2))
    global_mean = np.sqrt(np.mean((r["rating"].mean() - r["rating"]) ** 2))
    assert floor < 0.8 * global_mean
    # the expected squared error of the oracle is the mean rating variance given the utility
    probs = dynamics.rating_probabilities(world.rating_truth["utility"].to_numpy(),
                                          world.truth.noise_sd)
    grid = np.arange(1.0, 6.0)
    variance = probs @ grid**2 - (probs @ grid) ** 2
    assert floor == pytest.approx(np.sqrt(variance.mean()), rel=0.05)


def test_expected_rating_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for u in (0.2, 2.7, 4.9):
        draws = np.clip(np.rint(u + rng.normal(0, 0.7, 200_000)), 1, 5)
        assert dynamics.expected_rating(np.array(u), 0.7) == pytest.approx(draws.mean(), abs=0.01)


def test_signal_switched_off_leaves_no_trace():
    w = generate(WorldConfig(seed=1, image=0.0, kg=0.0, **SMALL))
    assert np.all(w.truth.taste_style == 0) and np.all(w.truth.taste_maker == 0)


def test_profile_sets_sizes_and_rejects_unknown_parameter():
    w = make_world("shop", "ci", seed=0, n_days=5)
    assert (w.config.n_users, w.config.n_items, w.config.n_days) == (300, 120, 5)
    with pytest.raises(ValueError, match="colour"):
        WorldConfig.from_profile("shop", "ci", colour=1.0)
    with pytest.raises(ValueError, match="unknown world"):
        make_world("zoo", "ci")


def test_user_state_bookkeeping():
    truth_world = generate(WorldConfig(seed=2, **SMALL))
    t, state = truth_world.truth, truth_world.state
    consumed = truth_world.ratings.groupby("user_id").size()
    assert (state.consumed.sum(axis=1)[consumed.index] == consumed.to_numpy()).all()
    assert np.all(dynamics.return_probability(t, state)[state.churned] == 0)
    assert np.all(state.boredom >= 0)


def test_boredom_lowers_utility_of_a_repeated_category():
    w = generate(WorldConfig(seed=5, novelty=0.0, **SMALL))
    t, state = w.truth, dynamics.UserState.fresh(w.truth)
    items = np.flatnonzero(t.category == t.category[0])[:2]
    before = dynamics.utility(t, state, np.array([0]), items[1:], day=0)
    dynamics._update_after_consumption(t, state, np.array([0]), items[:1], before, day=0)
    after = dynamics.utility(t, state, np.array([0]), items[1:], day=0)
    assert after[0] == pytest.approx(before[0] - t.boredom_rate[0])
