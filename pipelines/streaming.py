"""Corpora larger than memory: train on a sample, then encode and store every document in batches.

An index of a large corpus reads it twice (:class:`CorpusPasses`): the first pass keeps a
seeded sample of at most ``train_sample`` documents (reservoir sampling, so one pass and
``train_sample`` documents in memory), on which the vocabulary and the models are fitted;
the second reads every document again, counts its words, encodes it with every model and
stores it with its codes, one batch at a time. Memory holds the sample while training and
a few batches (texts, counts, codes) while encoding, whatever the size of the corpus.

A batch is a block of :data:`ENCODE_BATCH` documents of the corpus (the last fewer), less
those already stored and those with no vocabulary word, whether it is encoded here
(:class:`LocalPool`) or on Ray workers (:mod:`semhash.pipelines.ray_encoding`), which take
a block's texts and give back its codes in one call. Blocks are cut at the same places of
the corpus in every run, so a resumed run encodes the batches an uninterrupted one would
have. A row's code does not depend on the other rows of its batch when the batch has 256
rows or more (the models' sparse path); fewer take another path
(``DeepAutoencoder.encode_matrix``) whose real-valued codes (the map) may differ in their
last bits with the batch, which is why the batches are the same everywhere. The counts are
laid out as the vocabulary's ``fit_transform`` lays them (:func:`count_layout`), so a
corpus that fits the sample gets the codes it got when it was read whole (in the map's
last bits, a last block of fewer than 256 documents may not).

A database being built is a file beside the target (``.<name>.building``) with a small
state file (``.<name>.building.json``: what is being built, and the count layout), written
once the vocabulary and the models are stored in it. Every batch is one transaction for
its documents and one for their codes; a run that is killed leaves both files, and the
same command run again finds them, checks that they belong to the same corpus and options,
and goes on: documents already stored are skipped, those stored without codes encoded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from semhash.index.database import Database, DatabaseError
from semhash.index.locks import building_path
from semhash.pipelines.corpus import CorpusWarning, Document, iter_corpus, sample_positions
from semhash.pipelines.corpus_common import STDIN
from semhash.vectorize import WordCounter, without_empty_rows

log = logging.getLogger(__name__)

# The training sample of `index`: every document of a corpus of up to this many, else a
# seeded sample of this many. Training time grows with the sample (the three default
# models took 386-466 s on the 11,314 posts of 20 Newsgroups, 2 cores: README), so this
# bounds it at about twice that, whatever the size of the corpus.
DEFAULT_TRAIN_SAMPLE = 20_000
# Documents encoded and stored together. The models encode 4,096 rows at a time
# (DeepCodeModel.transform_real), so batches of 4,096 give a corpus read whole its codes.
ENCODE_BATCH = 4096
_STATE_FORMAT = "semhash.building"
_STATE_VERSION = 1
_SPOOL_CHUNK = 2**20


# --------------------------------------------------------------------------- reading twice


class CorpusPasses:
    """A corpus that a build can read as many times as it needs, one document at a time.

    ``documents()`` starts a new pass. Standard input (``-``) is copied to a temporary file
    on the first use (within ``max_corpus_bytes``) and read from there, under its own name.
    With ``sample``, each pass yields the seeded sample of that many documents spread across
    labels that :func:`~semhash.pipelines.corpus.sample_documents` would keep (found by one
    pass over the labels)."""

    def __init__(self, source: str | os.PathLike, *, subdir: str | None = None, read_options: dict | None = None,
                 sample: int | None = None, seed: int = 0) -> None:
        self.source, self.subdir, self.read_options = source, subdir, dict(read_options or {})
        self.sample, self.seed = sample, seed
        self._path: str | os.PathLike = source
        self._name: str | None = None
        self._spool: tempfile.TemporaryDirectory | None = None
        self._stdin_digest: str | None = None
        self._positions: np.ndarray | None = None

    def __enter__(self) -> CorpusPasses:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._spool is not None:
            self._spool.cleanup()
            self._spool = None

    def _readable(self) -> None:
        if os.fspath(self.source) != STDIN or self._spool is not None:
            return
        self._spool = tempfile.TemporaryDirectory(prefix="semhash-stdin-")
        path = Path(self._spool.name) / "standard-input.jsonl"
        limit = self.read_options.get("max_corpus_bytes")
        digest, copied = hashlib.sha256(), 0
        with path.open("wb") as out:
            while chunk := sys.stdin.buffer.read(_SPOOL_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                copied += len(chunk)
                if limit is not None and copied > limit:
                    break  # reading the file then names the bound that was passed
        self._path, self._name, self._stdin_digest = path, "standard input", digest.hexdigest()

    def _pass(self, verbose: bool = False) -> Iterator[Document]:
        self._readable()
        return iter_corpus(self._path, subdir=self.subdir, name=self._name, verbose=verbose, **self.read_options)

    def documents(self, verbose: bool = False) -> Iterator[Document]:
        """A new pass over the corpus (over the sample, with ``sample``)."""
        if self.sample is None:
            return self._pass(verbose)
        if self._positions is None:
            self._positions = sample_positions((doc.label for doc in self._pass()), self.sample, self.seed)
        return _at_positions(self._pass(verbose), self._positions)

    def fingerprint(self) -> dict:
        """What identifies the corpus read: a file's path, size and time, standard input's SHA-256."""
        self._readable()
        if self._stdin_digest is not None:
            return {"source": STDIN, "sha256": self._stdin_digest}
        name = os.fspath(self.source)
        path = Path(name)
        if name.startswith("hf:") or not path.exists():
            return {"source": name}
        stat = path.stat()
        return {"source": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _at_positions(documents: Iterator[Document], positions: np.ndarray) -> Iterator[Document]:
    wanted = iter(positions.tolist())
    target = next(wanted, None)
    for position, document in enumerate(documents):
        if target is None:
            break
        if position == target:
            yield document
            target = next(wanted, None)
    if hasattr(documents, "close"):
        documents.close()


def reservoir_sample(documents: Iterable[Document], k: int, seed: int = 0) -> tuple[list[Document], int]:
    """A seeded uniform sample of ``k`` documents, in corpus order, in one pass holding ``k``
    (reservoir sampling, algorithm R); every document when there are at most ``k``.
    Returns the sample and the number of documents read."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"a training sample must be a positive number of documents, got {k!r}")
    rng = random.Random(seed)
    kept: list[tuple[int, Document]] = []
    total = 0
    for total, document in enumerate(documents, start=1):
        if total <= k:
            kept.append((total, document))
        else:
            slot = rng.randrange(total)
            if slot < k:
                kept[slot] = (total, document)
    kept.sort(key=lambda item: item[0])
    return [document for _, document in kept], total


# --------------------------------------------------------------------------- counting and encoding


def count_layout(counts: sp.csr_matrix) -> np.ndarray:
    """Where each vocabulary word comes in a row of ``counts``, a ``WordCounter.fit_transform``
    result: ranks in which :func:`apply_layout` orders the words of each row.

    ``fit_transform`` leaves each row's words in the order in which the fitted texts first
    used them (scikit-learn's CountVectorizer), not in column order as ``transform`` does; the
    sums of the models' first layer follow that order, and real-valued codes (the map)
    differ in their last bits with it. Scanning the rows in order, each word first met
    comes after all the words met before, which gives the order back."""
    n_words = counts.shape[1]
    columns, first = np.unique(counts.indices, return_index=True)
    rank = np.full(n_words, n_words, dtype=np.int64)  # a word never seen (none, when fitted): last
    rank[columns[np.argsort(first)]] = np.arange(len(columns))
    return rank


def apply_layout(counts: sp.csr_matrix, rank: np.ndarray | None) -> sp.csr_matrix:
    """``counts`` with each row's entries ordered by ``rank`` (None: left in column order)."""
    if rank is None or counts.nnz == 0:
        return counts
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    order = np.lexsort((rank[counts.indices], rows))
    return sp.csr_matrix((counts.data[order], counts.indices[order], counts.indptr.copy()), shape=counts.shape)


class BatchEncoder:
    """Texts to word counts to every model's codes: the vocabulary, the models (by name) and
    the count layout of a collection. :meth:`to_state` and :meth:`from_state` carry it to
    another process as plain data: the vocabulary as JSON (``WordCounter.to_dict``), each
    model as its own safe format (``DeepCodeModel.to_bytes``, read back with weights only)."""

    def __init__(self, counter: WordCounter, models: dict, layout: np.ndarray | None = None) -> None:
        self.counter, self.models, self.layout = counter, dict(models), layout

    def count(self, texts: list[str]) -> sp.csr_matrix:
        return apply_layout(self.counter.transform(texts), self.layout)

    def encode(self, counts: sp.csr_matrix) -> dict[str, np.ndarray]:
        return {name: model.transform(counts) for name, model in self.models.items()}

    def encode_texts(self, texts: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The rows of ``texts`` with no vocabulary word, and every model's codes of the
        others, encoded as one batch."""
        empty, _, counts = without_empty_rows(self.count(texts))
        if counts.shape[0] == 0:
            return empty, {}
        return empty, self.encode(counts)

    def to_state(self) -> dict:
        return {"vocabulary": self.counter.to_dict(),
                "models": {name: model.to_bytes() for name, model in self.models.items()},
                "layout": None if self.layout is None else self.layout.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> BatchEncoder:
        import semhash.hasher, semhash.topic_map  # noqa: E401, F401  (register the model classes)
        from semhash.estimator import DeepCodeModel

        layout = state.get("layout")
        return cls(WordCounter.from_dict(state["vocabulary"]),
                   {name: DeepCodeModel.from_bytes(data) for name, data in state["models"].items()},
                   None if layout is None else np.asarray(layout, dtype=np.int64))


class LocalPool:
    """Encodes in this process: each call does its work at once (its "handle" is the result)."""

    workers = 1

    def __init__(self, encoder: BatchEncoder) -> None:
        self.encoder = encoder

    def encode_texts(self, texts: list[str]):
        return self.encoder.encode_texts(texts)

    def get(self, handle):
        return handle


@dataclass
class Tally:
    """What a pass over the documents set aside: already stored, or without a vocabulary word."""

    already_stored: int = 0
    empty: int = 0
    empty_examples: list[str] = field(default_factory=list)

    def add_empty(self, documents: list[Document], rows: np.ndarray) -> None:
        self.empty += len(rows)
        self.empty_examples += [documents[i].external_id for i in rows[: max(0, 3 - len(self.empty_examples))]]

    def warn_empty(self, stacklevel: int = 3) -> None:
        if self.empty:
            warnings.warn(
                f"{self.empty} documents have no word of the vocabulary (empty or only stop words) "
                f"and were skipped, e.g. {', '.join(self.empty_examples)}",
                CorpusWarning,
                stacklevel=stacklevel,
            )


def unstored_blocks(documents: Iterable[Document], size: int, tally: Tally,
                    db: Database | None = None) -> Iterator[list[Document]]:
    """``documents`` in blocks of ``size``, less those already stored in ``db`` (counted)."""
    iterator = iter(documents)
    while block := list(itertools.islice(iterator, size)):
        if db is not None:
            stored = db.stored_external_ids([doc.external_id for doc in block])
            if stored:
                tally.already_stored += len(stored)
                block = [doc for doc in block if doc.external_id not in stored]
        if block:
            yield block


def encoded_batches(blocks: Iterable[list[Document]], pool, tally: Tally) -> Iterator[tuple[list[Document], dict[str, np.ndarray]]]:
    """Each block's documents that have a vocabulary word, in corpus order, with every
    model's codes: one batch per block.

    Blocks are counted and encoded by ``pool`` in one call each (texts in, codes out: with
    workers, no word counts travel), a few in flight at once (two per worker), which bounds
    what is held; documents with no vocabulary word are dropped and tallied."""
    window = 2 * pool.workers
    in_flight: deque = deque()

    def take() -> tuple[list[Document], dict[str, np.ndarray]]:
        block, handle = in_flight.popleft()
        empty, codes = pool.get(handle)
        if len(empty):
            tally.add_empty(block, empty)
            block = [block[i] for i in np.setdiff1d(np.arange(len(block)), empty)]
        return block, codes

    for block in blocks:
        in_flight.append((block, pool.encode_texts([doc.text for doc in block])))
        while len(in_flight) >= window:
            if (batch := take())[0]:
                yield batch
    while in_flight:
        if (batch := take())[0]:
            yield batch


def document_record(doc: Document) -> dict:
    return {
        "external_id": doc.external_id,
        "text": doc.text,
        "label": doc.label,
        "labels": doc.labels,
        "title": doc.title,
        "source": doc.source,
        "kind": "text",
    }


@dataclass
class StoreTimes:
    encode: float = 0.0  # waiting for the batches' counts and codes (and reading, which feeds them)
    store: float = 0.0


def store_batches(db: Database, model_ids: dict[str, int], batches: Iterator, times: StoreTimes | None = None,
                  progress: Callable[[int], None] | None = None) -> int:
    """Store each batch's documents (one transaction), then every model's codes of them
    (one more); the number stored."""
    times = times if times is not None else StoreTimes()
    added = 0
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        times.encode += time.perf_counter() - started
        if batch is None:
            return added
        documents, codes = batch
        started = time.perf_counter()
        ids = db.add_documents([document_record(doc) for doc in documents])
        with db.codes_batch():  # every model's codes of the batch: one commit
            for name, model_id in model_ids.items():
                db.put_codes(model_id, ids, codes[name])
        times.store += time.perf_counter() - started
        added += len(documents)
        if progress is not None:
            progress(added)


def encode_missing(db: Database, model_ids: dict[str, int], pool, batch_size: int) -> int:
    """Encode the documents an interrupted run stored without some of their codes (a batch
    at most), in batches of ``batch_size`` as the run would have, each once for every model
    that lacks it; the number encoded."""
    missing = {name: set(db.documents_without_codes(model_id, kind="text")) for name, model_id in model_ids.items()}
    every = sorted(set().union(*missing.values()))
    for start in range(0, len(every), batch_size):
        ids = every[start : start + batch_size]
        texts = [row.text or "" for row in db.get_documents(ids)]
        empty, codes = pool.get(pool.encode_texts(texts))  # stored documents have a vocabulary word
        if len(empty):
            raise DatabaseError(f"{len(empty)} stored documents have no word of the stored vocabulary")
        for name, model_id in model_ids.items():
            rows = [row for row, doc_id in enumerate(ids) if doc_id in missing[name]]
            if rows:
                db.put_codes(model_id, [ids[row] for row in rows], codes[name][rows])
    return len(every)


# --------------------------------------------------------------------------- a database being built


class Building:
    """The file a new database is built in, and its state file: what is being built (a
    fingerprint of the corpus and options) and the count layout, written once the
    vocabulary and the models are stored in it."""

    def __init__(self, target: Path, fingerprint: dict) -> None:
        self.target = target
        self.path = building_path(target)
        self.state_path = self.path.with_name(self.path.name + ".json")
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))

    def resumable(self) -> dict | None:
        """The saved state if the building file belongs to this build, else None (and
        whatever was there is removed)."""
        state = None
        if self.path.exists():
            try:
                state = json.loads(self.state_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = None
        if isinstance(state, dict) and state.get("format") == _STATE_FORMAT and state.get("version") == _STATE_VERSION \
                and state.get("fingerprint") == self.fingerprint:
            return state
        if self.path.exists():
            log.info(f"{self.path.name} was left by a build of another corpus or options: starting over")
        self.discard()
        return None

    def trained(self, layout: np.ndarray) -> None:
        """Record that the vocabulary and the models are stored: from now on a run resumes."""
        state = {"format": _STATE_FORMAT, "version": _STATE_VERSION, "fingerprint": self.fingerprint,
                 "layout": layout.tolist()}
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, self.state_path)

    def finish(self) -> None:
        """Move the complete database over the target."""
        os.replace(self.path, self.target)
        self.state_path.unlink(missing_ok=True)

    def discard(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        self.state_path.with_name(self.state_path.name + ".tmp").unlink(missing_ok=True)

