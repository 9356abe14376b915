"""Property-based tests of every parser and validator that reads outside input.

Hypothesis writes the inputs: valid MovieLens files that must load exactly, damaged ones that
must fail with the library's one-line error naming file and line, arbitrary triples, damaged
world folders, and any text for ``--set``. Examples stay few and small, so the file runs in
seconds on one core.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmrec_lab.cli import main
from llmrec_lab.config import ParameterError, checked_fields
from llmrec_lab.datasets.movielens import (GENRES_100K, GENRES_1M, OCCUPATIONS_1M, RELEASES,
                                       load_movielens)
from llmrec_lab.world.generate import FILES, World, WorldConfig, WorldFileError, generate
from llmrec_lab.kg.build import COLUMNS, TripleError, TripleSet

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
FEW = settings(FAST, max_examples=12)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


@contextlib.contextmanager
def scratch():
    """A fresh folder per example (pytest's tmp_path is one folder per test, not per example)."""
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# --- MovieLens: valid files load exactly ------------------------------------------------------

ID = st.integers(0, 2**63 - 1)
NAME_CHARS = "|\n\r():"  # separators, line ends and the brackets of "(year)" stay out of names


def free_text(codec: str, min_size: int = 0) -> st.SearchStrategy[str]:
    """Text a field may hold: anything the file's codec writes, bar separators and line ends."""
    return st.text(st.characters(codec=codec, exclude_characters=NAME_CHARS), min_size=min_size,
                   max_size=12)


TITLE = free_text("latin-1", 1).filter(lambda t: t == t.strip() and t)
YEAR = st.none() | st.integers(1000, 9999)
LINE_END = st.sampled_from(["\n", "\r\n"])


def lines(rows: list[str], end: str, blank: bool) -> str:
    """Rows as a file: ``end`` after each, with a blank line between rows if ``blank``."""
    return "".join(row + end + (end if blank else "") for row in rows)


def load(name: str, files: dict[str, bytes]) -> tuple[Path, object]:
    """Write ``files`` (the release's others empty) and load them as ``name``; (folder, result)."""
    with scratch() as d:
        folder = d / name
        folder.mkdir()
        for file_name in RELEASES[name].files:
            (folder / file_name).write_bytes(files.get(file_name, b""))
        try:
            return folder, load_movielens(name, d, download=False)
        except ValueError as err:
            return folder, err


RATING_ROWS = st.lists(st.tuples(ID, ID, st.integers(1, 5), ID), max_size=15)


@FAST
@given(name=st.sampled_from(["ml-100k", "ml-1m"]), rows=RATING_ROWS, end=LINE_END,
       blank=st.booleans())
def test_ratings_load_exactly(name, rows, end, blank):
    release = RELEASES[name]
    text = lines([release.sep.join(map(str, row)) for row in rows], end, blank)
    _, data = load(name, {release.files[0]: text.encode()})
    got = data.ratings
    assert list(zip(got.user_id, got.item_id, got.rating, got.timestamp)) == rows
    assert got.rating.dtype == "float64" and got.user_id.dtype == "int64"


ITEM_100K = st.tuples(ID, TITLE, YEAR, YEAR, st.lists(st.booleans(), min_size=19, max_size=19),
                      free_text("latin-1"))


@FAST
@given(rows=st.lists(ITEM_100K, max_size=10), end=LINE_END)
def test_u_item_loads_exactly(rows, end):
    text = []
    for item, title, year, released, flags, url in rows:
        published = title if year is None else f"{title} ({year})"
        date = "" if released is None else f"01-Jan-{released}"
        text.append("|".join([str(item), published, date, "", url, *map(str, map(int, flags))]))
    _, data = load("ml-100k", {"u.item": lines(text, end, False).encode("latin-1")})
    items = data.items
    assert items.item_id.tolist() == [row[0] for row in rows]
    assert items.title.tolist() == [row[1] for row in rows]
    assert [None if pd.isna(y) else y for y in items.year] == [
        released if year is None else year for _, _, year, released, _, _ in rows]
    assert items.genres.tolist() == [[g for g, f in zip(GENRES_100K, row[4]) if f] for row in rows]


ITEM_1M = st.tuples(ID, TITLE, YEAR, st.lists(st.sampled_from(GENRES_1M), unique=True))


@FAST
@given(rows=st.lists(ITEM_1M, max_size=10), end=LINE_END)
def test_movies_dat_loads_exactly(rows, end):
    text = ["::".join([str(item), title if year is None else f"{title} ({year})", "|".join(genres)])
            for item, title, year, genres in rows]
    _, data = load("ml-1m", {"movies.dat": lines(text, end, False).encode("latin-1")})
    items = data.items
    assert items.item_id.tolist() == [row[0] for row in rows]
    assert items.title.tolist() == [row[1] for row in rows]
    assert [None if pd.isna(y) else y for y in items.year] == [row[2] for row in rows]
    assert items.genres.tolist() == [row[3] for row in rows]


USER = st.tuples(ID, st.integers(0, 120), st.sampled_from("MF"), st.integers(0, 20),
                 free_text("utf-8", 1), free_text("utf-8"))


@FAST
@given(name=st.sampled_from(["ml-100k", "ml-1m"]), rows=st.lists(USER, max_size=10),
       end=LINE_END)
def test_users_load_exactly(name, rows, end):
    if name == "ml-100k":
        text = ["|".join(map(str, [u, age, g, occ, zip_])) for u, age, g, _, occ, zip_ in rows]
        occupations = [row[4] for row in rows]
    else:
        text = ["::".join(map(str, [u, g, age, code, zip_])) for u, age, g, code, _, zip_ in rows]
        occupations = [OCCUPATIONS_1M[row[3]] for row in rows]
    _, data = load(name, {RELEASES[name].files[2]: lines(text, end, False).encode()})
    users = data.users
    assert list(zip(users.user_id, users.age, users.gender)) == [r[:3] for r in rows]
    assert users.occupation.tolist() == occupations
    assert users.zip.tolist() == [row[5] for row in rows]


# --- MovieLens: damaged files fail at their line, in one line ---------------------------------

# one valid line per file, and the kinds of damage each file can take: (field index, bad text)
VALID_LINE = {"u.data": "1\t2\t3\t881250949", "ratings.dat": "1::2::3::978300760",
              "u.item": "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join("0" * 18 + "1"),
              "movies.dat": "1::Toy Story (1995)::Animation|Comedy",
              "u.user": "1|24|M|technician|85711", "users.dat": "1::F::1::10::48067"}
FILE_OF = {f: name for name, r in RELEASES.items() for f in r.files}
ENCODING = {f: "latin-1" if f in ("u.item", "movies.dat") else "utf-8" for f in FILE_OF}
SEPARATOR = {"u.data": "\t", "ratings.dat": "::", "u.item": "|", "movies.dat": "::",
             "u.user": "|", "users.dat": "::"}
INT_FIELDS = {"u.data": [0, 1, 2, 3], "ratings.dat": [0, 1, 2, 3], "u.item": [0],
              "movies.dat": [0], "u.user": [0, 1], "users.dat": [0, 2, 3]}
DOMAIN = {"u.data": (2, ["0", "6", "-1"]), "ratings.dat": (3, ["-5"]),
          "u.item": (7, ["2", "x"]), "u.user": (2, ["m", "X", ""]), "users.dat": (1, ["?"]),
          "movies.dat": (0, [str(2**63)])}
NOT_AN_INT = (st.text(st.characters(codec="latin-1", exclude_characters="|\t:\n\r"), max_size=8)
              .filter(lambda t: not _is_int(t)) | st.integers(2**63, 2**80).map(str))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@st.composite
def damaged(draw) -> tuple[str, bytes, int]:
    """A file of valid lines with one damaged: (file name, bytes, the damaged line's number)."""
    file_name = draw(st.sampled_from(sorted(VALID_LINE)))
    fields = VALID_LINE[file_name].split(SEPARATOR[file_name])
    encoding = ENCODING[file_name]
    kind = draw(st.sampled_from(["fewer", "more", "int", "domain"]
                                + (["bytes"] if encoding == "utf-8" else [])))
    if kind == "fewer":
        fields = fields[:draw(st.integers(1, len(fields) - 1))]
    elif kind == "more":
        fields = fields + [draw(free_text("latin-1"))]
    elif kind == "int":
        fields[draw(st.sampled_from(INT_FIELDS[file_name]))] = draw(NOT_AN_INT)
    elif kind == "domain":
        index, bad = DOMAIN[file_name]
        fields[index] = draw(st.sampled_from(bad))
    line = SEPARATOR[file_name].join(fields).encode(encoding)
    if kind == "bytes":
        cut = draw(st.integers(0, len(line)))
        line = line[:cut] + b"\xff" + line[cut:]
    before, after = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    good = (VALID_LINE[file_name] + "\n").encode(encoding)
    return file_name, good * before + line + b"\n" + good * after, before + 1


@FAST
@given(case=damaged())
def test_damaged_movielens_file_fails_at_its_line(case):
    file_name, data, number = case
    folder, result = load(FILE_OF[file_name], {file_name: data})
    assert isinstance(result, ValueError), result
    message = str(result)
    assert message.startswith(f"{folder / file_name}, line {number}: ") and one_line(message)


@FAST
@given(file_name=st.sampled_from(sorted(VALID_LINE)),
       chunks=st.lists(st.binary(max_size=30) | st.sampled_from(list(VALID_LINE.values()))
                       .map(str.encode), max_size=6))
def test_garbage_movielens_file_loads_or_fails_in_one_line(file_name, chunks):
    folder, result = load(FILE_OF[file_name], {file_name: b"\n".join(chunks)})
    if isinstance(result, ValueError):
        assert str(result).startswith(f"{folder / file_name}, line ") and one_line(str(result))


# --- knowledge-graph triples ------------------------------------------------------------------

ENTITY = st.sampled_from(["item:1", "item:2", "brand:A", "", " "]) | st.text(max_size=4)
FIELD = ENTITY | st.none() | st.integers(0, 3) | st.just(math.nan)
ROW = (st.tuples(ENTITY, st.sampled_from(["r", "s", "\n", "two\nlines"]), ENTITY)
       | st.lists(FIELD, max_size=4).map(tuple) | st.text(min_size=3, max_size=3))


def expected_kept(rows: list, vocabulary: set[str] | None) -> list[int]:
    """The rows a validator must keep, by the rules in kg/build.py's docstring."""
    kept, seen = [], set()
    for n, row in enumerate(rows):
        ok = (not isinstance(row, str) and len(row) == 3
              and all(isinstance(v, str) and v.strip() for v in row) and row[0] != row[2]
              and (vocabulary is None or {row[0], row[2]} <= vocabulary) and row not in seen)
        if ok:
            kept.append(n)
            seen.add(row)
    return kept


@FAST
@given(rows=st.lists(ROW, max_size=12),
       vocabulary=st.none() | st.sets(st.sampled_from(["item:1", "item:2", "brand:A"])))
def test_triple_validation_keeps_exactly_the_valid_rows(rows, vocabulary):
    kept = expected_kept(rows, vocabulary)
    lenient = TripleSet.from_rows(rows, vocabulary, strict=False)
    assert [tuple(r) for r in lenient.triples.itertuples(index=False)] == [rows[n] for n in kept]
    assert sorted([p.row for p in lenient.report] + kept) == list(range(len(rows)))
    assert all(one_line(p.message) for p in lenient.report)
    if len(kept) == len(rows):
        assert len(TripleSet.from_rows(rows, vocabulary)) == len(rows)
    else:
        with pytest.raises(TripleError) as caught:
            TripleSet.from_rows(rows, vocabulary)
        first = lenient.report[0]
        assert f"row {first.row}: {first.message}" in str(caught.value)
        assert one_line(str(caught.value))


@FAST
@given(columns=st.lists(st.sampled_from(list(COLUMNS) + ["weight", "Head"]), max_size=4))
def test_triple_frame_needs_exactly_the_three_columns(columns):
    frame = pd.DataFrame([["a"] * len(columns)], columns=columns)
    if columns == list(COLUMNS):
        assert len(TripleSet.from_frame(frame, strict=False)) == 0  # a self-loop, reported
    else:
        with pytest.raises(TripleError, match="exactly the columns"):
            TripleSet.from_frame(frame)


# --- world parameters and folders -------------------------------------------------------------

JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(), inner, max_size=3), max_leaves=6)
NUMBER_TEXT = (st.integers(-10**6, 10**7).map(str) | st.floats().map(str)
               | st.sampled_from(["nan", "inf", "-inf", "1e400", "1_000", " 7 ", "0x10", "", "1.5",
                                  "-0.0"]))
SET_VALUE = NUMBER_TEXT | st.text(max_size=10)
PARAMETERS = list(checked_fields(WorldConfig))


def allowed(name: str, value) -> bool:
    """The contract of each world parameter, written out independently of the library."""
    if name == "name":
        return value in ("shop", "screen")
    if name == "text_style":
        return value in ("template", "reviews")
    if isinstance(value, bool):
        return False
    integer = {"n_users": (1, 10**6), "n_items": (1, 10**6), "n_days": (1, 10_000),
               "seed": (0, math.inf), "slate_size": (1, 100)}
    if name in integer:
        low, high = integer[name]
        return isinstance(value, int) and low <= value <= high
    if not isinstance(value, (int, float)):
        return False
    try:
        value = float(value)
    except OverflowError:
        return False
    low = -100 if name == "mu" else 0
    return math.isfinite(value) and low <= value <= 100 and (name != "noise_sd" or value > 0)


@FAST
@given(name=st.sampled_from(PARAMETERS), value=JSON_VALUE)
def test_world_config_accepts_exactly_the_allowed_values(name, value):
    small = dict(n_users=10, n_items=10, slate_size=1)
    expected = allowed(name, value) and (name != "slate_size" or value <= 10)
    try:
        config = WorldConfig(**{**small, name: value})
    except ParameterError as err:
        assert not expected
        assert str(err).startswith(f"world parameter {name}=") and one_line(str(err))
        assert " is not allowed: use " in str(err)
    else:
        assert expected and getattr(config, name) == value


@FAST
@given(data=st.data())
def test_damaged_config_json_is_refused_naming_the_file(data, saved_world):
    saved = WorldConfig(n_users=20, n_items=10, n_days=3)
    config = asdict(saved)
    key = data.draw(st.sampled_from([*config, "colour"]))
    damage = data.draw(st.sampled_from(["value", "drop", "bytes", "json"]))
    if damage == "value":
        config[key] = data.draw(JSON_VALUE)
        content = json.dumps(config).encode()
    elif damage == "drop":
        config.pop(key, None)
        content = json.dumps(config).encode()
    elif damage == "bytes":
        content = data.draw(st.binary(max_size=40))
    else:
        content = json.dumps(data.draw(JSON_VALUE)).encode()
    with scratch() as d:
        folder = shutil.copytree(saved_world, d / "w")
        (folder / "config.json").write_bytes(content)
        try:
            world = World.load(folder)
        except ParameterError as err:
            assert str(err).startswith(f"{folder / 'config.json'}: ") and one_line(str(err))
        except WorldFileError as err:  # a valid config of another size than the saved data
            assert WorldConfig(**json.loads(content)) != saved and one_line(str(err))
        else:
            assert asdict(world.config) == json.loads(content)


@FEW
@given(file_name=st.sampled_from(FILES), content=st.none() | st.binary(max_size=60))
def test_damaged_world_folder_fails_naming_the_file(file_name, content, saved_world):
    with scratch() as d:
        folder = shutil.copytree(saved_world, d / "w")
        if content is None:
            (folder / file_name).unlink()
        else:
            (folder / file_name).write_bytes(content)
        with pytest.raises((ValueError, OSError)) as caught:
            World.load(folder)
        assert file_name in str(caught.value) and one_line(str(caught.value))


@pytest.fixture(scope="module")
def saved_world(tmp_path_factory) -> Path:
    """A tiny saved world that the folder tests copy and damage."""
    return generate(WorldConfig(n_users=20, n_items=10, n_days=3)).save(
        tmp_path_factory.mktemp("world") / "w")


# --- the command line's --set -----------------------------------------------------------------

def cli(*argv: str) -> tuple[int, str]:
    """Run the command in-process: (exit code, stderr); a traceback would fail the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def refused(code: int, err: str, named: str) -> bool:
    """Exit 2 with one line on stderr that holds ``named``."""
    return (code == 2 and err.count("\n") == 1 and err.startswith("llmrec-lab world: error: ")
            and named in err and "Traceback" not in err)


def valid_setting(key: str, text: str) -> bool:
    """Whether ``--set key=text`` names a world parameter the command sets, with a good value."""
    if key not in PARAMETERS or key in ("name", "seed"):  # those two have their own arguments
        return False
    if key == "text_style":  # a string; --set strips the spaces around a value
        return allowed(key, text.strip())
    try:
        value = (int if key in ("n_users", "n_items", "n_days", "slate_size") else float)(text)
    except ValueError:
        return False
    return allowed(key, value)


@FAST
@given(key=st.sampled_from(PARAMETERS) | st.text(st.characters(exclude_characters="="),
                                                  max_size=8),
       text=SET_VALUE)
def test_set_any_text_is_a_valid_parameter_or_one_line_naming_it(key, text):
    with scratch() as d:
        # n_users=0 after the setting under test stops every run before a world is generated
        code, err = cli("world", "shop", "--profile", "ci", "--out", str(d / "w"),
                        f"--set={key}={text}", "--set", "n_users=0")  # "=": keys may start with "-"
        assert not (d / "w").exists()
    named = "n_users=0 is not allowed" if valid_setting(key, text) else (
        f"{key}=" if key in PARAMETERS else repr(key)[:37])  # long names are cut short
    assert refused(code, err, named)


@FEW
@given(key=st.sampled_from(["text", "image", "kg", "id", "boredom", "novelty", "noise_sd", "mu",
                            "slate_size", "sparkle"]),
       text=SET_VALUE)
@example(key="text", text="-0.0")  # once passed the check, then failed numpy's "scale < 0"
def test_set_end_to_end_writes_a_world_or_nothing(key, text):
    with scratch() as d:
        out = d / "w"
        code, err = cli("world", "shop", "--profile", "ci", "--out", str(out), "--set", "n_users=6",
                        "--set", "n_items=5", "--set", "n_days=2", "--set", f"{key}={text}")
        if code == 0:
            value = getattr(World.load(out).config, key)
            assert value == (int(text) if key == "slate_size" else float(text))
        else:
            assert refused(code, err, key) and not out.exists()


@FEW
@given(setting=st.sampled_from(["n_users=1.5", "n_days=0", "boredom=-1", "noise_sd=nan",
                                "image=inf", "slate_size=6", "seed=1"])
       | st.text(max_size=8).map(lambda t: f"zz{t}={t}")  # an unknown name
       | st.text(st.characters(exclude_characters="="), max_size=8))  # no KEY=VALUE
def test_refused_set_leaves_an_existing_world_unchanged(setting, cli_world):
    folder, before = cli_world
    code, err = cli("world", "shop", "--profile", "ci", "--out", str(folder), "--set", "n_users=6",
                    "--set", "n_items=5", "--set", "n_days=2", "--set", setting)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A world folder the command wrote, and its files' bytes."""
    folder = tmp_path_factory.mktemp("cli") / "w"
    assert cli("world", "shop", "--profile", "ci", "--out", str(folder), "--set", "n_users=6",
               "--set", "n_items=5", "--set", "n_days=2")[0] == 0
    return folder, {p.name: p.read_bytes() for p in folder.iterdir()}
