"""Cell search: an inverted file over the long binary codes, fast on large collections.

Semantic hashing's short address code finds candidates by flipping a few of its bits,
but a 28-bit code's Hamming ball is not the 256-bit code's neighbourhood: on a million
images, a ball that holds enough of the long code's nearest neighbours costs more
probes than exhaustive search (``benchmarks/results/image_search_speed.md``). Cells
take the address from the long codes themselves:

* the long codes are clustered into ``n_cells`` cells by k-means in Hamming space
  (FAISS ``IndexBinaryIVF``: binary centroids, trained on a seeded sample); each code
  is stored in the list of its nearest centroid, so a cell's number is its address;
* a query computes its distance to every centroid, visits the ``n_probe`` nearest
  cells, and ranks their codes by long-code Hamming distance (ties by document id).

A query costs ``n_cells`` centroid distances plus about ``n * n_probe / n_cells`` code
distances; with ``n_cells ~ 4 sqrt(n)`` that grows as ``sqrt(n)``, where exhaustive search
grows as ``n``. When the visited cells hold fewer than ``k`` codes, the query is
answered by visiting every cell (exhaustive), so it always gets ``min(k, n)`` results.

The index is a cache like the FAISS flat indexes: saved as
``<db>.faiss/cells.<model>.index`` (FAISS's own format, no pickle) beside a JSON sidecar
with the model's code fingerprint and the file's SHA-256, written atomically;
:func:`load_or_build_cells` rebuilds it when the codes changed.
"""

from __future__ import annotations

from math import isqrt
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from semhash.codes import n_bytes
from semhash.index.cache import CacheFile, cache_dir

if TYPE_CHECKING:
    from semhash.index.database import Database

CELLS_FORMAT = 1
# FAISS k-means wants at least 39 training points per centroid; more only slows it.
TRAIN_POINTS_PER_CELL = 40


def default_cells(n: int) -> int:
    """Cells for ``n`` codes: ``4 sqrt(n)`` (4,000 for a million; FAISS's guide is 4-16
    sqrt(n)), at least 1, and no more than k-means can train (40 codes per cell)."""
    return max(1, min(4 * isqrt(max(n, 0)), n // TRAIN_POINTS_PER_CELL))


class CellIndex:
    """Long binary codes in ``n_cells`` k-means cells, searched in the nearest ``n_probe``.

    Build with :meth:`build` (or :func:`load_or_build_cells` from a database). Not for
    concurrent searches from several threads (a search sets the probe count).
    """

    def __init__(self, ivf) -> None:
        """Wrap a trained FAISS ``IndexBinaryIVF`` holding the codes under their ids."""
        if not isinstance(ivf, faiss.IndexBinaryIVF):
            raise TypeError(f"expected a faiss.IndexBinaryIVF, got {type(ivf).__name__}")
        self._ivf = ivf

    @classmethod
    def build(cls, ids, long_codes, *, long_bits: int, n_cells: int | None = None,
              random_state: int = 0) -> "CellIndex":
        """Cluster ``long_codes`` (packed uint8, row-aligned with ``ids``) and file them.

        ``n_cells`` defaults to :func:`default_cells`; the k-means sample and seed come
        from ``random_state``, so the same codes give the same cells.
        """
        if isinstance(long_bits, bool) or not isinstance(long_bits, (int, np.integer)) or long_bits <= 0 or long_bits % 8:
            raise ValueError(f"long_bits must be a positive multiple of 8, got {long_bits!r}")
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        codes = _check_codes(long_codes, long_bits, "long codes")
        if len(ids) != len(codes):
            raise ValueError(f"got {len(ids)} ids but {len(codes)} long codes")
        if len(ids) == 0:
            raise ValueError("cannot build cells over no codes")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids repeat")
        n_cells = default_cells(len(ids)) if n_cells is None else int(n_cells)
        if not 1 <= n_cells <= len(ids):
            raise ValueError(f"n_cells must be between 1 and the number of codes ({len(ids)}), got {n_cells}")
        quantizer = faiss.IndexBinaryFlat(int(long_bits))
        ivf = faiss.IndexBinaryIVF(quantizer, int(long_bits), n_cells)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index frees its quantizer
        ivf.cp.seed = int(random_state)
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
        rng = np.random.default_rng(random_state)
        sample = min(len(codes), TRAIN_POINTS_PER_CELL * n_cells)
        rows = np.sort(rng.choice(len(codes), sample, replace=False)) if sample < len(codes) else slice(None)
        ivf.train(np.ascontiguousarray(codes[rows]))
        ivf.add_with_ids(codes, ids)
        return cls(ivf)

    # ------------------------------------------------------------- properties
    def __len__(self) -> int:
        return int(self._ivf.ntotal)

    @property
    def long_bits(self) -> int:
        return int(self._ivf.d)

    @property
    def n_cells(self) -> int:
        return int(self._ivf.nlist)

    def cell_sizes(self) -> np.ndarray:
        """Codes in each cell, ``(n_cells,)`` int64."""
        return np.array([self._ivf.invlists.list_size(c) for c in range(self.n_cells)], dtype=np.int64)

    def __repr__(self) -> str:
        return f"CellIndex(long_bits={self.long_bits}, codes={len(self)}, cells={self.n_cells})"

    # ------------------------------------------------------------- search
    def nearest_cells(self, long_codes, n_probe: int) -> np.ndarray:
        """The ``n_probe`` cells nearest to each query, ``(n, n_probe)`` int64, nearest first."""
        queries = _check_codes(long_codes, self.long_bits, "query codes")
        _, cells = self._ivf.quantizer.search(queries, min(int(n_probe), self.n_cells))
        return cells.astype(np.int64)

    def search(self, long_codes, k: int, n_probe: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest codes in the ``n_probe`` cells nearest to each query.

        ``long_codes``: one packed code or ``(n, bytes)``. Returns ``(distances int32,
        ids int64)`` of shape ``(n, min(k, len(self)))``, nearest first, ties by id. A
        query whose cells hold fewer than ``k`` codes visits every cell.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if isinstance(n_probe, bool) or not isinstance(n_probe, (int, np.integer)) or n_probe < 1:
            raise ValueError(f"n_probe must be a positive integer, got {n_probe!r}")
        queries = _check_codes(long_codes, self.long_bits, "query codes")
        k = min(int(k), len(self))
        distances, ids = self._search(queries, k, min(int(n_probe), self.n_cells))
        short = np.flatnonzero(ids[:, -1] < 0)
        if len(short):
            distances[short], ids[short] = self._search(queries[short], k, self.n_cells)
        # FAISS orders ties arbitrarily; sorting by (distance, id) makes results reproducible.
        order = np.lexsort((ids, distances), axis=-1)
        rows = np.arange(len(order))[:, None]
        return distances[rows, order], ids[rows, order]

    def _search(self, queries: np.ndarray, k: int, n_probe: int):
        # The index's own nprobe, not per-call SearchParametersIVF: that costs ~20 us a
        # query in the Python wrapper, half of a search on a million codes.
        self._ivf.nprobe = n_probe
        distances, ids = self._ivf.search(queries, k)
        return distances.astype(np.int32), ids

    # ------------------------------------------------------------- files
    def to_bytes(self) -> bytes:
        return faiss.serialize_index_binary(self._ivf).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CellIndex":
        try:
            raw = faiss.deserialize_index_binary(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as err:
            raise ValueError(f"not a FAISS binary index ({err})") from err
        if not isinstance(raw, faiss.IndexBinaryIVF):
            raise ValueError(f"holds a {type(raw).__name__}, not an IndexBinaryIVF")
        return cls(raw)


def _check_codes(codes, n_bits: int, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != n_bits // 8:
        raise ValueError(f"{what} must be packed uint8 of shape (n, {n_bits // 8}) for {n_bits} bits, "
                         f"got {codes.dtype} {codes.shape}")
    return np.ascontiguousarray(codes)


# --------------------------------------------------------------------------- files
def default_cells_path(db: Database, model: str, index_dir: Path | None = None) -> Path | None:
    """``<index_dir or <db file>.faiss>/cells.<model>.index``; None for an in-memory database."""
    folder = cache_dir(db, index_dir)
    return None if folder is None else folder / f"cells.{model}.index"


def _dump_cells(index: CellIndex) -> tuple[bytes, dict]:
    return index.to_bytes(), {"kind": "cells", "long_bits": index.long_bits, "n_cells": index.n_cells,
                              "ntotal": len(index), "faiss_version": faiss.__version__}


def _parse_cells(data: bytes, meta: dict) -> CellIndex:
    index = CellIndex.from_bytes(data)
    held = (len(index), index.n_cells, index.long_bits)
    said = (int(meta["ntotal"]), int(meta["n_cells"]), meta.get("long_bits"))
    if held != said:
        raise ValueError(f"it holds {held[0]} {held[2]}-bit codes in {held[1]} cells, its sidecar says "
                         f"{said[0]} {said[2]}-bit codes in {said[1]}")
    return index


CELLS_CACHE: CacheFile[CellIndex] = CacheFile("cell index", _dump_cells, _parse_cells, required=("ntotal", "n_cells"),
                                              version=CELLS_FORMAT)


def save_cells(index: CellIndex, path: Path, fingerprint: str) -> None:
    """Index file first, sidecar last, each atomically (see :class:`~semhash.index.cache.CacheFile`)."""
    CELLS_CACHE.save(index, path, fingerprint)


def load_cells(path: Path, expected_fingerprint: str | None = None) -> CellIndex | None:
    """A saved cell index; None if missing or stale; :class:`~semhash.index.cache.IndexFileError` if corrupt."""
    return CELLS_CACHE.load(path, expected_fingerprint)


def load_or_build_cells(db: Database, model: str, index_dir: Path | None = None, *,
                        n_cells: int | None = None) -> CellIndex:
    """The cell index of a binary model's codes: loaded if up to date, else built and saved.

    ``n_cells`` (default :func:`default_cells` of the number of codes) is part of what
    must match: a saved index with another number of cells is rebuilt.
    """
    row = db.get_model(model, with_weights=False)
    if row.kind != "binary":
        raise ValueError(f"cell search needs a binary model; {model!r} is {row.kind}")
    long_bits = 8 * n_bytes(row.n_dims)  # packed codes are whole bytes
    fingerprint = db.code_fingerprint(row.id)  # before reading codes

    def build() -> CellIndex:
        ids, codes = db.get_codes(row.id)
        if len(ids) == 0:
            raise ValueError(f"model {model!r} has no codes to search")
        return CellIndex.build(ids, codes, long_bits=long_bits, n_cells=n_cells)

    # n_cells None: a saved index with any number of cells will do.
    return CELLS_CACHE.load_or_build(default_cells_path(db, model, index_dir), fingerprint, build,
                                     long_bits=long_bits, n_cells=n_cells)
