"""Every notebook starts with the same guarded Colab install cell, and that cell's pip line works.

The replay creates a fresh virtual environment, lets it see this environment's packages through a
.pth file (as Colab already has torch, transformers and the rest preinstalled), runs the install
cell's own pip arguments with the GitHub requirement pointed at this checkout, and checks that
pip installed the course library without installing or replacing torch, which is what keeps
Colab's CUDA build of torch in place.
"""
import ast
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import ROOT, toc_pages

NOTEBOOKS = sorted({*ROOT.glob("book/*.ipynb"), *ROOT.glob("notebooks/*.ipynb"),
                    *(ROOT / f"{p}.ipynb" for p in toc_pages() if (ROOT / f"{p}.ipynb").is_file())})
# Packages that Colab ships and that the install must leave alone.
PREINSTALLED = {"torch", "torchvision", "transformers", "numpy", "pandas", "scikit-learn"}


def install_cell(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return next(c.source for c in cells if c.cell_type == "code")


def pip_arguments(source: str) -> list:
    """The argument list of the cell's guarded `subprocess.run([...])`; `sys.executable` is
    returned as None, every other element as the string it is."""
    module = ast.parse(source)
    guards = [node for node in module.body if isinstance(node, ast.If)]
    assert len(guards) == 1, "the install cell has exactly one `if`"
    guard = guards[0]
    assert ast.unparse(guard.test) == "'google.colab' in sys.modules", ast.unparse(guard.test)
    assert not guard.orelse and len(guard.body) == 1, "the guard only installs"
    call = guard.body[0].value
    assert ast.unparse(call.func) == "subprocess.run"
    assert [(k.arg, ast.literal_eval(k.value)) for k in call.keywords] == [("check", True)]
    return [None if ast.unparse(e) == "sys.executable" else ast.literal_eval(e)
            for e in call.args[0].elts]


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def repository_files() -> list[str]:
    """The checkout's files that git tracks or would track (not the ignored ones)."""
    return subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_notebook_starts_with_the_same_install_cell(path):
    assert install_cell(path) == install_cell(NOTEBOOKS[0])
    args = pip_arguments(install_cell(path))
    assert args[:4] == [None, "-m", "pip", "install"], args


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_install_cells_use_the_repository_url_from_config(path):
    requirements = [a for a in pip_arguments(install_cell(path)) if a and "git+" in a]
    assert requirements == [f"llmrec-lab @ git+{repository_url()}"]


def test_the_install_line_replays_in_a_fresh_venv(tmp_path):
    args = pip_arguments(install_cell(NOTEBOOKS[0]))
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    # This environment's packages stand in for Colab's preinstalled ones.
    Path(site.stdout.strip(), "preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # What pip's git+https would fetch: the committed and new files of this checkout, copied
    # (pip builds in the source tree, and must not leave a build/ folder in ours).
    checkout = tmp_path / "checkout"
    for name in repository_files():
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    line = [str(python) if a is None else a for a in args]
    line = [f"llmrec-lab @ {checkout.as_uri()}" if a and "git+" in a else a for a in line]
    # `--report -` with the cell's -q makes pip print only its JSON report of what it installed.
    pip = subprocess.run(line + ["--report", "-"], capture_output=True, text=True, cwd=tmp_path)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    report = json.loads(pip.stdout)
    installed = {item["metadata"]["name"].lower() for item in report["install"]}
    assert "llmrec-lab" in installed, installed
    assert not installed & PREINSTALLED, f"pip installed {installed & PREINSTALLED}"

    step = ("import llmrec_lab, torch\n"
            "from llmrec_lab.world import make_world\n"
            "from llmrec_lab.models.baselines import make_model\n"
            "world = make_world('shop', 'ci', n_days=5)\n"
            "model = make_model('biases').fit(world.ratings)\n"
            "r = world.ratings\n"
            "pred = model.predict(r['user_id'].to_numpy(), r['item_id'].to_numpy())\n"
            "print(llmrec_lab.__file__, torch.__file__, len(pred), float(pred.mean()))\n")
    lab = subprocess.run([str(python), "-c", step], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "LLMREC_PROFILE": "ci",
                              "HOME": str(tmp_path)})
    assert lab.returncode == 0, lab.stderr[-3000:]
    library, torch_file, n, mean = lab.stdout.split()
    assert Path(library).is_relative_to(venv), f"llmrec_lab imported from {library}"
    assert Path(torch_file).is_relative_to(sysconfig.get_paths()["purelib"]), torch_file
    assert int(n) > 0 and 1.0 <= float(mean) <= 5.0


def test_the_repository_url_lives_only_in_config_and_install_cells():
    """Buttons, links and the workflow derive the address from _config.yml; only the notebooks'
    install cells (which run on Colab, without the book) and the README's copy of that line
    spell it out."""
    url = repository_url().removeprefix("https://")
    found = []
    for name in repository_files():
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".jpg", ".pdf", ".gz", ".zip"):
            continue
        if path.suffix == ".ipynb":
            cells = nbformat.read(path, as_version=4).cells
            first_code = next(i for i, c in enumerate(cells) if c.cell_type == "code")
            found += [f"{name} cell {i}" for i, c in enumerate(cells)
                      if url in c.source and i != first_code]
        elif url in path.read_text(encoding="utf-8", errors="replace"):
            found.append(name)
    assert sorted(found) == ["README.md", "_config.yml"], found
