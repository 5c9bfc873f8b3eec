"""ImageMap (2-D maps of small colour images), the thumbnail drawing, `semhash images map`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from semhash.cli import main
from semhash.index.database import Database
from semhash.index.models import IMAGES
from semhash.pipelines.images import image_map_codes
from semhash.pipelines.maps import draw_thumbnail_map
from semhash.estimator import MODEL_CLASSES, DeepCodeModel
from semhash.image_hasher import ImageHasher
from semhash.image_map import ImageMap

COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9]])
FAST = dict(hidden_layers=(64, 16), pretrain_epochs=2, finetune_epochs=3, tsne_epochs=5)


def colour_images(n_per_class=50, seed=0):
    """uint8 (n, 32, 32, 3): three colour classes (red, green, blue) of noisy images."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(COLOURS)), n_per_class)
    images = COLOURS[labels][:, None, None, :] + 0.2 * rng.standard_normal((len(labels), 32, 32, 3))
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def knn_accuracy(points, labels, k=10):
    d = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    neighbours = np.argsort(d, axis=1)[:, :k]
    return float((labels[neighbours] == labels[:, None]).mean())


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    pixels, labels = colour_images()
    return ImageMap(**FAST).fit(pixels), pixels, labels


def test_codes_are_2d_float32_and_separate_the_classes(fitted):
    model, pixels, labels = fitted
    points = model.transform(pixels)
    assert points.shape == (len(pixels), 2) and points.dtype == np.float32
    assert np.isfinite(points).all() and points.std(axis=0).min() > 1e-3
    assert knn_accuracy(points, labels) > 0.8  # chance is 1/3
    # unseen images of the same classes land among their own class
    new_pixels, new_labels = colour_images(10, seed=1)
    new_points = model.transform(new_pixels)
    d = ((new_points[:, None] - points[None]) ** 2).sum(-1)
    nearest = labels[np.argsort(d, axis=1)[:, :10]]
    assert (nearest == new_labels[:, None]).mean() > 0.8


def test_one_image_alone_or_in_a_batch(fitted):
    model, pixels, _ = fitted
    batch = model.transform(pixels[:20])
    for i in (0, 7, 19):
        np.testing.assert_allclose(model.transform(pixels[i : i + 1]), batch[i : i + 1], atol=1e-5)
        np.testing.assert_allclose(model.transform(pixels[i].reshape(1, 3072)), batch[i : i + 1], atol=1e-5)


def test_save_load_round_trip(fitted, tmp_path):
    model, pixels, _ = fitted
    path = tmp_path / "map.pt"
    model.save(path)
    loaded = DeepCodeModel.load(path)
    assert type(loaded) is ImageMap and MODEL_CLASSES["ImageMap"] is ImageMap
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.transform(pixels), model.transform(pixels))
    torch.testing.assert_close(loaded.mean_, model.mean_)
    with pytest.raises(ValueError, match="ImageHasher"):
        ImageHasher.from_bytes(model.to_bytes())


def test_shares_the_image_hooks_and_uses_pca_affinities(fitted, monkeypatch):
    model, pixels, _ = fitted
    from semhash.image_hasher import ImageInput

    assert issubclass(ImageMap, ImageInput) and issubclass(ImageHasher, ImageInput)
    assert model.visible_units == "gaussian" and model.output_units == "linear" and model.code_units == "linear"
    assert model._layer_learning_rate(True, "binary") == model.gaussian_learning_rate
    assert model._layer_learning_rate(False, "linear") == pytest.approx(0.1 * model.pretrain_learning_rate)
    features = model._tsne_features(model._check_input(pixels))
    assert features.shape == (len(pixels), min(50, len(pixels) - 1))
    with pytest.raises(ValueError, match="32x32"):
        model.transform(np.zeros((2, 100), np.uint8))


def test_thumbnail_map_writes_a_png(fitted, tmp_path):
    model, pixels, labels = fitted
    names = [["red", "green", "blue"][i] for i in labels]
    figure = draw_thumbnail_map(model.transform(pixels), pixels, names, max_thumbnails=40)
    path = tmp_path / "thumbs.png"
    figure.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "150 images, 40 shown" in figure.axes[0].get_title()
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["blue", "green", "red"]
    # unlabelled, and no thumbnails at all, both draw
    draw_thumbnail_map(model.transform(pixels), pixels, max_thumbnails=0).savefig(tmp_path / "dots.png", dpi=40)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        draw_thumbnail_map(np.zeros((3, 3)), pixels[:3])


def test_cli_images_map(tmp_path):
    from PIL import Image

    pixels, labels = colour_images(30, seed=2)
    folder = tmp_path / "photos"
    for i, (image, label) in enumerate(zip(pixels, labels)):
        (folder / ["red", "green", "blue"][label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / ["red", "green", "blue"][label] / f"{i:03d}.png")
    db_path = tmp_path / "photos.db"
    runner = CliRunner()
    result = runner.invoke(main, ["images", "index", str(folder), "--db", str(db_path), "--bits", "16",
                                  "--address-bits", "0", "--epochs", "2", "-q"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "maps" / "map.png"
    result = runner.invoke(main, ["images", "map", "--db", str(db_path), "--out", str(out),
                                  "--max-thumbnails", "50", "--epochs", "5", "-q"])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "90 images, 50 thumbnails" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Database(db_path, create=False) as db:
        row = db.get_model(IMAGES.map, with_weights=False)
        assert row.kind == "real" and row.n_dims == 2 and row.config["class"] == "ImageMap"
        ids, points = db.get_codes(row.id)
        assert len(ids) == 90 and points.dtype == np.float32
        # a second call reuses the stored model and codes
        again_ids, again, trained = image_map_codes(db)
        assert not trained and np.array_equal(again_ids, ids) and np.array_equal(again, points)
        stored_labels = np.array([["red", "green", "blue"].index(d.label) for d in db.get_documents(ids.tolist())])
    assert knn_accuracy(points, stored_labels) > 0.8
    assert "--max-thumbnails" in runner.invoke(main, ["images", "map", "--help"]).output
    missing = runner.invoke(main, ["images", "map", "--db", str(tmp_path / "none.db"), "--out", str(out), "-q"])
    assert missing.exit_code != 0
