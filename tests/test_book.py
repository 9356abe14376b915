"""The book renders with warnings as errors, from local assets only.

Notebook execution is switched off here: nbval already runs every notebook in this suite, so
this test checks what only Sphinx sees (the table of contents, cross-references, exercise and
solution directives, math and diagrams) in about half a minute.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip("npm is needed to fetch MathJax and mermaid")
    subprocess.run(["make", "assets"], cwd=ROOT, check=True, capture_output=True)
    out = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jb), "build", str(ROOT), "--all", "--warningiserror",
                            "--keep-going", "--config", str(out / "_config.yml"),
                            "--path-output", str(out)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out / "_build" / "html"


def test_every_toc_page_is_rendered(html):
    toc = (ROOT / "_toc.yml").read_text()
    pages = re.findall(r"file:\s*(\S+)", toc) + [yaml.safe_load(toc)["root"]]
    for page in pages:
        assert (html / f"{page}.html").is_file(), page


def test_no_script_or_style_from_a_cdn(html):
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        remote = [url for url in remote if not url.startswith("https://github.com/")]
        assert not remote, f"{page.relative_to(html)} loads {remote}"


def test_local_mathjax_and_mermaid_are_shipped(html):
    assert (html / "_static/vendor/mathjax/tex-chtml.js").is_file()
    assert (html / "_static/vendor/mermaid/mermaid.esm.min.mjs").is_file()
    concepts = (html / "book/ch02_concepts.html").read_text(encoding="utf-8")
    assert 'class="mermaid' in concepts and "mermaid.esm.min.mjs" in concepts


def test_every_chapter_with_exercises_shows_their_solutions(html):
    for page in ("book/ch01_background", "book/ch02_concepts", "notebooks/lab01_meet_the_world"):
        text = (html / f"{page}.html").read_text(encoding="utf-8")
        exercises = text.count('class="exercise admonition"')
        assert exercises >= 3, page
        assert text.count('class="solution dropdown admonition"') == exercises, page
