"""The image benchmarks' own logic: augmented copies, the model cache, validation scoring, targets."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from semhash.image_hasher import ImageHasher
from tests.conftest import REPO


def load(name: str):
    # The scripts import ``_common`` and each other by bare name, as from benchmarks/ itself;
    # appended, so that no benchmark's name shadows an installed module.
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.append(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speed():
    return load("image_search_speed")


@pytest.fixture(scope="module")
def images():
    return load("images")


def test_augmented_copies_are_new_images_of_the_same_scene(speed):
    rng = np.random.default_rng(0)
    # a smooth gradient scene: copies differ from it, but far less than another scene does
    y, x = np.mgrid[0:32, 0:32]
    scene = np.stack([y * 8, x * 8, (x + y) * 4], axis=-1).clip(0, 255).astype(np.uint8)
    other = scene[::-1, ::-1, ::-1]
    copies = speed.augment(np.repeat(scene[None], 50, axis=0), rng)
    assert copies.shape == (50, 32, 32, 3) and copies.dtype == np.uint8
    distinct = {c.tobytes() for c in copies}
    assert len(distinct) > 40  # random per copy
    own = np.abs(copies.astype(float) - scene).mean(axis=(1, 2, 3))
    assert np.median(own) < np.abs(other.astype(float) - scene).mean() / 2
    # seeded
    again = speed.augment(np.repeat(scene[None], 50, axis=0), np.random.default_rng(0))
    np.testing.assert_array_equal(copies, again)


def test_collection_starts_with_the_originals_then_copies(speed):
    train = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    chunks = list(speed.collection(train, 35, seed=0, chunk=10))
    sources = np.concatenate([s for s, _ in chunks])
    pixels = np.concatenate([p for _, p in chunks])
    assert len(sources) == len(pixels) == 35
    np.testing.assert_array_equal(sources[:10], np.arange(10))
    np.testing.assert_array_equal(pixels[:10], train)
    assert sources[10:].min() >= 0 and sources[10:].max() < 10


def test_validation_precision_leaves_out_the_query_source_and_its_copies(speed):
    sources = np.array([0, 0, 0, 1, 2, 3])
    labels = np.array([5, 5, 5, 5, 7, 5])
    ids = np.array([0, 1, 2, 3, 4, 5])
    # source 0 and its copies (rows 0-2) are left out: rows 3, 4, 5 remain, 2 of 3 relevant
    assert speed.validation_precision(ids, sources, labels, query_source=0, query_label=5) == pytest.approx(2 / 3)


def test_speed_targets_pass_and_miss(speed, monkeypatch):
    from semhash.index.models import IMAGES
    from semhash.index.search import SearchOptions

    assert (IMAGES.radius, SearchOptions().max_candidates) == (3, 500)  # the names below
    result = {"sizes": [{"images": 1_000_000, "methods": {
        "binary flat": {"p_at_100": 0.30},
        "address r=3 max=500": {"p_at_100": 0.29, "x_faster_than_flat": 25.0},
    }}]}
    assert [t["status"] for t in speed.targets(result)] == ["PASS", "PASS"]
    result["sizes"][0]["methods"]["address r=3 max=500"] = {"p_at_100": 0.27, "x_faster_than_flat": 12.0}
    assert [t["status"] for t in speed.targets(result)] == ["MISS", "MISS"]


def test_fit_or_load_reuses_a_fit_only_for_the_same_settings_and_rows(images, tmp_path):
    torch.set_num_threads(1)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    params = dict(hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1, batch_size=10, random_state=0)
    first, _, cached = images.fit_or_load(ImageHasher(n_bits=8, **params), pixels, tmp_path)
    assert not cached
    again, _, cached = images.fit_or_load(ImageHasher(n_bits=8, verbose=True, **params), pixels, tmp_path)
    assert cached  # verbosity does not change a fit
    np.testing.assert_array_equal(first.transform(pixels), again.transform(pixels))
    assert again.best_epoch_ == first.best_epoch_ and len(again.finetune_history_) == len(first.finetune_history_)
    _, _, cached = images.fit_or_load(ImageHasher(n_bits=12, **params), pixels, tmp_path)
    assert not cached  # other settings
    _, _, cached = images.fit_or_load(ImageHasher(n_bits=8, **params), pixels[1:], tmp_path)
    assert not cached  # other training rows


def test_image_targets_compare_semhash_with_every_baseline(images):
    results = {
        "pixels-euclidean": {"p@100": 0.20},
        "itq-256": {"p@100": 0.25},
        "semhash-256": {"p@100": 0.27, "fit_s": 1200.0},
        "semhash-28": {"p@100": 0.2},
        "semhash-28-address+256-rerank": {"p@100": 0.26, "fallback_rate": 0.25},
    }
    rows = {t["target"]: t["status"] for t in images.targets(results, 256, 28)}
    assert rows == {
        "semhash-256 vs pixels-euclidean, p@100": "PASS",  # 1.35x
        "semhash-256 vs itq-256, p@100": "MISS",  # 1.08x
        "address + re-rank vs exhaustive 256-bit, p@100 (25% fell back)": "PASS",  # 0.963
        "training the 256-bit model (s)": "PASS",
    }
