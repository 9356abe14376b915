"""Knowledge graphs: triple validation, extraction scoring, embedding export, determinism, cache."""
import json

import numpy as np
import pandas as pd
import pytest

from llmrec_lab.cli import main
from llmrec_lab.datasets.movielens import load_movielens, write_fixture
from llmrec_lab.world import make_world
from llmrec_lab.kg.build import TripleError, TripleSet, movielens_kg, world_kg
from llmrec_lab.kg.embed import KGEConfig, KGEmbedding, random_baseline, train_kge
from llmrec_lab.io import FolderNotOurs
from llmrec_lab.kg.extract import (gold_triples, lexicon_extract, paraphrase, plm_extract, score,
                                   spans)
from llmrec_lab.experiments.knowledge_graphs import ablation, ablation_predictions
from llmrec_lab.metrics import rmse
from llmrec_lab.models.kg_rater import KGRater, item_vectors, kg_features, standardize

GOOD = ("item:1", "has_brand", "brand:Nordvik")


@pytest.fixture(scope="module")
def small_world():
    return make_world("screen", "ci", seed=0, n_users=40, n_items=30, n_days=10)


@pytest.mark.parametrize("bad, kind, words", [
    (("item:1", "has_brand"), "malformed", "expected 3 fields"),
    ("item:1 has_brand brand:X", "malformed", "a string"),
    (("item:2", "", "brand:X"), "empty", "relation is empty"),
    (("", "has_brand", "brand:X"), "empty", "head is empty"),
    (("item:4", "substitute_of", "item:4"), "self_loop", "itself"),
    (GOOD, "duplicate", "duplicate of row 0"),
    (("item:5", "has_brand", "brand:Acme"), "unknown_entity", "'brand:Acme'"),
])
def test_each_invalid_row_is_named_or_reported(bad, kind, words):
    rows = [GOOD, bad]
    vocabulary = ["item:1", "item:2", "item:4", "item:5", "brand:Nordvik", "brand:X"]
    with pytest.raises(TripleError, match=f"row 1: .*{words}"):
        TripleSet.from_rows(rows, entities=vocabulary)
    checked = TripleSet.from_rows(rows, entities=vocabulary, strict=False)
    assert [(p.row, p.kind) for p in checked.report] == [(1, kind)]
    assert checked.triples.to_records(index=False).tolist() == [GOOD]


def test_unknown_entities_are_only_checked_against_a_vocabulary():
    assert len(TripleSet.from_rows([("item:5", "has_brand", "brand:Acme")])) == 1


def test_from_frame_refuses_wrong_columns():
    with pytest.raises(TripleError, match="exactly the columns"):
        TripleSet.from_frame(pd.DataFrame([GOOD], columns=["h", "r", "t"]))


def test_world_kg_has_every_relation_and_is_valid(small_world):
    kg = world_kg(small_world)
    assert {"has_genre", "has_studio", "director_is", "stars", "based_in", "has_length"} <= set(
        kg.relations)
    assert kg.report == []
    assert len(kg.without("director_is")) == len(kg) - small_world.config.n_items


def _degrees(graph: TripleSet) -> list[int]:
    return sorted(pd.concat([graph.triples["head"], graph.triples["tail"]]).value_counts())


def test_placebo_graph_keeps_the_shape_but_moves_every_item_fact(small_world):
    graph = world_kg(small_world)
    placebo = graph.placebo(seed=0)
    assert len(placebo) == len(graph) and placebo.relations == graph.relations
    assert set(placebo.entities) == set(graph.entities)
    assert _degrees(placebo) == _degrees(graph)
    old, new = graph.triples, placebo.triples
    items = old["head"].str.startswith("item:")
    assert (old.loc[~items, ["head"]].values == new.loc[~items, ["head"]].values).all()
    moved = (old.loc[items, "head"] != new.loc[items, "head"]).mean()
    assert moved > 0.9  # a random permutation keeps only a few items in place
    assert placebo.triples.equals(graph.placebo(seed=0).triples)
    TripleSet.from_frame(placebo.triples)  # still valid: no self-loop or duplicate appears


def test_movielens_kg_has_item_and_user_attribute_triples(tmp_path):
    ml = load_movielens("ml-100k", data_dir=write_fixture("ml-100k", tmp_path), download=False)
    kg = movielens_kg(ml.items, ml.users)
    by_relation = kg.triples.groupby("relation").size()
    assert by_relation["has_gender"] == by_relation["has_age"] == len(ml.users)
    year = int(ml.items["year"].dropna().iloc[0])
    assert (f"year:{year}", "in_decade", f"decade:{year // 10 * 10}s") in set(
        kg.triples.itertuples(index=False, name=None))


def test_extraction_scores_on_a_hand_made_case():
    gold = [("item:0", "has_category", "category:phone"),
            ("item:0", "has_brand", "brand:Nordvik"),
            ("item:1", "has_category", "category:laptop"),
            ("item:1", "has_quality", "quality:basic")]
    found = [("item:0", "has_category", "category:phone"),
             ("item:1", "has_category", "category:headset")]
    s = score(found, gold).set_index("relation")
    assert s.loc["all", ["precision", "recall"]].tolist() == [0.5, 0.25]
    assert s.loc["all", "f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert s.loc["has_brand", "recall"] == 0.0 and s.loc["has_brand", "f1"] == 0.0


def test_lexicon_finds_exact_names_and_misses_synonyms():
    from llmrec_lab.world.schemas import SHOP
    texts = ["The Nordvik phone (budget). Reviews call it excellent.",
             "The Nordvik smartphone (budget). Reviews call it superb."]
    found = set(lexicon_extract([0, 1], texts, SHOP))
    assert found == {("item:0", "has_category", "category:phone"),
                     ("item:0", "has_brand", "brand:Nordvik"),
                     ("item:0", "has_quality", "quality:excellent"),
                     ("item:1", "has_brand", "brand:Nordvik")}
    assert paraphrase(texts[:1], SHOP, rate=1.0) == [
        "The Nordvik smartphone (budget). Reviews call it superb."]
    assert spans("A b, c.") == ["a", "b", "c", "a b", "b c"]


def test_gold_triples_match_the_item_texts(small_world):
    gold = gold_triples(small_world)
    found = lexicon_extract(small_world.items["item_id"], small_world.items["text"],
                            small_world.schema)
    assert set(found) == set(gold) and len(gold) == 3 * small_world.config.n_items


def test_gold_triples_read_the_quality_word_the_text_quotes(small_world):
    """The gold quality comes from the item table, not from drawing the generator's stream
    again; a world whose texts are reviews has no gold word and is refused."""
    items = small_world.items
    assert all(w in t for w, t in zip(items["quality_word"], items["text"]))
    quality = {h: t for h, r, t in gold_triples(small_world) if r == "has_quality"}
    assert quality == {f"item:{i}": f"quality:{w}"
                       for i, w in zip(items["item_id"], items["quality_word"])}
    reviews = make_world("shop", "ci", seed=0, text_style="reviews", n_users=5, n_days=1)
    with pytest.raises(ValueError, match="template texts only"):
        gold_triples(reviews)


def test_plm_extractor_maps_a_synonym_to_its_entity():
    from llmrec_lab.world.schemas import SHOP
    from llmrec_lab.encoders.text import TextEncoder
    found = set(plm_extract([7], ["The Nordvik fridge, sold cheap."], SHOP, TextEncoder()))
    assert ("item:7", "has_category", "category:refrigerator") in found
    assert ("item:7", "has_brand", "brand:Nordvik") in found


def test_export_is_aligned_with_item_ids_and_masks_missing_items():
    kge = KGEmbedding(entities=["brand:a", "item:2", "item:0"], relations=["has"],
                      entity_emb=np.array([[1, 1], [2, 2], [0, 5]], dtype=np.float32),
                      relation_emb=np.zeros((1, 2), np.float32), metrics={}, config=KGEConfig(),
                      triples=pd.DataFrame([("item:0", "has", "brand:a"),
                                            ("item:2", "has", "brand:a"),
                                            ("item:0", "similar", "item:2")],
                                           columns=["head", "relation", "tail"]))
    e, mask = kge.items([0, 1, 2])
    assert mask.tolist() == [True, False, True]
    np.testing.assert_array_equal(e, [[0, 5], [0, 0], [2, 2]])
    r, has = kge.neighbourhood([0, 1, 2])
    assert has.tolist() == [True, False, True]
    np.testing.assert_allclose(r, [[1.5, 1.5], [0, 0], [0.5, 3]])  # item:0: brand:a, item:2


def test_random_baseline_matches_simulation():
    train = pd.DataFrame([("a", "r", "b"), ("a", "r", "c"), ("d", "r", "b")],
                         columns=["head", "relation", "tail"])
    test = pd.DataFrame([("a", "r", "e")], columns=["head", "relation", "tail"])
    n = 6  # a b c d e f
    exact = random_baseline(train, test, n)
    # tail query: 6 - 2 known other tails = 4 candidates; head query: 6 candidates
    expected = np.mean([sum(1 / k for k in range(1, 5)) / 4, sum(1 / k for k in range(1, 7)) / 6])
    assert exact["mrr"] == pytest.approx(expected)
    assert exact["hits@1"] == pytest.approx(np.mean([1 / 4, 1 / 6]))
    assert exact["hits@10"] == 1.0


def test_training_is_deterministic_for_a_seed(small_world):
    kg = world_kg(small_world)
    a = train_kge(kg, "distmult", epochs=5, seed=3, use_cache=False)
    b = train_kge(kg, "distmult", epochs=5, seed=3, use_cache=False)
    c = train_kge(kg, "distmult", epochs=5, seed=4, use_cache=False)
    np.testing.assert_array_equal(a.entity_emb, b.entity_emb)
    np.testing.assert_array_equal(a.relation_emb, b.relation_emb)
    assert a.metrics["mrr"] == b.metrics["mrr"]
    assert not np.array_equal(a.entity_emb, c.entity_emb)


def test_complex_embeddings_are_exported_as_real_arrays(small_world):
    kge = train_kge(world_kg(small_world), "rotate", dim=8, epochs=2, use_cache=False)
    assert kge.entity_emb.dtype == np.float32 and kge.entity_emb.shape[1] == 16


def test_cache_hit_returns_the_same_arrays_and_a_change_misses(small_world, tmp_path):
    kg = world_kg(small_world)
    first = train_kge(kg, "transe", epochs=5, cache_dir=tmp_path)
    again = train_kge(kg, "transe", epochs=5, cache_dir=tmp_path)
    assert not first.from_cache and again.from_cache
    np.testing.assert_array_equal(first.entity_emb, again.entity_emb)
    assert again.entities == first.entities and again.metrics == first.metrics
    assert not train_kge(kg, "transe", epochs=5, lr=0.01, cache_dir=tmp_path).from_cache
    assert not train_kge(kg.without("stars"), "transe", epochs=5, cache_dir=tmp_path).from_cache
    assert len(list((tmp_path / "kge").iterdir())) == 3


def test_cached_export_is_byte_identical_for_a_seed(small_world, tmp_path):
    kg = world_kg(small_world)
    train_kge(kg, "transe", epochs=3, cache_dir=tmp_path / "a")
    train_kge(kg, "transe", epochs=3, cache_dir=tmp_path / "b")
    (a,), (b,) = (list((tmp_path / root / "kge").iterdir()) for root in ("a", "b"))
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir()) and "meta.json" in files
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_cache_entry_holding_a_user_file_is_not_replaced(small_world, tmp_path):
    kg = world_kg(small_world)
    train_kge(kg, "transe", epochs=3, cache_dir=tmp_path)
    (entry,) = (tmp_path / "kge").iterdir()
    (entry / "meta.json").unlink()  # a miss: the next call trains and writes the entry again
    (entry / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOurs, match="notes.txt"):
        train_kge(kg, "transe", epochs=3, cache_dir=tmp_path)
    assert (entry / "notes.txt").read_text() == "mine"


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown KG embedding model"):
        KGEConfig(model="transh")


def test_kg_rater_predicts_cold_items_from_their_kg_neighbours(small_world):
    kge = train_kge(world_kg(small_world), "transe", epochs=5, use_cache=False)
    ids = small_world.items["item_id"].to_numpy()
    ratings = small_world.ratings
    train = ratings[ratings["item_id"] != 0]
    model = KGRater(ids, {"kg": kg_features(kge, ids)}, epochs=3).fit(train)
    users = np.arange(5)
    cold = model.predict(users, np.zeros(5, dtype=int))
    assert cold.shape == (5,) and np.all((cold >= 1) & (cold <= 5))
    # a cold item's prediction moves with the user's history, not only with the user bias
    assert not np.allclose(cold - model.base_.score(users, np.zeros(5, dtype=int)),
                           (cold - model.base_.score(users, np.zeros(5, dtype=int)))[0])
    assert model.predict(users[:, None], ids[None, :5]).shape == (5, 5)
    # scoring by training rows agrees with scoring by ids for items seen in training
    np.testing.assert_allclose(model._score(*model._encode(users, ids[1:6])),
                               model.score(users, ids[1:6]))


def test_ablation_scores_every_model_on_the_same_test_rows(small_world):
    kge = train_kge(world_kg(small_world), "transe", epochs=2, use_cache=False)
    blocks = {"kg": {"kg": kg_features(kge, small_world.items["item_id"].to_numpy())}}
    table = ablation_predictions(small_world, blocks, "warm", seed=1)
    assert list(table.columns) == ["user_id", "item_id", "rating", "few", "oracle", "biases",
                                   "kg"]
    assert table[["oracle", "biases", "kg"]].notna().all().all() and table["few"].any()
    summary = ablation(small_world, blocks, "warm", seed=1)
    assert summary["kg"] == pytest.approx(rmse(table["rating"], table["kg"]))
    few = table[table["few"]]
    assert summary["biases@few"] == pytest.approx(rmse(few["rating"], few["biases"]))
    with pytest.raises(ValueError, match="split must be"):
        ablation_predictions(small_world, blocks, "hot")


def test_item_vectors_follow_the_rating_rows():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    rows = pd.DataFrame({"item_id": [20, 10, 99, 20]})
    np.testing.assert_array_equal(item_vectors(rows, [10, 20], vectors),
                                  [[0, 1], [1, 0], [0, 0], [0, 1]])


def test_affinity_follows_what_the_user_thought_of_the_items_neighbours():
    # item 1 (never rated) is a neighbour of item 0 and far from item 2
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.0, -1.0]])
    ratings = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 2],
                            "item_id": [0, 2, 0, 2, 0, 3],
                            "rating": [5.0, 1.0, 1.0, 5.0, 3.0, 3.0],
                            "timestamp": np.arange(6)})
    model = KGRater([0, 1, 2, 3], {"kg": vectors}, epochs=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.affinities([0], [1])
    a = model.fit(ratings).affinities([0, 1, 9], [1, 1, 1])
    assert a.shape == (3, 2)
    assert a[0, 0] > 0.3 and a[1, 0] < -0.3  # liked item 0 / disliked it
    assert a[2].tolist() == [0.0, 0.0]  # an unknown user has no history
    assert a[0, 1] == pytest.approx(a[1, 1]) and a[0, 1] > 0  # same support: items 0 and 2


def test_cli_kg_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path))
    assert main(["kg", "--world", "screen", "--kge", "distmult", "--profile", "ci",
                 "--set", "kg=0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["link_prediction"]["mrr"] > result["link_prediction"]["random"]["mrr"]
    assert set(result["rmse"]) == {"oracle", "biases", "kg"}


def test_standardize_zeroes_constant_columns_even_with_float32_rounding():
    column = np.random.default_rng(0).normal(size=4).astype(np.float32) * 10
    constant = np.tile(column, (120, 1))  # each column constant; float32 means leave a tiny spread
    varying = np.random.default_rng(1).normal(3, 2, size=(120, 2)).astype(np.float32)
    z = standardize(np.hstack([constant, varying]))
    assert (z[:, :4] == 0).all()
    np.testing.assert_allclose(z[:, 4:].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, 4:].std(axis=0), 1, rtol=1e-5)
