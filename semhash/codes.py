"""Binary codes: packing, Hamming distance and hex form.

A code of ``n_bits`` bits is stored packed, 8 bits per byte, most significant bit
first (``numpy.packbits`` order), so an array of codes has shape ``(n, ceil(n_bits / 8))``
and dtype ``uint8``. This is the layout FAISS binary indexes expect, and the one
stored in the database.

Hamming distances in numpy are computed here only: codes as uint64 words
(:func:`as_words`), XOR, :func:`popcount`. (The numba kernel of
:mod:`semhash.index._address_kernel` has its own popcount: compiled code cannot call numpy's.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# popcount of every byte value: the fallback where numpy (< 2.0) has no bitwise_count.
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def n_bytes(n_bits: int) -> int:
    """Bytes needed to hold a code of ``n_bits`` bits."""
    if n_bits <= 0:
        raise ValueError(f"n_bits must be positive, got {n_bits}")
    return (n_bits + 7) // 8


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack an ``(n, n_bits)`` array of 0/1 (or booleans) into ``(n, n_bytes)`` uint8."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"expected a 2-D array of bits, got shape {bits.shape}")
    if bits.dtype != np.bool_ and not np.isin(bits, (0, 1)).all():
        raise ValueError("bits must be 0 or 1")
    return np.packbits(bits.astype(bool), axis=1)


def unpack_bits(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(n, n_bytes)`` uint8 to ``(n, n_bits)`` uint8 of 0/1."""
    codes = _as_codes(codes)
    if codes.shape[1] != n_bytes(n_bits):
        raise ValueError(
            f"codes have {codes.shape[1]} bytes per row, but {n_bits} bits need {n_bytes(n_bits)}"
        )
    return np.unpackbits(codes, axis=1, count=n_bits)


def _popcount_by_bytes(values: np.ndarray) -> np.ndarray:
    """``np.bitwise_count`` for numpy < 2.0: a table lookup per byte, summed per element."""
    values = np.ascontiguousarray(values)
    as_bytes = values.reshape(-1).view(np.uint8).reshape(*values.shape, values.dtype.itemsize)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def popcount(values: np.ndarray) -> np.ndarray:
    """The number of set bits of each element of an unsigned integer array, as uint8."""
    return _popcount(values)


_popcount = getattr(np, "bitwise_count", _popcount_by_bytes)


def as_words(codes: np.ndarray) -> np.ndarray:
    """Packed codes ``(n, n_bytes)`` (or one code) as ``(n, ceil(n_bytes / 8))`` uint64 words.

    Zero-padded and C-contiguous: a view of the codes when ``n_bytes`` is a multiple of 8,
    else a copy. Distances between words equal those between the packed codes, so
    :func:`word_distances` counts 64 bits per operation instead of 8.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    if codes.ndim != 2:
        raise ValueError(f"packed codes must be 2-D, got shape {codes.shape}")
    if codes.shape[1] % 8:
        padded = np.zeros((len(codes), -(-codes.shape[1] // 8) * 8), dtype=np.uint8)
        padded[:, : codes.shape[1]] = codes
        codes = padded
    return codes.view(np.uint64)


def word_distances(query_words: np.ndarray, db_words: np.ndarray, dtype=np.int32) -> np.ndarray:
    """Hamming distances between codes as :func:`as_words` words, ``(n_queries, n_db)`` of ``dtype``.

    One word at a time, so memory is a few ``(n_queries, n_db)`` arrays whatever the code
    length. A small ``dtype`` (uint8 below 256 bits) keeps a later stable argsort a radix sort.
    """
    distances = np.zeros((len(query_words), len(db_words)), dtype=dtype)
    for word in range(query_words.shape[1]):
        distances += popcount(query_words[:, word, None] ^ db_words[None, :, word])
    return distances


def hamming_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances, ``(n_queries, n_database)`` int32.

    Meant for small problems and tests; large searches go through FAISS.
    """
    queries, database = _as_codes(queries), _as_codes(database)
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"code lengths differ: {queries.shape[1]} bytes in the queries, "
            f"{database.shape[1]} in the database"
        )
    return word_distances(as_words(queries), as_words(database), np.int32)


def to_hex(code: np.ndarray) -> str:
    """One packed code as a hex string (two characters a byte)."""
    return bytes(np.asarray(code, dtype=np.uint8).ravel()).hex()


def from_hex(text: str, n_bits: int) -> np.ndarray:
    """Parse a hex string made by :func:`to_hex` into a ``(1, n_bytes)`` packed code."""
    text = text.strip().lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError as err:
        raise ValueError(f"not a hex code: {text!r}") from err
    if len(raw) != n_bytes(n_bits):
        raise ValueError(
            f"a {n_bits}-bit code has {n_bytes(n_bits) * 2} hex digits, got {len(text)}"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(1, -1).copy()


def _as_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8, got {codes.dtype}")
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    if codes.ndim != 2:
        raise ValueError(f"packed codes must be 2-D, got shape {codes.shape}")
    return codes


# A bit is "live" when it separates the collection: on for at least this share of the
# documents and off for at least as many. A bit that is (nearly) always the same says nothing.
LIVE_BIT_SHARE = 0.01


@dataclass(frozen=True)
class CodeSpread:
    """How much a set of codes tells documents apart."""

    n_codes: int
    n_bits: int
    distinct: int  # distinct codes among the n_codes
    live_bits: int  # bits on for between LIVE_BIT_SHARE and 1 - LIVE_BIT_SHARE of the codes

    @property
    def collapsed(self) -> bool:
        """Codes that have lost their spread: under a quarter of the bits live, or every
        document on one or two codes. (A few distinct codes alone are not collapse: a
        collection of a few topics may well get a few codes.)"""
        return self.live_bits < max(1, self.n_bits // 4) or (self.n_codes > 2 and self.distinct <= 2)

    def describe(self) -> str:
        return (
            f"{self.distinct} distinct codes for {self.n_codes} documents, "
            f"{self.live_bits} of {self.n_bits} bits ever change"
        )


def code_spread(bits: np.ndarray) -> CodeSpread:
    """:class:`CodeSpread` of an ``(n, n_bits)`` array of 0/1 (unpacked) codes."""
    bits = np.asarray(bits).astype(bool)
    if bits.ndim != 2 or not len(bits):
        raise ValueError(f"expected a non-empty 2-D array of bits, got shape {bits.shape}")
    share = bits.mean(axis=0)
    live = int(((share >= LIVE_BIT_SHARE) & (share <= 1 - LIVE_BIT_SHARE)).sum())
    distinct = len(np.unique(np.packbits(bits, axis=1), axis=0))
    return CodeSpread(n_codes=len(bits), n_bits=bits.shape[1], distinct=distinct, live_bits=live)
