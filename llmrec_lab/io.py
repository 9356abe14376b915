"""Where the library writes and how: the cache folder, atomic files, atomic folders, ownership.

Every file the library writes as data (worlds, fixtures, downloads, caches, checkpoints, saved
methods) goes through this module, so three rules hold everywhere:

- **All or nothing.** A file is written under a temporary name beside its target and renamed
  over it (:func:`atomic_file`); a folder is built in a temporary sibling and swapped in
  (:func:`atomic_folder`). A failure mid-write leaves the old contents, or nothing.
- **Only our own folders.** A folder may be written only if it is absent, empty, or carries the
  marker file ``.llmrec-lab`` that this module puts in every folder it creates. Anything else
  raises :class:`FolderNotOurs` before a byte is written, so a user's files are never replaced.
- **Replacing never loses data.** The marker of a folder written whole lists its files; such a
  folder is replaced (or deleted) only while it holds nothing else, so a file a user added to it
  afterwards makes the write fail instead of vanishing.

Markers hold no time stamps, so the same inputs give byte-identical folders.

One reader lives here too: :func:`bench_records` finds the measurements that ``bench/`` scripts
recorded in the repository, which the chapters print beside what they measure themselves.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CACHE_ENV = "LLMREC_CACHE_DIR"
MARKER = ".llmrec-lab"
BENCH_RESULTS = Path("bench", "results")
NOT_OURS = "holds files llmrec-lab did not write; choose an empty or new folder"


class FolderNotOurs(ValueError):
    """A target folder holds files this library did not write, so writing there could destroy
    them. A ValueError, so the command line reports it in one line with exit code 2."""

    def __init__(self, folder: Path, why: str = NOT_OURS) -> None:
        super().__init__(f"{folder} {why}")
        self.folder = folder


def bench_records(name: str) -> Path | None:
    """``bench/results/<name>`` in the repository clone a notebook runs in (the working folder
    or one above it), or None outside a clone: what ``bench/`` recorded ships with the
    repository, not with the pip package, so a Colab session without a clone has none."""
    here = Path.cwd()
    return next((found for folder in (here, *here.parents)
                 if (found := folder / BENCH_RESULTS / name).exists()), None)


def cache_dir(*parts: str) -> Path:
    """``$LLMREC_CACHE_DIR``, else ``~/.cache/llmrec_lab`` (``~`` expanded), joined with ``parts``.

    Nothing is created here: the writers create what they use, under the ownership rule.
    """
    root = os.environ.get(CACHE_ENV) or "~/.cache/llmrec_lab"
    return Path(root).expanduser().joinpath(*parts)


def _sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name beside ``path``. Created by the caller with the usual permissions
    (the umask's), unlike :mod:`tempfile`'s owner-only files and folders."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` when the block ends without an exception.

    Readers see the old file or the whole new one; on an exception the temporary file is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, ".part")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); return ``path``."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def _marker(what: str, files: list[str] | None = None) -> bytes:
    """The marker's bytes: who wrote the folder, and (for a folder written whole) its files."""
    body: dict = {"written_by": "llmrec-lab", "what": what}
    if files is not None:
        body["files"] = files
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def _listed(folder: Path) -> set[str] | None:
    """The files the folder's marker lists, or None when it has no readable marker."""
    try:
        body = json.loads((folder / MARKER).read_text())
        return set(body.get("files", [])) if body.get("written_by") == "llmrec-lab" else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a sorted relative POSIX path."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def check_ours(folder: str | os.PathLike, whole: bool = False) -> None:
    """Raise :class:`FolderNotOurs` unless ``folder`` is absent, empty or marked as ours.

    With ``whole`` (the folder is about to be replaced or deleted), it must also hold nothing
    beyond the files its marker lists.
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FolderNotOurs(folder, "is a file, not a folder; choose an empty or new folder")
    if not any(folder.iterdir()):
        return
    listed = _listed(folder)
    if listed is None:
        raise FolderNotOurs(folder)
    extra = [f for f in _files(folder) if f != MARKER and f not in listed] if whole else []
    if extra:
        raise FolderNotOurs(folder, f"holds files llmrec-lab did not write ({', '.join(extra[:3])}"
                                    f"{', ...' if len(extra) > 3 else ''}); choose an empty or "
                                    "new folder")


def claim_folder(folder: str | os.PathLike, what: str) -> Path:
    """Make ``folder`` ours to add files to (a cache, a run's checkpoints): create or mark it.

    Refuses, with :class:`FolderNotOurs`, a folder that holds someone else's files.
    """
    folder = Path(folder)
    check_ours(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).is_file():
        atomic_write(folder / MARKER, _marker(what))
    return folder


@contextmanager
def atomic_folder(dest: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``dest`` to fill; on success it becomes ``dest``.

    ``dest`` must be absent, empty, or a folder this module wrote whole and nobody added to
    (checked before the work and again before the swap). On an exception the temporary folder
    is removed and ``dest`` is untouched.
    """
    dest = Path(dest).resolve()
    check_ours(dest, whole=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, ".part")
    tmp.mkdir()
    try:
        yield tmp
        files = [f for f in _files(tmp) if f != MARKER]  # an archive may carry a marker
        (tmp / MARKER).write_bytes(_marker(what, files))
        _swap(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` in place of ``dest``, keeping the old one until it is in.

    POSIX has no portable exchange of two folders, so the old one is first renamed aside; if the
    second rename fails it is renamed back.
    """
    check_ours(dest, whole=True)  # a file may have appeared while the new folder was built
    if not dest.exists():
        os.replace(new, dest)
        return
    aside = _sibling(dest, ".old")
    os.replace(dest, aside)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(aside, dest)
        raise
    shutil.rmtree(aside)


def remove_folder(folder: str | os.PathLike) -> None:
    """Delete a folder this module wrote whole, refusing one that holds anything else."""
    check_ours(folder, whole=True)
    shutil.rmtree(folder)
