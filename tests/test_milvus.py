"""Codes kept and searched in Milvus (semhash.index.milvus_codes), on a real standalone server
(the `milvus` package, started here) and on milvus-lite: the same tests for both.

One small text collection (indexed once, a few seconds of training) plus documents with random
codes, in an SQLite file. Searched through Milvus it must answer as the local FAISS files do
(Hamming, Euclidean and address searches, similar items), see another process's `semhash add`
and deletions after a sync, rebuild for a replaced model, search cells by IVF lists on a
server, and the CLI's --codes must work, or fail in one line. The server starts once a module
(~5 s; the first time on a machine ~15 s more, to unpack its binaries).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings
from math import isqrt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from click.testing import CliRunner

pytest.importorskip("pymilvus", reason="the Milvus client is not installed: pip install 'semhash[milvus]'",
                    exc_type=ImportError)

from semhash.cli import main  # noqa: E402
from semhash.index import milvus_codes  # noqa: E402
from semhash.index.database import Database  # noqa: E402
from semhash.index.milvus_codes import MilvusAddressIndex, MilvusCodeIndex, MilvusError  # noqa: E402
from semhash.index.search import SearchEngine  # noqa: E402
from tests.conftest import run_cli as run, REPO, noisy_topic_collection, write_topic_posts  # noqa: E402
from tests.servers import _free_port, milvus_lite_installed, milvus_server  # noqa: E402

pytestmark = pytest.mark.slow
FIT = dict(hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=2, batch_size=40)
POSTS = 120
NOISE = 800  # documents with random codes under every model (fewer than a server indexes: no flush)
CELLS = 3000  # random codes in the cells test
QUERIES = ["orbit shuttle launch nasa", "puck goal team season", "image pixel render", "israel peace arab"]




@pytest.fixture(scope="module", params=["server", "lite"])
def codes(request, tmp_path_factory):
    """A Milvus URI for --codes: a real standalone server, or a milvus-lite file."""
    if request.param == "server":
        pytest.importorskip("milvus", reason="the Milvus server package is not installed: pip install milvus==2.3.5",
                            exc_type=ImportError)
        with milvus_server() as uri:
            yield uri
            milvus_codes.close_clients()
    else:
        if not milvus_lite_installed():
            pytest.skip("milvus-lite is not installed: pip install milvus-lite==2.5.1 'setuptools<81'")
        folder = tmp_path_factory.mktemp("lite")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GLOG_log_dir", str(folder))  # milvus-lite's own log files, else in /tmp
            yield str(folder / "codes.db")
            milvus_codes.close_clients()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """An SQLite file: POSTS indexed posts and NOISE documents with random codes of every model."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("milvus")
    return noisy_topic_collection(folder, POSTS, NOISE, FIT)


@pytest.fixture(scope="module")
def cells(codes, tmp_path_factory):
    """(database, cells index, exact index, caught warnings) over CELLS random 32-bit codes.
    Made by the first test of each backend: a server indexes the codes in the background
    while the other tests run, and its query node switches to the index seconds later."""
    db, _, _ = _random_collection(tmp_path_factory.mktemp("cells") / "cells.db", CELLS)
    target = milvus_codes.parse(codes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        milvus_codes._warned_lite_cells = False
        index = MilvusCodeIndex(db, "hasher", cells=True, target=target)
    yield db, index, MilvusCodeIndex(db, "hasher", target=target), [str(w.message) for w in caught]
    db.close()


@pytest.fixture
def copy(collection, tmp_path) -> Path:
    """A copy of the collection that a test may change (a new file: new Milvus collections)."""
    return Path(shutil.copy(collection, tmp_path / "copy.db"))


def _engines(database: Path, codes: str, monkeypatch) -> tuple[SearchEngine, SearchEngine]:
    """(searched in Milvus, from the local FAISS files) over the same database."""
    monkeypatch.delenv(milvus_codes.ENVIRONMENT, raising=False)
    local = SearchEngine(database)
    for what in ("hasher", "address", "map"):
        local._index(what)  # decided (and built) while SEMHASH_CODES is unset
    monkeypatch.setenv(milvus_codes.ENVIRONMENT, codes)
    milvus = SearchEngine(database)
    assert isinstance(milvus._index("hasher"), MilvusCodeIndex) and isinstance(milvus._index("map"), MilvusCodeIndex)
    assert isinstance(milvus._index("address"), MilvusAddressIndex)
    return milvus, local


def _same_up_to_ties(hits, expected) -> None:
    """Same distances in order, the same items nearer than the last distance (ties at the
    cut may be any of them)."""
    assert [hit.distance for hit in hits] == [hit.distance for hit in expected]
    if hits:
        last = hits[-1].distance
        assert {hit.id for hit in hits if hit.distance < last} == {hit.id for hit in expected if hit.distance < last}


def _same_real(hits, expected) -> None:
    assert [hit.id for hit in hits] == [hit.id for hit in expected]
    assert np.allclose([hit.distance for hit in hits], [hit.distance for hit in expected], atol=2e-3)


def test_search_and_similar_equal_the_faiss_files(codes, collection, cells, monkeypatch):
    milvus, local = _engines(collection, codes, monkeypatch)
    for query in QUERIES:
        _same_up_to_ties(milvus.search(query, k=20), local.search(query, k=20))
        _same_real(milvus.search(query, k=10, space="euclidean"), local.search(query, k=10, space="euclidean"))
        for radius in (0, 2):
            options = {"mode": "address", "radius": radius, "max_candidates": None}
            _same_up_to_ties(milvus.search(query, k=10, **options), local.search(query, k=10, **options))
            assert milvus.last_address_result.n_candidates == local.last_address_result.n_candidates
            assert milvus.last_address_result.fell_back == local.last_address_result.fell_back
    for key in ("train-0", "train-7", "noise-5", "noise-799"):
        hits = milvus.similar(key, k=15)
        _same_up_to_ties(hits, local.similar(key, k=15))
        assert key not in [hit.external_id for hit in hits]
        _same_real(milvus.similar(key, k=8, space="euclidean"), local.similar(key, k=8, space="euclidean"))
        _same_up_to_ties(milvus.similar(key, k=10, mode="address"), local.similar(key, k=10, mode="address"))
    code = milvus.db.get_codes(milvus.db.get_model("hasher", with_weights=False).id, [5])[1][0].tobytes().hex()
    _same_up_to_ties(milvus.search_code(code, k=30), local.search_code(code, k=30))
    # asking for more than there are: all of them
    assert len(milvus.search_code(code, k=NOISE + 500)) == NOISE + POSTS
    assert milvus._index("hasher").ntotal == milvus._index("map").ntotal == NOISE + POSTS
    # the raw indexes: same arrays (distances exactly, Euclidean to float32 precision)
    noise = [milvus.db.find_document(f"noise-{i}").id for i in (1, 2, 3)]  # random codes: no ties
    queries = milvus.db.get_codes(milvus.db.get_model("map", with_weights=False).id, noise)[1]
    got, want = milvus._index("map").search(queries, 5), local._index("map").search(queries, 5)
    assert (got[1] == want[1]).all() and np.allclose(got[0], want[0], atol=1e-4) and got[0].dtype == np.float32


def test_another_process_add_and_delete_are_seen_after_sync(codes, copy, tmp_path, monkeypatch):
    monkeypatch.setenv(milvus_codes.ENVIRONMENT, codes)
    engine = SearchEngine(copy).warm()
    assert engine._index("hasher").synced["rebuilt"] and engine._index("hasher").ntotal == NOISE + POSTS
    # another process adds posts: `add` ends by bringing the Milvus copies up to date itself
    added = json.loads(run("add", write_topic_posts(tmp_path / "more.jsonl", "more", 8, 1), "--db", copy,
                           "-q", "--json"))
    assert added["added"] == 8
    assert engine._index("hasher").ntotal == NOISE + POSTS + 8  # the server holds them already
    engine = SearchEngine(copy)
    for what in ("hasher", "map"):
        assert engine._index(what).synced == {"rebuilt": False, "copied": 0, "deleted": 0}, what
        assert engine._index(what).ntotal == NOISE + POSTS + 8
    assert len(engine.similar("more-3", k=5)) == len(engine.similar("more-3", k=5, space="euclidean")) == 5
    hits = engine.search_code(_code_hex(engine, "more-1"), k=200)
    assert ("more-1", 0) in [(h.external_id, h.distance) for h in hits]
    assert engine._index("address").addresses.ntotal == NOISE + POSTS + 8
    # a third engine: nothing to do
    assert SearchEngine(copy)._index("hasher").synced == {"rebuilt": False, "copied": 0, "deleted": 0}
    # another process deletes documents (their codes go with them: ON DELETE CASCADE)
    with Database(copy) as other, other._engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM documents WHERE external_id LIKE 'more-%'"))
    engine = SearchEngine(copy)
    for what in ("hasher", "map"):
        assert engine._index(what).synced == {"rebuilt": False, "copied": 0, "deleted": 8}, what
        assert engine._index(what).ntotal == NOISE + POSTS
    for mode in ("exhaustive", "address"):
        hits = engine.search("puck goal team season", k=NOISE, mode=mode, max_candidates=None, radius=8)
        assert hits and not [h for h in hits if h.external_id.startswith("more-")], mode
    hits = engine.search("puck goal team season", k=NOISE + POSTS, space="euclidean")
    assert len(hits) == NOISE + POSTS and not [h for h in hits if h.external_id.startswith("more-")]


def _code_hex(engine: SearchEngine, key: str) -> str:
    document = engine.db.find_document(key)
    model = engine.db.get_model("hasher", with_weights=False).id
    return engine.db.get_codes(model, [document.id])[1][0].tobytes().hex()


def _random_collection(path: Path, n: int, bits: int = 32, seed: int = 2) -> tuple[Database, int, np.ndarray]:
    db = Database(path)
    model = db.save_model("hasher", "binary", bits, {"class": "test"}, b"w", None)
    ids = db.add_documents([{"external_id": f"d{i}", "text": "x"} for i in range(n)])
    db.put_codes(model, ids, np.random.default_rng(seed).integers(0, 256, (n, bits // 8), dtype=np.uint8))
    return db, model, np.asarray(ids)


def test_rewritten_codes_and_a_replaced_model(codes, tmp_path, monkeypatch):
    monkeypatch.setenv(milvus_codes.ENVIRONMENT, codes)
    db, model, ids = _random_collection(tmp_path / "random.db", 300, bits=16)
    assert MilvusCodeIndex(db, "hasher").synced == {"rebuilt": True, "copied": 300, "deleted": 0}
    # codes written again in place (no new document): all copied again
    rng = np.random.default_rng(3)
    db.put_codes(model, ids[:10], rng.integers(0, 256, (10, 2), dtype=np.uint8))
    index = MilvusCodeIndex(db, "hasher")
    assert index.synced == {"rebuilt": False, "copied": 300, "deleted": 0}
    _, stored = db.get_codes(model, ids[:10].tolist())
    distances, found = index.search(stored, 1)
    assert (distances[:, 0] == 0).all()
    # a replaced model (new weights, new codes, 16 -> 24 bits): the collection is made again
    new = db.save_model("hasher", "binary", 24, {"class": "test"}, b"w2", None, replace=True)
    db.put_codes(new, ids[:50], rng.integers(0, 256, (50, 3), dtype=np.uint8))
    index = MilvusCodeIndex(db, "hasher")
    assert index.synced == {"rebuilt": True, "copied": 50, "deleted": 0} and index.ntotal == 50
    assert index.search(db.get_codes(new, [ids[7]])[1], 3)[0][0, 0] == 0
    with pytest.raises(ValueError, match="packed uint8 of shape"):
        index.search(stored, 1)  # 16-bit codes for a 24-bit model
    db.close()


def test_a_new_collection_filled_by_two_processes_at_once_keeps_one_row_an_id(codes, tmp_path, monkeypatch):
    """A new collection is filled by inserts (no per-row delete): another process's inserts
    into it at the same time would store ids twice, which the row count after the fill catches."""
    monkeypatch.setenv(milvus_codes.ENVIRONMENT, codes)
    db, model, ids = _random_collection(tmp_path / "twice.db", 200, bits=16)
    index = MilvusCodeIndex(db, "hasher")
    assert index.synced == {"rebuilt": True, "copied": 200, "deleted": 0} and index._row_count() == 200
    index._copy(ids[:120], insert=True)  # the other process, part way through its own fill
    assert index._row_count() == 320
    assert index._fill(ids) == 200 and index._row_count() == 200
    _, stored = db.get_codes(model, ids[:20].tolist())
    distances, found = index.search(stored, 5)
    assert (distances[:, 0] == 0).all() and all(len(set(row)) == 5 for row in found.tolist())
    db.close()


def test_cells(codes, cells):
    """A server: BIN_IVF_FLAT lists searched by probes (exact with every list), kept in step
    like the others. milvus-lite has BIN_FLAT only: cells searches are exact there, and a
    warning says so."""
    db, index, exact, messages = cells
    queries = np.random.default_rng(4).integers(0, 256, (30, 4), dtype=np.uint8)
    want_distances, want_ids = exact.search(queries, 10)
    if codes.endswith(".db"):
        assert not index.cells and index.collection == exact.collection
        assert [message for message in messages if "BIN_IVF_FLAT" in message]
        assert (index.search(queries, 10, 1)[0] == want_distances).all()
        return
    assert not messages
    # sqrt(n) lists: the server trains one IVF per sealed segment, next to the searches
    assert index.cells and index.nlist == isqrt(CELLS) == 54 and index.collection.endswith("_cells")
    distances, _ = index.search(queries, 10, index.nlist)  # every list: exact
    assert (distances == want_distances).all()
    # the server indexed the sealed segment in the background while the other tests ran
    deadline = time.monotonic() + 40
    while True:
        distances, found = index.search(queries, 10, 1)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), want_ids.tolist())])
        if overlap < 1.0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert overlap < 1.0  # one list of 75: an approximate search, through the index
    for row_distances, row_ids in zip(distances, found):
        assert len(set(row_ids.tolist())) == 10 and list(row_distances) == sorted(row_distances)
    # kept in step: added and deleted documents
    model = db.get_model("hasher", with_weights=False).id
    added = db.add_documents([{"external_id": f"new-{i}", "text": "x"} for i in range(10)])
    db.put_codes(model, added, queries[:10])
    with db._engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM documents WHERE id IN (1, 2, 3)"))
    index = MilvusCodeIndex(db, "hasher", cells=True, target=index.target)
    assert index.synced == {"rebuilt": False, "copied": 10, "deleted": 3} and index.ntotal == CELLS + 7
    distances, found = index.search(queries[:10], 1, index.nlist)
    assert (distances[:, 0] == 0).all() and set(found[:, 0].tolist()) <= set(added)
    assert not {1, 2, 3} & set(index.search(queries, 100, index.nlist)[1].ravel().tolist())


def test_cli_commands_with_codes(codes, collection, monkeypatch):
    monkeypatch.delenv(milvus_codes.ENVIRONMENT, raising=False)
    for args in (["search", "orbit shuttle launch nasa", "-k", "5"], ["similar", "train-3", "-k", "4"],
                 ["search", "puck goal", "-k", "5", "--mode", "address"],
                 ["search", "image pixel", "-k", "3", "--space", "euclidean"]):
        local = json.loads(run(*args, "--db", collection, "--json"))
        milvus = json.loads(run(*args, "--db", collection, "--codes", codes, "--json"))
        assert [hit["distance"] for hit in milvus] == [hit["distance"] for hit in local], args
    assert json.loads(run("info", "--db", collection, "--codes", codes, "--json"))["documents"] == POSTS + NOISE
    assert milvus_codes.configured() is None  # --codes held for the command only


def test_a_bad_uri_or_an_unreachable_server_is_one_line(collection, monkeypatch):
    monkeypatch.delenv(milvus_codes.ENVIRONMENT, raising=False)
    for uri, message in (("postgres://x:5432", "is not a Milvus URI"), ("milvus://host:port", "is malformed"),
                         ("codes.txt", "names no Milvus")):
        result = CliRunner().invoke(main, ["search", "orbit", "--db", str(collection), "--codes", uri])
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("Error: ") and message in result.output
    monkeypatch.setenv(milvus_codes.ENVIRONMENT, f"milvus://127.0.0.1:{_free_port()}")
    with pytest.raises(MilvusError, match="cannot reach the Milvus server"):
        SearchEngine(collection).search("orbit", k=3)
    monkeypatch.delenv(milvus_codes.ENVIRONMENT)
    # in its own process, as a user runs it: one line on the terminal, no traceback, no log
    port = _free_port()
    done = subprocess.run([sys.executable, "-m", "semhash.cli", "search", "orbit shuttle", "--db", str(collection),
                           "--codes", f"milvus://127.0.0.1:{port}"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and len(output) == 1, output
    assert output[0].startswith("Error: cannot reach the Milvus server at milvus://127.0.0.1:")
