"""The retrieval benchmark's pieces on tiny synthetic data: re-ranking, aggregation over
seeds, PASS/MISS logic, the written outputs, and evaluate_database on a small database."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch

from semhash.pipelines.benchmark import evaluate_database, evaluate_rerank, format_report, rerank_ranking
from semhash.pipelines.evaluate import RetrievalReport, evaluate_vectors
from semhash.baselines import TfidfCosine
from semhash.codes import pack_bits
from tests.conftest import REPO, TOPIC_WORDS, topic_counts

# The scripts import their shared helpers as ``_common``, as they do when run from benchmarks/.
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))
from _common import aggregate, find, fit_networks  # noqa: E402

TINY = dict(hidden_layers=(32,), finetune_epochs=5, pretrain_epochs=1)


@pytest.fixture(scope="module")
def retrieval():
    spec = importlib.util.spec_from_file_location("retrieval_benchmark", REPO / "benchmarks" / "retrieval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------ rerank
def test_rerank_reorders_only_the_candidates_by_cosine():
    db = np.array([[1, 0], [0, 1], [1, 1], [1, 0.1]], dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    ranking = np.array([[1, 2, 3, 0]])
    out = rerank_ranking(ranking, query, db, candidates=3)
    # Candidates 1, 2, 3 by cosine to (1, 0): 3 (0.995), 2 (0.707), 1 (0); the tail (0) stays.
    assert out.tolist() == [[3, 2, 1, 0]]
    assert ranking.tolist() == [[1, 2, 3, 0]]  # input untouched
    # Ties keep the incoming order.
    same = np.tile(db[:1], (4, 1))
    assert rerank_ranking(ranking, query, same, candidates=4).tolist() == [[1, 2, 3, 0]]


def test_rerank_with_all_candidates_equals_tfidf_ranking(topic_corpus):
    counts, labels = topic_corpus
    db, queries = counts[:300], counts[300:]
    y_db, y_q = labels[:300], labels[300:]
    tfidf = TfidfCosine().fit(db)
    codes = pack_bits(np.zeros((400, 8), dtype=bool))  # all tied: Hamming order = database order
    full = evaluate_rerank("r", codes[300:], codes[:300], 8, tfidf.transform(queries), tfidf.transform(db),
                           y_q, y_db, candidates=300)
    reference = evaluate_vectors("t", tfidf.transform(queries), tfidf.transform(db), y_q, y_db)
    assert full.p_at_100 == pytest.approx(reference.p_at_100, abs=0.01)
    assert full.p_at_10 == pytest.approx(reference.p_at_10, abs=0.02)
    assert len(full.precision) == len(reference.precision) and not math.isnan(full.mean_ap)


# --------------------------------------------------------------------- aggregate
def _row(method, size, p100, seed=0, **extra):
    report = RetrievalReport(method, size, p_at_10=p100 + 0.1, p_at_100=p100, mean_ap=p100 / 2,
                             recall=np.array([0.1, 1.0]), precision=np.array([p100 + 0.2, p100]),
                             seconds_fit=1.0 + seed, seconds_encode=0.1)
    return report.to_dict() | {"seed": seed} | extra


def test_aggregate_means_and_sample_std_over_seeds():
    rows = [_row("semhash", 64, 0.5, 0), _row("semhash", 64, 0.6, 1), _row("semhash", 64, 0.7, 2),
            _row("tfidf", 2000, 0.4)]
    table = aggregate(rows)
    sem = find(table, "semhash", 64)
    assert sem["n_seeds"] == 3 and sem["seeds"] == [0, 1, 2]
    assert sem["p_at_100"] == pytest.approx(0.6) and sem["p_at_100_std"] == pytest.approx(0.1)
    assert sem["seconds_fit"] == pytest.approx(2.0)
    assert sem["precision"] == pytest.approx([0.8, 0.6])
    tf = find(table, "tfidf")
    assert tf["n_seeds"] == 1 and tf["p_at_100_std"] == 0.0
    assert find(table, "lsa", 64) is None


# ----------------------------------------------------------------------- targets
def _table(p):
    """Hand-made aggregated table from {(method, size): p@100}."""
    return aggregate([_row(m, s, v) for (m, s), v in p.items()])


def test_targets_pass_and_miss_on_hand_made_numbers(retrieval):
    figures = {("semhash", 16): 0.30, ("semhash", 32): 0.44, ("semhash", 64): 0.55, ("semhash", 128): 0.50,
               ("semhash+rerank", 128): 0.58, ("semhash-map", 2): 0.25, ("tfidf", 2000): 0.50,
               ("lsa", 2): 0.20, ("lsa", 64): 0.52}
    for m, base in (("lsh", 0.2), ("pcasign", 0.3), ("itq", 0.4), ("sh", 0.35)):
        figures.update({(m, b): base for b in (16, 32, 64, 128)})
    figures[("itq", 128)] = 0.46  # 0.50 / 0.46 = 1.087 < 1.10
    status = {c["comparison"]: c for c in retrieval.comparisons(_table(figures), vocab=10000)}
    assert status["semhash-16 vs best hashing baseline (itq-16)"]["status"] == "info"
    assert status["semhash-32 vs best hashing baseline (itq-32)"]["status"] == "PASS"  # 0.44 / 0.40 = 1.10
    assert status["semhash-64 vs best hashing baseline (itq-64)"]["ratio"] == pytest.approx(0.55 / 0.4)
    assert status["semhash-128 vs best hashing baseline (itq-128)"]["status"] == "MISS"
    assert status["semhash-64 vs TF-IDF"]["status"] == "PASS"
    assert status["semhash-64 vs LSA-64"]["status"] == "PASS"
    assert status["semhash-128+rerank vs TF-IDF"]["status"] == "PASS"  # 1.16
    assert status["semhash 2-D map vs LSA-2"]["status"] == "MISS"  # 0.25 / 0.20 = 1.25 < 1.30
    assert status["semhash-64 p@100 at 10000 words"]["status"] == "PASS"
    # Strict "beats": equal is a miss.
    figures[("tfidf", 2000)] = 0.55
    status = {c["comparison"]: c for c in retrieval.comparisons(_table(figures), vocab=2000)}
    assert status["semhash-64 vs TF-IDF"]["status"] == "MISS"
    assert "semhash-64 p@100 at 10000 words" not in status and "semhash-64 p@100 at 2000 words" not in status


def test_targets_missing_figures_are_not_applicable(retrieval):
    status = {c["comparison"]: c["status"] for c in retrieval.comparisons(_table({("tfidf", 2000): 0.5}), 2000)}
    assert status["semhash-64 vs TF-IDF"] == "N/A"
    assert status["semhash 2-D map vs LSA-2"] == "N/A"


# ------------------------------------------------------------------ network fits
def test_fit_networks_in_worker_processes_match_in_process_fits_and_are_cached(tmp_path):
    counts, _ = topic_counts(n_docs=200, n_words=60, seed=2)
    jobs = [("hasher", 8, 0), ("hasher", 8, 1), ("map", 2, 0)]
    params = {"hasher": TINY, "map": dict(TINY, hidden_layers=(16,))}

    def codes(cache, workers):
        out, calls = {}, []
        fits = fit_networks(jobs, counts, params, cache, workers=workers, meanwhile=lambda: calls.append(1))
        for job, model, seconds, cached in fits:
            assert seconds > 0
            out[job] = (model.transform_real(counts), cached)
        assert calls == [1]  # the meanwhile work runs once: with workers, serial, or all cached
        return out

    parallel = codes(tmp_path / "a", workers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: another thread count sums in another order
    try:
        serial = codes(tmp_path / "b", workers=1)
    finally:
        torch.set_num_threads(threads)
    assert set(parallel) == set(serial) == set(jobs)
    for job in jobs:  # the same seed gives the same network, whichever process fits it
        np.testing.assert_array_equal(parallel[job][0], serial[job][0])
        assert parallel[job][1] is False
    assert not np.array_equal(parallel[jobs[0]][0], parallel[jobs[1]][0])  # seeds differ
    again = codes(tmp_path / "a", workers=2)  # everything is in the cache now: nothing refit
    assert all(cached for _, cached in again.values())
    np.testing.assert_array_equal(again[jobs[2]][0], parallel[jobs[2]][0])
    changed = {"hasher": dict(TINY, finetune_epochs=4), "map": params["map"]}
    refit = {job[0]: cached for job, _, _, cached in fit_networks(jobs[:1] + jobs[2:], counts, changed, tmp_path / "a")}
    assert refit == {"hasher": False, "map": True}  # a changed setting is refit, never reused


# ----------------------------------------------------------------------- outputs
def test_other_vocabularies_never_overwrite_the_default_table(retrieval, tmp_path):
    def names(vocab, quick=False):
        return sorted(p.name for p in retrieval.output_paths(tmp_path, quick, vocab).values())

    assert names([2000]) == ["retrieval.json", "retrieval.md", "retrieval_bits.png", "retrieval_pr.png"]
    assert names([10000]) == ["retrieval.v10000.json", "retrieval.v10000.md",
                              "retrieval_bits.v10000.png", "retrieval_pr.v10000.png"]
    assert names([2000, 10000])[0] == "retrieval.v2000-10000.json"
    assert names([2000], quick=True)[0] == "retrieval.quick.json"


def test_quick_pipeline_writes_json_markdown_and_plots(retrieval, tmp_path):
    counts, labels = topic_counts(n_docs=360, n_words=120, seed=1)
    data = {"train": counts[:240], "test": counts[240:], "train_labels": labels[:240], "test_labels": labels[240:]}
    args = retrieval.parse_args(["--quick", "--bits", "8", "16", "--map-dims", "2", "--lsa-dims", "2", "8",
                                 "--out", str(tmp_path), "--cache", "none"])
    result = {"quick": True, "settings": {"bits": args.bits, "rerank_candidates": 100,
                                          "seed_plan": retrieval.seed_plan(args)},
              "environment": retrieval.environment(), "seconds_total": 1.0, "vocabularies": {}}
    part = result["vocabularies"]["120"] = {"n_train": 240, "n_test": 120, "rows": []}
    neural = {"hasher": TINY, "map": dict(TINY, hidden_layers=(16,))}
    retrieval.run_vocabulary(data, 120, args, neural, part["rows"].append)
    paths = retrieval.write_outputs(result, tmp_path, quick=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "retrieval.quick.json", "retrieval.quick.md", "retrieval_bits.quick.png", "retrieval_pr.quick.png"]
    saved = json.loads(paths["json"].read_text())
    table = saved["vocabularies"]["120"]["table"]
    methods = {(r["method"], r["n_bits_or_dims"]) for r in table}
    expected = {("tfidf", 120), ("lsa", 2), ("lsa", 8), ("semhash", 8), ("semhash", 16), ("semhash+rerank", 16),
                ("semhash-map", 2)} | {(m, b) for m in ("lsh", "pcasign", "itq", "sh") for b in (8, 16)}
    assert methods == expected
    for row in table:
        for key in ("p_at_10", "p_at_100", "p_at_100_std", "mean_ap", "seconds_fit", "seconds_encode", "n_seeds"):
            assert key in row
        assert 0 <= row["p_at_100"] <= 1 and len(row["precision"]) == len(row["recall"]) == 31
    assert find(table, "tfidf")["p_at_100"] > 0.5  # four topics: chance is 0.25
    assert {"environment", "settings"} <= saved.keys() and "torch_threads" in saved["environment"]
    markdown = paths["md"].read_text()
    assert "| TF-IDF cosine |" in markdown and "semhash-16 vs best hashing baseline" in markdown
    assert paths["pr"].stat().st_size > 1000 and paths["bits"].stat().st_size > 1000


def test_seed_plan_records_which_configurations_get_seeds(retrieval):
    default = retrieval.seed_plan(retrieval.parse_args([]))
    assert all(default[f"semhash-{b}"] == [0, 1, 2] for b in (16, 32, 64, 128))
    assert default["semhash-map-2"] == default["semhash-map-10"] == [0, 1, 2]
    plan = retrieval.seed_plan(retrieval.parse_args(["--seeds", "3", "--seeded-bits", "64", "--seeded-map-dims", "2"]))
    assert plan["semhash-64"] == [0, 1, 2] and plan["semhash-16"] == [0]
    assert plan["semhash-map-2"] == [0, 1, 2] and plan["semhash-map-10"] == [0]
    assert plan["lsh-*"] == [0, 1, 2] and plan["pcasign-*"] == [0]
    everything = retrieval.seed_plan(retrieval.parse_args(["--seeds", "2", "--seeded-bits", "all"]))
    assert all(everything[f"semhash-{b}"] == [0, 1] for b in (16, 32, 64, 128))
    assert retrieval.seed_plan(retrieval.parse_args(["--quick"]))["semhash-32"] == [0]
    args = retrieval.parse_args(["--map-params", '{"pretrain_learning_rate": 0.1}'])
    assert args.map_params == {"pretrain_learning_rate": 0.1} and args.hasher_params is None


# ------------------------------------------------------------- evaluate_database
def _write_jsonl(path, n_docs, seed):
    vocab = TOPIC_WORDS
    rng = np.random.default_rng(seed)
    filler = "the report said people think really good time".split()
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n_docs):
            label = list(vocab)[i % 4]
            words = list(rng.choice(vocab[label].split(), 12)) + list(rng.choice(filler, 4))
            handle.write(json.dumps({"id": f"{seed}-{i}", "text": " ".join(words), "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_database(tmp_path_factory):
    from semhash.pipelines.indexing import index_corpus

    folder = tmp_path_factory.mktemp("bench")
    corpus = _write_jsonl(folder / "train.jsonl", 200, seed=0)
    db = folder / "tiny.db"
    index_corpus(corpus, db, n_bits=16, vocabulary_size=200, hasher_params=TINY,
                 map_params=dict(TINY, hidden_layers=(16,)), verbose=False)
    return db, folder


def test_evaluate_database_with_a_held_out_fraction(tiny_database):
    db, _ = tiny_database
    report = evaluate_database(db, 0.25, seed=0)
    assert report["n_queries"] == 50 and report["n_database"] == 150 and report["n_labels"] == 4
    methods = {(m["method"], m["n_bits_or_dims"]) for m in report["methods"]}
    assert methods == {("semhash", 16), ("semhash+rerank", 16), ("semhash-map", 2), ("tfidf", report["vocabulary"]),
                       ("lsa", 16), ("lsa", 2)}
    for m in report["methods"]:
        assert 0 <= m["p_at_10"] <= 1 and 0 <= m["p_at_100"] <= 1 and m["mean_ap"] is not None
    tfidf = next(m for m in report["methods"] if m["method"] == "tfidf")
    assert tfidf["p_at_10"] > 0.9  # topics with disjoint words
    assert report["notes"] and "optimistic" in report["notes"][0]
    json.dumps(report)  # JSON-ready
    text = format_report(report)
    assert "TF-IDF cosine" in text and "optimistic" in text
    again = evaluate_database(db, 0.25, seed=0)
    assert [m["p_at_100"] for m in again["methods"]] == [m["p_at_100"] for m in report["methods"]]


def test_evaluate_database_with_a_query_corpus(tiny_database):
    db, folder = tiny_database
    queries = _write_jsonl(folder / "test.jsonl", 40, seed=1)
    report = evaluate_database(db, queries, rerank_candidates=50, max_queries=30)
    assert report["n_queries"] == 30 and report["n_database"] == 200
    assert report["queries"]["kind"] == "corpus"
    names = [m["method"] for m in report["methods"]]
    assert names[:3] == ["semhash", "semhash+rerank", "semhash-map"] and "tfidf" in names


def test_evaluate_database_refuses_bad_fractions(tiny_database):
    db, _ = tiny_database
    with pytest.raises(ValueError):
        evaluate_database(db, 1.5)
    with pytest.raises(ValueError, match="at least 100"):
        evaluate_database(db, 0.6)


def test_hasher_validation_split_is_carved_from_train_only():
    spec = importlib.util.spec_from_file_location("hasher_validation", REPO / "benchmarks" / "hasher_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, labels = topic_counts(n_docs=2000)
    test, test_labels = topic_counts(n_docs=50, seed=1)
    data = {"train": train, "train_labels": labels, "test": test, "test_labels": test_labels}
    Xq, yq, Xd, yd = module.split_counts(data, "validation")
    assert Xq.shape[0] == module.N_VALIDATION_QUERIES and Xq.shape[0] + Xd.shape[0] == train.shape[0]
    rows = {tuple(r) for r in train.toarray().tolist()}
    assert all(tuple(r) in rows for r in Xq.toarray().tolist())  # queries are train posts
    again = module.split_counts(data, "validation")
    assert (again[0] != Xq).nnz == 0  # the split is fixed
    assert module.split_counts(data, "test")[0] is test


# ----------------------------------------------------------------------- corpora
def _corpora_row(name: str, semhash: float, with_map: bool) -> dict:
    size = {"lsa": 0.3, "lsa_tf": "sublinear", "itq": 0.25, "itq_tf": "raw", "semhash": semhash, "fit_seconds": 1.0,
            "best_epoch": 3, "distinct_codes": 10, "live_bits": 8, "ratio": semhash / 0.3}
    row = {"corpus": name, "notes": [], "n_db": 10, "n_queries": 5, "n_labels": 2, "mean_words": 4.0,
           "tfidf-raw": 0.2, "tfidf-sublinear": 0.21, "sizes": {"8": size}}
    if with_map:
        row["map"] = {"topicmap": 0.6, "lsa2": 0.2, "umap": 0.5, "topicmap_fit_seconds": 2.0}
    return row


def test_corpora_merge_takes_map_rows_from_an_earlier_run(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("corpora_benchmark", REPO / "benchmarks" / "corpora.py")
    corpora = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, corpora)  # its dataclasses look their module up there
    spec.loader.exec_module(corpora)
    settings = {"validation": False, "quick": False, "params": {}, "map_params": {}}
    runs = {"new": [_corpora_row("a", 0.36, False), _corpora_row("b", 0.30, False)],
            "earlier": [_corpora_row("a", 0.33, True)]}
    for name, rows in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"settings": settings, "corpora": rows}))
    out = tmp_path / "out"
    corpora.main(["--merge", str(tmp_path / "new.json"), "--maps-from", str(tmp_path / "earlier.json"), "--out", str(out)])
    merged = json.loads((out / "corpora.json").read_text())["corpora"]
    assert [row["sizes"]["8"]["semhash"] for row in merged] == [0.36, 0.30]  # the new run's codes
    assert merged[0]["map"]["topicmap"] == 0.6 and "earlier.json" in merged[0]["notes"][0]
    assert "map" not in merged[1]  # no earlier map: none invented
    text = (out / "corpora.md").read_text()
    assert "| a | 0.600 | 0.200 | 0.500 | 1.20 | PASS |" in text and "map row from earlier.json" in text
