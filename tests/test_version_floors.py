"""The lowest versions that pyproject.toml allows really run the version-sensitive code.

A fresh virtual environment sees this environment's packages through a .pth file (torch and
everything else, as in test_colab_install.py), and gets the floor versions of ``FLOORED``
installed into itself, where they shadow this environment's newer ones; pip resolves what those
floors need beside this environment, with torch and torchvision pinned to the installed builds
so that it can never download a second torch. A script then runs, in that environment, the code
that depends on those packages' versions: each parameter-efficient method (peft's LoRA, AdaLoRA
and IA3, and the hand-written prefix tuning and adapters, which hook into transformers'
attention and mask interfaces), and full fine-tuning, each for one trainer step that is
checkpointed and resumed, then saved and reloaded with save_method/load_method; and a one-epoch
pykeen TransE fit. The floors of torch and torchvision are argued from their release notes in
pyproject.toml instead.
"""
import json
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from llmrec_lab.models.tuning_methods import METHODS

from conftest import ROOT

# accelerate and safetensors are here because transformers checks their versions when imported.
FLOORED = ("transformers", "peft", "pykeen", "accelerate", "safetensors")
SHARED = ("torch", "torchvision")  # this environment's builds, never replaced
HEAD = {"head.1.weight", "head.1.bias"}  # what every method trains

SCRIPT = """
import json, sys
from importlib import metadata
from pathlib import Path

import torch

from llmrec_lab.kg.build import TripleSet
from llmrec_lab.kg.embed import train_kge
from llmrec_lab.models.plm_rater import PLMRater, tokenize
from llmrec_lab.models.tuning_methods import (METHODS, MethodConfig, apply_method, load_method,
                                              method_penalty, method_step_hook, save_method)
from llmrec_lab.text_batches import TextPairDataset
from llmrec_lab.train import TrainConfig, Trainer

tiny, work, packages = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
left = ["liked: a quiet fridge (5/5)", "disliked: a loud phone (1/5); disliked: a loud phone (1/5)"]
right = ["a quiet washer", "another loud phone"]
result = {"methods": {}}
for method in METHODS:
    torch.manual_seed(0)
    model = apply_method(PLMRater(tiny, rating_mean=3.0), method, MethodConfig(total_step=1))
    data = TextPairDataset.from_texts(model.tokenizer, left, right, [5.0, 1.0])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    config = TrainConfig(epochs=1, batch_size=2, lr=1e-2, device="cpu",
                         checkpoint_dir=str(work / method))
    for _ in range(2):  # the second run resumes from the first one's checkpoint
        Trainer(model, config, data, step_hook=method_step_hook, penalty=method_penalty).fit()
    moved = sorted(n for n, p in model.named_parameters()
                   if n in before and not torch.equal(p, before[n]))
    save_method(model, work / f"{method}-saved")
    again = load_method(PLMRater(tiny), work / f"{method}-saved")
    batch = tokenize(model.tokenizer, list(zip(left, right)))
    model.eval(), again.eval()
    with torch.no_grad():
        reloaded = torch.allclose(model(**batch), again(**batch))
    result["methods"][method] = {"moved": moved, "reloaded": reloaded}
rows = [(f"item:{i}", relation, f"{relation}:{i % k}")
        for i in range(10) for relation, k in (("brand", 3), ("category", 2))]
kge = train_kge(TripleSet.from_rows(rows), "transe", dim=4, epochs=1, use_cache=False)
result["transe"] = list(kge.entity_emb.shape)
result["versions"] = {name: metadata.version(name) for name in packages}
print(json.dumps(result))
"""


def floors() -> dict[str, str]:
    """The ``>=`` bound of each FLOORED package in pyproject.toml's dependencies."""
    lines = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for requirement in map(Requirement, lines):
        if requirement.name in FLOORED:
            (lowest,) = [s.version for s in requirement.specifier if s.operator == ">="]
            found[requirement.name] = lowest
    assert sorted(found) == sorted(FLOORED), found
    return found


def floor_venv(tmp_path: Path) -> Path:
    """A venv whose own packages come first, then the checkout, then this environment's; its
    python is returned. Without pip of its own: this environment's runs there."""
    venv = tmp_path / "floors"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    Path(site.stdout.strip(), "this-environment.pth").write_text(
        f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
    return python


def install(python: Path, wanted: dict[str, str], tmp_path: Path) -> set[str]:
    """Install ``wanted`` (name: version) and what they need into the venv; return the names
    pip installed. pip leaves alone any package outside the environment it installs into, so
    this environment is never changed, and the pins make it fail rather than fetch a torch."""
    pins, report = tmp_path / "shared.txt", tmp_path / "report.json"
    pins.write_text("".join(f"{name}=={metadata.version(name)}\n" for name in SHARED))
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--report", str(report),
                          "-c", str(pins), *(f"{n}=={v}" for n, v in wanted.items())],
                         capture_output=True, text=True, cwd=tmp_path)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return {item["metadata"]["name"].lower()
            for item in json.loads(report.read_text())["install"]}


def test_floor_versions_run_the_version_sensitive_code(tmp_path, tiny_bert):
    wanted = floors()
    python = floor_venv(tmp_path)
    assert not install(python, wanted, tmp_path) & set(SHARED)
    run = subprocess.run([str(python), "-c", SCRIPT, tiny_bert, str(tmp_path / "work"),
                          ",".join(FLOORED)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "LLMREC_PROFILE": "ci", "OMP_NUM_THREADS": "1",
                              "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-5000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert {n: Version(v) for n, v in result["versions"].items()} == \
        {n: Version(v) for n, v in wanted.items()}
    assert sorted(result["methods"]) == sorted(METHODS)
    for method, outcome in result["methods"].items():
        # Each method's own weights trained besides the head. (Under transformers 4.x prefix
        # tuning trains nothing: its BERT never calls a registered attention function.)
        assert set(outcome["moved"]) - HEAD, method
        assert outcome["reloaded"], method
    assert result["transe"] == [15, 4]  # 10 items, 3 brands, 2 categories; dim 4
