"""Item images and the image encoder: shapes, determinism, the cache, and where style lives."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from llmrec_lab.world.images import render_item_images, show_images
from llmrec_lab.world import make_world
from llmrec_lab.encoders import image as image_module
from llmrec_lab.encoders.image import ImageEncoder, image_key, load_image_model, probe_accuracy
from llmrec_lab.encoders.text import TextEncoder

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def world():
    return make_world("shop", "ci", seed=3)


@pytest.fixture(scope="module")
def images(world):
    return render_item_images(world)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir):
    return ImageEncoder(cache_dir=cache_dir)


def test_images_have_the_promised_shape_and_type(world, images):
    assert images.shape == (world.config.n_items, 3, 64, 64) and images.dtype == np.uint8
    assert render_item_images(world, size=32).shape == (world.config.n_items, 3, 32, 32)
    with pytest.raises(ValueError, match="at least 16"):
        render_item_images(world, size=8)


def test_images_are_deterministic_and_depend_on_the_seed(world, images):
    np.testing.assert_array_equal(images, render_item_images(world))
    other = render_item_images(make_world("shop", "ci", seed=4))
    assert not np.array_equal(images, other)


def test_control_world_has_pictures_but_no_style_taste():
    control = make_world("shop", "ci", seed=3, image=0)
    assert render_item_images(control).shape[0] == control.config.n_items
    assert np.all(control.truth.taste_style == 0)


def test_no_two_items_share_a_picture(images):
    assert len({image_key(im) for im in images}) == len(images)


def test_show_images_labels_every_picture(images):
    fig = show_images(images[:5], [f"item {i}" for i in range(5)], ncols=3, title="t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"item {i}" for i in range(5)]
    with pytest.raises(ValueError):
        show_images(images[:2], ["one"])


def test_encoder_falls_back_and_says_so(encoder, images):
    assert encoder.weights_used in ("imagenet", "random-init (seed 0)")
    emb = encoder.encode(images[:4])
    assert emb.shape == (4, 512) and emb.dtype == np.float32 and np.isfinite(emb).all()
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode(images[:2].astype(np.float32))


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="resnet18"):
        load_image_model("vgg99")


def test_mobilenet_gives_576_features(images, cache_dir):
    enc = ImageEncoder("mobilenet_v3_small", weights=None, cache_dir=cache_dir)
    assert enc.weights_used == "random-init (seed 0)"
    assert enc.encode(images[:3]).shape == (3, 576)


def test_cache_serves_repeats_and_is_invalidated_when_the_encoder_changes(images, tmp_path):
    cache_dir = tmp_path
    first = ImageEncoder(weights=None, seed=0, cache_dir=cache_dir)
    calls = []
    first.model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    a = first.encode(images[:6])
    assert sum(calls) == 6
    np.testing.assert_array_equal(first.encode(images[:6]), a)
    assert sum(calls) == 6  # all six came from the cache

    reloaded = ImageEncoder(weights=None, seed=0, cache_dir=cache_dir)
    assert reloaded.cache.directory == first.cache.directory
    np.testing.assert_array_equal(reloaded.cache.get([image_key(im) for im in images[:6]]), a)

    other = ImageEncoder(weights=None, seed=1, cache_dir=cache_dir)  # other weights
    assert other.cache.directory != first.cache.directory
    assert not any(image_key(im) in other.cache for im in images[:6])
    assert not np.allclose(other.encode(images[:6]), a)

    before = first.cache.setting["fingerprint"]
    with torch.no_grad():  # same architecture and seed, edited weights: another fingerprint
        first.model.conv1.weight.mul_(2.0)
    assert image_module.weights_fingerprint(first.model) != before


def test_style_is_in_the_images_and_not_in_the_texts(world, images, encoder, tmp_path):
    style, chance = world.truth.style, 1 / len(world.schema.styles)
    image_emb = encoder.encode(images)
    text_emb = TextEncoder(cache_dir=tmp_path).encode(world.items["text"].tolist())
    image_acc, text_acc = probe_accuracy(image_emb, style), probe_accuracy(text_emb, style)
    assert image_acc > 0.7, image_acc
    assert text_acc < chance + 0.15, text_acc
    assert probe_accuracy(text_emb, world.truth.category) > 0.9  # the text names the category
