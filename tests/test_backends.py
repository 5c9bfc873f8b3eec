"""One suite of semantics, run on every storage backend: index, search, similar, add,
delete and recall answer the same whatever keeps the documents and searches the codes.

Backends (the same stored models and codes in each; trained once, in a few seconds):

* ``sqlite``: an SQLite file, searched from local FAISS files (the embedded default);
* ``postgres``: PostgreSQL with pgvector, the long codes searched in the database;
* ``postgres-files``: PostgreSQL with ``SEMHASH_PGVECTOR=off``: local derived files;
* ``milvus-lite``: an SQLite file, codes kept and searched in a milvus-lite file (``SEMHASH_CODES``);
* ``milvus``: the same on a real standalone Milvus server (``milvus://127.0.0.1:PORT``).

The collection: 120 short posts on four topics, and 200 documents with random codes under
every model, so that exact searches have distances to tell apart. Searches that are exact
must give the SQLite backend's hits and distances (up to ties at the cut), and agree with an
exhaustive Hamming search over the codes stored in the database. Tests that write (add,
delete) work on a fresh copy of the collection.
"""

from __future__ import annotations

import itertools
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from semhash.cli import main
from semhash.index.database import Database
from semhash.index.recall import DocumentMemory
from semhash.index.search import SearchEngine
from semhash.pipelines.deleting import delete_documents

from tests.conftest import run_cli as run, noisy_topic_collection, write_topic_posts
from tests.servers import has_pgvector, milvus_lite_installed

POSTS, NOISE = 120, 200
ALL = POSTS + NOISE
FIT = {"hidden_layers": (32,), "pretrain_epochs": 2, "finetune_epochs": 4, "batch_size": 40}
QUERIES = {"space": "orbit shuttle launch nasa", "hockey": "puck goal team season",
           "graphics": "image pixel render", "mideast": "israel peace arab"}
ENVIRONMENT = ("SEMHASH_CODES", "SEMHASH_PGVECTOR", "SEMHASH_INDEX_DIR")
# the class of the long codes' search structure each backend must use
SEARCHED_BY = {"sqlite": "BinaryCodeIndex", "postgres": "DatabaseCodeIndex", "postgres-files": "BinaryCodeIndex",
               "milvus-lite": "MilvusCodeIndex", "milvus": "MilvusCodeIndex"}
BACKENDS = [
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.slow),
    pytest.param("postgres-files", marks=pytest.mark.slow),
    pytest.param("milvus-lite", marks=pytest.mark.slow),
    pytest.param("milvus", marks=pytest.mark.slow),
]




def one_line_error(*args) -> str:
    """The CLI's failure: exit status 1 and one line, no traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, (args, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@contextmanager
def plain_environment():
    """No backend settings: what the SQLite reference is searched under."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in ENVIRONMENT:
            patch.delenv(variable, raising=False)
        yield


# --------------------------------------------------------------------------- the collection
@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The collection in an SQLite file, indexed once: POSTS posts and NOISE documents with
    random codes under every model. Never written to: backends copy it."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("source")
    with plain_environment():
        return noisy_topic_collection(folder, POSTS, NOISE, FIT)


@pytest.fixture(scope="module")
def reference(source):
    """The SQLite backend on the untouched collection (local FAISS files), for comparisons:
    search it only inside plain_environment()."""
    with plain_environment():
        engine = SearchEngine(source).warm()
        yield engine
        engine.close()


def _copy_collection(source: Path, url: str) -> None:
    """The documents, vocabulary, models and codes of ``source`` into the empty database ``url``."""
    with Database(source) as origin, Database(url) as target:
        target.save_vocabulary(origin.get_vocabulary())
        rows = list(origin.iter_documents())
        new_ids = target.add_documents([{"external_id": row.external_id, "text": row.text, "label": row.label,
                                         "title": row.title, "kind": row.kind} for row in rows])
        assert new_ids == [row.id for row in rows]  # same ids: hits compare as they are
        for listed in origin.list_models():
            model = origin.get_model(listed.name)
            new = target.save_model(model.name, model.kind, model.n_dims, model.config, model.weights, model.vocabulary)
            ids, codes = origin.get_codes(model.id)
            target.put_codes(new, ids.tolist(), codes)


# --------------------------------------------------------------------------- the backends
@dataclass
class Backend:
    name: str
    folder: Path
    source: Path
    env: dict
    server: str | None = None  # PostgreSQL: the server's URL
    db: str = ""
    _names: itertools.count = field(default_factory=itertools.count)

    def copy(self) -> str:
        """A new database holding the collection, for this backend."""
        number = next(self._names)
        if self.server is not None:
            from tests.servers import new_database

            url = new_database(self.server, f"{self.name.replace('-', '_')}_{number}")
            _copy_collection(self.source, url)
            return url
        return str(shutil.copy(self.source, self.folder / f"copy-{number}.db"))


@pytest.fixture(scope="module")
def postgres():
    from tests.servers import _postgres_bin, postgres_server

    try:
        _postgres_bin("initdb")
    except RuntimeError as err:
        pytest.skip(str(err))
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def milvus():
    pytest.importorskip("pymilvus", reason="the Milvus client is not installed: pip install 'semhash[milvus]'",
                        exc_type=ImportError)
    pytest.importorskip("milvus", reason="the Milvus server package is not installed: pip install milvus==2.3.5",
                        exc_type=ImportError)
    from semhash.index import milvus_codes

    from tests.servers import milvus_server

    with milvus_server() as uri:
        yield uri
        milvus_codes.close_clients()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, source, tmp_path_factory) -> Backend:
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    env = {"SEMHASH_CACHE_DIR": str(folder / "cache")}  # a server's derived files: not in ~/.cache
    server = None
    if name.startswith("postgres"):
        server = request.getfixturevalue("postgres")
        if name == "postgres":
            if not has_pgvector(server):
                pytest.skip("pgvector is not installed for this PostgreSQL: run `bash tests/install-pgvector.sh`")
        else:
            env["SEMHASH_PGVECTOR"] = "off"
    elif name == "milvus-lite":
        if not milvus_lite_installed():
            pytest.skip("milvus-lite is not installed: pip install milvus-lite==2.5.1 'setuptools<81'")
        env["SEMHASH_CODES"] = str(folder / "codes.db")
        env["GLOG_log_dir"] = str(folder)  # milvus-lite's own logs, else in /tmp
    elif name == "milvus":
        env["SEMHASH_CODES"] = request.getfixturevalue("milvus")
    found = Backend(name, folder, source, env, server)
    found.db = found.copy()
    yield found
    if "SEMHASH_CODES" in env:
        from semhash.index import milvus_codes

        milvus_codes.close_clients()


@pytest.fixture
def use(backend, monkeypatch) -> Backend:
    """The backend, its settings in the environment for the test (the CLI reads them too)."""
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in backend.env.items():
        monkeypatch.setenv(variable, value)
    return backend


# --------------------------------------------------------------------------- helpers
def _same_up_to_ties(hits, expected) -> None:
    """Same distances in order, and the same items nearer than the last distance (ties at
    the cut may be any of them)."""
    assert [hit.distance for hit in hits] == [hit.distance for hit in expected]
    if hits:
        last = hits[-1].distance
        assert ({hit.external_id for hit in hits if hit.distance < last}
                == {hit.external_id for hit in expected if hit.distance < last})


def _same_real(hits, expected) -> None:
    assert [hit.external_id for hit in hits] == [hit.external_id for hit in expected]
    assert np.allclose([hit.distance for hit in hits], [hit.distance for hit in expected], atol=2e-3)


def _exhaustive(db: Database, code: np.ndarray, exclude: int | None = None) -> dict[int, int]:
    """Every stored long code's Hamming distance to ``code``, by document id (numpy, no index)."""
    ids, codes = db.get_codes(db.get_model("hasher", with_weights=False).id)
    distances = np.unpackbits(codes ^ code.reshape(1, -1), axis=1).sum(axis=1)
    return {i: d for i, d in zip(ids.tolist(), distances.tolist()) if i != exclude}


def _is_exact(hits, truth: dict[int, int], k: int) -> None:
    """The hits are the k nearest of an exhaustive search: the k smallest distances, each
    hit at its true distance, no repeats."""
    assert [hit.distance for hit in hits] == sorted(truth.values())[:k]
    assert all(truth[hit.id] == hit.distance for hit in hits)
    assert len({hit.id for hit in hits}) == len(hits)


def _code(db: Database, key: str) -> np.ndarray:
    document = db.find_document(key)
    return db.get_codes(db.get_model("hasher", with_weights=False).id, [document.id])[1][0]


# --------------------------------------------------------------------------- the suite
def test_search_by_text_finds_the_posts_of_its_topic(use):
    with SearchEngine(use.db) as engine:
        assert type(engine._index("hasher")).__name__ == SEARCHED_BY[use.name]
        for label, query in QUERIES.items():
            hits = engine.search(query, k=8)
            assert len(hits) == 8 and {hit.label for hit in hits} == {label}, (query, hits)
            # the CLI answers the same
            printed = json.loads(run("search", query, "--db", use.db, "-k", "8", "--json"))
            assert [(hit["external_id"], hit["distance"]) for hit in printed] == [
                (hit.external_id, hit.distance) for hit in hits]


def test_exact_searches_equal_the_sqlite_backend_and_an_exhaustive_search(use, reference):
    k = 25
    with SearchEngine(use.db) as engine:
        db = engine.db
        for query in QUERIES.values():
            hits = engine.search(query, k=k)
            _is_exact(hits, _exhaustive(db, engine.encode(query)), k)
            with plain_environment():
                expected = reference.search(query, k=k)
                expected_map = reference.search(query, k=10, space="euclidean")
                expected_address = {radius: (reference.search(query, k=10, mode="address", radius=radius,
                                                              max_candidates=None), reference.last_address_result)
                                    for radius in (0, 2)}
            _same_up_to_ties(hits, expected)
            _same_real(engine.search(query, k=10, space="euclidean"), expected_map)
            for radius, (want, want_result) in expected_address.items():
                got = engine.search(query, k=10, mode="address", radius=radius, max_candidates=None)
                _same_up_to_ties(got, want)
                assert engine.last_address_result.n_candidates == want_result.n_candidates
                assert engine.last_address_result.fell_back == want_result.fell_back
            # cells visiting every cell: exact
            _is_exact(engine.search(query, k=k, mode="cells", probes=10_000), _exhaustive(db, engine.encode(query)), k)
        for key in ("train-0", "train-7", "noise-5", "noise-199"):
            hits = engine.similar(key, k=15)
            document = db.find_document(key)
            _is_exact(hits, _exhaustive(db, _code(db, key), exclude=document.id), 15)
            with plain_environment():
                expected = reference.similar(key, k=15)
                expected_map = reference.similar(key, k=8, space="euclidean")
            _same_up_to_ties(hits, expected)
            _same_real(engine.similar(key, k=8, space="euclidean"), expected_map)
        code = _code(db, "noise-3")
        hits = engine.search_code(code.tobytes().hex(), k=30)
        _is_exact(hits, _exhaustive(db, code), 30)
        with plain_environment():
            _same_up_to_ties(hits, reference.search_code(code.tobytes().hex(), k=30))
        # more than there are: all of them
        assert len(engine.search_code(code.tobytes().hex(), k=ALL + 50)) == ALL
        assert engine._index("hasher").ntotal == ALL


def test_similar_by_id_and_by_external_id(use):
    with SearchEngine(use.db) as engine:
        document = engine.db.find_document("train-3")
        by_name, by_id = engine.similar("train-3", k=6), engine.similar(str(document.id), k=6)
        assert [(h.id, h.distance) for h in by_name] == [(h.id, h.distance) for h in by_id] and len(by_name) == 6
        assert document.id not in [hit.id for hit in by_name]
        assert {hit.label for hit in by_name} == {document.label}
    printed = json.loads(run("similar", "train-3", "--db", use.db, "-k", "6", "--json"))
    assert [hit["id"] for hit in printed] == [hit.id for hit in by_name]


def test_added_documents_are_found(use, tmp_path):
    db = use.copy()
    before = SearchEngine(db).warm()  # opened before the add (Milvus: synced before it)
    added = json.loads(run("add", write_topic_posts(tmp_path / "more.jsonl", "more", 8, 1), "--db", db, "-q", "--json"))
    assert added["added"] == 8
    with SearchEngine(db) as engine:
        assert engine._index("hasher").ntotal == ALL + 8
        code = _code(engine.db, "more-1").tobytes().hex()
        assert ("more-1", 0) in [(hit.external_id, hit.distance) for hit in engine.search_code(code, k=ALL)]
        similar = engine.similar("more-3", k=5)
        assert len(similar) == 5 and "more-3" not in [hit.external_id for hit in similar]
        everything = {hit.external_id for hit in engine.search("orbit shuttle", k=ALL + 8)}
        assert {f"more-{i}" for i in range(8)} <= everything
        assert len(engine.search("orbit shuttle", k=ALL + 8, space="euclidean")) == ALL + 8
    if use.name == "postgres":  # searched in the database: even an engine opened before sees them
        assert ("more-1", 0) in [(hit.external_id, hit.distance) for hit in before.search_code(code, k=ALL)]
    before.close()
    assert json.loads(run("info", "--db", db, "--json"))["documents"] == ALL + 8


def test_deleted_documents_never_come_back(use, tmp_path):
    db = use.copy()
    stale = SearchEngine(db).warm()  # opened before the deletes, kept open
    stale._index("cells")
    stale_memory = DocumentMemory(stale.db, engine=stale)
    with Database(db) as opened:
        noise = opened.find_document("noise-5").id
        codes = {key: _code(opened, key) for key in ("train-0", "train-4", "noise-5")}
    # the library, by external id and by numeric id
    result = delete_documents(db, ["train-0", "train-1", "train-2", str(noise)])
    assert result["deleted"] == 4 and result["missing"] == [] and result["documents"] == ALL - 4
    # the command line, by arguments and from a file (blank lines skipped)
    (tmp_path / "keys.txt").write_text("train-4\n\ntrain-5\n")
    printed = json.loads(run("delete", "train-3", "--from-file", tmp_path / "keys.txt", "--db", db, "-q", "--json"))
    assert printed["deleted"] == 3 and printed["documents"] == ALL - 7
    # again: unknown now, so an error that names them, and nothing deleted; --missing-ok skips them
    assert "train-3" in one_line_error("delete", "train-3", "train-6", "--db", db)
    printed = json.loads(run("delete", "train-3", "train-6", "--db", db, "--missing-ok", "-q", "--json"))
    assert printed["deleted"] == 1 and printed["missing"] == ["train-3"]
    # from standard input
    printed = json.loads(run("delete", "--from-file", "-", "--db", db, "-q", "--json", input="train-7\n"))
    assert printed["deleted"] == 1
    # the database's own call, which leaves the copies of the codes elsewhere to their next sync
    with Database(db) as opened:
        assert opened.delete_documents(["train-8"]) == [opened.find_document("train-9").id - 1]
    gone = {f"train-{i}" for i in range(9)} | {"noise-5"}
    remaining = ALL - len(gone)
    assert json.loads(run("info", "--db", db, "--json"))["documents"] == remaining

    engine = SearchEngine(db)
    if use.name.startswith("milvus"):  # the copy in Milvus loses it, and only it, when opened: no copying again
        for what in ("hasher", "map"):
            assert engine._index(what).synced == {"rebuilt": False, "copied": 0, "deleted": 1}, what
    assert engine._index("hasher").ntotal == remaining
    assert engine._index("map").ntotal == remaining
    for searcher in (engine, stale):  # a new engine, and one opened before
        for query in QUERIES.values():
            for options in ({}, {"space": "euclidean"}, {"mode": "cells", "probes": 10_000},
                            {"mode": "address", "radius": 8, "max_candidates": None}):
                hits = searcher.search(query, k=ALL, **options)
                assert not gone & {hit.external_id for hit in hits}, (searcher is stale, options)
                if searcher is engine:
                    assert len(hits) == remaining, options
        for code in codes.values():
            assert not gone & {hit.external_id for hit in searcher.search_code(code.tobytes().hex(), k=ALL)}
        assert not gone & {hit.external_id for hit in searcher.similar("train-10", k=ALL)}
        with pytest.raises(KeyError, match="no document"):
            searcher.similar("train-0")
    _is_exact(engine.search_code(codes["train-0"].tobytes().hex(), k=40),
              _exhaustive(engine.db, codes["train-0"]), 40)
    # recall: a memory built now, and one built before
    for memory in (DocumentMemory(engine.db, engine=engine), stale_memory):
        for code in codes.values():
            assert not gone & {hit.external_id for hit in memory.recall_code(code.tobytes().hex(), k=ALL)}
        assert not gone & {hit.external_id for hit in memory.recall_text("orbit shuttle launch nasa moon", k=ALL)}
    # the map draws the documents left
    drawn = json.loads(run("map", "--db", db, "--out", tmp_path / "map.png", "--json", "-q"))
    assert drawn["documents"] == remaining
    assert "no document" in one_line_error("similar", "train-0", "--db", db)
    engine.close()
    stale.close()


def test_recall_brings_back_documents_from_a_fragment(use):
    with DocumentMemory(use.db) as memory:
        recalled = memory.recall_text("puck goal team season playoff ice", k=3)
        assert len(recalled) == 3 and {hit.label for hit in recalled} == {"hockey"}
        code = _code(memory.db, "train-9")
        hits = memory.recall_code(code.tobytes().hex(), k=5)
        assert hits[0].confidence == 1.0 and hits[0].hamming_distance == 0
    printed = json.loads(run("recall", "israel peace arab border treaty", "--db", use.db, "--json"))
    assert printed and printed[0]["label"] == "mideast"


def test_bad_input_is_one_clear_line(use):
    assert "vocabulary" in one_line_error("search", "qqqzx zzyzx", "--db", use.db)
    assert "no document" in one_line_error("similar", "no/such/post", "--db", use.db)
    assert "no document" in one_line_error("delete", "train-11", "no/such/post", "--db", use.db)
    assert "hex" in one_line_error("search", "zz", "--code", "--db", use.db)
    assert "empty" in one_line_error("recall", "--code", " ", "--db", use.db)
    result = CliRunner().invoke(main, ["delete", "--db", use.db])
    assert result.exit_code == 2 and "name the documents to delete" in result.output
    # nothing was deleted by the failed delete
    with SearchEngine(use.db) as engine:
        assert engine.db.count_documents() == ALL
        assert len(engine.similar("train-11", k=3)) == 3
