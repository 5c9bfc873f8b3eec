"""Each document's nearest other documents in a collection, and targets smoothed over them.

Fine-tuning can ask a code to reconstruct a document's word distribution mixed with its
neighbours', and pull a document's code towards a neighbour's: both need the neighbours,
found here by TF-IDF cosine, or for short documents by cosine in an LSA space, where two
documents that share no word can still be close.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from semhash.baselines import LSA, TfidfCosine

LSA_NEIGHBOUR_DIMS = 64  # dimensions of the LSA space of short documents


def tfidf_neighbours(X: sp.csr_matrix, k: int) -> np.ndarray:
    """``(n, k)`` indices of each document's ``k`` nearest other documents by TF-IDF cosine,
    nearest first."""
    k = int(min(k, X.shape[0] - 1))
    tfidf = TfidfCosine().fit_transform(X)
    return _top_k(lambda rows: (tfidf[rows] @ tfidf.T).toarray(), X.shape[0], k)


def lsa_neighbours(X: sp.csr_matrix, k: int) -> np.ndarray:
    """Like :func:`tfidf_neighbours`, by cosine of LSA-64 (of the sublinear TF-IDF)."""
    k = int(min(k, X.shape[0] - 1))
    dims = max(1, min(LSA_NEIGHBOUR_DIMS, min(X.shape) - 1))
    vectors = LSA(n_components=dims).fit_transform(X)  # rows unit length
    return _top_k(lambda rows: vectors[rows] @ vectors.T, X.shape[0], k)


def _top_k(similarities, n: int, k: int, block: int = 2048) -> np.ndarray:
    """``(n, k)`` indices of each row's ``k`` most similar other rows, most similar first;
    ``similarities(rows)`` gives the dense ``(len(rows), n)`` block."""
    out = []
    for start in range(0, n, block):
        sims = np.array(similarities(slice(start, start + block)), dtype=np.float32)
        np.fill_diagonal(sims[:, start : start + block], -np.inf)  # not one's own neighbour
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def smooth_with_neighbours(targets: sp.csr_matrix, neighbours: np.ndarray, weight: float) -> sp.csr_matrix:
    """Mix each target with the mean target of its neighbours (rows of ``neighbours``)."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    mixing = sp.csr_matrix((np.full(n * k, weight / k, np.float32), (rows, neighbours.ravel())), shape=(n, n))
    return sp.csr_matrix((1 - weight) * targets + mixing @ targets, dtype=np.float32)
