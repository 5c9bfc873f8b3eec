"""Images: read, hash, store, search, and draw results.

Reading (:func:`read_images`) turns any of these into 32x32 RGB ``uint8`` pixels:

* a folder tree of PNG/JPEG files, where the folder holding a file is its label
  (``root/<label>/<file>``, also ``root/train/<label>/<file>``; files directly under
  the root have no label);
* a ``.tar``/``.tar.gz``/``.tgz`` archive of such a tree, read in memory (nothing is
  extracted; an archive with an unsafe member path -- absolute, ``..``, or a link --
  is refused as a whole);
* a single PNG/JPEG file;
* ``.npz``/``.npy`` arrays, loaded with ``allow_pickle=False`` (CIFAR's python
  "batches" are pickles and are deliberately not read: convert them to ``.npz``).
  An ``.npz`` holds the images under ``images`` (or ``x``, ``data``, ``pixels``, or
  its only array) and optionally labels under ``labels`` (or ``y``, ``label``);
* ``hf:NAME`` -- a Hugging Face dataset, from the Hub or a ``save_to_disk`` folder,
  its first image column and its ``label`` column (class names when it has them).

Images of another size are resized to 32x32 (no crop; bicubic), any mode is converted
to RGB. Image arrays may be ``(n, 32, 32, 3)``, ``(n, 3, 32, 32)``, ``(n, H, W[, 3])``
(resized) or ``(n, 3072)`` (32x32x3 in height-width-channel order), uint8 or floats in
[0, 1].

Storing (:func:`index_images`): every image becomes a document of ``kind="image"``
(``text=None``, ``title`` = file name, ``source`` = where it was read, ``label``). Its
raw pixels go to the database's pixels table (3,072 ``uint8`` in height-width-channel
order), so that results can be drawn whatever the source was and the models retrained on
what is stored (:func:`stored_pixels`). The image collection's models
(:data:`semhash.index.models.IMAGES`) hold its codes: the long
:class:`~semhash.image_hasher.ImageHasher` code, the short address code of two-stage
search, and the 2-D :class:`~semhash.image_map.ImageMap` code, trained on the stored
pixels by :func:`image_map_codes` (``semhash images map``), not by indexing.

Searching: :func:`search_image` (an image file or array) and :func:`similar_image` (a
stored image) go through the one :class:`~semhash.index.search.SearchEngine`: Hamming
distance of the long codes, exhaustive, or restricted to an address-code Hamming ball
(``mode="address"``, as in Krizhevsky & Hinton 2011) or to the k-means cells of long
codes nearest the query (``mode="cells"``).
:func:`montage` draws queries and their hits in a grid with Hamming distances.
"""

from __future__ import annotations

import logging
import io
import os
import tarfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from semhash.image_hasher import ADDRESS_BITS, IMAGE_DIMS, IMAGE_SIDE, ImageHasher
from semhash.index.database import Database, DatabaseError
from semhash.index.faiss_index import load_or_build
from semhash.index.locks import writes_database
from semhash.index.models import IMAGES, load_model, save_model
from semhash.index.search import Hit, SearchEngine, SearchOptions
from semhash.pipelines.hf import load_hf_dataset
from semhash.progress import reports_progress

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARRAY_IMAGE_KEYS = ("images", "x", "data", "pixels")
ARRAY_LABEL_KEYS = ("labels", "y", "label")

log = logging.getLogger(__name__)


# Bounds on one image file: its bytes, and the pixels its header claims, checked before
# decoding (a few hundred bytes of PNG can claim a 30000x30000 image).
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image file that cannot be read: not a PNG/JPEG, truncated, or too large."""


class ImageWarning(UserWarning):
    """Some image files could not be decoded and were skipped."""


@dataclass
class ImageSet:
    """What :func:`read_images` returns (it unpacks as a 4-tuple too)."""

    pixels: np.ndarray  # uint8 (n, 32, 32, 3)
    labels: list[str | None]
    ids: list[str]
    sources: list[str]

    def __iter__(self):
        return iter((self.pixels, self.labels, self.ids, self.sources))

    def __len__(self) -> int:
        return len(self.ids)


# ----------------------------------------------------------------------------- reading


def read_images(
    source: str | os.PathLike,
    *,
    subdir: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> ImageSet:
    """Read images as ``(pixels uint8 (n, 32, 32, 3), labels, ids, sources)``.

    ``subdir`` and ``split`` select a part of a folder tree or archive: images are read
    under ``<subdir>/<split>`` (either may be omitted; in an archive with one top-level
    folder, the path may also be given relative to it, e.g. ``split="train"`` for
    ``cifar10-jpg/train/...``). For ``hf:NAME`` ``split`` is the dataset split (default
    ``train``). ``limit`` keeps the first ``limit`` images (in sorted path order).
    ``ids`` are unique within the source (relative paths, ``name#row`` for arrays).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    text = str(source)
    if text.startswith("hf:"):
        return _read_hf(text[3:], split or "train", limit)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    prefix = "/".join(part.strip("/") for part in (subdir, split) if part)
    name = path.name.lower()
    if path.is_dir():
        return _read_folder(path, prefix, limit)
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return _read_tar(path, prefix, limit)
    if name.endswith(".npz") or name.endswith(".npy"):
        return _read_array_file(path, limit)
    if name.endswith(IMAGE_EXTENSIONS):
        pixels = decode_image(_read_image_file(path), str(path))
        return ImageSet(pixels[None], [None], [path.name], [str(path)])
    raise ValueError(
        f"cannot read images from {path}: expected a folder, a .tar(.gz) archive, a "
        f".png/.jpg file, a .npz/.npy array or hf:NAME"
    )


def decode_image(data: bytes, where: str = "the image") -> np.ndarray:
    """PNG/JPEG bytes to uint8 ``(32, 32, 3)`` RGB (resized when needed); :class:`ImageError`
    naming ``where`` for anything that is not a decodable image within the bounds."""
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{where} is over {MAX_IMAGE_BYTES // 2**20} MiB; an image file may hold at most that")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"{where} claims {width}x{height} pixels; an image may have at most "
                                 f"{MAX_IMAGE_PIXELS:,}")
            return to_thumbnail(image)
    except ImageError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt, truncated or foreign files
        raise ImageError(f"{where} is not a PNG or JPEG image that can be decoded ({type(err).__name__}: {err})") from None


def _read_image_file(path: Path) -> bytes:
    """At most one byte over the bound: enough for decode_image to refuse a huge file."""
    with path.open("rb") as file:
        return file.read(MAX_IMAGE_BYTES + 1)


def to_thumbnail(image) -> np.ndarray:
    """A PIL image to uint8 ``(32, 32, 3)``: RGB, resized (without cropping) to 32x32."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (IMAGE_SIDE, IMAGE_SIDE):
        image = image.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8).copy()


def _collect(entries, limit, where: str) -> ImageSet:
    """Decode ``(id, label, source, read_bytes)`` entries; warn about undecodable ones."""
    pixels, labels, ids, sources, bad = [], [], [], [], []
    for image_id, label, origin, read in entries:
        if limit is not None and len(ids) >= limit:
            break
        try:
            pixels.append(decode_image(read(), image_id))
        except ImageError:
            bad.append(image_id)
            continue
        labels.append(label)
        ids.append(image_id)
        sources.append(origin)
    if bad:
        warnings.warn(
            f"{len(bad)} image files in {where} could not be decoded and were skipped, "
            f"e.g. {', '.join(bad[:3])}",
            ImageWarning,
            stacklevel=3,
        )
    if not ids:
        raise ValueError(f"no images found in {where} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    return ImageSet(np.stack(pixels), labels, ids, sources)


def _label_of(relative: PurePosixPath) -> str | None:
    """The name of the folder holding the file (None for files directly under the root)."""
    return relative.parts[-2] if len(relative.parts) > 1 else None


def _read_folder(root: Path, prefix: str, limit: int | None) -> ImageSet:
    base = root / prefix if prefix else root
    if not base.is_dir():
        raise FileNotFoundError(f"no folder {prefix!r} in {root}")
    files = sorted(
        p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )

    def entries():
        for file in files:
            relative = PurePosixPath(file.relative_to(base).as_posix())
            image_id = PurePosixPath(file.relative_to(root).as_posix()).as_posix()
            yield image_id, _label_of(relative), str(file), lambda file=file: _read_image_file(file)

    return _collect(entries(), limit, str(base))


def check_member_name(name: str) -> None:
    """Refuse archive member paths that could escape an extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ValueError(f"unsafe path in archive: {name!r}; refusing to read the archive")


def _read_tar(path: Path, prefix: str, limit: int | None) -> ImageSet:
    with tarfile.open(path, mode="r:*") as archive:
        members = archive.getmembers()
        for member in members:
            check_member_name(member.name)
            if member.issym() or member.islnk():
                raise ValueError(f"archive member {member.name!r} is a link; refusing to read the archive")
        files = [
            m for m in members
            if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        names = {m.name.strip("/"): m for m in files}
        base = _archive_base(names, prefix, path)
        wanted = sorted(name for name in names if not base or name.startswith(base + "/"))
        wanted = set(wanted[:limit] if limit is not None else wanted)
        # Read the members in archive order: a compressed stream cannot seek back cheaply.
        contents = {
            member.name.strip("/"): archive.extractfile(member).read(MAX_IMAGE_BYTES + 1)
            for member in files
            if member.name.strip("/") in wanted
        }

    def entries():
        for name in sorted(contents):
            relative = PurePosixPath(name[len(base) + 1 :] if base else name)
            yield name, _label_of(relative), f"{path}::{name}", lambda data=contents[name]: data

    return _collect(entries(), limit, f"{path}" + (f" under {base}/" if base else ""))


def _archive_base(names, prefix: str, path: Path) -> str:
    """The folder of the archive to read: ``prefix``, or ``<single top folder>/prefix``."""
    if not prefix:
        tops = {name.split("/", 1)[0] for name in names if "/" in name}
        return tops.pop() if len(tops) == 1 and all("/" in n for n in names) else ""
    if any(name.startswith(prefix + "/") for name in names):
        return prefix
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    if len(tops) == 1:
        nested = f"{tops.pop()}/{prefix}"
        if any(name.startswith(nested + "/") for name in names):
            return nested
    raise FileNotFoundError(f"no folder {prefix!r} in the archive {path}")


def _read_array_file(path: Path, limit: int | None) -> ImageSet:
    labels = None
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: cannot load without pickle ({err}); save plain arrays with np.savez") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            image_key = next((k for k in ARRAY_IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if image_key is None:
                raise ValueError(f"{path}: no image array; expected one of {ARRAY_IMAGE_KEYS}, found {keys}")
            images = loaded[image_key]
            label_key = next((k for k in ARRAY_LABEL_KEYS if k in keys), None)
            if label_key is not None:
                labels = loaded[label_key]
    else:
        images = loaded
    pixels = pixels_from_array(images, what=str(path))
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if len(labels) != len(pixels):
            raise ValueError(f"{path}: {len(labels)} labels for {len(pixels)} images")
        labels = [str(label) for label in labels.tolist()]
    else:
        labels = [None] * len(pixels)
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    ids = [f"{path.name}#{row}" for row in range(len(pixels))]
    return ImageSet(pixels, labels, ids, [f"{path}#{row}" for row in range(len(pixels))])


def pixels_from_array(images, what: str = "the array") -> np.ndarray:
    """An array of images in any supported layout to uint8 ``(n, 32, 32, 3)``."""
    from PIL import Image

    images = np.asarray(images)
    if images.dtype == object:
        raise ValueError(f"{what}: object arrays are not images")
    if images.ndim == 2 and images.shape[1] == IMAGE_DIMS:
        images = images.reshape(len(images), IMAGE_SIDE, IMAGE_SIDE, 3)
    elif images.ndim == 4 and images.shape[1] == 3 and images.shape[3] != 3:
        images = images.transpose(0, 2, 3, 1)  # channels first -> last
    elif images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=3)  # greyscale
    if images.ndim != 4 or images.shape[3] != 3 or len(images) == 0:
        raise ValueError(
            f"{what}: expected images of shape (n, {IMAGE_DIMS}), (n, 32, 32, 3), (n, 3, 32, 32), "
            f"(n, H, W, 3) or (n, H, W), got {np.shape(images)}"
        )
    if images.dtype != np.uint8:
        images = images.astype(np.float64)
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1 + 1e-6:
            raise ValueError(f"{what}: non-uint8 pixels must be floats in [0, 1]")
        images = np.round(images * 255).astype(np.uint8)
    if images.shape[1:3] != (IMAGE_SIDE, IMAGE_SIDE):
        images = np.stack([to_thumbnail(Image.fromarray(image)) for image in images])
    return np.ascontiguousarray(images)


def _read_hf(name: str, split: str, limit: int | None) -> ImageSet:
    data = load_hf_dataset(name, split)
    features = getattr(data, "features", None) or {}
    columns = list(getattr(data, "column_names", None) or features)
    image_column = next(
        (c for c in columns if type(features.get(c)).__name__ == "Image"),
        next((c for c in columns if c in ("img", "image")), None),
    )
    if image_column is None:
        raise ValueError(f"hf:{name} has no image column (columns: {columns})")
    label_column = next((c for c in ("label", "labels", "fine_label", "coarse_label") if c in columns), None)
    names = getattr(features.get(label_column), "names", None) if label_column else None
    n = len(data) if limit is None else min(limit, len(data))
    pixels, labels = [], []
    for row in range(n):
        record = data[row]
        image = record[image_column]
        pixels.append(to_thumbnail(image) if hasattr(image, "convert") else pixels_from_array(np.asarray(image)[None])[0])
        label = record.get(label_column) if label_column else None
        labels.append(None if label is None else str(names[label] if names else label))
    if not pixels:
        raise ValueError(f"no images found in hf:{name} split {split!r}")
    ids = [f"hf:{name}/{split}#{row}" for row in range(n)]
    return ImageSet(np.stack(pixels), labels, ids, list(ids))


# ----------------------------------------------------------------------------- storing


@dataclass
class ImageIndexReport:
    database: str
    read: int
    added: int
    already_stored: int
    trained: bool
    models: dict
    seconds: dict

    def to_dict(self) -> dict:
        return asdict(self)


@reports_progress
@writes_database("db")
def index_images(
    source: str | os.PathLike,
    db: Database | str | os.PathLike,
    n_bits: int = 256,
    address_bits: int = ADDRESS_BITS,
    *,
    subdir: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    retrain: bool = False,
    hasher_params: dict | None = None,
    address_params: dict | None = None,
    train_limit: int | None = None,
    random_state: int = 0,
    verbose: bool = False,
) -> ImageIndexReport:
    """Read images from ``source`` and store them, hashed, in ``db``.

    Trains an :class:`ImageHasher` of ``n_bits`` bits and an address hasher of
    ``address_bits`` bits (0: none) when the database has none yet or when
    ``retrain=True`` (then on the stored images plus the new ones, at most
    ``train_limit`` of them, and every stored image is re-encoded); otherwise the stored
    models encode the new images. Images whose id is already stored are skipped, so a
    re-run resumes. Returns what was done.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    images = read_images(source, subdir=subdir, split=split, limit=limit)  # before any file is created
    timings["read"] = time.perf_counter() - started
    own = not isinstance(db, Database)
    database = Database(db) if own else db
    try:
        external = [f"image:{image_id}" for image_id in images.ids]
        stored = database.stored_external_ids(external)
        new = [i for i, key in enumerate(external) if key not in stored]
        log.info(f"read {len(images)} images from {source}; {len(stored)} already stored, adding {len(new)}")

        known = {row.name for row in database.list_models()}
        train = retrain or IMAGES.long not in known
        models: dict[str, ImageHasher] = {}
        if train and IMAGES.address in known and not address_bits:
            raise ValueError("this database has an address model: retrain with address_bits > 0 too")
        if train:
            old_ids, old_pixels = _stored_pixels_all(database)
            pool = np.concatenate([old_pixels, images.pixels[new]])
            if len(pool) == 0:
                raise ValueError("no images to train on")
            pool = _training_sample(pool, train_limit, random_state)
            started = time.perf_counter()
            log.info(f"training a {n_bits}-bit ImageHasher on {len(pool)} images")
            models[IMAGES.long] = ImageHasher(
                n_bits=n_bits, random_state=random_state, **(hasher_params or {})
            ).fit(pool)
            if address_bits:
                log.info(f"training a {address_bits}-bit address hasher")
                models[IMAGES.address] = ImageHasher.address_model(
                    n_bits=address_bits, random_state=random_state,
                    **(address_params if address_params is not None else hasher_params or {}),
                ).fit(pool)
            timings["train"] = time.perf_counter() - started
            model_ids = {name: save_model(database, name, model, replace=True, n_train=len(pool))
                         for name, model in models.items()}
            if old_pixels is not None and len(old_ids):
                for name, model in models.items():
                    database.put_codes(model_ids[name], old_ids, model.transform(old_pixels))
        else:
            models, model_ids = load_image_models(database)

        started = time.perf_counter()
        if new:
            ids = database.add_documents([
                {"external_id": external[i], "kind": IMAGES.kind, "text": None, "source": images.sources[i],
                 "label": images.labels[i], "title": PurePosixPath(images.ids[i]).name}
                for i in new
            ])
            pixels = images.pixels[new]
            database.put_pixels(ids, pixels.reshape(len(ids), IMAGE_DIMS))
            for name, model in models.items():
                database.put_codes(model_ids[name], ids, model.transform(pixels))
        timings["store"] = time.perf_counter() - started
        for name in models:
            load_or_build(database, name)
        return ImageIndexReport(
            database=database.location,
            read=len(images),
            added=len(new),
            already_stored=len(stored),
            trained=train,
            models={name: {"n_bits": model.n_bits, "layers": model.layer_sizes} for name, model in models.items()},
            seconds={key: round(value, 2) for key, value in timings.items()},
        )
    finally:
        if own:
            database.close()


def _stored_pixels_all(db: Database) -> tuple[np.ndarray, np.ndarray]:
    ids, pixels = db.get_pixels()
    return ids, pixels.reshape(len(ids), IMAGE_SIDE, IMAGE_SIDE, 3)


def stored_pixels(db: Database, ids: Sequence[int]) -> np.ndarray:
    """Stored pixels of documents ``ids`` (in that order), uint8 ``(n, 32, 32, 3)``."""
    wanted = [int(i) for i in ids]
    found, codes = db.get_pixels(wanted)
    position = {int(doc_id): row for row, doc_id in enumerate(found)}
    missing = [i for i in wanted if i not in position]
    if missing:
        raise KeyError(f"no stored pixels for documents {missing[:5]}")
    return codes[[position[i] for i in wanted]].reshape(len(wanted), IMAGE_SIDE, IMAGE_SIDE, 3)


def load_image_models(db: Database) -> tuple[dict[str, ImageHasher], dict[str, int]]:
    """The stored image hashers (the long one and, if any, the address one) and their ids."""
    models, ids = {}, {}
    known = {row.name for row in db.list_models()}
    if IMAGES.long not in known:
        raise DatabaseError(f"{db!r} has no image model yet: index images first")
    for name in (IMAGES.long, IMAGES.address):
        if name in known:
            stored = load_model(db, name)
            models[name], ids[name] = stored.model, stored.id
    return models, ids


def _training_sample(pixels: np.ndarray, limit: int | None, random_state: int) -> np.ndarray:
    """At most ``limit`` of the images (a seeded sample, in stored order) to train on."""
    if limit is None or len(pixels) <= limit:
        return pixels
    return pixels[np.sort(np.random.default_rng(random_state).choice(len(pixels), limit, replace=False))]


@reports_progress
@writes_database("db")
def image_map_codes(
    db: Database,
    *,
    retrain: bool = False,
    map_params: dict | None = None,
    train_limit: int | None = None,
    random_state: int = 0,
    verbose: bool = False,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """2-D map codes of every stored image: ``(ids, points float32 (n, 2), trained)``.

    The first call (or ``retrain=True``) trains an :class:`~semhash.image_map.ImageMap`
    on the stored pixels (a seeded sample of ``train_limit`` if given) and stores it as
    the ``image-map`` model with its codes, as the text pipeline stores its ``map`` model;
    later calls reuse it and only encode images added since.
    """
    from semhash.image_map import ImageMap

    known = {row.name for row in db.list_models()}
    ids, pixels = _stored_pixels_all(db)
    if len(ids) == 0:
        raise DatabaseError(f"{db!r} has no stored images: run `semhash images index` first")
    if len(ids) < 3:
        raise ValueError(f"a map needs at least 3 images, the database has {len(ids)}")
    trained = retrain or IMAGES.map not in known
    if trained:
        pool = _training_sample(pixels, train_limit, random_state)
        log.info(f"training a 2-D ImageMap on {len(pool)} images")
        model = ImageMap(random_state=random_state, **(map_params or {})).fit(pool)
        model_id = save_model(db, IMAGES.map, model, replace=True, n_train=len(pool))
        missing = np.ones(len(ids), bool)
    else:
        stored = load_model(db, IMAGES.map)
        model, model_id = stored.model, stored.id
        have, _ = db.get_codes(model_id)
        missing = ~np.isin(ids, have)
    if missing.any():
        log.info(f"placing {int(missing.sum())} images on the map")
        db.put_codes(model_id, ids[missing], model.transform(pixels[missing]))
    map_ids, points = db.get_codes(model_id, ids.tolist())
    return map_ids, points, trained


# ----------------------------------------------------------------------------- searching


def _query_pixels(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        images = read_images(image)
        if len(images) != 1:
            raise ValueError(f"{image} holds {len(images)} images; give one image")
        return images.pixels
    array = np.asarray(image)
    if array.ndim in (1, 3):
        array = array[None] if array.ndim == 3 else array.reshape(1, -1)
    return pixels_from_array(array, what="the query image")


def image_search_engine(db: Database) -> SearchEngine:
    """The search engine over a database's images (a clear error if it has none)."""
    load_image_models(db)  # DatabaseError when no image has been indexed
    return SearchEngine(db, IMAGES)


def search_image(db: Database, image, k: int | None = None, options: SearchOptions | None = None,
                 **overrides) -> list[Hit]:
    """The stored images nearest to ``image`` (a file path, or pixels of one image).

    By Hamming distance of the long codes, exhaustive by default; ``mode="address"`` (an
    address-code Hamming ball, as in Krizhevsky & Hinton 2011) and ``mode="cells"`` look
    at part of the collection only (see :mod:`semhash.index.search`).
    """
    return image_search_engine(db).search_input(_query_pixels(image), k, options, **overrides)


def similar_image(db: Database, key: str | int, k: int | None = None, options: SearchOptions | None = None,
                  **overrides) -> list[Hit]:
    """The stored images nearest to a stored one (id or external id), itself excluded."""
    return image_search_engine(db).similar(key, k, options, **overrides)


# ----------------------------------------------------------------------------- montage

MONTAGE_MARGIN = 4
MONTAGE_GAP = 8  # extra space between the query column and its hits
MONTAGE_TEXT = 12  # band under each thumbnail for its distance


def montage_size(n_queries: int, k: int, scale: int = 2) -> tuple[int, int]:
    """``(width, height)`` in pixels of a :func:`montage` of ``n_queries`` rows of ``k`` hits."""
    cell = IMAGE_SIDE * scale
    width = MONTAGE_MARGIN + (k + 1) * (cell + MONTAGE_MARGIN) + MONTAGE_GAP
    height = MONTAGE_MARGIN + n_queries * (cell + MONTAGE_TEXT + MONTAGE_MARGIN)
    return width, height


def montage(
    query_pixels, hits_pixels, distances, path: str | os.PathLike, *, scale: int = 2,
    query_labels: Sequence[str | None] | None = None, hit_relevant=None, title: str | None = None,
) -> Path:
    """Draw queries (first column) and their hits, each with its Hamming distance, as a PNG.

    ``query_pixels`` is ``(32, 32, 3)`` or ``(n, 32, 32, 3)``; ``hits_pixels``
    ``(k, 32, 32, 3)`` or ``(n, k, 32, 32, 3)``; ``distances`` ``(k,)`` or ``(n, k)``.
    Optional ``hit_relevant`` (bool, same shape as ``distances``) frames hits green or
    red. The image size is :func:`montage_size` (plus a 14-pixel band when ``title``).
    """
    from PIL import Image, ImageDraw

    queries = np.asarray(query_pixels, dtype=np.uint8)
    hits = np.asarray(hits_pixels, dtype=np.uint8)
    distances = np.asarray(distances)
    if queries.ndim == 3:
        queries, hits, distances = queries[None], hits[None], distances.reshape(1, -1)
        hit_relevant = None if hit_relevant is None else np.asarray(hit_relevant).reshape(1, -1)
    if queries.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE, 3) or hits.ndim != 5 or hits.shape[0] != len(queries):
        raise ValueError(
            f"expected query pixels (n, 32, 32, 3) and hits (n, k, 32, 32, 3), got {queries.shape} and {hits.shape}"
        )
    n, k = hits.shape[:2]
    if distances.shape != (n, k):
        raise ValueError(f"distances must have shape {(n, k)}, got {distances.shape}")
    width, height = montage_size(n, k, scale)
    top = 14 if title else 0
    canvas = Image.new("RGB", (width, height + top), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((MONTAGE_MARGIN, 1), title, fill="black")
    cell = IMAGE_SIDE * scale

    def paste(pixels, x, y):
        canvas.paste(Image.fromarray(pixels).resize((cell, cell), Image.Resampling.NEAREST), (x, y))

    for row in range(n):
        y = top + MONTAGE_MARGIN + row * (cell + MONTAGE_TEXT + MONTAGE_MARGIN)
        paste(queries[row], MONTAGE_MARGIN, y)
        label = query_labels[row] if query_labels is not None else "query"
        draw.text((MONTAGE_MARGIN, y + cell), str(label)[: max(4, cell // 6)], fill="black")
        for col in range(k):
            x = MONTAGE_MARGIN + MONTAGE_GAP + (col + 1) * (cell + MONTAGE_MARGIN)
            paste(hits[row, col], x, y)
            if hit_relevant is not None:
                colour = "green" if hit_relevant[row][col] else "red"
                draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=colour)
            d = float(distances[row, col])
            draw.text((x, y + cell), f"d={d:.0f}" if d == round(d) else f"d={d:.1f}", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
