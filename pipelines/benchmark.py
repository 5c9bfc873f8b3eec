"""Retrieval benchmarks: score codes and baselines on labelled queries against a database.

The reusable part of ``benchmarks/retrieval.py`` and of ``semhash evaluate``:

* :func:`evaluate_rerank` scores the 2009 paper's two-stage search: the Hamming ranking
  of binary codes, with its first ``candidates`` documents re-ordered by TF-IDF cosine
  (the rest keep their Hamming order, so mAP and the PR curve stay defined);
* :func:`evaluate_baselines_real` scores TF-IDF cosine and LSA at given dimensions;
* :func:`aggregate` turns per-seed rows into mean and std per (method, size);
* :func:`evaluate_database` holds out queries from a labelled semhash database (a test
  corpus given by the user, or a seeded fraction of the stored documents) and reports
  p@10, p@100 and mAP for the stored hasher codes, the stored map codes, TF-IDF cosine
  and LSA of the same dimensions.

Relevance is "shares a label" (for single-label documents: "same label"), as everywhere
in :mod:`semhash.pipelines.evaluate`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
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

__all__ = [
    "evaluate_rerank",
    "fit_networks",
    "network_path",
    "rerank_ranking",
    "evaluate_real_baselines",
    "timed_report",
    "aggregate",
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


def model_cache_key(params: dict, skip_modules: Iterable[str] = ()) -> str:
    """A short digest of a network's parameters and of the ``semhash`` sources it depends
    on, for naming a cached fitted model: a changed estimator or setting is refit, never
    silently reused."""
    import hashlib
    import json

    package = Path(__file__).resolve().parents[1] / "semhash"
    sources = b"".join(p.read_bytes() for p in sorted(package.glob("*.py")) if p.name not in set(skip_modules))
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode() + sources).hexdigest()[:8]


# ------------------------------------------------------------- network fits
NETWORK_SOURCES_SKIPPED = {
    # A hasher does not depend on the map-only modules: changing those does not refit it.
    "hasher": {"topic_map.py", "parametric_tsne.py", "image_hasher.py"},
    "map": {"image_hasher.py"},
}


def _network_class(kind: str):
    from semhash.hasher import SemanticHasher
    from semhash.topic_map import TopicMap

    if kind not in NETWORK_SOURCES_SKIPPED:
        raise ValueError(f"unknown network kind {kind!r}; choose 'hasher' or 'map'")
    return SemanticHasher if kind == "hasher" else TopicMap


def network_path(cache: Path, tag: str, kind: str, size: int, seed: int, params: dict) -> Path:
    """Where the fitted network of these settings lives in ``cache``."""
    digest = model_cache_key(params, NETWORK_SOURCES_SKIPPED[kind])
    return Path(cache) / f"{tag}-{kind}{size}-seed{seed}-{digest}.model"


def _fit_network_job(kind: str, size: int, seed: int, counts, params: dict, path: str, threads: int | None) -> float:
    """Fit one network and save it at ``path`` (in a worker process: ``threads`` 1; in this
    one: None, torch's setting unchanged); returns fit seconds."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    args = {"n_bits": size} if kind == "hasher" else {"n_components": size}
    model = _network_class(kind)(**args, random_state=seed, **params).fit(counts)
    model.save(path)
    return model.fit_seconds_


def fit_networks(
    jobs, counts, params: dict, cache: Path, tag: str, *, workers: int = 1, log=lambda line: None,
    meanwhile: Callable[[], None] | None = None,
):
    """Fit ``jobs`` -- ``(kind, size, seed)`` for SemanticHasher (``"hasher"``, ``size``
    bits) or TopicMap (``"map"``, ``size`` dimensions) -- on ``counts`` and yield
    ``(job, model, fit_seconds, cached)`` as each is ready.

    Networks already in ``cache`` (same settings and sources: :func:`model_cache_key`) are
    loaded, not refit. The rest are fit in ``workers`` processes with one torch thread
    each: on a few cores, separate single-threaded fits use them better than one fit's
    parallel matrix products (the networks' layers are too small to scale). ``params``
    maps a kind to its estimator overrides. ``meanwhile`` is called once in this process
    while the workers fit (e.g. to score cheap baselines on what would be an idle core).
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    paths = {job: network_path(cache, tag, *job, params.get(job[0], {})) for job in jobs}
    todo = []
    for job in jobs:
        if not paths[job].exists():
            todo.append(job)
            continue
        model = _network_class(job[0]).load(paths[job])
        yield job, model, model.fit_seconds_, True
    meanwhile = meanwhile or (lambda: None)
    if not todo:
        meanwhile()
        return
    workers = max(1, min(int(workers), len(todo)))
    log(f"fitting {len(todo)} networks in {workers} process{'es' if workers > 1 else ''}")
    if workers == 1:
        meanwhile()
        for job in todo:
            seconds = _fit_network_job(*job, counts, params.get(job[0], {}), str(paths[job]), None)
            yield job, _network_class(job[0]).load(paths[job]), seconds, False
        return
    # spawn, not fork: a forked child inherits the parent's OpenMP state and can hang.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(_fit_network_job, *job, counts, params.get(job[0], {}), str(paths[job]), 1): job
            for job in todo
        }
        meanwhile()
        for future in as_completed(futures):
            job = futures[future]
            seconds = future.result()
            yield job, _network_class(job[0]).load(paths[job]), seconds, False


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
    log: Callable[[str], None] = lambda line: None,
) -> list[RetrievalReport]:
    """TF-IDF cosine and LSA (cosine) at each of ``lsa_dims``, idf and SVD fit on the database."""
    # (method, label, model factory): one fit-encode-evaluate path for every baseline.
    baselines = [("tfidf", "tfidf", TfidfCosine)] if tfidf else []
    for dims in map(int, lsa_dims):
        if dims >= min(db_counts.shape):
            log(f"lsa-{dims}: skipped (needs fewer dimensions than {min(db_counts.shape)})")
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
        log(f"{label}: p@100 {report.p_at_100:.3f}")
    return reports


# --------------------------------------------------------------------- aggregate
_FIGURES = ("p_at_10", "p_at_100", "mean_ap", "seconds_fit", "seconds_encode")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def _std(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    """Per-seed rows (``RetrievalReport.to_dict()`` plus ``seed`` and extra keys) to one
    row per (method, n_bits_or_dims): the mean of every figure over seeds, its sample
    std (``*_std``; 0 with one seed), ``n_seeds`` and ``seeds``, and the mean PR curve.
    Order of first appearance is kept."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["n_bits_or_dims"]), []).append(row)
    table = []
    for (method, size), members in groups.items():
        first = members[0]
        out = {key: value for key, value in first.items() if key not in _FIGURES + ("seed", "recall", "precision")}
        out.update(method=method, n_bits_or_dims=size, n_seeds=len(members), seeds=[m.get("seed") for m in members])
        for key in _FIGURES:
            out[key] = _mean(m.get(key) for m in members)
            out[f"{key}_std"] = _std([m.get(key) for m in members])
        curves = [m["precision"] for m in members if m.get("precision")]
        out["recall"] = list(first.get("recall") or [])
        out["precision"] = [float(v) for v in np.mean(curves, axis=0)] if curves else []
        table.append(out)
    return table


def find(table: list[dict], method: str, size: int | None = None) -> dict | None:
    """The aggregated row of ``method`` (at ``size``), or None."""
    for row in table:
        if row["method"] == method and (size is None or row["n_bits_or_dims"] == size):
            return row
    return None


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
    log: Callable[[str], None] | None = None,
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
    from semhash.index.database import Database, DatabaseError
    from semhash.pipelines.corpus import read_corpus
    from semhash.index.models import TEXT, load_model
    from semhash.vectorize import empty_rows

    say = log or (lambda line: None)
    started_all = time.perf_counter()
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    with Database(db_path, create=False) as db:
        names = {row.name for row in db.list_models()}
        if TEXT.long not in names:
            raise DatabaseError(f"{db_path} has no {TEXT.long!r} model: build it with `semhash index` first")
        models = {name: load_model(db, name) for name in (TEXT.long, TEXT.map) if name in names}
        counter = models[TEXT.long].vocabulary
        stored_codes = {}
        for name, stored in models.items():
            ids, codes = db.get_codes(stored.id)
            stored_codes[name] = dict(zip(ids.tolist(), codes))
        documents = [
            doc
            for doc in db.iter_documents()
            if doc.label is not None and all(doc.id in codes for codes in stored_codes.values())
        ]
        n_stored = db.count_documents()
    if not documents:
        raise ValueError(f"{db_path}: no stored document has a label (and codes): nothing to evaluate against")
    hasher = models[TEXT.long].model
    topic_map = models[TEXT.map].model if TEXT.map in models else None

    if isinstance(queries, Real) and not isinstance(queries, bool):
        fraction = float(queries)
        if not 0 < fraction < 1:
            raise ValueError(f"a query fraction must be in (0, 1), got {fraction}")
        n_queries = int(round(fraction * len(documents)))
        if n_queries < 1 or n_queries >= len(documents):
            raise ValueError(f"holding out {fraction:.0%} of {len(documents)} labelled documents leaves no queries or no database")
        chosen = np.zeros(len(documents), dtype=bool)
        chosen[rng.choice(len(documents), n_queries, replace=False)] = True
        query_docs = [doc for doc, q in zip(documents, chosen) if q]
        db_docs = [doc for doc, q in zip(documents, chosen) if not q]
        query_texts = [doc.text or "" for doc in query_docs]
        query_codes = {name: np.stack([stored_codes[name][doc.id] for doc in query_docs]) for name in models}
        query_counts = counter.transform(query_texts)
        query_labels = [doc.labels for doc in query_docs]
        query_source = {"kind": "held-out fraction", "fraction": fraction, "seed": seed}
        notes.append(
            "queries are stored documents the models were trained on (held out from the database only), "
            "so the learned codes' figures are optimistic; pass a separate test corpus for unbiased figures"
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read = read_corpus(queries, subdir=subdir, **(read_options or {}))
        labelled = [doc for doc in read if doc.label is not None]
        if not labelled:
            raise ValueError(f"{queries}: no query document has a label")
        query_counts = counter.transform([doc.text for doc in labelled])
        empty = set(empty_rows(query_counts).tolist())
        keep = np.array([i for i in range(len(labelled)) if i not in empty], dtype=np.int64)
        if len(keep) == 0:
            raise ValueError(f"{queries}: no labelled query has a word of the stored vocabulary")
        query_counts = query_counts[keep]
        query_labels = [labelled[i].labels for i in keep]
        query_codes = {TEXT.long: hasher.transform(query_counts)}
        if topic_map is not None:
            query_codes[TEXT.map] = topic_map.transform(query_counts)
        db_docs = documents
        query_source = {"kind": "corpus", "source": str(queries), "subdir": subdir}
        skipped = {"unlabelled": len(read) - len(labelled), "no_vocabulary_word": len(empty)}
        query_source["skipped"] = skipped
        if any(skipped.values()):
            notes.append(f"queries skipped: {skipped}")

    if max_queries is not None and len(query_labels) > max_queries:
        keep = np.sort(rng.choice(len(query_labels), int(max_queries), replace=False))
        query_counts = query_counts[keep]
        query_labels = [query_labels[i] for i in keep]
        query_codes = {name: codes[keep] for name, codes in query_codes.items()}
        notes.append(f"queries sampled down to {max_queries} (seed {seed})")
    if len(db_docs) < 100:
        raise ValueError(f"precision@100 needs a database of at least 100 labelled documents, got {len(db_docs)}")

    db_codes = {name: np.stack([stored_codes[name][doc.id] for doc in db_docs]) for name in models}
    db_counts = counter.transform([doc.text or "" for doc in db_docs])
    db_labels = [doc.labels for doc in db_docs]
    q_labels, d_labels, label_names = _label_ids(query_labels, db_labels)
    multi_label = any(len(labels) > 1 for labels in (*query_labels, *db_labels))
    in_database = {name for labels in db_labels for name in labels}
    missing = sum(1 for labels in query_labels if in_database.isdisjoint(labels))
    if missing:
        notes.append(f"{missing} queries have no label found in the database (they score 0)")
    say(f"{len(q_labels)} queries against {len(db_docs)} labelled documents, {len(label_names)} labels"
        f"{' (multi-label)' if multi_label else ''}")

    reports: list[RetrievalReport] = []
    n_bits = hasher.code_size
    report = evaluate_codes("semhash", query_codes[TEXT.long], db_codes[TEXT.long], n_bits, q_labels, d_labels)
    reports.append(report)
    say(f"semhash-{n_bits}: p@100 {report.p_at_100:.3f}")
    tfidf = TfidfCosine().fit(db_counts)
    if rerank_candidates:
        report = evaluate_rerank(
            "semhash+rerank", query_codes[TEXT.long], db_codes[TEXT.long], n_bits,
            tfidf.transform(query_counts), tfidf.transform(db_counts), q_labels, d_labels, rerank_candidates,
        )
        reports.append(report)
        say(f"semhash-{n_bits}+rerank: p@100 {report.p_at_100:.3f}")
    lsa_dims = [n_bits]
    if topic_map is not None:
        report = evaluate_vectors(
            "semhash-map", query_codes[TEXT.map], db_codes[TEXT.map], q_labels, d_labels, metric="euclidean"
        )
        reports.append(report)
        say(f"map-{topic_map.code_size}: p@100 {report.p_at_100:.3f}")
        lsa_dims.append(topic_map.code_size)
    if baselines:
        reports += evaluate_real_baselines(
            db_counts, query_counts, d_labels, q_labels, sorted(set(lsa_dims)), log=say
        )
    return {
        "database": str(Path(db_path)),
        "queries": query_source,
        "n_queries": int(len(q_labels)),
        "n_database": int(len(db_docs)),
        "n_stored": int(n_stored),
        "n_labels": len(label_names),
        "multi_label": multi_label,
        "vocabulary": len(counter.words_),
        "rerank_candidates": int(rerank_candidates),
        "methods": [r.to_dict() for r in reports],
        "notes": notes,
        "seconds": round(time.perf_counter() - started_all, 2),
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
