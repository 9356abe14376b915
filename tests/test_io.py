"""The write rules: atomic files and folders, ownership of target folders, the cache folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmrec_lab import io
from llmrec_lab.cli import main
from llmrec_lab.io import (MARKER, FolderNotOurs, atomic_file, atomic_folder, atomic_write,
                           cache_dir, claim_folder, remove_folder)

WORLD = ["world", "shop", "--profile", "ci", "--set", "n_users=30", "--set", "n_items=20",
         "--set", "n_days=3"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _fill(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_cache_dir_follows_the_environment_and_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path and cache_dir("embeddings") == tmp_path / "embeddings"
    monkeypatch.setenv("LLMREC_CACHE_DIR", "~/elsewhere")
    assert cache_dir("kge") == Path.home() / "elsewhere" / "kge"
    monkeypatch.delenv("LLMREC_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "llmrec_lab"
    assert not (tmp_path / "embeddings").exists()  # asking creates nothing


def test_bench_records_are_found_from_the_root_or_below_it(monkeypatch, tmp_path):
    record = tmp_path / "bench" / "results" / "run.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    (tmp_path / "notebooks").mkdir()
    for where in (tmp_path, tmp_path / "notebooks"):
        monkeypatch.chdir(where)
        assert io.bench_records("run.json") == record
        assert io.bench_records("other.json") is None


def test_atomic_write_replaces_whole_and_a_failure_keeps_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.bin", b"old")
    assert path.read_bytes() == b"old"
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_file(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("mid-write")
    assert path.read_bytes() == b"old" and _names(path.parent) == ["a.bin"]


def test_atomic_folder_creates_a_marked_folder_listing_its_files(tmp_path):
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"b.txt": "b", "sub/c.txt": "c"})
    assert _names(tmp_path) == ["out"]
    assert _names(tmp_path / "out") == [MARKER, "b.txt", "sub"]
    marker = json.loads((tmp_path / "out" / MARKER).read_text())
    assert marker == {"written_by": "llmrec-lab", "what": "test", "files": ["b.txt", "sub/c.txt"]}


def test_atomic_folder_accepts_an_empty_folder_and_replaces_its_own(tmp_path):
    (tmp_path / "out").mkdir()
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"old.txt": "old"})
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"new.txt": "new"})
    assert _names(tmp_path / "out") == [MARKER, "new.txt"] and _names(tmp_path) == ["out"]


@pytest.mark.parametrize("existing, why", [
    ({"thesis.txt": "years of work"}, "holds files llmrec-lab did not write; choose an empty "
                                      "or new folder"),
    ({MARKER: "not json", "thesis.txt": "x"}, "holds files llmrec-lab did not write"),
    ({MARKER: json.dumps({"written_by": "llmrec-lab", "what": "t", "files": []}),
      "thesis.txt": "x"}, "holds files llmrec-lab did not write (thesis.txt)"),
])
def test_atomic_folder_refuses_user_files_and_touches_nothing(tmp_path, existing, why):
    (tmp_path / "out").mkdir()
    _fill(tmp_path / "out", existing)
    with pytest.raises(FolderNotOurs) as err:
        with atomic_folder(tmp_path / "out", "test") as tmp:
            _fill(tmp, {"x.txt": "x"})
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'out'} ") and why in message and "\n" not in message
    assert isinstance(err.value, ValueError)
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == existing
    assert _names(tmp_path) == ["out"]


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(FolderNotOurs, match="is a file"):
        with atomic_folder(tmp_path / "out", "test"):
            pass
    assert (tmp_path / "out").read_text() == "a file"


def test_failure_while_filling_keeps_the_previous_contents(tmp_path):
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"a.txt": "first"})
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_folder(tmp_path / "out", "test") as tmp:
            _fill(tmp, {"a.txt": "second"})
            raise RuntimeError("mid-write")
    assert (tmp_path / "out" / "a.txt").read_text() == "first" and _names(tmp_path) == ["out"]


def test_failure_during_the_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"a.txt": "first"})
    real_replace = os.replace

    def fail_on_new(src, dst):  # the old folder moves aside; moving the new one in fails
        if Path(src).name.endswith(".part"):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", fail_on_new)
    with pytest.raises(OSError, match="rename failed"):
        with atomic_folder(tmp_path / "out", "test") as tmp:
            _fill(tmp, {"a.txt": "second"})
    assert (tmp_path / "out" / "a.txt").read_text() == "first"
    assert _names(tmp_path) == ["out"]


def test_a_file_appearing_during_the_write_is_kept(tmp_path):
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"a.txt": "first"})
    with pytest.raises(FolderNotOurs, match="late.txt"):
        with atomic_folder(tmp_path / "out", "test") as tmp:
            (tmp_path / "out" / "late.txt").write_text("the user's")
            _fill(tmp, {"a.txt": "second"})
    assert _names(tmp_path / "out") == [MARKER, "a.txt", "late.txt"]
    assert _names(tmp_path) == ["out"]


def test_claim_folder(tmp_path):
    assert _names(claim_folder(tmp_path / "new", "cache")) == [MARKER]
    (tmp_path / "empty").mkdir()
    claim_folder(tmp_path / "empty", "cache")
    (tmp_path / "empty" / "entry").write_text("added by the cache")
    claim_folder(tmp_path / "empty", "cache")  # ours: adding is fine whatever it holds
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.txt").write_text("x")
    with pytest.raises(FolderNotOurs, match="did not write"):
        claim_folder(tmp_path / "user", "cache")
    assert _names(tmp_path / "user") == ["thesis.txt"]


def test_remove_folder_only_removes_what_we_wrote(tmp_path):
    with atomic_folder(tmp_path / "out", "test") as tmp:
        _fill(tmp, {"a.txt": "a"})
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOurs, match="notes.txt"):
        remove_folder(tmp_path / "out")
    (tmp_path / "out" / "notes.txt").unlink()
    remove_folder(tmp_path / "out")
    assert _names(tmp_path) == []


def test_cli_world_refuses_a_folder_of_user_files(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    assert main([*WORLD, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "did not write" in lines[0]
    assert _names(out) == ["thesis.txt"] and (out / "thesis.txt").read_text() == "years of work"


def test_cli_world_writes_an_empty_folder_and_rewrites_its_own(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    assert main([*WORLD, "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*WORLD, "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert MARKER in first and _names(tmp_path) == ["w"]
