"""Every command on a real PostgreSQL server (started here on 127.0.0.1), through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from semhash.cli import main
from tests.conftest import run_cli as run, two_class_images, write_topic_posts
from tests.servers import has_pgvector, new_database, postgres_server

pytestmark = pytest.mark.slow
FIT = ["--bits", "16", "--epochs", "3", "--pretrain-epochs", "1", "--vocab", "40", "--address-bits", "8", "-q"]


@pytest.fixture(scope="module")
def server():
    with postgres_server() as url:
        yield url




def test_text_commands_on_postgresql(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMHASH_CACHE_DIR", str(tmp_path / "cache"))
    url = new_database(server, "posts")
    run("index", write_topic_posts(tmp_path / "train.jsonl", "train", 120, 0), "--db", url, *FIT)
    assert not list(tmp_path.glob("postgresql*")), "the URL must not become a local file"
    added = json.loads(run("add", write_topic_posts(tmp_path / "more.jsonl", "more", 20, 1), "--db", url, "-q", "--json"))
    assert added["added"] == 20
    assert json.loads(run("info", "--db", url, "--json"))["documents"] == 140
    for mode in ("exhaustive", "address", "cells"):
        hits = json.loads(run("search", "orbit shuttle launch nasa", "--db", url, "-k", "5", "--mode", mode, "--json"))
        assert len(hits) == 5, mode
    similar = json.loads(run("similar", "train-0", "--db", url, "-k", "3", "--json"))
    assert "train-0" not in [hit["external_id"] for hit in similar]
    recalled = json.loads(run("recall", "puck goal team season playoff ice", "--db", url, "--json"))
    assert recalled and recalled[0]["label"] == "hockey"
    run("map", "--db", url, "--out", tmp_path / "map.png", "-q")
    assert (tmp_path / "map.png").stat().st_size > 0
    report = json.loads(run("evaluate", "--db", url, "--queries", write_topic_posts(tmp_path / "test.jsonl", "test", 20, 2),
                            "--json", "-q"))
    assert report["methods"]
    assert run("encode", "orbit moon", "--db", url).strip()
    # the derived search files are kept in the per-URL cache folder, not rebuilt by every process
    # (with pgvector the long codes are searched in PostgreSQL: no local file for them)
    saved = {path.name for path in (tmp_path / "cache").rglob("*") if path.is_file()}
    in_postgres = has_pgvector(server)
    assert {"map.index", "address.table"} | (set() if in_postgres else {"hasher.index"}) <= saved, saved
    assert ("hasher.index" in saved) != in_postgres, saved
    # indexing again needs --overwrite, and then rebuilds the collection in place
    result = CliRunner().invoke(main, ["index", str(tmp_path / "train.jsonl"), "--db", url, *FIT])
    assert result.exit_code == 1 and "already holds 140 documents" in result.output
    run("index", tmp_path / "train.jsonl", "--db", url, *FIT, "--overwrite")
    assert json.loads(run("info", "--db", url, "--json"))["documents"] == 120


def test_image_commands_on_postgresql(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMHASH_CACHE_DIR", str(tmp_path / "cache"))
    url = new_database(server, "photos")
    pixels, labels = two_class_images(20)
    np.savez(tmp_path / "set.npz", images=pixels, labels=labels)
    stored = json.loads(run("images", "index", tmp_path / "set.npz", "--db", url, "--bits", "16", "--address-bits", "8",
                            "--epochs", "3", "-q", "--json"))
    assert stored["added"] == 40 and stored["database"] == url
    from PIL import Image

    Image.fromarray(pixels[0]).save(tmp_path / "query.png")
    hits = json.loads(run("images", "search", tmp_path / "query.png", "--db", url, "-k", "4", "--json"))
    assert len(hits) == 4 and hits[0]["distance"] == 0
    assert len(json.loads(run("images", "similar", "image:set.npz#1", "--db", url, "-k", "3", "--mode", "cells",
                              "--json"))) == 3
    run("images", "map", "--db", url, "--out", tmp_path / "photos.png", "--epochs", "2", "-q")
    assert (tmp_path / "photos.png").stat().st_size > 0


def test_a_database_dropped_without_close_closes_its_connections(server):
    # Otherwise psycopg warns about each pooled connection when it is collected, at whatever
    # later moment, into whatever a command is then printing.
    import gc
    import warnings

    from semhash.index.database import Database

    url = new_database(server, "dropped")
    db = Database(url)
    assert db.count_documents() == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del db
        gc.collect()
    assert not [w for w in caught if "still open" in str(w.message)], [str(w.message) for w in caught]
