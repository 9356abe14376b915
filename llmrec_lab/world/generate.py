"""Synthetic worlds with ground truth: the course's embedded, offline default data.

A seeded generator draws items and users whose rules are known (:mod:`.behaviour` holds the
rules, :mod:`.schemas` the vocabularies), then replays ``n_days`` of a random-browsing system to
produce the logs a recommender learns from. Because the truth is kept, every lab can compare a
model with the oracle, whose error is the noise floor no model can beat.

Every signal is a strength multiplier in :class:`WorldConfig` (``text``, ``image``, ``kg``,
``id``, ``boredom``, ``novelty``): set one to 0 and you have the control world in which the
matching technique should gain nothing.

``text_style`` says how item texts state quality: ``"template"`` (the default, and the control)
names it with one word; ``"reviews"`` writes a description and reviews in which quality must be
read through paraphrase, negation and numbers relative to the category's norm.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.numpy import save_file

from llmrec_lab.config import (Choice, ParameterError, Profile, Range, check_fields, check_names,
                               checked_fields, get_profile, param)
from llmrec_lab.world import behaviour
from llmrec_lab.world.behaviour import Truth, UserState
from llmrec_lab.world.schemas import (BALANCED, REVERSERS, SCHEMAS, SOFTENERS, ReviewWords,
                                     Schema, get_schema)
from llmrec_lab.io import atomic_folder

FILES = ("config.json", "items.csv", "users.csv", "ratings.csv", "triples.tsv",
         "rating_truth.csv", "daily.csv", "truth.safetensors")


# What the generator can honour. Sizes: at least one of each; the users x items table of who
# consumed what is held in memory, hence MAX_CELLS. Strengths are multipliers of 1.0 (0 switches
# a signal off; a negative one would flip a scale's sign). The rating noise must be positive:
# the oracle divides by it. Real values stop at 100, far past the 1..5 rating scale, where
# every rating would already clip. A slate holds distinct items and costs slate_size² per visit.
SIZE = Range(int, 1, 1_000_000)
STRENGTH = Range(float, 0.0, 100.0)
MAX_CELLS = 10**9
WHAT = "world parameter"  # how error messages name a field
TEXT_STYLES = ("template", "reviews")  # see review_texts
REVIEW_STREAM = 5  # the review texts' own random stream: generate draws 0-3, images.py 4


@dataclass(frozen=True)
class WorldConfig:
    """Size, seed and signal strengths of a world (1.0 is the default strength, 0 switches off).

    Every field is checked on construction (:mod:`llmrec_lab.config`), so a bad value from a
    notebook, ``--set`` or a saved ``config.json`` fails with one line naming it.
    """

    name: str = param("shop", Choice(tuple(SCHEMAS)))
    n_users: int = param(300, SIZE)
    n_items: int = param(120, SIZE)
    n_days: int = param(40, Range(int, 1, 10_000))
    seed: int = param(0, Range(int, 0))
    text: float = param(1.0, STRENGTH)  # category tastes, quality and price: what the text reveals
    image: float = param(1.0, STRENGTH)  # style tastes: what only the image reveals
    kg: float = param(1.0, STRENGTH)  # maker / director tastes: what only the KG reveals
    id: float = param(1.0, STRENGTH)  # item appeal that only interactions reveal
    boredom: float = param(1.0, STRENGTH)
    novelty: float = param(1.0, STRENGTH)
    noise_sd: float = param(0.7, Range(float, 0.0, 100.0, low_open=True))  # sets the noise floor
    mu: float = param(3.3, Range(float, -100.0, 100.0))
    slate_size: int = param(5, Range(int, 1, 100))  # distinct items per slate
    text_style: str = param("template", Choice(TEXT_STYLES))  # how item texts state quality

    def __post_init__(self) -> None:
        check_fields(self, WHAT)
        if self.n_users * self.n_items > MAX_CELLS:
            raise ParameterError(f"{WHAT}s n_users={self.n_users}, n_items={self.n_items} are "
                                 f"not allowed: n_users * n_items must be at most {MAX_CELLS:,}")
        if self.slate_size > self.n_items:  # a slate shows distinct items
            raise ParameterError(f"{WHAT} slate_size={self.slate_size} is not allowed: use an "
                                 f"integer in 1..{self.n_items} (n_items)")

    @classmethod
    def from_profile(cls, name: str = "shop", profile: Profile | str | None = None,
                     seed: int = 0, **overrides: float | str) -> "WorldConfig":
        """Sizes from the profile (see :mod:`llmrec_lab.config`), everything else overridable."""
        p = profile if isinstance(profile, Profile) else get_profile(profile)
        base = dict(name=name, n_users=p.n_users, n_items=p.n_items, n_days=p.n_days, seed=seed)
        check_names(cls, overrides, WHAT)
        return cls(**{**base, **overrides})

    @classmethod
    def read(cls, path: Path) -> "WorldConfig":
        """The config a saved world's ``config.json`` holds, or one line naming what is wrong."""
        try:
            data = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ParameterError(f"{path}: not a JSON object of {WHAT}s ({err})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "WorldConfig":
        """A config read from ``source`` (a file): a JSON object naming every parameter."""
        if not isinstance(data, dict):
            raise ParameterError(f"{source}: expected a JSON object of {WHAT}s, "
                                 f"got {type(data).__name__}")
        try:
            check_names(cls, data, WHAT)
            missing = [name for name in checked_fields(cls) if name not in data]
            if missing:  # a default would silently describe another world than the files
                raise ParameterError(f"missing {WHAT}(s) {', '.join(missing)}")
            return cls(**data)
        except ParameterError as err:
            raise ParameterError(f"{source}: {err}") from None


@dataclass
class World:
    """A generated world: what a system sees (items, users, ratings, triples) and the truth."""

    config: WorldConfig
    items: pd.DataFrame  # item_id, title, text, category, brand, tier, quality_word
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

    def static_predict(self, ratings: pd.DataFrame) -> np.ndarray:
        """E[rating | user, item] with the user's momentary state averaged out: the static floor.

        The noise floor (:meth:`oracle_predict`) knows each rating's utility at that moment,
        boredom and novelty included, which no model of (user, item) can see. Here a pair's
        static utility is shifted by each state offset (logged utility minus its static part)
        its user had over the log, and the expected ratings are averaged: the best prediction
        from who rates what alone, if a user's state did not depend on the item's category.
        A user with no logged rating gets no offset.
        """
        log_users = self.rating_truth["user_id"].to_numpy()
        offsets = self.rating_truth["utility"].to_numpy() - self.truth.static_utility(
            log_users, self.rating_truth["item_id"].to_numpy())
        users, items = ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy()
        static = self.truth.static_utility(users, items)
        predictions = behaviour.expected_rating(static, self.truth.noise_sd)
        by_user = pd.Series(offsets).groupby(log_users).apply(np.asarray)
        for user, rows in pd.Series(np.arange(len(users))).groupby(users):
            if user in by_user.index:
                shifted = static[rows.to_numpy(), None] + by_user[user][None, :]
                predictions[rows.to_numpy()] = behaviour.expected_rating(
                    shifted, self.truth.noise_sd).mean(axis=1)
        return predictions

    def save(self, out: str | Path) -> Path:
        """Write the world's files into ``out``, all of them or none; byte-identical for a seed.

        ``out`` must be absent, empty or a world saved before: a folder holding anything else
        raises :class:`llmrec_lab.io.FolderNotOurs` and is left as it was.
        """
        with atomic_folder(out, "world") as tmp:
            self._write(tmp)
        return Path(out)

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
        # safetensors writes its metadata from a hash map, in an order that changes from run to
        # run; one entry keeps the header bytes fixed (the tensors it sorts by name)
        scalars = json.dumps({"mu": self.truth.mu, "noise_sd": self.truth.noise_sd})
        save_file(arrays, str(d / "truth.safetensors"), metadata={"scalars": scalars})

    @classmethod
    def load(cls, directory: str | Path) -> "World":
        """Read a world written by :meth:`save`, naming any missing file."""
        d = Path(directory)
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{d} is not a saved world: missing {', '.join(missing)}")
        c = WorldConfig.read(d / "config.json")
        truth, state = _read_truth(d / "truth.safetensors", c)
        ratings = _read_table(d / "ratings.csv", None, dtype={"rating": np.float64})
        return cls(config=c, items=_read_table(d / "items.csv", c.n_items),
                   users=_read_table(d / "users.csv", c.n_users), ratings=ratings,
                   triples=_read_table(d / "triples.tsv", None, sep="\t"), truth=truth,
                   rating_truth=_read_table(d / "rating_truth.csv", len(ratings)),
                   daily=_read_table(d / "daily.csv", c.n_days), state=state)


class WorldFileError(ValueError):
    """A file of a saved world is unreadable or disagrees with the world's config."""

    def __init__(self, path: Path, problem: object) -> None:
        super().__init__(f"{path}: {' '.join(str(problem).split())}")  # one line


# The columns of each table a world saves (see World's fields).
COLUMNS = {"items.csv": ("item_id", "title", "text", "category", "brand", "tier",
                         "quality_word"),
           "users.csv": ("user_id", "first_seen"),
           "ratings.csv": ("user_id", "item_id", "rating", "timestamp"),
           "triples.tsv": ("head", "relation", "tail"),
           "rating_truth.csv": ("user_id", "item_id", "utility", "expected_rating"),
           "daily.csv": ("day", "active", "visitors", "consumptions", "mean_utility",
                         "mean_satisfaction")}


def _read_table(path: Path, rows: int | None, **read_csv: Any) -> pd.DataFrame:
    """One saved table, with its columns and (where the config fixes it) its length checked,
    so a damaged file fails here, naming itself, not later in some model."""
    try:
        table = pd.read_csv(path, **read_csv)
    except (ValueError, OSError) as err:  # pandas' parser errors are ValueErrors
        raise WorldFileError(path, f"not a readable table ({err})") from None
    if tuple(table.columns) != COLUMNS[path.name]:
        raise WorldFileError(path, f"columns {list(table.columns)!r:.200}, expected "
                                   f"{list(COLUMNS[path.name])}")
    if rows is not None and len(table) != rows:
        raise WorldFileError(path, f"{len(table)} rows, expected {rows}")
    return table


def _read_truth(path: Path, config: WorldConfig) -> tuple[Truth, UserState]:
    """The truth and end state a world saved, their sizes checked against its config."""
    try:
        with safe_open(path, framework="numpy") as f:
            scalars = json.loads(f.metadata()["scalars"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        truth = Truth(mu=float(scalars["mu"]), noise_sd=float(scalars["noise_sd"]),
                      **{k[6:]: v for k, v in tensors.items() if k.startswith("truth.")})
        state = UserState(**{k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
    except Exception as err:  # safetensors, json and the dataclasses each fail their own way
        raise WorldFileError(path, f"not a saved truth ({type(err).__name__}: {err})") from None
    if (truth.n_users, truth.n_items) != (config.n_users, config.n_items):
        raise WorldFileError(path, f"holds {truth.n_users} users and {truth.n_items} items, "
                                   f"expected {config.n_users} and {config.n_items}")
    return truth, state


def make_world(name: str = "shop", profile: Profile | str | None = None, seed: int = 0,
               **overrides: float | str) -> World:
    """Generate a world: sizes from the profile, signals and seed as given."""
    return generate(WorldConfig.from_profile(name, profile, seed, **overrides))


def generate(config: WorldConfig) -> World:
    """Draw the truth, write the item texts and the KG, and log ``n_days`` of browsing."""
    schema = get_schema(config.name)
    truth = sample_truth(config, schema, np.random.default_rng([config.seed, 0]))
    items = item_table(truth, schema, np.random.default_rng([config.seed, 1]))
    if config.text_style == "reviews":  # drawn from its own stream: the rest stays the same
        items["text"] = review_texts(truth, items, schema,
                                     np.random.default_rng([config.seed, REVIEW_STREAM]))
    triples = knowledge_graph(truth, schema, np.random.default_rng([config.seed, 2]))
    log_rng = np.random.default_rng([config.seed, 3])
    browse = random_browsing(truth.n_items, config.slate_size, log_rng)
    history = behaviour.rollout(truth, browse, range(config.n_days), log_rng)
    log = history.log
    first_seen = log.groupby("user_id")["timestamp"].min()
    users = pd.DataFrame({"user_id": np.arange(truth.n_users)})
    users["first_seen"] = users["user_id"].map(first_seen).fillna(-1).astype(np.int64)
    return World(config=config, items=items, users=users,
                 ratings=log[["user_id", "item_id", "rating", "timestamp"]].copy(),
                 triples=triples, truth=truth,
                 rating_truth=log[["user_id", "item_id", "utility", "expected_rating"]].copy(),
                 daily=history.daily, state=history.state)


def random_browsing(n_items: int, k: int, rng: np.random.Generator) -> behaviour.Policy:
    """The logging system of a world's history: each visitor browses ``k`` distinct random items.

    Every ordered slate of ``k`` distinct items is equally likely. Floyd's algorithm draws each
    row's set one slot at a time, vectorised over visitors, then each row is shuffled: it costs
    visitors x k² per day, where random keys over the whole catalogue would cost visitors x items.
    """
    if not 1 <= k <= n_items:
        raise ValueError(f"slate size k must be in 1..{n_items} (the number of items), got {k}")

    def policy(users: np.ndarray, day: int, state: behaviour.UserState) -> np.ndarray:
        slates = np.empty((len(users), k), dtype=np.int64)
        for slot, top in enumerate(range(n_items - k, n_items)):
            pick = rng.integers(0, top + 1, size=len(users))
            taken = (slates[:, :slot] == pick[:, None]).any(axis=1)
            slates[:, slot] = np.where(taken, top, pick)  # Floyd: if taken, take ``top`` instead
        return rng.permuted(slates, axis=1)

    return policy


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


QUALITY_BINS = (-1.2, -0.4, 0.4, 1.2)  # a noisy reading of quality -> one of five levels


def _quality_word(truth: Truth, s: Schema, rng: np.random.Generator) -> np.ndarray:
    """Quality shows in the text through reviewers' words, noisily."""
    seen = truth.quality + rng.normal(0.0, 0.5, truth.n_items)
    return np.asarray(s.quality_words)[np.digitize(seen, QUALITY_BINS)]


def item_table(truth: Truth, s: Schema, rng: np.random.Generator) -> pd.DataFrame:
    """What a catalogue shows: a title and a description that never mention style or maker.

    ``quality_word`` is the reviewers' one-word verdict that the template texts quote, kept so
    that what a text states can be read off the table (Chapter 3.3's extraction is scored
    against it) instead of being drawn again.
    """
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
                         "brand": brand, "tier": tier, "quality_word": word})


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# How much of quality each sentence of a review text reveals. Every judgement and every number
# reads quality with its own noise (sd in units of quality's sd, 1); a number states
# norm * 2 ** (MEASURE_SPREAD * reading), so an item of quality +2 doubles its category's norm.
JUDGEMENT_NOISE = 0.7
MEASURE_NOISE = 0.4
MEASURE_SPREAD = 0.5
JUDGEMENTS = (2, 3)  # fewest and most review judgements per item


def review_texts(truth: Truth, items: pd.DataFrame, s: Schema,
                 rng: np.random.Generator) -> list[str]:
    """Item texts in which quality has to be read, for ``text_style="reviews"``.

    A description (title, category, brand, tier: what the template says, less quality) opens;
    in shuffled order follow the category's numbers, 2-3 judgements and one filler sentence that
    carries nothing. A judgement states a level of quality (the template's five bins) plainly,
    negated ("not exactly sturdy", "anything but dull") or balanced; a number is meaningful only
    against its category's norm, which no text states. A frozen embedding averages these words;
    a reader has to compose them. Every draw is made up front for all items, so the cost is one
    string format per sentence.
    """
    w, n = s.reviews, truth.n_items
    measures = [w.measures[c] for c in truth.category]
    norm = np.array([[m.norm for m in ms] for ms in measures])
    sign = np.array([[1.0 if m.higher_is_better else -1.0 for m in ms] for ms in measures])
    reading = truth.quality[:, None] + rng.normal(0.0, MEASURE_NOISE, norm.shape)
    numbers = np.maximum(2, np.rint(norm * 2.0 ** (sign * MEASURE_SPREAD * reading))).astype(int)
    most = JUDGEMENTS[1]
    seen = truth.quality[:, None] + rng.normal(0.0, JUDGEMENT_NOISE, (n, most))
    levels = np.digitize(seen, QUALITY_BINS) - 2  # -2 (worst) .. 2 (best)
    count = rng.integers(JUDGEMENTS[0], most + 1, n)
    negated = rng.random((n, most)) < 0.5
    picks = rng.integers(0, 2**31, (n, most, 6))  # word choices, taken modulo each list's length
    description = rng.integers(0, len(w.descriptions), n)
    filler = rng.integers(0, len(w.fillers), n)
    filler_number = rng.integers(2, 40, n)
    order = rng.random((n, norm.shape[1] + 1 + most)).argsort(axis=1)
    texts = []
    for i, row in enumerate(items.itertuples(index=False)):
        body = [m.sentence.format(n=v) for m, v in zip(measures[i], numbers[i])]
        body.append(w.fillers[filler[i]].format(n=filler_number[i]))
        body += [_pick(w.frames, picks[i, j, 0]).format(
                     x=_judgement(levels[i, j], negated[i, j], picks[i, j], w))
                 if j < count[i] else "" for j in range(most)]
        opening = w.descriptions[description[i]].format(
            t=row.title, c=row.category, b=row.brand, tier=row.tier, a_tier=_article(row.tier),
            a_c=_article(row.category))
        texts.append(" ".join([opening, *(body[k] for k in order[i] if body[k])]))
    return texts


def _pick(words: tuple[str, ...], draw: int) -> str:
    """One of ``words`` from a raw draw, so one draw array serves lists of any length."""
    return words[draw % len(words)]


def _judgement(level: int, negated: bool, draw: np.ndarray, w: ReviewWords) -> str:
    """A phrase for a level of quality, -2..2: a plain word, a negated word of the opposite
    sign (softened for a mild level, reversed for a strong one), or a balanced phrase for 0."""
    if level == 0:
        return _pick(BALANCED, draw[1]).format(
            g=_pick(w.mild_good, draw[2]), b=_pick(w.mild_bad, draw[3]),
            G=_pick(w.strong_good, draw[4]), B=_pick(w.strong_bad, draw[5]))
    strong = abs(level) == 2
    if not negated:
        plain = (w.strong_good if strong else w.mild_good) if level > 0 else (
            w.strong_bad if strong else w.mild_bad)
        return _pick(plain, draw[2])
    # a softened strong word is mild too ("not exactly excellent"), so strong words appear at
    # every level and only their context tells which
    opposite = (w.mild_bad, w.strong_bad) if level > 0 else (w.mild_good, w.strong_good)
    word = _pick(opposite[0] if strong or draw[3] % 2 else opposite[1], draw[2])
    return f"{_pick(REVERSERS if strong else SOFTENERS, draw[1])} {word}"


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
