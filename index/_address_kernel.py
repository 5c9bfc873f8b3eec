"""Compiled (numba) kernels of :mod:`semhash.index.address`: one call per query, or per batch.

Imported only when numba is installed (``semhash.index.address`` falls back to numpy otherwise).
Compiled on first use and cached on disk (``cache=True``), so later processes (e.g. each
``semhash search --mode address``) load the machine code instead of compiling again.

Layout (built by :class:`semhash.index.address.AddressIndex`):

* ``keys``     sorted distinct addresses (uint32);
* ``offsets``  int64, the rows of ``keys[i]`` are ``offsets[i]:offsets[i + 1]``;
* ``words``    the long codes of the rows, packed bits viewed as uint64 (zero padded);
* ``ids``      the document id of each row (rows of one address ascend by id);
* ``occupied`` a bitmap over the addresses' low ``FILTER_BITS`` bits: most addresses of a
  Hamming ball hold no document, and one bit says so without a binary search.

A query visits the masks (its Hamming ball, nearest addresses first) and stops as soon as
``budget`` candidate rows are collected (the last address's block is cut to fit), then
ranks the candidates by long-code Hamming distance (popcount) and keeps the ``k`` nearest,
ties broken by document id.
"""

from __future__ import annotations

import numba
import numpy as np

FILTER_BITS = 24

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_LOW = np.uint32((1 << FILTER_BITS) - 1)


@numba.njit(nogil=True, cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@numba.njit(nogil=True, cache=True)
def _query(keys, offsets, words, ids, occupied, masks, address_code, long_code, k, budget,
           out_distances, out_ids, block_starts, block_ends, distances, rows, histogram):
    """One query into ``out_*[:n]``; returns ``(n_candidates, n)``. Scratch arrays given."""
    n_keys, n_words = keys.shape[0], words.shape[1]
    address = np.uint32(0)
    for b in range(address_code.shape[0]):
        address = (address << np.uint32(8)) | np.uint32(address_code[b])
    query = np.zeros(n_words, np.uint64)
    for b in range(long_code.shape[0]):
        query[b >> 3] |= np.uint64(long_code[b]) << np.uint64(8 * (b & 7))

    # 1. Addresses of the ball, nearest first, until the budget is met.
    n_blocks, total = 0, 0
    for i in range(masks.shape[0]):
        wanted = masks[i] ^ address
        slot = wanted & _LOW
        if not (occupied[slot >> np.uint32(3)] >> (slot & np.uint32(7))) & np.uint8(1):
            continue
        lo, hi = 0, n_keys
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < wanted:
                lo = mid + 1
            else:
                hi = mid
        if lo < n_keys and keys[lo] == wanted:
            start, end = offsets[lo], offsets[lo + 1]
            if budget > 0 and total + end - start > budget:
                end = start + (budget - total)  # cut the last block to fit
            block_starts[n_blocks] = start
            block_ends[n_blocks] = end
            n_blocks += 1
            total += end - start
            if budget > 0 and total >= budget:
                break

    # 2. Long-code distances of the candidates, with their histogram.
    kk = min(k, total)
    histogram[:] = 0
    j = 0
    for f in range(n_blocks):
        for row in range(block_starts[f], block_ends[f]):
            d = 0
            for w in range(n_words):
                d += np.int64(_popcount(words[row, w] ^ query[w]))
            distances[j] = d
            rows[j] = row
            histogram[d] += 1
            j += 1
    if kk == 0:
        return total, 0

    # 3. Top-k: the candidates up to the k-th distance, bucketed by distance (counting
    #    sort, stable), each bucket's ids sorted: ascending (distance, id).
    below, cut = 0, 0
    while below + histogram[cut] < kk:
        below += histogram[cut]
        cut += 1
    kept = below + histogram[cut]
    cursor = np.empty(cut + 2, np.int64)
    cursor[0] = 0
    for d in range(cut + 1):
        cursor[d + 1] = cursor[d] + histogram[d]
    kept_ids = np.empty(kept, np.int64)
    for j in range(total):
        d = distances[j]
        if d <= cut:
            kept_ids[cursor[d]] = ids[rows[j]]
            cursor[d] += 1
    t, first = 0, 0
    for d in range(cut + 1):
        last = first + histogram[d]
        if first >= kk:
            break
        need = min(kk, last) - first  # ids of this level that make the top k
        if last - first > 32:
            level = kept_ids[first:last]
            if need < last - first:  # the cut level: only its `need` smallest ids matter
                level[:] = np.partition(level, need - 1)
                level[:need].sort()
            else:
                level.sort()
        else:  # insertion sort: levels are short, and often nearly sorted (blocks ascend by id)
            for a in range(first + 1, last):
                value = kept_ids[a]
                b = a - 1
                while b >= first and kept_ids[b] > value:
                    kept_ids[b + 1] = kept_ids[b]
                    b -= 1
                kept_ids[b + 1] = value
        while t < kk and t < last:
            out_distances[t] = d
            out_ids[t] = kept_ids[t]
            t += 1
        first = last
    return total, kk


@numba.njit(nogil=True, cache=True)
def search_one(keys, offsets, words, ids, occupied, masks, address_code, long_code, k, budget):
    """``(n_candidates, distances int32, ids int64)`` of one query."""
    capacity = budget if budget > 0 else offsets[-1]
    out_distances = np.empty(k, np.int32)
    out_ids = np.empty(k, np.int64)
    total, n = _query(keys, offsets, words, ids, occupied, masks, address_code, long_code, k, budget,
                      out_distances, out_ids, np.empty(masks.shape[0], np.int64), np.empty(masks.shape[0], np.int64),
                      np.empty(capacity, np.int32), np.empty(capacity, np.int64),
                      np.zeros(words.shape[1] * 64 + 1, np.int64))
    return total, out_distances[:n], out_ids[:n]


@numba.njit(nogil=True, cache=True)
def search_many(keys, offsets, words, ids, occupied, masks, address_codes, long_codes, k, budget):
    """Every row of ``address_codes`` / ``long_codes``: ``(n_candidates, n_found, distances, ids)``,
    the last two ``(n_queries, k)`` with row ``q`` valid up to ``n_found[q]``."""
    n_queries = address_codes.shape[0]
    capacity = budget if budget > 0 else offsets[-1]
    n_candidates = np.zeros(n_queries, np.int64)
    n_found = np.zeros(n_queries, np.int64)
    out_distances = np.zeros((n_queries, k), np.int32)
    out_ids = np.full((n_queries, k), -1, np.int64)
    block_starts = np.empty(masks.shape[0], np.int64)
    block_ends = np.empty(masks.shape[0], np.int64)
    distances = np.empty(capacity, np.int32)
    rows = np.empty(capacity, np.int64)
    histogram = np.zeros(words.shape[1] * 64 + 1, np.int64)
    for q in range(n_queries):
        n_candidates[q], n_found[q] = _query(
            keys, offsets, words, ids, occupied, masks, address_codes[q], long_codes[q], k, budget,
            out_distances[q], out_ids[q], block_starts, block_ends, distances, rows, histogram)
    return n_candidates, n_found, out_distances, out_ids
