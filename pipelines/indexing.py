"""From a corpus to a searchable database: read, count words, train, encode, store.

:func:`index_corpus` builds a new database in one go. It trains everything before it
writes anything, and writes into a temporary file that replaces the target only when
complete, so an interrupted or failed run leaves no half-written database (and an
existing one untouched). A server database (a PostgreSQL URL, say) is written in place,
after everything is trained.

:func:`add_documents` encodes new documents with the models already stored (no
retraining), in batches, each batch one transaction: after an interruption, running
it again skips what is stored and finishes the rest.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.estimator import DeepCodeModel
from semhash.hasher import SemanticHasher
from semhash.index.address import DEFAULT_ADDRESS_BITS, check_address_bits, load_or_build_address
from semhash.index.database import Database, DatabaseError
from semhash.index.locks import building_path, database_file, writes_database
from semhash.index.faiss_index import load_or_build
from semhash.index.models import TEXT, load_model, load_vocabulary, model_summary, save_model, save_vocabulary
from semhash.pipelines.corpus import CorpusWarning, Document, read_corpus, sample_documents
from semhash.progress import reports_progress
from semhash.topic_map import TopicMap
from semhash.vectorize import WordCounter, empty_rows

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """What an indexing run did, for the CLI and for scripts."""

    database: str
    documents: int
    skipped_empty: int
    vocabulary: int
    models: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@reports_progress
@writes_database()
def index_corpus(
    source: str | os.PathLike,
    database: str | os.PathLike,
    *,
    subdir: str | None = None,
    n_bits: int = 128,
    map_dims: int = 2,
    address_bits: int = DEFAULT_ADDRESS_BITS,
    vocabulary_size: int = 2000,
    overwrite: bool = False,
    hasher_params: dict | None = None,
    map_params: dict | None = None,
    read_options: dict | None = None,
    sample: int | None = None,
    random_state: int = 0,
    verbose: bool = False,
) -> IndexReport:
    """Read ``source``, train a :class:`SemanticHasher` (and a :class:`TopicMap` unless
    ``map_dims=0``) and a short-code address hasher (``address_bits`` bits, for
    ``SearchEngine(..., mode="address")``; none if 0), and store documents, vocabulary, models and codes in ``database``
    (a new SQLite file), then build its FAISS indexes. ``sample`` keeps a sample of that
    many documents spread across labels (seeded by ``random_state``).
    """
    target = database_file(database)  # None: a server, written in place
    if target is None or target.exists():
        with Database(database, create=target is None) as db:
            stored, location = db.count_documents(), db.location
        if stored and not overwrite:
            raise DatabaseError(
                f"{location} already holds {stored} documents: add to it with `semhash add`, "
                "or rebuild it with --overwrite"
            )
    timings: dict[str, float] = {}

    started = time.perf_counter()
    documents = read_corpus(source, subdir=subdir, **(read_options or {}))
    if sample is not None:
        documents = sample_documents(documents, sample, random_state)
    timings["read"] = time.perf_counter() - started
    log.info(f"read {len(documents)} documents from {source} in {timings['read']:.1f}s")

    started = time.perf_counter()
    counter = WordCounter(max_words=vocabulary_size)
    counts = counter.fit_transform([doc.text for doc in documents])
    documents, counts, skipped = _drop_empty(documents, counts)
    timings["vectorize"] = time.perf_counter() - started
    log.info(f"vocabulary of {len(counter.words_)} words ({timings['vectorize']:.1f}s)")

    models: list[tuple[str, DeepCodeModel]] = []
    started = time.perf_counter()
    hasher = SemanticHasher(n_bits=n_bits, random_state=random_state, **(hasher_params or {}))
    models.append((TEXT.long, hasher.fit(counts)))
    timings["train_hasher"] = time.perf_counter() - started
    if address_bits:
        started = time.perf_counter()
        address = train_address_model(
            counts, n_bits=address_bits, random_state=random_state, **(hasher_params or {})
        )
        models.append((TEXT.address, address))
        timings["train_address"] = time.perf_counter() - started
    if map_dims:
        started = time.perf_counter()
        topic_map = TopicMap(n_components=map_dims, random_state=random_state, **(map_params or {}))
        models.append((TEXT.map, topic_map.fit(counts)))
        timings["train_map"] = time.perf_counter() - started

    started = time.perf_counter()
    encoded = {name: model.transform(counts) for name, model in models}
    timings["encode"] = time.perf_counter() - started

    started = time.perf_counter()
    if target is None:
        with Database(database) as db:
            db.clear()
            _write_collection(db, documents, counter, models, encoded)
    else:
        _write_new_database(target, documents, counter, models, encoded)
    timings["store"] = time.perf_counter() - started

    started = time.perf_counter()
    with Database(database, create=False) as db:
        for name, _ in models:
            if name != TEXT.address:  # searched through its table, not FAISS
                load_or_build(db, name)
        if address_bits:
            load_or_build_address(db)
        location = db.location
    timings["faiss"] = time.perf_counter() - started
    log.info(f"stored {len(documents)} documents and {len(models)} models in {location}")

    return IndexReport(
        database=location,
        documents=len(documents),
        skipped_empty=skipped,
        vocabulary=len(counter.words_),
        models={name: model_summary(model) for name, model in models},
        seconds={key: round(value, 2) for key, value in timings.items()},
    )


def train_address_model(counts, n_bits: int = DEFAULT_ADDRESS_BITS, *, random_state: int = 0,
                        verbose: bool = False, **params) -> SemanticHasher:
    """Train the short-code model whose codes are memory addresses.

    A :class:`SemanticHasher` with ``n_bits`` (20-32 is sensible; at most 32) code units,
    same recipe as the long-code hasher; stored as the collection's address model.
    """
    check_address_bits(n_bits)
    return SemanticHasher(n_bits=n_bits, random_state=random_state, verbose=verbose, **params).fit(counts)


@reports_progress
@writes_database()
def add_documents(
    database: str | os.PathLike,
    source: str | os.PathLike | Sequence[Document],
    *,
    subdir: str | None = None,
    batch_size: int = 2000,
    read_options: dict | None = None,
    verbose: bool = False,
) -> dict:
    """Encode and store new documents with the database's existing models.

    Documents whose external id is already stored are skipped (so a re-run after an
    interruption resumes). Each batch of documents is stored with its codes; if the
    process stops between the two writes, the next run encodes the documents that
    have no codes yet.
    """
    started = time.perf_counter()
    documents = (
        list(source)
        if not isinstance(source, (str, os.PathLike))
        else read_corpus(source, subdir=subdir, **(read_options or {}))
    )
    with Database(database, create=False) as db:
        names = [row.name for row in db.list_models() if row.name in TEXT.code_models]
        if TEXT.long not in names:
            raise DatabaseError(f"{database} has no trained model yet: build it with `semhash index` first")
        loaded = {name: load_model(db, name) for name in names}
        counter = load_vocabulary(db)
        stored = db.stored_external_ids([doc.external_id for doc in documents])
        new = [doc for doc in documents if doc.external_id not in stored]
        log.info(f"{len(documents) - len(new)} of {len(documents)} documents already stored; adding {len(new)}")
        added = skipped = 0
        for start in range(0, len(new), batch_size):
            batch = new[start : start + batch_size]
            counts = counter.transform([doc.text for doc in batch])
            batch, counts, n_empty = _drop_empty(batch, counts)
            skipped += n_empty
            if not batch:
                continue
            ids = db.add_documents([_document_record(doc) for doc in batch])
            codes = [(stored.id, stored.model.transform(counts)) for stored in loaded.values()]
            with db.codes_batch():  # every model's codes of the batch: one commit
                for model_id, model_codes in codes:
                    db.put_codes(model_id, ids, model_codes)
            added += len(batch)
            log.info(f"  stored {added}/{len(new)} documents")
        # Documents stored by an interrupted run before their codes were written.
        for stored in loaded.values():
            missing = db.documents_without_codes(stored.id, kind="text")
            if missing:
                rows = db.get_documents(missing)
                db.put_codes(stored.id, missing, stored.model.transform(counter.transform([row.text or "" for row in rows])))
        for name in loaded:
            if name != TEXT.address:
                load_or_build(db, name)
        if TEXT.address in loaded:
            load_or_build_address(db)
    seconds = time.perf_counter() - started
    return {"added": added, "already_stored": len(documents) - len(new), "skipped_empty": skipped, "seconds": round(seconds, 2)}


def _drop_empty(documents: list[Document], counts):
    """Remove documents with no vocabulary word (they cannot be coded), with a warning."""
    empty = empty_rows(counts)
    if len(empty) == 0:
        return documents, counts, 0
    examples = ", ".join(documents[i].external_id for i in empty[:3])
    warnings.warn(
        f"{len(empty)} documents have no word of the vocabulary (empty or only stop words) "
        f"and were skipped, e.g. {examples}",
        CorpusWarning,
        stacklevel=3,
    )
    keep = np.setdiff1d(np.arange(len(documents)), empty)
    return [documents[i] for i in keep], counts[keep], len(empty)


def _document_record(doc: Document) -> dict:
    return {
        "external_id": doc.external_id,
        "text": doc.text,
        "label": doc.label,
        "labels": doc.labels,
        "title": doc.title,
        "source": doc.source,
        "kind": "text",
    }


def _write_collection(db: Database, documents, counter: WordCounter, models, encoded) -> None:
    """Documents, vocabulary, models and their codes, into an empty database."""
    ids = db.add_documents([_document_record(doc) for doc in documents])
    save_vocabulary(db, counter)
    for name, model in models:
        db.put_codes(save_model(db, name, model), ids, encoded[name])


def _write_new_database(target: Path, documents, counter: WordCounter, models, encoded) -> None:
    """Write everything into a temporary database, then move it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = building_path(target)
    temporary.unlink(missing_ok=True)
    try:
        with Database(temporary) as db:
            _write_collection(db, documents, counter, models, encoded)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
