"""Tests for semhash.index.recall: content-addressable document recall with a Willshaw memory."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from semhash.index.database import Database
from semhash.index.recall import (
    CodeMemory,
    DocumentMemory,
    RecallHit,
    address_units,
    choose_block_bits,
    default_options,
    default_recall_path,
    load_memory,
)
from semhash.index.search import QueryError
from semhash.index.models import TEXT
from semhash.pipelines.indexing import index_corpus
from semhash.codes import hamming_distances, pack_bits, to_hex, unpack_bits

TINY = dict(hidden_layers=(64,), finetune_epochs=10, pretrain_epochs=1)


@pytest.fixture(scope="module")
def tiny_db(newsgroups_subset, tmp_path_factory):
    path = tmp_path_factory.mktemp("recall") / "news.db"
    index_corpus(newsgroups_subset["train"], path, n_bits=32, map_dims=0, hasher_params=TINY, verbose=False)
    return path


@pytest.fixture
def db_copy(tiny_db, tmp_path):
    """A private copy of the tiny database (no cache files), for tests that change it."""
    path = tmp_path / "copy.db"
    shutil.copy(tiny_db, path)
    return path


@pytest.fixture(scope="module")
def stored(tiny_db):
    with Database(tiny_db, create=False) as db:
        return db.get_codes(db.get_model(TEXT.long).id)


def flip(code: np.ndarray, positions, n_bits: int) -> np.ndarray:
    bits = unpack_bits(code.reshape(1, -1), n_bits).copy()
    bits[0, list(positions)] ^= 1
    return pack_bits(bits)


# --------------------------------------------------------------------------- CodeMemory


def random_memory(n_docs=500, n_bits=64, block_bits=4, seed=0):
    rng = np.random.default_rng(seed)
    codes = pack_bits(rng.integers(0, 2, (n_docs, n_bits)))
    ids = np.arange(1, n_docs + 1) * 7  # ids need not be rows
    return CodeMemory(n_bits, block_bits).fit(ids, codes), ids, codes


def test_code_memory_recalls_every_stored_code_with_full_confidence():
    memory, ids, codes = random_memory()
    rows, scores, ties = memory.recall(codes, k=1)
    np.testing.assert_array_equal(memory.ids[rows[:, 0]], ids)
    np.testing.assert_array_equal(memory.confidence(scores[:, 0]), 1.0)
    assert (ties == 1).all()


def test_code_memory_recalls_from_flipped_bits_and_ranks_k():
    memory, ids, codes = random_memory()
    rng = np.random.default_rng(1)
    damaged = np.concatenate([flip(code, rng.choice(64, 4, replace=False), 64) for code in codes])
    rows, scores, _ = memory.recall(damaged, k=5)
    assert (memory.ids[rows[:, 0]] == ids).mean() == 1.0
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    assert (memory.confidence(scores[:, 0]) >= 0.75).all()  # at most 4 of 16 blocks hit


def test_code_memory_stats_report_load_and_capacity():
    memory, ids, _ = random_memory(n_docs=1000)
    stats = memory.stats()
    assert stats["documents"] == 1000 and stats["input_active"] == 16 and stats["input_units"] == 256
    assert stats["expected_capacity"] >= 32 * 1000  # the default capacity ratio
    assert 0 < stats["load"] < 0.5
    # Random codes: the measured load follows the Willshaw formula closely.
    assert stats["load"] == pytest.approx(stats["expected_load_random_codes"], rel=0.1)


def test_code_memory_round_trips_through_bytes():
    memory, _, codes = random_memory(n_docs=100)
    again = CodeMemory.from_bytes(memory.to_bytes())
    np.testing.assert_array_equal(again.recall(codes, 3)[0], memory.recall(codes, 3)[0])
    assert again.config() == memory.config()


def test_default_options_follow_the_validation_by_code_length():
    assert default_options(128) == {"block_bits": 1, "units_per_word": 1}
    assert default_options(256) == {"block_bits": 2, "units_per_word": 2}
    assert default_options(256, words=False) == {"block_bits": 2}
    assert default_options(30)["block_bits"] == 1


def test_sizing_helpers():
    assert choose_block_bits(128, 8) == 8 and choose_block_bits(30, 4) == 3 and choose_block_bits(7, 4) == 1
    n_addr = address_units(10_000, n_inputs=4096, m_in=16, m_addr=8, capacity_ratio=10)
    assert n_addr % 64 == 0
    assert np.log(2) * 4096 * n_addr / (16 * 8) >= 10 * 10_000
    with pytest.raises(ValueError):
        CodeMemory(64, block_bits=5)  # does not divide the code


# --------------------------------------------------------------------------- DocumentMemory


def test_own_code_recalls_the_document_with_confidence_one(tiny_db, stored):
    ids, codes = stored
    memory = DocumentMemory(tiny_db)
    same = hamming_distances(codes, codes) == 0
    for row in np.random.default_rng(0).choice(len(ids), 25, replace=False):
        n_same = int(same[row].sum())
        hits = memory.recall_code(to_hex(codes[row]), k=n_same)
        assert isinstance(hits[0], RecallHit)
        assert hits[0].confidence == 1.0 and hits[0].hamming_distance == 0
        # Documents with an identical code cannot be told apart; the document is among them.
        assert int(ids[row]) in [hit.id for hit in hits if hit.confidence == 1.0]


def test_code_with_flipped_bits_recalls_the_document(db_copy):
    # The tiny model gives few distinct codes (many posts share one), so this test stores
    # random, well separated codes in a copy of the database through put_codes.
    rng = np.random.default_rng(2)
    with Database(db_copy, create=False) as db:
        model_id = db.get_model(TEXT.long).id
        ids, _ = db.get_codes(model_id)
        codes = pack_bits(rng.integers(0, 2, (len(ids), 32)))
        db.put_codes(model_id, ids, codes)
    memory = DocumentMemory(db_copy)
    # Blocks of 1 bit (the default): documents at least 5 bits from every other one stay
    # the best match after 2 flipped bits (30 shared units against <= 29).
    blocks = memory.memory.code_map.encode(codes)
    differing = (blocks[:, None, :] != blocks[None, :, :]).sum(axis=2)
    np.fill_diagonal(differing, 99)
    candidates = np.flatnonzero(differing.min(axis=1) >= 5)
    assert len(candidates) >= 20 and memory.memory.block_bits == 1
    for row in candidates[:30]:
        damaged = flip(codes[row], rng.choice(32, 2, replace=False), 32)
        hit = memory.recall_code(to_hex(damaged[0]), k=1)[0]
        assert hit.id == ids[row]
        assert hit.hamming_distance == 2 and hit.confidence == 30 / 32


def test_half_of_a_documents_words_recalls_it_where_its_code_cannot(tiny_db, stored, newsgroups_subset):
    # The tiny model gives few distinct codes, so a fragment's code alone lands among
    # many posts; the word units single out the post the fragment comes from.
    ids, codes = stored
    memory = DocumentMemory(tiny_db)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(ids), 20, replace=False)
    with Database(tiny_db, create=False) as db:
        docs = {doc.id: doc for doc in db.get_documents([int(ids[r]) for r in rows])}
    recalled, nearest_code = 0, 0.0
    for row in rows:
        words = docs[int(ids[row])].text.split()
        fragment = " ".join(words[i] for i in np.sort(rng.choice(len(words), len(words) // 2, replace=False)))
        hit = memory.recall_text(fragment, k=1)[0]
        recalled += hit.id == ids[row]
        # Hamming search with the fragment's code: the right post is at best one of the ties.
        distances = hamming_distances(memory.engine.encode(fragment), codes)[0]
        if distances[row] == distances.min():
            nearest_code += 1 / (distances == distances.min()).sum()
    assert recalled >= 15 and recalled >= nearest_code + 6


def test_code_memory_with_word_units():
    rng = np.random.default_rng(3)
    n_docs, n_words = 60, 300
    codes = pack_bits(np.repeat(rng.integers(0, 2, (6, 32)), 10, axis=0))  # 6 codes, 10 posts each
    words = (rng.random((n_docs, n_words)) < 0.08).astype(np.float32)
    memory = CodeMemory(32, block_bits=1, n_words=n_words).fit(np.arange(n_docs), codes, words)
    half = words * (rng.random(words.shape) < 0.5)
    rows, scores, ties = memory.recall(codes, k=1, words=half)
    assert (rows[:, 0] == np.arange(n_docs)).mean() >= 0.95
    assert np.allclose(memory.confidence(scores, codes, half)[rows[:, 0] == np.arange(n_docs)], 1.0)
    rows, _, ties = memory.recall(codes, k=1)  # the code alone: ten posts tie
    assert (ties == 10).all()
    with pytest.raises(ValueError, match="word counts"):
        CodeMemory(32, n_words=n_words).fit(np.arange(n_docs), codes)
    with pytest.raises(ValueError, match="shape"):
        memory.recall(codes[:2], words=words[:2, :10])
    with pytest.raises(ValueError, match="no word units"):
        CodeMemory(32).fit(np.arange(n_docs), codes).recall(codes[:1], words=words[:1])
    again = CodeMemory.from_bytes(memory.to_bytes())
    assert again.n_words == n_words and again.stats() == memory.stats()
    # Three units a word: a word weighs as much as three code bits in the score.
    heavy = CodeMemory(32, block_bits=1, n_words=n_words, units_per_word=3).fit(np.arange(n_docs), codes, words)
    question = heavy.questions(codes[:1], words[:1])[0]
    assert len(question) == 32 + 3 * int(words[0].sum()) and heavy.n_input_units == 64 + 3 * n_words
    _, scores, _ = heavy.recall(codes[:1], k=1, words=words[:1])
    assert scores[0, 0] == len(question)
    assert CodeMemory.from_bytes(heavy.to_bytes()).units_per_word == 3


def test_full_text_recalls_the_document(tiny_db, stored):
    ids, codes = stored
    memory = DocumentMemory(tiny_db)
    with Database(tiny_db, create=False) as db:
        doc = db.get_documents([int(ids[3])])[0]
    n_same = int((hamming_distances(codes[3:4], codes) == 0).sum())
    hits = memory.recall_text(doc.text, k=n_same + 5)
    assert hits[0].confidence == 1.0 and hits[0].hamming_distance == 0
    assert doc.id in [hit.id for hit in hits if hit.confidence == 1.0]
    assert set(hits[0].to_dict()) >= {"id", "external_id", "title", "label", "confidence", "snippet"}
    json.dumps([hit.to_dict() for hit in hits])


def test_stats_of_a_database_memory(tiny_db):
    stats = DocumentMemory(tiny_db).stats()
    assert stats["documents"] == 800 and stats["n_bits"] == 32 and stats["block_bits"] == 1
    with Database(tiny_db, create=False) as db:
        n_words = len(db.get_vocabulary()["words"])
    assert stats["units_per_word"] == 1 and stats["word_units"] == n_words
    assert stats["input_units"] == 64 + stats["word_units"] and stats["input_active"] > 32
    assert stats["capacity_per_document"] >= 32 and 0 < stats["load"] < 0.5


# --------------------------------------------------------------------------- cache


def test_memory_is_cached_next_to_the_database_and_reused(db_copy, monkeypatch):
    DocumentMemory(db_copy)
    path = db_copy.with_name(db_copy.name + ".faiss") / "recall.npz"
    assert path.is_file() and path.with_name("recall.npz.json").is_file()
    with Database(db_copy, create=False) as db:
        assert default_recall_path(db) == path

    def no_fit(*args, **kwargs):
        raise AssertionError("rebuilt although the cache is up to date")

    monkeypatch.setattr(CodeMemory, "fit", no_fit)
    assert DocumentMemory(db_copy).stats()["documents"] == 800


def test_memory_is_rebuilt_when_codes_change(db_copy):
    DocumentMemory(db_copy)
    path = db_copy.with_name(db_copy.name + ".faiss") / "recall.npz"
    before = json.loads(path.with_name("recall.npz.json").read_text())["fingerprint"]
    new_code = np.array([[0xDE, 0xAD, 0xBE, 0xEF]], dtype=np.uint8)
    with Database(db_copy, create=False) as db:
        db.put_codes(db.get_model(TEXT.long).id, [5], new_code)
    memory = DocumentMemory(db_copy)
    after = json.loads(path.with_name("recall.npz.json").read_text())["fingerprint"]
    assert after != before
    hit = memory.recall_code("deadbeef")[0]
    assert hit.id == 5 and hit.confidence == 1.0


def test_memory_is_rebuilt_for_another_configuration_or_a_damaged_file(db_copy):
    DocumentMemory(db_copy)
    path = db_copy.with_name(db_copy.name + ".faiss") / "recall.npz"
    assert DocumentMemory(db_copy, block_bits=8).stats()["block_bits"] == 8
    with Database(db_copy, create=False) as db:
        fingerprint = db.code_fingerprint(db.get_model(TEXT.long).id)
    assert load_memory(path, fingerprint).block_bits == 8
    assert load_memory(path, fingerprint, CodeMemory(32, block_bits=2).config()) is None  # stale
    assert load_memory(path, "another fingerprint") is None
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(RuntimeWarning, match="does not match its sidecar"):
        memory = DocumentMemory(db_copy, block_bits=8)
    assert memory.stats()["documents"] == 800
    assert DocumentMemory(db_copy, block_bits=8, words=False).stats()["word_units"] == 0


def test_a_memory_saved_in_the_earlier_sidecar_layout_loads_without_a_rebuild(db_copy, monkeypatch):
    memory = DocumentMemory(db_copy).memory
    path = db_copy.with_name(db_copy.name + ".faiss") / "recall.npz"
    with Database(db_copy, create=False) as db:
        fingerprint = db.code_fingerprint(db.get_model(TEXT.long).id)
    # As written before semhash.index.cache: these fields, in this order, then the SHA-256.
    legacy = {"format": 1, "fingerprint": fingerprint, "config": memory.config(), "documents": len(memory.ids),
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    text = json.dumps(legacy, indent=2) + "\n"
    assert path.with_name("recall.npz.json").read_text() == text
    path.with_name("recall.npz.json").write_text(text)
    monkeypatch.setattr(CodeMemory, "fit", lambda *a, **k: pytest.fail("rebuilt"))
    assert DocumentMemory(db_copy).stats()["documents"] == len(memory.ids)


# --------------------------------------------------------------------------- errors


def test_clear_errors(tiny_db):
    memory = DocumentMemory(tiny_db)
    with pytest.raises(QueryError, match="empty"):
        memory.recall_text("   ")
    with pytest.raises(QueryError, match="vocabulary"):
        memory.recall_text("qwxzv zzyzx blorptang")
    with pytest.raises(QueryError, match="8 hex digits, got 6"):
        memory.recall_code("abcdef")
    with pytest.raises(QueryError, match="not a hex code"):
        memory.recall_code("zzzzzzzz")
    with pytest.raises(QueryError, match="empty"):
        memory.recall_code("")
    with pytest.raises(QueryError, match="k must be"):
        memory.recall_code("deadbeef", k=0)


# --------------------------------------------------------------------------- benchmark
def test_document_recall_benchmark_scores_memory_tfidf_and_hamming_on_the_same_queries():
    import importlib.util

    import faiss

    from semhash.baselines import TfidfCosine
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("document_recall", REPO / "benchmarks" / "document_recall.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(5)
    n_docs, n_words = 40, 200
    codes = pack_bits(np.repeat(rng.integers(0, 2, (4, 32)), 10, axis=0))  # 4 codes, 10 posts each
    words = (rng.random((n_docs, n_words)) < 0.1).astype(np.float32)
    memory = CodeMemory(32, block_bits=1, n_words=n_words).fit(np.arange(n_docs), codes, words)
    index = faiss.IndexBinaryFlat(32)
    index.add(codes)
    tfidf = TfidfCosine().fit(words)
    truth, ok = np.arange(n_docs), np.ones(n_docs, bool)
    levels = {"words 100%": (codes, ok, words), "bits flipped 0%": (codes, ok, None)}
    methods = {
        "memory": lambda c, q, w, t, o: bench.evaluate_memory(memory, c, q, w, t, o),
        "hamming_nn": lambda c, q, w, t, o: bench.evaluate_hamming(index, c, q, t, o),
        "tfidf_cosine": lambda c, q, w, t, o: bench.evaluate_tfidf(tfidf, tfidf.transform(words), c, w, t, o),
    }
    out = bench.run_methods(methods, levels, truth, codes)
    assert out["words 100%"]["memory"]["expected_recall_at_1"] == 1.0  # the words single each post out
    assert out["words 100%"]["tfidf_cosine"]["expected_recall_at_1"] == 1.0
    # The code alone ties ten posts: 1/10 each, for the memory and for Hamming search alike.
    assert out["bits flipped 0%"]["memory"]["expected_recall_at_1"] == pytest.approx(0.1)
    assert out["bits flipped 0%"]["hamming_nn"]["expected_recall_at_1"] == pytest.approx(0.1)
    assert out["bits flipped 0%"]["tfidf_cosine"] is None  # no words: not defined
