"""Downloads are verified and atomic; extraction appears whole or not at all; neither writes
into a folder holding someone else's files."""
from __future__ import annotations

import hashlib
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrec_lab.datasets.download import ChecksumError, download, extract_zip, file_digest
from llmrec_lab.io import MARKER, FolderNotOurs

PAYLOAD = b"user_id\titem_id\n" * 1000


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """Serve ``tmp_path/srv`` over HTTP on 127.0.0.1; yields (base URL, folder)."""
    root = tmp_path / "srv"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_checksum_writes_file(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out" / "data.bin"
    assert download(f"{url}/data.bin", dest, sha256=_sha256(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == [MARKER, "data.bin"]


def test_md5_and_sha256_both_checked(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out" / "data.bin"
    download(f"{url}/data.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest().upper())
    assert file_digest(dest, "md5") == hashlib.md5(PAYLOAD).hexdigest()
    dest.unlink()
    with pytest.raises(ChecksumError, match="md5"):
        download(f"{url}/data.bin", dest, sha256=_sha256(PAYLOAD), md5="0" * 32)
    assert not dest.exists()


def test_bad_checksum_raises_and_leaves_nothing(server, tmp_path):
    url, _ = server
    out = tmp_path / "out"
    expected = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(f"{url}/data.bin", out / "data.bin", sha256=expected)
    message = str(err.value)
    assert f"{url}/data.bin" in message and expected in message and _sha256(PAYLOAD) in message
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_missing_url_names_it_and_leaves_nothing(server, tmp_path):
    url, _ = server
    out = tmp_path / "out"
    with pytest.raises(OSError, match="missing.bin"):
        download(f"{url}/missing.bin", out / "x.bin", sha256="0" * 64)
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_checksum_is_required(tmp_path):
    with pytest.raises(ValueError, match="sha256 or md5"):
        download("http://127.0.0.1:9/x", tmp_path / "x")


def test_verified_file_is_not_fetched_again(tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    # port 9 (discard) is never served here: a fetch attempt would fail
    assert download("http://127.0.0.1:9/data.bin", dest, sha256=_sha256(PAYLOAD)) == dest


def test_corrupt_file_is_replaced(server, tmp_path):
    url, _ = server
    dest = download(f"{url}/data.bin", tmp_path / "out" / "data.bin", sha256=_sha256(PAYLOAD))
    dest.write_bytes(b"truncated")
    download(f"{url}/data.bin", dest, sha256=_sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_download_refuses_a_folder_of_user_files(server, tmp_path):
    url, _ = server
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.bin").write_bytes(b"the user's own data.bin")
    with pytest.raises(FolderNotOurs, match="mine holds files llmrec-lab did not write"):
        download(f"{url}/data.bin", tmp_path / "mine" / "data.bin", sha256=_sha256(PAYLOAD))
    assert (tmp_path / "mine" / "data.bin").read_bytes() == b"the user's own data.bin"
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["data.bin"]


def test_file_url(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(PAYLOAD)
    dest = download(source.as_uri(), tmp_path / "out" / "copy.bin", sha256=_sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_member_root(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"pkg/a.txt": b"a", "pkg/sub/b.txt": b"b", "c.txt": b"c"})
    dest = extract_zip(archive, tmp_path / "out", member_root="pkg")
    assert (dest / "a.txt").read_bytes() == b"a" and (dest / "sub" / "b.txt").read_bytes() == b"b"
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "a.txt", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_extract_replaces_its_own_folder_and_accepts_an_empty_one(tmp_path):
    (tmp_path / "out").mkdir()
    extract_zip(_zip(tmp_path / "a.zip", {"a.txt": b"a"}), tmp_path / "out")
    extract_zip(_zip(tmp_path / "b.zip", {"b.txt": b"b"}), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "b.txt"]


def test_extract_refuses_a_folder_of_user_files(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"a.txt": b"a"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.txt").write_text("years of work")
    with pytest.raises(FolderNotOurs, match="out holds files llmrec-lab did not write"):
        extract_zip(archive, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["thesis.txt"]
    assert (tmp_path / "out" / "thesis.txt").read_text() == "years of work"


@pytest.mark.parametrize("members, root, error, match", [
    ({"pkg/a.txt": b"a"}, "other", FileNotFoundError, "'other'"),
    ({"../evil.txt": b"x"}, "", ValueError, "evil.txt"),
])
def test_failed_extraction_leaves_nothing(tmp_path, members, root, error, match):
    archive = _zip(tmp_path / "a.zip", members)
    with pytest.raises(error, match=match):
        extract_zip(archive, tmp_path / "out", member_root=root)
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip"]

