"""Tests for semhash.index.database: round trips, atomicity, validation and safe opening."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from semhash.index.database import Database, DatabaseError, DocumentRow
from semhash.codes import n_bytes, pack_bits


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "semhash.db")
    yield database
    database.close()


def _docs(n: int, prefix: str = "doc", kind: str = "text") -> list[dict]:
    return [
        {"external_id": f"{prefix}{i}", "text": f"text {i}", "label": f"label{i % 3}", "kind": kind}
        for i in range(n)
    ]


def _raw_count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


# --------------------------------------------------------------------------- documents


def test_documents_round_trip_from_dicts_and_objects(db: Database) -> None:
    ids = db.add_documents([
        {"external_id": "a", "text": "alpha", "label": "x", "title": "A", "source": "s1"},
        SimpleNamespace(external_id="b", text="beta", label=None, title=None, source=None, kind="image"),
        {"external_id": "c"},
    ])
    assert ids == sorted(ids) and len(set(ids)) == 3

    rows = db.get_documents([ids[2], ids[0], ids[1]])  # order follows the request
    assert [r.external_id for r in rows] == ["c", "a", "b"]
    assert rows[1] == DocumentRow(ids[0], "a", "text", "s1", "A", "x", "alpha")
    assert rows[2].kind == "image" and rows[2].text == "beta"
    assert rows[0].kind == "text" and rows[0].text is None

    assert db.count_documents() == 3
    assert db.count_documents(kind="image") == 1
    assert db.find_document("b").id == ids[1]
    assert db.find_document(ids[0]).external_id == "a"
    assert db.find_document(str(ids[2])).external_id == "c"  # digits from a command line


def test_missing_documents_raise_key_error(db: Database) -> None:
    (doc_id,) = db.add_documents([{"external_id": "only"}])
    with pytest.raises(KeyError, match="nope"):
        db.find_document("nope")
    with pytest.raises(KeyError, match="999"):
        db.get_documents([doc_id, 999])


def test_iter_documents_pages_in_id_order_and_filters_kind(db: Database) -> None:
    db.add_documents(_docs(7, "t"))
    db.add_documents(_docs(4, "i", kind="image"))
    texts = list(db.iter_documents(kind="text", batch_size=3))
    assert [d.external_id for d in texts] == [f"t{i}" for i in range(7)]
    everything = [d.id for d in db.iter_documents(batch_size=2)]
    assert everything == sorted(everything) and len(everything) == 11


def test_duplicate_in_batch_writes_nothing(db: Database) -> None:
    with pytest.raises(DatabaseError, match="'dup'"):
        db.add_documents([{"external_id": "ok"}, {"external_id": "dup"}, {"external_id": "dup"}])
    assert db.count_documents() == 0


def test_duplicate_with_stored_writes_nothing_and_keeps_old(db: Database) -> None:
    db.add_documents([{"external_id": "a", "text": "original"}])
    with pytest.raises(DatabaseError, match="already stored: 'a'"):
        db.add_documents([{"external_id": "new"}, {"external_id": "a", "text": "changed"}])
    assert db.count_documents() == 1
    assert db.find_document("a").text == "original"


def test_duplicate_error_lists_at_most_five(db: Database) -> None:
    db.add_documents(_docs(8))
    with pytest.raises(DatabaseError) as info:
        db.add_documents(_docs(8))
    message = str(info.value)
    assert "'doc0'" in message and "'doc7'" not in message and "8 in all" in message


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"text": "no id"}, "external_id"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "x", "label": 3}, "label must be a string"),
    ],
)
def test_bad_documents_are_rejected_before_writing(db: Database, doc: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        db.add_documents([{"external_id": "fine"}, doc])
    assert db.count_documents() == 0


# --------------------------------------------------------------------------- models


def test_model_round_trip(db: Database) -> None:
    weights = bytes(range(256)) * 10
    model_id = db.save_model(
        "hasher-128", "binary", 128, {"layers": [2000, 500, 128]}, weights, {"the": 0, "cat": 1}
    )
    model = db.get_model("hasher-128")
    assert model.id == model_id
    assert (model.kind, model.n_dims) == ("binary", 128)
    assert model.config == {"layers": [2000, 500, 128]}
    assert model.weights == weights
    assert model.vocabulary == {"the": 0, "cat": 1}
    assert model.created_at.tzinfo is not None
    assert db.get_model(model_id) == model

    db.save_model("map-2d", "real", 2, {}, b"w", None)
    listed = db.list_models()
    assert [m.name for m in listed] == ["hasher-128", "map-2d"]
    assert all(m.weights is None for m in listed)  # listing never loads weights
    assert listed[1].vocabulary is None


def test_existing_model_name_needs_replace(db: Database) -> None:
    db.save_model("m", "real", 3, {"v": 1}, b"old", None)
    with pytest.raises(DatabaseError, match="replace=True"):
        db.save_model("m", "real", 3, {"v": 2}, b"new", None)
    assert db.get_model("m").weights == b"old"


def test_missing_model_names_known_models(db: Database) -> None:
    db.save_model("hasher-32", "binary", 32, {}, b"", None)
    with pytest.raises(KeyError, match="hasher-32"):
        db.get_model("hasher-64")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("m", "ternary", 8, {}, b"", None), ValueError),
        (("m", "binary", 0, {}, b"", None), ValueError),
        (("m", "binary", 8, {"f": object()}, b"", None), ValueError),
        (("m", "binary", 8, {}, "not bytes", None), TypeError),
    ],
)
def test_bad_models_are_rejected(db: Database, args: tuple, error: type) -> None:
    with pytest.raises(error):
        db.save_model(*args)
    assert db.list_models() == []


def test_replacing_a_model_cascades_to_its_codes(db: Database) -> None:
    ids = db.add_documents(_docs(4))
    old_id = db.save_model("m", "binary", 16, {}, b"v1", None)
    db.put_codes(old_id, ids, np.full((4, 2), 7, dtype=np.uint8))
    new_id = db.save_model("m", "binary", 16, {}, b"v2", None, replace=True)

    assert new_id != old_id  # ids are never reused, so old search indexes go stale
    assert db.get_model("m").weights == b"v2"
    assert _raw_count(db.path, f"SELECT count(*) FROM codes WHERE model_id = {old_id}") == 0
    assert db.get_codes(new_id)[0].size == 0
    assert db.documents_without_codes(new_id) == ids
    assert db.count_documents() == 4  # documents are untouched


# --------------------------------------------------------------------------- codes


def test_binary_codes_round_trip_sorted_by_id(db: Database) -> None:
    ids = db.add_documents(_docs(50))
    model_id = db.save_model("hasher-20", "binary", 20, {}, b"", None)
    rng = np.random.default_rng(0)
    codes = pack_bits(rng.integers(0, 2, (50, 20)))
    order = rng.permutation(50)
    db.put_codes(model_id, np.asarray(ids)[order], codes[order])

    got_ids, got_codes = db.get_codes(model_id)
    assert got_ids.dtype == np.int64 and got_codes.dtype == np.uint8
    assert got_ids.tolist() == ids
    np.testing.assert_array_equal(got_codes, codes)
    assert got_codes.shape == (50, n_bytes(20))

    subset_ids, subset = db.get_codes(model_id, [ids[9], ids[3], 10_000])
    assert subset_ids.tolist() == [ids[3], ids[9]]  # ascending, unknown id left out
    np.testing.assert_array_equal(subset, codes[[3, 9]])


def test_put_codes_upserts(db: Database) -> None:
    ids = db.add_documents(_docs(3))
    model_id = db.save_model("m", "binary", 8, {}, b"", None)
    db.put_codes(model_id, ids, np.array([[1], [2], [3]], dtype=np.uint8))
    db.put_codes(model_id, ids[1:2], np.array([[200]], dtype=np.uint8))
    assert db.get_codes(model_id)[1].ravel().tolist() == [1, 200, 3]


def test_real_codes_round_trip_as_little_endian_float32(db: Database) -> None:
    ids = db.add_documents(_docs(5))
    model_id = db.save_model("map-3d", "real", 3, {}, b"", None)
    codes = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    db.put_codes(model_id, ids, codes)

    got_ids, got = db.get_codes(model_id)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, codes)
    with sqlite3.connect(db.path) as conn:
        blob = conn.execute(
            "SELECT code FROM codes WHERE model_id = ? AND document_id = ?", (model_id, ids[0])
        ).fetchone()[0]
    assert blob == codes[0].astype("<f4").tobytes()


@pytest.mark.parametrize(
    ("kind", "codes", "match"),
    [
        ("binary", np.zeros((3, 3), dtype=np.uint8), r"shape \(3, 2\)"),
        ("binary", np.zeros((2, 2), dtype=np.uint8), r"shape \(3, 2\)"),
        ("binary", np.zeros((3, 2), dtype=np.int64), "uint8"),
        ("real", np.zeros((3, 16), dtype=np.float64), "float32"),
        ("real", np.full((3, 16), np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_put_codes_rejects_wrong_codes(db: Database, kind: str, codes: np.ndarray, match: str) -> None:
    ids = db.add_documents(_docs(3))
    model_id = db.save_model("m", kind, 16, {}, b"", None)
    with pytest.raises(ValueError, match=match):
        db.put_codes(model_id, ids, codes)
    assert db.get_codes(model_id)[0].size == 0


def test_failed_put_codes_keeps_previous_codes(db: Database) -> None:
    ids = db.add_documents(_docs(2))
    model_id = db.save_model("m", "binary", 8, {}, b"", None)
    db.put_codes(model_id, ids, np.array([[1], [2]], dtype=np.uint8))
    before = db.code_fingerprint(model_id)

    with pytest.raises(KeyError, match="12345"):
        db.put_codes(model_id, [ids[0], 12345], np.array([[9], [9]], dtype=np.uint8))
    with pytest.raises(ValueError, match="repeats"):
        db.put_codes(model_id, [ids[0], ids[0]], np.array([[9], [9]], dtype=np.uint8))

    assert db.get_codes(model_id)[1].ravel().tolist() == [1, 2]
    assert db.code_fingerprint(model_id) == before


def test_documents_without_codes_resumes_incremental_indexing(db: Database) -> None:
    ids = db.add_documents(_docs(6))
    image_ids = db.add_documents(_docs(2, "img", kind="image"))
    model_id = db.save_model("m", "binary", 8, {}, b"", None)
    db.put_codes(model_id, ids[:4], np.zeros((4, 1), dtype=np.uint8))
    assert db.documents_without_codes(model_id) == ids[4:] + image_ids
    assert db.documents_without_codes(model_id, kind="text") == ids[4:]


def test_code_fingerprint_tracks_changes(db: Database) -> None:
    ids = db.add_documents(_docs(3))
    model_id = db.save_model("m", "binary", 8, {}, b"", None)
    empty = db.code_fingerprint(model_id)
    db.put_codes(model_id, ids, np.zeros((3, 1), dtype=np.uint8))
    full = db.code_fingerprint(model_id)
    assert full != empty and db.code_fingerprint(model_id) == full  # stable when unchanged

    db.put_codes(model_id, ids[:1], np.ones((1, 1), dtype=np.uint8))  # same count, same ids
    assert db.code_fingerprint(model_id) != full


def test_stats(db: Database) -> None:
    ids = db.add_documents(_docs(5))
    db.add_documents(_docs(2, "img", kind="image"))
    model_id = db.save_model("m", "binary", 8, {}, b"", None)
    db.save_model("n", "real", 2, {}, b"", None)
    db.put_codes(model_id, ids[:3], np.zeros((3, 1), dtype=np.uint8))

    stats = db.stats()
    assert stats["documents"] == 7
    assert stats["documents_by_kind"] == {"image": 2, "text": 5}
    assert stats["labels"] == 3
    assert [(m["name"], m["codes"]) for m in stats["models"]] == [("m", 3), ("n", 0)]
    assert stats["file_size"] == db.path.stat().st_size > 0


# --------------------------------------------------------------------------- opening


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    with Database(path) as first:
        first.add_documents(_docs(3))
    with Database(f"sqlite:///{path}", create=False) as second:
        assert second.path == path
        assert second.count_documents() == 3


def test_in_memory_url(tmp_path: Path) -> None:
    with Database("sqlite://") as memory:
        assert memory.path is None
        memory.add_documents(_docs(2))
        assert memory.count_documents() == 2
        assert memory.stats()["file_size"] is None


def test_missing_database_without_create(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(DatabaseError, match=f"no database at {path}"):
        Database(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"just some notes, not a database\n" * 10,
        np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    ],
    ids=["text", "random-bytes"],
)
def test_non_database_file_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(DatabaseError, match="is not a semhash database: file is not a database") as info:
        Database(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="no 'meta' table"):
        Database(path)
    assert path.read_bytes() == before


def test_newer_schema_version_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="schema version 2 was written by a newer semhash"):
        Database(path)
    assert path.read_bytes() == before


def test_bulk_added_ids_match_their_documents_across_batches_and_deletions(tmp_path: Path) -> None:
    with Database(tmp_path / "ids.db") as db:
        first = db.add_documents(_docs(50))
        with db._engine.begin() as conn:  # delete the newest rows: AUTOINCREMENT never reuses their ids
            conn.exec_driver_sql("DELETE FROM documents WHERE id > 40")
        second = db.add_documents([{"external_id": f"b{i}", "text": f"text {i}"} for i in range(30)])
        assert second == list(range(51, 81)) and first == list(range(1, 51))
        for doc_id, document in zip(second, db.get_documents(second)):
            assert document.id == doc_id and document.external_id == f"b{doc_id - 51}"
        with pytest.raises(DatabaseError, match="already stored: 'b3'"):
            db.add_documents([{"external_id": "c1"}, {"external_id": "b3"}])
        assert db.add_documents([{"external_id": "c1"}]) == [81]


def test_code_writes_change_the_fingerprint_without_touching_the_model_row(db: Database) -> None:
    ids = db.add_documents(_docs(4))
    model_id = db.save_model("m", "binary", 16, config={}, weights=b"w" * 100_000, vocabulary=None)
    db.put_codes(model_id, ids, np.zeros((4, 2), np.uint8))
    before = db.code_fingerprint(model_id)
    db.put_codes(model_id, ids, np.ones((4, 2), np.uint8))  # same ids: only the revision tells
    assert db.code_fingerprint(model_id) != before
    replaced = db.save_model("m", "binary", 16, config={}, weights=b"w", vocabulary=None, replace=True)
    assert db.code_fingerprint(replaced).startswith(f"model={replaced};")


def test_codes_batch_commits_several_put_codes_together_or_none(db: Database) -> None:
    ids = db.add_documents(_docs(3))
    first = db.save_model("a", "binary", 8, config={}, weights=b"w", vocabulary=None)
    second = db.save_model("b", "binary", 8, config={}, weights=b"w", vocabulary=None)
    with db.codes_batch():
        db.put_codes(first, ids, np.full((3, 1), 1, np.uint8))
        with db.codes_batch():  # nested: joins
            db.put_codes(second, ids, np.full((3, 1), 2, np.uint8))
    assert db.get_codes(first)[1].ravel().tolist() == [1, 1, 1]
    assert db.get_codes(second)[1].ravel().tolist() == [2, 2, 2]
    with pytest.raises(KeyboardInterrupt):
        with db.codes_batch():
            db.put_codes(first, ids, np.full((3, 1), 7, np.uint8))
            raise KeyboardInterrupt
    assert db.get_codes(first)[1].ravel().tolist() == [1, 1, 1]  # rolled back
    with pytest.raises(KeyError):
        with db.codes_batch():
            db.put_codes(second, ids, np.full((3, 1), 9, np.uint8))
            db.put_codes(second, [999], np.zeros((1, 1), np.uint8))  # unknown document
    assert db.get_codes(second)[1].ravel().tolist() == [2, 2, 2]


# --------------------------------------------------------------------------- several labels


def test_labels_round_trip_and_single_labels_stay_in_the_label_column(db: Database) -> None:
    from semhash.pipelines.corpus import Document

    ids = db.add_documents([
        {"external_id": "two", "labels": ["x", "y"]},
        {"external_id": "first", "label": "x", "labels": ("x", "z")},
        {"external_id": "one", "label": "y"},
        {"external_id": "listed-one", "labels": ["z"]},
        {"external_id": "none"},
        Document("doc", "text", labels=("w", "x")),
    ])
    rows = db.get_documents(ids)
    assert [(r.label, r.labels) for r in rows] == [
        ("x", ("x", "y")), ("x", ("x", "z")), ("y", ("y",)), ("z", ("z",)), (None, ()), ("w", ("w", "x"))]
    assert db.find_document("two").labels == ("x", "y")
    assert [r.labels for r in db.iter_documents(batch_size=2)] == [r.labels for r in rows]
    # the JSON list is only written for documents with several labels
    assert _raw_count(db.path, "SELECT COUNT(*) FROM documents WHERE labels IS NOT NULL") == 3
    assert db.stats()["labels"] == 4  # w, x, y, z


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"external_id": "x", "labels": "ab"}, "labels must be a list of non-empty strings"),
        ({"external_id": "x", "labels": ["a", 1]}, "labels must be a list of non-empty strings"),
        ({"external_id": "x", "labels": ["a", ""]}, "labels must be a list of non-empty strings"),
        ({"external_id": "x", "labels": ["a", "a"]}, "labels repeat a label"),
        ({"external_id": "x", "label": "b", "labels": ["a", "b"]}, "label 'b' must be the first of labels"),
    ],
)
def test_bad_labels_are_rejected_before_writing(db: Database, doc: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        db.add_documents([{"external_id": "fine"}, doc])
    assert db.count_documents() == 0


def _database_without_labels_column(path: Path) -> Path:
    """A database as written before documents had several labels: no documents.labels column."""
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE documents DROP COLUMN labels")
        conn.execute("INSERT INTO documents (external_id, kind, label, text, created_at) "
                     "VALUES ('old', 'text', 'a', 'old text', '2024-01-01 00:00:00')")
    return path


def test_database_without_labels_column_gains_it_on_opening(tmp_path: Path) -> None:
    path = _database_without_labels_column(tmp_path / "old.db")
    with Database(path, create=False) as db:
        assert db.find_document("old").labels == ("a",)
        db.add_documents([{"external_id": "new", "labels": ["a", "b"]}])
        assert db.find_document("new").labels == ("a", "b")
        assert db.stats()["labels"] == 2
    with sqlite3.connect(path) as conn:
        assert "labels" in [row[1] for row in conn.execute("PRAGMA table_info(documents)")]


def test_read_only_database_without_labels_column_is_a_clear_error(tmp_path: Path) -> None:
    path = _database_without_labels_column(tmp_path / "old.db")
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="predates multi-label documents .* open it once with write access"):
        Database(f"sqlite:///file:{path}?mode=ro&uri=true", create=False)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- pixels and vocabulary


def test_pixels_round_trip_in_their_own_table(db: Database) -> None:
    ids = db.add_documents(_docs(3, "img", kind="image"))
    pixels = np.arange(3 * 12, dtype=np.uint8).reshape(3, 12)
    db.put_pixels(ids, pixels)
    db.put_pixels(ids[1:2], pixels[:1])  # overwrites
    found, stored = db.get_pixels([ids[2], ids[1], 10_000])
    assert found.tolist() == [ids[1], ids[2]] and stored.tolist() == [pixels[0].tolist(), pixels[2].tolist()]
    assert db.stats()["pixels"] == 3 and db.list_models() == []  # pixels are data, not a model
    with pytest.raises(KeyError, match="no document with id"):
        db.put_pixels([10_000], pixels[:1])


def test_legacy_pixel_model_moves_into_the_pixels_table_on_opening(tmp_path: Path) -> None:
    """Databases from before the pixels table kept the pixels as codes of a pseudo-model."""
    path = tmp_path / "old.db"
    with Database(path) as old:
        ids = old.add_documents(_docs(2, "img", kind="image"))
        model = old.save_model("image-pixels", "binary", 16 * 8, {"class": "PixelStore"}, b"", None)
        old.put_codes(model, ids, np.array([[1] * 16, [2] * 16], np.uint8))
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE pixels")
    with Database(path, create=False) as db:
        found, pixels = db.get_pixels()
        assert found.tolist() == ids and pixels[:, 0].tolist() == [1, 2]
        assert [row.name for row in db.list_models()] == []


def test_the_vocabulary_is_stored_once_and_older_copies_are_still_read(db: Database) -> None:
    assert db.get_vocabulary() is None
    db.save_model("old", "binary", 8, {}, b"", {"words": ["legacy"]})
    assert db.get_vocabulary() == {"words": ["legacy"]}  # a database written before
    db.save_vocabulary({"words": ["cat", "dog"]})
    db.save_vocabulary({"words": ["cat", "dog", "eel"]})
    assert db.get_vocabulary() == {"words": ["cat", "dog", "eel"]}


def test_stats_say_what_each_model_costs_a_search(db: Database) -> None:
    db.save_model("long", "binary", 64, {"class": "SemanticHasher", "layers": [10, 64]}, b"", None)
    db.save_model("map", "real", 2, {"class": "TopicMap"}, b"", None)
    models = db.stats()["models"]
    assert [(m["class"], m["code_bytes_per_document"]) for m in models] == [("SemanticHasher", 8), ("TopicMap", 8)]
    assert db.stats()["search_bytes_per_document"] == (8 + 8) + (8 + 8)


def test_altered_model_weights_fail_their_checksum(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Database(path) as db:
        model_id = db.save_model("m", "binary", 8, {}, b"\x01" * 20_000, None)
    with sqlite3.connect(path) as conn:  # 10,000 bytes altered behind semhash's back
        conn.execute("UPDATE models SET weights = ? WHERE id = ?", (b"\x02" * 10_000 + b"\x01" * 10_000, model_id))
    with Database(path, create=False) as db:
        assert db.get_model("m", with_weights=False).name == "m"  # listing reads no weights
        with pytest.raises(DatabaseError, match="do not match their SHA-256 checksum"):
            db.get_model("m")


def test_rows_from_before_checksums_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with Database(path) as db:
        db.save_model("m", "binary", 8, {}, b"weights", None)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE models DROP COLUMN weights_sha256")
    with Database(path, create=False) as db:  # gains the column; the old row has no checksum
        assert db.get_model("m").weights == b"weights"
        db.save_model("n", "binary", 8, {}, b"new", None)
        assert db.get_model("n").weights == b"new"
