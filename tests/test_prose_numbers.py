"""A notebook's prose quotes no number that its code does not produce.

A measured number typed into a lab's markdown goes stale without a sound when the code or the
data change; the labs quote measurements only through what their code prints. This test reads
every notebook under notebooks/ without executing it. Each number in a markdown cell that
reads as a measurement (one with a decimal point: 0.874, -0.0200, 1.5x; a percentage: 12% or
12.5%; a count written with thousands separators: 83,000) must be one of:

- a literal in a code cell of the same notebook (a constant the code sets: a threshold, a
  strength, a learning rate), compared as a value, so that 0.001 matches 1e-3, 83,000 matches
  83_000 and 20% matches 0.2 (or 20);
- a section number of the book, as its headings write it (3.1, 4.2);
- an entry of ALLOWED, each of which names the file that sets the constant, checked below.

Skipped, because their numbers are not claims about this run: exercises and solutions (values to
try), code blocks, code spans and roles (`noise_sd=0.3`, {doc}`3.1 <...>`), math ($\\sigma = 0.3$),
link targets, and dotted tokens with more than one dot (section 4.2.1, version 2.14.1). Small
integers without a percent sign (3 seeds, 60 days, top 10) are too common as plain words to
check this way; the chapters print their counts instead of typing them.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# (notebook, number as the prose writes it, file that sets it, text that must be in that file).
# Keep it short: a number belongs here only if no code cell of the notebook can print it.
ALLOWED = [
    # FusionRater's modality dropout, a library default that 3.2 describes but never passes.
    ("ch3_2_cross_modal_fusion", "0.25", "llmrec_lab/models/fusion.py",
     "modality_dropout: float = 0.25"),
    # The split protocols that the chapters name, set once in splits.split_for.
    ("ch3_1_fine_tuning", "70%", "llmrec_lab/splits.py", "a random 70/10/20 split"),
    ("ch3_2_cross_modal_fusion", "20%", "llmrec_lab/splits.py",
     "holds out all ratings of 20% of the items"),
    # The gpu profile's cross-encoder training pairs, which the cpu run of 3.3 cannot print.
    ("ch3_3_knowledge_graphs", "50,000", "llmrec_lab/config.py", "finetune_train=50000"),
    # The Python version that the course's conda environment asks for.
    ("ch5_1_environment_and_source_review", "3.11", "environment.yml", "python=3.11"),
]

_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|:{3,})\s*(?:\{(?P<name>[\w-]+)\})?")
# Directives whose body is not prose about this run: skipped whole. Other directives
# (admonition, note, ...) are prose: only their fence lines are dropped.
_SKIPPED = {"exercise", "solution", "code", "code-block", "code-cell", "mermaid", "math"}
_MATH = re.compile(r"\$\$.+?\$\$|(?<!\\)\$.+?(?<!\\)\$", re.S)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
# A number as prose writes it: 83,000 or 0.874 or 4.2.1, with its percent sign if it has one.
_NUMBER = re.compile(r"(?<![\w.,])(?P<num>\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)*)(?P<pct>\s?%)?")
_LITERAL = re.compile(r"(?<![\w.])\d+(?:_\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")
_HEADING_NUMBER = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)+)\b", re.M)


def prose(markdown: str) -> str:
    """The text of `markdown` that makes claims: without exercises, solutions, code and math."""
    kept, skip, open_directives = [], None, []
    for line in markdown.splitlines():
        stripped = line.strip()
        if skip is not None:  # inside a skipped block: wait for its closing fence
            if re.fullmatch(re.escape(skip[0]) + "{%d,}" % len(skip), stripped):
                skip = None
            continue
        if open_directives and re.fullmatch(
                re.escape(open_directives[-1][0]) + "{%d,}" % len(open_directives[-1]), stripped):
            open_directives.pop()
            continue
        match = _FENCE.match(line)
        if match:
            name = match["name"]
            if name in _SKIPPED or (name is None and match["fence"][0] == "`"):
                skip = match["fence"]
            else:
                open_directives.append(match["fence"])
            continue
        if line.startswith(":") and open_directives:  # a directive's option, e.g. ":class: tip"
            continue
        kept.append(line)
    text = "\n".join(kept)
    for pattern in (_COMMENT, _MATH, _CODE_SPAN, _LINK_TARGET):
        text = pattern.sub(" ", text)
    return text


def quoted_numbers(markdown: str) -> list[str]:
    """The numbers in the prose of `markdown` that read as measurements, in order: those with
    exactly one decimal point, percentages, and counts with thousands separators."""
    found = []
    for match in _NUMBER.finditer(prose(markdown)):
        number, percent = match["num"], bool(match["pct"])
        if number.count(".") <= 1 and ("." in number or "," in number or percent):
            found.append(number + "%" * percent)
    return found


def values_of(number: str) -> set[float]:
    """What a quoted number may stand for in code: 83,000 is 83000; 20% is 0.2 or 20."""
    value = float(number.rstrip("%").replace(",", ""))
    return {value, round(value / 100, 12)} if number.endswith("%") else {value}


def code_values(source: str) -> set[float]:
    """Every numeric literal in code (in strings too: f"... above {0.5}" counts)."""
    return {round(float(t.replace("_", "")), 12) for t in _LITERAL.findall(source)}


def section_numbers() -> set[str]:
    """The numbers that the book's headings carry: 1.1 to 2.7, 3.1 to 3.4, 4.1, 4.2, 5.1, 5.2."""
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "book").glob("*.md")]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        texts += [c.source for c in nb.cells if c.cell_type == "markdown"]
    return {n for text in texts for n in _HEADING_NUMBER.findall(text)}


def unexplained(path: Path, sections: set[str]) -> list[tuple[str, str]]:
    """(number, line) for each number in the notebook's prose that nothing accounts for."""
    nb = nbformat.read(path, as_version=4)
    values = code_values("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    allowed = {number for name, number, *_ in ALLOWED if name == path.stem}
    found = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        text = prose(cell.source)
        for number in quoted_numbers(cell.source):
            if number in sections or number in allowed or values_of(number) & values:
                continue
            line = next(ln for ln in text.splitlines() if number.rstrip("%") in ln).strip()
            found.append((number, line))
    return found


def test_the_scan_sees_prose_and_only_prose():
    markdown = "\n".join([
        "# 3.1 A title",
        "The gap is 0.874 here, $\\sigma = 0.3$ there, `noise_sd=1.2` in code, and 1.5x faster.",
        ":::{admonition} Learning objectives", ":class: tip", "", "- reach an AUC of 0.71;", ":::",
        "```{exercise}", ":label: x", "", "Try 0.4 and 0.6.", "```",
        "````{solution} x", "    for t in (0.4, 0.6):", "```", "0.9 inside", "```", "````",
        "See section 4.2.1, torch 2.14.1 and [a link](https://example.org/v0.5).",
        "Of 83,000 ratings (3 seeds, top 10), 12% and 12.5 % moved; 1,2 is a pair.",
    ])
    assert quoted_numbers(markdown) == ["3.1", "0.874", "1.5", "0.71", "83,000", "12%", "12.5%"]
    assert code_values("lr = 1e-3; x = f'{y:.3f} above 0.5'; n = 40; m = 83_000") >= {
        0.001, 0.5, 40.0, 83000.0}
    assert values_of("20%") == {20.0, 0.2} and values_of("83,000") == {83000.0}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_number_in_the_prose_comes_from_the_code(path):
    found = unexplained(path, section_numbers())
    assert not found, (
        f"{path.name} quotes numbers that none of its code cells sets or prints; print them from "
        "the code and refer to the output, or, for a constant set elsewhere, add it to ALLOWED: "
        + "; ".join(f"{number!r} in {line!r}" for number, line in found))


@pytest.mark.parametrize("entry", ALLOWED, ids=lambda e: f"{e[0]}:{e[1]}")
def test_every_allowed_number_is_still_set_and_still_quoted(entry):
    notebook, number, file, text = entry
    assert text in (ROOT / file).read_text(encoding="utf-8"), f"{file} no longer sets {number}"
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    quoted = [n for c in nb.cells if c.cell_type == "markdown" for n in quoted_numbers(c.source)]
    assert number in quoted, f"{notebook} no longer quotes {number}: remove it from ALLOWED"
    values = code_values("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    assert not values_of(number) & values, (
        f"{notebook}'s code sets {number}: ALLOWED needs no entry")
