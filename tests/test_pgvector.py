"""Hamming search in PostgreSQL with pgvector (semhash.index.pgvector_codes), on a real server.

One small text collection (indexed once, through the CLI) plus a few thousand documents with
random codes, so that the IVFFlat index has lists to choose from. The in-database search must
answer as the FAISS files do, write no local file, see another process's writes at once, and
fall back to the local files (with a warning) where pgvector cannot be used.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import semhash.index.pgvector_codes as pgvector_codes
from semhash.cli import main
from semhash.index.database import Database
from semhash.index.pgvector_codes import DatabaseCodeIndex, default_lists, support
from semhash.index.search import SearchEngine
from tests.conftest import run_cli as run, write_topic_posts
from tests.servers import has_pgvector, new_database, postgres_server

pytestmark = pytest.mark.slow
FIT = ["--bits", "32", "--epochs", "3", "--pretrain-epochs", "1", "--vocab", "40", "--address-bits", "0",
       "--map-dims", "0", "-q"]
NOISE = 3000  # documents with random codes
QUERIES = ["orbit shuttle launch nasa", "puck goal team season", "image pixel render", "israel peace arab"]




@pytest.fixture(scope="module")
def server():
    with postgres_server() as url:
        if not has_pgvector(url):
            pytest.skip("the pgvector extension is not installed for this PostgreSQL: run `bash tests/install-pgvector.sh`")
        yield url


@pytest.fixture(scope="module")
def collection(server, tmp_path_factory):
    """A database URL: 120 indexed posts and NOISE documents with random 32-bit codes."""
    folder = tmp_path_factory.mktemp("pgvector")
    url = new_database(server, "posts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEMHASH_CACHE_DIR", str(folder / "indexing-cache"))
        run("index", write_topic_posts(folder / "train.jsonl", "train", 120, 0), "--db", url, *FIT)
    with Database(url) as db:
        ids = db.add_documents([{"external_id": f"noise-{i}", "text": "noise"} for i in range(NOISE)])
        rng = np.random.default_rng(0)
        db.put_codes(db.get_model("hasher", with_weights=False).id, ids, rng.integers(0, 256, (NOISE, 4), dtype=np.uint8))
    return url


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """Where derived files would go (SEMHASH_CACHE_DIR) for the databases opened from now on."""
    monkeypatch.setenv("SEMHASH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _engines(url: str, monkeypatch) -> tuple[SearchEngine, SearchEngine]:
    """(in the database, from FAISS files) over the same codes."""
    in_database = SearchEngine(Database(url))
    monkeypatch.setenv("SEMHASH_PGVECTOR", "off")
    local = SearchEngine(Database(url))
    local._index("hasher")  # decided (and built) while pgvector is off
    monkeypatch.delenv("SEMHASH_PGVECTOR")
    assert isinstance(in_database._index("hasher"), DatabaseCodeIndex)
    assert not isinstance(local._index("hasher"), DatabaseCodeIndex)
    return in_database, local


def _same_up_to_ties(hits, expected) -> None:
    """Same distances in order, the same items nearer than the last distance, and items at
    the last distance that are there (ties at the cut may be any of them)."""
    assert [hit.distance for hit in hits] == [hit.distance for hit in expected]
    if hits:
        last = hits[-1].distance
        assert {hit.id for hit in hits if hit.distance < last} == {hit.id for hit in expected if hit.distance < last}


def _true_distance(db: Database, query_id: int, other_id: int) -> int:
    model = db.get_model("hasher", with_weights=False).id
    _, codes = db.get_codes(model, [query_id, other_id])
    return int(np.unpackbits(codes[0] ^ codes[1]).sum())


def test_search_and_similar_equal_the_faiss_files(collection, fresh_cache, monkeypatch):
    in_database, local = _engines(collection, monkeypatch)
    for query in QUERIES:
        _same_up_to_ties(in_database.search(query, k=20), local.search(query, k=20))
    for key in ("train-0", "train-7", "noise-5", "noise-2999"):
        hits = in_database.similar(key, k=15)
        _same_up_to_ties(hits, local.similar(key, k=15))
        assert key not in [hit.external_id for hit in hits]
        query = in_database.db.find_document(key).id
        assert all(_true_distance(in_database.db, query, hit.id) == hit.distance for hit in hits)
    code = in_database.db.get_codes(in_database.db.get_model("hasher", with_weights=False).id, [5])[1][0]
    _same_up_to_ties(in_database.search_code(code.tobytes().hex(), k=30), local.search_code(code.tobytes().hex(), k=30))
    # asking for more than there are: all of them
    assert len(in_database.search_code(code.tobytes().hex(), k=NOISE + 500)) == NOISE + 120


def test_no_local_file_is_written_for_hamming_search(collection, fresh_cache):
    engine = SearchEngine(collection)
    engine.warm()
    engine.search("orbit shuttle launch", k=5)
    engine.search("orbit shuttle launch", k=5, mode="cells", probes=3)
    engine.similar("train-3", k=5, mode="cells")
    assert not fresh_cache.exists() or not [path for path in fresh_cache.rglob("*") if path.is_file()]
    assert isinstance(engine._index("cells"), DatabaseCodeIndex)


def test_another_process_add_and_delete_are_seen_without_rebuilding(collection, fresh_cache, tmp_path):
    engine = SearchEngine(collection)
    before = {hit.external_id for hit in engine.search("puck goal team season", k=3)}
    assert engine._index("hasher").ntotal == 120 + NOISE
    # another process adds posts (the CLI opens its own Database)
    added = json.loads(run("add", write_topic_posts(tmp_path / "more.jsonl", "more", 8, 1), "--db", collection,
                           "-q", "--json"))
    assert added["added"] == 8
    assert engine._index("hasher").ntotal == 128 + NOISE
    assert len(engine.similar("more-3", k=5)) == 5  # it has a code
    for mode in ("exhaustive", "cells"):  # and it is found by it (among the posts of its topic, maybe)
        hits = engine.search_code(_code_hex(engine, "more-1"), k=200, mode=mode, probes=1000)
        assert ("more-1", 0) in [(h.external_id, h.distance) for h in hits], mode
    # another process deletes a document: its code goes with it (ON DELETE CASCADE)
    other = sa.create_engine(collection)
    with other.begin() as conn:
        conn.execute(sa.text("DELETE FROM documents WHERE external_id LIKE 'more-%'"))
    other.dispose()
    assert engine._index("hasher").ntotal == 120 + NOISE
    for mode in ("exhaustive", "cells"):
        hits = engine.search("puck goal team season", k=3 + NOISE, mode=mode, probes=1000)
        assert not [h for h in hits if h.external_id.startswith("more-")], mode
    assert {hit.external_id for hit in engine.search("puck goal team season", k=3)} == before


def _code_hex(engine: SearchEngine, key: str) -> str:
    document = engine.db.find_document(key)
    return engine.db.get_codes(engine.db.get_model("hasher", with_weights=False).id, [document.id])[1][0].tobytes().hex()


def test_cells_are_ivfflat_lists_searched_by_probes(collection, fresh_cache):
    engine = SearchEngine(collection)
    cells = engine._index("cells")
    assert isinstance(cells, DatabaseCodeIndex) and cells.lists == default_lists(120 + NOISE) > 16
    model = engine.db.get_model("hasher", with_weights=False).id
    rng = np.random.default_rng(1)
    queries = rng.integers(0, 256, (30, 4), dtype=np.uint8)
    exact = engine._index("hasher")
    stored_ids, stored = engine.db.get_codes(model)
    for query in queries[:5]:  # exact is exact, whatever index the table has
        distances, ids = exact.search(query, 10)
        everything = np.unpackbits(stored ^ query, axis=1).sum(axis=1)
        assert list(distances[0]) == sorted(everything)[:10]
        assert list(everything[np.searchsorted(stored_ids, ids[0])]) == list(distances[0])
    overlap = {}
    for probes in (1, cells.lists):
        shares = []
        for query in queries:
            distances, ids = cells.search(query, 10, probes)
            want_distances, want_ids = exact.search(query, 10)
            assert ids.shape == (1, 10) and len(set(ids[0].tolist())) == 10  # k hits, no repeats
            assert list(distances[0]) == sorted(distances[0])
            if probes == cells.lists:
                assert list(distances[0]) == list(want_distances[0])
            shares.append(len(set(ids[0]) & set(want_ids[0][want_distances[0] < want_distances[0][-1]]))
                          / max(1, (want_distances[0] < want_distances[0][-1]).sum()))
        overlap[probes] = np.mean(shares)
    assert overlap[cells.lists] == 1.0
    assert overlap[1] < 1.0  # one list of ~55: an approximate search, through the index
    # the engine's cells mode: k hits, nearest first
    hits = engine.search("orbit shuttle launch nasa", k=7, mode="cells", probes=2)
    assert len(hits) == 7 and [h.distance for h in hits] == sorted(h.distance for h in hits)
    # a stored code is its own nearest neighbour in every cell search that visits its list
    assert cells.search(stored[0], 1, 1)[0][0, 0] == 0


def test_ivfflat_is_rebuilt_when_the_collection_outgrows_it(server, fresh_cache):
    url = new_database(server, "growing")
    with Database(url) as db:
        model = db.save_model("hasher", "binary", 16, {"class": "test"}, b"w", None)
        ids = db.add_documents([{"external_id": f"d{i}", "text": "x"} for i in range(200)])
        rng = np.random.default_rng(2)
        db.put_codes(model, ids, rng.integers(0, 256, (200, 2), dtype=np.uint8))
        assert support(db).available
        assert DatabaseCodeIndex(db, "hasher", cells=True).lists == default_lists(200) == 5
        more = db.add_documents([{"external_id": f"e{i}", "text": "x"} for i in range(1800)])
        db.put_codes(model, more, rng.integers(0, 256, (1800, 2), dtype=np.uint8))
        assert DatabaseCodeIndex(db, "hasher", cells=True).lists == default_lists(2000) == 44
        # a replaced model: the codes go, and so does the old model's index at the next build
        new = db.save_model("hasher", "binary", 16, {"class": "test"}, b"w2", None, replace=True)
        assert DatabaseCodeIndex(db, "hasher").ntotal == 0
        db.put_codes(new, more, rng.integers(0, 256, (1800, 2), dtype=np.uint8))
        assert DatabaseCodeIndex(db, "hasher", cells=True).lists == default_lists(1800)
        with db._engine.connect() as conn:
            indexes = conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'code_bits' "
                                           "AND indexname LIKE '%ivfflat%'")).scalars().all()
        assert indexes == [f"code_bits_ivfflat_{new}"]


def test_without_pgvector_search_falls_back_to_local_files_with_one_warning(server, collection, fresh_cache,
                                                                            monkeypatch):
    """A user who may not CREATE EXTENSION (pgvector is not a trusted extension) in a database
    where nobody did: the local FAISS files, and one warning per process that says so."""
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE ROLE app LOGIN"))
    admin.dispose()
    url = new_database(server, "plain", owner="app").replace("semhash@", "app@")
    with Database(collection) as source, Database(url) as target:
        _copy_collection(source, target)
    monkeypatch.setattr(pgvector_codes, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = SearchEngine(url)
        hits = engine.search("orbit shuttle launch nasa", k=5)
        engine.search("orbit shuttle launch nasa", k=5, mode="cells")
        SearchEngine(url).search("puck goal", k=5)
    messages = [str(w.message) for w in caught if "pgvector" in str(w.message)]
    assert len(messages) == 1, messages
    assert "cannot enable it" in messages[0] and str(engine.db.index_dir) in messages[0]
    assert len(hits) == 5 and not isinstance(engine._index("hasher"), DatabaseCodeIndex)
    assert {path.name for path in fresh_cache.rglob("*.index")} == {"hasher.index", "cells.hasher.index"}
    assert not support(engine.db).available
    # the CLI says it in one line
    monkeypatch.setattr(pgvector_codes, "_warned", False)
    result = CliRunner().invoke(main, ["search", "orbit shuttle", "--db", url, "-k", "3"])
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if "pgvector" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "local derived files" in lines[0]


def test_the_decision(collection, monkeypatch):
    with Database(collection) as db:
        found = support(db)
        assert found.available and found.reason.startswith("pgvector 0.")
    monkeypatch.setenv("SEMHASH_PGVECTOR", "off")
    with Database(collection) as db:
        assert support(db) == pgvector_codes.Support(False, "SEMHASH_PGVECTOR is off")
    with Database("sqlite://") as db:
        assert not support(db).available


def _copy_collection(source: Database, target: Database) -> None:
    target.save_vocabulary(source.get_vocabulary())
    rows = list(source.iter_documents())
    new_ids = target.add_documents([{"external_id": row.external_id, "text": row.text, "label": row.label} for row in rows])
    ids = {row.id: new_id for row, new_id in zip(rows, new_ids)}
    for listed in source.list_models():
        model = source.get_model(listed.name)
        new = target.save_model(model.name, model.kind, model.n_dims, model.config, model.weights, model.vocabulary)
        old_ids, codes = source.get_codes(model.id)
        target.put_codes(new, [ids[i] for i in old_ids.tolist()], codes)
