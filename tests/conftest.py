"""Shared fixtures: a synthetic topic corpus for fast model tests, and a real
20 Newsgroups subset for the end-to-end tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
NEWSGROUPS = REPO / "data" / "20news-bydate.tar.gz"
# Four groups far apart in topic, so a small model trained for seconds separates them.
# Words of four topics, for small corpora written as a user's files (JSONL) in CLI tests.
TOPIC_WORDS = {
    "space": "orbit shuttle launch nasa rocket moon satellite mission astronaut",
    "hockey": "goal puck team season playoff ice coach score league",
    "graphics": "image pixel render color polygon texture shader bitmap format",
    "mideast": "israel peace arab border treaty government conflict region army",
}
SUBSET_GROUPS = ("comp.graphics", "rec.sport.hockey", "sci.space", "talk.politics.mideast")


def run_cli(*args, **kwargs) -> str:
    """What a command that must succeed prints on stdout: its --json output, free of the
    warnings and progress that go to stderr."""
    from click.testing import CliRunner

    from semhash.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], **kwargs)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


def topic_counts(n_docs: int = 400, n_topics: int = 4, n_words: int = 120, seed: int = 0):
    """Word counts drawn from ``n_topics`` topics, each favouring its own block of words.

    Returns ``(counts CSR float32, labels int array)``. Each document has 20-60 words,
    70% from its topic's block and 30% from the whole vocabulary.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_topics, n_docs)
    block = n_words // n_topics
    rows = []
    for label in labels:
        length = rng.integers(20, 61)
        topical = rng.integers(label * block, (label + 1) * block, int(length * 0.7))
        background = rng.integers(0, n_words, length - len(topical))
        rows.append(np.bincount(np.concatenate([topical, background]), minlength=n_words))
    return sp.csr_matrix(np.array(rows, dtype=np.float32)), labels


def write_topic_posts(path: Path, prefix: str, n: int, seed: int, words: int = 12) -> Path:
    """``n`` short posts on the four topics of :data:`TOPIC_WORDS`, as a user's JSONL corpus."""
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            label = list(TOPIC_WORDS)[i % 4]
            text = " ".join(rng.choice(TOPIC_WORDS[label].split(), words))
            handle.write(json.dumps({"id": f"{prefix}-{i}", "text": text, "label": label}) + "\n")
    return path


def two_class_images(n_per_class: int = 40, seed: int = 0):
    """uint8 (n, 32, 32, 3): class 0 bright left half / red, class 1 bright right half / blue."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    images = np.zeros((len(labels), 32, 32, 3), np.float32)
    images[labels == 0, :, :16, 0] = 0.9
    images[labels == 1, :, 16:, 2] = 0.9
    images += 0.15 * rng.standard_normal(images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def topic_corpus():
    return topic_counts()


@pytest.fixture(scope="session")
def newsgroups_subset(tmp_path_factory):
    """200 train and 50 test posts from each of 4 groups of 20 Newsgroups, as JSONL files."""
    from semhash.pipelines.corpus import read_corpus

    folder = tmp_path_factory.mktemp("newsgroups")
    paths = {}
    for split, per_group in (("train", 200), ("test", 50)):
        documents = read_corpus(NEWSGROUPS, subdir=f"20news-bydate-{split}")
        taken: dict[str, int] = {}
        path = folder / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for doc in documents:
                if doc.label in SUBSET_GROUPS and taken.get(doc.label, 0) < per_group:
                    taken[doc.label] = taken.get(doc.label, 0) + 1
                    record = {"id": doc.external_id, "text": doc.text, "label": doc.label, "title": doc.title}
                    handle.write(json.dumps(record) + "\n")
        paths[split] = path
    return paths


@pytest.fixture(scope="session")
def indexed_news(newsgroups_subset, tmp_path_factory):
    """The 800 train posts of :func:`newsgroups_subset` indexed with quick settings (16-bit
    codes, 8-bit addresses, a 2-D map), once per run: tests that write copy the file."""
    from click.testing import CliRunner

    from semhash.cli import main

    path = tmp_path_factory.mktemp("indexed") / "news.db"
    result = CliRunner().invoke(main, ["index", str(newsgroups_subset["train"]), "--db", str(path), "--bits", "16",
                                       "--epochs", "10", "--pretrain-epochs", "2", "--map-dims", "2",
                                       "--address-bits", "8", "-q"])
    assert result.exit_code == 0, result.output
    return path


def colour_photos(folder: Path, per_colour: int = 30) -> Path:
    """``per_colour`` noisy red and blue 32x32 PNGs in ``folder/red`` and ``folder/blue``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (folder / label).mkdir(parents=True)
        for i in range(per_colour):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def indexed_photos(tmp_path_factory):
    """(database, folder): :func:`colour_photos` indexed by `semhash images index`, once per run."""
    from click.testing import CliRunner

    from semhash.cli import main

    folder = colour_photos(tmp_path_factory.mktemp("photos") / "photos")
    database = folder.parent / "photos.db"
    result = CliRunner().invoke(main, ["images", "index", str(folder), "--db", str(database), "--bits", "16",
                                       "--address-bits", "8", "--epochs", "3", "-q"])
    assert result.exit_code == 0, result.output
    return database, folder


def precision_at_k(neighbour_labels: np.ndarray, query_labels: np.ndarray) -> float:
    return float((neighbour_labels == np.asarray(query_labels)[:, None]).mean())


def pytest_configure(config):
    # 20 Newsgroups has 73 latin-1 posts; the reader says so, as it should, once per read.
    config.addinivalue_line("filterwarnings", "ignore:.*not valid UTF-8:UserWarning")


def noisy_topic_collection(folder: Path, posts: int, noise: int, fit: dict) -> Path:
    """An SQLite file in ``folder``: ``posts`` indexed topic posts (32-bit hasher, 8-bit address,
    2-D map, networks fitted with ``fit``) and ``noise`` documents with random codes under
    every model, whose distances do not tie."""
    import warnings

    from semhash.index.database import Database
    from semhash.pipelines.indexing import index_corpus

    path = folder / "posts.db"
    with warnings.catch_warnings():  # a few seconds of training: the posts' codes collapse, by design here
        warnings.simplefilter("ignore")
        index_corpus(write_topic_posts(folder / "train.jsonl", "train", posts, 0), path, n_bits=32, address_bits=8,
                     vocabulary_size=40, hasher_params=fit, map_params={**fit, "objective": "reconstruction"},
                     verbose=False)
    with Database(path) as db:
        ids = db.add_documents([{"external_id": f"noise-{i}", "text": "noise"} for i in range(noise)])
        rng = np.random.default_rng(0)
        for name in ("hasher", "address"):
            model = db.get_model(name, with_weights=False)
            db.put_codes(model.id, ids, rng.integers(0, 256, (noise, -(-model.n_dims // 8)), dtype=np.uint8))
        model = db.get_model("map", with_weights=False)
        db.put_codes(model.id, ids, rng.normal(size=(noise, model.n_dims)).astype(np.float32))
    return path
