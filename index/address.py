"""Semantic-hashing address lookup: search whose cost does not grow with the collection.

Salakhutdinov & Hinton's "semantic hashing" treats a short binary code as a memory
address: the documents similar to a query are those stored at the addresses within a
small Hamming ball around the query's own address, found without looking at any other
document. This module implements that as a two-stage search:

1. **Address lookup.** Every document has a short *address* code (20-32 bits, from its
   own :class:`~semhash.hasher.SemanticHasher`, stored as model ``"address"``). The
   table holds the document rows sorted by address as ``uint32``, plus the sorted
   distinct addresses and where each one's block of rows starts. A query enumerates
   all addresses within Hamming radius ``r`` of its own (XOR with precomputed masks,
   ``sum(C(b, i) for i <= r)`` of them) and finds their blocks with one vectorised
   ``np.searchsorted``. The cost depends on ``b`` and ``r``, not on the collection.
2. **Re-ranking.** The candidates are ranked by the Hamming distance of their *long*
   codes (the ``"hasher"`` model, 64-128 bits), held in memory in the same row order as
   the table, so each address's candidates are one contiguous slice. Ties are broken by
   document id. (``SearchEngine`` can re-rank them further by TF-IDF cosine.)

On a crowded table the ball holds far more documents than are needed: the addresses are
visited nearest first (distance 0, then 1, ...) and the visit stops at a budget of
candidates (``max_candidates``, default :data:`DEFAULT_MAX_CANDIDATES`), so the cost of a
query stays flat from ten thousand to millions of documents. With numba installed, the
whole query (ball enumeration, an occupancy bitmap, binary search in the sorted addresses,
popcount distances, top-k by counting sort) is one compiled call of a few microseconds
(:mod:`semhash.index._address_kernel`; :meth:`AddressIndex.search_batch` runs many queries in
one call); without it, a vectorised numpy path gives identical results.

When the ball holds fewer than ``k`` documents, :meth:`AddressIndex.search` falls back
to an exhaustive Hamming search over the long codes (FAISS ``IndexBinaryFlat``), so a
query always gets ``min(k, n)`` results; the result says whether it fell back.

The table is a cache, like the FAISS files: saved as ``<db>.faiss/address.table`` (an
``.npz`` read with ``allow_pickle=False``) beside a JSON sidecar with the database's code
fingerprints of both models and the file's SHA-256, written atomically;
:func:`load_or_build_address` rebuilds it whenever the codes of either model changed
(e.g. after ``semhash add``).
"""

from __future__ import annotations

import io
from functools import lru_cache
from itertools import combinations
from math import comb
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import faiss
import numpy as np

from semhash.codes import as_words, n_bytes, word_distances
from semhash.index.cache import CacheFile, cache_dir
from semhash.index.models import TEXT
from semhash.kernels import compiled_kernel, numba_available

if TYPE_CHECKING:
    from semhash.index.database import Database

DEFAULT_ADDRESS_BITS = 24
MAX_ADDRESS_BITS = 32
TABLE_FILE = "address.table"
TABLE_FORMAT = 1


# --------------------------------------------------------------------------- codes
def check_address_bits(n_bits) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or not 1 <= n_bits <= MAX_ADDRESS_BITS:
        raise ValueError(f"address codes must have 1 to {MAX_ADDRESS_BITS} bits, got {n_bits!r}")
    return int(n_bits)


def address_values(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Packed address codes ``(n, ceil(n_bits/8))`` uint8 as ``uint32`` integers.

    The integer is the packed bytes read big-endian, so bit ``j`` of the code (MSB
    first, :mod:`semhash.codes` order) is integer bit ``8 * n_bytes - 1 - j``; padding
    bits are the low bits and always zero.
    """
    n_bits = check_address_bits(n_bits)
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    width = n_bytes(n_bits)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
        raise ValueError(f"address codes must be packed uint8 of shape (n, {width}), got {codes.dtype} {codes.shape}")
    values = np.zeros(len(codes), dtype=np.uint32)
    for byte in range(width):
        values = (values << np.uint32(8)) | codes[:, byte].astype(np.uint32)
    return values


@lru_cache(maxsize=64)
def _ball_masks(n_bits: int, radius: int) -> np.ndarray:
    masks = [0]
    shift = 8 * n_bytes(n_bits) - 1
    bit_values = [1 << (shift - j) for j in range(n_bits)]
    for distance in range(1, radius + 1):
        for flipped in combinations(bit_values, distance):
            masks.append(sum(flipped))
    array = np.array(masks, dtype=np.uint32)
    array.flags.writeable = False
    return array


def ball_masks(n_bits: int, radius: int) -> np.ndarray:
    """XOR masks of every address at Hamming distance ``<= radius``, nearest first.

    ``sum(C(n_bits, i) for i in 0..radius)`` uint32 values (read-only, cached), in the
    integer layout of :func:`address_values`: ``address ^ masks`` is the query's ball.
    """
    n_bits = check_address_bits(n_bits)
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    radius = min(int(radius), n_bits)
    if ball_size(n_bits, radius) > 5_000_000:
        raise ValueError(f"a radius-{radius} ball of {n_bits}-bit addresses has {ball_size(n_bits, radius):,} addresses: too many")
    return _ball_masks(n_bits, radius)


def ball_size(n_bits: int, radius: int) -> int:
    return sum(comb(n_bits, i) for i in range(min(radius, n_bits) + 1))


# --------------------------------------------------------------------------- compiled kernel
# With numba installed, one compiled function (index/_address_kernel.py) does lookup,
# distances and top-k of a query in a few microseconds; otherwise the vectorised numpy
# path below does the same work in ~15 numpy calls (tens of microseconds of overhead).
# Both give identical results. (The kernel has its own popcount: compiled code cannot
# call semhash.codes.popcount.)
_FILTER_SLOTS = 1 << 24  # occupancy filter: one bit per value of an address's low 24 bits (2 MB)
# Candidates looked at per query by default: addresses are visited nearest first and the
# visit stops here, so the cost of a query stays flat as the collection grows. Chosen on
# validation queries (perturbed copies of training posts, never the test posts) in
# benchmarks/search_speed.py: see benchmarks/results/search_speed.md.
DEFAULT_MAX_CANDIDATES = 500


def _numba_kernel():
    """The compiled kernels module, or None without numba. Imported (and compiled) on first use."""
    return compiled_kernel("semhash.index._address_kernel")


def has_compiled_kernel() -> bool:
    """Whether searches can use the numba kernel (numba installed; not imported by this check)."""
    return numba_available()

# --------------------------------------------------------------------------- the index
class AddressResult(NamedTuple):
    distances: np.ndarray  # int32 long-code Hamming distances, nearest first
    ids: np.ndarray  # int64 document ids
    n_candidates: int  # documents found in the ball (before re-ranking)
    fell_back: bool  # True when the ball held fewer than k and the search was exhaustive


class AddressIndex:
    """Address table plus long codes, for :meth:`search` by Hamming ball and re-ranking.

    Build with :meth:`build` (or :func:`load_or_build_address` from a database). Memory:
    per document 4 bytes (address) + 8 (id) + the long code padded to 8 bytes, plus
    12 bytes per distinct address and a fixed 2 MB occupancy bitmap.
    """

    def __init__(self, address_bits: int, long_bits: int, ids: np.ndarray, addresses: np.ndarray,
                 long_codes: np.ndarray) -> None:
        """Arrays already sorted by (address, id): use :meth:`build`.

        ``engine`` (attribute) is ``"numba"`` when numba is importable, else ``"numpy"``;
        set it to ``"numpy"`` to force the pure-numpy path (same results).
        """
        self.address_bits = check_address_bits(address_bits)
        self.long_bits = int(long_bits)
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.addresses = np.ascontiguousarray(addresses, dtype=np.uint32)
        self.long_codes = np.ascontiguousarray(long_codes, dtype=np.uint8)
        if not (len(self.ids) == len(self.addresses) == len(self.long_codes)):
            raise ValueError("ids, addresses and long codes must have the same length")
        if self.long_codes.ndim != 2 or self.long_codes.shape[1] != n_bytes(self.long_bits):
            raise ValueError(f"long codes must be (n, {n_bytes(self.long_bits)}) uint8, got {self.long_codes.shape}")
        starts = np.flatnonzero(np.r_[True, self.addresses[1:] != self.addresses[:-1]]) if len(self.addresses) else np.empty(0, np.int64)
        self.keys = self.addresses[starts]  # distinct addresses, ascending
        self.offsets = np.r_[starts, len(self.addresses)].astype(np.int64)  # block of keys[i]: offsets[i]:offsets[i+1]
        self._words = as_words(self.long_codes)
        self._long_width, self._address_width = n_bytes(self.long_bits), n_bytes(self.address_bits)
        self._n = len(self.ids)
        self._flat = None  # exhaustive fallback, built on first need
        self._masks: dict[int, np.ndarray] = {}
        self.engine = "numba" if has_compiled_kernel() else "numpy"
        # Bitmap of the addresses' low 24 bits: most addresses of a ball hold no document,
        # and one bit tells so without a binary search (no false negatives).
        flags = np.zeros(_FILTER_SLOTS, dtype=bool)
        flags[self.keys & np.uint32(_FILTER_SLOTS - 1)] = True
        self._occupied = np.packbits(flags, bitorder="little")

    # ------------------------------------------------------------- building
    @classmethod
    def build(cls, ids, address_codes, long_codes, *, address_bits: int, long_bits: int) -> "AddressIndex":
        """From row-aligned document ids, packed address codes and packed long codes."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids repeat")
        addresses = address_values(address_codes, address_bits) if len(ids) else np.empty(0, np.uint32)
        long_codes = np.asarray(long_codes, dtype=np.uint8).reshape(len(ids), -1) if len(ids) else np.empty((0, n_bytes(long_bits)), np.uint8)
        if len(addresses) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(addresses)} address codes")
        order = np.lexsort((ids, addresses))
        return cls(address_bits, long_bits, ids[order], addresses[order], long_codes[order])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Memory held by the search structures (bytes)."""
        return sum(a.nbytes for a in (self.ids, self.addresses, self.keys, self.offsets, self._words, self._occupied))

    def __repr__(self) -> str:
        return (f"AddressIndex(address_bits={self.address_bits}, long_bits={self.long_bits}, "
                f"documents={len(self)}, addresses={len(self.keys)})")

    # ------------------------------------------------------------- lookup
    def lookup(self, address_code: np.ndarray, radius: int) -> np.ndarray:
        """Table rows of every stored document whose address is within ``radius``.

        Rows index ``self.ids`` / ``self.long_codes``; grouped by address, ascending.
        """
        return self._rows_in_ball(self._address_value(address_code), radius)

    def _limits(self, k, max_candidates) -> tuple[int, int]:
        """``(k, candidate budget)`` of a search, checked: k no more than the documents,
        the budget (0: the whole ball) at least k, since fewer could never answer."""
        # Fast paths first: this check is a good part of a query's few microseconds.
        if type(max_candidates) is int and max_candidates > 0:
            budget = max_candidates
        elif max_candidates is None:
            budget = 0
        elif isinstance(max_candidates, bool) or not isinstance(max_candidates, (int, np.integer)) or max_candidates < 1:
            raise ValueError(f"max_candidates must be a positive integer or None, got {max_candidates!r}")
        else:
            budget = int(max_candidates)
        if type(k) is not int and (isinstance(k, bool) or not isinstance(k, (int, np.integer))) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k_eff = int(k) if k <= self._n else max(self._n, 0)
        return k_eff, max(budget, k_eff) if budget else 0

    def _address_value(self, address_code) -> np.uint32:
        code = np.asarray(address_code)
        if code.dtype != np.uint8 or code.size != n_bytes(self.address_bits) or code.ndim > 2:
            raise ValueError(f"one packed uint8 address code of {n_bytes(self.address_bits)} bytes expected, "
                             f"got {code.dtype} {code.shape}")
        return np.uint32(int.from_bytes(code.tobytes(), "big"))

    def _ball(self, radius: int) -> np.ndarray:
        masks = self._masks.get(radius)
        if masks is None:
            masks = self._masks[radius] = ball_masks(self.address_bits, radius)
        return masks

    def _rows_in_ball(self, address: np.uint32, radius: int, budget: int = 0) -> np.ndarray:
        if len(self.keys) == 0:
            return np.empty(0, dtype=np.int64)
        ball = self._ball(radius) ^ address  # nearest addresses first; searchsorted needs no sorted needles
        positions = self.keys.searchsorted(ball)
        positions[positions == len(self.keys)] = 0
        positions = positions[self.keys[positions] == ball]
        if len(positions) == 0:
            return np.empty(0, dtype=np.int64)
        starts, ends = self.offsets[positions], self.offsets[positions + 1]
        if budget:  # addresses nearest first, up to the one that reaches the budget, cut to fit
            reached = np.cumsum(ends - starts)
            stop = min(int(np.searchsorted(reached, budget)) + 1, len(reached))
            starts, ends = starts[:stop], ends[:stop].copy()
            if reached[stop - 1] > budget:
                ends[-1] -= reached[stop - 1] - budget
        return _concat_ranges(starts, ends)

    def search(self, address_code: np.ndarray, long_code: np.ndarray, k: int, radius: int = 2,
               *, fallback: bool = True, max_candidates: int | None = DEFAULT_MAX_CANDIDATES) -> AddressResult:
        """The ``k`` documents nearest by long-code Hamming distance among those whose
        address lies within ``radius`` of the query's; exhaustive if the ball has < ``k``.

        Returns ``(distances, ids, n_candidates, fell_back)``; distances int32, nearest
        first, ties by document id. With ``fallback=False`` a small ball returns fewer.

        ``max_candidates`` bounds the work on crowded tables: addresses are visited
        nearest first (distance 0, then 1, ...) and the visit stops once that many
        documents are collected (the last address's block cut to fit, its lowest ids
        kept; a budget below ``k`` counts as ``k``), so the cost of a query does not grow with the collection. ``None``
        visits the whole ball. The default, :data:`DEFAULT_MAX_CANDIDATES`, was chosen
        on validation queries (benchmarks/search_speed.py).
        """
        k_eff, budget = self._limits(k, max_candidates)
        masks = self._masks.get(radius)
        if masks is None:
            masks = self._ball(radius)
        address_code, long_code = self._check_address(address_code), self._check_long(long_code)
        kernel = _numba_kernel() if self.engine == "numba" and self._n else None
        if kernel:
            n_candidates, distances, ids = kernel.search_one(
                self.keys, self.offsets, self._words, self.ids, self._occupied, masks, address_code, long_code,
                k_eff, budget)
            if n_candidates < k_eff and fallback:
                distances, ids = self._exhaustive(long_code, k_eff)
                return AddressResult(distances, ids, n_candidates, True)
            return AddressResult(distances, ids, n_candidates, False)
        rows = self._rows_in_ball(self._address_value(address_code), radius, budget)
        n_candidates = len(rows)
        if n_candidates < k_eff and fallback:
            distances, ids = self._exhaustive(long_code, k_eff)
            return AddressResult(distances, ids, n_candidates, True)
        distances, rows = self._rank(as_words(long_code.reshape(1, -1)), rows, k_eff)
        return AddressResult(distances, self.ids[rows], n_candidates, False)

    def search_batch(self, address_codes: np.ndarray, long_codes: np.ndarray, k: int, radius: int = 2,
                     *, fallback: bool = True, max_candidates: int | None = DEFAULT_MAX_CANDIDATES) -> list[AddressResult]:
        """:meth:`search` for each row of ``address_codes`` / ``long_codes``.

        With numba, all queries run in one compiled call, and those that fall back go to
        FAISS together.
        """
        long_codes = np.asarray(long_codes)
        if long_codes.ndim != 2 or long_codes.dtype != np.uint8 or long_codes.shape[1] != n_bytes(self.long_bits):
            raise ValueError(f"long codes must be packed uint8 of shape (n, {n_bytes(self.long_bits)}), "
                             f"got {long_codes.dtype} {long_codes.shape}")
        address_codes = np.asarray(address_codes)
        if address_codes.dtype != np.uint8 or address_codes.size != len(long_codes) * n_bytes(self.address_bits):
            raise ValueError(f"address codes must be packed uint8 of shape (n, {n_bytes(self.address_bits)}), "
                             f"got {address_codes.dtype} {address_codes.shape}")
        address_codes = address_codes.reshape(len(long_codes), -1)
        if self.engine != "numba" or not len(self.keys) or not len(long_codes) or _numba_kernel() is None:
            return [self.search(a, q, k, radius, fallback=fallback, max_candidates=max_candidates)
                    for a, q in zip(address_codes, long_codes)]
        k_eff, budget = self._limits(k, max_candidates)
        n_candidates, n_found, distances, ids = _numba_kernel().search_many(
            self.keys, self.offsets, self._words, self.ids, self._occupied, self._ball(radius),
            np.ascontiguousarray(address_codes), np.ascontiguousarray(long_codes), k_eff, budget)
        short = np.flatnonzero(n_candidates < k_eff) if fallback else np.empty(0, np.int64)
        if len(short):
            exact_distances, exact_ids = self._exhaustive_many(long_codes[short], k_eff)
            distances[short], ids[short], n_found[short] = exact_distances, exact_ids, k_eff
        fell_back = np.zeros(len(long_codes), bool)
        fell_back[short] = True
        return [AddressResult(distances[q, : n_found[q]], ids[q, : n_found[q]], int(n_candidates[q]), bool(fell_back[q]))
                for q in range(len(long_codes))]

    # ------------------------------------------------------------- internals
    def _check_long(self, long_code) -> np.ndarray:
        """One packed long code as a 1-d contiguous uint8 array (fast path: already one)."""
        code = long_code
        if type(code) is not np.ndarray or code.ndim != 1 or code.dtype != np.uint8 or not code.flags.c_contiguous:
            code = np.asarray(code)
            if code.ndim == 2 and code.shape[0] == 1:
                code = code[0]
            code = np.ascontiguousarray(code) if code.dtype == np.uint8 else code
        if code.dtype != np.uint8 or code.shape != (self._long_width,):
            raise ValueError(f"the long code must be packed uint8 of {self._long_width} bytes, got {code.dtype} {code.shape}")
        return code

    def _check_address(self, address_code) -> np.ndarray:
        code = address_code
        if type(code) is not np.ndarray or code.ndim != 1 or code.dtype != np.uint8 or not code.flags.c_contiguous:
            code = np.asarray(code)
            if code.dtype != np.uint8 or code.ndim > 2:
                raise ValueError(f"one packed uint8 address code of {self._address_width} bytes expected, "
                                 f"got {code.dtype} {code.shape}")
            code = np.ascontiguousarray(code.reshape(-1))
        if code.size != self._address_width:
            raise ValueError(f"one packed uint8 address code of {self._address_width} bytes expected, "
                             f"got {code.dtype} {code.shape}")
        return code

    def _rank(self, query_words: np.ndarray, rows: np.ndarray, k: int):
        distances = word_distances(query_words, self._words[rows])[0]
        if len(rows) > k:
            # Keep every candidate tied with the k-th, so the id tie-break is exact.
            kth = np.partition(distances, k - 1)[k - 1]
            keep = np.flatnonzero(distances <= kth)
            rows, distances = rows[keep], distances[keep]
        order = np.lexsort((self.ids[rows], distances))[:k]
        return distances[order], rows[order]

    def _exhaustive(self, long_code: np.ndarray, k: int):
        distances, ids = self._exhaustive_many(np.asarray(long_code, dtype=np.uint8).reshape(1, -1), k)
        return distances[0], ids[0]

    def _exhaustive_many(self, long_codes: np.ndarray, k: int):
        """FAISS exhaustive top-k of each row, ``(distances int32, ids int64)``, ties by id."""
        if self._flat is None:
            self._flat = faiss.IndexBinaryFlat(8 * self.long_codes.shape[1])
            self._flat.add(self.long_codes)
        distances, rows = self._flat.search(np.ascontiguousarray(long_codes, dtype=np.uint8), k)
        distances, ids = distances.astype(np.int32), self.ids[rows.astype(np.int64)]
        order = np.lexsort((ids, distances), axis=-1)
        return np.take_along_axis(distances, order, -1), np.take_along_axis(ids, order, -1)

    # ------------------------------------------------------------- files
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, format=np.int64(TABLE_FORMAT), address_bits=np.int64(self.address_bits),
                 long_bits=np.int64(self.long_bits), ids=self.ids, addresses=self.addresses,
                 long_codes=self.long_codes)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "AddressIndex":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if int(arrays["format"]) != TABLE_FORMAT:
                raise ValueError(f"address table format {int(arrays['format'])}, expected {TABLE_FORMAT}")
            index = cls(int(arrays["address_bits"]), int(arrays["long_bits"]), arrays["ids"],
                        arrays["addresses"], arrays["long_codes"])
        if len(index) > 1 and (np.diff(index.addresses.astype(np.int64)) < 0).any():
            raise ValueError("address table rows are not sorted by address")
        return index


def _concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])``, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    # Each range continues from the previous one's end: jump by (start - previous end).
    steps = np.ones(total, dtype=np.int64)
    heads = np.cumsum(lengths)[:-1]
    steps[0] = starts[0]
    steps[heads] = starts[1:] - ends[:-1] + 1
    return np.cumsum(steps)


# --------------------------------------------------------------------------- files
def _dump_table(index: AddressIndex) -> tuple[bytes, dict]:
    return index.to_bytes(), {"kind": "address", "address_bits": index.address_bits, "long_bits": index.long_bits,
                              "ntotal": len(index)}


def _parse_table(data: bytes, meta: dict) -> AddressIndex:
    index = AddressIndex.from_bytes(data)
    if len(index) != int(meta["ntotal"]):
        raise ValueError(f"it holds {len(index)} rows, its sidecar says {meta['ntotal']}")
    if (index.address_bits, index.long_bits) != (meta.get("address_bits"), meta.get("long_bits")):
        raise ValueError(f"it holds {index.address_bits}/{index.long_bits}-bit codes, its sidecar says "
                         f"{meta.get('address_bits')}/{meta.get('long_bits')}")
    return index


TABLE_CACHE: CacheFile[AddressIndex] = CacheFile("address table", _dump_table, _parse_table, required=("ntotal",),
                                                 version=TABLE_FORMAT)


def save_address_index(index: AddressIndex, path: Path, fingerprint: str) -> None:
    """Table file first, sidecar last, each atomically (see :class:`~semhash.index.cache.CacheFile`)."""
    TABLE_CACHE.save(index, path, fingerprint)


def load_address_index(path: Path, expected_fingerprint: str | None = None) -> AddressIndex | None:
    """A saved table; None if missing or stale; :class:`~semhash.index.cache.IndexFileError` if corrupt."""
    return TABLE_CACHE.load(path, expected_fingerprint)


def default_address_path(db: Database, index_dir: Path | None = None, address_model: str = TEXT.address) -> Path | None:
    """``<index_dir or <db file>.faiss>/address.table`` (``address.<model>.table`` for
    another address model, e.g. images', so text and image tables of one database do
    not overwrite each other); None for an in-memory database."""
    folder = cache_dir(db, index_dir)
    if folder is None:
        return None
    return folder / (TABLE_FILE if address_model == TEXT.address else f"address.{address_model}.table")


def address_fingerprint(db: Database, address_model: str = TEXT.address, long_model: str = TEXT.long) -> str:
    """Both models' code fingerprints: the table is stale when either changes."""
    address, long = db.get_model(address_model, with_weights=False), db.get_model(long_model, with_weights=False)
    return f"address[{db.code_fingerprint(address.id)}]|long[{db.code_fingerprint(long.id)}]"


def load_or_build_address(db: Database, index_dir: Path | None = None, *, address_model: str = TEXT.address,
                          long_model: str = TEXT.long) -> AddressIndex:
    """The address table of a database: loaded if up to date, else rebuilt from the codes and saved.

    Documents with an address code but no long code (or the reverse; an interrupted
    ``add``) are left out until both are stored. KeyError if a model is missing.
    """
    fingerprint = address_fingerprint(db, address_model, long_model)  # before reading codes
    address, long = db.get_model(address_model, with_weights=False), db.get_model(long_model, with_weights=False)
    if address.kind != "binary" or long.kind != "binary":
        raise ValueError("address search needs two binary models")

    def build() -> AddressIndex:
        address_ids, address_codes = db.get_codes(address.id)
        long_ids, long_codes = db.get_codes(long.id)
        ids, in_address, in_long = np.intersect1d(address_ids, long_ids, assume_unique=True, return_indices=True)
        return AddressIndex.build(ids, address_codes[in_address], long_codes[in_long],
                                  address_bits=address.n_dims, long_bits=long.n_dims)

    return TABLE_CACHE.load_or_build(default_address_path(db, index_dir, address_model), fingerprint, build,
                                     address_bits=address.n_dims, long_bits=long.n_dims)
