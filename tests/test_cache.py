"""Tests for semhash.index.cache: the life of every derived file (sidecar, checks, rebuild, atomic save)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from semhash.codes import pack_bits
from semhash.index.address import load_or_build_address
from semhash.index.cache import CacheFile, IndexFileError, cache_dir, sidecar_path
from semhash.index.cells import load_or_build_cells
from semhash.index.database import Database
from semhash.index.faiss_index import load_or_build


class ToyError(RuntimeError):
    pass


def _parse(data: bytes, meta: dict) -> list[int]:
    values = list(data)
    if len(values) != meta["n"]:
        raise ValueError(f"{len(values)} values, sidecar says {meta['n']}")
    return values


TOY = CacheFile("toy", lambda values: (bytes(values), {"n": len(values)}), _parse, required=("n",), error=ToyError,
                version=3)


def _legacy_sidecar(path: Path, meta: dict) -> str:
    """The sidecar text the code before semhash.index.cache wrote: its fields, then the file's SHA-256."""
    meta = {**meta, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return json.dumps(meta, indent=2) + "\n"


# --------------------------------------------------------------------------- CacheFile


def test_save_writes_the_file_and_its_sidecar_and_load_reads_them(tmp_path):
    path = tmp_path / "sub" / "toy.bin"
    TOY.save([1, 2, 3], path, "fp-1")
    assert path.read_bytes() == bytes([1, 2, 3])
    assert sidecar_path(path) == tmp_path / "sub" / "toy.bin.json"
    assert sidecar_path(path).read_text() == _legacy_sidecar(path, {"format": 3, "fingerprint": "fp-1", "n": 3})
    assert TOY.load(path, "fp-1") == [1, 2, 3]
    assert TOY.load(path) == [1, 2, 3]  # no fingerprint given: any will do
    assert sorted(p.name for p in path.parent.iterdir()) == ["toy.bin", "toy.bin.json"]  # no temp files


def test_missing_or_stale_files_load_as_none(tmp_path):
    path = tmp_path / "toy.bin"
    assert TOY.load(path, "fp") is None
    TOY.save([1, 2], path, "fp")
    assert TOY.load(path, "other") is None
    assert TOY.load(path, "fp", n=5) is None  # another value of a sidecar field
    assert TOY.load(path, "fp", n=2, absent=None) == [1, 2]  # None: anything goes
    sidecar_path(path).unlink()
    assert TOY.load(path, "fp") is None  # nothing says what the file was built from


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b"\x01"), "toy file .* does not match its sidecar"),
    (lambda path: sidecar_path(path).write_text("{not json"), "toy sidecar .* is unreadable"),
    (lambda path: sidecar_path(path).write_text('{"fingerprint": "fp"}'), "toy sidecar .* is unreadable"),
])
def test_damaged_files_raise_the_kinds_error(tmp_path, damage, message):
    path = tmp_path / "toy.bin"
    TOY.save([1, 2], path, "fp")
    damage(path)
    with pytest.raises(ToyError, match=message) as info:
        TOY.load(path, "fp")
    assert "delete it, it will be rebuilt from the database" in str(info.value)


def test_bytes_the_reader_rejects_are_corrupt(tmp_path):
    path = tmp_path / "toy.bin"
    TOY.save([1, 2], path, "fp")
    meta = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "n": 7}))  # checksum still matches the bytes
    with pytest.raises(ToyError, match=r"toy file .* is corrupt \(2 values, sidecar says 7\)"):
        TOY.load(path, "fp")


def test_load_or_build_loads_an_up_to_date_file_and_rebuilds_otherwise(tmp_path):
    path, builds = tmp_path / "toy.bin", []

    def build():
        builds.append(1)
        return [4, 5]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing or stale file is routine: no warning
        assert TOY.load_or_build(path, "fp", build) == [4, 5] and len(builds) == 1
        assert TOY.load_or_build(path, "fp", build) == [4, 5] and len(builds) == 1  # loaded
        assert TOY.load_or_build(path, "fp", build, n=9) == [4, 5] and len(builds) == 2  # stale field
        assert TOY.load_or_build(path, "fp2", build) == [4, 5] and len(builds) == 3  # stale fingerprint
    assert TOY.load(path, "fp2") == [4, 5]  # saved again
    path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="does not match its sidecar.* -- rebuilding it now"):
        assert TOY.load_or_build(path, "fp2", build) == [4, 5]
    assert TOY.load(path, "fp2") == [4, 5]  # repaired


def test_load_or_build_without_a_path_never_saves(tmp_path):
    assert TOY.load_or_build(None, "fp", lambda: [1]) == [1]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_warns_and_the_built_object_is_used(tmp_path, monkeypatch):
    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.warns(RuntimeWarning, match=r"could not save the toy thing to .*disk full.*using it from memory"):
        assert TOY.load_or_build(tmp_path / "toy.bin", "fp", lambda: [7], name="toy thing") == [7]


def test_cache_dir(tmp_path):
    with Database(tmp_path / "a.db") as db:
        assert cache_dir(db) == tmp_path / "a.db.faiss"
        assert cache_dir(db, tmp_path / "elsewhere") == tmp_path / "elsewhere"
    with Database("sqlite://") as db:
        assert cache_dir(db) is None


# --------------------------------------------------------------------------- files of earlier versions


@pytest.fixture
def db_with_codes(tmp_path):
    rng = np.random.default_rng(0)
    db = Database(tmp_path / "c.db")
    ids = db.add_documents([{"external_id": f"d{i}", "text": ""} for i in range(200)])
    for name, bits in (("hasher", 32), ("address", 12)):
        model_id = db.save_model(name, "binary", bits, {}, b"-", None)
        db.put_codes(model_id, ids, pack_bits(rng.integers(0, 2, (200, bits))))
    model_id = db.save_model("map", "real", 2, {}, b"-", None)
    db.put_codes(model_id, ids, rng.normal(size=(200, 2)).astype(np.float32))
    yield db
    db.close()


def test_files_in_the_earlier_layout_load_without_a_rebuild(db_with_codes, monkeypatch):
    """Sidecars as written before the cache module (same fields, same order) load as they are."""
    import faiss

    db, folder = db_with_codes, db_with_codes.path.with_name("c.db.faiss")
    load_or_build(db, "hasher"), load_or_build(db, "map"), load_or_build_address(db), load_or_build_cells(db, "hasher")
    fp = {name: db.code_fingerprint(db.get_model(name).id) for name in ("hasher", "address", "map")}
    legacy = {
        "hasher.index": {"format": 1, "fingerprint": fp["hasher"], "kind": "binary", "dims": 32, "ntotal": 200,
                         "faiss_version": faiss.__version__},
        "map.index": {"format": 1, "fingerprint": fp["map"], "kind": "real", "dims": 2, "ntotal": 200,
                      "faiss_version": faiss.__version__},
        "address.table": {"format": 1, "fingerprint": f"address[{fp['address']}]|long[{fp['hasher']}]",
                          "kind": "address", "address_bits": 12, "long_bits": 32, "ntotal": 200},
        "cells.hasher.index": {"format": 1, "fingerprint": fp["hasher"], "kind": "cells", "long_bits": 32,
                               "n_cells": 5, "ntotal": 200, "faiss_version": faiss.__version__},
    }
    for name, meta in legacy.items():
        text = _legacy_sidecar(folder / name, meta)
        assert sidecar_path(folder / name).read_text() == text  # the layout has not changed
        sidecar_path(folder / name).write_text(text)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a file in the earlier layout was rebuilt")

    monkeypatch.setattr(db, "get_codes", no_rebuild)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_build(db, "hasher").ntotal == 200 and load_or_build(db, "map").ntotal == 200
        assert len(load_or_build_address(db)) == 200 and len(load_or_build_cells(db, "hasher")) == 200


def test_index_error_is_still_importable_from_faiss_index():
    from semhash.index.faiss_index import IndexFileError as from_faiss_index

    assert from_faiss_index is IndexFileError
