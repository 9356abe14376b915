"""MovieLens 100k and 1M: find or fetch the publisher's files, parse them strictly, describe items.

The parsers read the publisher's formats line by line so that a damaged file fails loudly with
its path and line number instead of silently shifting columns. :func:`write_fixture` writes a
small synthetic dataset in the very same formats, so offline notebooks and tests exercise the
same parsing code as a real download. :func:`protocol_folds` defines the evaluation protocols
(``PROTOCOLS``: the official folds, seeded 5-fold, held-out items) once, for every caller.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_lab.datasets.download import download as fetch, extract_zip
from llmrec_lab.splits import cold_start_items, kfold
from llmrec_lab.io import atomic_folder, cache_dir

__all__ = ["COLD_FRAC", "COLD_SEEDS", "DATASET_PROTOCOLS", "DATA_ENV", "PROTOCOLS", "RELEASES",
           "MovieLens", "Release", "check_protocol", "describe_item", "find_data_dir", "kfold",
           "load_movielens", "movielens_or_fixture", "official_folds", "protocol_folds",
           "read_ratings", "write_fixture"]

DATA_ENV = "LLMREC_DATA_DIR"


@dataclass(frozen=True)
class Release:
    """Where a MovieLens release is published, its pinned digests, and its ratings/items/users files."""

    url: str
    md5: str  # published by GroupLens next to the archive
    sha256: str  # cross-checked against independent records of the same archive
    files: tuple[str, str, str]
    sep: str  # separator of the ratings file


RELEASES: dict[str, Release] = {
    "ml-100k": Release("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                       "0e33842e24a9c977be4e0107933c0723",
                       "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                       ("u.data", "u.item", "u.user"), "\t"),
    "ml-1m": Release("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                     "c4d9eecfca2ab87c1945afe126590906",
                     "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                     ("ratings.dat", "movies.dat", "users.dat"), "::"),
}

GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")
GENRES_1M = GENRES_100K[1:]
OCCUPATIONS_100K = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment",
                    "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing",
                    "none", "other", "programmer", "retired", "salesman", "scientist", "student",
                    "technician", "writer")
# users.dat stores occupations as codes 0..20; these are the names the ml-1m README gives them.
OCCUPATIONS_1M = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                  "customer service", "doctor/health care", "executive/managerial", "farmer",
                  "homemaker", "K-12 student", "lawyer", "programmer", "retired",
                  "sales/marketing", "scientist", "self-employed", "technician/engineer",
                  "tradesman/craftsman", "unemployed", "writer")
AGE_GROUPS_1M = (1, 18, 25, 35, 45, 50, 56)  # users.dat ages are the lower bounds of these bands
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class MovieLens:
    """One loaded release: ratings, item table with descriptive text, and user table."""

    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    source_dir: Path


# --- finding the files ------------------------------------------------------------------------

def _release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"unknown MovieLens release {name!r}; choose one of {', '.join(RELEASES)}")
    return RELEASES[name]


def _require(folder: Path, files: list[str] | tuple[str, ...], name: str) -> None:
    """Fail early, naming every missing file and how to provide it."""
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)} of MovieLens {name}; extract "
            f"{RELEASES[name].url} there, or point ${DATA_ENV} at a folder that holds {name}/")


def _locate(base: Path, name: str, origin: str) -> Path:
    """``base/name`` or ``base`` itself, whichever holds the release's ratings file."""
    release = _release(name)
    for folder in (base / name, base):
        if (folder / release.files[0]).is_file():
            _require(folder, release.files, name)
            return folder
    raise FileNotFoundError(
        f"{origin} {base} holds neither {name}/{release.files[0]} nor {release.files[0]}; "
        f"point it at the folder where {release.url} was extracted")


def _fetch(name: str, dest: Path) -> None:
    """Download the verified archive into the cache and extract its ``name/`` folder to ``dest``."""
    release = _release(name)
    try:
        archive = fetch(release.url, cache_dir("downloads", f"{name}.zip"), md5=release.md5,
                        sha256=release.sha256)
    except OSError as err:
        raise OSError(f"{err}; without network access, extract {release.url} yourself and set "
                      f"${DATA_ENV} to the folder that holds {name}/") from err
    extract_zip(archive, dest, member_root=name)
    archive.unlink()


def find_data_dir(name: str, data_dir: str | os.PathLike | None = None,
                  download: bool = True) -> Path:
    """The folder holding a release's files: ``data_dir``, else ``$LLMREC_DATA_DIR``, else the cache.

    An explicit folder that lacks the files is an error rather than a reason to download, so a
    typo never silently fetches a second copy.
    """
    _release(name)
    if data_dir is not None:
        return _locate(Path(data_dir), name, "data_dir")
    if os.environ.get(DATA_ENV):
        return _locate(Path(os.environ[DATA_ENV]), name, f"${DATA_ENV}")
    cached = cache_dir(name)
    if not cached.is_dir():
        if not download:
            raise FileNotFoundError(
                f"MovieLens {name} is not in the cache {cached}; pass download=True, or set "
                f"${DATA_ENV} to a folder that holds {name}/ extracted from {RELEASES[name].url}")
        _fetch(name, cached)
    return _locate(cached, name, "cache")


# --- parsing ----------------------------------------------------------------------------------

def _error(path: Path, number: int, problem: str) -> ValueError:
    return ValueError(f"{path}, line {number}: {problem}")


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; undecodable bytes are reported by line."""
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        number = data.count(b"\n", 0, err.start) + 1
        raise _error(path, number, f"not valid {encoding} text ({err.reason})") from None
    # split("\n"), not splitlines(): latin-1 byte 0x85 decodes to a character splitlines breaks on
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _fields(path: Path, number: int, line: str, sep: str, count: int) -> list[str]:
    fields = line.split(sep)
    if len(fields) != count:
        raise _error(path, number, f"expected {count} fields separated by {sep!r}, "
                                   f"found {len(fields)}")
    return fields


INT64 = range(-2**63, 2**63)  # the tables hold int64 columns


def _int(path: Path, number: int, field: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _error(path, number, f"{field} {text!r} is not an integer") from None
    if value not in INT64:
        raise _error(path, number, f"{field} {text!r} does not fit in 64 bits")
    return value


def read_ratings(path: str | os.PathLike, sep: str) -> pd.DataFrame:
    """Parse a ratings file (``u.data``, ``u1.base``, ``ratings.dat``...) into the shared schema."""
    path = Path(path)
    rows = []
    for number, line in _lines(path, "utf-8"):
        fields = _fields(path, number, line, sep, 4)
        try:
            user, item, rating, stamp = map(int, fields)
            fits = user in INT64 and item in INT64 and stamp in INT64
        except ValueError:
            fits = False
        if not fits:  # find and name the offending field
            for column, text in zip(RATING_COLUMNS, fields):
                _int(path, number, column, text)
        if not 1 <= rating <= 5:
            raise _error(path, number, f"rating {rating} is outside 1..5")
        if stamp < 0:
            raise _error(path, number, f"timestamp {stamp} is negative")
        rows.append((user, item, rating, stamp))
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return pd.DataFrame({"user_id": table[:, 0], "item_id": table[:, 1],
                         "rating": table[:, 2].astype(np.float64), "timestamp": table[:, 3]})


_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(.*?), (The|A|An)( \(.*\))?$")


def _split_title(raw: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; titles without a year keep ``None``."""
    match = _YEAR.match(raw)
    return (match.group(1), int(match.group(2))) if match else (raw.strip(), None)


def describe_item(title: str, year: int | None, genres: list[str]) -> str:
    """A short English description for the text encoder, e.g.
    ``"The Usual Suspects (1995). Genres: Crime, Thriller."``.

    Catalogue titles put articles last ("Usual Suspects, The"); they are moved to the front
    because a language model reads the natural form better.
    """
    match = _ARTICLE.match(title)
    name = f"{match.group(2)} {match.group(1)}{match.group(3) or ''}" if match else title
    if year is not None:
        name = f"{name} ({year})"
    known = [g for g in genres if g != "unknown"]
    return f"{name}. Genres: {', '.join(known)}." if known else f"{name}."


def _item_row(item_id: int, published_title: str, genres: list[str],
              fallback_year: int | None = None) -> tuple[int, str, int | None, list[str], str]:
    title, year = _split_title(published_title)
    year = fallback_year if year is None else year
    return item_id, title, year, genres, describe_item(title, year, genres)


def _items_frame(rows: list[tuple[int, str, int | None, list[str], str]]) -> pd.DataFrame:
    items = pd.DataFrame(rows, columns=["item_id", "title", "year", "genres", "text"])
    return items.astype({"item_id": "int64", "year": "Int64"})


def _read_items_100k(path: Path) -> pd.DataFrame:
    """``u.item``: id|title|release date|video release date|IMDb URL|19 genre flags (latin-1)."""
    rows = []
    for number, line in _lines(path, "latin-1"):
        fields = _fields(path, number, line, "|", 5 + len(GENRES_100K))
        flags = fields[5:]
        if set(flags) - {"0", "1"}:
            raise _error(path, number, f"genre flags must be 0 or 1, found {'|'.join(flags)}")
        genres = [genre for genre, flag in zip(GENRES_100K, flags) if flag == "1"]
        released = fields[2][-4:]  # "01-Jan-1995"; only used when the title has no year
        rows.append(_item_row(_int(path, number, "item_id", fields[0]), fields[1], genres,
                              int(released) if released.isdecimal() else None))
    return _items_frame(rows)


def _read_items_1m(path: Path) -> pd.DataFrame:
    """``movies.dat``: id::title (year)::Genre|Genre (latin-1)."""
    rows = []
    for number, line in _lines(path, "latin-1"):
        item, title, genres = _fields(path, number, line, "::", 3)
        rows.append(_item_row(_int(path, number, "item_id", item), title,
                              genres.split("|") if genres else []))
    return _items_frame(rows)


def _gender(path: Path, number: int, text: str) -> str:
    if text not in ("M", "F"):
        raise _error(path, number, f"gender {text!r} is not M or F")
    return text


def _users_frame(rows: list[tuple[int, int, str, str, str]]) -> pd.DataFrame:
    users = pd.DataFrame(rows, columns=["user_id", "age", "gender", "occupation", "zip"])
    return users.astype({"user_id": "int64", "age": "int64"})


def _read_users_100k(path: Path) -> pd.DataFrame:
    """``u.user``: id|age|gender|occupation|zip code."""
    rows = []
    for number, line in _lines(path, "utf-8"):
        user, age, gender, occupation, zip_code = _fields(path, number, line, "|", 5)
        rows.append((_int(path, number, "user_id", user), _int(path, number, "age", age),
                     _gender(path, number, gender), occupation, zip_code))
    return _users_frame(rows)


def _read_users_1m(path: Path) -> pd.DataFrame:
    """``users.dat``: id::gender::age band::occupation code::zip code."""
    rows = []
    for number, line in _lines(path, "utf-8"):
        user, gender, age, occupation, zip_code = _fields(path, number, line, "::", 5)
        code = _int(path, number, "occupation", occupation)
        if not 0 <= code < len(OCCUPATIONS_1M):
            raise _error(path, number, f"occupation code {code} is outside 0..20")
        rows.append((_int(path, number, "user_id", user), _int(path, number, "age", age),
                     _gender(path, number, gender), OCCUPATIONS_1M[code], zip_code))
    return _users_frame(rows)


_PARSERS = {"ml-100k": (_read_items_100k, _read_users_100k),
            "ml-1m": (_read_items_1m, _read_users_1m)}


def load_movielens(name: str, data_dir: str | os.PathLike | None = None,
                   download: bool = True) -> MovieLens:
    """Load ``"ml-100k"`` or ``"ml-1m"`` from ``data_dir``, ``$LLMREC_DATA_DIR`` or the cache.

    ml-1m ages are band lower bounds (1 = under 18, 18 = 18-24, ..., 56 = 56+) and its occupation
    codes are mapped to the README's names.
    """
    folder = find_data_dir(name, data_dir, download)
    release = RELEASES[name]
    ratings_file, items_file, users_file = release.files
    read_items, read_users = _PARSERS[name]
    return MovieLens(name=name, ratings=read_ratings(folder / ratings_file, release.sep),
                     items=read_items(folder / items_file), users=read_users(folder / users_file),
                     source_dir=folder)


def official_folds(source: MovieLens | str | os.PathLike | None = None,
                   download: bool = True) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """ml-100k's published ``u1.base/u1.test`` .. ``u5.base/u5.test`` as (train, test) pairs.

    Using the publisher's folds keeps results comparable with papers that report on them.
    ``source`` is a loaded ml-100k, a data folder, or ``None`` to resolve it as
    :func:`load_movielens` does.
    """
    if isinstance(source, MovieLens):
        if source.name != "ml-100k":
            raise ValueError(f"official folds exist only for ml-100k, not {source.name}; "
                             "use kfold() instead")
        folder = source.source_dir
    else:
        folder = find_data_dir("ml-100k", source, download)
    names = [f"u{i}.{part}" for i in range(1, 6) for part in ("base", "test")]
    _require(folder, names, "ml-100k")
    return [(read_ratings(folder / f"u{i}.base", "\t"), read_ratings(folder / f"u{i}.test", "\t"))
            for i in range(1, 6)]


# --- evaluation protocols ---------------------------------------------------------------------

PROTOCOLS = ("u1-u5", "kfold5", "cold-items")
# Each release's protocols, its default first: ml-1m ships without official folds.
DATASET_PROTOCOLS = {"ml-100k": PROTOCOLS, "ml-1m": ("kfold5", "cold-items")}
COLD_FRAC, COLD_SEEDS = 0.2, 5  # cold-items: share of the items held out, and draws


def _one_of(names: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def check_protocol(name: str, protocol: str) -> None:
    """Refuse, before any data is read, a protocol that is unknown or not defined for the
    release ``name`` (the official folds u1-u5 exist for ml-100k only)."""
    _release(name)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol not in DATASET_PROTOCOLS[name]:
        choices = "; ".join(f"{release}: {_one_of(protocols)}"
                            for release, protocols in DATASET_PROTOCOLS.items())
        raise ValueError(f"protocol {protocol!r} is not defined for {name} ({choices})")


def protocol_folds(data: MovieLens, protocol: str, seed: int = 0,
                   n_draws: int | None = None) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """The (train, test) pairs of ``protocol`` on a loaded release: the one place each
    MovieLens evaluation protocol is defined (``llmrec-lab evaluate`` and the benches call it).

    - ``"u1-u5"``: ml-100k's official folds (:func:`official_folds`); ``seed`` plays no part.
    - ``"kfold5"``: seeded 5-fold cross-validation of all the ratings (:func:`kfold`).
    - ``"cold-items"``: ``n_draws`` (None: ``COLD_SEEDS``) draws seeded ``seed``,
      ``seed + 1``, ..., each holding out all ratings of a ``COLD_FRAC`` of the items
      (:func:`~llmrec_lab.splits.cold_start_items`). Draw ``k`` is the same whatever
      ``n_draws``, so ``n_draws=1`` is the one draw seeded ``seed``.
    """
    check_protocol(data.name, protocol)
    if n_draws is not None and (protocol != "cold-items" or n_draws < 1):
        raise ValueError(f"n_draws={n_draws!r}: only cold-items has draws, and at least one")
    if protocol == "u1-u5":
        return official_folds(data)
    if protocol == "kfold5":
        return kfold(data.ratings, k=5, seed=seed)
    return [cold_start_items(data.ratings, frac_items=COLD_FRAC, seed=seed + k)
            for k in range(COLD_SEEDS if n_draws is None else n_draws)]


# --- synthetic fixtures in the publisher's formats --------------------------------------------

_TIME_RANGES = {"ml-100k": (874_724_710, 893_286_638), "ml-1m": (956_703_932, 1_046_454_590)}
_ADJECTIVES = ("Silent", "Crimson", "Lost", "Electric", "Midnight", "Golden", "Broken", "Hidden")
_NOUNS = ("River", "Café", "Garden", "Empire", "Letter", "Harbor", "Machine", "Frontier")


def _fixture_ratings(name: str, rng: np.random.Generator, n_users: int, n_items: int,
                     n_ratings: int) -> pd.DataFrame:
    """Distinct (user, item) pairs in random order, like ``u.data``."""
    cells = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    low, high = _TIME_RANGES[name]
    return pd.DataFrame({"user_id": cells // n_items + 1, "item_id": cells % n_items + 1,
                         "rating": rng.integers(1, 6, n_ratings),
                         "timestamp": rng.integers(low, high, n_ratings)})


def _ratings_bytes(ratings: pd.DataFrame, sep: str) -> bytes:
    return "".join(sep.join(map(str, row)) + "\n"
                   for row in ratings[list(RATING_COLUMNS)].itertuples(index=False)).encode()


def _fixture_movie(rng: np.random.Generator, k: int,
                   genres: tuple[str, ...]) -> tuple[str, int, list[str]]:
    """A made-up title (some with a trailing article and a latin-1 letter), year and genres."""
    title = f"{_ADJECTIVES[k % 8]} {_NOUNS[k // 8 % 8]}" + (f" {k // 64 + 1}" if k >= 64 else "")
    if rng.random() < 0.2:
        title += ", The"
    picked = set(rng.choice(len(genres), size=rng.integers(1, 4), replace=False))
    return title, int(rng.integers(1930, 1999)), [g for i, g in enumerate(genres) if i in picked]


def _fixture_100k(rng: np.random.Generator, ratings: pd.DataFrame, n_users: int,
                  n_items: int) -> dict[str, bytes]:
    items = []
    for k in range(n_items):
        title, year, genres = _fixture_movie(rng, k, GENRES_100K[1:])
        published, released = f"{title} ({year})", f"01-Jan-{year}"
        if k % 17 == 16:  # like ml-100k's item 267: no year, no date, genre "unknown"
            published, released, genres = title, "", ["unknown"]
        url = "http://us.imdb.com/M/title-exact?" + urllib.parse.quote(published, safe="(),")
        flags = "|".join("1" if g in genres else "0" for g in GENRES_100K)
        items.append(f"{k + 1}|{published}|{released}||{url}|{flags}\n")
    users = [f"{u}|{rng.integers(7, 74)}|{rng.choice(['M', 'F'])}|"
             f"{rng.choice(OCCUPATIONS_100K)}|{rng.integers(0, 100_000):05d}\n"
             for u in range(1, n_users + 1)]
    files = {"u.data": _ratings_bytes(ratings, "\t"), "u.item": "".join(items).encode("latin-1"),
             "u.user": "".join(users).encode()}
    # the publisher's mku.sh: fold i tests on the i-th fifth of u.data; both parts sorted
    for i, test_rows in enumerate(np.array_split(np.arange(len(ratings)), 5), 1):
        test = ratings.iloc[test_rows]
        for part, frame in (("test", test), ("base", ratings.drop(index=test.index))):
            files[f"u{i}.{part}"] = _ratings_bytes(frame.sort_values(["user_id", "item_id"]), "\t")
    return files


def _fixture_1m(rng: np.random.Generator, ratings: pd.DataFrame, n_users: int,
                n_items: int) -> dict[str, bytes]:
    movies = []
    for k in range(n_items):
        title, year, genres = _fixture_movie(rng, k, GENRES_1M)
        movies.append(f"{k + 1}::{title} ({year})::{'|'.join(genres)}\n")
    users = [f"{u}::{rng.choice(['M', 'F'])}::{rng.choice(AGE_GROUPS_1M)}::"
             f"{rng.integers(0, len(OCCUPATIONS_1M))}::{rng.integers(0, 100_000):05d}\n"
             for u in range(1, n_users + 1)]
    return {"ratings.dat": _ratings_bytes(ratings.sort_values("user_id", kind="stable"), "::"),
            "movies.dat": "".join(movies).encode("latin-1"), "users.dat": "".join(users).encode()}


_FIXTURE_WRITERS = {"ml-100k": _fixture_100k, "ml-1m": _fixture_1m}


def write_fixture(name: str, dir: str | os.PathLike, n_users: int = 30, n_items: int = 20,
                  n_ratings: int = 200, seed: int = 0) -> Path:
    """Write a small synthetic ``name`` release to ``dir/name`` in the publisher's exact formats.

    Deterministic for a given seed, byte for byte, so offline notebooks and tests parse the same
    files every run. ``dir/name`` must be absent, empty or a fixture written before (see
    :mod:`llmrec_lab.io`). Returns the folder, which :func:`load_movielens` accepts as
    ``data_dir``.
    """
    _release(name)
    if n_users < 1 or n_items < 1 or not 1 <= n_ratings <= n_users * n_items:
        raise ValueError(f"need n_users, n_items >= 1 and 1 <= n_ratings <= n_users * n_items, "
                         f"got {n_users}, {n_items}, {n_ratings}")
    rng = np.random.default_rng(seed)
    ratings = _fixture_ratings(name, rng, n_users, n_items, n_ratings)
    files = _FIXTURE_WRITERS[name](rng, ratings, n_users, n_items)
    dest = Path(dir) / name
    with atomic_folder(dest, f"MovieLens {name} fixture") as tmp:  # all files or none
        for file_name, data in files.items():
            (tmp / file_name).write_bytes(data)
    return dest


def movielens_or_fixture(name: str = "ml-100k", download: bool = True, seed: int = 0,
                         **fixture: int) -> tuple[MovieLens, bool]:
    """The real release when it is at hand, else a small fixture in its format; and whether
    the data is real.

    At hand means ``$LLMREC_DATA_DIR`` or the cache holds it (a problem there is raised, not
    papered over with the fixture: a typo must not silently swap the data), or, with
    ``download``, the publisher's site answers. Only a failed download falls back, so a
    notebook runs offline too and says which data it used. ``fixture`` sets
    :func:`write_fixture`'s sizes; it is written to a new temporary folder.
    """
    if os.environ.get(DATA_ENV) or cache_dir(name).is_dir():
        return load_movielens(name, download=False), True
    if download:
        with contextlib.suppress(OSError):  # no network: the fixture below
            return load_movielens(name), True
    folder = write_fixture(name, tempfile.mkdtemp(prefix="llmrec-fixture-"), seed=seed,
                           **fixture)
    return load_movielens(name, data_dir=folder, download=False), False
