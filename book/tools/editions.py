"""The two editions of the book: the instructor's (with solutions) and the students' (without).

The instructor edition is the book as written (`make book`). The student edition (`make
book-student`) is the same book built with sphinx-exercise's `hide_solutions`, plus copies of the
notebooks whose markdown cells have lost their ```{solution}``` blocks, so that a notebook handed
to a student contains the exercises and not their answers. The page sources that the built book
offers for download (its `_sources/` folder) are stripped the same way.

This is book tooling, not part of the library a chapter imports: it lives beside the pages it
builds, runs with the `book` extra (nbformat comes with jupyter-book) and uses only the library's
atomic writes (:mod:`llmrec_lab.io`).

    python book/tools/editions.py student-config _config.yml _build/student/_config.yml
    python book/tools/editions.py strip --out _build/student notebooks/*.ipynb
    python book/tools/editions.py strip-sources _build/student/html
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import nbformat

from llmrec_lab.io import FolderNotOurs, atomic_write, claim_folder

STUDENT_BRANCH = "student"  # holds the solution-free notebooks that students' Colab buttons open
# An opening fence of a MyST directive: backticks (```{solution}) or, with colon_fence, colons.
_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}")


def strip_solutions_text(markdown: str) -> str:
    """`markdown` without its ```{solution}``` blocks (and the blank lines that followed them).

    Exercises and every other directive are kept. The gated form ({solution-start} ...
    {solution-end}) can span several cells and is refused rather than half removed.
    """
    lines = markdown.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _OPEN.match(lines[i])
        if match and match["name"] in ("solution-start", "solution-end"):
            raise ValueError("gated solutions ({solution-start}/{solution-end}) are not supported")
        if not (match and match["name"] == "solution"):
            out.append(lines[i])
            i += 1
            continue
        fence = match["fence"]
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
        if end is None:
            raise ValueError(f"unclosed solution directive: {lines[i].strip()!r}")
        i = end + 1
        while i < len(lines) and not lines[i].strip():
            i += 1
    text = "".join(out)
    if text == markdown:
        return text
    text = text.rstrip()
    return text + "\n" if text and markdown.endswith("\n") else text


def strip_solutions(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `notebook` whose markdown cells have lost their ```{solution}``` blocks.

    Exercises stay. A markdown cell that held nothing but solutions is dropped; every other cell,
    and the notebook's metadata, is copied unchanged.
    """
    student = copy.deepcopy(notebook)
    cells = []
    for cell in student.cells:
        if cell.cell_type == "markdown":
            text = strip_solutions_text(cell.source)
            if text != cell.source and not text.strip():
                continue
            cell.source = text
        cells.append(cell)
    student.cells = cells
    return student


def strip_file(source: Path, target: Path) -> None:
    """Write `source` (a notebook or a MyST markdown page) to `target` without its solutions,
    atomically (so `target` may be `source` itself)."""
    if source.suffix == ".ipynb":
        text = nbformat.writes(strip_solutions(nbformat.read(source, as_version=4)))
        text += "" if text.endswith("\n") else "\n"  # as nbformat.write ends a file
    elif source.suffix == ".md":
        text = strip_solutions_text(source.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"not a notebook or a markdown page: {source}")
    atomic_write(target, text.encode("utf-8"))


def strip_sources(html: Path) -> list[Path]:
    """Strip, in place, the page sources that a built book offers for download; return them."""
    sources = sorted(p for p in (html / "_sources").rglob("*") if p.suffix in (".ipynb", ".md"))
    for path in sources:
        strip_file(path, path)
    return sources


def student_config(config: dict, cache: str | Path) -> dict:
    """The student edition's jupyter-book configuration, from the instructor's `_config.yml`.

    Solutions are hidden, and notebooks are executed through the jupyter-cache folder `cache`
    (the instructor build's), so a notebook that has already run for one edition is not run again.
    """
    student = copy.deepcopy(config)
    student.setdefault("execute", {})["cache"] = str(Path(cache).resolve())
    student.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    # Launch buttons open the notebooks of the `student` branch, which the publishing workflow
    # fills with the solution-free copies: Colab never opens a notebook with its solutions.
    student.setdefault("repository", {})["branch"] = STUDENT_BRANCH
    return student


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python book/tools/editions.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    strip = commands.add_parser("strip", help="write solution-free copies of notebooks or pages")
    strip.add_argument("--out", type=Path, required=True,
                       help="folder that receives each file at its relative path")
    strip.add_argument("files", type=Path, nargs="*")
    sources = commands.add_parser("strip-sources",
                                  help="strip the downloadable sources of a built book in place")
    sources.add_argument("html", type=Path, help="the built book's html folder")
    config = commands.add_parser("student-config", help="write the student edition's _config.yml")
    config.add_argument("source", type=Path, help="the instructor's _config.yml")
    config.add_argument("target", type=Path)
    config.add_argument("--cache", type=Path, default=Path("_build/.jupyter_cache"),
                        help="jupyter-cache folder shared with the instructor build")
    args = parser.parse_args(argv)
    try:
        run(args, parser)
    except FolderNotOurs as err:  # someone else's folder: say so in one line, touch nothing
        parser.exit(2, f"{parser.prog}: {err}\n")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Carry out one parsed command. The student edition's folder (the `student-config` target's
    folder, the `strip --out` folder) is claimed first: new, empty, or written by us before."""
    if args.command == "strip":
        for path in args.files:
            if path.is_absolute():
                parser.error(f"give files as relative paths: {path}")
        claim_folder(args.out, "the student edition")
        for path in args.files:
            strip_file(path, args.out / path)
    elif args.command == "strip-sources":
        strip_sources(args.html)
    else:
        import yaml

        claim_folder(args.target.parent, "the student edition")
        settings = student_config(yaml.safe_load(args.source.read_text()), args.cache)
        atomic_write(args.target, yaml.safe_dump(settings, sort_keys=False).encode("utf-8"))


if __name__ == "__main__":
    main()
