"""Dense binary codes as sparse Willshaw patterns, and sparse random addresses for stored items.

:class:`SparseCodeMap` turns a dense code into the sparse pattern a Willshaw memory stores well
(one active unit per block of bits); :func:`sparse_address` gives each stored item a fixed
random sparse address, and :func:`nearest_addresses` decodes recalled patterns back to items."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse

from semhash.codes import pack_bits, unpack_bits
from semhash.patterns import Patterns, _Sparse, _to_sparse


class SparseCodeMap:
    """Dense binary codes <-> sparse one-hot-per-block patterns.

    The code's bits are cut into ``n_blocks = n_bits / block_bits`` groups of
    ``block_bits`` consecutive bits (in ``numpy.packbits`` order, most significant bit
    first). Group ``b`` with value ``v`` (its bits read as a big-endian number) becomes
    the single active unit ``b * 2^block_bits + v``. A code thus gives a pattern with
    ``M = n_blocks`` ones in ``n = n_blocks * 2^block_bits`` units: 64 bits in blocks of 8
    give M = 8 in n = 2048, close to the Willshaw optimum ``M ~ log2(n / 4) = 9``. Codes at
    Hamming distance ``d`` share at least ``M - d`` active units.

    Args:
        n_bits: bits in a code; must be a multiple of ``block_bits``.
        block_bits: bits per block, 1..16.
    """

    def __init__(self, n_bits: int, block_bits: int = 8) -> None:
        self.n_bits = n_bits
        self.block_bits = block_bits
        if not 1 <= block_bits <= 16:
            raise ValueError(f"block_bits must be in 1..16, got {block_bits}")
        if n_bits <= 0 or n_bits % block_bits:
            raise ValueError(f"n_bits ({n_bits}) must be a positive multiple of block_bits ({block_bits})")

    @property
    def n_blocks(self) -> int:
        return self.n_bits // self.block_bits

    @property
    def block_size(self) -> int:
        """Units per block, ``2^block_bits``."""
        return 1 << self.block_bits

    @property
    def n_units(self) -> int:
        return self.n_blocks * self.block_size

    @property
    def n_active(self) -> int:
        """Ones in every encoded pattern (``M``)."""
        return self.n_blocks

    def encode(self, codes: np.ndarray, as_bool: bool = False) -> np.ndarray:
        """Packed codes ``(n, ceil(n_bits / 8))`` uint8 -> patterns.

        Returns an ``(n, n_blocks)`` int64 array of active units (sorted; one per block),
        or with ``as_bool`` an ``(n, n_units)`` boolean array.
        """
        bits = unpack_bits(codes, self.n_bits).reshape(-1, self.n_blocks, self.block_bits)
        weights = 1 << np.arange(self.block_bits - 1, -1, -1, dtype=np.int64)
        values = bits.astype(np.int64) @ weights
        active = values + np.arange(self.n_blocks, dtype=np.int64) * self.block_size
        if not as_bool:
            return active
        dense = np.zeros((len(active), self.n_units), dtype=bool)
        dense[np.arange(len(active))[:, None], active] = True
        return dense

    def decode(self, patterns: Patterns, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Patterns -> packed codes, with a flag saying which decodes were exact.

        A pattern with exactly one active unit per block decodes exactly. Otherwise the
        decode is best effort, block by block:

        * without ``scores``: each bit is the majority vote of the active units' values
          (the value closest in total Hamming distance to all candidates; ties and empty
          blocks give 0 bits);
        * with ``scores`` (``(n, n_units)``, e.g. :meth:`WillshawMemory.dendritic_sums`):
          the active unit with the highest score, or the highest-scoring unit of the
          block when none is active (ties: the lowest value).

        Returns:
            ``(codes, exact)``: ``(n, ceil(n_bits / 8))`` uint8 codes and ``(n,)`` bool.
        """
        dense = _to_sparse(patterns, self.n_units, "patterns").to_dense()
        blocks = dense.reshape(len(dense), self.n_blocks, self.block_size)
        counts = blocks.sum(axis=2)
        exact = (counts == 1).all(axis=1)
        # value_bits[v] = the block_bits bits of value v, most significant first.
        shifts = np.arange(self.block_bits - 1, -1, -1)
        value_bits = ((np.arange(self.block_size)[:, None] >> shifts) & 1).astype(np.int32)
        if scores is None:
            votes = blocks.astype(np.int32) @ value_bits  # (n, n_blocks, block_bits)
            bits = 2 * votes > counts[..., None]
        else:
            scores = np.asarray(scores, dtype=np.float64)
            if scores.shape != dense.shape:
                raise ValueError(f"scores have shape {scores.shape}, patterns {dense.shape}")
            scores = scores.reshape(blocks.shape)
            masked = np.where(blocks | (counts == 0)[..., None], scores, -np.inf)
            bits = value_bits[masked.argmax(axis=2)].astype(bool)
        return pack_bits(bits.reshape(len(dense), self.n_bits)), exact


# --------------------------------------------------------------------------- addresses


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a cheap, well-mixed hash of uint64 arrays."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sparse_address(ids: np.ndarray | Sequence[int], n_units: int, n_active: int, seed: int = 0) -> np.ndarray:
    """A random sparse pattern (``n_active`` ones in ``n_units``) for each integer id.

    Each address depends only on ``(seed, id)`` -- not on the other ids or their order --
    so a document keeps its address when the collection grows. Units are drawn by hashing
    ``(seed, id, attempt, slot)``; rows that drew a unit twice are drawn again.

    Returns:
        ``(len(ids), n_active)`` int64, sorted active units per row.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if not 0 < n_active <= n_units:
        raise ValueError(f"n_active must be in 1..{n_units}, got {n_active}")
    if n_active > n_units // 2:
        # Rejection sampling would rarely succeed; choose the inactive units instead.
        inactive = sparse_address(ids, n_units, n_units - n_active, seed)
        mask = np.ones((len(ids), n_units), dtype=bool)
        mask[np.arange(len(ids))[:, None], inactive] = False
        return np.nonzero(mask)[1].reshape(len(ids), n_active).astype(np.int64)
    out = np.zeros((len(ids), n_active), dtype=np.int64)
    todo = np.arange(len(ids))
    slots = np.arange(n_active, dtype=np.uint64)
    base = _splitmix64(np.full(1, seed, dtype=np.int64).astype(np.uint64))
    for attempt in range(1000):
        key = _splitmix64(base ^ ids[todo].astype(np.uint64))
        key = _splitmix64(key ^ np.uint64(attempt))
        draws = _splitmix64(key[:, None] ^ (slots[None, :] * np.uint64(0xD6E8FEB86659FD93)))
        units = np.sort((draws % np.uint64(n_units)).astype(np.int64), axis=1)
        ok = (np.diff(units, axis=1) > 0).all(axis=1)
        out[todo[ok]] = units[ok]
        todo = todo[~ok]
        if todo.size == 0:
            return out
    raise RuntimeError("sparse_address: could not draw distinct units")  # pragma: no cover


def nearest_addresses(patterns: Patterns, addresses: np.ndarray, n_units: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of the address with the largest overlap with each pattern.

    Args:
        patterns: retrieved patterns (e.g. ``RecallResult.patterns``).
        addresses: ``(n_docs, M)`` active units of the stored addresses (from
            :func:`sparse_address`) or an ``(n_docs, n_units)`` boolean array.
        n_units: units in a pattern; defaults to the width of boolean ``patterns``.

    Returns:
        ``(rows, overlaps)``: for each pattern the row of the best address (ties: the
        lowest row) and the number of units they share. ``overlaps == M`` with a pattern
        of ``M`` ones is an exact hit.
    """
    if n_units is None:
        if not (isinstance(patterns, np.ndarray) and patterns.dtype == np.bool_):
            raise ValueError("pass n_units unless patterns are a boolean array")
        n_units = patterns.shape[1]
    p = _to_sparse(patterns, n_units, "patterns")
    a = _to_sparse(addresses, n_units, "addresses")
    if a.n_patterns == 0:
        raise ValueError("no addresses to compare with")

    def csr(sp: _Sparse) -> scipy.sparse.csr_matrix:
        data = np.ones(sp.indices.size, dtype=np.int32)
        return scipy.sparse.csr_matrix((data, sp.indices, sp.indptr), shape=(sp.n_patterns, n_units))

    overlap = (csr(a) @ csr(p).T).toarray()  # (n_docs, n_patterns)
    rows = overlap.argmax(axis=0)
    return rows, overlap[rows, np.arange(p.n_patterns)]
