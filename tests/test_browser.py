"""The rendered book, checked page by page in a real headless browser.

The shared instructor build (`book_html`, tests/conftest.py, notebooks executed in the `ci`
profile so their plots are in the HTML) is served over http on 127.0.0.1, as a reader would
serve it (mermaid is an ES module, which browsers do not load from file://), and Debian's
chromium, driven by Playwright, opens every page of _toc.yml. A screenshot of each page is saved
under _build/screenshots/ to look at by eye.

Without chromium the test is skipped, except in CI (the CI variable is set), where .ci/run
installs it and a missing browser is a failure. Debian's chromium has no CJK font of its own, so
it draws the book's Chinese text in the book's font or as empty boxes: the test tells which.
"""
import functools
import json
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import nbformat
import pytest
import yaml
from fontTools.ttLib import TTFont
from jupyter_cache import get_cache

from conftest import CI_CACHE, EXECUTED, ROOT, source_of, toc_pages

CHROMIUM = "/usr/bin/chromium"
CJK_CSS = ROOT / "_static" / "cjk.css"
SCREENSHOTS = ROOT / "_build" / "screenshots"
# Sphinx 7.4 (the newest that jupyter-book 1.x allows) writes every inline script that an
# extension adds after the builder starts twice (sphinx-doc/sphinx#13402, fixed in Sphinx 8.2).
# jupyter-book always loads sphinx-thebe, whose inline `const THEBE_JS_URL` then fails the second
# time. Harmless: thebe is off in _config.yml and nothing on the page uses it.
BENIGN_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

def has_dollar_math(source: Path) -> bool:
    """Whether the prose of a page (not its code) contains $-math."""
    if source.suffix == ".ipynb":
        cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = source.read_text(encoding="utf-8")
    text = re.sub(r"^```(?!\{).*?^```", "", text, flags=re.S | re.M)  # code blocks, not directives
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return re.search(r"\$[^\s$]|\$\$", text) is not None


def cjk_font() -> dict[str, str]:
    """What _static/cjk.css declares for CJK text: the font `family`, its file `src` (relative to
    _static/) and its unicode-range as a JavaScript regular-expression character class, `chars`.
    The test checks what the stylesheet says."""
    face = re.search(r"@font-face\s*{([^}]*)}", CJK_CSS.read_text(encoding="utf-8")).group(1)
    ranges = re.search(r"unicode-range:\s*([^;]+);", face).group(1)
    bounds = (item.strip().removeprefix("U+").partition("-") for item in ranges.split(","))
    return {"family": re.search(r'font-family:\s*"([^"]+)"', face).group(1),
            "src": re.search(r'src:\s*url\("([^"]+)"\)', face).group(1),
            "chars": "[" + "".join(f"\\u{{{low}}}" + (f"-\\u{{{high}}}" if high else "")
                                   for low, _, high in bounds) + "]"}


def web_font_glyphs(page) -> list[int]:
    """For each element that INSPECT marked with data-cjk, in document order: how many glyphs
    web fonts drew in its text, as Chromium's DevTools protocol reports. Only the drawn glyphs
    show a fallback's empty boxes: document.fonts.check() says true even for a family that no
    @font-face declares."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    nodes = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-cjk]"})["nodeIds"]
    counts = [sum(font["glyphCount"] for font in
                  cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
                  if font["isCustomFont"]) for node in nodes]
    cdp.detach()
    return counts


class _QuietHandler(SimpleHTTPRequestHandler):
    # Module scripts need a JavaScript MIME type; Python before 3.12 does not know .mjs.
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(book_html):
    """The instructor build served on a random local port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


# Runs in the page once it has loaded: waits for MathJax, mermaid and web fonts, then reports what
# is drawn. Each visible element whose own text has CJK characters is marked data-cjk, for
# web_font_glyphs.
INSPECT = """async (cjkClass) => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
    }
    const blocks = [...document.querySelectorAll("pre.mermaid, div.mermaid")];
    const deadline = Date.now() + 20000;
    while (blocks.some(b => !b.querySelector("svg")) && Date.now() < deadline) {
        await new Promise(r => setTimeout(r, 100));
    }
    const images = [...document.images];
    await Promise.all(images.map(i => i.complete ? null : new Promise(r => {
        i.addEventListener("load", r); i.addEventListener("error", r);
    })));
    await document.fonts.ready;
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const cjkChars = new RegExp(cjkClass, "gu");
    const cjk = [];
    for (const element of document.body.querySelectorAll("*")) {
        const own = [...element.childNodes].filter(n => n.nodeType === Node.TEXT_NODE);
        const chars = own.map(n => n.data).join("").match(cjkChars);
        if (!chars || !element.checkVisibility({visibilityProperty: true})) continue;
        element.setAttribute("data-cjk", "");
        cjk.push({chars: chars.join(""), family: getComputedStyle(element).fontFamily});
    }
    return {
        cjk,
        math: document.querySelectorAll(".math").length,
        mathjax: document.querySelectorAll(".math mjx-container").length,
        mermaid: blocks.map(b => ({svg: !!b.querySelector("svg"), text: b.textContent.slice(0, 80)})),
        images: images.map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth,
                                  output: !!i.closest(".cell_output")})),
        links: [...document.querySelectorAll("a[href]")].map(a => a.href),
        ids: [...document.querySelectorAll("[id], a[name]")].map(e => e.id || e.name),
    };
}"""


@pytest.fixture(scope="module")
def pages(browser, site):
    """Every toc page opened once: {page: what INSPECT saw, plus its console errors}."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    font = cjk_font()
    seen = {}
    for name in toc_pages():
        page = context.new_page()
        errors = []
        page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.on("response", lambda r, errors=errors: r.status >= 400 and errors.append(
            f"{r.status} {r.url}"))
        response = page.goto(site + f"{name}.html", wait_until="load")
        assert response is not None and response.ok, name
        report = page.evaluate(INSPECT, font["chars"])
        for text, glyphs in zip(report["cjk"], web_font_glyphs(page), strict=True):
            text["web_font_glyphs"] = glyphs
        report["errors"] = errors
        report["colab"] = page.eval_on_selector_all(
            "a[href^='https://colab.research.google.com/']", "els => els.map(a => a.href)")
        page.screenshot(path=str(SCREENSHOTS / f"{name.replace('/', '__')}.png"), full_page=True)
        page.close()
        seen[name] = report
    context.close()
    return seen


def test_every_page_loads_without_console_errors(pages):
    for name, report in pages.items():
        errors = [e for e in report["errors"] if not any(b in e for b in BENIGN_ERRORS)]
        assert not errors, f"{name}: {errors}"


def test_math_is_typeset(pages):
    for name, report in pages.items():
        if has_dollar_math(source_of(name)):
            assert report["math"] > 0, f"{name} has $-math but no .math element"
        assert report["mathjax"] == report["math"], (
            f"{name}: MathJax typeset {report['mathjax']} of {report['math']} formulas")


def test_mermaid_diagrams_are_drawn(pages):
    drawn = 0
    for name, report in pages.items():
        for block in report["mermaid"]:
            assert block["svg"], f"{name}: mermaid block left as source text: {block['text']!r}"
            drawn += 1
    assert pages["book/ch02_concepts"]["mermaid"], "the Chapter 2 concept map is missing"
    assert drawn > 0


def test_chinese_text_is_drawn_in_the_books_font(pages, book_html):
    """Every CJK character on every page is drawn by the font that _static/cjk.css serves, not
    as an empty box: the element's font stack names the font, web fonts drew at least as many
    glyphs as the element has CJK characters (the theme's fonts draw the rest of its text), and
    the font file has a glyph for each of them (a missing one is drawn as the font's blank)."""
    font = cjk_font()
    cmap = TTFont(book_html / "_static" / font["src"]).getBestCmap()
    assert len(pages["book/glossary"]["cjk"]) > 10, "the glossary's Chinese terms are not shown"
    for name, report in pages.items():
        for text in report["cjk"]:
            assert font["family"] in text["family"], (
                f"{name}: {text['chars']!r} is set in {text['family']}, without {font['family']}")
            assert text["web_font_glyphs"] >= len(text["chars"]), (
                f"{name}: {text['chars']!r}: {len(text['chars'])} CJK characters, "
                f"{text['web_font_glyphs']} drawn by {font['family']} (the rest are empty boxes)")
            missing = sorted({char for char in text["chars"] if ord(char) not in cmap})
            assert not missing, f"{name}: {font['src']} has no glyph for {missing} (run make assets)"


def test_images_and_plots_appear(pages):
    cache = get_cache(str(CI_CACHE))
    for name, report in pages.items():
        broken = [image["src"] for image in report["images"] if image["width"] == 0]
        assert not broken, f"{name}: images that did not load: {broken}"
        if name in EXECUTED:
            # The executed notebook, as the build's cache holds it: each image it output must be
            # on the page, inside a cell's output.
            _, executed = cache.merge_match_into_notebook(nbformat.read(source_of(name), 4))
            plots = sum(any(key.startswith("image/") for key in out.get("data", {}))
                        for cell in executed.cells for out in cell.get("outputs", []))
            shown = sum(image["output"] for image in report["images"])
            assert plots > 0 and shown == plots, f"{name}: {plots} plots output, {shown} shown"


def test_colab_buttons_open_this_notebook(pages):
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_repo = urlsplit(repository["url"]).path.strip("/")
    for name, report in pages.items():
        if source_of(name).suffix != ".ipynb":
            assert not report["colab"], name
            continue
        expected = (f"https://colab.research.google.com/github/{owner_repo}/blob/"
                    f"{repository['branch']}/{name}.ipynb")
        assert report["colab"] == [expected], name


def test_internal_links_resolve(pages, site, book_html):
    ids = {site + f"{name}.html": set(report["ids"]) for name, report in pages.items()}
    broken = []
    for name, report in pages.items():
        for href in report["links"]:
            if not href.startswith(site):
                continue
            target, fragment = urldefrag(href)
            path = book_html / unquote(target[len(site):])
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                broken.append((name, href))
                continue
            if fragment and path.suffix == ".html":
                if target not in ids:
                    text = path.read_text(encoding="utf-8")
                    ids[target] = set(re.findall(r'\b(?:id|name)="([^"]+)"', text))
                if unquote(fragment) not in ids[target]:
                    broken.append((name, href))
    assert not broken, broken


def test_screenshots_are_saved(pages):
    for name in pages:
        shot = SCREENSHOTS / f"{name.replace('/', '__')}.png"
        assert shot.is_file() and shot.stat().st_size > 10_000, shot
