"""The vocabularies of the synthetic worlds: what a `shop` item and a `screen` item are made of.

Both worlds share one generative model (see :mod:`llmrec_lab.data.world`); a schema only names
its parts. Each part is visible through exactly one channel, which is what lets a lab measure
what each modality is worth:

- ``category`` and ``brand`` and the quality words: the item's text;
- ``style``: the item's image only (the text never mentions it);
- ``maker``: the knowledge graph only (shop: the company behind a brand; screen: the director);
- the item's idiosyncratic appeal: only the interactions.
"""
from __future__ import annotations

from dataclasses import dataclass


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
    category_label="category",
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
    tier_label="length", category_label="genre",
)

SCHEMAS: dict[str, Schema] = {"shop": SHOP, "screen": SCREEN}


def get_schema(name: str) -> Schema:
    """Return the schema of a world by name, with an error that lists the known ones."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown world {name!r}; choose one of {', '.join(SCHEMAS)}")
    return SCHEMAS[name]
