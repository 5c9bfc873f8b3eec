"""One search engine for every collection: documents and images, every strategy, one hit type."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from semhash.index.models import IMAGES, TEXT
from semhash.index.search import Hit, QueryError, SearchEngine, SearchOptions
from semhash.pipelines.images import index_images
from semhash.pipelines.indexing import index_corpus
from tests.conftest import two_class_images, write_topic_posts

TEXT_FIT = dict(hidden_layers=(32,), pretrain_epochs=3, finetune_epochs=15, batch_size=20)
IMAGE_FIT = dict(hidden_layers=(32,), pretrain_epochs=2, finetune_epochs=6, patience=20, batch_size=10)


@pytest.fixture(scope="module")
def text_db(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("text")
    write_topic_posts(folder / "posts.jsonl", "post", 160, seed=0)
    path = folder / "posts.db"
    index_corpus(folder / "posts.jsonl", path, n_bits=16, address_bits=8, vocabulary_size=40,
                 hasher_params=TEXT_FIT, map_params=TEXT_FIT, verbose=False)
    return path


@pytest.fixture(scope="module")
def image_db(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("images")
    pixels, labels = two_class_images(30)
    np.savez(folder / "set.npz", images=pixels, labels=labels)
    path = folder / "images.db"
    with warnings.catch_warnings():  # two classes give few distinct codes, by design here
        warnings.simplefilter("ignore")
        index_images(folder / "set.npz", path, n_bits=16, address_bits=8, hasher_params=IMAGE_FIT)
    return path, pixels


def test_one_engine_answers_text_and_images_with_one_hit_type(text_db, image_db):
    image_path, pixels = image_db
    with SearchEngine(text_db) as text, SearchEngine(image_path) as images:
        assert (text.collection, images.collection) == (TEXT, IMAGES)
        by_text = text.search("orbit shuttle launch nasa", k=5)
        by_pixels = images.search_input(pixels[:1], k=5)
        by_stored = [text.similar("post-0", k=5), images.similar("image:set.npz#0", k=5)]
    for hits in (by_text, by_pixels, *by_stored):
        assert len(hits) == 5 and all(type(hit) is Hit for hit in hits)
        assert [hit.distance for hit in hits] == sorted(hit.distance for hit in hits)
        assert all(isinstance(hit.distance, int) for hit in hits)  # Hamming distances are whole
    assert sum(hit.label == "space" for hit in by_text) >= 3  # chance: 1.25
    assert by_pixels[0].external_id == "image:set.npz#0" and by_pixels[0].snippet == ""
    assert "post-0" not in [hit.external_id for hit in by_stored[0]]
    assert "image:set.npz#0" not in [hit.external_id for hit in by_stored[1]]


@pytest.mark.parametrize("which", ["text", "images"])
def test_every_strategy_serves_both_collections(which, text_db, image_db):
    """Address and cell search covering the whole collection agree with exhaustive search."""
    path = text_db if which == "text" else image_db[0]
    with SearchEngine(path) as engine:
        query = dict(key=engine.db.find_document(1).id, k=20)
        exhaustive = engine.similar(**query)
        whole_ball = engine.similar(**query, mode="address", radius=8, max_candidates=None)
        every_cell = engine.similar(**query, mode="cells", probes=10_000)
        long = engine.collection.long
    # Ties in distance may be ordered differently; the distances may not.
    assert [h.distance for h in whole_ball] == [h.distance for h in exhaustive]
    assert [h.distance for h in every_cell] == [h.distance for h in exhaustive]
    assert (path.parent / f"{path.name}.faiss" / f"cells.{long}.index").is_file()


@pytest.mark.parametrize("options", [{}, {"mode": "address"}, {"mode": "cells", "probes": 2},
                                     {"rerank": True, "candidates": 30}, {"space": "euclidean"}])
def test_many_texts_are_answered_together_as_each_alone(text_db, options):
    """search_many gives each text what search gives it, and a text that cannot be searched
    its own error in its place, without failing the others."""
    with SearchEngine(text_db) as engine:
        words = engine.vocabulary.words_
        texts = [" ".join(words[:6]), "", " ".join(words[10:14]), "qqqq zzzz", " ".join(words[20:30])]
        together = engine.search_many(texts, k=7, **options)
        assert isinstance(together[1], QueryError) and "empty" in str(together[1])
        assert isinstance(together[3], QueryError) and "vocabulary" in str(together[3])
        for i in (0, 2, 4):
            alone = engine.search(texts[i], k=7, **options)
            assert [(h.id, h.distance) for h in together[i]] == [(h.id, h.distance) for h in alone]
        with pytest.raises(QueryError, match="k must be"):
            engine.search_many(texts, k=0)


def test_preloaded_hits_are_answered_without_reading_documents(text_db, monkeypatch):
    """What a server does at start: every item's hit read once, then queries read no document."""
    with SearchEngine(text_db) as engine:
        assert engine.preload_hits() == engine.db.count_documents()
        assert engine.preload_hits(limit=3) == 3
        monkeypatch.setattr(type(engine.db), "get_documents", lambda *args, **kwargs: pytest.fail("read a document"))
        words = engine.vocabulary.words_
        assert len(engine.search(" ".join(words[:6]), k=5)) == 5
        assert len(engine.similar(1, k=5)) == 5


def test_text_search_gains_cells_through_the_cli(text_db):
    from click.testing import CliRunner

    from semhash.cli import main

    result = CliRunner().invoke(main, ["search", "puck goal playoff", "--db", str(text_db), "-k", "3",
                                       "--mode", "cells", "--probes", "2", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 3 and {"id", "distance", "label", "source", "snippet"} <= set(hits[0])


def test_options_are_one_frozen_value_with_library_defaults(text_db):
    options = SearchOptions(k=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.k = 4
    assert SearchOptions.given(options, k=None, mode="cells") == SearchOptions(k=3, mode="cells")
    with pytest.raises(TypeError, match="unknown search options"):
        SearchOptions.given(use_cells=True)
    for bad, message in [(dict(k=0), "k must"), (dict(mode="fast"), "unknown search mode"),
                         (dict(space="euclidean", mode="address"), "hamming space only"),
                         (dict(radius=9), "radius"), (dict(probes=0), "probes")]:
        with pytest.raises(QueryError, match=message):
            SearchOptions(**bad)
    with SearchEngine(text_db, defaults=SearchOptions(k=2)) as engine:
        assert len(engine.search("orbit moon")) == 2  # the engine's defaults when a call says nothing
        assert len(engine.search("orbit moon", k=4)) == 4


def test_what_only_text_can_do_is_refused_on_images(image_db):
    path, _ = image_db
    with SearchEngine(path) as engine:
        with pytest.raises(QueryError, match="needs a text collection"):
            engine.similar(1, k=3, rerank=True)
        with pytest.raises(QueryError, match="no vocabulary"):
            engine.search("a red square", k=3)
