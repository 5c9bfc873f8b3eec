"""Address lookup (semhash.index.address): Hamming balls, table lookup, re-ranking, fallback, files."""

from __future__ import annotations

import json
import warnings
from math import comb

import numpy as np
import pytest

from semhash.index.address import (
    AddressIndex,
    address_values,
    ball_masks,
    ball_size,
    load_address_index,
    has_compiled_kernel,
    load_or_build_address,
    save_address_index,
)
from semhash.pipelines.indexing import train_address_model
from semhash.index.cache import IndexFileError, sidecar_path
from semhash.codes import hamming_distances, pack_bits, popcount


ENGINES = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not has_compiled_kernel(), reason="numba not installed"))]


def clustered_codes(n=3000, address_bits=12, long_bits=32, n_clusters=40, seed=0):
    """Codes around cluster centres (as a hasher's are), so that balls are non-trivial."""
    rng = np.random.default_rng(seed)
    centre_a = rng.integers(0, 2, (n_clusters, address_bits))
    centre_l = rng.integers(0, 2, (n_clusters, long_bits))
    which = rng.integers(0, n_clusters, n)
    address = pack_bits(centre_a[which] ^ (rng.random((n, address_bits)) < 0.08))
    long = pack_bits(centre_l[which] ^ (rng.random((n, long_bits)) < 0.15))
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 1
    return ids, address, long


def brute_force(ids, address, long, q_address, q_long, radius, k):
    """The documents in the ball, ranked by (long distance, id), from pairwise distances."""
    in_ball = hamming_distances(q_address.reshape(1, -1), address)[0] <= radius
    distances = hamming_distances(q_long.reshape(1, -1), long)[0]
    rows = np.flatnonzero(in_ball)
    order = np.lexsort((ids[rows], distances[rows]))[:k]
    return distances[rows][order], ids[rows][order], in_ball.sum()


@pytest.mark.parametrize("n_bits", [1, 5, 12, 20, 24, 32])
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_ball_holds_exactly_the_addresses_within_radius(n_bits, radius):
    masks = ball_masks(n_bits, radius)
    assert len(masks) == ball_size(n_bits, radius) == sum(comb(n_bits, i) for i in range(min(radius, n_bits) + 1))
    assert len(np.unique(masks)) == len(masks)
    # Every mask flips at most `radius` of the n_bits real bits, never a padding bit.
    width = -(-n_bits // 8)
    padding = (1 << (8 * width - n_bits)) - 1
    assert not (masks.astype(np.int64) & padding).any()
    popcounts = popcount(masks)
    assert popcounts.max() <= radius and (np.diff(popcounts.astype(np.int64)) >= 0).all()  # nearest first
    if n_bits <= 12:  # exhaustive check: the ball is exactly the addresses at distance <= r
        rng = np.random.default_rng(n_bits)
        query_bits = rng.integers(0, 2, (1, n_bits))
        every = pack_bits(((np.arange(2**n_bits)[:, None] >> np.arange(n_bits)[::-1]) & 1).astype(np.uint8))
        query = pack_bits(query_bits)
        near = address_values(every, n_bits)[hamming_distances(query, every)[0] <= radius]
        ball = address_values(query, n_bits)[0] ^ masks
        assert set(ball.tolist()) == set(near.tolist())


def test_address_values_follow_the_packed_bit_order():
    bits = np.zeros((2, 20), dtype=np.uint8)
    bits[0, 0] = 1  # most significant code bit
    bits[1, 19] = 1  # last code bit: integer bit 4 (the 4 low bits are padding)
    assert address_values(pack_bits(bits), 20).tolist() == [1 << 23, 1 << 4]
    with pytest.raises(ValueError):
        address_values(pack_bits(bits), 33)
    with pytest.raises(ValueError):
        address_values(np.zeros((2, 2), np.uint8), 20)  # 20 bits need 3 bytes


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_lookup_returns_exactly_the_stored_documents_in_the_ball(radius):
    ids, address, long = clustered_codes()
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    rng = np.random.default_rng(radius)
    queries = np.r_[rng.integers(0, len(ids), 20)]
    for row in queries:
        q_address = address[row] ^ np.array([rng.integers(0, 256), rng.integers(0, 16) << 4], np.uint8)
        rows = index.lookup(q_address, radius)
        expected = ids[hamming_distances(q_address.reshape(1, -1), address)[0] <= radius]
        assert len(rows) == len(np.unique(rows))
        assert sorted(index.ids[rows].tolist()) == sorted(expected.tolist())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_rerank_order_equals_brute_force_hamming_on_the_candidates(radius, engine):
    ids, address, long = clustered_codes(seed=1)
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    index.engine = engine
    checked = 0
    for row in range(0, 300, 7):
        k = 15
        result = index.search(address[row], long[row], k, radius, fallback=False, max_candidates=None)
        distances, expected_ids, n_ball = brute_force(ids, address, long, address[row], long[row], radius, k)
        assert result.n_candidates == n_ball
        assert not result.fell_back
        assert result.ids.tolist() == expected_ids.tolist()
        assert result.distances.tolist() == distances.tolist()
        checked += n_ball >= k
    assert checked > 10 or radius == 0  # most balls held k documents: the ranking was really tested


@pytest.mark.parametrize("engine", ENGINES)
def test_fallback_to_exhaustive_search_when_the_ball_has_fewer_than_k(engine):
    ids, address, long = clustered_codes(n=500, seed=2)
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    index.engine = engine
    far = ~address[0]  # an address far from the stored ones: its radius-0 ball is (nearly) empty
    far[1] &= 0xF0
    small = index.search(far, long[0], 50, 0, fallback=False)
    assert small.n_candidates < 50 and len(small.ids) == small.n_candidates
    result = index.search(far, long[0], 50, 0)
    assert result.fell_back and result.n_candidates == small.n_candidates and len(result.ids) == 50
    exact = np.sort(hamming_distances(long[0:1], long)[0])[:50]
    assert result.distances.tolist() == exact.tolist()
    # Asking for more than stored returns everything, with or without the ball.
    assert len(index.search(address[0], long[0], 10_000, 3).ids) == 500


@pytest.mark.parametrize("engine", ENGINES)
def test_search_checks_its_arguments(engine):
    ids, address, long = clustered_codes(n=50)
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    index.engine = engine
    with pytest.raises(ValueError):
        index.search(address[0], long[0], 0, 1)
    with pytest.raises(ValueError):
        index.search(address[0], long[0][:2], 5, 1)
    with pytest.raises(ValueError):
        index.search(address[0], long[0], 5, -1)
    empty = AddressIndex.build(np.empty(0, np.int64), np.empty((0, 2), np.uint8), np.empty((0, 4), np.uint8),
                               address_bits=12, long_bits=32)
    assert len(empty.lookup(address[0], 2)) == 0


def test_save_load_round_trip_and_corruption(tmp_path):
    ids, address, long = clustered_codes(n=400)
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    path = tmp_path / "address.table"
    save_address_index(index, path, "fp-1")
    loaded = load_address_index(path, "fp-1")
    for name in ("ids", "addresses", "long_codes", "keys", "offsets"):
        assert np.array_equal(getattr(loaded, name), getattr(index, name))
    assert load_address_index(path, "fp-2") is None  # stale
    assert load_address_index(tmp_path / "missing.table") is None
    result, again = index.search(address[3], long[3], 20, 2), loaded.search(address[3], long[3], 20, 2)
    assert result.ids.tolist() == again.ids.tolist()
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(IndexFileError):
        load_address_index(path, "fp-1")
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["kind"] == "address" and meta["ntotal"] == 400


@pytest.fixture()
def small_database(tmp_path, topic_corpus):
    """A database with a 32-bit hasher and a 12-bit address model over 400 synthetic docs."""
    from semhash.index.database import Database
    from semhash.hasher import SemanticHasher

    counts, labels = topic_corpus
    fast = {"hidden_layers": (32,), "finetune_epochs": 30, "patience": 100, "neighbour_targets": 0}
    hasher = SemanticHasher(n_bits=32, random_state=0, **fast).fit(counts)
    address = train_address_model(counts, n_bits=12, **fast)
    assert address.n_bits == 12
    db = Database(tmp_path / "docs.db")
    ids = db.add_documents([{"external_id": f"d{i}", "text": "", "label": str(label)} for i, label in enumerate(labels)])
    for name, model in (("hasher", hasher), ("address", address)):
        model_id = db.save_model(name, "binary", model.n_bits, config={"class": "SemanticHasher"}, weights=b"-", vocabulary=None)
        db.put_codes(model_id, ids, model.transform(counts))
    yield db, np.asarray(ids), hasher.transform(counts), address.transform(counts), labels
    db.close()


def test_load_or_build_address_end_to_end_and_stale_rebuild(small_database):
    db, ids, long, address, labels = small_database
    table = db.path.with_name(db.path.name + ".faiss") / "address.table"
    index = load_or_build_address(db)
    assert table.is_file() and len(index) == len(ids)
    assert (index.address_bits, index.long_bits) == (12, 32)
    # Same codes: the saved table is used as is.
    mtime = table.stat().st_mtime_ns
    again = load_or_build_address(db)
    assert table.stat().st_mtime_ns == mtime and np.array_equal(again.ids, index.ids)
    # A query finds its own document first, and mostly documents of its topic.
    precision = []
    for row in range(0, len(ids), 4):
        result = index.search(address[row], long[row], 10, 2)
        assert result.distances[0] == 0  # itself, or a document with the same code
        precision.append((labels[np.searchsorted(ids, result.ids)] == labels[row]).mean())
    assert np.mean(precision) > 0.4  # 4 topics: chance is 0.25
    # Changing codes (as `semhash add` does) makes the table stale: it is rebuilt.
    address_id = db.get_model("address", with_weights=False).id
    new_ids = db.add_documents([{"external_id": "new", "text": ""}])
    db.put_codes(db.get_model("hasher", with_weights=False).id, new_ids, long[:1])
    assert len(load_or_build_address(db)) == len(ids)  # no address code yet: left out
    db.put_codes(address_id, new_ids, address[:1])
    rebuilt = load_or_build_address(db)
    assert len(rebuilt) == len(ids) + 1 and new_ids[0] in rebuilt.ids.tolist()
    # A corrupt file warns and is rebuilt.
    table.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(load_or_build_address(db)) == len(ids) + 1
    assert any("rebuilding" in str(w.message) for w in caught)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cap", [1, 50, 137])
def test_max_candidates_visits_the_nearest_addresses_first_and_stops(engine, cap):
    ids, address, long = clustered_codes(n=3000, seed=3)
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    index.engine = engine
    distances_all = hamming_distances(long, long)
    for row in range(0, 300, 11):
        full = index.search(address[row], long[row], 10, 3, fallback=False, max_candidates=None)
        capped = index.search(address[row], long[row], 10, 3, fallback=False, max_candidates=cap)
        # Expected: the ball's addresses nearest first (ties in mask order), each block in
        # id order, the visit cut at exactly `cap` documents.
        rows = []
        for mask in ball_masks(12, 3):
            value = address_values(address[row : row + 1], 12)[0] ^ mask
            block = np.flatnonzero(address_values(address, 12) == value)
            rows += block[np.argsort(ids[block])].tolist()
        rows = np.array(rows[: max(cap, 10)], dtype=np.int64)  # a budget below k counts as k
        assert capped.n_candidates == len(rows) == min(max(cap, 10), full.n_candidates)
        order = np.lexsort((ids[rows], distances_all[row, rows]))[:10]
        assert capped.ids.tolist() == ids[rows][order].tolist()
        assert capped.distances.tolist() == distances_all[row, rows][order].tolist()
        if full.n_candidates <= max(cap, 10):
            assert capped.ids.tolist() == full.ids.tolist()
    with pytest.raises(ValueError):
        index.search(address[0], long[0], 10, 2, max_candidates=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_default_budget_bounds_the_candidates_and_batch_equals_single(engine):
    from semhash.index.address import DEFAULT_MAX_CANDIDATES

    ids, address, long = clustered_codes(n=6000, n_clusters=5, seed=4)
    index = AddressIndex.build(ids, address, long, address_bits=12, long_bits=32)
    index.engine = engine
    queries = range(0, 6000, 37)
    singles = [index.search(address[q], long[q], 20, 2) for q in queries]
    assert max(r.n_candidates for r in singles) == DEFAULT_MAX_CANDIDATES  # crowded: the budget binds
    far = np.tile(~address[0], (3, 1))  # small balls: fall back to exhaustive, in the batch too
    far[:, 1] &= 0xF0
    q_address = np.concatenate([address[list(queries)], far])
    q_long = np.concatenate([long[list(queries)], long[:3]])
    singles += [index.search(far[i], long[i], 20, 0) for i in range(3)]
    batch = index.search_batch(q_address[:-3], q_long[:-3], 20, 2) + index.search_batch(far, long[:3], 20, 0)
    assert [r.fell_back for r in batch] == [r.fell_back for r in singles] and batch[-1].fell_back
    for one, many in zip(singles, batch):
        assert one.n_candidates == many.n_candidates
        assert one.ids.tolist() == many.ids.tolist() and one.distances.tolist() == many.distances.tolist()
        assert one.ids.dtype == many.ids.dtype == np.int64 and one.distances.dtype == many.distances.dtype == np.int32


@pytest.mark.skipif(not has_compiled_kernel(), reason="numba not installed")
def test_compiled_and_numpy_engines_agree_with_64_bit_codes():
    ids, address, long = clustered_codes(n=4000, address_bits=20, long_bits=64, seed=5)
    index = AddressIndex.build(ids, address, long, address_bits=20, long_bits=64)
    for row in range(0, 4000, 97):
        for radius, cap in ((1, None), (2, None), (2, 40), (3, 40)):
            index.engine = "numba"
            fast = index.search(address[row], long[row], 30, radius, max_candidates=cap)
            index.engine = "numpy"
            slow = index.search(address[row], long[row], 30, radius, max_candidates=cap)
            assert fast.n_candidates == slow.n_candidates and fast.fell_back == slow.fell_back
            assert fast.ids.tolist() == slow.ids.tolist() and fast.distances.tolist() == slow.distances.tolist()


@pytest.mark.slow
def test_address_mode_end_to_end_through_index_add_search_and_cli(newsgroups_subset, tmp_path):
    from click.testing import CliRunner

    from semhash.cli import main
    from semhash.index.search import QueryError, SearchEngine
    from semhash.pipelines.corpus import read_corpus
    from semhash.pipelines.indexing import add_documents, index_corpus

    fast = dict(hidden_layers=(200, 100), finetune_epochs=15, pretrain_epochs=2)
    path = tmp_path / "news.db"
    report = index_corpus(newsgroups_subset["train"], path, n_bits=32, address_bits=16, map_dims=0,
                          hasher_params=fast, verbose=False)
    assert "address" in report.models
    table = tmp_path / "news.db.faiss" / "address.table"
    assert table.is_file()
    test_docs = read_corpus(newsgroups_subset["test"])
    engine = SearchEngine(path)
    try:
        same = exact = 0
        for doc in test_docs[::10]:
            exhaustive = engine.search(doc.text, 10)
            address = engine.search(doc.text, 10, mode="address", radius=3)
            assert len(address) == 10
            # The i-th nearest in the ball is never nearer than the true i-th nearest.
            assert all(a.distance >= e.distance for a, e in zip(address, exhaustive))
            same += np.mean([hit.label == doc.label for hit in address])
            exact += np.mean([hit.label == doc.label for hit in exhaustive])
        # 4 groups: chance is 0.25. Small models, 20 queries: loose bounds.
        assert same / len(test_docs[::10]) > 0.35 and same >= exact - 0.15 * len(test_docs[::10])
        hits = engine.similar(1, 5, mode="address", radius=2, rerank=True, candidates=20)
        assert len(hits) == 5 and all(hit.id != 1 for hit in hits)
        with pytest.raises(QueryError):
            engine.search("space shuttle", 5, mode="address", space="euclidean")
        with pytest.raises(QueryError):
            engine.search("space shuttle", 5, mode="nearby")
    finally:
        engine.db.close()
    # Adding documents encodes their address codes; the table is rebuilt with them.
    before = table.stat().st_mtime_ns
    add_documents(path, test_docs[:40], verbose=False)
    assert table.stat().st_mtime_ns != before
    from semhash.index.database import Database

    with Database(path, create=False) as db:
        assert len(load_or_build_address(db)) == 800 + 40
    result = CliRunner().invoke(main, ["search", "hockey playoffs goalie", "--db", str(path), "--mode", "address",
                                       "--radius", "2", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 3

