"""MovieLens parsing, data-folder resolution, official folds, evaluation protocols and
synthetic fixtures."""
from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from llmrec_lab.datasets import movielens as ml
from llmrec_lab.datasets.movielens import (COLD_FRAC, COLD_SEEDS, PROTOCOLS, MovieLens,
                                           describe_item, find_data_dir, kfold, load_movielens,
                                           movielens_or_fixture, official_folds, protocol_folds,
                                           write_fixture)
from llmrec_lab.io import MARKER, FolderNotOurs

SIZES = {"n_users": 25, "n_items": 40, "n_ratings": 300}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test sees the user's data folder or cache."""
    monkeypatch.delenv("LLMREC_DATA_DIR", raising=False)
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))


def _replace_line(path: Path, number: int, line: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = line
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_fixture_parses_to_shared_schema(tmp_path, name):
    data = load_movielens(name, data_dir=write_fixture(name, tmp_path, **SIZES))
    assert isinstance(data, MovieLens) and data.name == name and data.source_dir == tmp_path / name
    r = data.ratings
    assert list(r.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert r.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "int64"]
    assert len(r) == SIZES["n_ratings"] and not r.duplicated(["user_id", "item_id"]).any()
    assert r.rating.between(1, 5).all()
    assert set(r.item_id) <= set(data.items.item_id) and set(r.user_id) <= set(data.users.user_id)
    assert len(data.items) == SIZES["n_items"] and len(data.users) == SIZES["n_users"]
    assert list(data.items.columns) == ["item_id", "title", "year", "genres", "text"]
    assert str(data.items.year.dtype) == "Int64" and data.items.item_id.dtype == "int64"
    assert list(data.users.columns) == ["user_id", "age", "gender", "occupation", "zip"]
    assert set(data.users.gender) <= {"M", "F"}
    assert all(isinstance(g, list) for g in data.items.genres)
    assert data.items.title.str.contains("Café").any()  # latin-1 survives the round trip
    for title, text in zip(data.items.title, data.items.text):
        assert title.removesuffix(", The") in text


def test_100k_undated_item_and_1m_occupation_names(tmp_path):
    items = load_movielens("ml-100k", write_fixture("ml-100k", tmp_path, **SIZES)).items
    undated = items[items.year.isna()]
    assert len(undated) == 2 and all(g == ["unknown"] for g in undated.genres)
    users = load_movielens("ml-1m", write_fixture("ml-1m", tmp_path, **SIZES)).users
    assert set(users.occupation) <= set(ml.OCCUPATIONS_1M)
    assert set(users.age) <= set(ml.AGE_GROUPS_1M)


def test_describe_item():
    assert describe_item("Usual Suspects, The", 1995, ["Crime", "Thriller"]) == \
        "The Usual Suspects (1995). Genres: Crime, Thriller."
    assert describe_item("City of Lost Children, The (Cité des enfants perdus, La)", 1995, []) == \
        "The City of Lost Children (Cité des enfants perdus, La) (1995)."
    assert describe_item("unknown", None, ["unknown"]) == "unknown."


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_fixture_is_deterministic(tmp_path, name):
    first = write_fixture(name, tmp_path / "a", **SIZES, seed=3)
    second = write_fixture(name, tmp_path / "b", **SIZES, seed=3)
    other = write_fixture(name, tmp_path / "c", **SIZES, seed=4)
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert any((first / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_fixture_rewrite_replaces_folder(tmp_path):
    write_fixture("ml-1m", tmp_path, **SIZES)
    folder = write_fixture("ml-1m", tmp_path, n_users=5, n_items=5, n_ratings=10)
    assert len(load_movielens("ml-1m", folder).ratings) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["ml-1m"]


def test_fixture_accepts_an_empty_folder_and_refuses_user_files(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    assert (write_fixture("ml-100k", tmp_path, **SIZES) / "u.data").is_file()
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("my own ratings\n")
    with pytest.raises(FolderNotOurs, match="ml-1m holds files llmrec-lab did not write"):
        write_fixture("ml-1m", tmp_path, **SIZES)
    assert [p.name for p in (tmp_path / "ml-1m").iterdir()] == ["ratings.dat"]
    assert (tmp_path / "ml-1m" / "ratings.dat").read_text() == "my own ratings\n"


def test_fixture_refuses_a_file_added_to_its_folder(tmp_path):
    folder = write_fixture("ml-1m", tmp_path, **SIZES)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOurs, match="notes.txt"):
        write_fixture("ml-1m", tmp_path, **SIZES)
    assert (folder / "notes.txt").read_text() == "mine"


def test_fixture_rejects_impossible_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_ratings"):
        write_fixture("ml-100k", tmp_path, n_users=2, n_items=2, n_ratings=5)


def test_official_folds_match_publisher_construction(tmp_path):
    folder = write_fixture("ml-100k", tmp_path, **SIZES)
    data = load_movielens("ml-100k", folder)
    folds = official_folds(data)
    assert len(folds) == 5
    key = ["user_id", "item_id"]
    all_pairs = set(map(tuple, data.ratings[key].to_numpy()))
    tests = [set(map(tuple, test[key].to_numpy())) for _, test in folds]
    assert set().union(*tests) == all_pairs and sum(map(len, tests)) == len(all_pairs)
    for (train, test), test_pairs in zip(folds, tests):
        assert set(map(tuple, train[key].to_numpy())) == all_pairs - test_pairs
        assert train.equals(train.sort_values(key, ignore_index=True))
    # fold 1 tests on the first fifth of u.data, as mku.sh builds it
    first_fifth = data.ratings.iloc[:len(data.ratings) // 5]
    assert tests[0] == set(map(tuple, first_fifth[key].to_numpy()))
    assert [len(t) for _, t in official_folds(folder)] == [len(t) for _, t in folds]


def test_official_folds_only_for_100k(tmp_path):
    data = load_movielens("ml-1m", write_fixture("ml-1m", tmp_path, **SIZES))
    with pytest.raises(ValueError, match="kfold"):
        official_folds(data)


def test_missing_fold_file(tmp_path):
    folder = write_fixture("ml-100k", tmp_path, **SIZES)
    (folder / "u3.test").unlink()
    with pytest.raises(FileNotFoundError, match="u3.test"):
        official_folds(folder)


def test_kfold_partitions_ml1m(tmp_path):
    ratings = load_movielens("ml-1m", write_fixture("ml-1m", tmp_path, **SIZES)).ratings
    folds = kfold(ratings, k=5, seed=0)
    test_index = pd.Index([]).append([test.index for _, test in folds])
    assert test_index.sort_values().equals(ratings.index)
    assert all(len(train) + len(test) == len(ratings) for train, test in folds)


def _same_folds(a: list, b: list) -> bool:
    return len(a) == len(b) and all(train_a.equals(train_b) and test_a.equals(test_b)
                                    for (train_a, test_a), (train_b, test_b) in zip(a, b))


def test_protocol_u1_u5_is_the_official_folds(tmp_path):
    data = load_movielens("ml-100k", write_fixture("ml-100k", tmp_path, **SIZES))
    folds = protocol_folds(data, "u1-u5", seed=7)  # the publisher's folds: the seed plays no part
    assert len(folds) == 5 and _same_folds(folds, official_folds(data))


def test_protocol_kfold5_is_seeded_kfold(tmp_path):
    data = load_movielens("ml-1m", write_fixture("ml-1m", tmp_path, **SIZES))
    assert _same_folds(protocol_folds(data, "kfold5", seed=3), kfold(data.ratings, k=5, seed=3))


def test_protocol_cold_items_draws(tmp_path):
    data = load_movielens("ml-100k", write_fixture("ml-100k", tmp_path, **SIZES))
    folds = protocol_folds(data, "cold-items", seed=3)
    assert len(folds) == COLD_SEEDS
    n_held_out = round(COLD_FRAC * data.ratings["item_id"].nunique())
    held_out = []
    for train, test in folds:
        assert len(train) + len(test) == len(data.ratings)
        assert not set(test["item_id"]) & set(train["item_id"])  # cold: no rating in training
        assert test["item_id"].nunique() == n_held_out
        held_out.append(frozenset(test["item_id"]))
    assert len(set(held_out)) == COLD_SEEDS  # each draw holds out other items
    assert _same_folds(protocol_folds(data, "cold-items", seed=3), folds)  # reproducible
    # draw k is seeded seed + k, whatever the number of draws
    assert _same_folds(protocol_folds(data, "cold-items", seed=4, n_draws=2), folds[1:3])
    assert not _same_folds(protocol_folds(data, "cold-items", seed=0), folds)


@pytest.mark.parametrize("name, protocol, kw, message", [
    ("ml-100k", "u6", {}, "unknown protocol 'u6'; choose one of " + ", ".join(PROTOCOLS)),
    ("ml-1m", "u1-u5", {}, "protocol 'u1-u5' is not defined for ml-1m (ml-100k: u1-u5, kfold5 "
                          "or cold-items; ml-1m: kfold5 or cold-items)"),
    ("ml-100k", "u1-u5", {"n_draws": 2}, "only cold-items has draws"),
    ("ml-100k", "cold-items", {"n_draws": 0}, "n_draws=0"),
])
def test_protocol_refused(tmp_path, name, protocol, kw, message):
    data = load_movielens(name, write_fixture(name, tmp_path, **SIZES))
    with pytest.raises(ValueError) as err:
        protocol_folds(data, protocol, **kw)
    assert message in str(err.value)


BAD_LINES = [
    ("ml-100k", "u.data", b"1\t2\t3", "expected 4 fields"),
    ("ml-100k", "u.data", b"1\t2\t6\t880000000", "rating 6 is outside 1..5"),
    ("ml-100k", "u.data", b"1\t2\t4.5\t880000000", "rating '4.5' is not an integer"),
    ("ml-100k", "u.data", b"x1\t2\t3\t880000000", "user_id 'x1' is not an integer"),
    ("ml-100k", "u.data", b"1\t2\t3\tyesterday", "timestamp 'yesterday' is not an integer"),
    ("ml-100k", "u.data", b"1\t2\t3\t-1", "timestamp -1 is negative"),
    ("ml-100k", "u.data", b"1\t2\t3\t88\xff0", "not valid utf-8"),
    ("ml-100k", "u1.base", b"1\t2", "expected 4 fields"),
    ("ml-100k", "u.item", b"1|Title (1995)|01-Jan-1995||url" + b"|2" * 19, "genre flags"),
    ("ml-100k", "u.item", b"1|Title (1995)", "expected 24 fields"),
    ("ml-100k", "u.user", b"1|24|X|writer|12345", "gender 'X'"),
    ("ml-100k", "u.user", b"1|old|M|writer|12345", "age 'old' is not an integer"),
    ("ml-1m", "ratings.dat", b"1::2::3", "expected 4 fields separated by '::'"),
    ("ml-1m", "ratings.dat", b"1::2::0::978300760", "rating 0 is outside 1..5"),
    ("ml-1m", "movies.dat", b"one::Title (1995)::Drama", "item_id 'one' is not an integer"),
    ("ml-1m", "movies.dat", b"1::Title (1995)", "expected 3 fields"),
    ("ml-1m", "users.dat", b"1::F::25::99::12345", "occupation code 99"),
]


@pytest.mark.parametrize("name, file, line, problem", BAD_LINES)
def test_malformed_line_is_named(tmp_path, name, file, line, problem):
    folder = write_fixture(name, tmp_path, **SIZES)
    _replace_line(folder / file, 3, line)
    with pytest.raises(ValueError) as err:
        official_folds(folder) if file == "u1.base" else load_movielens(name, folder)
    assert f"{folder / file}, line 3:" in str(err.value) and problem in str(err.value)


def test_blank_and_crlf_lines_are_tolerated(tmp_path):
    folder = write_fixture("ml-1m", tmp_path, **SIZES)
    path = folder / "ratings.dat"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n", 5) + b"\n\n")
    assert len(load_movielens("ml-1m", folder).ratings) == SIZES["n_ratings"]


def test_missing_file_says_how_to_provide_it(tmp_path):
    folder = write_fixture("ml-100k", tmp_path, **SIZES)
    (folder / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match=r"u\.user.*LLMREC_DATA_DIR"):
        load_movielens("ml-100k", tmp_path)


def test_unknown_release():
    with pytest.raises(ValueError, match="ml-100k, ml-1m"):
        load_movielens("ml-20m")


@pytest.mark.parametrize("point_at_release_folder", [False, True])
def test_env_data_dir(tmp_path, monkeypatch, point_at_release_folder):
    folder = write_fixture("ml-1m", tmp_path / "data", **SIZES)
    monkeypatch.setenv("LLMREC_DATA_DIR", str(folder if point_at_release_folder else folder.parent))
    assert find_data_dir("ml-1m", download=False) == folder
    assert len(load_movielens("ml-1m", download=False).ratings) == SIZES["n_ratings"]


def test_argument_beats_env_and_env_is_not_a_fallback(tmp_path, monkeypatch):
    folder = write_fixture("ml-100k", tmp_path / "arg", **SIZES)
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "empty"))
    assert find_data_dir("ml-100k", tmp_path / "arg") == folder
    with pytest.raises(FileNotFoundError, match=r"\$LLMREC_DATA_DIR .*empty"):
        find_data_dir("ml-100k")


def test_no_download_and_empty_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_movielens("ml-100k", download=False)


def _published_zip(tmp_path: Path, name: str) -> Path:
    """A fixture packed the way GroupLens packs a release: one top-level ``name/`` folder."""
    folder = write_fixture(name, tmp_path / "publisher", **SIZES)
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{name}/{path.name}")
    return archive


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_download_into_cache(tmp_path, monkeypatch, name):
    archive = _published_zip(tmp_path, name)
    data = archive.read_bytes()
    release = dataclasses.replace(ml.RELEASES[name], url=archive.as_uri(),
                                  md5=hashlib.md5(data).hexdigest(),
                                  sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(ml.RELEASES, name, release)
    loaded = load_movielens(name)
    assert loaded.source_dir == tmp_path / "cache" / name
    assert len(loaded.ratings) == SIZES["n_ratings"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["downloads", name]
    assert [p.name for p in (tmp_path / "cache" / "downloads").iterdir()] == [MARKER]
    # once cached, no network is needed
    monkeypatch.setitem(ml.RELEASES, name, dataclasses.replace(release, url="http://127.0.0.1:9/x"))
    assert load_movielens(name, download=False).ratings.equals(loaded.ratings)


def test_bad_archive_checksum_leaves_cache_empty(tmp_path, monkeypatch):
    archive = _published_zip(tmp_path, "ml-100k")
    release = dataclasses.replace(ml.RELEASES["ml-100k"], url=archive.as_uri())
    monkeypatch.setitem(ml.RELEASES, "ml-100k", release)
    with pytest.raises(ValueError, match=release.md5):
        load_movielens("ml-100k")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["downloads"]
    assert [p.name for p in (tmp_path / "cache" / "downloads").iterdir()] == [MARKER]


def test_offline_download_error_points_to_data_dir(monkeypatch):
    release = dataclasses.replace(ml.RELEASES["ml-1m"], url="http://127.0.0.1:9/ml-1m.zip")
    monkeypatch.setitem(ml.RELEASES, "ml-1m", release)
    with pytest.raises(OSError, match="LLMREC_DATA_DIR"):
        load_movielens("ml-1m")


def test_pinned_checksums():
    assert ml.RELEASES["ml-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
    assert ml.RELEASES["ml-1m"].md5 == "c4d9eecfca2ab87c1945afe126590906"


# --- movielens_or_fixture: the real release when at hand, else a fixture --------------------

FALLBACK = {"n_users": 12, "n_items": 15, "n_ratings": 90}  # unlike SIZES, to tell them apart


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """Where :mod:`tempfile` makes folders during the test, so that fixtures land in tmp_path."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _offline(monkeypatch) -> list[str]:
    """Make every download fail as it does without network; returns the URLs asked for."""
    asked = []

    def refuse(url, *args, **kwargs):
        asked.append(url)
        raise OSError(f"could not download {url}: no network")

    monkeypatch.setattr(ml, "fetch", refuse)
    return asked


def _sizes(data: MovieLens) -> dict[str, int]:
    return {"n_users": len(data.users), "n_items": len(data.items),
            "n_ratings": len(data.ratings)}


def test_or_fixture_without_data_or_download_writes_the_fixture(tmp_path, monkeypatch, scratch):
    asked = _offline(monkeypatch)
    data, is_real = movielens_or_fixture("ml-100k", download=False, **FALLBACK)
    assert is_real is False and isinstance(data, MovieLens) and data.name == "ml-100k"
    assert _sizes(data) == FALLBACK
    assert asked == []  # download=False never touches the network
    assert not (tmp_path / "cache").exists()  # nor the cache: the fixture is not the release
    assert data.source_dir.name == "ml-100k" and data.source_dir.parent.parent == scratch
    # the same seed gives the same fixture, in a new folder each time
    again, _ = movielens_or_fixture("ml-100k", download=False, **FALLBACK)
    assert again.source_dir != data.source_dir and again.ratings.equals(data.ratings)
    other, _ = movielens_or_fixture("ml-100k", download=False, seed=1, **FALLBACK)
    assert not other.ratings.equals(data.ratings)


def test_or_fixture_loads_data_dir_as_real(tmp_path, monkeypatch):
    asked = _offline(monkeypatch)
    folder = write_fixture("ml-100k", tmp_path / "data", **SIZES)
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "data"))
    for download in (False, True):
        data, is_real = movielens_or_fixture("ml-100k", download=download, **FALLBACK)
        assert is_real is True and data.source_dir == folder and _sizes(data) == SIZES
        assert data.ratings.equals(load_movielens("ml-100k", data_dir=folder).ratings)
    assert asked == []


@pytest.mark.parametrize("download", [False, True])
def test_or_fixture_raises_when_data_dir_lacks_the_release(tmp_path, monkeypatch, download):
    asked = _offline(monkeypatch)
    write_fixture("ml-1m", tmp_path / "data", **SIZES)  # the other release only
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"\$LLMREC_DATA_DIR .*data"):
        movielens_or_fixture("ml-100k", download=download, **FALLBACK)
    assert asked == []  # a typo in the folder is reported, not downloaded around


def test_or_fixture_raises_when_the_cached_release_is_broken(tmp_path, monkeypatch):
    asked = _offline(monkeypatch)
    write_fixture("ml-100k", tmp_path / "cache", **SIZES)
    (tmp_path / "cache" / "ml-100k" / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match="u.user"):
        movielens_or_fixture("ml-100k", download=True, **FALLBACK)
    assert asked == []


def test_or_fixture_falls_back_when_the_download_fails(tmp_path, monkeypatch, scratch):
    asked = _offline(monkeypatch)
    data, is_real = movielens_or_fixture("ml-100k", download=True, **FALLBACK)
    assert asked == [ml.RELEASES["ml-100k"].url]  # it did try the publisher
    assert is_real is False and _sizes(data) == FALLBACK
    assert data.source_dir.parent.parent == scratch
    assert not (tmp_path / "cache" / "ml-100k").exists()


def test_or_fixture_downloads_into_the_cache(tmp_path, monkeypatch):
    archive = _published_zip(tmp_path, "ml-100k")
    data = archive.read_bytes()
    monkeypatch.setitem(ml.RELEASES, "ml-100k", dataclasses.replace(
        ml.RELEASES["ml-100k"], url=archive.as_uri(), md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest()))
    loaded, is_real = movielens_or_fixture("ml-100k", download=True, **FALLBACK)
    assert is_real is True and loaded.source_dir == tmp_path / "cache" / "ml-100k"
    assert _sizes(loaded) == SIZES
    # the cache now holds it: found again with download=False and no network
    _offline(monkeypatch)
    again, is_real = movielens_or_fixture("ml-100k", download=False, **FALLBACK)
    assert is_real is True and again.ratings.equals(loaded.ratings)


def test_or_fixture_does_not_hide_a_corrupt_download(tmp_path, monkeypatch):
    archive = _published_zip(tmp_path, "ml-100k")  # not the archive the pinned digests name
    monkeypatch.setitem(ml.RELEASES, "ml-100k",
                        dataclasses.replace(ml.RELEASES["ml-100k"], url=archive.as_uri()))
    with pytest.raises(ValueError, match="checksum"):
        movielens_or_fixture("ml-100k", download=True, **FALLBACK)
