"""Retrieval quality, measured as in the semantic-hashing literature.

Every test document is a query against the training documents (the database); a
database document is relevant to a query when the two share a label. Reported:
precision at 10 and 100 retrieved, mean average precision over the full ranking, and
the precision-recall curve on a log-scaled recall axis (Salakhutdinov & Hinton 2009).

Rankings are ``(n_queries, n_retrieved)`` int32 arrays of database indices, best first.

Labels are given per document, for queries and database alike, either as single labels (a
1-D array: relevant = same label) or as label sets (a sequence of tuples, lists or sets, a
document with several labels: relevant = at least one label in common; an empty set is
relevant to nothing). Label sets are encoded once as bit masks, one bit per distinct label,
so that relevance stays one vectorised AND per 64 labels. The number of relevant database
documents of a query, which recall, mAP and the PR curve divide by, follows the same rule.

Ties: with short codes many database documents sit at the same Hamming distance from a
query, and how ties are ordered changes precision@k noticeably. Here ties are always
broken by database order (the lower database index first), deterministically. That is
the standard protocol of the hashing literature: codes are compared by a stable sort of
Hamming distances (or, equivalently, a linear scan of the database in storage order), with
no tie-breaking information a real index would not have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from semhash.codes import as_words, n_bytes, word_distances

# The recall levels of the precision-recall curve: log-spaced from 0.001 to 1.
DEFAULT_RECALL_LEVELS = np.logspace(-3, 0, 31)

# Ranks and scores are computed this many (query, database document) pairs at a time,
# so memory stays bounded (~a few hundred MB) whatever the number of queries.
_PAIRS_PER_BATCH = 4_000_000


def _query_batches(n_queries: int, n_database: int) -> Iterator[slice]:
    """Slices of queries, each small enough that a batch-by-database block fits memory."""
    size = max(1, _PAIRS_PER_BATCH // max(1, n_database))
    for start in range(0, n_queries, size):
        yield slice(start, min(start + size, n_queries))


# ---------------------------------------------------------------------------- ranking


def _check_packed(codes: np.ndarray, n_bits: int) -> None:
    shape = np.shape(codes)
    if len(shape) != 2 or shape[1] != n_bytes(n_bits):
        raise ValueError(f"expected packed codes of shape (n, {n_bytes(n_bits)}) for {n_bits} bits, got {shape}")


def rank_by_hamming(
    query_codes: np.ndarray, db_codes: np.ndarray, n_bits: int, top: int | None = None
) -> np.ndarray:
    """Database indices by increasing Hamming distance, ties by database index.

    Returns int32 ``(n_queries, top)``, or ``(n_queries, n_db)`` when ``top`` is None.
    With ``top``, FAISS ``IndexBinaryFlat`` does the search: it scans the database in
    order and keeps a candidate only if strictly closer than the worst kept, so among
    documents tied at the cut-off the lowest indices survive; the kept ones are then
    re-sorted by (distance, index). Without ``top``, popcount distances are argsorted
    with a stable sort, query batch by query batch.
    """
    _check_packed(query_codes, n_bits)
    _check_packed(db_codes, n_bits)
    n_db = len(db_codes)
    if top is not None:
        if not 1 <= top <= n_db:
            raise ValueError(f"top must be in [1, {n_db}], got {top}")
        # FAISS wants a whole number of bytes; the pad bits are zero in every code.
        index = faiss.IndexBinaryFlat(n_bytes(n_bits) * 8)
        index.add(np.ascontiguousarray(db_codes, dtype=np.uint8))
        distances, ids = index.search(np.ascontiguousarray(query_codes, dtype=np.uint8), top)
        order = np.lexsort((ids, distances), axis=1)
        return np.take_along_axis(ids, order, axis=1).astype(np.int32)
    query_words, db_words = as_words(query_codes), as_words(db_codes)
    ranking = np.empty((len(query_words), n_db), dtype=np.int32)
    # uint8 distances below 256 bits, so that the stable argsort of a row is a radix sort.
    dtype = np.uint8 if query_words.shape[1] * 64 < 256 else np.uint16
    for batch in _query_batches(len(query_words), n_db):
        distances = word_distances(query_words[batch], db_words, dtype)
        ranking[batch] = np.argsort(distances, axis=1, kind="stable")
    return ranking


def _similarity_block(queries, database, metric: str, db_sq_norms) -> np.ndarray:
    """Higher-is-better scores, dense float32 ``(n_queries, n_db)``."""
    if sp.issparse(queries):
        queries = queries.toarray()
    queries = np.asarray(queries, dtype=np.float32)
    # sparse database @ dense queries^T costs nnz(database) * n_queries: much cheaper
    # than densifying a sparse database, and than a sparse-by-sparse product with an
    # almost dense result.
    products = np.asarray((database @ queries.T).T, dtype=np.float32)
    if metric == "cosine":
        return products
    # -||q - d||^2 up to a per-query constant, which does not change the ranking.
    return 2.0 * products - db_sq_norms[None, :]


def rank_by_score(
    query_vectors, db_vectors, metric: str = "cosine", top: int | None = None
) -> np.ndarray:
    """Database indices by decreasing cosine (or increasing Euclidean distance).

    Inputs may be dense arrays or scipy sparse matrices. Work proceeds in query batches,
    so memory stays bounded. Ties are broken by database index (stable sort) within the
    returned list; with ``top``, which of several documents exactly tied at the cut-off
    is kept is unspecified (float ties are rare, unlike Hamming ones).
    Returns int32 ``(n_queries, top or n_db)``.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if metric == "cosine":
        query_vectors = normalize(query_vectors, norm="l2")
        db_vectors = normalize(db_vectors, norm="l2")
    if sp.issparse(db_vectors):
        database = sp.csr_matrix(db_vectors, dtype=np.float32)
        db_sq_norms = np.asarray(database.multiply(database).sum(axis=1)).ravel()
    else:
        database = np.asarray(db_vectors, dtype=np.float32)
        db_sq_norms = np.einsum("ij,ij->i", database, database)
    n_queries, n_db = query_vectors.shape[0], database.shape[0]
    if query_vectors.shape[1] != database.shape[1]:
        raise ValueError("queries and database have different dimensions")
    if top is not None and not 1 <= top <= n_db:
        raise ValueError(f"top must be in [1, {n_db}], got {top}")
    width = n_db if top is None else top
    ranking = np.empty((n_queries, width), dtype=np.int32)
    for batch in _query_batches(n_queries, n_db):
        costs = -_similarity_block(query_vectors[batch], database, metric, db_sq_norms)
        if top is None or top == n_db:
            ranking[batch] = np.argsort(costs, axis=1, kind="stable")
            continue
        candidates = np.sort(np.argpartition(costs, top - 1, axis=1)[:, :top], axis=1)
        order = np.argsort(np.take_along_axis(costs, candidates, axis=1), axis=1, kind="stable")
        ranking[batch] = np.take_along_axis(candidates, order, axis=1)
    return ranking


# ---------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class _LabelMasks:
    """Label sets as bits: bit ``j % 64`` of ``words[i, j // 64]`` is set when document i has label j."""

    words: np.ndarray  # (n_documents, n_words) uint64

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, rows) -> _LabelMasks:
        return _LabelMasks(self.words[rows])


_SET_TYPES = (tuple, list, set, frozenset, np.ndarray)


def _holds_label_sets(labels) -> bool:
    """True when ``labels`` gives each document a collection of labels rather than one label."""
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        return labels.ndim == 2  # rows of labels; a 1-D array is one label per document
    return any(isinstance(labels_of_one, _SET_TYPES) for labels_of_one in labels)


def _encode_label_sets(query_labels, db_labels) -> tuple[_LabelMasks, _LabelMasks]:
    """Both sides as bit masks over one numbering of their labels (a bare label is a set of one;
    None is no label)."""
    def as_sets(labels):
        return [
            tuple(x) if isinstance(x, _SET_TYPES) else () if x is None else (x,)
            for x in labels
        ]

    query_sets, db_sets = as_sets(query_labels), as_sets(db_labels)
    bit: dict = {}
    for labels_of_one in query_sets + db_sets:
        for label in labels_of_one:
            bit.setdefault(label, len(bit))
    n_words = max(1, -(-len(bit) // 64))

    def masks(sets) -> _LabelMasks:
        words = np.zeros((len(sets), n_words), dtype=np.uint64)
        rows = np.repeat(np.arange(len(sets)), [len(labels_of_one) for labels_of_one in sets])
        bits = np.fromiter((bit[label] for labels_of_one in sets for label in labels_of_one), np.int64, len(rows))
        np.bitwise_or.at(words, (rows, bits // 64), np.left_shift(np.uint64(1), (bits % 64).astype(np.uint64)))
        return _LabelMasks(words)

    return masks(query_sets), masks(db_sets)


def _label_keys(query_labels, db_labels):
    """The labels in the form :func:`_relevance` compares: arrays of single labels as they are
    (compared with ``==``, the fast path), label sets as :class:`_LabelMasks`. Encoded labels
    pass through, so callers encode once and slice."""
    if isinstance(query_labels, _LabelMasks) and isinstance(db_labels, _LabelMasks):
        return query_labels, db_labels
    if _holds_label_sets(query_labels) or _holds_label_sets(db_labels):
        return _encode_label_sets(query_labels, db_labels)
    return np.asarray(query_labels), np.asarray(db_labels)


def _relevance(ranking: np.ndarray, query_labels, db_labels) -> np.ndarray:
    """Boolean ``(n_queries, n_retrieved)``: does the retrieved document share a label?"""
    query_labels, db_labels = _label_keys(query_labels, db_labels)
    ranking = np.asarray(ranking)
    if ranking.ndim != 2 or len(ranking) != len(query_labels):
        raise ValueError(f"ranking must have one row per query, got shape {ranking.shape}")
    if not isinstance(db_labels, _LabelMasks):
        return db_labels[ranking] == query_labels[:, None]
    query_words, db_words = query_labels.words, db_labels.words
    relevant = np.zeros(ranking.shape, dtype=bool)
    for word in np.flatnonzero(query_words.any(axis=0)):  # words no query uses cannot match
        relevant |= (db_words[:, word][ranking] & query_words[:, word, None]) != 0
    return relevant


def precision_at_k(ranking, query_labels, db_labels, ks=(10, 100)) -> dict[int, float]:
    """Mean over queries of the fraction of the first k retrieved that are relevant."""
    ks = tuple(int(k) for k in ks)
    if max(ks) > np.shape(ranking)[1]:
        raise ValueError(f"ranking has {np.shape(ranking)[1]} columns, k up to {max(ks)} needed")
    relevant = _relevance(np.asarray(ranking)[:, : max(ks)], query_labels, db_labels)
    return {k: float(relevant[:, :k].mean()) for k in ks}


def _check_full(ranking, db_labels) -> None:
    if np.shape(ranking)[1] != len(db_labels):
        raise ValueError(
            "mean average precision and the precision-recall curve need full rankings: "
            f"{np.shape(ranking)[1]} columns for a database of {len(db_labels)}"
        )


def _hit_precisions(relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision at each relevant hit, ``(n_queries, max hits)`` zero-padded, and hit counts.

    Entry [q, j] is (j + 1) / rank of query q's (j + 1)-th relevant document.
    """
    rows, positions = np.nonzero(relevant)  # row-major: hits of a row in rank order
    n_hits = np.bincount(rows, minlength=len(relevant))
    first_hit = np.concatenate([[0], np.cumsum(n_hits)[:-1]])
    hit_number = np.arange(len(rows)) - first_hit[rows]  # 0-based within its row
    precisions = np.zeros((len(relevant), max(1, int(n_hits.max(initial=0)))), np.float64)
    precisions[rows, hit_number] = (hit_number + 1) / (positions + 1)
    return precisions, n_hits


def mean_average_precision(ranking_full, query_labels, db_labels) -> float:
    """Mean over queries of average precision over the full ranking.

    AP of a query is the mean of the precisions at the ranks of its relevant documents;
    a query with no relevant document in the database scores 0. Queries are processed in
    batches to bound memory.
    """
    _check_full(ranking_full, db_labels)
    query_labels, db_labels = _label_keys(query_labels, db_labels)
    total = 0.0
    for batch in _query_batches(len(query_labels), len(db_labels)):
        relevant = _relevance(ranking_full[batch], query_labels[batch], db_labels)
        precisions, n_hits = _hit_precisions(relevant)
        total += float((precisions.sum(axis=1) / np.maximum(n_hits, 1)).sum())
    return total / max(1, len(query_labels))


def precision_recall_curve(
    ranking_full, query_labels, db_labels, recall_levels=DEFAULT_RECALL_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at the given recall levels, averaged over queries.

    For each query, precision at recall r is the highest precision reached at any rank
    whose recall is at least r (the usual interpolation, which makes the curve
    non-increasing); it is then averaged over queries. The default levels are log-spaced
    from 0.001 to 1, to be drawn on a log recall axis as in Salakhutdinov & Hinton (2009).
    Returns ``(recall_levels, precision)``; queries without relevant documents count 0.
    """
    _check_full(ranking_full, db_labels)
    recall_levels = np.asarray(recall_levels, dtype=np.float64)
    if recall_levels.ndim != 1 or np.any((recall_levels <= 0) | (recall_levels > 1)):
        raise ValueError("recall levels must be a 1-D array in (0, 1]")
    query_labels, db_labels = _label_keys(query_labels, db_labels)
    total = np.zeros(len(recall_levels))
    for batch in _query_batches(len(query_labels), len(db_labels)):
        relevant = _relevance(ranking_full[batch], query_labels[batch], db_labels)
        precisions, n_hits = _hit_precisions(relevant)
        # Precision only peaks at relevant hits, so the best precision at recall >= r
        # is the best over hits from number ceil(r * n_hits) on: a suffix maximum.
        best_from = np.maximum.accumulate(precisions[:, ::-1], axis=1)[:, ::-1]
        # The small tolerance keeps e.g. 0.3 * 10 from rounding up to hit 4.
        needed = np.ceil(recall_levels[None, :] * n_hits[:, None] - 1e-9).astype(np.int64)
        needed = np.clip(needed - 1, 0, best_from.shape[1] - 1)
        interpolated = np.take_along_axis(best_from, needed, axis=1)
        total += np.where(n_hits[:, None] > 0, interpolated, 0.0).sum(axis=0)
    return recall_levels, total / max(1, len(query_labels))


# ---------------------------------------------------------------------------- reports


@dataclass
class RetrievalReport:
    """The figures for one method; ``recall``/``precision`` empty when not computed."""

    method: str
    n_bits_or_dims: int
    p_at_10: float
    p_at_100: float
    mean_ap: float = math.nan
    recall: np.ndarray = field(default_factory=lambda: np.empty(0))
    precision: np.ndarray = field(default_factory=lambda: np.empty(0))
    seconds_fit: float = math.nan
    seconds_encode: float = math.nan

    def to_dict(self) -> dict:
        """Plain JSON-ready types (lists, floats; NaN becomes None)."""
        out = asdict(self)
        out["recall"] = [float(r) for r in self.recall]
        out["precision"] = [float(p) for p in self.precision]
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        return out


def _report(
    name: str,
    width: int,
    batches: Iterable[tuple[slice, np.ndarray]],
    query_labels,
    db_labels,
    full: bool,
    ks: tuple[int, int] = (10, 100),
) -> RetrievalReport:
    """Combine per-batch rankings into a report: every metric is a mean over queries."""
    query_labels, db_labels = _label_keys(query_labels, db_labels)
    n_queries = len(query_labels)
    sums = {"p": np.zeros(len(ks)), "map": 0.0, "pr": np.zeros(len(DEFAULT_RECALL_LEVELS))}
    for batch, ranking in batches:
        size = batch.stop - batch.start
        labels = query_labels[batch]
        precisions = precision_at_k(ranking, labels, db_labels, ks)
        sums["p"] += size * np.array([precisions[k] for k in ks])
        if full:
            sums["map"] += size * mean_average_precision(ranking, labels, db_labels)
            sums["pr"] += size * precision_recall_curve(ranking, labels, db_labels)[1]
    p_at = sums["p"] / n_queries
    return RetrievalReport(
        method=name,
        n_bits_or_dims=width,
        p_at_10=float(p_at[0]),
        p_at_100=float(p_at[1]),
        mean_ap=float(sums["map"] / n_queries) if full else math.nan,
        recall=DEFAULT_RECALL_LEVELS.copy() if full else np.empty(0),
        precision=sums["pr"] / n_queries if full else np.empty(0),
    )


def evaluate_codes(
    name: str,
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    n_bits: int,
    query_labels,
    db_labels,
    full: bool = True,
) -> RetrievalReport:
    """Score binary codes by Hamming ranking (ties by database index).

    With ``full``, queries are ranked against the whole database batch by batch (never
    holding all rankings), giving mAP and the PR curve too; otherwise only the top 100
    are retrieved, through FAISS. Timing fields are left for the caller to fill in.
    """
    if full:
        batches = (
            (batch, rank_by_hamming(query_codes[batch], db_codes, n_bits))
            for batch in _query_batches(len(query_codes), len(db_codes))
        )
    else:
        whole = slice(0, len(query_codes))
        batches = [(whole, rank_by_hamming(query_codes, db_codes, n_bits, top=100))]
    return _report(name, n_bits, batches, query_labels, db_labels, full)


def evaluate_vectors(
    name: str,
    query_vecs,
    db_vecs,
    query_labels,
    db_labels,
    metric: str = "cosine",
    full: bool = True,
) -> RetrievalReport:
    """Score real-valued vectors (dense or sparse) by cosine or Euclidean ranking."""
    top = None if full else 100
    batches = (
        (batch, rank_by_score(query_vecs[batch], db_vecs, metric, top=top))
        for batch in _query_batches(query_vecs.shape[0], db_vecs.shape[0])
    )
    return _report(name, query_vecs.shape[1], batches, query_labels, db_labels, full)
