"""The book renders with warnings as errors, from local assets only.

The build (`book_html`, tests/conftest.py) is shared with the browser and edition tests. This file
checks what only Sphinx sees: the table of contents, cross-references, exercise and solution
directives, math and diagrams.
"""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_toc_page_is_rendered(book_html):
    toc = (ROOT / "_toc.yml").read_text()
    pages = re.findall(r"file:\s*(\S+)", toc) + [yaml.safe_load(toc)["root"]]
    for page in pages:
        assert (book_html / f"{page}.html").is_file(), page


def test_no_script_or_style_from_a_cdn(book_html):
    for page in book_html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        remote = [url for url in remote if not url.startswith("https://github.com/")]
        assert not remote, f"{page.relative_to(book_html)} loads {remote}"


def test_local_mathjax_and_mermaid_are_shipped(book_html):
    assert (book_html / "_static/vendor/mathjax/tex-chtml.js").is_file()
    assert (book_html / "_static/vendor/mermaid/mermaid.esm.min.mjs").is_file()
    concepts = (book_html / "book/ch02_concepts.html").read_text(encoding="utf-8")
    assert 'class="mermaid' in concepts and "mermaid.esm.min.mjs" in concepts


def test_every_chapter_with_exercises_shows_their_solutions(book_html):
    for page in ("book/ch01_background", "book/ch02_concepts", "notebooks/lab01_meet_the_world"):
        text = (book_html / f"{page}.html").read_text(encoding="utf-8")
        exercises = text.count('class="exercise admonition"')
        assert exercises >= 3, page
        assert text.count('class="solution dropdown admonition"') == exercises, page
