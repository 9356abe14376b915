"""The vocabularies of the synthetic worlds: what a `shop` item and a `screen` item are made of.

Both worlds share one generative model (see :mod:`llmrec_lab.world.generate`); a schema only names
its parts. Each part is visible through exactly one channel, which is what lets a lab measure
what each modality is worth:

- ``category`` and ``brand`` and the quality words: the item's text;
- ``style``: the item's image only (the text never mentions it);
- ``maker``: the knowledge graph only (shop: the company behind a brand; screen: the director);
- the item's idiosyncratic appeal: only the interactions.

With ``text_style="reviews"`` the quality words give way to :class:`ReviewWords`: quality is
stated in paraphrase, through negation and in numbers that mean something only against the
category's norm, among sentences that carry nothing.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """A number a review states that means something only against its category's norm (a
    6-hour battery is poor for a laptop and fine for earbuds)."""

    sentence: str  # holds {n}
    norm: float  # what an average item of the category reaches
    higher_is_better: bool = True


# How a review negates a judgement, the same in both worlds. A softener turns a mild word into a
# mild judgement of the opposite sign ("not exactly sturdy"); a reverser turns it into a strong
# one ("anything but reliable"). A balanced phrase names a good and a bad word for an average item.
SOFTENERS = ("not", "not exactly", "hardly", "not particularly", "not really")
REVERSERS = ("anything but", "far from", "nowhere near")
BALANCED = ("neither {g} nor {b}", "not {G}, but not {B} either", "{g} in places and {b} in others",
            "more {g} than {B}, if hardly {G}")


@dataclass(frozen=True)
class ReviewWords:
    """The words of a world's review texts (``text_style="reviews"``), from description to
    verdict. Templates take ``t`` (title), ``c`` (category), ``b`` (brand), ``tier``,
    ``a_tier`` and ``a_c`` (their articles), ``x`` (a judgement) and ``n`` (a number that
    carries nothing)."""

    descriptions: tuple[str, ...]  # title, category, brand and tier; no quality
    frames: tuple[str, ...]  # a sentence around a judgement {x}
    mild_good: tuple[str, ...]
    mild_bad: tuple[str, ...]
    strong_good: tuple[str, ...]
    strong_bad: tuple[str, ...]
    fillers: tuple[str, ...]  # no signal, though some praise or blame something else
    measures: tuple[tuple[Measure, ...], ...]  # per category, in the order of the categories


@dataclass(frozen=True)
class Schema:
    """Names of a world's attributes and the words its item texts are written with."""

    name: str
    categories: tuple[str, ...]
    brands: tuple[str, ...]  # shop: brands; screen: studios
    makers: tuple[str, ...]  # shop: manufacturers behind brands; screen: directors
    countries: tuple[str, ...]
    styles: tuple[str, ...]  # shown only in the image
    tiers: tuple[str, ...]  # shop: price tiers; screen: running-length tiers
    quality_words: tuple[str, ...]  # from worst to best
    complements: tuple[tuple[str, str], ...]  # category pairs that go together
    maker_per_brand: bool  # shop: a brand has one maker; screen: each title has a director
    brand_label: str
    maker_label: str
    style_label: str
    tier_label: str
    category_label: str
    reviews: ReviewWords


def _lifetime(years: float) -> Measure:
    """Durability as a number: years of use against what the category usually lasts."""
    return Measure("Most owners get {n} years out of it.", years)


def _battery(hours: float) -> Measure:
    """One sentence for every battery, so the same hours mean different things per category."""
    return Measure("The battery lasts {n} hours on a charge.", hours)


SHOP_REVIEWS = ReviewWords(
    descriptions=("{t}: {a_tier} {tier} {c} by {b}.", "The {t} {c} sells at {a_tier} {tier} price.",
                  "{t} is {a_tier} {tier} {c} from {b}."),
    frames=("The build is {x}.", "Owners say it is {x}.",
            "After a month of daily use it feels {x}.",
            "Reviewers find it {x}.", "Frankly, it is {x}.", "In everyday use it proves {x}."),
    mild_good=("sturdy", "reliable", "well made", "solid", "dependable", "good"),
    mild_bad=("flimsy", "disappointing", "fragile", "unreliable", "poorly made", "mediocre"),
    strong_good=("superb", "outstanding", "excellent", "first-rate"),
    strong_bad=("awful", "shoddy", "dreadful", "useless"),
    fillers=("It arrived in plain cardboard packaging.", "The manual comes in four languages.",
             "The courier was excellent and very friendly.", "Setup took about {n} minutes.",
             "It was a birthday present for my brother.", "My old one came from an awful shop.",
             "The weather was terrible the week it arrived.", "I ordered it on a Tuesday.",
             "The box weighs about {n} kilograms.", "The store's website is superb."),
    measures=(  # washing machine, refrigerator, phone, laptop, headset, vacuum cleaner, ...
        (Measure("A full load uses {n} litres of water.", 50, False), _lifetime(10)),
        (Measure("It keeps food cold for {n} hours in a power cut.", 12), _lifetime(14)),
        (_battery(24), _lifetime(3)),
        (_battery(10), _lifetime(5)),
        (_battery(6), _lifetime(2)),
        (Measure("It runs {n} minutes on a charge.", 40), _lifetime(6)),
        (Measure("It brews a cup in {n} seconds.", 60, False), _lifetime(4)),
        (Measure("The screen reaches {n} nits.", 500), _lifetime(8)),
    ),
)

SCREEN_REVIEWS = ReviewWords(
    descriptions=("{t}: {a_tier} {tier} {c} from {b}.",
                  "{t} ({b}) is {a_c} {c} of {tier} running time.",
                  "{b} released {t}, {a_tier} {tier} {c}."),
    frames=("The script is {x}.", "Critics find it {x}.", "The acting is {x}.",
            "One viewer calls it {x}.", "The pacing is {x}.", "As a whole, the film is {x}."),
    mild_good=("engaging", "gripping", "well acted", "clever", "moving", "solid"),
    mild_bad=("dull", "clumsy", "uneven", "tedious", "flat", "predictable"),
    strong_good=("masterful", "brilliant", "superb", "unforgettable"),
    strong_bad=("dreadful", "unwatchable", "awful", "painful"),
    fillers=("I watched it on a rainy Sunday.", "The cinema's seats were dreadful.",
             "It was shot over two summers.", "The trailer came out in spring.",
             "The popcorn was brilliant.", "I saw it with my parents.",
             "The poster hangs in about {n} cinemas.",
             "It was screened {n} times at my local club.",
             "The subtitles were available in six languages.", "The ticket queue was painful."),
    measures=tuple(  # weeks in cinemas and award nominations, against each genre's norm
        (Measure("It stayed in cinemas for {n} weeks.", weeks),
         Measure("It collected {n} award nominations.", awards))
        for weeks, awards in ((5, 10), (10, 3), (8, 4), (2, 8), (14, 5), (6, 4), (20, 6), (3, 3))),
)


SHOP = Schema(
    name="shop",
    categories=("washing machine", "refrigerator", "phone", "laptop", "headset",
                "vacuum cleaner", "coffee maker", "television"),
    brands=("Nordvik", "Aurelia", "Kestrel", "Halcyon", "Brisa", "Tamarind", "Orrin", "Velo",
            "Quillon", "Sorrel", "Zephra", "Lumo", "Castor", "Pennant", "Ibex", "Marlow"),
    makers=("Arden Holdings", "Bellweather Group", "Corvid Industries", "Dunmore Electric",
            "Everline Corp", "Fairhaven Works"),
    countries=("Freedonia", "Genovia", "Latveria", "Ruritania"),
    styles=("matte black", "brushed steel", "pastel mint", "warm walnut", "bold red",
            "arctic white"),
    tiers=("budget", "mid-range", "premium"),
    quality_words=("flimsy", "basic", "dependable", "excellent", "outstanding"),
    complements=(("phone", "headset"), ("laptop", "headset"), ("television", "headset"),
                 ("washing machine", "vacuum cleaner"), ("refrigerator", "coffee maker")),
    maker_per_brand=True,
    brand_label="brand", maker_label="maker", style_label="finish", tier_label="price",
    category_label="category", reviews=SHOP_REVIEWS,
)

SCREEN = Schema(
    name="screen",
    categories=("drama", "comedy", "thriller", "documentary", "science fiction", "romance",
                "animation", "horror"),
    brands=("Lanternfish Pictures", "Redcliff Studios", "Paper Moon Films", "Northlight Media",
            "Kite & Anchor", "Sable Screen", "Tidewater Films", "Oakum Studios"),
    makers=tuple(f"{first} {last}" for first, last in zip(
        ("Ines", "Tomas", "Mira", "Caleb", "Yuki", "Ravi", "Lena", "Omar", "Sofia", "Jonas",
         "Aiko", "Bruno"),
        ("Varga", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Iyer", "Kowalski", "Haddad",
         "Ferreira", "Brandt", "Sato", "Costa"))),
    countries=("Freedonia", "Genovia", "Latveria", "Ruritania"),
    styles=("dark noir", "sunlit warm", "neon", "sepia", "pastel", "high-contrast"),
    tiers=("short", "feature", "epic"),
    quality_words=("clumsy", "uneven", "solid", "gripping", "masterful"),
    complements=(("drama", "romance"), ("thriller", "horror"), ("science fiction", "animation"),
                 ("documentary", "drama")),
    maker_per_brand=False,
    brand_label="studio", maker_label="director", style_label="poster mood",
    tier_label="length", category_label="genre", reviews=SCREEN_REVIEWS,
)

SCHEMAS: dict[str, Schema] = {"shop": SHOP, "screen": SCREEN}


def get_schema(name: str) -> Schema:
    """Return the schema of a world by name, with an error that lists the known ones."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown world {name!r}; choose one of {', '.join(SCHEMAS)}")
    return SCHEMAS[name]
