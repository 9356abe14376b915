"""Synthetic worlds with ground truth: the course's embedded, offline default data.

A seeded generator draws items and users whose rules are known (:mod:`.dynamics` holds the
rules, :mod:`.schemas` the vocabularies), then replays ``n_days`` of a random-browsing system to
produce the logs a recommender learns from. Because the truth is kept, every lab can compare a
model with the oracle, whose error is the noise floor no model can beat.

Every signal is a strength multiplier in :class:`WorldConfig` (``text``, ``image``, ``kg``,
``id``, ``boredom``, ``novelty``): set one to 0 and you have the control world in which the
matching technique should gain nothing.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from llmrec_lab.config import Profile, get_profile
from llmrec_lab.data import dynamics
from llmrec_lab.data.dynamics import Truth, UserState
from llmrec_lab.data.schemas import Schema, get_schema

FILES = ("config.json", "items.csv", "users.csv", "ratings.csv", "triples.tsv",
         "rating_truth.csv", "daily.csv", "truth.safetensors")


@dataclass(frozen=True)
class WorldConfig:
    """Size, seed and signal strengths of a world (1.0 is the default strength, 0 switches off)."""

    name: str = "shop"
    n_users: int = 300
    n_items: int = 120
    n_days: int = 40
    seed: int = 0
    text: float = 1.0  # category tastes, quality and price: what the item text reveals
    image: float = 1.0  # style tastes: what only the image reveals
    kg: float = 1.0  # maker / director tastes: what only the knowledge graph reveals
    id: float = 1.0  # item appeal that only interactions reveal
    boredom: float = 1.0
    novelty: float = 1.0
    noise_sd: float = 0.7  # rating noise; sets the noise floor
    mu: float = 3.3
    slate_size: int = 5

    @classmethod
    def from_profile(cls, name: str = "shop", profile: Profile | str | None = None,
                     seed: int = 0, **overrides: float) -> "WorldConfig":
        """Sizes from the profile (see :mod:`llmrec_lab.config`), everything else overridable."""
        p = profile if isinstance(profile, Profile) else get_profile(profile)
        base = dict(name=name, n_users=p.n_users, n_items=p.n_items, n_days=p.n_days, seed=seed)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown world parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{**base, **overrides})


@dataclass
class World:
    """A generated world: what a system sees (items, users, ratings, triples) and the truth."""

    config: WorldConfig
    items: pd.DataFrame  # item_id, title, text, category, brand, tier
    users: pd.DataFrame  # user_id, first_seen
    ratings: pd.DataFrame  # user_id, item_id, rating, timestamp
    triples: pd.DataFrame  # head, relation, tail
    truth: Truth
    rating_truth: pd.DataFrame  # user_id, item_id, utility, expected_rating: one row per rating
    daily: pd.DataFrame  # one row per logged day: active users, visitors, mean utility, ...
    state: UserState  # users' state at the end of the logged history

    @property
    def schema(self) -> Schema:
        return get_schema(self.config.name)

    def oracle_predict(self, ratings: pd.DataFrame) -> np.ndarray:
        """E[rating | true utility] for logged (user, item) pairs: the best any model can do.

        A user never consumes an item twice, so (user_id, item_id) identifies a logged rating.
        """
        keyed = ratings[["user_id", "item_id"]].merge(self.rating_truth, how="left",
                                                      on=["user_id", "item_id"])
        if keyed["expected_rating"].isna().any():
            raise KeyError("oracle_predict: some (user_id, item_id) pairs are not in this world's log")
        return keyed["expected_rating"].to_numpy()

    def save(self, out: str | Path) -> Path:
        """Write the world's files into ``out`` atomically: all of them or none."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            self._write(tmp)
            if out.exists():
                _replace_dir(tmp, out)
            else:
                os.replace(tmp, out)
        except BaseException:
            _remove_tree(tmp)
            raise
        return out

    def _write(self, d: Path) -> None:
        (d / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        csv = dict(index=False, float_format="%.6g", lineterminator="\n")
        self.items.to_csv(d / "items.csv", **csv)
        self.users.to_csv(d / "users.csv", **csv)
        self.ratings.to_csv(d / "ratings.csv", **csv)
        self.triples.to_csv(d / "triples.tsv", sep="\t", **csv)
        self.rating_truth.to_csv(d / "rating_truth.csv", **csv)
        self.daily.to_csv(d / "daily.csv", **csv)
        arrays = {f"truth.{k}": np.ascontiguousarray(v) for k, v in vars(self.truth).items()
                  if isinstance(v, np.ndarray)}
        arrays |= {f"state.{k}": np.ascontiguousarray(v) for k, v in vars(self.state).items()}
        save_file(arrays, str(d / "truth.safetensors"),
                  metadata={"mu": repr(self.truth.mu), "noise_sd": repr(self.truth.noise_sd)})

    @classmethod
    def load(cls, directory: str | Path) -> "World":
        """Read a world written by :meth:`save`, naming any missing file."""
        d = Path(directory)
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{d} is not a saved world: missing {', '.join(missing)}")
        config = WorldConfig(**json.loads((d / "config.json").read_text()))
        tensors = load_file(str(d / "truth.safetensors"))
        with open(d / "truth.safetensors", "rb") as fh:  # scalars live in the header metadata
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))["__metadata__"]
        truth = Truth(mu=float(header["mu"]), noise_sd=float(header["noise_sd"]),
                      **{k[6:]: v for k, v in tensors.items() if k.startswith("truth.")})
        state = UserState(**{k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
        return cls(config=config, items=pd.read_csv(d / "items.csv"),
                   users=pd.read_csv(d / "users.csv"),
                   ratings=pd.read_csv(d / "ratings.csv", dtype={"rating": np.float64}),
                   triples=pd.read_csv(d / "triples.tsv", sep="\t"), truth=truth,
                   rating_truth=pd.read_csv(d / "rating_truth.csv"),
                   daily=pd.read_csv(d / "daily.csv"), state=state)


def _replace_dir(new: Path, old: Path) -> None:
    """Swap a finished directory in for an existing one, keeping the old until the swap."""
    trash = old.with_name(f".{old.name}.old")
    _remove_tree(trash)
    os.replace(old, trash)
    os.replace(new, old)
    _remove_tree(trash)


def _remove_tree(path: Path) -> None:
    if path.exists():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        path.rmdir()


def make_world(name: str = "shop", profile: Profile | str | None = None, seed: int = 0,
               **overrides: float) -> World:
    """Generate a world: sizes from the profile, signals and seed as given."""
    return generate(WorldConfig.from_profile(name, profile, seed, **overrides))


def generate(config: WorldConfig) -> World:
    """Draw the truth, write the item texts and the KG, and log ``n_days`` of browsing."""
    schema = get_schema(config.name)
    truth = sample_truth(config, schema, np.random.default_rng([config.seed, 0]))
    items = item_table(truth, schema, np.random.default_rng([config.seed, 1]))
    triples = knowledge_graph(truth, schema, np.random.default_rng([config.seed, 2]))
    log_rng = np.random.default_rng([config.seed, 3])
    browse = random_browsing(truth.n_items, config.slate_size, log_rng)
    history = dynamics.rollout(truth, browse, range(config.n_days), log_rng)
    log = history.log
    first_seen = log.groupby("user_id")["timestamp"].min()
    users = pd.DataFrame({"user_id": np.arange(truth.n_users)})
    users["first_seen"] = users["user_id"].map(first_seen).fillna(-1).astype(np.int64)
    return World(config=config, items=items, users=users,
                 ratings=log[["user_id", "item_id", "rating", "timestamp"]].copy(),
                 triples=triples, truth=truth,
                 rating_truth=log[["user_id", "item_id", "utility", "expected_rating"]].copy(),
                 daily=history.daily, state=history.state)


def random_browsing(n_items: int, k: int, rng: np.random.Generator) -> dynamics.Policy:
    """The logging system of a world's history: each visitor browses ``k`` random items."""
    return lambda users, day, state: rng.integers(0, n_items, size=(len(users), k))


def sample_truth(c: WorldConfig, s: Schema, rng: np.random.Generator) -> Truth:
    """Draw item attributes and user tastes and traits, each scaled by its signal strength."""
    n_u, n_i = c.n_users, c.n_items
    brand = rng.integers(0, len(s.brands), n_i)
    if s.maker_per_brand:  # each brand belongs to one maker
        maker = rng.integers(0, len(s.makers), len(s.brands))[brand]
    else:  # each title has its own director
        maker = rng.integers(0, len(s.makers), n_i)

    def lognormal(scale: float, size: int) -> np.ndarray:
        return scale * rng.lognormal(0.0, 0.3, size)

    return Truth(
        mu=c.mu, noise_sd=c.noise_sd,
        category=rng.integers(0, len(s.categories), n_i), brand=brand, maker=maker,
        style=rng.integers(0, len(s.styles), n_i), tier=rng.integers(0, len(s.tiers), n_i),
        quality=rng.normal(0.0, 1.0, n_i), appeal=rng.normal(0.0, 0.35 * c.id, n_i),
        bias=rng.normal(0.0, 0.35, n_u),
        taste_category=rng.normal(0.0, 0.6 * c.text, (n_u, len(s.categories))),
        taste_style=rng.normal(0.0, 0.5 * c.image, (n_u, len(s.styles))),
        taste_maker=rng.normal(0.0, 0.5 * c.kg, (n_u, len(s.makers))),
        quality_weight=lognormal(0.3 * c.text, n_u),
        price_sensitivity=lognormal(0.15 * c.text, n_u),
        boredom_rate=lognormal(0.6 * c.boredom, n_u),
        recovery_rate=rng.uniform(0.1, 0.3, n_u),
        novelty_appetite=lognormal(0.25 * c.novelty, n_u),
        churn_threshold=rng.normal(-0.6, 0.15, n_u),
        return_logit=rng.normal(0.0, 0.5, n_u),
    )


def _quality_word(truth: Truth, s: Schema, rng: np.random.Generator) -> np.ndarray:
    """Quality shows in the text through reviewers' words, noisily."""
    seen = truth.quality + rng.normal(0.0, 0.5, truth.n_items)
    return np.asarray(s.quality_words)[np.digitize(seen, [-1.2, -0.4, 0.4, 1.2])]


def item_table(truth: Truth, s: Schema, rng: np.random.Generator) -> pd.DataFrame:
    """What a catalogue shows: a title and a description that never mention style or maker."""
    cat = np.asarray(s.categories)[truth.category]
    brand = np.asarray(s.brands)[truth.brand]
    tier = np.asarray(s.tiers)[truth.tier]
    word = _quality_word(truth, s, rng)
    ids = np.arange(truth.n_items)
    if s.name == "shop":
        titles = [f"{b} {c[:2].upper()}-{100 + i}" for i, b, c in zip(ids, brand, cat)]
        templates = ("{t}: {a_tier} {tier} {c} by {b}. Buyers describe it as {w}.",
                     "The {b} {c} ({tier}). Reviews call it {w}.",
                     "{t} is {a_w} {w} {c} from {b}, sold at {a_tier} {tier} price.")
    else:
        adjectives = ("Silent", "Last", "Hidden", "Burning", "Glass", "Northern", "Paper", "Iron")
        nouns = ("Harbor", "Summer", "Signal", "Garden", "Frontier", "Mirror", "Orchard", "Tide")
        titles = [f"The {adjectives[rng.integers(8)]} {nouns[rng.integers(8)]}" for _ in ids]
        templates = ("{t}: {a_tier} {tier} {c} from {b}. Critics found it {w}.",
                     "{t} ({b}) is {a_w} {w} {c} of {tier} running time.",
                     "{A_w} {w} {tier} {c} released by {b}: {t}.")
    choice = rng.integers(0, len(templates), truth.n_items)
    text = [templates[k].format(t=t, c=c, b=b, tier=r, w=w, a_tier=_article(r), a_w=_article(w),
                                A_w=_article(w).capitalize())
            for k, t, c, b, r, w in zip(choice, titles, cat, brand, tier, word)]
    return pd.DataFrame({"item_id": ids, "title": titles, "text": text, "category": cat,
                         "brand": brand, "tier": tier})


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def knowledge_graph(truth: Truth, s: Schema, rng: np.random.Generator) -> pd.DataFrame:
    """Triples (head, relation, tail) from the catalogue's structure, maker included."""
    rows: list[tuple[str, str, str]] = []
    item = [f"item:{i}" for i in range(truth.n_items)]
    for i in range(truth.n_items):
        rows.append((item[i], f"has_{s.category_label}", f"{s.category_label}:{s.categories[truth.category[i]]}"))
        rows.append((item[i], f"has_{s.brand_label}", f"{s.brand_label}:{s.brands[truth.brand[i]]}"))
    country = rng.integers(0, len(s.countries), len(s.makers))
    if s.maker_per_brand:
        for b in np.unique(truth.brand):
            m = truth.maker[truth.brand == b][0]
            rows.append((f"{s.brand_label}:{s.brands[b]}", "made_by", f"{s.maker_label}:{s.makers[m]}"))
    else:
        for i in range(truth.n_items):
            rows.append((item[i], f"{s.maker_label}_is", f"{s.maker_label}:{s.makers[truth.maker[i]]}"))
        rows += _cast(truth, s, rng)
    for m in np.unique(truth.maker):
        rows.append((f"{s.maker_label}:{s.makers[m]}", "based_in", f"country:{s.countries[country[m]]}"))
    rows += _related_items(truth, s, rng)
    return pd.DataFrame(rows, columns=["head", "relation", "tail"])


def _cast(truth: Truth, s: Schema, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Screen titles star two actors, mostly from their director's circle of regulars."""
    n_actors = 4 * len(s.makers)
    regulars = np.arange(n_actors).reshape(len(s.makers), 4)
    rows = []
    for i in range(truth.n_items):
        for _ in range(2):
            actor = (regulars[truth.maker[i], rng.integers(4)] if rng.random() < 0.8
                     else rng.integers(n_actors))
            rows.append((f"item:{i}", "stars", f"actor:Actor {actor:02d}"))
    return sorted(set(rows))


def _related_items(truth: Truth, s: Schema, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Substitutes share category and tier; complements come from complementary categories."""
    rows = []
    cat_index = {c: k for k, c in enumerate(s.categories)}
    partners = {cat_index[a]: cat_index[b] for a, b in s.complements}
    for i in range(truth.n_items):
        same = np.flatnonzero((truth.category == truth.category[i]) & (truth.tier == truth.tier[i]))
        same = same[same != i]
        for j in rng.permutation(same)[:2]:
            rows.append((f"item:{i}", "substitute_of", f"item:{j}"))
        if truth.category[i] in partners:
            other = np.flatnonzero(truth.category == partners[truth.category[i]])
            for j in rng.permutation(other)[:2]:
                rows.append((f"item:{i}", "complements", f"item:{j}"))
    return rows
