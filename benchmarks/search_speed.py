"""Search speed vs collection size: semantic-hashing address lookup against exhaustive search.

Collections of 10k, 100k and 1M documents (10M does not fit this machine: its TF-IDF
matrix alone would take ~6 GB and the perturbed-copy generation and encoding ~1 hour on
one core). The first documents are the 20 Newsgroups training posts; beyond their 11,314,
each extra document is a perturbed copy of a real one: its word counts are resampled
multinomially from the word distribution of a real post (random length, 0.5-1.5x the
original's), and for half of the copies mixed with a second post of the same newsgroup
(20-50% of the words from it). Every document is encoded by the trained models (long
code: ``SemanticHasher`` ``--bits``; address: ``SemanticHasher`` ``--address-bits``), so
codes are distributed as real codes are, not uniformly. Queries are 20 Newsgroups test
posts (never in the collection).

Methods, all single-threaded (FAISS ``omp_set_num_threads(1)``, ``OMP_NUM_THREADS=1``):

* ``address r=0..3``  :class:`semhash.index.address.AddressIndex` as the library runs it: the
  addresses of the Hamming ball of radius r around the query's visited nearest first,
  stopping at the default budget of ``DEFAULT_MAX_CANDIDATES`` candidates, which are
  re-ranked by long-code Hamming distance, all in one compiled (numba) call; exhaustive
  fallback when the ball has fewer than k=100 documents; ``r=3 all``: the whole radius-3
  ball (no budget); ``r=3 max=C``: other budgets. The default budget is checked on
  validation queries (fresh perturbed copies of training posts, not test posts) at the
  largest size (``budget_selection`` in the results);
* ``binary flat``     FAISS ``IndexBinaryFlat`` over the long codes (exhaustive Hamming);
* ``faiss hash r``    FAISS ``IndexBinaryHash`` keyed by the first ``--address-bits`` bits of the
  long code itself, ``nflip = r`` (no fallback: ``short`` is the share of queries with < k results);
* ``LSA-128 flat``    FAISS ``IndexFlatIP`` over unit-norm LSA-128 vectors;
* ``TF-IDF cosine``   scipy sparse matrix-vector product over the TF-IDF rows.

Per method and size: latency of one query at a time (p50, p99; k=100), throughput
(queries/s, a batch of all queries, as the method batches best), build time, memory of the
search structure, precision@100 of the test-post queries (same newsgroup; perturbed copies carry
their source post's newsgroup) for exhaustive and address search, and for the address lookup the recall of the exhaustive Hamming top-100
(tie-aware: a returned document counts if its distance is below the 100th exhaustive
distance, or equal to it while tied places remain), the share of queries that fell back
and the mean number of candidates.

Also: precision@100 on 20 Newsgroups (7,532 test posts as queries against the 11,314 train
posts, relevant = same newsgroup) of address lookup + long-code re-ranking vs exhaustive
Hamming ranking, and indexing throughput (raw text to stored codes) of
``semhash.pipelines.indexing.add_documents`` on the test posts' texts.

Models: trained once on the train posts (default parameters; ``--quick``: small ones,
in seconds) and kept in ``--models`` (default ``$TMPDIR/semhash_speed``), keyed by their
settings, training posts and code; missing ones are trained (minutes per model on one core).

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/search_speed.py             # 10k, 100k, 1M
    OMP_NUM_THREADS=1 python benchmarks/search_speed.py --quick          # CI: 10k only

Writes ``search_speed.{json,md,png}`` under ``--out`` (``benchmarks/results``; ``--quick``:
``search_speed.quick.*``).
Timings on a shared 2-core machine are noisy; ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _common import (  # noqa: E402
    NEWSGROUPS,
    TMP,
    add_out_argument,
    count_words,
    fit_or_load,
    log,
    read_documents,
    write_results,
)

K = 100
RADII = (0, 1, 2, 3)
CAPS = (250, 500, 2_000, 4_000)  # other max_candidates budgets (radius 3, nearest addresses first)
# Validated at the largest size (None: whole ball). Below 5 x k the long-code re-ranking has
# almost nothing to choose from, so smaller budgets are not candidates.
BUDGETS = (500, 1_000, 2_000, 4_000, None)
VALIDATION_QUERIES = 300


# ----------------------------------------------------------------------------- models
def load_models(folder: Path, bits: int, address_bits: int, train_counts, quick: bool):
    """The long-code and address hashers fit on the train counts (default parameters;
    ``quick``: a few epochs), kept in ``folder``."""
    import torch

    from semhash.hasher import SemanticHasher

    torch.set_num_threads(1)
    params = {"pretrain_epochs": 1, "finetune_epochs": 3, "neighbour_targets": 0} if quick else {}
    models = []
    for n in (bits, address_bits):
        model, seconds, cached = fit_or_load(SemanticHasher(n_bits=n, random_state=0, **params), train_counts, folder)
        if not cached:
            log(f"trained a {n}-bit SemanticHasher ({'quick' if quick else 'default parameters'}) in {seconds:.0f}s")
        models.append(model)
    return models


# ----------------------------------------------------------------------------- data
def perturbed_counts(source, labels, n: int, seed: int, chunk: int = 50_000, labels_out: list | None = None):
    """``n`` perturbed copies of rows of ``source`` (CSR counts), in chunks (generator).

    Each copy: a random source row s, a length L = round(len(s) * U(0.5, 1.5)) (>= 5),
    and with probability 1/2 a partner p of the same label and weight w ~ U(0.2, 0.5):
    Binomial(L, 1-w) words drawn from s's word distribution, the rest from p's.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    source = sp.csr_matrix(source, dtype=np.float64)
    lengths = np.asarray(source.sum(axis=1)).ravel()
    n_words = source.shape[1]
    by_label = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    # Row-wise cumulative word distributions, offset by the row number: one global
    # sorted array, so sampling word j of row r is searchsorted(cum, r + u).
    probabilities = source.multiply(1.0 / np.maximum(lengths, 1)[:, None]).tocsr()
    row_of = np.repeat(np.arange(source.shape[0]), np.diff(probabilities.indptr))
    cumulative = np.cumsum(probabilities.data)
    row_start_cum = np.r_[0.0, cumulative[probabilities.indptr[1:] - 1]]
    within = cumulative - row_start_cum[row_of]
    global_cum = row_of + np.minimum(within, 1.0)
    global_cum[probabilities.indptr[1:] - 1] = np.arange(source.shape[0]) + 1.0  # exact row ends

    def sample(rows, counts_per_row):
        draws = np.repeat(rows, counts_per_row) + rng.random(int(counts_per_row.sum()))
        positions = np.minimum(np.searchsorted(global_cum, draws, side="right"), len(global_cum) - 1)
        return probabilities.indices[positions]

    done = 0
    while done < n:
        m = min(chunk, n - done)
        src = rng.integers(0, source.shape[0], m)
        length = np.maximum(5, np.round(lengths[src] * rng.uniform(0.5, 1.5, m))).astype(np.int64)
        mixed = rng.random(m) < 0.5
        weight = np.where(mixed, rng.uniform(0.2, 0.5, m), 0.0)
        from_partner = rng.binomial(length, weight)
        partner = np.array([rng.choice(by_label[labels[s]]) for s in src])
        words_src = sample(src, length - from_partner)
        words_partner = sample(partner, from_partner)
        doc_src = np.repeat(np.arange(m), length - from_partner)
        doc_partner = np.repeat(np.arange(m), from_partner)
        docs = np.concatenate([doc_src, doc_partner])
        words = np.concatenate([words_src, words_partner])
        counts = sp.csr_matrix((np.ones(len(docs), np.float32), (docs, words)), shape=(m, n_words))
        counts.sum_duplicates()
        if labels_out is not None:
            labels_out.append(labels[src])
        yield counts
        done += m


def encode_all(models, counts_chunks):
    """Concatenate each model's transform over chunks."""
    out = {name: [] for name in models}
    for chunk in counts_chunks:
        for name, fn in models.items():
            out[name].append(fn(chunk))
    import scipy.sparse as sp

    return {name: sp.vstack(parts).tocsr() if sp.issparse(parts[0]) else np.concatenate(parts) for name, parts in out.items()}


# ----------------------------------------------------------------------------- measuring
def latencies(fn, n_queries: int) -> np.ndarray:
    out = np.empty(n_queries)
    for i in range(n_queries):
        started = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - started
    return out


def summary(lat: np.ndarray, batch_seconds: float, n_batch: int) -> dict:
    return {
        "p50_us": round(float(np.percentile(lat, 50)) * 1e6, 1),
        "p99_us": round(float(np.percentile(lat, 99)) * 1e6, 1),
        "mean_us": round(float(lat.mean()) * 1e6, 1),
        "qps": round(n_batch / batch_seconds, 1),
    }


def tie_aware_recall(found_distances: np.ndarray, exact_distances: np.ndarray, k: int) -> float:
    """Share of the exhaustive top-k a result holds, counting ties at the k-th distance as equal."""
    kth = exact_distances[k - 1]
    n_less_exact = int((exact_distances[:k] < kth).sum())
    found = np.asarray(found_distances)[:k]
    less = int((found < kth).sum())
    tied = int((found == kth).sum())
    return (less + min(tied, k - n_less_exact)) / k


def bench_size(n, data, queries, n_latency_queries, tfidf_queries, validate: bool = False):
    import faiss

    from semhash.index.address import AddressIndex

    row = {"documents": n, "methods": {}}
    addr, long_codes, lsa, tfidf = (data[key][:n] for key in ("address", "long", "lsa", "tfidf"))
    ids = np.arange(n, dtype=np.int64)
    nq = len(queries["long"])
    bits = long_codes.shape[1] * 8

    # exhaustive binary (FAISS)
    started = time.perf_counter()
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(long_codes)
    build = time.perf_counter() - started
    lat = latencies(lambda i: flat.search(queries["long"][i : i + 1], K), n_latency_queries)
    started = time.perf_counter()
    exact_d, exact_i = flat.search(queries["long"], K)
    batch = time.perf_counter() - started
    row["methods"]["binary flat"] = {**summary(lat, batch, nq), "build_s": round(build, 3),
                                     "memory_mb": round(long_codes.nbytes / 2**20, 1)}

    # address lookup: the library's default (a budget of DEFAULT_MAX_CANDIDATES candidates,
    # addresses nearest first) at radius 0-3, the whole radius-3 ball, and other budgets
    from semhash.index.address import DEFAULT_MAX_CANDIDATES

    labels, q_labels = data["labels"][:n], queries["labels"]
    row["methods"]["binary flat"]["p_at_100"] = round(float((labels[exact_i] == q_labels[:, None]).mean()), 4)
    started = time.perf_counter()
    index = AddressIndex.build(ids, addr, long_codes, address_bits=data["address_bits"], long_bits=bits)
    build = time.perf_counter() - started
    index.search(queries["address"][0], queries["long"][0], K, 0)  # warm-up (fallback index, compiled kernel)
    index.search_batch(queries["address"][:2], queries["long"][:2], K, 0)
    variants = [*((f"address r={r}", r, DEFAULT_MAX_CANDIDATES) for r in RADII), ("address r=3 all", 3, None),
                *((f"address r=3 max={c}", 3, c) for c in CAPS)]
    for name, radius, cap in variants:
        lat = latencies(lambda i: index.search(queries["address"][i], queries["long"][i], K, radius, max_candidates=cap),
                        n_latency_queries)
        started = time.perf_counter()
        results = index.search_batch(queries["address"], queries["long"], K, radius, max_candidates=cap)
        batch = time.perf_counter() - started
        recall = np.mean([tie_aware_recall(r.distances, exact_d[i], min(K, n)) for i, r in enumerate(results)])
        row["methods"][name] = {
            **summary(lat, batch, nq), "build_s": round(build, 3), "memory_mb": round(index.nbytes / 2**20, 1),
            "recall_at_100": round(float(recall), 4),
            "p_at_100": round(float(np.mean([(labels[r.ids] == q).mean() for r, q in zip(results, q_labels)])), 4),
            "fallback_rate": round(float(np.mean([r.fell_back for r in results])), 4),
            "mean_candidates": round(float(np.mean([r.n_candidates for r in results])), 1),
            "max_candidates": cap, "radius": radius,
        }
    if validate:
        row["budget_selection"] = choose_budget(index, flat, queries["validation"], labels, n_latency_queries)

    # FAISS IndexBinaryHash: the same idea with FAISS's own table, keyed by the first
    # address_bits bits of the long code itself (no separate address model), nflip = radius.
    started = time.perf_counter()
    hashed = faiss.IndexBinaryHash(bits, data["address_bits"])
    hashed.add(long_codes)
    build = time.perf_counter() - started
    for radius in RADII:
        hashed.nflip = radius
        lat = latencies(lambda i: hashed.search(queries["long"][i : i + 1], K), n_latency_queries)
        started = time.perf_counter()
        found_d, found_i = hashed.search(queries["long"], K)
        batch = time.perf_counter() - started
        recall = np.mean([tie_aware_recall(found_d[i][found_i[i] >= 0], exact_d[i], min(K, n)) for i in range(nq)])
        row["methods"][f"faiss hash r={radius}"] = {
            **summary(lat, batch, nq), "build_s": round(build, 3), "memory_mb": round(n * (bits // 8 + 8) / 2**20, 1),
            "recall_at_100": round(float(recall), 4),
            "short_rate": round(float(np.mean((found_i >= 0).sum(axis=1) < min(K, n))), 4),
        }
    del hashed

    # LSA-128 float (FAISS inner product on unit vectors = cosine)
    started = time.perf_counter()
    flat_ip = faiss.IndexFlatIP(lsa.shape[1])
    flat_ip.add(lsa)
    build = time.perf_counter() - started
    lat = latencies(lambda i: flat_ip.search(queries["lsa"][i : i + 1], K), n_latency_queries)
    started = time.perf_counter()
    flat_ip.search(queries["lsa"], K)
    batch = time.perf_counter() - started
    row["methods"]["LSA-128 flat"] = {**summary(lat, batch, nq), "build_s": round(build, 3),
                                      "memory_mb": round(lsa.nbytes / 2**20, 1)}
    del flat_ip

    # sparse TF-IDF cosine
    q_tfidf = queries["tfidf"]
    q_dense = q_tfidf.toarray()

    def tfidf_one(i):
        scores = tfidf @ q_dense[i]
        top = np.argpartition(-scores, K - 1)[:K] if len(scores) > K else np.arange(len(scores))
        return top[np.argsort(-scores[top])]

    lat = latencies(tfidf_one, tfidf_queries)
    started = time.perf_counter()
    for start in range(0, tfidf_queries, 10):  # batches of 10: N x 10 dense scores at a time
        scores = np.asarray((tfidf @ q_dense[start : start + 10].T))
        np.argpartition(-scores, min(K, n) - 1, axis=0)[:K]
    batch = time.perf_counter() - started
    tfidf_bytes = tfidf.data.nbytes + tfidf.indices.nbytes + tfidf.indptr.nbytes
    row["methods"]["TF-IDF cosine"] = {**summary(lat, batch, tfidf_queries), "build_s": 0.0,
                                       "memory_mb": round(tfidf_bytes / 2**20, 1), "queries_timed": tfidf_queries}
    return row


def choose_budget(index, flat, validation, labels, n_latency_queries) -> dict:
    """The candidate budget, chosen on validation queries (perturbed copies of training
    posts, drawn afresh: neither in the collection nor test posts) at the largest size.

    For each budget of BUDGETS (radius 2): p@100 (same newsgroup as the query's source post),
    recall of the exhaustive top-100 and p50 latency. Chosen: the smallest budget whose
    p@100 is at least 97% of exhaustive Hamming ranking's on the same queries (the target
    asks 95%; 2 points of margin), else the largest.
    """
    exact_d, exact_i = flat.search(validation["long"], K)
    exhaustive = float((labels[exact_i] == validation["labels"][:, None]).mean())
    rows = {}
    for budget in BUDGETS:
        results = index.search_batch(validation["address"], validation["long"], K, 2, max_candidates=budget)
        lat = latencies(lambda i: index.search(validation["address"][i], validation["long"][i], K, 2, max_candidates=budget),
                        min(n_latency_queries, len(results)))
        rows[str(budget)] = {
            "p_at_100": round(float(np.mean([(labels[r.ids] == q).mean() for r, q in zip(results, validation["labels"])])), 4),
            "recall_at_100": round(float(np.mean([tie_aware_recall(r.distances, exact_d[i], K) for i, r in enumerate(results)])), 4),
            "p50_us": round(float(np.percentile(lat, 50)) * 1e6, 1),
        }
    good = [b for b in BUDGETS if b is not None and rows[str(b)]["p_at_100"] >= 0.97 * exhaustive]
    chosen = good[0] if good else max(b for b in BUDGETS if b is not None)
    return {"queries": len(validation["labels"]), "exhaustive_p_at_100": round(exhaustive, 4), "budgets": rows,
            "rule": "smallest budget with validation p@100 >= 0.97 x exhaustive Hamming's", "chosen": chosen}


def precision_20ng(index_codes, query_codes, train_labels, test_labels, address_bits, bits):
    """p@100 of exhaustive Hamming ranking vs address lookup + re-ranking, on 20NG."""
    from semhash.index.address import AddressIndex
    from semhash.pipelines.evaluate import precision_at_k, rank_by_hamming

    address_db, long_db = index_codes
    address_q, long_q = query_codes
    ranking = rank_by_hamming(long_q, long_db, bits, top=K)
    out = {"exhaustive hamming": round(precision_at_k(ranking, test_labels, train_labels, ks=(K,))[K], 4)}
    index = AddressIndex.build(np.arange(len(long_db)), address_db, long_db, address_bits=address_bits, long_bits=bits)
    for radius in RADII:
        results = index.search_batch(address_q, long_q, K, radius)  # default budget
        precision = np.mean([(train_labels[r.ids] == label).mean() for r, label in zip(results, test_labels)])
        out[f"address r={radius}"] = round(float(precision), 4)
        out[f"address r={radius} fallback_rate"] = round(float(np.mean([r.fell_back for r in results])), 4)
        # Without fallback: the ball alone, fewer than 100 results counted as misses.
        hits = [(train_labels[r.ids] == label).sum() for r, label in
                zip(index.search_batch(address_q, long_q, K, radius, fallback=False), test_labels)]
        out[f"address r={radius} no-fallback"] = round(float(np.mean(hits) / K), 4)
    results = index.search_batch(address_q, long_q, K, 3, max_candidates=None)
    out["address r=3 all"] = round(float(np.mean([(train_labels[r.ids] == label).mean() for r, label in zip(results, test_labels)])), 4)
    return out


def indexing_throughput(counter, hasher, address, docs):
    """docs/s of add_documents (raw text -> stored codes) into a fresh database."""
    import semhash.pipelines.indexing as indexing
    from semhash.index.address import load_or_build_address
    from semhash.index.database import Database
    from semhash.index.models import TEXT, save_model, save_vocabulary

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speed.db"
        with Database(path) as db:
            for name, model in ((TEXT.long, hasher), (TEXT.address, address)):
                save_model(db, name, model)
            save_vocabulary(db, counter)
        started = time.perf_counter()
        result = indexing.add_documents(path, docs, batch_size=2000, verbose=False)
        add_seconds = time.perf_counter() - started
        with Database(path, create=False) as db:
            started = time.perf_counter()
            load_or_build_address(db)
            table = time.perf_counter() - started
    # add_documents itself stores both models' codes and builds the FAISS index and the
    # address table; the load_or_build_address above then only reads the table back (what a
    # search process does), so it is reported but not counted as indexing time.
    return {
        "documents": result["added"],
        "add_documents_s": round(add_seconds, 2),
        "address_table_s": round(table, 2),
        "docs_per_s": round(result["added"] / add_seconds, 1),
        "docs_per_s_with_table_reload": round(result["added"] / (add_seconds + table), 1),
        "batch_size": 2000,
        "note": "add_documents (batches of 2,000 as `semhash add`): tokenise, encode with both models, store "
                "documents and codes, build the FAISS index and the address table; address_table_s: reading the "
                "table back afterwards, not counted in docs_per_s",
    }


# ----------------------------------------------------------------------------- report
def targets(result) -> list[dict]:
    sizes = result["sizes"]
    big, small = sizes[-1], sizes[0]
    radius = result["chosen_radius"]
    name = f"address r={radius}"
    m = big["methods"]
    out = [
        {"target": f"{big['documents']:,} docs: address r={radius} p50 >= 50x faster than binary flat",
         "value": round(m["binary flat"]["p50_us"] / m[name]["p50_us"], 1), "threshold": 50},
        {"target": f"{big['documents']:,} docs: address r={radius} p50 >= 1000x faster than TF-IDF cosine",
         "value": round(m["TF-IDF cosine"]["p50_us"] / m[name]["p50_us"], 1), "threshold": 1000},
        {"target": f"{big['documents']:,} docs: recall of exhaustive top-100 >= 0.80",
         "value": m[name]["recall_at_100"], "threshold": 0.8},
        {"target": f"20NG: p@100 of address r={radius} >= 95% of exhaustive Hamming's (alternative to the recall target)",
         "value": round(result["precision_20ng"][name] / result["precision_20ng"]["exhaustive hamming"], 3),
         "threshold": 0.95},
        {"target": f"{big['documents']:,} docs: p@100 of address r={radius} (test posts, same newsgroup) >= 95% of binary flat's "
                   "(the precision clause at scale; informational)",
         "value": round(m[name]["p_at_100"] / m["binary flat"]["p_at_100"], 3), "threshold": 0.95},
        {"target": f"latency grows < 2x from {small['documents']:,} to {big['documents']:,} (p50, address r={radius})",
         "value": round(m[name]["p50_us"] / small["methods"][name]["p50_us"], 2), "threshold": 2.0, "lower_is_better": True},
        {"target": "indexing throughput >= 5,000 docs/s", "value": result["indexing"]["docs_per_s"], "threshold": 5000},
    ]
    for t in out:
        ok = t["value"] < t["threshold"] if t.get("lower_is_better") else t["value"] >= t["threshold"]
        t["status"] = "PASS" if ok else "MISS"
    return out


def markdown(result) -> str:
    lines = [f"# Search speed vs collection size ({'quick' if result['quick'] else 'full'} run)", "",
             f"{result['versions']}. Long code {result['bits']} bits, address {result['address_bits']} bits, k={K}, "
             f"{result['n_latency_queries']} single-query latencies per method (TF-IDF: fewer, see table), "
             "one thread everywhere. Shared machine: timings are noisy; ratios come from one run.", ""]
    for size in result["sizes"]:
        lines += [f"## {size['documents']:,} documents", "",
                  "| method | p50 µs | p99 µs | qps (batch) | build s | memory MB | recall@100 | p@100 | fallback (hash: short) | candidates | x faster than binary flat (p50) | x faster than TF-IDF (p50) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base, sparse = size["methods"]["binary flat"]["p50_us"], size["methods"]["TF-IDF cosine"]["p50_us"]
        for name, m in size["methods"].items():
            lines.append(f"| {name} | {m['p50_us']} | {m['p99_us']} | {m['qps']} | {m['build_s']} | {m['memory_mb']} | "
                         f"{m.get('recall_at_100', '')} | {m.get('p_at_100', '')} | {m.get('fallback_rate', m.get('short_rate', ''))} | {m.get('mean_candidates', '')} | "
                         f"{base / m['p50_us']:.1f} | {sparse / m['p50_us']:.1f} |")
        lines.append("")
        if "budget_selection" in size:
            sel = size["budget_selection"]
            lines += [f"Candidate budget chosen on {sel['queries']} validation queries (fresh perturbed copies of "
                      f"training posts) at {size['documents']:,} documents, radius 2: {sel['rule']}; exhaustive "
                      f"p@100 {sel['exhaustive_p_at_100']}. Chosen: **{sel['chosen']}** (library default: "
                      f"{result.get('default_max_candidates')}).", "",
                      "| budget | p@100 | recall@100 | p50 µs |", "|---:|---:|---:|---:|"]
            lines += [f"| {b} | {v['p_at_100']} | {v['recall_at_100']} | {v['p50_us']} |" for b, v in sel["budgets"].items()]
            lines.append("")
    lines += ["## 20 Newsgroups precision@100 (test posts vs train)", "", "| method | p@100 |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in result["precision_20ng"].items()]
    lines += ["", "## Indexing throughput", "", "```", json.dumps(result["indexing"], indent=2), "```", "",
              f"## Targets (address radius {result['chosen_radius']})", "", "| target | value | status |", "|---|---:|---|"]
    lines += [f"| {t['target']} | {t['value']:.3g} | {t['status']} |" for t in result["targets"]]
    lines += ["", result.get("notes", "")]
    return "\n".join(lines) + "\n"


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["documents"] for s in result["sizes"]]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in result["sizes"][0]["methods"]:
        if (name.startswith("faiss hash") and name != "faiss hash r=2") or "max=" in name:
            continue
        style = "--" if name.startswith("address") else "-"
        axis.plot(sizes, [s["methods"][name]["p50_us"] for s in result["sizes"]], marker="o", linestyle=style, label=name)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("documents in the collection")
    axis.set_ylabel("query latency p50 (µs, one query, 1 thread)")
    axis.set_title(f"Search latency, k={K}: {result['bits']}-bit codes, {result['address_bits']}-bit addresses")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k documents only, fewer queries (CI)")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--address-bits", type=int, default=24)
    parser.add_argument("--models", type=Path, default=TMP / "semhash_speed")
    parser.add_argument("--queries", type=int, help="queries timed one at a time (default 300; quick 50)")
    parser.add_argument("--radius", type=int, default=2, help="radius whose figures are checked against the targets")
    add_out_argument(parser)
    args = parser.parse_args(argv)

    import faiss
    import torch

    from semhash.baselines import LSA, TfidfCosine
    from semhash.vectorize import WordCounter

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000, 1_000_000])
    n_latency = args.queries or (50 if args.quick else 300)

    log("reading 20 Newsgroups")
    train = read_documents(NEWSGROUPS, "20news-bydate-train")
    test = read_documents(NEWSGROUPS, "20news-bydate-test")
    counter = WordCounter(max_words=2000).fit([d.text for d in train])
    _, counts, kept = count_words({"train": [d.text for d in train], "test": [d.text for d in test]}, counter)
    X_train, X_test = counts["train"], counts["test"]
    y_train = np.array([train[i].label for i in kept["train"]])
    y_test = np.array([test[i].label for i in kept["test"]])
    hasher, address = load_models(args.models, args.bits, args.address_bits, X_train, args.quick)

    log("fitting LSA-128 and TF-IDF on train")
    lsa = LSA(n_components=128).fit(X_train)
    tfidf = TfidfCosine().fit(X_train)
    encoders = {"address": address.transform, "long": hasher.transform, "lsa": lsa.transform, "tfidf": tfidf.transform}

    n_max = max(sizes)
    real = X_train[: min(n_max, X_train.shape[0])]
    # Encoded collections are cached beside the models (keyed by size and model files), so a
    # re-run does not spend minutes encoding the same perturbed copies again.
    model_files = sorted(args.models.glob("*"))
    import hashlib

    stamp = hashlib.sha1(repr([(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in model_files
                               if not f.name.startswith("collection")]).encode()).hexdigest()[:12]
    cache = args.models / f"collection{n_max}.{args.bits}.{args.address_bits}.{stamp}{'.quick' if args.quick else ''}.npz"
    data = None
    if cache.exists():
        try:
            import scipy.sparse as sp

            with np.load(cache, allow_pickle=False) as saved:
                data = {key: saved[key] for key in ("address", "long", "lsa", "labels")}
                data["tfidf"] = sp.csr_matrix((saved["tfidf_data"], saved["tfidf_indices"], saved["tfidf_indptr"]),
                                              shape=tuple(saved["tfidf_shape"]))
            log(f"read the encoded collection from {cache}")
        except Exception as err:  # noqa: BLE001
            log(f"cannot read {cache} ({err!r}); encoding again")
            data = None
    if data is None:
        log(f"encoding {n_max:,} documents ({max(0, n_max - X_train.shape[0]):,} perturbed copies)")
        started = time.perf_counter()
        chunks = [real[i : i + 20_000] for i in range(0, real.shape[0], 20_000)]
        extra = n_max - real.shape[0]
        extra_labels: list = []
        data = encode_all(encoders, [*chunks, *(perturbed_counts(X_train, y_train, extra, seed=1, labels_out=extra_labels)
                                                if extra > 0 else [])])
        data["labels"] = np.concatenate([y_train[: real.shape[0]], *extra_labels]).astype(str)
        log(f"encoded in {time.perf_counter() - started:.0f}s")
        for old in args.models.glob(f"collection{n_max}.*"):
            old.unlink()
        tfidf_matrix = data["tfidf"]
        np.savez(cache, address=data["address"], long=data["long"], lsa=data["lsa"], labels=data["labels"],
                 tfidf_data=tfidf_matrix.data, tfidf_indices=tfidf_matrix.indices, tfidf_indptr=tfidf_matrix.indptr,
                 tfidf_shape=np.array(tfidf_matrix.shape))
    data["address_bits"] = args.address_bits

    rng = np.random.default_rng(0)
    pick = rng.choice(X_test.shape[0], size=min(n_latency, X_test.shape[0]), replace=False)
    queries = {name: fn(X_test[pick]) for name, fn in encoders.items()}
    queries["labels"] = y_test[pick]
    # Validation queries for the candidate budget: fresh perturbed copies of training posts.
    validation_labels: list = []
    validation_counts = next(perturbed_counts(X_train, y_train, VALIDATION_QUERIES, seed=2, labels_out=validation_labels))
    queries["validation"] = {"address": address.transform(validation_counts), "long": hasher.transform(validation_counts),
                             "labels": validation_labels[0]}

    result = {"quick": args.quick, "bits": args.bits, "address_bits": args.address_bits, "k": K,
              "n_latency_queries": len(pick), "versions": f"numpy {np.__version__}, faiss {faiss.__version__}",
              "sizes": []}
    for n in sizes:
        log(f"benchmarking {n:,} documents")
        tfidf_queries = min(len(pick), 20 if n >= 1_000_000 else 50 if n >= 100_000 else len(pick))
        result["sizes"].append(bench_size(n, data, queries, len(pick), tfidf_queries, validate=n == max(sizes)))
        log(json.dumps({k: v["p50_us"] for k, v in result["sizes"][-1]["methods"].items()}))
    del data

    log("20 Newsgroups precision@100")
    result["precision_20ng"] = precision_20ng(
        (address.transform(X_train), hasher.transform(X_train)), (address.transform(X_test), hasher.transform(X_test)),
        y_train, y_test, args.address_bits, args.bits)
    log(json.dumps(result["precision_20ng"]))

    log("indexing throughput")
    result["indexing"] = indexing_throughput(counter, hasher, address, test[: 2000 if args.quick else len(test)])
    log(json.dumps(result["indexing"]))

    from semhash.index.address import DEFAULT_MAX_CANDIDATES

    result["default_max_candidates"] = DEFAULT_MAX_CANDIDATES
    result["chosen_radius"] = args.radius
    result["targets"] = targets(result)
    result["notes"] = ("10M documents were not run: the TF-IDF matrix (~6 GB), the LSA vectors (5 GB) and encoding "
                       "10M perturbed documents on one core do not fit this 2-core, 23 GB shared machine.")
    for t in result["targets"]:
        print(f"{t['status']}  {t['target']}: {t['value']:.3g}")
    stem = "search_speed.quick" if args.quick else "search_speed"
    write_results(args.out, stem, result, markdown(result))
    plot(result, args.out / f"{stem}.png")
    log(f"wrote {args.out / stem}.{{json,md,png}}")


if __name__ == "__main__":
    main()
