"""Images: hash, store, search, and draw results (reading: :mod:`semhash.pipelines.image_reading`).

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
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from semhash.image_hasher import ADDRESS_BITS, IMAGE_DIMS, IMAGE_SIDE, ImageHasher
from semhash.index.database import Database, DatabaseError
from semhash.index.locks import writes_database
from semhash.index.models import IMAGES, load_model, save_model
from semhash.index.search import Hit, SearchEngine, SearchOptions
from semhash.pipelines.image_reading import pixels_from_array, read_images
from semhash.progress import reports_progress

log = logging.getLogger(__name__)


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
        SearchEngine(database, IMAGES).build_indexes(keep=False)
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


def _image_model_names(db: Database) -> set[str]:
    """The database's model names; DatabaseError when no image has been indexed."""
    known = {row.name for row in db.list_models()}
    if IMAGES.long not in known:
        raise DatabaseError(f"{db!r} has no image model yet: index images first")
    return known


def load_image_models(db: Database) -> tuple[dict[str, ImageHasher], dict[str, int]]:
    """The stored image hashers (the long one and, if any, the address one) and their ids."""
    models, ids = {}, {}
    known = _image_model_names(db)
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
    _image_model_names(db)  # the names only: the engine loads the weights it needs, once
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
