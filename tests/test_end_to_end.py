"""End to end on a 20 Newsgroups subset (4 groups, 800 train / 200 test posts):
read, count, train, store, search. Small models trained for a few seconds."""

import json
import warnings

import numpy as np
import pytest

from semhash.index.database import Database, DatabaseError
from semhash.index.search import QueryError, SearchEngine
from semhash.pipelines.corpus import read_corpus
from semhash.index.models import TEXT
from semhash.pipelines.indexing import add_documents, index_corpus
from tests.conftest import precision_at_k

FAST = dict(hidden_layers=(200, 100), finetune_epochs=25, pretrain_epochs=2)
FAST_MAP = dict(hidden_layers=(200, 50, 20), finetune_epochs=25, pretrain_epochs=2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def indexed(newsgroups_subset, tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "news.db"
    report = index_corpus(newsgroups_subset["train"], path, n_bits=32, hasher_params=FAST, map_params=FAST_MAP,
                          verbose=False)
    return path, report


def test_index_stores_documents_models_and_codes(indexed):
    path, report = indexed
    assert report.documents == 800 and report.vocabulary == 2000
    with Database(path, create=False) as db:
        assert db.count_documents() == 800
        assert {row.name for row in db.list_models()} == {TEXT.long, TEXT.map, TEXT.address}
        ids, codes = db.get_codes(db.get_model(TEXT.long).id)
        assert codes.shape == (800, 4) and codes.dtype == np.uint8
        _, points = db.get_codes(db.get_model(TEXT.map).id)
        assert points.shape == (800, 2)
        # the vocabulary is stored once, for every model of the collection
        assert db.get_vocabulary()["words"][:1] and all(row.vocabulary is None for row in db.list_models())
    assert (path.parent / "news.db.faiss" / "hasher.index").exists()


def test_similar_documents_share_the_group_well_above_chance(indexed):
    path, _ = indexed
    engine = SearchEngine(path)
    rng = np.random.default_rng(0)
    queries = rng.choice(np.arange(1, 801), 60, replace=False)
    labels, neighbours = [], []
    for doc_id in queries:
        hits = engine.similar(int(doc_id), k=10)
        assert len(hits) == 10 and all(hit.id != doc_id for hit in hits)
        labels.append(engine.db.find_document(int(doc_id)).label)
        neighbours.append([hit.label for hit in hits])
    # Chance is 0.25 with four equal groups.
    assert precision_at_k(np.array(neighbours), labels) > 0.5


def test_new_text_queries_find_their_group(indexed, newsgroups_subset):
    path, _ = indexed
    engine = SearchEngine(path)
    tests = read_corpus(newsgroups_subset["test"])[::4]
    for space, rerank, floor in (("hamming", False, 0.5), ("hamming", True, 0.6), ("euclidean", False, 0.4)):
        neighbours = [[hit.label for hit in engine.search(doc.text, k=10, space=space, rerank=rerank)] for doc in tests]
        assert precision_at_k(np.array(neighbours), [doc.label for doc in tests]) > floor, (space, rerank)


def test_hits_carry_what_a_user_needs(indexed, newsgroups_subset):
    engine = SearchEngine(indexed[0])
    hockey_post = next(doc for doc in read_corpus(newsgroups_subset["test"]) if doc.label == "rec.sport.hockey")
    hits = engine.search(hockey_post.text, k=5)
    assert len(hits) == 5
    hit = hits[0]
    assert hit.title and hit.snippet and not hit.snippet.startswith("From:")
    assert set(hit.to_dict()) >= {"id", "distance", "title", "label", "external_id", "snippet"}
    distances = [h.distance for h in hits]
    assert distances == sorted(distances)
    reranked = engine.search("the goalie made a great save", k=5, rerank=True)
    assert all(0.0 <= h.distance <= 1.0 for h in reranked)


def test_query_errors_are_clear(indexed):
    engine = SearchEngine(indexed[0])
    with pytest.raises(QueryError, match="vocabulary"):
        engine.search("qwxzv zzqv")
    with pytest.raises(QueryError, match="empty"):
        engine.search("   ")
    with pytest.raises(QueryError, match="unknown search space"):
        engine.search("space", space="cosine")
    with pytest.raises(KeyError, match="no document"):
        engine.similar("no/such-doc")


def test_search_by_code_matches_search_by_text(indexed):
    from semhash.codes import to_hex

    engine = SearchEngine(indexed[0])
    text = "orbit launch shuttle nasa moon"
    by_code = engine.search_code(to_hex(engine.encode(text)[0]), k=5)
    assert [h.id for h in by_code] == [h.id for h in engine.search(text, k=5)]


def test_existing_database_is_never_clobbered(indexed, newsgroups_subset):
    path, _ = indexed
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="already holds 800 documents"):
        index_corpus(newsgroups_subset["test"], path, verbose=False)
    assert path.read_bytes() == before


def test_failed_overwrite_leaves_the_old_database(tmp_path, newsgroups_subset, monkeypatch):
    path = tmp_path / "small.db"
    index_corpus(newsgroups_subset["test"], path, n_bits=16, map_dims=0, hasher_params=FAST, verbose=False)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Database, "put_codes", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        index_corpus(newsgroups_subset["test"], path, n_bits=16, map_dims=0, hasher_params=FAST, overwrite=True,
                     verbose=False)
    assert path.read_bytes() == before
    # nothing half-written is left: only the database, its search files and its writer lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.db", "small.db.faiss", "small.db.lock"]


def test_add_is_incremental_and_resumable(tmp_path, newsgroups_subset, monkeypatch):
    path = tmp_path / "grow.db"
    train = read_corpus(newsgroups_subset["train"])
    index_corpus(newsgroups_subset["train"], path, n_bits=16, map_dims=0, hasher_params=FAST, verbose=False)
    tests = read_corpus(newsgroups_subset["test"])

    # Interrupt after the second batch's documents are stored but before their codes
    # (each batch stores codes twice: hasher, then address).
    real_put_codes, calls = Database.put_codes, []

    def flaky_put_codes(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_put_codes(self, *args, **kwargs)

    monkeypatch.setattr(Database, "put_codes", flaky_put_codes)
    with pytest.raises(KeyboardInterrupt):
        add_documents(path, tests, batch_size=60, verbose=False)
    monkeypatch.setattr(Database, "put_codes", real_put_codes)

    result = add_documents(path, tests + train[:5], batch_size=60, verbose=False)
    assert result["already_stored"] == 60 + 60 + 5  # two batches got in before the interruption
    with Database(path, create=False) as db:
        assert db.count_documents() == 800 + 200
        model = db.get_model(TEXT.long)
        assert db.documents_without_codes(model.id) == []
        ids, _ = db.get_codes(model.id)
        assert len(ids) == 1000
        assert db.documents_without_codes(db.get_model(TEXT.address).id) == []
    # Newly added documents are searchable at once: the FAISS index was rebuilt.
    assert SearchEngine(path).similar(tests[0].external_id, k=3)


def test_empty_documents_are_skipped_with_a_count(tmp_path, newsgroups_subset):
    lines = newsgroups_subset["test"].read_text().splitlines()[:120]
    lines += [json.dumps({"id": "stop-words-only", "text": "the and of it is was"}),
              json.dumps({"id": "digits-only", "text": "1234 5678 !!!"})]
    corpus = tmp_path / "with-empty.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = index_corpus(corpus, tmp_path / "e.db", n_bits=16, map_dims=0, hasher_params=FAST, verbose=False)
    assert report.skipped_empty == 2 and report.documents == 120
    assert any("2 documents have no word of the vocabulary" in str(w.message) for w in caught)
