"""Compiled (numba) token counting for :class:`semhash.vectorize.WordCounter`.

Imported only when numba is installed; ``vectorize`` falls back to numpy otherwise.
Compiled once and cached on disk (``cache=True``). Same tokens as the numpy path: a token is
a maximal run of word characters that are all letters, 2 to ``max_length`` long, hashed with
the same 64-bit polynomial hash and looked up in an open-addressing table of the vocabulary.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def count_tokens(points, lower, classes, text_starts, table_hashes, table_columns, max_length, multiplier):
    """``(rows, columns)`` of every vocabulary token of ``points`` (code points, read through
    the ``lower`` table; ``classes`` of the lowered code points: 0/1/2)."""
    n = points.shape[0]
    capacity = n // 3 + 1  # a token and its separator take at least 3 code points
    rows = np.empty(capacity, np.int64)
    columns = np.empty(capacity, np.int64)
    mask = np.uint64(table_hashes.shape[0] - 1)
    n_texts = text_starts.shape[0]
    row, found, i = 0, 0, 0
    one = np.uint64(1)
    while i < n:
        if classes[lower[points[i]]] == 0:
            i += 1
            continue
        start = i
        letters = True
        while i < n:
            kind = classes[lower[points[i]]]
            if kind == 0:
                break
            if kind == 1:
                letters = False
            i += 1
        length = i - start
        if not letters or length < 2 or length > max_length:
            continue
        h = np.uint64(length)
        for j in range(start, i):
            h = h * multiplier + np.uint64(lower[points[j]]) + one
        slot = (h ^ (h >> np.uint64(29))) & mask
        while True:
            column = table_columns[slot]
            if column < 0:
                break
            if table_hashes[slot] == h:
                while row + 1 < n_texts and text_starts[row + 1] <= start:
                    row += 1
                rows[found] = row
                columns[found] = column
                found += 1
                break
            slot = (slot + one) & mask
    return rows[:found], columns[:found]
