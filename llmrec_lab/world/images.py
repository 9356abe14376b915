"""Item images for the synthetic worlds: the one channel that shows an item's style.

Each item gets a small RGB picture, drawn from the world's seed and the item's id alone, so the
same item always gets the same picture, whatever the world's size:

- the **category** is the shape (each category has its own: disc, square, triangle, ...), so
  an image also carries what the text says, as a product photo would;
- the **style** is the shape's colour and surface pattern (matte black, brushed steel with
  fine streaks, walnut with wood grain, ...), the signal the text never states;
- every picture is jittered: position, size, rotation, shade of the colour, background and
  pixel noise differ from item to item, so reading the style off a picture takes a model, not
  a lookup of one pixel.

A control world built with ``image=0`` still has pictures: only its users stop caring about
style, which is what lets a lab show that image features then gain nothing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from llmrec_lab.world import World

IMAGE_STREAM = 4  # rng stream of the world's seed; world.py uses 0-3

# One (RGB colour, pattern) per style, in the order of the schema's ``styles``.
# Patterns: "flat", "streaks" (fine horizontal lines), "grain" (wavy bands), "speckle" (dots),
# "gloss" (a bright diagonal highlight).
STYLE_LOOKS: dict[str, tuple[tuple[tuple[int, int, int], str], ...]] = {
    "shop": (((28, 28, 30), "flat"),  # matte black
             ((150, 155, 162), "streaks"),  # brushed steel
             ((160, 225, 195), "flat"),  # pastel mint
             ((120, 72, 38), "grain"),  # warm walnut
             ((205, 30, 35), "gloss"),  # bold red
             ((240, 243, 246), "speckle")),  # arctic white
    "screen": (((20, 22, 40), "speckle"),  # dark noir
               ((245, 170, 60), "gloss"),  # sunlit warm
               ((230, 40, 220), "streaks"),  # neon
               ((165, 120, 75), "grain"),  # sepia
               ((200, 185, 235), "flat"),  # pastel
               ((250, 250, 250), "streaks")),  # high-contrast
}

SHAPES = ("disc", "square", "triangle", "diamond", "cross", "ring", "wide", "tall")


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside-mask of a shape in its own frame, where the shape spans about [-1, 1]."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == "disc":
        return x ** 2 + y ** 2 <= 1.0
    if shape == "square":
        return (ax <= 0.85) & (ay <= 0.85)
    if shape == "triangle":
        return (y <= 0.8) & (y >= 2.0 * ax - 1.0)
    if shape == "diamond":
        return ax + ay <= 1.05
    if shape == "cross":
        return ((ax <= 0.3) & (ay <= 1.0)) | ((ay <= 0.3) & (ax <= 1.0))
    if shape == "ring":
        r2 = x ** 2 + y ** 2
        return (r2 <= 1.0) & (r2 >= 0.35)
    if shape == "wide":
        return (ax <= 1.0) & (ay <= 0.5)
    if shape == "tall":
        return (ax <= 0.45) & (ay <= 1.0) & ~((ax > 0.3) & (ay > 0.85))
    raise ValueError(f"unknown shape {shape!r}")


def _pattern(kind: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A brightness multiplier around 1 that gives a surface its texture."""
    if kind == "flat":
        return np.ones_like(x)
    if kind == "streaks":
        return 1.0 + 0.18 * np.sign(np.sin(y * rng.uniform(18, 24) + rng.uniform(0, 6.3)))
    if kind == "grain":
        phase = rng.uniform(0, 6.3)
        return 1.0 + 0.3 * np.sin(9.0 * y + 1.5 * np.sin(4.0 * x + phase))
    if kind == "speckle":
        return 1.0 - 0.35 * (rng.random(x.shape) < 0.12)
    if kind == "gloss":
        return 1.0 + 0.5 * np.exp(-((x + y - rng.uniform(-0.4, 0.4)) ** 2) / 0.05)
    raise ValueError(f"unknown pattern {kind!r}")


def render_image(category: int, style: int, world_name: str, rng: np.random.Generator,
                 size: int = 64) -> np.ndarray:
    """One (3, size, size) uint8 picture: the category's shape in the style's look, jittered."""
    looks = STYLE_LOOKS[world_name]
    colour, pattern = looks[style]
    grid = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(grid, grid, indexing="ij")
    # background: a random low-saturation tint with a soft vertical gradient
    tint = rng.uniform(70, 190) + rng.normal(0, 12, 3)
    background = tint[:, None, None] * (1.0 + 0.15 * y[None] * rng.choice([-1, 1]))
    # the shape's frame: random rotation, scale and offset
    angle = rng.uniform(-0.35, 0.35)
    scale = rng.uniform(0.5, 0.75)
    cx, cy = rng.uniform(-0.2, 0.2, 2)
    xs, ys = (x - cx) / scale, (y - cy) / scale
    xr = np.cos(angle) * xs + np.sin(angle) * ys
    yr = -np.sin(angle) * xs + np.cos(angle) * ys
    mask = _shape_mask(SHAPES[category % len(SHAPES)], xr, yr)
    shade = np.asarray(colour, dtype=float) * rng.uniform(0.85, 1.1) + rng.normal(0, 10, 3)
    surface = shade[:, None, None] * _pattern(pattern, xr, yr, rng)[None]
    picture = np.where(mask[None], surface, background)
    picture += rng.normal(0, 8, picture.shape)  # sensor noise
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def render_item_images(world: World, size: int = 64) -> np.ndarray:
    """Every item's picture, ``(n_items, 3, size, size)`` uint8, in item-id order.

    Deterministic: item ``i``'s picture depends only on the world's seed and name, the item's
    category and style, ``i`` and ``size``.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    truth, seed = world.truth, world.config.seed
    return np.stack([
        render_image(int(truth.category[i]), int(truth.style[i]), world.config.name,
                     np.random.default_rng([seed, IMAGE_STREAM, i]), size)
        for i in range(truth.n_items)])


def show_images(images: np.ndarray, labels: Sequence[str], ncols: int = 8,
                title: str | None = None, scale: float = 1.3):
    """A grid of pictures with a label under each; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    nrows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * (scale + 0.35)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, label in zip(axes.ravel(), images, labels):
        ax.imshow(np.transpose(image, (1, 2, 0)))
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
