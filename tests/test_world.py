"""The synthetic worlds: determinism, files, ground truth and the signals each channel carries."""
import hashlib
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from llmrec_lab.config import ParameterError, parse_setting
from llmrec_lab.world import behaviour
from llmrec_lab.world import generate as world_module
from llmrec_lab.world.schemas import REVERSERS, SOFTENERS
from llmrec_lab.world.generate import WHAT, FILES, World, WorldConfig, generate, make_world
from llmrec_lab.io import MARKER, FolderNotOurs

SMALL = dict(n_users=120, n_items=60, n_days=15)


@pytest.fixture(scope="module", params=["shop", "screen"])
def world(request) -> World:
    return generate(WorldConfig(name=request.param, seed=3, **SMALL))


def _contents(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_files(tmp_path, world):
    """Every file, the marker and truth.safetensors included, byte for byte. Several saves,
    because safetensors writes metadata in a hash map's order, which changes from call to call."""
    first = _contents(world.save(tmp_path / "a"))
    assert sorted(first) == sorted([*FILES, MARKER])
    again = generate(world.config)
    for k in range(6):
        assert _contents(again.save(tmp_path / f"b{k}")) == first


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


def test_save_into_an_empty_folder(tmp_path, world):
    (tmp_path / "w").mkdir()
    assert World.load(world.save(tmp_path / "w")).config == world.config


def test_save_refuses_a_folder_of_user_files(tmp_path, world):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "thesis.txt").write_text("years of work")
    with pytest.raises(FolderNotOurs) as err:
        world.save(tmp_path / "w")
    assert str(err.value) == (f"{tmp_path / 'w'} holds files llmrec-lab did not write; "
                              "choose an empty or new folder")
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["thesis.txt"]
    assert (tmp_path / "w" / "thesis.txt").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_save_refuses_a_world_folder_a_user_added_to(tmp_path, world):
    path = world.save(tmp_path / "w")
    (path / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOurs, match="notes.txt"):
        world.save(path)
    assert (path / "notes.txt").read_text() == "mine"


def test_failed_save_keeps_the_previous_world(tmp_path, world, monkeypatch):
    path = world.save(tmp_path / "w")
    before = _contents(path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(world_module, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(WorldConfig(name=world.config.name, seed=9, **SMALL)).save(path)
    assert _contents(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


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
    probs = behaviour.rating_probabilities(world.rating_truth["utility"].to_numpy(),
                                           world.truth.noise_sd)
    grid = np.arange(1.0, 6.0)
    variance = probs @ grid**2 - (probs @ grid) ** 2
    assert floor == pytest.approx(np.sqrt(variance.mean()), rel=0.05)


def test_static_floor_averages_the_users_state_out(world):
    r = world.ratings
    static = world.static_predict(r)
    # one pair by hand: its static utility shifted by each offset its user had in the log
    log = world.rating_truth[world.rating_truth["user_id"] == r["user_id"].iloc[0]]
    offsets = log["utility"] - world.truth.static_utility(log["user_id"], log["item_id"])
    by_hand = behaviour.expected_rating(
        world.truth.static_utility(r["user_id"].iloc[0], r["item_id"].iloc[0]) + offsets,
        world.truth.noise_sd).mean()
    assert static[0] == pytest.approx(by_hand)

    def error(p):
        return np.sqrt(np.mean((p - r["rating"]) ** 2))

    # it cannot see the moment, so it sits between the oracle and the global mean
    assert error(world.oracle_predict(r)) < error(static) < error(np.full(len(r), r["rating"].mean()))


def test_static_floor_is_the_noise_floor_without_boredom_or_novelty():
    world = make_world("shop", "ci", seed=0, boredom=0, novelty=0)
    np.testing.assert_allclose(world.static_predict(world.ratings),
                               world.oracle_predict(world.ratings), atol=1e-12)


def test_expected_rating_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for u in (0.2, 2.7, 4.9):
        draws = np.clip(np.rint(u + rng.normal(0, 0.7, 200_000)), 1, 5)
        assert behaviour.expected_rating(np.array(u), 0.7) == pytest.approx(draws.mean(), abs=0.01)


def test_signal_switched_off_leaves_no_trace():
    w = generate(WorldConfig(seed=1, image=0.0, kg=0.0, **SMALL))
    assert np.all(w.truth.taste_style == 0) and np.all(w.truth.taste_maker == 0)


def test_profile_sets_sizes_and_rejects_unknown_parameter():
    w = make_world("shop", "ci", seed=0, n_days=5)
    assert (w.config.n_users, w.config.n_items, w.config.n_days) == (300, 120, 5)
    with pytest.raises(ValueError, match="colour"):
        WorldConfig.from_profile("shop", "ci", colour=1.0)
    with pytest.raises(ParameterError, match="name='zoo' is not allowed: use one of shop, screen"):
        make_world("zoo", "ci")


@pytest.mark.parametrize("overrides, fragment", [
    (dict(n_users=1.5), "n_users=1.5 is not allowed: use an integer in 1..1000000"),
    (dict(n_users=True), "n_users=True is not allowed: use an integer"),
    (dict(n_items="40"), "n_items='40' is not allowed: use an integer"),
    (dict(n_days=0), "n_days=0 is not allowed: use an integer in 1..10000"),
    (dict(seed=-1), "seed=-1 is not allowed: use an integer >= 0"),
    (dict(boredom=-1.0), "boredom=-1.0 is not allowed: use a finite number in [0, 100]"),
    (dict(noise_sd=float("nan")), "noise_sd=nan is not allowed: use a finite number in (0, 100]"),
    (dict(noise_sd=0.0), "noise_sd=0.0 is not allowed: use a finite number in (0, 100]"),
    (dict(image=float("inf")), "image=inf is not allowed: use a finite number in [0, 100]"),
    (dict(kg=10**400), "kg=1000000000000000000000000000000000000... is not allowed"),
    (dict(n_items=3, slate_size=5), "slate_size=5 is not allowed: use an integer in 1..3"),
    (dict(n_users=10**6, n_items=10**6), "n_users * n_items must be at most 1,000,000,000"),
    (dict(text_style="essay"), "text_style='essay' is not allowed: use one of template, reviews"),
    (dict(text_style=1.0), "text_style=1.0 is not allowed: use one of template, reviews"),
])
def test_config_refuses_bad_values_in_one_line(overrides, fragment):
    with pytest.raises(ParameterError) as caught:
        WorldConfig(**overrides)
    message = str(caught.value)
    assert fragment in message and message.startswith("world parameter") and "\n" not in message


def test_config_normalises_numbers():
    config = WorldConfig(n_users=np.int64(40), kg=0, noise_sd=np.float32(0.5))
    assert type(config.n_users) is int and type(config.kg) is float and config.kg == 0.0
    assert type(config.noise_sd) is float
    signless = WorldConfig(n_users=5, n_items=5, n_days=2, text=-0.0, boredom=-0.0)
    assert str(signless.text) == str(signless.boredom) == "0.0"
    generate(signless)  # numpy refuses a scale of -0.0


def test_config_from_file_names_the_file_and_the_problem():
    saved = asdict(WorldConfig(n_users=40))
    assert WorldConfig.from_dict(saved, "w/config.json") == WorldConfig(n_users=40)
    cases = [([1, 2], "expected a JSON object"), ({**saved, "colour": 1}, "unknown world parameter"),
             ({k: v for k, v in saved.items() if k != "mu"}, "missing world parameter(s) mu"),
             ({**saved, "n_days": -3}, "n_days=-3 is not allowed")]
    for data, fragment in cases:
        with pytest.raises(ParameterError, match=re.escape(fragment)) as caught:
            WorldConfig.from_dict(data, "w/config.json")
        assert str(caught.value).startswith("w/config.json: ")


def test_user_state_bookkeeping():
    truth_world = generate(WorldConfig(seed=2, **SMALL))
    t, state = truth_world.truth, truth_world.state
    consumed = truth_world.ratings.groupby("user_id").size()
    assert (state.consumed.sum(axis=1)[consumed.index] == consumed.to_numpy()).all()
    assert np.all(behaviour.return_probability(t, state)[state.churned] == 0)
    assert np.all(state.boredom >= 0)


def test_boredom_lowers_utility_of_a_repeated_category():
    w = generate(WorldConfig(seed=5, novelty=0.0, **SMALL))
    t, state = w.truth, behaviour.UserState.fresh(w.truth)
    items = np.flatnonzero(t.category == t.category[0])[:2]
    before = behaviour.utility(t, state, np.array([0]), items[1:], day=0)
    behaviour._update_after_consumption(t, state, np.array([0]), items[:1], before, day=0)
    after = behaviour.utility(t, state, np.array([0]), items[1:], day=0)
    assert after[0] == pytest.approx(before[0] - t.boredom_rate[0])


# --- text styles: the template control and the reviews that have to be read --------------------

REVIEWS = dict(n_users=20, n_items=600, n_days=1)  # many items, a token log: texts are the point


def test_template_texts_and_streams_are_unchanged():
    """The default world is the control: its texts and every random draw stay as they were
    before the text styles existed (file hashes captured then)."""
    w = make_world("shop", "ci", seed=0)
    assert w.config.text_style == "template"
    assert w.items["text"][0] == "The Pennant washing machine (mid-range). Reviews call it basic."
    assert make_world("screen", "ci", seed=0).items["text"][1] == (
        "An uneven short thriller released by Sable Screen: The Northern Orchard.")
    folder = w.save(Path(tempfile.mkdtemp()) / "w")
    digests = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
               for name in ("items.csv", "ratings.csv", "triples.tsv", "truth.safetensors")}
    assert digests == {"items.csv": "2d574feaba4706c2", "ratings.csv": "901ae2fd4e521b53",
                       "triples.tsv": "13269ee16e53374c", "truth.safetensors": "cd30158673b40e3f"}
    # items.csv gained its quality_word column later; without it, the bytes are those captured
    # before the text styles existed.
    earlier = w.items.drop(columns="quality_word").to_csv(index=False, float_format="%.6g",
                                                          lineterminator="\n").encode()
    assert hashlib.sha256(earlier).hexdigest()[:16] == "1a4746c5c71fbbe0"


@pytest.fixture(scope="module", params=["shop", "screen"])
def reviewed(request) -> tuple[World, World]:
    """The same world (seed 0) with review texts and with template texts."""
    config = WorldConfig(name=request.param, seed=0, text_style="reviews", **REVIEWS)
    return generate(config), generate(WorldConfig(name=request.param, seed=0, **REVIEWS))


def test_reviews_change_only_the_texts(reviewed):
    """Review texts come from their own stream: ratings, truth, KG and the rest are the same."""
    reviews, template = reviewed
    assert reviews.ratings.equals(template.ratings)
    assert reviews.rating_truth.equals(template.rating_truth)
    assert reviews.triples.equals(template.triples)
    np.testing.assert_array_equal(reviews.truth.quality, template.truth.quality)
    assert reviews.items.drop(columns="text").equals(template.items.drop(columns="text"))
    assert not (reviews.items["text"] == template.items["text"]).any()


def test_reviews_are_deterministic_per_seed(reviewed):
    reviews = reviewed[0]
    assert generate(reviews.config).items["text"].equals(reviews.items["text"])
    other = generate(WorldConfig(**{**asdict(reviews.config), "seed": 1}))
    assert not other.items["text"].equals(reviews.items["text"])


def test_reviews_round_trip_and_keep_style_and_maker_out(tmp_path, reviewed):
    reviews = reviewed[0]
    assert World.load(reviews.save(tmp_path / "w")).items.equals(reviews.items)
    s = reviews.schema
    for text, category, brand, title in reviews.items[["text", "category", "brand",
                                                       "title"]].itertuples(index=False):
        assert category in text and brand in text and title in text
        assert not any(word in text for word in (*s.styles, *s.makers))


def _first_number(text: str, measure) -> float:
    """The number a text states for ``measure``, read against the measure's own sentence."""
    pattern = re.escape(measure.sentence).replace(r"\{n\}", r"(\d+)")
    return float(re.search(pattern, text).group(1))


def test_review_numbers_mean_something_only_against_the_category_norm(reviewed):
    reviews = reviewed[0]
    s, q = reviews.schema, reviews.truth.quality
    logs, against_norm = [], []
    for text, c in zip(reviews.items["text"], reviews.truth.category):
        measure = s.reviews.measures[c][0]
        value = np.log2(_first_number(text, measure))
        logs.append(value)
        sign = 1 if measure.higher_is_better else -1
        against_norm.append((value - np.log2(measure.norm)) * sign)
    read = np.corrcoef(against_norm, q)[0, 1]
    assert read > 0.8  # the number read against its norm tells quality well
    assert read - abs(np.corrcoef(logs, q)[0, 1]) > 0.3  # the bare number much less


def test_reviews_negate_and_negation_flips_the_meaning(reviewed):
    """A softened good word ("not exactly sturdy") marks worse items than the word alone."""
    reviews = reviewed[0]
    words, q = reviews.schema.reviews, reviews.truth.quality
    good = "|".join(map(re.escape, words.mild_good))
    texts = reviews.items["text"]
    negated = texts.str.contains(rf"\b(?:{'|'.join(SOFTENERS)}) (?:{good})\.")
    plain = texts.str.contains(rf"(?:is|it|feels|proves|calls it) (?:{good})\.")
    reversed_ = texts.str.contains("|".join(REVERSERS))
    assert negated.sum() > 30 and plain.sum() > 30 and reversed_.sum() > 30
    assert q[negated.to_numpy()].mean() < -0.2 and q[plain.to_numpy()].mean() > 0.2


def test_bag_of_words_recovers_quality_from_reviews(reviewed):
    """The signal is in the words: a linear bag-of-words model (with word pairs, so it can see
    negation) predicts quality on held-out items."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import Ridge

    reviews = reviewed[0]
    q = reviews.truth.quality
    words = CountVectorizer(ngram_range=(1, 2)).fit_transform(reviews.items["text"])
    fit = Ridge(alpha=3.0).fit(words[:450], q[:450])
    residual = fit.predict(words[450:]) - q[450:]
    assert 1 - np.mean(residual**2) / np.var(q[450:]) > 0.35


def test_text_style_is_set_by_name_and_refused_in_one_line():
    assert parse_setting(WorldConfig, "text_style=reviews", WHAT) == ("text_style", "reviews")
    with pytest.raises(ParameterError) as caught:
        parse_setting(WorldConfig, "text_style=Reviews", WHAT)
    assert str(caught.value) == ("world parameter text_style='Reviews' is not allowed: "
                                 "use one of template, reviews")
