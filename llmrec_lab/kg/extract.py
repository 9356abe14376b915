"""Entity and relation extraction from item text: a lexicon baseline and a PLM extractor.

An item text such as "The Nordvik fridge (budget). Reviews call it reliable." states three facts
a graph can hold: the item's category, its brand, and a quality word. Both extractors return
triples ``(item:ID, has_category | has_<brand label> | has_quality, <type>:<name>)``, scored
against the world's truth by :func:`score` (precision, recall, F1 over triples).

- :func:`lexicon_extract`: exact, case-insensitive whole-word matching of the schema's names.
  Precise, but blind to any wording it was not given.
- :func:`plm_extract`: every one- and two-word span of the text is embedded with the frozen
  MiniLM encoder and compared (cosine) with the embedding of each entity name; for each
  relation the best-matching entity is kept if its similarity reaches ``threshold``. It finds
  "fridge" for *refrigerator* and "superb" near *excellent* without a rule for either.

:func:`paraphrase` rewrites texts with synonyms the lexicon lacks, which is where the two
differ: on the generator's own wording the lexicon is perfect by construction.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from llmrec_lab.world.schemas import Schema

Triple = tuple[str, str, str]

SYNONYMS: dict[str, dict[str, str]] = {
    "shop": {"washing machine": "washer", "refrigerator": "fridge", "phone": "smartphone",
             "laptop": "notebook computer", "headset": "headphones", "vacuum cleaner": "vacuum",
             "coffee maker": "espresso machine", "television": "TV", "flimsy": "shoddy",
             "basic": "plain", "dependable": "reliable", "excellent": "superb",
             "outstanding": "exceptional"},
    "screen": {"drama": "melodrama", "comedy": "farce", "thriller": "suspense film",
               "documentary": "docuseries", "science fiction": "sci-fi", "romance": "love story",
               "animation": "cartoon", "horror": "scary movie", "clumsy": "awkward",
               "uneven": "patchy", "solid": "competent", "gripping": "riveting",
               "masterful": "brilliant"},
}


def relations(schema: Schema) -> dict[str, tuple[str, Sequence[str]]]:
    """Relation -> (entity type prefix, entity names) for what item texts state."""
    return {f"has_{schema.category_label}": (schema.category_label, schema.categories),
            f"has_{schema.brand_label}": (schema.brand_label, schema.brands),
            "has_quality": ("quality", schema.quality_words)}


def gold_triples(world) -> list[Triple]:
    """What each item's template text states: its category, brand and quality word.

    A world with ``text_style="reviews"`` is refused: its texts state quality through
    sentences, not through one of the schema's words, so there is no gold word to extract.
    """
    if world.config.text_style != "template":
        raise ValueError(f"gold triples exist for template texts only; this world's text_style "
                         f"is {world.config.text_style!r}")
    s = world.schema
    rels = list(relations(s))
    out = []
    for item, cat, brand, word in world.items[["item_id", "category", "brand",
                                                "quality_word"]].itertuples(index=False):
        out += [(f"item:{item}", rels[0], f"{s.category_label}:{cat}"),
                (f"item:{item}", rels[1], f"{s.brand_label}:{brand}"),
                (f"item:{item}", rels[2], f"quality:{word}")]
    return out


def paraphrase(texts: Iterable[str], schema: Schema, rate: float = 0.5,
               seed: int = 0) -> list[str]:
    """Replace each known name by its synonym with probability ``rate`` (one draw per text)."""
    rng = np.random.default_rng(seed)
    table = SYNONYMS[schema.name]
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True))
                         + r")\b")
    out = []
    for text in texts:
        if rng.random() < rate:
            text = pattern.sub(lambda m: table[m.group(1)], text)
        out.append(text)
    return out


def lexicon_extract(item_ids: Sequence[int], texts: Sequence[str],
                    schema: Schema) -> list[Triple]:
    """Whole-word, case-insensitive matches of the schema's names; the longest name wins."""
    found = []
    for item, text in zip(item_ids, texts):
        for relation, (prefix, names) in relations(schema).items():
            hits = [n for n in names
                    if re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", text, re.I)]
            if hits:
                found.append((f"item:{item}", relation, f"{prefix}:{max(hits, key=len)}"))
    return found


def spans(text: str, max_words: int = 2) -> list[str]:
    """Every run of 1..max_words consecutive words (lower case, punctuation stripped)."""
    words = re.findall(r"[\w&'-]+", text.lower())
    return [" ".join(words[k:k + n]) for n in range(1, max_words + 1)
            for k in range(len(words) - n + 1)]


def plm_extract(item_ids: Sequence[int], texts: Sequence[str], schema: Schema, encoder,
                threshold: float = 0.5) -> list[Triple]:
    """Best span-entity match per relation by MiniLM cosine similarity, kept above ``threshold``.

    ``encoder`` is a :class:`~llmrec_lab.encoders.text.TextEncoder` (normalised embeddings).
    """
    per_text = [spans(t) for t in texts]
    vocabulary = sorted({s for ss in per_text for s in ss})
    vectors = dict(zip(vocabulary, encoder.encode(vocabulary)))
    rels = relations(schema)
    prototypes = {r: encoder.encode([n.lower() for n in names]) for r, (_, names) in rels.items()}
    found = []
    for item, candidates in zip(item_ids, per_text):
        if not candidates:
            continue
        x = np.stack([vectors[s] for s in candidates])
        for relation, (prefix, names) in rels.items():
            sim = x @ prototypes[relation].T  # spans x names
            best = np.unravel_index(np.argmax(sim), sim.shape)
            if sim[best] >= threshold:
                found.append((f"item:{item}", relation, f"{prefix}:{names[best[1]]}"))
    return found


def score(predicted: Iterable[Triple], gold: Iterable[Triple]) -> pd.DataFrame:
    """Precision, recall and F1 per relation and over all (``relation == "all"``)."""
    predicted, gold = set(predicted), set(gold)
    rows = []
    for relation in sorted({t[1] for t in gold | predicted}) + ["all"]:
        p = {t for t in predicted if relation in ("all", t[1])}
        g = {t for t in gold if relation in ("all", t[1])}
        hit = len(p & g)
        precision = hit / len(p) if p else 0.0
        recall = hit / len(g) if g else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
        rows.append(dict(relation=relation, precision=precision, recall=recall, f1=f1,
                         predicted=len(p), gold=len(g)))
    return pd.DataFrame(rows)
