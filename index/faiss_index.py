"""FAISS search structures over stored codes, cached on disk, rebuilt from the database.

* :class:`BinaryCodeIndex`: exact Hamming search over packed binary codes;
* :class:`RealCodeIndex`: exact Euclidean search over real-valued codes.

Both map FAISS rows to database document ids. An index file is only a cache: it is
saved next to a JSON *sidecar* holding the database's code fingerprint (see
:meth:`semhash.index.database.Database.code_fingerprint`) and a checksum of the index file.
:func:`load_or_build` uses a file only when both still match, and otherwise rebuilds
it from the database, which is the source of truth.

Files are written atomically (temporary file in the same directory, then
``os.replace``), index first and sidecar last, so a crash leaves either the old pair,
or a new index with the old sidecar, which the checksum exposes and which is rebuilt.
Nothing is pickled: FAISS writes its own format.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import faiss
import numpy as np

from semhash.files import atomic_write_bytes

if TYPE_CHECKING:
    from semhash.index.database import Database

SIDECAR_FORMAT = 1


class IndexFileError(RuntimeError):
    """A saved index file is corrupt, or does not match its sidecar."""


class _CodeIndex:
    """What both index kinds share: id mapping, validation, search, removal.

    Built on FAISS ``IDMap2`` wrappers (``IDMap`` plus a reverse map) so that
    :meth:`reconstruct` works by document id.
    """

    kind: str  # "binary" or "real", as in the database's models table

    def __init__(self, faiss_index: Any) -> None:
        self._index = faiss_index

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
        present = unique[np.isin(unique, self.ids)]
        if len(present):
            raise ValueError(
                f"ids already in the index: {present[:5].tolist()}; remove_ids() them first to replace"
            )
        self._index.add_with_ids(codes, ids)

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
        if doc_id not in set(self.ids.tolist()):
            raise KeyError(f"id {doc_id} is not in the index")
        return np.asarray(self._index.reconstruct(doc_id))

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


REBUILD_ADVICE = "delete it, it will be rebuilt from the database"


def sidecar_path(path: Path) -> Path:
    """The JSON metadata file saved with a cache file: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def cache_dir(db: Database, index_dir: Path | None = None) -> Path | None:
    """Where a database's derived files live: ``index_dir``, else ``<db file>.faiss``;
    None for a database that is not a file."""
    if index_dir is not None:
        return Path(index_dir)
    return None if db.path is None else db.path.with_name(db.path.name + ".faiss")


# Every derived file (FAISS index, address table, recall memory) is saved the same way:
# the file first, then a JSON sidecar recording what it was built from and its SHA-256,
# each written atomically. A crash between the two leaves a checksum that exposes it.
def write_with_sidecar(path: Path, data: bytes, meta: dict) -> None:
    """Write ``data`` to ``path`` and ``meta`` (plus the data's SHA-256) to its sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), json.dumps(meta, indent=2).encode() + b"\n")


def read_sidecar(path: Path, what: str, required: tuple[str, ...], error: type = None) -> dict | None:
    """The sidecar of ``path``, or None when the file or its sidecar is missing (nothing
    says what the file was built from). An unreadable sidecar, or one without the
    ``required`` keys, raises ``error`` (default :class:`IndexFileError`)."""
    path, error = Path(path), error or IndexFileError
    meta_path = sidecar_path(path)
    if not path.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        missing = [key for key in ("fingerprint", "sha256", *required) if key not in meta]
        if missing:
            raise KeyError(", ".join(missing))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise error(f"{what} sidecar {meta_path} is unreadable ({err}); {REBUILD_ADVICE}") from err
    return meta


def load_or_rebuild(path: Path | None, load: Callable[[Path], Any], build: Callable[[], Any],
                    save: Callable[[Any, Path], None], what: str):
    """The life of a derived file (address table, cell index): ``load(path)`` when it is
    up to date (it returns None for a missing or stale file; a corrupt one warns and is
    rebuilt); else ``build()`` and ``save`` the result, where a failed save warns and the
    built object is used from memory. ``path`` None: build, never save."""
    if path is not None:
        try:
            loaded = load(path)
        except IndexFileError as err:
            warnings.warn(f"{err} -- rebuilding it now", RuntimeWarning, stacklevel=3)
            loaded = None
        if loaded is not None:
            return loaded
    built = build()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save(built, path)
        except OSError as err:
            warnings.warn(f"could not save the {what} to {path} ({err}); using it from memory",
                          RuntimeWarning, stacklevel=3)
    return built


def read_verified(path: Path, meta: dict, what: str, error: type = None) -> bytes:
    """The bytes of ``path``, checked against the SHA-256 in its sidecar ``meta`` before
    anything parses them."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise (error or IndexFileError)(
            f"{what} file {path} does not match its sidecar (checksum differs: damaged, "
            f"truncated or from an interrupted save); {REBUILD_ADVICE}"
        )
    return data


def save_index(index: CodeIndex, path: Path, fingerprint: str) -> None:
    """Save an index and its sidecar atomically (index file first, sidecar last).

    The sidecar records ``fingerprint`` (the database state the index was built
    from), kind, dims, ntotal, the FAISS version and the index file's SHA-256.
    """
    if not isinstance(index, _CodeIndex):
        raise TypeError(f"expected a BinaryCodeIndex or RealCodeIndex, got {type(index).__name__}")
    write_with_sidecar(
        path,
        index._serialize().tobytes(),
        {
            "format": SIDECAR_FORMAT,
            "fingerprint": fingerprint,
            "kind": index.kind,
            "dims": index.dims,
            "ntotal": index.ntotal,
            "faiss_version": faiss.__version__,
        },
    )


def load_index(path: Path, expected_fingerprint: str | None = None) -> CodeIndex | None:
    """Load a saved index; None if it is missing or stale.

    Stale means the sidecar is missing or records a fingerprint other than
    ``expected_fingerprint`` (when given). A corrupt index or sidecar (truncated,
    garbage, checksum mismatch) raises :class:`IndexFileError`.
    """
    meta = read_sidecar(path, "index", required=("kind", "dims", "ntotal"))
    if meta is None:
        return None
    advice = REBUILD_ADVICE
    kind, fingerprint = meta["kind"], meta["fingerprint"]
    try:
        dims, ntotal = int(meta["dims"]), int(meta["ntotal"])
    except (TypeError, ValueError) as err:
        raise IndexFileError(f"index sidecar {sidecar_path(path)} is unreadable ({err}); {advice}") from err
    if kind not in ("binary", "real"):
        raise IndexFileError(f"index sidecar {sidecar_path(path)} names an unknown kind {kind!r}; {advice}")
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        return None
    data = read_verified(path, meta, "index")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        if kind == "binary":
            raw = faiss.deserialize_index_binary(buffer)
            index: CodeIndex = BinaryCodeIndex.__new__(BinaryCodeIndex)
            expected_type = faiss.IndexBinaryIDMap2
        else:
            raw = faiss.deserialize_index(buffer)
            index = RealCodeIndex.__new__(RealCodeIndex)
            expected_type = faiss.IndexIDMap2
    except RuntimeError as err:
        raise IndexFileError(f"index file {path} is corrupt ({err}); {advice}") from err
    if not isinstance(raw, expected_type) or raw.d != dims or raw.ntotal != ntotal:
        raise IndexFileError(
            f"index file {path} holds {type(raw).__name__} (d={raw.d}, ntotal={raw.ntotal}), "
            f"but its sidecar says a {kind} index with dims={dims}, ntotal={ntotal}; {advice}"
        )
    _CodeIndex.__init__(index, raw)
    return index


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
    # Fingerprint first, codes second: if codes change in between, the saved
    # fingerprint is the older one and the next load rebuilds. Never the reverse.
    fingerprint = db.code_fingerprint(model.id)
    path = default_index_path(db, model.name, index_dir)

    if path is not None:
        try:
            loaded = load_index(path, expected_fingerprint=fingerprint)
        except IndexFileError as err:
            warnings.warn(f"{err} -- rebuilding it now", RuntimeWarning, stacklevel=2)
            loaded = None
        expected = (model.kind, _index_dims(model.kind, model.n_dims))
        if loaded is not None and (loaded.kind, loaded.dims) == expected:
            return loaded

    ids, codes = db.get_codes(model.id)
    index: CodeIndex
    if model.kind == "binary":
        index = BinaryCodeIndex(_index_dims("binary", model.n_dims))
    else:
        index = RealCodeIndex(model.n_dims)
    index.add(ids, codes)

    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_index(index, path, fingerprint)
        except OSError as err:
            warnings.warn(
                f"could not save the index of model {model.name!r} to {path} ({err}); "
                "using it from memory, it will be rebuilt next time",
                RuntimeWarning,
                stacklevel=2,
            )
    return index


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
