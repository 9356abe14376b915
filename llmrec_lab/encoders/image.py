"""Image embeddings from torchvision backbones, cached on disk like the text embeddings.

Two backbones: ResNet-18 (512-d features) and MobileNetV3-small (576-d), each with its
classifier removed, so an image maps to the globally pooled output of its last convolutional
block. The encoder first asks torchvision for the ImageNet weights (``weights="DEFAULT"``); where
they cannot be had (offline, as in this course's CI), it falls back to the same network with
seeded random weights and says so in :attr:`ImageEncoder.weights_used`. Random convolutional
features are a known, honest baseline: they keep colour and texture statistics, which is what a
world's style is, and :func:`probe_accuracy` measures how much of it they keep rather than
assuming it.

Cache. The cache is :class:`~llmrec_lab.encoders.text.EmbeddingCache`, keyed here by the
encoder's identity (architecture, a sha256 over its weights, input size and preprocessing) and,
per image, the sha256 of its shape and bytes. Other weights (ImageNet versus random, or another
seed) are another setting and so another cache directory: no vector computed by one network is
ever served for another.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llmrec_lab.config import pick_device
from llmrec_lab.encoders.text import EmbeddingCache

ARCHITECTURES = ("resnet18", "mobilenet_v3_small")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image_model(arch: str = "resnet18", weights: str | None = "DEFAULT",
                     seed: int = 0) -> tuple[torch.nn.Module, str]:
    """A feature extractor (classifier removed, eval mode) and which weights it carries.

    ``weights="DEFAULT"`` tries torchvision's ImageNet weights (from its cache, else a
    download); on failure, and for ``weights=None``, the network keeps torchvision's
    initialisation drawn under ``seed``. The second value is ``"imagenet"`` or
    ``"random-init (seed N)"``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown image architecture {arch!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}")
    builder = getattr(torchvision.models, arch)
    model, used = None, f"random-init (seed {seed})"
    if weights is not None:
        try:
            model, used = builder(weights=weights), "imagenet"
        except (OSError, RuntimeError, ValueError):  # offline, corrupt download, bad name
            model = None
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(weights=None)
    if arch == "resnet18":
        model.fc = torch.nn.Identity()
    else:
        model.classifier = torch.nn.Identity()
    return model.eval(), used


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the names, shapes and values of a network's parameters and buffers."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def image_key(image: np.ndarray) -> bytes:
    """The cache key of one image: sha256 over its dtype, shape and pixel bytes."""
    digest = hashlib.sha256(f"{image.dtype}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.digest()


class ImageEncoder:
    """Embed uint8 images ``(n, 3, H, W)`` into ``(n, dim)`` float32 vectors, cached on disk."""

    def __init__(self, arch: str = "resnet18", weights: str | None = "DEFAULT", seed: int = 0,
                 input_size: int = 64, batch_size: int = 128,
                 device: str | torch.device | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.arch, self.input_size, self.batch_size = arch, input_size, batch_size
        model, self.weights_used = load_image_model(arch, weights, seed)
        self.device = pick_device(str(device) if device else None)
        self.model = model.to(self.device)
        setting = {"arch": arch, "fingerprint": weights_fingerprint(model),
                   "input_size": input_size, "mean": list(IMAGENET_MEAN),
                   "std": list(IMAGENET_STD)}
        self.cache = EmbeddingCache(cache_dir, f"image-{arch}", setting)

    @property
    def dim(self) -> int:
        """Feature size: 512 for ResNet-18, 576 for MobileNetV3-small."""
        return 512 if self.arch == "resnet18" else 576

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Embed ``images`` in order; only images not yet in the cache reach the network."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (n, 3, H, W), got "
                             f"{images.dtype} {images.shape}")
        keys = [image_key(im) for im in images]
        if not keys:
            return np.empty((0, self.dim), dtype=np.float32)
        new = {k: im for k, im in zip(keys, images) if k not in self.cache}
        if new:
            self.cache.put(list(new), self._embed(np.stack(list(new.values()))))
        return self.cache.get(keys)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = torch.as_tensor(images[start:start + self.batch_size], device=self.device)
                x = x.float() / 255.0
                if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                    x = F.interpolate(x, size=(self.input_size, self.input_size),
                                      mode="bilinear", align_corners=False)
                out.append(self.model((x - mean) / std).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, folds: int = 5) -> float:
    """Cross-validated accuracy of a linear probe (standardised logistic regression).

    How much of a label a frozen embedding keeps in linearly readable form; compare with
    chance, ``1 / n_classes``, for balanced labels. Deterministic: unshuffled stratified folds.
    """
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
    return float(cross_val_score(probe, embeddings, labels, cv=folds).mean())
