"""Knowledge graphs from structured metadata, and a validated container for their triples.

A knowledge graph here is a table of ``(head, relation, tail)`` strings. Entity names carry
their type as a prefix (``item:3``, ``brand:Nordvik``, ``maker:Arden Holdings``), so one
vocabulary holds every kind of entity and a type can be read off a name.

- :func:`world_kg`: a synthetic world's graph. The world generator already writes the relations
  a catalogue database would hold (category, brand, the brand's maker and its country,
  substitutes and complements; for ``screen`` also director and actors); we add each item's
  tier from the item table.
- :func:`movielens_kg`: MovieLens has no graph, so we build one from its metadata: genres,
  release year and decade for movies, and age band, gender and occupation for users
  (user-attribute triples).

:class:`TripleSet` checks a table before any model sees it. A malformed row (wrong number of
fields, an empty field), a self-loop, an exact duplicate, or an entity outside a given
vocabulary is reported with its row number; with ``strict=True`` (the default) the first
problems raise :class:`TripleError`, otherwise they come back in :attr:`TripleSet.report` and
the offending rows are kept out of :attr:`TripleSet.triples`. Nothing is dropped silently.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COLUMNS = ("head", "relation", "tail")
PROBLEMS = ("malformed", "empty", "self_loop", "duplicate", "unknown_entity")


class TripleError(ValueError):
    """A triple table failed validation; the message names the rows and what is wrong."""


@dataclass(frozen=True)
class Problem:
    """One rejected row: its 0-based position in the input, the kind of problem, and why."""

    row: int
    kind: str  # one of PROBLEMS
    message: str


@dataclass
class TripleSet:
    """A validated set of ``(head, relation, tail)`` string triples.

    Build one with :meth:`from_rows` (any iterable of 3-sequences) or :meth:`from_frame`.
    """

    triples: pd.DataFrame  # the valid rows, columns head, relation, tail, input order kept
    report: list[Problem] = field(default_factory=list)  # the rows that were rejected

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[str]], entities: Iterable[str] | None = None,
                  strict: bool = True) -> TripleSet:
        """Validate ``rows``; ``entities``, if given, is the closed vocabulary of entity names."""
        vocabulary = None if entities is None else set(entities)
        kept: list[tuple[str, str, str]] = []
        problems: list[Problem] = []
        seen: dict[tuple[str, str, str], int] = {}
        for n, row in enumerate(rows):
            problem = _check(n, row, vocabulary, seen)
            if problem is None:
                triple = tuple(row)
                seen[triple] = n
                kept.append(triple)
            else:
                problems.append(problem)
        if strict and problems:
            shown = "; ".join(f"row {p.row}: {p.message}" for p in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise TripleError(f"{len(problems)} invalid triple(s): {shown}{more}")
        return cls(pd.DataFrame(kept, columns=list(COLUMNS)), problems)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, entities: Iterable[str] | None = None,
                   strict: bool = True) -> TripleSet:
        """Validate a frame with columns ``head``, ``relation``, ``tail`` (no others)."""
        if list(frame.columns) != list(COLUMNS):
            raise TripleError(f"a triple frame needs exactly the columns {list(COLUMNS)}, "
                              f"got {list(frame.columns)}")
        return cls.from_rows(frame.itertuples(index=False, name=None), entities, strict)

    def __len__(self) -> int:
        return len(self.triples)

    @property
    def entities(self) -> list[str]:
        """Every entity that appears as a head or a tail, sorted."""
        return sorted(set(self.triples["head"]) | set(self.triples["tail"]))

    @property
    def relations(self) -> list[str]:
        return sorted(set(self.triples["relation"]))

    def to_array(self):
        """The triples as an ``(n, 3)`` array of strings, the form pykeen's factories read."""
        return self.triples.to_numpy(dtype=str)

    def without(self, *relations: str) -> TripleSet:
        """The same graph with the named relations removed (for ablations)."""
        return TripleSet(self.triples[~self.triples["relation"].isin(relations)]
                         .reset_index(drop=True), list(self.report))

    def placebo(self, seed: int = 0, prefix: str = "item:") -> TripleSet:
        """The control graph that carries no signal about the items: the same triples with the
        item entities (names starting with ``prefix``) renamed by a random permutation, so every
        fact about item ``i`` now describes some other item. Shape, degrees and relations stay."""
        items = sorted({e for e in self.entities if e.startswith(prefix)})
        rng = np.random.default_rng(seed)
        rename = dict(zip(items, (str(e) for e in rng.permutation(items))))
        shuffled = self.triples.replace({"head": rename, "tail": rename})
        return TripleSet(shuffled, list(self.report))

    def summary(self) -> pd.DataFrame:
        """Triples per relation with the number of distinct heads and tails."""
        return (self.triples.groupby("relation")
                .agg(triples=("head", "size"), heads=("head", "nunique"), tails=("tail", "nunique"))
                .reset_index())


def _check(n: int, row: Sequence[str], vocabulary: set[str] | None,
           seen: dict[tuple[str, str, str], int]) -> Problem | None:
    """The first problem of row ``n``, or ``None`` if it is a valid, new triple."""
    if isinstance(row, str) or len(row) != 3:
        size = "a string" if isinstance(row, str) else f"{len(row)} field(s)"
        return Problem(n, "malformed", f"expected 3 fields (head, relation, tail), got {size}")
    for name, value in zip(COLUMNS, row):
        if not isinstance(value, str) or not value.strip():
            return Problem(n, "empty", f"{name} is empty or not a string ({value!r})")
    head, relation, tail = row
    if head == tail:
        return Problem(n, "self_loop", f"{head!r} {relation!r} itself")
    if vocabulary is not None:
        unknown = [e for e in (head, tail) if e not in vocabulary]
        if unknown:
            return Problem(n, "unknown_entity",
                           f"entity {unknown[0]!r} is not in the entity vocabulary")
    triple = (head, relation, tail)
    if triple in seen:
        return Problem(n, "duplicate", f"duplicate of row {seen[triple]} {triple}")
    return None


def world_kg(world) -> TripleSet:
    """A world's graph: its catalogue triples plus each item's tier (``has_price`` for shop)."""
    schema = world.schema
    tiers = [(f"item:{i}", f"has_{schema.tier_label}", f"{schema.tier_label}:{t}")
             for i, t in zip(world.items["item_id"], world.items["tier"])]
    rows = list(world.triples[list(COLUMNS)].itertuples(index=False, name=None)) + tiers
    return TripleSet.from_rows(rows)


def _age_band(age: int) -> str:
    for upper, band in ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"),
                        (56, "45-55")):
        if age < upper:
            return band
    return "56+"


def movielens_kg(items: pd.DataFrame, users: pd.DataFrame | None = None) -> TripleSet:
    """MovieLens metadata as triples: ``movie:ID`` has genres, a year and a decade; with
    ``users``, ``user:ID`` has an age band, a gender and an occupation.

    Ages are banded (ml-100k gives years, ml-1m band lower bounds; both fall in the same bands).
    """
    rows = []
    for item_id, year, genres in zip(items["item_id"], items["year"], items["genres"]):
        movie = f"movie:{item_id}"
        rows += [(movie, "has_genre", f"genre:{g}") for g in genres if g != "unknown"]
        if not pd.isna(year):
            rows.append((movie, "released_in", f"year:{int(year)}"))
    years = sorted({int(y) for y in items["year"].dropna()})
    rows += [(f"year:{y}", "in_decade", f"decade:{y // 10 * 10}s") for y in years]
    if users is not None:
        for user_id, age, gender, occupation in zip(users["user_id"], users["age"],
                                                    users["gender"], users["occupation"]):
            user = f"user:{user_id}"
            rows += [(user, "has_age", f"age:{_age_band(int(age))}"),
                     (user, "has_gender", f"gender:{gender}"),
                     (user, "has_occupation", f"occupation:{occupation}")]
    return TripleSet.from_rows(rows)
