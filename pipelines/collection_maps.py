"""The map of a stored collection, drawn to a file: what `semhash map` and `semhash images map` do.

Text collections are drawn at their stored 2-D map codes, coloured by label (or by clusters
named by their words), optionally beside an LSA or UMAP map of the same documents and as
an interactive page. Image collections are drawn as thumbnails at the codes of their
ImageMap, trained on the stored pixels on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from semhash.index.database import Database, DatabaseError
from semhash.index.models import TEXT
from semhash.index.search import SearchEngine, snippet
from semhash.pipelines.images import image_map_codes, stored_pixels
from semhash.pipelines.baseline_maps import lsa_map, umap_map
from semhash.pipelines.maps import draw_comparison, draw_map, draw_thumbnail_map, map_title, write_html_map

COMPARISONS = {"lsa": ("LSA", lsa_map), "umap": ("UMAP over LSA-50", umap_map)}


def draw_collection_map(database: str | os.PathLike, out: str | os.PathLike, *, compare: str | None = None,
                        html_out: str | os.PathLike | None = None, queries=(), title: str | None = None) -> int:
    """Draw a text collection's 2-D map codes to ``out`` (PNG); the number of documents drawn.

    ``compare`` ("lsa" or "umap") draws that map of the same documents beside it;
    ``html_out`` also writes a self-contained interactive page; ``queries`` are texts
    marked where the map model places them.
    """
    if compare is not None and compare not in COMPARISONS:
        raise ValueError(f"unknown comparison {compare!r}; choose from {sorted(COMPARISONS)}")
    with SearchEngine(database) as engine:
        model = engine.db.get_model(TEXT.map, with_weights=False)
        if model.n_dims != 2:
            raise DatabaseError(f"the map model has {model.n_dims} dimensions; a map draws 2-D codes")
        ids, points = engine.db.get_codes(model.id)
        documents = engine.db.get_documents(ids.tolist())
        labels = [doc.label for doc in documents]
        counts = engine.vocabulary.transform([doc.text or "" for doc in documents])
        words = engine.vocabulary.words_
        query_points = np.vstack([engine.encode(text, "euclidean") for text in queries]) if queries else None
        query_counts = engine.vocabulary.transform(list(queries)) if queries else None
    heading = title or map_title(len(ids), Path(database).stem, "deep autoencoder 2-D code")
    if compare:
        name, make_map = COMPARISONS[compare]
        other, mapper = make_map(counts)
        maps = {"semhash (deep autoencoder)": points, name: other}
        query_by_map = None if not queries else dict(zip(maps, (query_points, mapper.transform(query_counts))))
        figure = draw_comparison(maps, labels, title=heading, counts=counts, words=words, query_points=query_by_map)
    else:
        figure = draw_map(points, labels, title=heading, counts=counts, words=words, query_points=query_points)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    if html_out:
        write_html_map(points, labels, [doc.title for doc in documents], [snippet(doc.text or "") for doc in documents],
                       html_out, query_points=query_points, query_titles=list(queries) or None, title=heading,
                       counts=counts, words=words)
    return len(ids)


def draw_image_map(database: str | os.PathLike, out: str | os.PathLike, *, max_thumbnails: int = 1000,
                   retrain: bool = False, map_params: dict | None = None, title: str | None = None) -> tuple[int, int]:
    """Draw the stored images as thumbnails at their 2-D codes; ``(images, thumbnails drawn)``.

    The first call (or ``retrain=True``) trains the collection's ImageMap; later calls
    reuse it and place only the images added since (:func:`image_map_codes`).
    """
    with Database(database, create=False) as db:
        ids, points, _ = image_map_codes(db, retrain=retrain, map_params=map_params)
        pixels = stored_pixels(db, ids.tolist())
        labels = [doc.label for doc in db.get_documents(ids.tolist())]
    shown = min(len(ids), max_thumbnails)
    heading = title or (f"{Path(database).stem}: {len(ids):,} images, deep autoencoder 2-D map"
                        + (f" ({shown:,} thumbnails)" if shown < len(ids) else ""))
    figure = draw_thumbnail_map(points, pixels, labels, title=heading, max_thumbnails=max_thumbnails)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    return len(ids), shown
