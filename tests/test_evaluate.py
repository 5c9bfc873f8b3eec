"""Retrieval metrics and rankings on small hand-made cases with known answers."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from semhash.pipelines import evaluate
from semhash.pipelines.evaluate import (
    RetrievalReport,
    evaluate_codes,
    evaluate_vectors,
    mean_average_precision,
    precision_at_k,
    precision_recall_curve,
    rank_by_hamming,
    rank_by_score,
)
from semhash.codes import hamming_distances, pack_bits

# One query (label 0) against six database documents; the ranking retrieves
# relevant, irrelevant, relevant, irrelevant, irrelevant, relevant.
DB_LABELS = np.array([0, 1, 0, 1, 1, 0])
QUERY_LABELS = np.array([0])
RANKING = np.array([[0, 1, 2, 3, 4, 5]])


def test_precision_at_k_exact():
    assert precision_at_k(RANKING, QUERY_LABELS, DB_LABELS, ks=(1, 2, 3, 6)) == {
        1: 1.0,
        2: 0.5,
        3: pytest.approx(2 / 3),
        6: 0.5,
    }


def test_precision_at_k_averages_queries():
    ranking = np.array([[0, 1], [1, 0]])
    result = precision_at_k(ranking, np.array([0, 0]), np.array([0, 1]), ks=(1, 2))
    assert result == {1: 0.5, 2: 0.5}


def test_precision_at_k_needs_enough_columns():
    with pytest.raises(ValueError):
        precision_at_k(RANKING[:, :3], QUERY_LABELS, DB_LABELS, ks=(10,))


def test_mean_average_precision_exact():
    # hits at ranks 1, 3, 6: AP = (1/1 + 2/3 + 3/6) / 3
    expected = (1 + 2 / 3 + 1 / 2) / 3
    assert mean_average_precision(RANKING, QUERY_LABELS, DB_LABELS) == pytest.approx(expected)
    # A second query with a perfect ranking has AP 1.
    ranking = np.vstack([RANKING, [[1, 3, 4, 0, 2, 5]]])
    value = mean_average_precision(ranking, np.array([0, 1]), DB_LABELS)
    assert value == pytest.approx((expected + 1) / 2)


def test_mean_average_precision_needs_full_ranking():
    with pytest.raises(ValueError):
        mean_average_precision(RANKING[:, :4], QUERY_LABELS, DB_LABELS)


def test_precision_recall_curve_hand_case():
    levels = np.array([0.1, 1 / 3, 0.5, 2 / 3, 1.0])
    recall, precision = precision_recall_curve(RANKING, QUERY_LABELS, DB_LABELS, levels)
    np.testing.assert_array_equal(recall, levels)
    # hit precisions 1, 2/3, 1/2 at recall 1/3, 2/3, 1; interpolation takes the max beyond
    np.testing.assert_allclose(precision, [1, 1, 2 / 3, 2 / 3, 0.5])


def test_precision_recall_curve_shape_and_endpoints():
    rng = np.random.default_rng(0)
    db_labels = rng.integers(0, 4, size=200)
    query_labels = rng.integers(0, 4, size=30)
    ranking = np.array([rng.permutation(200) for _ in query_labels])
    recall, precision = precision_recall_curve(ranking, query_labels, db_labels)
    assert recall.shape == precision.shape == (31,)
    assert recall[0] == pytest.approx(1e-3) and recall[-1] == pytest.approx(1.0)
    assert np.all(np.diff(precision) <= 1e-12)  # interpolated: non-increasing
    # at recall 1, precision is (relevant count) / (rank of the last relevant one)
    relevant = db_labels[ranking] == query_labels[:, None]
    last = relevant.shape[1] - np.argmax(relevant[:, ::-1], axis=1)
    assert precision[-1] == pytest.approx(np.mean(relevant.sum(axis=1) / last))
    # a perfect ranking has precision 1 everywhere
    perfect = np.argsort(db_labels[None, :] != query_labels[:, None], axis=1, kind="stable")
    np.testing.assert_allclose(precision_recall_curve(perfect, query_labels, db_labels)[1], 1.0)


def _random_codes(rng, n, n_bits):
    return pack_bits(rng.integers(0, 2, size=(n, n_bits)))


@pytest.mark.parametrize("n_bits", [5, 8, 20, 64, 130, 300])
@pytest.mark.parametrize("top", [None, 1, 17, 150])
def test_rank_by_hamming_matches_brute_force_with_stable_ties(n_bits, top):
    rng = np.random.default_rng(n_bits)
    queries, database = _random_codes(rng, 13, n_bits), _random_codes(rng, 150, n_bits)
    # Bit by bit, independent of the popcount both hamming_distances and rank_by_hamming use.
    bits = np.unpackbits(queries, axis=1)[:, None, :] != np.unpackbits(database, axis=1)[None, :, :]
    assert np.array_equal(bits.sum(axis=2), hamming_distances(queries, database))
    expected = np.argsort(bits.sum(axis=2), axis=1, kind="stable")
    ranking = rank_by_hamming(queries, database, n_bits, top=top)
    assert ranking.dtype == np.int32
    np.testing.assert_array_equal(ranking, expected[:, : top or 150])


def test_rank_by_hamming_batches_agree(monkeypatch):
    rng = np.random.default_rng(1)
    queries, database = _random_codes(rng, 40, 16), _random_codes(rng, 90, 16)
    whole = rank_by_hamming(queries, database, 16)
    monkeypatch.setattr(evaluate, "_PAIRS_PER_BATCH", 200)  # 2 queries a batch
    np.testing.assert_array_equal(rank_by_hamming(queries, database, 16), whole)


def test_rank_by_hamming_rejects_wrong_width():
    codes = np.zeros((3, 2), dtype=np.uint8)
    with pytest.raises(ValueError):
        rank_by_hamming(codes, codes, n_bits=32)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("top", [None, 7])
def test_rank_by_score_matches_brute_force(sparse, metric, top):
    rng = np.random.default_rng(2)
    queries = rng.random((9, 6)).astype(np.float32)
    database = rng.random((40, 6)).astype(np.float32)
    if metric == "cosine":
        unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        unit_d = database / np.linalg.norm(database, axis=1, keepdims=True)
        costs = -(unit_q @ unit_d.T)
    else:
        costs = ((queries[:, None, :] - database[None, :, :]) ** 2).sum(axis=2)
    expected = np.argsort(costs, axis=1, kind="stable")[:, : top or 40]
    wrap = sp.csr_matrix if sparse else np.asarray
    ranking = rank_by_score(wrap(queries), wrap(database), metric=metric, top=top)
    np.testing.assert_array_equal(ranking, expected)


def test_rank_by_score_breaks_ties_by_database_order():
    database = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    ranking = rank_by_score(np.array([[1.0, 0.0]]), database, metric="cosine")
    np.testing.assert_array_equal(ranking, [[0, 2, 3, 1]])


def test_evaluate_codes_and_vectors_reports():
    rng = np.random.default_rng(3)
    db_labels = np.repeat([0, 1, 2], 120)  # over 100 of each, so p@100 can be 1
    query_labels = rng.integers(0, 3, size=25)
    # codes that spell the label, plus noise in the other bits: retrieval is near perfect
    def codes_for(labels):
        bits = rng.integers(0, 2, size=(len(labels), 16))
        bits[:, :12] = np.repeat(np.eye(3, dtype=int)[labels], 4, axis=1)
        return pack_bits(bits)

    query_codes, db_codes = codes_for(query_labels), codes_for(db_labels)
    report = evaluate_codes("toy", query_codes, db_codes, 16, query_labels, db_labels)
    assert report.p_at_10 == 1.0 and report.p_at_100 == 1.0 and report.mean_ap == 1.0
    assert report.precision.shape == report.recall.shape == (31,)
    quick = evaluate_codes("toy", query_codes, db_codes, 16, query_labels, db_labels, full=False)
    assert (quick.p_at_10, quick.p_at_100) == (report.p_at_10, report.p_at_100)
    assert math.isnan(quick.mean_ap) and quick.precision.size == 0

    as_floats = np.unpackbits(query_codes, axis=1), np.unpackbits(db_codes, axis=1)
    vector_report = evaluate_vectors(
        "toy", *as_floats, query_labels, db_labels, metric="euclidean"
    )
    assert vector_report.mean_ap == 1.0 and vector_report.n_bits_or_dims == 16

    as_dict = quick.to_dict()
    assert as_dict["mean_ap"] is None and as_dict["recall"] == []
    assert isinstance(report.to_dict()["precision"], list)


def test_report_to_dict_round_trips_numbers():
    report = RetrievalReport("m", 8, 0.5, 0.25, 0.1, np.array([0.5, 1.0]), np.array([0.3, 0.2]))
    report.seconds_fit = 1.5
    as_dict = report.to_dict()
    assert as_dict["recall"] == [0.5, 1.0] and as_dict["seconds_fit"] == 1.5
    assert as_dict["seconds_encode"] is None


# ---------------------------------------------------------------------------- several labels

# Database label sets, and two queries: q0 has labels a and c, q1 has b.
ML_DB = [("a",), ("b",), ("a", "b"), ("c",), ("b", "c"), ()]
ML_QUERIES = [("a", "c"), ["b"]]
ML_RANKING = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
# relevant = shares a label: q0 -> 1 0 1 1 1 0, q1 -> 0 1 0 1 1 0


def test_multi_label_relevance_is_sharing_a_label():
    relevant = evaluate._relevance(ML_RANKING, ML_QUERIES, ML_DB)
    np.testing.assert_array_equal(relevant, [[1, 0, 1, 1, 1, 0], [0, 1, 0, 1, 1, 0]])
    # a bare label is a set of one; an empty set (or None) is relevant to nothing
    mixed = evaluate._relevance(ML_RANKING[:1], ["b"], ML_DB)
    np.testing.assert_array_equal(mixed, [[0, 1, 1, 0, 1, 0]])
    assert not evaluate._relevance(ML_RANKING[:1], [()], ML_DB).any()
    assert not evaluate._relevance(ML_RANKING[:1], [None], ML_DB).any()


def test_multi_label_metrics_exact():
    p = precision_at_k(ML_RANKING, ML_QUERIES, ML_DB, ks=(1, 2, 3, 6))
    assert p == {1: 0.5, 2: 0.5, 3: pytest.approx((2 / 3 + 1 / 3) / 2), 6: pytest.approx(4 / 6 / 2 + 3 / 6 / 2)}
    # q0 hits at ranks 1, 3, 4, 5 (of 4 relevant); q1 at ranks 2, 4, 5 (of 3 relevant)
    ap0, ap1 = (1 + 2 / 3 + 3 / 4 + 4 / 5) / 4, (1 / 2 + 2 / 4 + 3 / 5) / 3
    assert mean_average_precision(ML_RANKING, ML_QUERIES, ML_DB) == pytest.approx((ap0 + ap1) / 2)
    # recall counts every database document that shares a label with the query
    _, precision = precision_recall_curve(ML_RANKING[:1], ML_QUERIES[:1], ML_DB, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(precision, [1, 4 / 5, 4 / 5])


def test_many_labels_use_several_words_and_match_brute_force():
    rng = np.random.default_rng(4)
    names = [f"label{i}" for i in range(150)]
    def draw(n):
        return [tuple(rng.choice(names, rng.integers(0, 4), replace=False)) for _ in range(n)]
    db_sets, query_sets = draw(120), draw(9)
    ranking = np.array([rng.permutation(120) for _ in query_sets])
    expected = [[bool(set(q) & set(db_sets[j])) for j in row] for q, row in zip(query_sets, ranking)]
    np.testing.assert_array_equal(evaluate._relevance(ranking, query_sets, db_sets), expected)
    n_labels = len({label for labels in db_sets + query_sets for label in labels})
    masks = evaluate._label_keys(query_sets, db_sets)[1]
    assert n_labels > 64 and masks.words.shape == (120, -(-n_labels // 64)) and masks.words.dtype == np.uint64


def test_single_labels_give_identical_figures_in_every_form():
    rng = np.random.default_rng(5)
    db_labels, query_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 20)
    query_codes, db_codes = _random_codes(rng, 20, 16), _random_codes(rng, 300, 16)
    plain = evaluate_codes("toy", query_codes, db_codes, 16, query_labels, db_labels)
    as_sets = evaluate_codes("toy", query_codes, db_codes, 16, [(x,) for x in query_labels], [[x] for x in db_labels])
    assert plain.to_dict() == as_sets.to_dict()
    # the single-label path compares the labels themselves: no encoding
    keys = evaluate._label_keys(query_labels, list(db_labels))
    assert all(isinstance(k, np.ndarray) for k in keys)
