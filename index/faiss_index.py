"""FAISS search structures over stored codes, cached on disk, rebuilt from the database.

* :class:`BinaryCodeIndex`: exact Hamming search over packed binary codes;
* :class:`RealCodeIndex`: exact Euclidean search over real-valued codes.

Both map FAISS rows to database document ids. An index file is only a cache of the
database's codes (:data:`INDEX_CACHE`, a :class:`semhash.index.cache.CacheFile`): saved
atomically beside a JSON sidecar with the code fingerprint and the file's checksum,
used by :func:`load_or_build` only while both still match, and otherwise rebuilt from
the database, which is the source of truth. Nothing is pickled: FAISS writes its own
format.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

# IndexFileError stays importable from here: callers catch it from this module.
from semhash.index.cache import CacheFile, IndexFileError, cache_dir  # noqa: F401

if TYPE_CHECKING:
    from semhash.index.database import Database

SIDECAR_FORMAT = 1


class _CodeIndex:
    """What both index kinds share: id mapping, validation, search, removal.

    Built on FAISS ``IDMap2`` wrappers (``IDMap`` plus a reverse map) so that
    :meth:`reconstruct` works by document id.
    """

    kind: str  # "binary" or "real", as in the database's models table

    def __init__(self, faiss_index: Any) -> None:
        self._index = faiss_index
        self._above: int | None = None  # an upper bound of the ids present (None: not known yet)

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def dims(self) -> int:
        """Bits for a binary index, dimensions for a real one."""
        return int(self._index.d)

    @property
    def ids(self) -> np.ndarray:
        """The document ids in the index (int64, insertion order)."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add codes under the given document ids (ids must not be in the index yet)."""
        ids = _as_ids(ids)
        codes = self._check_codes(codes, "codes")
        if len(ids) != len(codes):
            raise ValueError(f"got {len(ids)} ids but {len(codes)} codes")
        if len(ids) == 0:
            return
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"ids repeat: {unique[counts > 1][:5].tolist()}")
        if self._above is None:
            self._above = int(self.ids.max()) if self.ntotal else -1
        # Ids above every present one (a build adds ascending batches) need no look-up:
        # comparing each batch with all ids so far would make a build quadratic.
        if unique[0] <= self._above:
            present = unique[np.isin(unique, self.ids)]
            if len(present):
                raise ValueError(
                    f"ids already in the index: {present[:5].tolist()}; remove_ids() them first to replace"
                )
        self._index.add_with_ids(codes, ids)
        self._above = max(self._above, int(unique[-1]))

    def search(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored codes to each query: ``(distances, ids)``, nearest first.

        Both arrays have shape ``(n_queries, min(k, ntotal))``: asking for more
        neighbours than the index holds returns all of them, so every entry is a real
        hit and no ``-1`` padding ids ever appear. Ties are in no particular order.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = self._check_codes(codes, "query codes")
        # Flat indexes return every stored code when k <= ntotal, so capping k
        # removes FAISS's padding (ids -1) altogether.
        k = min(int(k), self.ntotal)
        if k == 0 or len(queries) == 0:
            return self._empty_distances(len(queries), k), np.empty((len(queries), k), dtype=np.int64)
        distances, ids = self._index.search(queries, k)
        return self._convert_distances(distances), ids.astype(np.int64, copy=False)

    def reconstruct(self, doc_id: int) -> np.ndarray:
        """The stored code of one document id; KeyError if it is not in the index."""
        doc_id = int(doc_id)
        try:
            return np.asarray(self._index.reconstruct(doc_id))  # IDMap2 keeps a reverse map: no scan
        except RuntimeError:
            raise KeyError(f"id {doc_id} is not in the index") from None

    def remove_ids(self, ids: np.ndarray) -> int:
        """Remove codes by document id (unknown ids are ignored); return how many went."""
        ids = _as_ids(ids)
        if len(ids) == 0:
            return 0
        return int(self._index.remove_ids(ids))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dims={self.dims}, ntotal={self.ntotal})"

    # subclass hooks
    def _check_codes(self, codes: np.ndarray, what: str) -> np.ndarray:
        raise NotImplementedError

    def _convert_distances(self, distances: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _empty_distances(self, n: int, k: int) -> np.ndarray:
        raise NotImplementedError

    def _serialize(self) -> np.ndarray:
        raise NotImplementedError


class BinaryCodeIndex(_CodeIndex):
    """Exact Hamming-distance search over packed binary codes (:mod:`semhash.codes` layout)."""

    kind = "binary"

    def __init__(self, n_bits: int) -> None:
        if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or n_bits <= 0:
            raise ValueError(f"n_bits must be a positive integer, got {n_bits!r}")
        if n_bits % 8:
            raise ValueError(
                f"n_bits must be a multiple of 8 for FAISS binary indexes, got {n_bits}; "
                f"use {8 * -(-n_bits // 8)} (packed codes are zero-padded, so distances are unchanged)"
            )
        super().__init__(faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(int(n_bits))))

    @property
    def n_bits(self) -> int:
        return self.dims

    def _check_codes(self, codes: np.ndarray, what: str) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim == 1:
            codes = codes.reshape(1, -1)
        width = self.n_bits // 8
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
            raise ValueError(
                f"{what} must be packed uint8 of shape (n, {width}) for {self.n_bits} bits, "
                f"got {codes.dtype} of shape {codes.shape}"
            )
        return np.ascontiguousarray(codes)

    def _convert_distances(self, distances: np.ndarray) -> np.ndarray:
        return distances.astype(np.int32, copy=False)

    def _empty_distances(self, n: int, k: int) -> np.ndarray:
        return np.empty((n, k), dtype=np.int32)

    def _serialize(self) -> np.ndarray:
        return faiss.serialize_index_binary(self._index)


class RealCodeIndex(_CodeIndex):
    """Exact Euclidean search over float32 codes; distances are Euclidean, not squared."""

    kind = "real"

    def __init__(self, n_dims: int) -> None:
        if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims <= 0:
            raise ValueError(f"n_dims must be a positive integer, got {n_dims!r}")
        super().__init__(faiss.IndexIDMap2(faiss.IndexFlatL2(int(n_dims))))

    @property
    def n_dims(self) -> int:
        return self.dims

    def _check_codes(self, codes: np.ndarray, what: str) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim == 1:
            codes = codes.reshape(1, -1)
        if codes.dtype != np.float32 or codes.ndim != 2 or codes.shape[1] != self.n_dims:
            raise ValueError(
                f"{what} must be float32 of shape (n, {self.n_dims}), "
                f"got {codes.dtype} of shape {codes.shape}"
            )
        if not np.isfinite(codes).all():
            raise ValueError(f"{what} contain NaN or infinity")
        return np.ascontiguousarray(codes)

    def _convert_distances(self, distances: np.ndarray) -> np.ndarray:
        # FAISS returns squared L2, computed as |x|^2 + |y|^2 - 2xy for batches,
        # which can dip just below zero: clip before the square root.
        return np.sqrt(np.maximum(distances, 0.0))

    def _empty_distances(self, n: int, k: int) -> np.ndarray:
        return np.empty((n, k), dtype=np.float32)

    def _serialize(self) -> np.ndarray:
        return faiss.serialize_index(self._index)


CodeIndex = BinaryCodeIndex | RealCodeIndex


def _as_ids(ids: np.ndarray) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


# --------------------------------------------------------------------------- files


def _dump_index(index: CodeIndex) -> tuple[bytes, dict]:
    if not isinstance(index, _CodeIndex):
        raise TypeError(f"expected a BinaryCodeIndex or RealCodeIndex, got {type(index).__name__}")
    return index._serialize().tobytes(), {"kind": index.kind, "dims": index.dims, "ntotal": index.ntotal,
                                          "faiss_version": faiss.__version__}


def _parse_index(data: bytes, meta: dict) -> CodeIndex:
    kind, dims, ntotal = meta["kind"], int(meta["dims"]), int(meta["ntotal"])
    if kind not in ("binary", "real"):
        raise ValueError(f"its sidecar names an unknown kind {kind!r}")
    if kind == "binary":
        deserialize, cls, expected_type = faiss.deserialize_index_binary, BinaryCodeIndex, faiss.IndexBinaryIDMap2
    else:
        deserialize, cls, expected_type = faiss.deserialize_index, RealCodeIndex, faiss.IndexIDMap2
    try:
        raw = deserialize(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as err:  # FAISS's own parse error
        raise ValueError(str(err)) from err
    if not isinstance(raw, expected_type) or raw.d != dims or raw.ntotal != ntotal:
        raise ValueError(f"it holds {type(raw).__name__} (d={raw.d}, ntotal={raw.ntotal}), but its sidecar says "
                         f"a {kind} index with dims={dims}, ntotal={ntotal}")
    index = cls.__new__(cls)
    _CodeIndex.__init__(index, raw)
    return index


# The sidecar records the database fingerprint, kind, dims, ntotal, the FAISS version and
# the file's SHA-256; FAISS writes the file in its own format.
INDEX_CACHE: CacheFile[CodeIndex] = CacheFile("index", _dump_index, _parse_index,
                                              required=("kind", "dims", "ntotal"), version=SIDECAR_FORMAT)


def save_index(index: CodeIndex, path: Path, fingerprint: str) -> None:
    """Save an index and its sidecar atomically (index file first, sidecar last), the
    sidecar recording ``fingerprint``: the database state the index was built from."""
    INDEX_CACHE.save(index, path, fingerprint)


def load_index(path: Path, expected_fingerprint: str | None = None) -> CodeIndex | None:
    """Load a saved index; None if it is missing or stale.

    Stale means the sidecar is missing or records a fingerprint other than
    ``expected_fingerprint`` (when given). A corrupt index or sidecar (truncated,
    garbage, checksum mismatch) raises :class:`IndexFileError`.
    """
    return INDEX_CACHE.load(path, expected_fingerprint)


def default_index_path(db: Database, model_name: str, index_dir: Path | None = None) -> Path | None:
    """Where the index of a model lives: ``<index_dir or <db file>.faiss>/<model name>.index``.

    None for a database that is not a file when no ``index_dir`` is given.
    """
    folder = cache_dir(db, index_dir)
    return None if folder is None else folder / f"{_file_stem(model_name)}.index"


def load_or_build(db: Database, model_name_or_id: str | int, index_dir: Path | None = None) -> CodeIndex:
    """The search index of a model: loaded from disk if up to date, else rebuilt and saved.

    The file is ``<db file>.faiss/<model name>.index`` (or under ``index_dir``). A
    missing, stale or corrupt file (the latter with a warning) is rebuilt from
    ``db.get_codes``. For a database that is not a file and no ``index_dir``, the
    index is built in memory and not saved. If saving fails, a warning says so and
    the in-memory index is returned: search still works.
    """
    model = db.get_model(model_name_or_id, with_weights=False)
    dims = _index_dims(model.kind, model.n_dims)

    def build() -> CodeIndex:
        index = BinaryCodeIndex(dims) if model.kind == "binary" else RealCodeIndex(dims)
        for ids, codes in db.iter_codes(model.id):  # batches: the codes are not held twice
            index.add(ids, codes)
        return index

    fingerprint = db.code_fingerprint(model.id)  # before build() reads the codes (see CacheFile.load_or_build)
    return INDEX_CACHE.load_or_build(default_index_path(db, model.name, index_dir), fingerprint, build,
                                     name=f"index of model {model.name!r}", kind=model.kind, dims=dims)


def _index_dims(kind: str, n_dims: int) -> int:
    # FAISS wants whole bytes; packed codes of n bits are zero-padded to a byte
    # boundary, so padding bits agree everywhere and Hamming distances are unchanged.
    return 8 * -(-n_dims // 8) if kind == "binary" else n_dims


def _file_stem(model_name: str) -> str:
    """A file name for a model: its name if safe, else a cleaned name plus a short hash."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", model_name).lstrip(".")
    if stem != model_name or not stem:
        stem = f"{stem or 'model'}-{hashlib.sha256(model_name.encode()).hexdigest()[:8]}"
    return stem
