"""One build of each edition of the book, shared by every test file that needs it.

`book_html` is the instructor edition (what `make book` publishes). nbval already executes every
notebook in this suite, so the book build executes only the notebooks in `EXECUTED`, in the `ci`
profile, enough for the browser test to check that plots appear; the others render without
outputs. The executed notebooks are cached (jupyter-cache, keyed on the code cells) in
`_build/.jupyter_cache_ci`, so a notebook reruns only when its code changes. Both editions share
that cache.

Under pytest-xdist each worker is a separate process: a file lock in the run's shared temporary
folder makes the first worker that asks for an edition build it and the others reuse that build.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock
from transformers import AutoTokenizer, BertConfig, BertModel

from llmrec_lab.encoders.text import resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
# The editions script is book tooling (book/tools/), not a module of the library.
sys.path.insert(0, str(ROOT / "book" / "tools"))
from editions import strip_sources, student_config  # noqa: E402

CI_CACHE = ROOT / "_build" / ".jupyter_cache_ci"
EXECUTED = ("notebooks/lab01_meet_the_world",)  # the cheapest lab with plots


def _not_executed() -> list[str]:
    """Execution exclude patterns: every notebook but those in EXECUTED."""
    notebooks = sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    return [str(nb.relative_to(ROOT)) for nb in notebooks
            if str(nb.relative_to(ROOT).with_suffix("")) not in EXECUTED]


TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer random BERT (``TINY_BERT``) with MiniLM's tokenizer: the real code path of a
    pretrained encoder in a fraction of a second."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(None))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def _shared_dir(tmp_path_factory, worker_id: str) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def _build(out: Path, edition=lambda config: config, finish=lambda html: None) -> Path:
    """Build `edition` of the book into `out` (ci profile, cached execution), then run
    `finish` on its html folder; return that folder."""
    html = out / "_build" / "html"
    # One build at a time, also across editions: they share the jupyter-cache database.
    with FileLock(str(out.parent / "book-builds.lock")):
        done = out / "done.json"
        if done.is_file():
            result = json.loads(done.read_text())
            assert result["ok"], result["log"]
            return html
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["make", "assets"], cwd=ROOT, check=True, capture_output=True)
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        config["execute"]["execute_notebooks"] = "cache"
        config["execute"]["cache"] = str(CI_CACHE)
        config["execute"]["exclude_patterns"] = _not_executed()
        config = edition(config)
        (out / "_config.yml").write_text(yaml.safe_dump(config))
        jb = Path(sys.executable).with_name("jupyter-book")
        build = subprocess.run([str(jb), "build", str(ROOT), "--all", "--warningiserror",
                                "--keep-going", "--config", str(out / "_config.yml"),
                                "--path-output", str(out)], capture_output=True, text=True,
                               env={**os.environ, "LLMREC_PROFILE": "ci"})
        ok = build.returncode == 0
        if ok:
            finish(html)
        done.write_text(json.dumps({"ok": ok, "log": build.stdout[-3000:] + build.stderr[-3000:]}))
        assert ok, build.stdout[-3000:] + build.stderr[-3000:]
    return html


@pytest.fixture(scope="session")
def book_html(tmp_path_factory, worker_id) -> Path:
    """The instructor edition: exercises with their solutions."""
    if shutil.which("npm") is None:
        pytest.skip("npm is needed to fetch MathJax and mermaid")
    return _build(_shared_dir(tmp_path_factory, worker_id) / "book-instructor")


@pytest.fixture(scope="session")
def student_html(tmp_path_factory, worker_id) -> Path:
    """The student edition, configured as `make book-student` configures it."""
    if shutil.which("npm") is None:
        pytest.skip("npm is needed to fetch MathJax and mermaid")
    return _build(_shared_dir(tmp_path_factory, worker_id) / "book-student",
                  lambda config: student_config(config, CI_CACHE), finish=strip_sources)


def toc_pages() -> list[str]:
    """Every page of the book (the root and each `file:` of _toc.yml), without its suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return pages


def source_of(page: str) -> Path:
    """The source file of a toc page (.md or .ipynb)."""
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{page}{suffix}").is_file():
            return ROOT / f"{page}{suffix}"
    raise FileNotFoundError(page)
