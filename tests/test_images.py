"""Images: the ImageHasher, the readers, the montage, and index + search on a tiny database."""

from __future__ import annotations

import io
import sys
import tarfile
import types

import numpy as np
import pytest
import torch

from semhash.index.database import Database
from semhash.index.models import IMAGES
from semhash.pipelines.image_reading import ImageWarning, read_images
from semhash.pipelines.images import (
    index_images,
    montage,
    montage_size,
    search_image,
    similar_image,
    stored_pixels,
)
from tests.conftest import two_class_images
from semhash.baselines import ITQ, PCASign, RandomHyperplaneLSH, SpectralHashing
from semhash.codes import hamming_distances
from semhash.estimator import DeepCodeModel
from semhash.image_hasher import ImageHasher

FAST = dict(hidden_layers=(32,), pretrain_epochs=3, finetune_epochs=8, patience=20, batch_size=10)


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    pixels, labels = two_class_images()
    return ImageHasher(n_bits=16, **FAST).fit(pixels), pixels, labels


def png_bytes(colour, size=(32, 32)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------ ImageHasher


def test_codes_closer_within_class(fitted):
    hasher, pixels, labels = fitted
    codes = hasher.transform(pixels)
    assert codes.shape == (len(pixels), 2) and codes.dtype == np.uint8
    distances = hamming_distances(codes, codes)
    same = labels[:, None] == labels[None, :]
    assert distances[same].mean() + 3 < distances[~same].mean()
    # floats in [0, 1] and flat (n, 3072) input give the same codes as uint8 images
    floats = pixels.reshape(len(pixels), -1).astype(np.float32) / 255
    np.testing.assert_array_equal(hasher.transform(floats), codes)


def test_save_load_round_trip(fitted, tmp_path):
    hasher, pixels, _ = fitted
    hasher.save(tmp_path / "image.model")
    loaded = DeepCodeModel.load(tmp_path / "image.model")
    assert type(loaded) is ImageHasher and loaded.n_bits == 16
    np.testing.assert_array_equal(loaded.transform(pixels), hasher.transform(pixels))
    assert torch.equal(loaded.mean_, hasher.mean_) and torch.equal(loaded.std_, hasher.std_)
    assert loaded.gaussian_learning_rate == hasher.gaussian_learning_rate
    assert hasher.mean_.shape == (3072,) and float(hasher.std_.min()) > 0


def test_wrong_input_shape_is_a_clear_error(fitted):
    hasher = fitted[0]
    with pytest.raises(ValueError, match="3072"):
        hasher.transform(np.zeros((2, 1024), np.uint8))
    with pytest.raises(ValueError, match="3072"):
        ImageHasher(n_bits=8).fit(np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hasher.transform(np.full((1, 3072), 255.0))


def test_address_model_is_a_short_image_hasher():
    model = ImageHasher.address_model()
    assert isinstance(model, ImageHasher) and model.n_bits == 28


# ------------------------------------------------------------------ baselines on dense features


@pytest.mark.parametrize("cls", [RandomHyperplaneLSH, PCASign, ITQ, SpectralHashing])
def test_baselines_on_dense_features(cls):
    pixels, labels = two_class_images(30)
    features = pixels.reshape(len(pixels), -1)[:, ::16].astype(np.float32) / 255  # 192 dims: fast
    features = (features - features.mean(0)) / (features.std(0) + 1e-2)
    codes = cls(n_bits=16, tfidf=False).fit(features).transform(features)
    assert codes.shape == (60, 2)
    distances = hamming_distances(codes, codes)
    same = labels[:, None] == labels[None, :]
    assert distances[same].mean() < distances[~same].mean()


# ------------------------------------------------------------------ readers


def make_tree(root):
    for label, colour in (("cats", "red"), ("dogs", "blue")):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(png_bytes(colour, size=(40, 30)))
    return root


def test_read_folder_tree(tmp_path):
    root = make_tree(tmp_path / "tree")
    (root / "notes.txt").write_text("not an image")
    pixels, labels, ids, sources = read_images(root)
    assert pixels.shape == (6, 32, 32, 3) and pixels.dtype == np.uint8
    assert labels == ["cats"] * 3 + ["dogs"] * 3
    assert ids[0] == "cats/0.png" and sources[0].endswith("0.png")
    assert pixels[0, 5, 5].tolist() == [255, 0, 0]
    assert len(read_images(root, limit=2)) == 2
    assert read_images(root, subdir="dogs").labels == [None] * 3


def test_undecodable_files_warned_and_empty_source_refused(tmp_path):
    root = make_tree(tmp_path / "tree")
    (root / "cats" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(ImageWarning, match="1 image files"):
        assert len(read_images(root)) == 6
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        read_images(tmp_path / "empty")


def make_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_read_tar_in_memory(tmp_path):
    archive = make_tar(tmp_path / "set.tar.gz", {
        "set/train/cats/1.png": png_bytes("red"),
        "set/train/dogs/2.jpg": png_bytes("blue"),
        "set/test/cats/3.png": png_bytes("red"),
    })
    pixels, labels, ids, sources = read_images(archive, split="train")
    assert labels == ["cats", "dogs"] and ids == ["set/train/cats/1.png", "set/train/dogs/2.jpg"]
    assert sources[0] == f"{archive}::set/train/cats/1.png"
    assert len(read_images(archive, subdir="set/test")) == 1
    assert not list(tmp_path.glob("set"))  # nothing extracted


def test_tar_with_unsafe_member_refused(tmp_path):
    archive = make_tar(tmp_path / "evil.tar.gz", {"ok/a.png": png_bytes("red"), "../escape.png": png_bytes("red")})
    with pytest.raises(ValueError, match="unsafe"):
        read_images(archive)


def test_read_npz_and_npy(tmp_path):
    pixels, labels = two_class_images(3)
    np.savez(tmp_path / "set.npz", images=pixels.transpose(0, 3, 1, 2), labels=labels)  # channels first
    got, got_labels, ids, _ = read_images(tmp_path / "set.npz")
    np.testing.assert_array_equal(got, pixels)
    assert got_labels == ["0"] * 3 + ["1"] * 3 and ids[1] == "set.npz#1"
    np.save(tmp_path / "flat.npy", pixels.reshape(6, -1).astype(np.float32) / 255)
    got, got_labels, _, _ = read_images(tmp_path / "flat.npy", limit=4)
    np.testing.assert_array_equal(got, pixels[:4])
    assert got_labels == [None] * 4
    np.save(tmp_path / "bad.npy", np.zeros((4, 100), np.uint8))
    with pytest.raises(ValueError, match="3072"):
        read_images(tmp_path / "bad.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        read_images(tmp_path / "objects.npy")


def test_read_hf_dataset(monkeypatch):
    from PIL import Image

    class ClassLabel:
        names = ["airplane", "automobile"]

    class FakeImage:  # the type name is what the reader looks at
        pass

    FakeImage.__name__ = "Image"

    class FakeDataset:
        features = {"img": FakeImage(), "label": ClassLabel()}
        column_names = ["img", "label"]
        rows = [{"img": Image.new("RGB", (64, 64), "green"), "label": i % 2} for i in range(5)]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    pixels, labels, ids, _ = read_images("hf:cifar10", split="test", limit=3)
    assert calls == [("cifar10", "test")]
    assert pixels.shape == (3, 32, 32, 3) and pixels[0, 0, 0].tolist() == [0, 128, 0]
    assert labels == ["airplane", "automobile", "airplane"] and ids[2] == "hf:cifar10/test#2"


# ------------------------------------------------------------------ montage, search


def test_montage_written_with_expected_size(tmp_path):
    from PIL import Image

    pixels, _ = two_class_images(4)
    path = montage(pixels[:2], np.stack([pixels[:5], pixels[3:8]]), np.arange(10).reshape(2, 5), tmp_path / "m.png")
    with Image.open(path) as image:
        assert image.size == montage_size(2, 5) and image.format == "PNG"
    # one query
    path = montage(pixels[0], pixels[:3], [0, 1, 2], tmp_path / "one.png", scale=1)
    with Image.open(path) as image:
        assert image.size == montage_size(1, 3, scale=1)


def test_index_and_search_round_trip(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    pixels, labels = two_class_images(15)
    np.savez(tmp_path / "set.npz", images=pixels, labels=labels)
    db_path = tmp_path / "images.db"
    params = dict(FAST, finetune_epochs=4)
    report = index_images(tmp_path / "set.npz", db_path, n_bits=16, address_bits=8,
                          hasher_params=params, address_params=params)
    assert report.added == 30 and report.trained
    with Database(db_path, create=False) as db:
        assert db.count_documents(kind="image") == 30
        doc = db.find_document("image:set.npz#0")
        assert doc.kind == "image" and doc.text is None and doc.label == "0" and doc.title == "set.npz#0"
        np.testing.assert_array_equal(stored_pixels(db, [doc.id]), pixels[:1])

        hits = search_image(db, pixels[0], k=5)
        assert len(hits) == 5 and hits[0].id == doc.id and hits[0].distance == 0
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
        assert sum(h.label == "0" for h in hits) >= 4
        two_stage = search_image(db, pixels[0], k=5, mode="address", max_candidates=10)
        assert two_stage[0].id == doc.id
        # the whole 8-bit address space as the ball: two-stage search is exhaustive search
        whole = search_image(db, pixels[0], k=30, mode="address", radius=8, max_candidates=None)
        exhaustive = search_image(db, pixels[0], k=30)
        assert [(h.id, h.distance) for h in whole] == [(h.id, h.distance) for h in exhaustive]
        # cell search visiting every cell is exhaustive search too (30 images: one cell)
        cells = search_image(db, pixels[0], k=30, mode="cells", probes=4)
        assert [(h.id, h.distance) for h in cells] == [(h.id, h.distance) for h in exhaustive]
        assert (db_path.parent / "images.db.faiss" / f"cells.{IMAGES.long}.index").is_file()
        with pytest.raises(ValueError, match="unknown search mode"):
            search_image(db, pixels[0], k=3, mode="address+cells")
        with pytest.raises(ValueError, match="probes"):
            similar_image(db, doc.id, k=3, mode="cells", probes=0)
        # the image address table has its own file, beside a text one's
        assert (db_path.parent / "images.db.faiss" / f"address.{IMAGES.address}.table").is_file()
        assert not (db_path.parent / "images.db.faiss" / "address.table").exists()
        similar = similar_image(db, doc.id, k=4)
        assert doc.id not in [h.id for h in similar] and len(similar) == 4
        # an image file as the query
        from PIL import Image

        Image.fromarray(pixels[20]).save(tmp_path / "q.png")
        hits = search_image(db, tmp_path / "q.png", k=30)  # 16-bit codes: exact ties are likely
        assert hits[0].distance == 0
        assert "image:set.npz#20" in [h.external_id for h in hits if h.distance == 0]

    # re-running skips stored images and reuses the models
    again = index_images(tmp_path / "set.npz", db_path)
    assert again.added == 0 and again.already_stored == 30 and not again.trained
    with Database(db_path, create=False) as db:
        assert {IMAGES.long, IMAGES.address} <= {m.name for m in db.list_models()}

    # retraining re-encodes what is stored, plus the new images, with the new models
    more, more_labels = two_class_images(3, seed=1)
    np.savez(tmp_path / "more.npz", images=more, labels=more_labels)
    params = dict(FAST, finetune_epochs=2)
    report = index_images(tmp_path / "more.npz", db_path, n_bits=8, address_bits=8, retrain=True,
                          hasher_params=params, address_params=params)
    assert report.trained and report.added == 6
    with Database(db_path, create=False) as db:
        for name in (IMAGES.long, IMAGES.address):
            ids, codes = db.get_codes(db.get_model(name).id)
            assert len(ids) == 36 and codes.shape == (36, 1)
        with pytest.raises(ValueError, match="address"):
            index_images(tmp_path / "more.npz", db, n_bits=8, address_bits=0, retrain=True)


def test_tar_without_split_labels_by_parent_folder(tmp_path):
    archive = make_tar(tmp_path / "set.tar.gz", {
        "set/train/cats/1.png": png_bytes("red"),
        "set/test/dogs/2.png": png_bytes("blue"),
    })
    images = read_images(archive)
    assert images.labels == ["dogs", "cats"] and images.ids == ["set/test/dogs/2.png", "set/train/cats/1.png"]


def test_address_search_without_address_model_is_a_clear_error(tmp_path):
    torch.set_num_threads(1)
    pixels, labels = two_class_images(5)
    np.savez(tmp_path / "set.npz", images=pixels, labels=labels)
    params = dict(FAST, pretrain_epochs=1, finetune_epochs=1)
    index_images(tmp_path / "set.npz", tmp_path / "images.db", n_bits=8, address_bits=0, hasher_params=params)
    with Database(tmp_path / "images.db", create=False) as db:
        assert len(search_image(db, pixels[0], k=3)) == 3
        with pytest.raises(ValueError, match="no address model"):
            search_image(db, pixels[0], k=3, mode="address")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (with a valid checksum) claims a size its few bytes do not hold."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD_IMAGES = {
    "text.png": b"this is a text file named like an image\n",
    "truncated.png": None,  # filled in below: a real PNG cut in half
    "huge.png": _png_claiming(30_000, 30_000),
}


def test_undecodable_images_are_one_clear_line_or_a_counted_skip(tmp_path):
    from click.testing import CliRunner

    from semhash.cli import main
    from semhash.pipelines.image_reading import ImageError

    good = png_bytes("red")
    files = dict(BAD_IMAGES, **{"truncated.png": good[: len(good) // 2]})
    folder = tmp_path / "photos" / "cats"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(good)
    for name, data in files.items():
        (folder / name).write_bytes(data)
        with pytest.raises(ImageError, match=name.replace(".", r"\.")):
            read_images(folder / name)
        for command in (["images", "index", str(folder / name), "--db", str(tmp_path / "x.db"), "-q"],
                        ["images", "search", str(folder / name), "--db", str(tmp_path / "x.db")]):
            result = CliRunner().invoke(main, command)
            assert result.exit_code == 1 and "Traceback" not in result.output, result.output
            assert name in result.output and len(result.output.strip().splitlines()) == 1, result.output
    with pytest.warns(UserWarning, match="3 image files .* could not be decoded"):
        images = read_images(tmp_path / "photos")
    assert images.ids == ["cats/good.png"]
    assert not (tmp_path / "x.db").exists()


def test_hf_images_from_a_folder_written_by_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["red", "blue"])})
    saved = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (48, 48), "red"), Image.new("RGB", (32, 32), "blue")], "label": [0, 1]},
        features=features)
    saved.save_to_disk(str(tmp_path / "saved"))
    images = read_images(f"hf:{tmp_path / 'saved'}")
    assert images.pixels.shape == (2, 32, 32, 3) and images.labels == ["red", "blue"]
    assert images.pixels[0, 0, 0].tolist() == [255, 0, 0]
