"""Tests for semhash.index.faiss_index: exact search, atomic files, staleness and rebuilding."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semhash.index.cache import sidecar_path
from semhash.index.database import Database
from semhash.index.faiss_index import (
    BinaryCodeIndex,
    IndexFileError,
    RealCodeIndex,
    default_index_path,
    load_index,
    load_or_build,
    save_index,
)
from semhash.codes import hamming_distances, pack_bits, unpack_bits


def _random_binary(n: int, n_bits: int, seed: int) -> np.ndarray:
    return pack_bits(np.random.default_rng(seed).integers(0, 2, (n, n_bits)))


def _binary_index(
    n: int = 300, n_bits: int = 64, seed: int = 0
) -> tuple[BinaryCodeIndex, np.ndarray, np.ndarray]:
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    codes = _random_binary(n, n_bits, seed)
    index = BinaryCodeIndex(n_bits)
    index.add(ids, codes)
    return index, ids, codes


# --------------------------------------------------------------------------- search


def test_binary_search_matches_brute_force_hamming() -> None:
    index, ids, codes = _binary_index()
    queries = _random_binary(12, 64, seed=1)
    distances, found = index.search(queries, k=10)

    assert distances.dtype == np.int32 and found.dtype == np.int64
    assert distances.shape == found.shape == (12, 10)
    truth = hamming_distances(queries, codes)
    position = {int(doc_id): i for i, doc_id in enumerate(ids)}
    for q in range(len(queries)):
        # Same k smallest distances, and each hit really is at the distance reported.
        np.testing.assert_array_equal(distances[q], np.sort(truth[q])[:10])
        assert [truth[q, position[int(d)]] for d in found[q]] == distances[q].tolist()
        assert len(set(found[q].tolist())) == 10


def test_real_search_matches_brute_force_euclidean() -> None:
    rng = np.random.default_rng(3)
    codes = rng.normal(size=(400, 8)).astype(np.float32)
    ids = rng.permutation(10_000)[:400].astype(np.int64)
    index = RealCodeIndex(8)
    index.add(ids, codes)
    queries = rng.normal(size=(25, 8)).astype(np.float32)  # >= 20 queries: FAISS's BLAS path

    distances, found = index.search(queries, k=7)
    truth = np.linalg.norm(queries[:, None, :] - codes[None, :, :], axis=2)
    nearest = np.argsort(truth, axis=1)[:, :7]
    np.testing.assert_array_equal(found, ids[nearest])
    np.testing.assert_allclose(distances, np.take_along_axis(truth, nearest, axis=1), rtol=1e-4, atol=1e-4)


def test_search_never_returns_padding() -> None:
    index, ids, _ = _binary_index(n=4, n_bits=16)
    distances, found = index.search(_random_binary(2, 16, seed=5), k=10)
    assert found.shape == distances.shape == (2, 4)  # all 4 codes, no -1 fillers
    assert set(found.ravel().tolist()) == set(ids.tolist())

    empty = RealCodeIndex(3)
    distances, found = empty.search(np.zeros((2, 3), dtype=np.float32), k=5)
    assert found.shape == distances.shape == (2, 0)


def test_remove_ids_and_reconstruct() -> None:
    index, ids, codes = _binary_index(n=20, n_bits=32)
    np.testing.assert_array_equal(index.reconstruct(ids[5]), codes[5])
    assert index.remove_ids(ids[:5]) == 5
    assert index.ntotal == 15
    _, found = index.search(codes[:5], k=15)
    assert not set(found.ravel().tolist()) & set(ids[:5].tolist())
    with pytest.raises(KeyError, match=str(ids[0])):
        index.reconstruct(ids[0])
    index.add(ids[:1], codes[:1])  # a removed id can come back (re-encoding)
    np.testing.assert_array_equal(index.reconstruct(ids[0]), codes[0])


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        BinaryCodeIndex(20)
    index, ids, codes = _binary_index(n=5, n_bits=16)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        index.add(np.array([1, 2]), np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="2 ids but 1 codes"):
        index.add(np.array([1, 2]), np.zeros((1, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[:1], codes[:1])
    with pytest.raises(ValueError, match="float32"):
        RealCodeIndex(4).add(np.array([1]), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="k must be"):
        index.search(codes, k=0)
    assert index.ntotal == 5


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_save_and_load_round_trip(tmp_path: Path, kind: str) -> None:
    if kind == "binary":
        index, _, codes = _binary_index(n=50, n_bits=24)
    else:
        codes = np.random.default_rng(4).normal(size=(50, 5)).astype(np.float32)
        index = RealCodeIndex(5)
        index.add(np.arange(50), codes)
    path = tmp_path / "m.index"
    save_index(index, path, "fp-1")

    meta = json.loads(sidecar_path(path).read_text())
    assert (meta["fingerprint"], meta["kind"], meta["ntotal"]) == ("fp-1", kind, 50)
    loaded = load_index(path, expected_fingerprint="fp-1")
    assert type(loaded) is type(index) and loaded.ntotal == 50
    for before, after in zip(index.search(codes[:3], 5), loaded.search(codes[:3], 5)):
        np.testing.assert_array_equal(before, after)


def test_load_index_missing_or_stale_is_none(tmp_path: Path) -> None:
    path = tmp_path / "m.index"
    assert load_index(path) is None
    save_index(_binary_index(n=3, n_bits=8)[0], path, "old")
    assert load_index(path, expected_fingerprint="new") is None
    assert load_index(path, expected_fingerprint="old").ntotal == 3
    sidecar_path(path).unlink()
    assert load_index(path) is None  # nothing says what the file was built from


def test_crash_during_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.index"
    save_index(_binary_index(n=10, n_bits=8, seed=1)[0], path, "v1")
    old_bytes, old_meta = path.read_bytes(), sidecar_path(path).read_bytes()

    def crash(*args: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_index(_binary_index(n=99, n_bits=8, seed=2)[0], path, "v2")
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes and sidecar_path(path).read_bytes() == old_meta
    assert load_index(path, expected_fingerprint="v1").ntotal == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.index", "m.index.json"]  # no temp files


def test_crash_between_index_and_sidecar_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.index"
    save_index(_binary_index(n=10, n_bits=8, seed=1)[0], path, "v1")
    real_replace, calls = os.replace, []

    def crash_on_sidecar(src: str, dst: str) -> None:
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_sidecar)
    with pytest.raises(OSError):
        save_index(_binary_index(n=99, n_bits=8, seed=2)[0], path, "v2")
    monkeypatch.undo()

    assert len(calls) == 2  # the new index file landed, its sidecar did not
    assert load_index(path, expected_fingerprint="v2") is None  # sidecar still says v1
    with pytest.raises(IndexFileError, match="does not match its sidecar"):
        load_index(path, expected_fingerprint="v1")  # the v1 sidecar must not vouch for v2 bytes


def test_truncated_index_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.index"
    save_index(_binary_index(n=30, n_bits=16)[0], path, "fp")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(IndexFileError, match="delete it, it will be rebuilt") as info:
        load_index(path, expected_fingerprint="fp")
    assert str(path) in str(info.value)


def test_garbage_that_faiss_cannot_parse_is_reported(tmp_path: Path) -> None:
    # Even with a matching checksum, FAISS's own error is wrapped with the path.
    path = tmp_path / "m.index"
    save_index(_binary_index(n=3, n_bits=8)[0], path, "fp")
    garbage = b"not a faiss index at all" * 4
    path.write_bytes(garbage)
    meta = json.loads(sidecar_path(path).read_text())
    meta["sha256"] = hashlib.sha256(garbage).hexdigest()
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="is corrupt"):
        load_index(path)


# --------------------------------------------------------------------------- load_or_build


@pytest.fixture
def filled_db(tmp_path: Path) -> Iterator[Database]:
    """A database with 60 documents and a 20-bit binary model (not a whole number of bytes)."""
    db = Database(tmp_path / "corpus.db")
    ids = db.add_documents([{"external_id": f"d{i}", "text": f"text {i}"} for i in range(60)])
    model_id = db.save_model("hasher-20", "binary", 20, {}, b"weights", None)
    db.put_codes(model_id, ids, _random_binary(60, 20, seed=7))
    yield db
    db.close()


def test_load_or_build_saves_next_to_database_then_loads(
    filled_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = filled_db.path.with_name("corpus.db.faiss") / "hasher-20.index"
    assert default_index_path(filled_db, "hasher-20") == path
    built = load_or_build(filled_db, "hasher-20")
    assert built.ntotal == 60 and path.is_file()

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date index file must be loaded, not rebuilt")

    monkeypatch.setattr(filled_db, "get_codes", no_rebuild)
    loaded = load_or_build(filled_db, "hasher-20")
    np.testing.assert_array_equal(np.sort(loaded.ids), np.sort(built.ids))


def test_stale_index_is_rebuilt(filled_db: Database) -> None:
    load_or_build(filled_db, "hasher-20")
    model = filled_db.get_model("hasher-20")
    (new_id,) = filled_db.add_documents([{"external_id": "late"}])
    filled_db.put_codes(model.id, [new_id], _random_binary(1, 20, seed=8))

    index = load_or_build(filled_db, "hasher-20")
    assert index.ntotal == 61 and new_id in index.ids
    path = default_index_path(filled_db, model.name)
    assert load_index(path, filled_db.code_fingerprint(model.id)).ntotal == 61  # saved again


def test_reencoded_codes_make_the_index_stale(filled_db: Database) -> None:
    model = filled_db.get_model("hasher-20")
    load_or_build(filled_db, model.name)
    ids, codes = filled_db.get_codes(model.id)
    flipped = pack_bits(1 - unpack_bits(codes[:1], 20))  # same ids, same count, new code
    filled_db.put_codes(model.id, ids[:1], flipped)
    index = load_or_build(filled_db, model.name)
    np.testing.assert_array_equal(index.reconstruct(ids[0]), flipped[0])


def test_corrupt_index_is_rebuilt_with_a_warning(filled_db: Database) -> None:
    path = default_index_path(filled_db, "hasher-20")
    load_or_build(filled_db, "hasher-20")
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        index = load_or_build(filled_db, "hasher-20")
    assert index.ntotal == 60
    fingerprint = filled_db.code_fingerprint(filled_db.get_model("hasher-20").id)
    assert load_index(path, fingerprint).ntotal == 60  # the file was repaired


def test_missing_index_file_is_rebuilt(filled_db: Database) -> None:
    path = default_index_path(filled_db, "hasher-20")
    load_or_build(filled_db, "hasher-20")
    path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing file is routine, not worth a warning
        assert load_or_build(filled_db, "hasher-20").ntotal == 60
    assert path.is_file()


def test_end_to_end_binary_search_finds_each_document(filled_db: Database) -> None:
    model = filled_db.get_model("hasher-20")
    ids, codes = filled_db.get_codes(model.id)
    index = load_or_build(filled_db, model.name)

    distances, found = index.search(codes, k=3)
    truth = hamming_distances(codes, codes)
    assert (distances[:, 0] == 0).all()  # every document's nearest code is at distance 0
    for q in range(len(ids)):
        # duplicates of a code may tie with the document itself; the distances must agree
        assert ids[q] in found[q][distances[q] == 0]
        np.testing.assert_array_equal(distances[q], np.sort(truth[q])[:3])
    docs = filled_db.get_documents(found[:, 0][:2].tolist())
    assert all(doc.external_id.startswith("d") for doc in docs)


def test_end_to_end_real_model_in_memory_database(tmp_path: Path) -> None:
    with Database("sqlite://") as db:
        ids = db.add_documents([{"external_id": f"p{i}"} for i in range(30)])
        points = np.random.default_rng(9).normal(size=(30, 2)).astype(np.float32)
        model_id = db.save_model("map-2d", "real", 2, {}, b"", None)
        db.put_codes(model_id, ids, points)

        index = load_or_build(db, "map-2d")  # no file: built in memory, not saved
        assert index.ntotal == 30 and list(tmp_path.iterdir()) == []
        distances, found = index.search(points[:1] + np.float32(1e-3), k=1)
        assert found[0, 0] == ids[0] and distances[0, 0] == pytest.approx(np.sqrt(2) * 1e-3, rel=1e-2)

        saved = load_or_build(db, model_id, index_dir=tmp_path)
        assert (tmp_path / "map-2d.index").is_file() and saved.ntotal == 30
