"""Verified, atomic downloads and zip extraction into folders of our own.

A download that is cut short or corrupted must never be mistaken for good data later, so every
file is written under a temporary name, checked against a pinned digest, and only then renamed
into place. Extraction follows the same rule: a directory either appears complete or not at all.
Both write only into folders the library owns (:mod:`llmrec_lab.io`), so a user's file of the
same name is never overwritten.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from llmrec_lab.io import atomic_file, atomic_folder, claim_folder

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file's digest differs from the pinned one."""


def _hashers(sha256: str | None, md5: str | None) -> dict[str, tuple[str, Any]]:
    """One running hash per pinned digest; refusing none keeps every download verified."""
    pinned = {"sha256": sha256, "md5": md5}
    hashers = {name: (digest.lower(), hashlib.new(name)) for name, digest in pinned.items() if digest}
    if not hashers:
        raise ValueError("download needs a pinned sha256 or md5 digest to verify against")
    return hashers


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so large archives don't fill memory."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _matches(path: Path, sha256: str | None, md5: str | None) -> bool:
    """Whether an existing file already has every pinned digest."""
    return all(file_digest(path, name) == expected
               for name, (expected, _) in _hashers(sha256, md5).items())


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
             md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; return ``dest``.

    The body is streamed into a temporary file beside ``dest`` while being hashed; on a digest
    mismatch or any error the temporary file is removed, so ``dest`` is either verified or absent.
    ``dest``'s folder must be absent, empty or ours (:func:`llmrec_lab.io.claim_folder`).
    """
    dest = Path(dest)
    if dest.is_file() and _matches(dest, sha256, md5):
        return dest
    hashers = _hashers(sha256, md5)
    claim_folder(dest.parent, "downloads")
    with atomic_file(dest) as out:
        _stream(url, out, hashers, timeout)
        wrong = [f"{name} expected {expected}, got {hasher.hexdigest()}"
                 for name, (expected, hasher) in hashers.items() if hasher.hexdigest() != expected]
        if wrong:
            raise ChecksumError(f"{url}: checksum mismatch ({'; '.join(wrong)}); nothing was saved")
    return dest


def _stream(url: str, out: BinaryIO, hashers: dict[str, tuple[str, Any]], timeout: float) -> None:
    """Copy the response body to ``out`` chunk by chunk, updating every hash."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                for _, hasher in hashers.values():
                    hasher.update(chunk)
    except OSError as err:  # URLError, HTTPError and timeouts are all OSErrors
        raise OSError(f"could not download {url}: {err}") from err


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike, member_root: str = "") -> Path:
    """Extract ``archive`` so that ``dest`` holds what the archive has under ``member_root``.

    The archive is unpacked into a scratch folder and ``member_root``'s contents are moved into
    the new folder that :func:`llmrec_lab.io.atomic_folder` swaps in at the end, so an
    interrupted extraction never leaves a half-filled ``dest``, and a ``dest`` holding files the
    library did not write is refused.
    """
    archive, dest = Path(archive), Path(dest)
    with atomic_folder(dest, f"contents of {archive.name}") as tmp, \
            tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=tmp.parent) as scratch:
        with zipfile.ZipFile(archive) as zf:
            _check_members(archive, zf)
            zf.extractall(scratch)
        root = Path(scratch) / member_root
        if not root.is_dir():
            raise FileNotFoundError(f"{archive} has no folder {member_root!r} to extract")
        for child in root.iterdir():
            os.replace(child, tmp / child.name)
    return dest


def _check_members(archive: Path, zf: zipfile.ZipFile) -> None:
    """Refuse absolute or ``..`` member paths instead of letting them be silently rewritten."""
    for name in zf.namelist():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{archive}: member {name!r} would extract outside the target folder")
