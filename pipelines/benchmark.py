"""Retrieval evaluation: score codes and baselines on labelled queries against a database.

What ``semhash evaluate`` runs, and what ``benchmarks/retrieval.py`` builds on:

* :func:`evaluate_rerank` scores the 2009 paper's two-stage search: the Hamming ranking
  of binary codes, with its first ``candidates`` documents re-ordered by TF-IDF cosine
  (the rest keep their Hamming order, so mAP and the PR curve stay defined);
* :func:`evaluate_real_baselines` scores TF-IDF cosine and LSA at given dimensions;
* :func:`evaluate_database` holds out queries from a labelled semhash database (a test
  corpus given by the user, or a seeded fraction of the stored documents) and reports
  p@10, p@100 and mAP for the stored hasher codes, the stored map codes, TF-IDF cosine
  and LSA of the same dimensions; :func:`format_report` prints it.

Relevance is "shares a label" (for single-label documents: "same label"), as everywhere
in :mod:`semhash.pipelines.evaluate`. The benchmarks' own plumbing (model cache, seed
aggregation) lives in ``benchmarks/_common.py``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from semhash.pipelines.evaluate import (
    RetrievalReport,
    _query_batches,
    _report,
    evaluate_codes,
    evaluate_vectors,
    rank_by_hamming,
)
from semhash.baselines import LSA, TfidfCosine
from semhash.progress import reports_progress

log = logging.getLogger(__name__)

__all__ = [
    "evaluate_rerank",
    "rerank_ranking",
    "evaluate_real_baselines",
    "timed_report",
    "evaluate_database",
    "format_report",
]


# ----------------------------------------------------------------------- rerank
def rerank_ranking(
    ranking: np.ndarray, query_tfidf, db_tfidf, candidates: int
) -> np.ndarray:
    """Re-order the first ``candidates`` columns of each row by TF-IDF cosine to the query.

    ``ranking`` is ``(n_queries, n_db)`` (or at least ``candidates`` wide); ties in
    cosine keep the incoming (Hamming) order. Rows beyond ``candidates`` are unchanged.
    ``query_tfidf`` and ``db_tfidf`` are L2-normalised TF-IDF rows (sparse or dense).
    """
    ranking = np.array(ranking, dtype=np.int32, copy=True)
    candidates = min(int(candidates), ranking.shape[1])
    if candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    head = ranking[:, :candidates]
    similarity = db_tfidf @ query_tfidf.T  # (n_db, n_queries)
    similarity = similarity.toarray() if sp.issparse(similarity) else np.asarray(similarity)
    similarity = similarity.T.astype(np.float32, copy=False)
    head_similarity = np.take_along_axis(similarity, head, axis=1)
    order = np.argsort(-head_similarity, axis=1, kind="stable")
    ranking[:, :candidates] = np.take_along_axis(head, order, axis=1)
    return ranking


def evaluate_rerank(
    name: str,
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    n_bits: int,
    query_tfidf,
    db_tfidf,
    query_labels,
    db_labels,
    candidates: int = 100,
) -> RetrievalReport:
    """Hamming ranking with its top ``candidates`` re-ranked by TF-IDF cosine (full metrics)."""
    query_tfidf = sp.csr_matrix(query_tfidf) if sp.issparse(query_tfidf) else np.asarray(query_tfidf)
    batches = (
        (
            batch,
            rerank_ranking(
                rank_by_hamming(query_codes[batch], db_codes, n_bits), query_tfidf[batch], db_tfidf, candidates
            ),
        )
        for batch in _query_batches(len(query_codes), len(db_codes))
    )
    return _report(name, n_bits, batches, query_labels, db_labels, full=True)


def timed_report(report: RetrievalReport, seconds_fit: float, seconds_encode: float) -> RetrievalReport:
    report.seconds_fit = float(seconds_fit)
    report.seconds_encode = float(seconds_encode)
    return report


# --------------------------------------------------------------------- baselines
def evaluate_real_baselines(
    db_counts,
    query_counts,
    db_labels,
    query_labels,
    lsa_dims: Iterable[int] = (),
    *,
    tfidf: bool = True,
    random_state: int = 0,
) -> list[RetrievalReport]:
    """TF-IDF cosine and LSA (cosine) at each of ``lsa_dims``, idf and SVD fit on the database."""
    # (method, label, model factory): one fit-encode-evaluate path for every baseline.
    baselines = [("tfidf", "tfidf", TfidfCosine)] if tfidf else []
    for dims in map(int, lsa_dims):
        if dims >= min(db_counts.shape):
            log.info(f"lsa-{dims}: skipped (needs fewer dimensions than {min(db_counts.shape)})")
            continue
        baselines.append(("lsa", f"lsa-{dims}", lambda dims=dims: LSA(n_components=dims, random_state=random_state)))
    reports = []
    for method, label, make_model in baselines:
        started = time.perf_counter()
        model = make_model().fit(db_counts)
        fitted = time.perf_counter()
        db_vectors, query_vectors = model.transform(db_counts), model.transform(query_counts)
        encoded = time.perf_counter()
        report = evaluate_vectors(method, query_vectors, db_vectors, query_labels, db_labels)
        reports.append(timed_report(report, fitted - started, encoded - fitted))
        log.info(f"{label}: p@100 {report.p_at_100:.3f}")
    return reports


# -------------------------------------------------------------- labelled database
def _label_ids(query_labels, db_labels) -> tuple[np.ndarray | list, np.ndarray | list, list[str]]:
    """Label sets (one tuple of names per document) as label ids, and the sorted names.

    When every document has exactly one label, the ids are int32 arrays: the single-label
    path of :mod:`semhash.pipelines.evaluate`, fastest and exactly as before. Otherwise each document
    gets a tuple of ids, and relevance is "shares a label"."""
    names = sorted({name for labels in (*query_labels, *db_labels) for name in labels})
    index = {name: i for i, name in enumerate(names)}
    if all(len(labels) == 1 for labels in (*query_labels, *db_labels)):
        return (
            np.array([index[labels[0]] for labels in query_labels], dtype=np.int32),
            np.array([index[labels[0]] for labels in db_labels], dtype=np.int32),
            names,
        )
    return (
        [tuple(index[name] for name in labels) for labels in query_labels],
        [tuple(index[name] for name in labels) for labels in db_labels],
        names,
    )


@dataclass
class _Stored:
    """What :func:`evaluate_database` reads from a database: the text models (hasher, and
    map if any), the vocabulary, every model's stored codes by document id, and the
    labelled documents that have codes of every model."""

    models: dict
    counter: object
    codes: dict[str, dict]
    documents: list
    n_stored: int

    @property
    def hasher(self):
        from semhash.index.models import TEXT

        return self.models[TEXT.long].model

    @property
    def topic_map(self):
        from semhash.index.models import TEXT

        return self.models[TEXT.map].model if TEXT.map in self.models else None

    def stack(self, name: str, documents) -> np.ndarray:
        """The stored codes of model ``name`` for ``documents``, one row each."""
        return np.stack([self.codes[name][doc.id] for doc in documents])


@dataclass
class _Queries:
    """Query word counts, label sets and codes (by model name), the database documents they
    are searched against, where they came from, and notes for the report."""

    counts: object
    labels: list
    codes: dict
    db_docs: list
    source: dict
    notes: list[str] = field(default_factory=list)


def _read_stored(db_path) -> _Stored:
    from semhash.index.database import Database, DatabaseError
    from semhash.index.models import TEXT, load_model, load_vocabulary

    with Database(db_path, create=False) as db:
        names = {row.name for row in db.list_models()}
        if TEXT.long not in names:
            raise DatabaseError(f"{db_path} has no {TEXT.long!r} model: build it with `semhash index` first")
        models = {name: load_model(db, name) for name in (TEXT.long, TEXT.map) if name in names}
        counter = load_vocabulary(db)
        codes = {}
        for name, stored in models.items():
            ids, rows = db.get_codes(stored.id)
            codes[name] = dict(zip(ids.tolist(), rows))
        documents = [
            doc
            for doc in db.iter_documents()
            if doc.label is not None and all(doc.id in by_id for by_id in codes.values())
        ]
        n_stored = db.count_documents()
    if not documents:
        raise ValueError(f"{db_path}: no stored document has a label (and codes): nothing to evaluate against")
    return _Stored(models, counter, codes, documents, n_stored)


def _held_out_queries(stored: _Stored, fraction: float, rng: np.random.Generator, seed: int) -> _Queries:
    """A seeded ``fraction`` of the labelled stored documents as queries (their stored codes)."""
    documents = stored.documents
    if not 0 < fraction < 1:
        raise ValueError(f"a query fraction must be in (0, 1), got {fraction}")
    n_queries = int(round(fraction * len(documents)))
    if n_queries < 1 or n_queries >= len(documents):
        raise ValueError(f"holding out {fraction:.0%} of {len(documents)} labelled documents leaves no queries or no database")
    chosen = np.zeros(len(documents), dtype=bool)
    chosen[rng.choice(len(documents), n_queries, replace=False)] = True
    query_docs = [doc for doc, q in zip(documents, chosen) if q]
    return _Queries(
        counts=stored.counter.transform([doc.text or "" for doc in query_docs]),
        labels=[doc.labels for doc in query_docs],
        codes={name: stored.stack(name, query_docs) for name in stored.models},
        db_docs=[doc for doc, q in zip(documents, chosen) if not q],
        source={"kind": "held-out fraction", "fraction": fraction, "seed": seed},
        notes=[
            "queries are stored documents the models were trained on (held out from the database only), "
            "so the learned codes' figures are optimistic; pass a separate test corpus for unbiased figures"
        ],
    )


def _corpus_queries(stored: _Stored, source, subdir: str | None, read_options: dict | None) -> _Queries:
    """The labelled documents of a corpus as queries, encoded with the stored models; every
    labelled stored document is the database."""
    from semhash.index.models import TEXT
    from semhash.pipelines.corpus import read_corpus
    from semhash.vectorize import empty_rows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read = read_corpus(source, subdir=subdir, **(read_options or {}))
    labelled = [doc for doc in read if doc.label is not None]
    if not labelled:
        raise ValueError(f"{source}: no query document has a label")
    counts = stored.counter.transform([doc.text for doc in labelled])
    empty = set(empty_rows(counts).tolist())
    keep = np.array([i for i in range(len(labelled)) if i not in empty], dtype=np.int64)
    if len(keep) == 0:
        raise ValueError(f"{source}: no labelled query has a word of the stored vocabulary")
    counts = counts[keep]
    codes = {TEXT.long: stored.hasher.transform(counts)}
    if stored.topic_map is not None:
        codes[TEXT.map] = stored.topic_map.transform(counts)
    skipped = {"unlabelled": len(read) - len(labelled), "no_vocabulary_word": len(empty)}
    return _Queries(
        counts=counts,
        labels=[labelled[i].labels for i in keep],
        codes=codes,
        db_docs=stored.documents,
        source={"kind": "corpus", "source": str(source), "subdir": subdir, "skipped": skipped},
        notes=[f"queries skipped: {skipped}"] if any(skipped.values()) else [],
    )


def _sample_queries(queries: _Queries, max_queries: int, rng: np.random.Generator, seed: int) -> None:
    """Keep a seeded sample of ``max_queries`` queries (in their order), to bound the run time."""
    keep = np.sort(rng.choice(len(queries.labels), int(max_queries), replace=False))
    queries.counts = queries.counts[keep]
    queries.labels = [queries.labels[i] for i in keep]
    queries.codes = {name: codes[keep] for name, codes in queries.codes.items()}
    queries.notes.append(f"queries sampled down to {max_queries} (seed {seed})")


def _score_methods(
    stored: _Stored, queries: _Queries, db_codes: dict, db_counts, q_labels, d_labels,
    rerank_candidates: int, baselines: bool,
) -> list[RetrievalReport]:
    """The stored hasher codes (and their TF-IDF re-ranking), the stored map codes, and the
    TF-IDF and LSA baselines of the same sizes, on the same queries and database."""
    from semhash.index.models import TEXT

    reports: list[RetrievalReport] = []
    hasher, topic_map = stored.hasher, stored.topic_map
    n_bits = hasher.code_size
    report = evaluate_codes("semhash", queries.codes[TEXT.long], db_codes[TEXT.long], n_bits, q_labels, d_labels)
    reports.append(report)
    log.info(f"semhash-{n_bits}: p@100 {report.p_at_100:.3f}")
    tfidf = TfidfCosine().fit(db_counts)
    if rerank_candidates:
        report = evaluate_rerank(
            "semhash+rerank", queries.codes[TEXT.long], db_codes[TEXT.long], n_bits,
            tfidf.transform(queries.counts), tfidf.transform(db_counts), q_labels, d_labels, rerank_candidates,
        )
        reports.append(report)
        log.info(f"semhash-{n_bits}+rerank: p@100 {report.p_at_100:.3f}")
    lsa_dims = [n_bits]
    if topic_map is not None:
        report = evaluate_vectors(
            "semhash-map", queries.codes[TEXT.map], db_codes[TEXT.map], q_labels, d_labels, metric="euclidean"
        )
        reports.append(report)
        log.info(f"map-{topic_map.code_size}: p@100 {report.p_at_100:.3f}")
        lsa_dims.append(topic_map.code_size)
    if baselines:
        reports += evaluate_real_baselines(
            db_counts, queries.counts, d_labels, q_labels, sorted(set(lsa_dims))
        )
    return reports


@reports_progress
def evaluate_database(
    db_path: str | os.PathLike,
    queries: str | os.PathLike | float = 0.1,
    *,
    seed: int = 0,
    subdir: str | None = None,
    read_options: dict | None = None,
    max_queries: int | None = None,
    rerank_candidates: int = 100,
    baselines: bool = True,
    verbose: bool = False,
) -> dict:
    """Retrieval quality of a labelled semhash database.

    ``queries`` is either a corpus source (anything :func:`semhash.pipelines.corpus.read_corpus`
    reads; its labelled documents are encoded with the stored vocabulary and models and
    searched against every labelled stored document), or a fraction in (0, 1): that share
    of the labelled stored documents, drawn with ``seed``, become the queries (their
    stored codes are used) and the rest is the database. In the second case the models
    were trained on the queries too, so the figures are optimistic for the learned codes
    (TF-IDF and LSA are refit on the remaining database); the report says so in ``notes``.
    ``max_queries`` caps the number of queries (a seeded sample), to bound the run time.

    A stored or query document may have several labels; a database document is relevant
    to a query when they share one (``multi_label`` in the report says whether any document
    has several). Documents without a label take no part.

    Reports p@10, p@100, mAP (full ranking) and the PR curve for: the stored hasher codes
    (Hamming), the hasher followed by TF-IDF re-ranking of ``rerank_candidates``
    Hamming candidates, the stored map codes (Euclidean) when the database has a map, and
    with ``baselines``, TF-IDF cosine and LSA with as many dimensions as the hasher's bits
    and as the map's dimensions (fit on the database part). Returns a JSON-ready dict;
    ``methods`` is a list of :meth:`RetrievalReport.to_dict` rows.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)  # one stream: the held-out draw first, then the sample
    stored = _read_stored(db_path)
    if isinstance(queries, Real) and not isinstance(queries, bool):
        chosen = _held_out_queries(stored, float(queries), rng, seed)
    else:
        chosen = _corpus_queries(stored, queries, subdir, read_options)
    if max_queries is not None and len(chosen.labels) > max_queries:
        _sample_queries(chosen, max_queries, rng, seed)
    db_docs = chosen.db_docs
    if len(db_docs) < 100:
        raise ValueError(f"precision@100 needs a database of at least 100 labelled documents, got {len(db_docs)}")

    db_codes = {name: stored.stack(name, db_docs) for name in stored.models}
    db_counts = stored.counter.transform([doc.text or "" for doc in db_docs])
    db_labels = [doc.labels for doc in db_docs]
    q_labels, d_labels, label_names = _label_ids(chosen.labels, db_labels)
    multi_label = any(len(labels) > 1 for labels in (*chosen.labels, *db_labels))
    in_database = {name for labels in db_labels for name in labels}
    missing = sum(1 for labels in chosen.labels if in_database.isdisjoint(labels))
    if missing:
        chosen.notes.append(f"{missing} queries have no label found in the database (they score 0)")
    log.info(f"{len(q_labels)} queries against {len(db_docs)} labelled documents, {len(label_names)} labels"
        f"{' (multi-label)' if multi_label else ''}")

    reports = _score_methods(stored, chosen, db_codes, db_counts, q_labels, d_labels, rerank_candidates, baselines)
    return {
        "database": str(Path(db_path)),
        "queries": chosen.source,
        "n_queries": int(len(q_labels)),
        "n_database": int(len(db_docs)),
        "n_stored": int(stored.n_stored),
        "n_labels": len(label_names),
        "multi_label": multi_label,
        "vocabulary": len(stored.counter.words_),
        "rerank_candidates": int(rerank_candidates),
        "methods": [r.to_dict() for r in reports],
        "notes": chosen.notes,
        "seconds": round(time.perf_counter() - started, 2),
    }


def format_report(report: dict) -> str:
    """A plain-text table of :func:`evaluate_database`'s report, for the command line."""
    names = {"semhash": "semhash (Hamming)", "semhash+rerank": "semhash + TF-IDF rerank",
             "semhash-map": "semhash map (Euclidean)", "tfidf": "TF-IDF cosine", "lsa": "LSA (cosine)"}

    def fmt(value):
        return "   -  " if value is None else f"{value:6.3f}"

    relevant = "shares a label (multi-label corpus)" if report.get("multi_label") else "same label"
    lines = [
        f"{report['n_queries']} queries ({report['queries']['kind']}) against {report['n_database']} labelled "
        f"documents, {report['n_labels']} labels; relevant = {relevant}",
        f"{'method':28s} {'size':>5s} {'p@10':>6s} {'p@100':>6s} {'mAP':>6s}",
    ]
    for m in report["methods"]:
        lines.append(f"{names.get(m['method'], m['method']):28s} {m['n_bits_or_dims']:5d} "
                     f"{fmt(m['p_at_10'])} {fmt(m['p_at_100'])} {fmt(m['mean_ap'])}")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)
