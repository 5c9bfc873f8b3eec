"""Binary patterns in the sparse form a Willshaw memory works on: the active units of each
pattern as flat index arrays, converted from dense arrays, index lists or packed bits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from semhash.codes import n_bytes

# Dense arrays, lists of active-unit indices, or one index array per pattern.
Patterns = Union[np.ndarray, Sequence[Sequence[int]], Sequence[np.ndarray]]

# Scratch memory one store/recall batch may use (gathered packed rows, unpacked rows).
# Bounds peak memory independently of how many patterns are passed at once.
_BATCH_BYTES = 32 * 2**20


@dataclass(frozen=True)
class _Sparse:
    """Patterns in compressed-row form: pattern ``k`` is ``indices[indptr[k]:indptr[k+1]]``.

    Indices within a pattern are sorted and unique. This is the working form of every
    pattern: Willshaw patterns have ~10 ones in thousands of units.
    """

    indptr: np.ndarray  # (n_patterns + 1,) int64
    indices: np.ndarray  # (nnz,) int64
    n_units: int

    @property
    def n_patterns(self) -> int:
        return len(self.indptr) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)

    def subset(self, start: int, stop: int) -> _Sparse:
        lo, hi = self.indptr[start], self.indptr[stop]
        return _Sparse(self.indptr[start : stop + 1] - lo, self.indices[lo:hi], self.n_units)

    def pattern_of_entries(self) -> np.ndarray:
        """Pattern number of each entry of ``indices``."""
        return np.repeat(np.arange(self.n_patterns), self.sizes)

    def to_dense(self) -> np.ndarray:
        dense = np.zeros((self.n_patterns, self.n_units), dtype=bool)
        dense[self.pattern_of_entries(), self.indices] = True
        return dense

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> _Sparse:
        rows, cols = np.nonzero(dense)  # row-major order: already sorted and unique
        counts = np.bincount(rows, minlength=dense.shape[0])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, cols.astype(np.int64), dense.shape[1])


def _to_sparse(patterns: Patterns, n_units: int, name: str) -> _Sparse:
    """Validate patterns in any accepted form (see module docstring) and make them sparse."""
    if isinstance(patterns, _Sparse):
        return patterns
    if isinstance(patterns, np.ndarray):
        if patterns.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (one pattern a row) or a list of index arrays, "
                f"got an array of shape {patterns.shape}"
            )
        if patterns.dtype == np.bool_:
            dense = patterns
        elif np.issubdtype(patterns.dtype, np.integer) and patterns.shape[1] == n_units:
            # Width n_units: a 0/1 matrix. (An index matrix that wide would need every
            # unit active, so there is no real ambiguity.)
            if patterns.size and not np.isin(patterns, (0, 1)).all():
                raise ValueError(f"{name}: a {n_units}-column integer array must hold 0/1")
            dense = patterns.astype(bool)
        elif np.issubdtype(patterns.dtype, np.integer):
            if patterns.shape[1] > 2 and patterns.size and np.isin(patterns, (0, 1)).all():
                # Index rows cannot repeat units, so this is a 0/1 matrix of the wrong width.
                raise ValueError(
                    f"{name} look like 0/1 patterns of {patterns.shape[1]} units, "
                    f"the memory has {n_units}"
                )
            flat = patterns.astype(np.int64).reshape(-1)
            pattern = np.repeat(np.arange(len(patterns), dtype=np.int64), patterns.shape[1])
            return _from_flat(pattern, flat, len(patterns), n_units, name)
        else:
            raise ValueError(f"{name} must be boolean, 0/1 or integer indices, got {patterns.dtype}")
        if dense.shape[1] != n_units:
            raise ValueError(f"{name} have {dense.shape[1]} units, the memory has {n_units}")
        return _Sparse.from_dense(dense)
    if isinstance(patterns, (list, tuple)):
        return _from_index_lists(patterns, n_units, name)
    raise TypeError(
        f"{name} must be a numpy array or a list of index arrays, got {type(patterns).__name__}"
    )


def _from_index_lists(lists: Sequence, n_units: int, name: str) -> _Sparse:
    arrays = [np.asarray(a).reshape(-1) for a in lists]
    for a in arrays:
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name}: active-index lists must hold integers, got {a.dtype}")
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    pattern = np.repeat(np.arange(len(arrays), dtype=np.int64), sizes)
    return _from_flat(pattern, flat, len(arrays), n_units, name)


def _from_flat(pattern: np.ndarray, flat: np.ndarray, n_patterns: int, n_units: int, name: str) -> _Sparse:
    """Build ``_Sparse`` from (pattern number, active unit) pairs in any order."""
    if flat.size and (flat.min() < 0 or flat.max() >= n_units):
        raise ValueError(
            f"{name}: active indices must lie in [0, {n_units}), got {flat.min()}..{flat.max()}"
        )
    # Sort within each pattern and drop repeats: a pattern is a SET of active units, and a
    # repeated unit would count twice in the dendritic sums.
    keys = np.unique(pattern * n_units + flat)
    pattern, flat = np.divmod(keys, n_units)
    counts = np.bincount(pattern, minlength=n_patterns)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return _Sparse(indptr, flat, n_units)


def _batches(sp: _Sparse, bytes_per_entry: int, budget: int | None = None):
    """Split patterns into consecutive (start, stop) runs whose entries fit in ``budget``."""
    budget = _BATCH_BYTES if budget is None else budget
    max_entries = max(1, budget // max(1, bytes_per_entry))
    n, start = sp.n_patterns, 0
    while start < n:
        # Largest stop with indptr[stop] - indptr[start] <= max_entries, at least one pattern.
        stop = int(np.searchsorted(sp.indptr, sp.indptr[start] + max_entries, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def _pack_sparse(sp: _Sparse) -> np.ndarray:
    """Packed (``numpy.packbits`` order) rows of sparse patterns, without a dense detour."""
    packed = np.zeros((sp.n_patterns, n_bytes(sp.n_units)), dtype=np.uint8)
    bit = (np.uint8(0x80) >> (sp.indices & 7).astype(np.uint8)).astype(np.uint8)
    np.bitwise_or.at(packed, (sp.pattern_of_entries(), sp.indices >> 3), bit)
    return packed
