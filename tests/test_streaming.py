"""Corpora larger than memory: the streaming reader, the training sample, batches with
bounded memory, and resuming a build that was killed (semhash.pipelines.streaming)."""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from semhash.index.database import Database
from semhash.index.locks import building_path
from semhash.index.models import TEXT, load_model, load_vocabulary
from semhash.pipelines import corpus_common
from semhash.pipelines.corpus import CorpusError, iter_corpus, read_corpus, sample_documents, sample_positions
from semhash.pipelines.indexing import add_documents, index_corpus
from semhash.pipelines.streaming import ENCODE_BATCH, apply_layout, count_layout, reservoir_sample
from semhash.vectorize import WordCounter
from tests.conftest import REPO, TOPIC_WORDS

TINY = dict(hidden_layers=(24,), pretrain_epochs=1, finetune_epochs=1)
TINY_MAP = dict(hidden_layers=(24, 12), pretrain_epochs=1, finetune_epochs=1, tsne_epochs=1, tsne_min_documents=0)
TINY_SETTINGS = dict(n_bits=16, address_bits=8, map_dims=2, vocabulary_size=60, hasher_params=TINY, map_params=TINY_MAP)
# The same settings for `semhash index`.
TINY_CLI = ["--bits", "16", "--address-bits", "8", "--map-dims", "2", "--vocab", "60", "--epochs", "1",
            "--pretrain-epochs", "1", "-q"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread, and a busy machine's other processes cannot
    slow its threads down to a crawl (waiting for each other); the codes do not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_corpus(path: Path, n: int, seed: int = 0, empty_every: int = 0) -> Path:
    """``n`` short posts on four topics plus filler words, as JSONL; every ``empty_every``-th
    one has no vocabulary word (digits and stop words only)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    filler = ["".join(rng.choice(letters, 6)) for _ in range(120)]
    topics = list(TOPIC_WORDS)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            label = topics[i % 4]
            if empty_every and i % empty_every == empty_every - 1:
                text = "the and of 123 456"
            else:
                text = " ".join([*rng.choice(TOPIC_WORDS[label].split(), 8), *rng.choice(filler, 4)])
            handle.write(json.dumps({"id": f"doc-{i}", "text": text, "label": label}) + "\n")
    return path


def collection(path: Path) -> tuple:
    """Everything stored that a build decides: documents (with ids), vocabulary, model
    weights and every model's codes."""
    with Database(path, create=False) as db:
        documents = [(d.id, d.external_id, d.text, d.label, d.source) for d in db.iter_documents(batch_size=5000)]
        models = {row.name: row.weights for row in db.list_models()}
        codes = {row.name: db.get_codes(row.id) for row in db.list_models()}
        return documents, db.get_vocabulary(), models, {k: (ids.tolist(), c.tobytes()) for k, (ids, c) in codes.items()}


# --------------------------------------------------------------------------- the streaming reader


def _tree(root: Path) -> Path:
    for group, texts in (("space", ["orbit launch", "shuttle nasa\nSubject: moon"]), ("hockey", ["puck goal"])):
        (root / group).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / group / f"{i}.txt").write_text(text)
    (root / "hockey" / "latin.txt").write_bytes(b"caf\xe9 goal \x93quoted\x94")
    (root / "empty.txt").write_text("  \n")
    (root / "labels.tsv").write_text("space/0.txt\tspace,physics\nnowhere.txt\tlost\n")
    return root


def _sources(tmp_path: Path) -> dict[str, Path]:
    tree = _tree(tmp_path / "tree")
    jsonl = tmp_path / "posts.jsonl"
    lines = [json.dumps({"id": f"p{i}", "text": f"post {i} \u2028 orbit", "labels": ["a", "b"], "title": "t"})
             for i in range(5)]
    jsonl.write_bytes(("\n".join(lines) + "\n\n" + json.dumps({"text": "  "}) + "\n").encode("utf-8"))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "x", "text": "caf\xe9 \x80 orbit"}\r\n{"id": "y", "text": "plain"}')
    table = tmp_path / "posts.csv"
    table.write_text('id,text,labels\n1,"two\nlines",a\n2,plain,"b,c"\n', encoding="utf-8")
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="root")
    zipped = tmp_path / "tree.zip"
    with zipfile.ZipFile(zipped, "w") as handle:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(tree).as_posix())
    return {"folder": tree, "jsonl": jsonl, "latin-1 jsonl": latin, "csv": table, "tar.gz": archive, "zip": zipped}


def _saved_dataset(tmp_path: Path) -> str:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["space", "hockey"])})
    dataset = datasets.Dataset.from_dict({"text": ["orbit", " ", "puck goal", "moon"], "label": [0, 1, 1, -1]},
                                         features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    return f"hf:{tmp_path / 'saved'}"


@pytest.mark.parametrize("kind", ["folder", "jsonl", "latin-1 jsonl", "csv", "tar.gz", "zip", "hf"])
def test_iter_corpus_yields_what_read_corpus_reads(tmp_path, kind):
    source = _saved_dataset(tmp_path) if kind == "hf" else _sources(tmp_path)[kind]
    subdir = "root" if kind == "tar.gz" else None
    with warnings.catch_warnings(record=True) as whole_warnings:
        warnings.simplefilter("always")
        whole = read_corpus(source, subdir=subdir)
    with warnings.catch_warnings(record=True) as streamed_warnings:
        warnings.simplefilter("always")
        streamed = list(iter_corpus(source, subdir=subdir))
    assert streamed == whole
    assert sorted(str(w.message) for w in streamed_warnings) == sorted(str(w.message) for w in whole_warnings)
    assert list(iter_corpus(source, subdir=subdir, limit=2)) == read_corpus(source, subdir=subdir, limit=2)


def test_iter_corpus_streams_standard_input(monkeypatch):
    data = "".join(json.dumps({"id": f"s{i}", "text": f"orbit {i}"}) + "\n" for i in range(3)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    documents = list(iter_corpus("-"))
    assert [d.external_id for d in documents] == ["s0", "s1", "s2"]
    assert documents[0].source == "standard input:line 1"


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_table_larger_than_the_corpus_bound_streams_its_first_documents(tmp_path, suffix):
    """The bound counts what is read: a limit of documents reads a larger file's first ones,
    and reading the whole file stops, naming the bound, once past it."""
    path = write_corpus(tmp_path / "c.jsonl", 3000)  # about 250 KiB
    if suffix == "csv":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path = tmp_path / "c.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    bound = 64 * 1024
    assert path.stat().st_size > 3 * bound
    first = list(iter_corpus(path, limit=100, max_corpus_bytes=bound))
    assert [d.external_id for d in first] == [f"doc-{i}" for i in range(100)]
    with pytest.raises(CorpusError, match="more than 0.1 MiB of text.*--max-corpus-mb"):
        for _ in iter_corpus(path, max_corpus_bytes=bound):
            pass


def test_iter_corpus_finds_a_repeated_id_far_from_the_first(tmp_path):
    path = write_corpus(tmp_path / "c.jsonl", 9000)
    with path.open("a") as handle:
        handle.write(json.dumps({"id": "doc-17", "text": "again"}) + "\n")
    with pytest.raises(CorpusError, match="duplicate document ids.*'doc-17'"):
        for _ in iter_corpus(path):
            pass


def test_a_hash_collision_is_not_taken_for_a_repeated_id(tmp_path, monkeypatch):
    path = write_corpus(tmp_path / "c.jsonl", 50)
    monkeypatch.setattr(corpus_common, "hash", lambda key: 7, raising=False)  # every id collides
    assert len(list(iter_corpus(path))) == 50
    with path.open("a") as handle:
        handle.write(json.dumps({"id": "doc-3", "text": "again"}) + "\n")
    with pytest.raises(CorpusError, match="1 id occur more than once: 'doc-3'"):
        list(iter_corpus(path))


def test_sample_positions_pick_what_sample_documents_picks(tmp_path):
    documents = read_corpus(write_corpus(tmp_path / "c.jsonl", 103))
    documents = [d if i % 7 else type(d)(d.external_id, d.text) for i, d in enumerate(documents)]  # some unlabelled
    for n, seed in ((10, 0), (50, 3), (102, 1), (500, 0)):
        positions = sample_positions((d.label for d in documents), n, seed)
        assert [documents[i] for i in positions] == sample_documents(documents, n, seed)


def test_reservoir_sample_is_seeded_in_corpus_order_and_whole_when_small(tmp_path):
    documents = read_corpus(write_corpus(tmp_path / "c.jsonl", 500))
    sample, total = reservoir_sample(iter(documents), 50, seed=4)
    assert total == 500 and len(sample) == 50
    assert sample == reservoir_sample(iter(documents), 50, seed=4)[0] != reservoir_sample(iter(documents), 50, seed=5)[0]
    positions = [documents.index(d) for d in sample]
    assert positions == sorted(positions) and positions[-1] > 250  # spread over the corpus, not its head
    assert reservoir_sample(iter(documents), 500, seed=4) == (documents, 500)


def test_count_layout_gives_batches_the_layout_of_fit_transform():
    texts = [d.text for d in read_corpus(REPO / "data" / "20news-bydate.tar.gz", subdir="20news-bydate-test",
                                         limit=1500)]
    counter = WordCounter(max_words=500)
    fitted = counter.fit_transform(texts)
    layout = count_layout(fitted)
    batch = apply_layout(counter.transform(texts[700:1300]), layout)
    expected = fitted[700:1300]
    assert not fitted.has_sorted_indices  # the reason for the layout
    for attribute in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(batch, attribute), getattr(expected, attribute))


# --------------------------------------------------------------------------- indexing in two passes


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """A corpus of 2 batches and more (with documents without a vocabulary word), and it
    indexed on a training sample of 600 of its documents."""
    folder = tmp_path_factory.mktemp("streaming")
    corpus = write_corpus(folder / "big.jsonl", ENCODE_BATCH + 2500, seed=1, empty_every=997)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = index_corpus(corpus, folder / "big.db", train_sample=600, **TINY_SETTINGS)
    return corpus, folder / "big.db", report, caught


def test_a_corpus_larger_than_the_training_sample_is_stored_whole(big_corpus):
    corpus, db_path, report, caught = big_corpus
    n_empty = (ENCODE_BATCH + 2500) // 997
    assert report.trained_on == 600 and report.documents == ENCODE_BATCH + 2500 - n_empty
    assert report.skipped_empty == n_empty
    assert sum("have no word of the vocabulary" in str(w.message) for w in caught) == 1
    with Database(db_path, create=False) as db:
        assert db.count_documents() == report.documents
        assert load_vocabulary(db).n_documents_ == 600  # the vocabulary was fitted on the sample only
        for name in (TEXT.long, TEXT.address, TEXT.map):
            model = db.get_model(name)
            assert db.documents_without_codes(model.id) == []
            assert len(db.get_codes(model.id)[0]) == report.documents
    assert not building_path(db_path).exists() and not list(db_path.parent.glob(".*building*"))


def test_codes_are_those_of_the_corpus_encoded_whole(big_corpus):
    """Batches of ENCODE_BATCH in the layout of the vocabulary's fit: the codes that the
    stored models give all the documents' counts at once, bit for bit (the map's too)."""
    corpus, db_path, _, _ = big_corpus
    sample, _ = reservoir_sample(iter_corpus(corpus), 600, seed=0)  # what the build trained on
    counter = WordCounter(max_words=60)
    layout = count_layout(counter.fit_transform([d.text for d in sample]))
    with Database(db_path, create=False) as db:
        assert load_vocabulary(db).words_ == counter.words_
        texts = [row.text for row in db.iter_documents(batch_size=5000)]
        counts = apply_layout(counter.transform(texts), layout)
        for name in (TEXT.long, TEXT.address, TEXT.map):
            stored = load_model(db, name)
            assert np.array_equal(db.get_codes(stored.id)[1], stored.model.transform(counts)), name


def test_a_corpus_within_the_sample_gets_the_database_of_a_whole_read(tmp_path):
    """Every document in the sample: models fitted on fit_transform's counts of the whole
    corpus, and codes equal to the models' transform of those counts, whatever the batches."""
    corpus = write_corpus(tmp_path / "c.jsonl", ENCODE_BATCH + 300, seed=2, empty_every=500)
    index_corpus(corpus, tmp_path / "s.db", train_sample=10 * ENCODE_BATCH, **TINY_SETTINGS)
    documents = read_corpus(corpus)
    counter = WordCounter(max_words=60)
    counts = counter.fit_transform([d.text for d in documents])
    keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
    with Database(tmp_path / "s.db", create=False) as db:
        assert load_vocabulary(db).words_ == counter.words_
        assert [row.external_id for row in db.iter_documents(batch_size=5000)] == [documents[i].external_id for i in keep]
        for name in (TEXT.long, TEXT.address, TEXT.map):
            stored = load_model(db, name)
            assert np.array_equal(db.get_codes(stored.id)[1], stored.model.transform(counts[keep])), name


def test_memory_stays_flat_as_the_corpus_grows(tmp_path):
    """Python-side peak (tracemalloc: numpy arrays included) of a whole build, 5,000 then
    20,000 documents, training sample fixed: within 1.5x (a build that held the corpus
    would take 4x)."""
    index_corpus(write_corpus(tmp_path / "warm.jsonl", 300), tmp_path / "warm.db", **TINY_SETTINGS)  # imports
    peaks = {}
    for n in (5_000, 20_000):
        corpus = write_corpus(tmp_path / f"c{n}.jsonl", n, seed=3)
        gc.collect()
        tracemalloc.start()
        index_corpus(corpus, tmp_path / f"m{n}.db", train_sample=1000, **TINY_SETTINGS)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[20_000] < 1.5 * peaks[5_000], peaks


def test_a_leftover_of_another_build_is_not_resumed(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 300)
    target = tmp_path / "x.db"
    building = building_path(target)
    index_corpus(write_corpus(tmp_path / "other.jsonl", 200, seed=9), building, train_sample=100, **TINY_SETTINGS)
    state = building.with_name(building.name + ".json")
    state.write_text(json.dumps({"format": "semhash.building", "version": 1, "fingerprint": {"other": 1}, "layout": []}))
    report = index_corpus(corpus, target, train_sample=100, **TINY_SETTINGS)
    assert report.resumed == 0 and report.documents == 300
    assert not building.exists() and not state.exists()


def test_add_streams_and_resumes_with_the_same_codes_as_one_run(tmp_path, big_corpus):
    corpus, db_path, _, _ = big_corpus
    more = write_corpus(tmp_path / "more.jsonl", 700, seed=7)
    more_lines = more.read_text().splitlines()
    # Other ids than the corpus's
    more.write_text("".join(line.replace('"doc-', '"more-') + "\n" for line in more_lines))
    whole, parts = tmp_path / "whole.db", tmp_path / "parts.db"
    for path in (whole, parts):
        path.write_bytes(db_path.read_bytes())
    add_documents(whole, more, batch_size=300)
    head = tmp_path / "head.jsonl"
    head.write_text("".join(line.replace('"doc-', '"more-') + "\n" for line in more_lines[:300]))
    add_documents(parts, head, batch_size=300)
    result = add_documents(parts, more, batch_size=300)
    assert result["already_stored"] == 300 and result["added"] == 400
    assert collection(whole)[3] == collection(parts)[3]


# --------------------------------------------------------------------------- kill and resume


def test_an_interrupted_index_keeps_its_building_file_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C between a batch's documents and its codes: the next run encodes that batch
    from the stored texts, then goes on, to the database of an uninterrupted run."""
    corpus = write_corpus(tmp_path / "c.jsonl", 2 * ENCODE_BATCH + 100, seed=6, empty_every=401)
    straight = tmp_path / "straight.db"
    index_corpus(corpus, straight, train_sample=500, **TINY_SETTINGS)
    real_put_codes, calls = Database.put_codes, []

    def interrupted_put_codes(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the second batch's first model (3 models a batch)
            raise KeyboardInterrupt
        return real_put_codes(self, *args, **kwargs)

    target = tmp_path / "resumed.db"
    monkeypatch.setattr(Database, "put_codes", interrupted_put_codes)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(corpus, target, train_sample=500, **TINY_SETTINGS)
    monkeypatch.setattr(Database, "put_codes", real_put_codes)
    assert building_path(target).exists() and not target.exists()
    # A batch is a block of ENCODE_BATCH documents of the corpus less those without a vocabulary word.
    block_empty = [sum(1 for i in range(b * ENCODE_BATCH, (b + 1) * ENCODE_BATCH) if i % 401 == 400) for b in (0, 1)]
    with Database(building_path(target), create=False) as db:
        assert db.count_documents() == 2 * ENCODE_BATCH - sum(block_empty)
        assert len(db.documents_without_codes(db.get_model(TEXT.long).id)) == ENCODE_BATCH - block_empty[1]

    report = index_corpus(corpus, target, train_sample=500, **TINY_SETTINGS)
    assert report.resumed == 2 * ENCODE_BATCH - sum(block_empty) and report.trained_on == 0
    assert collection(target) == collection(straight)
    assert not list(tmp_path.glob(".*building*"))


_SLOW_CHILD = """
import sys, time
from semhash.index.database import Database
real = Database.codes_batch
def slow(self):
    time.sleep(0.4)  # between a batch's documents and its codes: where a kill hurts most
    return real(self)
Database.codes_batch = slow
from semhash.cli import main
sys.exit(main())
"""


def _stored(building: Path) -> int:
    try:
        with sqlite3.connect(f"file:{building}?mode=ro", uri=True, timeout=0.1) as conn:
            return conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_index_resumes_to_the_database_of_an_uninterrupted_run(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 4 * ENCODE_BATCH + 100, seed=5)
    interrupted, uninterrupted = tmp_path / "killed.db", tmp_path / "straight.db"
    command = [sys.executable, "-c", _SLOW_CHILD, "index", str(corpus), "--train-sample", "800", *TINY_CLI]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as one_torch_thread
    child = subprocess.Popen([*command, "--db", str(interrupted)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    building = building_path(interrupted)
    deadline = time.monotonic() + 240
    try:
        while _stored(building) < 2 * ENCODE_BATCH and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    stored_at_kill = _stored(building)
    assert 2 * ENCODE_BATCH <= stored_at_kill < 4 * ENCODE_BATCH + 100 and not interrupted.exists()

    resumed = subprocess.run([*command, "--db", str(interrupted), "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] == stored_at_kill and report["trained_on"] == 0
    straight = subprocess.run([*command, "--db", str(uninterrupted)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    assert collection(interrupted) == collection(uninterrupted)
    assert not building.exists() and not list(tmp_path.glob(".*building*"))
