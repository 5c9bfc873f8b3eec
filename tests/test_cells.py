"""Cell search (index/cells.py): k-means cells of long binary codes."""

import warnings

import numpy as np
import pytest

from semhash.index.cells import CellIndex, default_cells, default_cells_path, load_or_build_cells
from semhash.index.database import Database
from semhash.index.cache import sidecar_path
from semhash.codes import pack_bits


def hamming(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes ^ query, axis=1).sum(axis=1)


def clustered_codes(n_clusters=20, per_cluster=50, bits=128, flips=6, seed=0):
    """Codes scattered a few bits around random centres: ``(codes, cluster of each)``."""
    rng = np.random.default_rng(seed)
    centres = rng.random((n_clusters, bits)) < 0.5
    cluster = np.repeat(np.arange(n_clusters), per_cluster)
    bits_of = centres[cluster].copy()
    for row in range(len(bits_of)):
        bits_of[row, rng.choice(bits, flips, replace=False)] ^= True
    return pack_bits(bits_of), cluster


def test_default_cells():
    assert default_cells(0) == 1 and default_cells(10) == 1 and default_cells(100) == 2
    assert default_cells(10_000) == 250  # capped: 40 codes per cell for k-means
    assert default_cells(1_000_000) == 4000  # 4 sqrt(n)


def test_every_cell_is_exhaustive_search_with_ties_by_id():
    codes, _ = clustered_codes()
    ids = np.arange(len(codes)) * 3 + 7  # document ids need not be rows
    cells = CellIndex.build(ids, codes, long_bits=128, n_cells=10)
    assert len(cells) == len(codes) and cells.n_cells == 10 and cells.cell_sizes().sum() == len(codes)
    distances, found = cells.search(codes[:5], 40, n_probe=10)
    for q in range(5):
        d = hamming(codes[q], codes)
        order = np.lexsort((ids, d))[:40]
        np.testing.assert_array_equal(found[q], ids[order])
        np.testing.assert_array_equal(distances[q], d[order])


def test_few_probes_find_the_cluster_and_always_answer_k():
    codes, cluster = clustered_codes()
    cells = CellIndex.build(np.arange(len(codes)), codes, long_bits=128, n_cells=20)
    distances, found = cells.search(codes, 10, n_probe=1)
    # one cell per cluster's worth of codes: the nearest cell holds the query's cluster
    assert (cluster[found] == cluster[:, None]).mean() > 0.95
    assert (np.diff(distances, axis=1) >= 0).all()
    # k larger than any cell: the query visits every cell rather than return fewer
    distances, found = cells.search(codes[0], 300, n_probe=1)
    assert found.shape == (1, 300) and (found >= 0).all()
    np.testing.assert_array_equal(distances[0], np.sort(hamming(codes[0], codes))[:300])
    # k beyond the collection: every code, once
    _, found = cells.search(codes[0], 5000, n_probe=2)
    assert sorted(found[0]) == list(range(len(codes)))
    assert cells.nearest_cells(codes[:3], 4).shape == (3, 4)


def test_build_is_reproducible_and_round_trips_through_bytes():
    codes, _ = clustered_codes(seed=1)
    first = CellIndex.build(np.arange(len(codes)), codes, long_bits=128, n_cells=16, random_state=3)
    second = CellIndex.build(np.arange(len(codes)), codes, long_bits=128, n_cells=16, random_state=3)
    np.testing.assert_array_equal(first.cell_sizes(), second.cell_sizes())
    loaded = CellIndex.from_bytes(first.to_bytes())
    for a, b in zip(first.search(codes[:20], 15, 2), loaded.search(codes[:20], 15, 2)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not a FAISS binary index"):
        CellIndex.from_bytes(b"garbage")


def test_bad_input_is_a_clear_error():
    codes, _ = clustered_codes(n_clusters=2, per_cluster=20)
    with pytest.raises(ValueError, match="packed uint8 of shape"):
        CellIndex.build(np.arange(40), codes[:, :8], long_bits=128)
    with pytest.raises(ValueError, match="multiple of 8"):
        CellIndex.build(np.arange(40), codes, long_bits=100)
    with pytest.raises(ValueError, match="ids repeat"):
        CellIndex.build(np.zeros(40), codes, long_bits=128)
    with pytest.raises(ValueError, match="40 ids but 39"):
        CellIndex.build(np.arange(40), codes[:39], long_bits=128)
    with pytest.raises(ValueError, match="no codes"):
        CellIndex.build(np.arange(0), codes[:0], long_bits=128)
    with pytest.raises(ValueError, match="n_cells"):
        CellIndex.build(np.arange(40), codes, long_bits=128, n_cells=41)
    cells = CellIndex.build(np.arange(40), codes, long_bits=128, n_cells=2)
    with pytest.raises(ValueError, match="k must be"):
        cells.search(codes[0], 0, 1)
    with pytest.raises(ValueError, match="n_probe"):
        cells.search(codes[0], 3, 0)
    with pytest.raises(ValueError, match="query codes"):
        cells.search(codes[0].astype(np.int64), 3, 1)


def store(db: Database, name: str, codes: np.ndarray, start: int = 0) -> list[int]:
    ids = db.add_documents([{"external_id": f"{name}-{start + i}", "text": "x"} for i in range(len(codes))])
    db.put_codes(db.get_model(name).id, ids, codes)
    return ids


def test_load_or_build_saves_reuses_and_rebuilds(tmp_path, monkeypatch):
    codes, _ = clustered_codes()
    with Database(tmp_path / "c.db") as db:
        db.save_model("long", "binary", 128, config={}, weights=b"-", vocabulary=None)
        db.save_model("pixels", "real", 4, config={}, weights=b"-", vocabulary=None)
        ids = store(db, "long", codes[:800])
        built = load_or_build_cells(db, "long")
        path = default_cells_path(db, "long")
        assert path.is_file() and sidecar_path(path).is_file() and len(built) == 800
        assert built.n_cells == default_cells(800)
        # up to date: loaded, not rebuilt
        monkeypatch.setattr(CellIndex, "build", classmethod(lambda *a, **k: pytest.fail("rebuilt")))
        loaded = load_or_build_cells(db, "long")
        np.testing.assert_array_equal(loaded.search(codes[0], 5, 3)[1], built.search(codes[0], 5, 3)[1])
        monkeypatch.undo()
        # new codes make it stale: rebuilt with them
        store(db, "long", codes[800:], start=800)
        assert len(load_or_build_cells(db, "long")) == 1000
        # a damaged file is rebuilt, with a warning, and search still works
        path.write_bytes(b"damaged")
        with pytest.warns(RuntimeWarning, match="does not match its sidecar"):
            again = load_or_build_cells(db, "long")
        assert len(again) == 1000 and again.search(codes[0], 3, 2)[1][0][0] == ids[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_or_build_cells(db, "long")  # the rebuilt file is good
        with pytest.raises(ValueError, match="needs a binary model"):
            load_or_build_cells(db, "pixels")
