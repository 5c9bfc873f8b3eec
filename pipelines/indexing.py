"""From a corpus to a searchable database: read, count words, train, encode, store.

:func:`index_corpus` builds a new database from a corpus of any size, in two passes
(:mod:`semhash.pipelines.streaming`): the vocabulary and the models are fitted on a seeded
sample of at most ``train_sample`` documents (every document of a smaller corpus, which
then gets exactly the database it got when it was read whole), then every document is read
again, encoded and stored in batches, with memory bounded whatever the corpus's size. A
new SQLite database is written into a temporary file that replaces the target only when
complete, so a failed run leaves no half-written database (and an existing one
untouched); a run that is killed or interrupted leaves the temporary file, and the same
command run again resumes it. A server database (a PostgreSQL URL, say) is written in
place, after everything is trained; an interrupted build of one is finished by
:func:`add_documents` with the same corpus.

:func:`add_documents` encodes new documents with the models already stored (no
retraining), in batches, each batch one transaction: after an interruption, running
it again skips what is stored and finishes the rest.

Both can encode on Ray workers (``ray="local"``, or a cluster's address), with the same
codes bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from semhash.estimator import DeepCodeModel, ModelFormatError
from semhash.hasher import SemanticHasher
from semhash.index.address import DEFAULT_ADDRESS_BITS, check_address_bits
from semhash.index.database import Database, DatabaseError
from semhash.index.locks import database_file, writes_database
from semhash.index.models import TEXT, load_model, load_vocabulary, model_summary, save_model, save_vocabulary
from semhash.index.search import SearchEngine
from semhash.pipelines.corpus import Document, iter_corpus
from semhash.pipelines.streaming import (
    DEFAULT_TRAIN_SAMPLE,
    ENCODE_BATCH,
    BatchEncoder,
    Building,
    CorpusPasses,
    StoreTimes,
    Tally,
    count_layout,
    encode_missing,
    LocalPool,
    encoded_batches,
    reservoir_sample,
    store_batches,
    unstored_blocks,
)
from semhash.progress import reports_progress
from semhash.topic_map import TopicMap
from semhash.vectorize import WordCounter, without_empty_rows

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """What an indexing run did, for the CLI and for scripts.

    ``trained_on``: documents in the training sample (0 when a run resumed, as it trains
    nothing); ``resumed``: documents an interrupted run had stored, which this one kept."""

    database: str
    documents: int
    skipped_empty: int
    vocabulary: int
    models: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    trained_on: int = 0
    resumed: int = 0

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class _Trained:
    counter: WordCounter
    models: list[tuple[str, DeepCodeModel]]
    layout: np.ndarray
    documents: int  # in the training sample


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
    train_sample: int | None = DEFAULT_TRAIN_SAMPLE,
    ray: str | None = None,
    random_state: int = 0,
    verbose: bool = False,
) -> IndexReport:
    """Read ``source``, train a :class:`SemanticHasher` (and a :class:`TopicMap` unless
    ``map_dims=0``) and a short-code address hasher (``address_bits`` bits, for
    ``SearchEngine(..., mode="address")``; none if 0), and store documents, vocabulary, models and codes in ``database``
    (a new SQLite file), then build its FAISS indexes. ``sample`` keeps a sample of that
    many documents spread across labels (seeded by ``random_state``).

    The vocabulary and the models are fitted on a seeded sample of ``train_sample``
    documents (all of them when there are no more; ``None``: all of them, however many),
    then every document is encoded and stored in batches of :data:`ENCODE_BATCH`, holding
    one batch at a time (see :mod:`semhash.pipelines.streaming`). An interrupted run
    leaves the new file's temporary file, which the same call resumes. ``ray`` encodes
    the batches on Ray workers (``"local"``: a local cluster of 2 CPUs; or an address such
    as ``"auto"`` or ``"ray://host:10001"``), with the same codes.
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
    if train_sample is not None and (isinstance(train_sample, bool) or not isinstance(train_sample, int)
                                     or train_sample < 1):
        raise ValueError(f"train_sample must be a positive number of documents or None, got {train_sample!r}")
    timings: dict[str, float] = {}
    settings = dict(n_bits=n_bits, map_dims=map_dims, address_bits=address_bits, vocabulary_size=vocabulary_size,
                    hasher_params=hasher_params or {}, map_params=map_params or {}, random_state=random_state)

    with CorpusPasses(source, subdir=subdir, read_options=read_options, sample=sample, seed=random_state) as corpus:
        building = state = None
        if target is not None:
            building = Building(target, {**settings, "corpus": corpus.fingerprint(), "subdir": subdir,
                                         "read_options": read_options or {}, "sample": sample,
                                         "train_sample": train_sample, "batch": ENCODE_BATCH})
            state = building.resumable()
        try:
            if state is not None:
                try:
                    with Database(building.path, create=False) as db:
                        counter, models, model_ids = _stored_collection(db, settings)
                    log.info(f"resuming the build in {building.path.name}")
                except (DatabaseError, ModelFormatError) as error:  # damaged: start over
                    log.info(f"cannot resume the build in {building.path.name} ({error}): starting over")
                    building.discard()
                    state = None
            if state is not None:
                encoder = BatchEncoder(counter, dict(models), np.asarray(state["layout"], dtype=np.int64))
                trained_on = 0
            else:
                trained = _train(corpus, train_sample, settings, timings, verbose)
                counter, models, trained_on = trained.counter, trained.models, trained.documents
                started = time.perf_counter()
                model_ids = _store_collection(building.path if building else database, counter, models,
                                              clear=building is None)
                if building is not None:
                    building.trained(trained.layout)
                timings["store"] = time.perf_counter() - started
                encoder = BatchEncoder(counter, dict(models), trained.layout)
            report = _encode_corpus(corpus, building.path if building else database, encoder, model_ids, ray,
                                    timings, verbose)
            if building is not None:
                building.finish()
        except Exception:
            if building is not None:
                building.discard()  # a failure, not an interruption: nothing half-written is left
            raise
        except KeyboardInterrupt:
            if building is not None and building.state_path.exists():
                log.warning(f"interrupted: {building.path} holds what was stored; run the same command again "
                            "to resume")
            raise

    started = time.perf_counter()
    with Database(database, create=False) as db:
        build_search_structures(db)
        location = db.location
    timings["faiss"] = time.perf_counter() - started
    log.info(f"stored {report['documents']} documents and {len(models)} models in {location}")

    return IndexReport(
        database=location,
        documents=report["documents"],
        skipped_empty=report["skipped_empty"],
        vocabulary=len(counter.words_),
        models={name: model_summary(model) for name, model in models},
        seconds={key: round(value, 2) for key, value in timings.items()},
        trained_on=trained_on,
        resumed=report["resumed"],
    )


def _train(corpus: CorpusPasses, train_sample: int | None, settings: dict, timings: dict[str, float],
           verbose: bool) -> _Trained:
    """The first pass: the training sample, its vocabulary, and the models fitted on it."""
    random_state = settings["random_state"]
    started = time.perf_counter()
    if train_sample is None:
        documents = list(corpus.documents(verbose))
        total = len(documents)
    else:
        documents, total = reservoir_sample(corpus.documents(verbose), train_sample, random_state)
    timings["read"] = time.perf_counter() - started
    log.info(f"read {total} documents in {timings['read']:.1f}s; training on "
             f"{'all of them' if len(documents) == total else f'a sample of {len(documents)}'}")

    started = time.perf_counter()
    counter = WordCounter(max_words=settings["vocabulary_size"])
    counts = counter.fit_transform([doc.text for doc in documents])
    layout = count_layout(counts)
    _, _, counts = without_empty_rows(counts)  # the empty ones are told about in the second pass, with every other one
    trained_on = len(documents)
    del documents
    timings["vectorize"] = time.perf_counter() - started
    log.info(f"vocabulary of {len(counter.words_)} words ({timings['vectorize']:.1f}s)")

    hasher_params, map_params = settings["hasher_params"], settings["map_params"]
    models: list[tuple[str, DeepCodeModel]] = []
    started = time.perf_counter()
    hasher = SemanticHasher(n_bits=settings["n_bits"], random_state=random_state, **hasher_params)
    models.append((TEXT.long, hasher.fit(counts)))
    timings["train_hasher"] = time.perf_counter() - started
    if settings["address_bits"]:
        started = time.perf_counter()
        address = train_address_model(counts, n_bits=settings["address_bits"], random_state=random_state,
                                      **hasher_params)
        models.append((TEXT.address, address))
        timings["train_address"] = time.perf_counter() - started
    if settings["map_dims"]:
        started = time.perf_counter()
        topic_map = TopicMap(n_components=settings["map_dims"], random_state=random_state, **map_params)
        models.append((TEXT.map, topic_map.fit(counts)))
        timings["train_map"] = time.perf_counter() - started
    return _Trained(counter, models, layout, trained_on)


def _store_collection(database, counter: WordCounter, models, clear: bool) -> dict[str, int]:
    """The vocabulary and the models, into an empty database (emptied first if ``clear``: a
    server's, rebuilt in place); their ids by name."""
    with Database(database) as db:
        if clear:
            db.clear()
        save_vocabulary(db, counter)
        return {name: save_model(db, name, model) for name, model in models}


def _stored_collection(db: Database, settings: dict):
    """The vocabulary and models of a build being resumed; DatabaseError if incomplete."""
    expected = [TEXT.long] + [TEXT.address] * bool(settings["address_bits"]) + [TEXT.map] * bool(settings["map_dims"])
    names = {row.name for row in db.list_models()}
    if not set(expected) <= names:
        raise DatabaseError(f"{db!r} lacks the models {sorted(set(expected) - names)} of the build it resumes")
    loaded = {name: load_model(db, name) for name in expected}
    return (load_vocabulary(db), [(name, loaded[name].model) for name in expected],
            {name: loaded[name].id for name in expected})


@contextlib.contextmanager
def _encoding_pool(encoder: BatchEncoder, ray: str | None) -> Iterator:
    """Where batches are encoded: this process (``ray=None``), or actors on a Ray cluster
    (``"local"``: one started here with 2 CPUs; else the address of an existing one)."""
    if ray is None:
        yield LocalPool(encoder)
        return
    from semhash.pipelines.ray_encoding import ray_pool

    with ray_pool(ray, encoder.to_state()) as pool:
        yield pool


def _encode_corpus(corpus: CorpusPasses, database, encoder: BatchEncoder, model_ids: dict[str, int],
                   ray: str | None, timings: dict[str, float], verbose: bool) -> dict:
    """The second pass: every document not stored yet, encoded and stored in batches."""
    started = time.perf_counter()
    tally, times = Tally(), StoreTimes()
    with Database(database, create=False) as db, _encoding_pool(encoder, ray) as pool:
        resumed = db.count_documents()
        encode_missing(db, model_ids, pool, ENCODE_BATCH)
        blocks = unstored_blocks(corpus.documents(verbose), ENCODE_BATCH, tally, db if resumed else None)
        added = store_batches(db, model_ids, encoded_batches(blocks, pool, tally), times,
                              progress=lambda n: log.debug(f"  stored {resumed + n} documents"))
        documents = db.count_documents()
    tally.warn_empty(stacklevel=5)
    timings["encode"] = times.encode
    timings["store"] = timings.get("store", 0.0) + times.store
    log.info(f"encoded and stored {added} documents in {time.perf_counter() - started:.1f}s"
             + (f" ({resumed} stored before)" if resumed else ""))
    return {"documents": documents, "skipped_empty": tally.empty, "resumed": resumed}


def build_search_structures(db: Database) -> bool:
    """Build the collection's search structures now (see :meth:`SearchEngine.build_indexes`)
    if they are small, so that the first query finds them ready; else leave them to the
    first search. They are caches of the database, built whenever missing, and the search
    that uses them holds them in memory anyway; building them here would make the memory
    of `index` and `add`, otherwise bounded by a batch, grow with the collection. Small:
    the codes and ids of every model at most :data:`BUILD_SEARCH_BYTES`. True if built."""
    per_document = sum(model.code_width * model.code_dtype.itemsize + 8 for model in db.list_models())
    documents = db.count_documents()
    if documents * per_document > BUILD_SEARCH_BYTES:
        log.info(f"the search structures of {documents} documents are built by the first search "
                 "(`semhash serve` builds them before it answers)")
        return False
    SearchEngine(db).build_indexes(keep=False)
    return True


# Search structures of up to this many bytes of codes and ids are built by `index` and `add`
# (a 128-bit hasher, a 24-bit address model and a 2-D map: 51 bytes a document, 2.6M documents).
BUILD_SEARCH_BYTES = 128 * 2**20


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
    source: str | os.PathLike | Iterable[Document],
    *,
    subdir: str | None = None,
    batch_size: int = 2000,
    read_options: dict | None = None,
    ray: str | None = None,
    verbose: bool = False,
) -> dict:
    """Encode and store new documents with the database's existing models.

    Documents whose external id is already stored are skipped (so a re-run after an
    interruption resumes). Each batch of ``batch_size`` documents is stored with its codes;
    if the process stops between the two writes, the next run encodes the documents that
    have no codes yet. The corpus is streamed (:func:`~semhash.pipelines.corpus.iter_corpus`):
    memory holds a few batches, whatever its size. ``ray`` encodes on Ray workers, as for
    :func:`index_corpus`.
    """
    started = time.perf_counter()
    documents = (
        iter(source)
        if not isinstance(source, (str, os.PathLike))
        else iter_corpus(source, subdir=subdir, verbose=verbose, **(read_options or {}))
    )
    tally, added = Tally(), 0
    with Database(database, create=False) as db:
        names = [row.name for row in db.list_models() if row.name in TEXT.code_models]
        if TEXT.long not in names:
            raise DatabaseError(f"{database} has no trained model yet: build it with `semhash index` first")
        loaded = {name: load_model(db, name) for name in names}
        encoder = BatchEncoder(load_vocabulary(db), {name: stored.model for name, stored in loaded.items()})
        model_ids = {name: stored.id for name, stored in loaded.items()}
        with _encoding_pool(encoder, ray) as pool:
            blocks = unstored_blocks(documents, batch_size, tally, db)
            added = store_batches(db, model_ids, encoded_batches(blocks, pool, tally),
                                  progress=lambda n: log.info(f"  stored {n} documents"))
            # Documents stored by an interrupted run before their codes were written.
            encode_missing(db, model_ids, pool, batch_size)
        read = tally.already_stored + added + tally.empty
        log.info(f"{tally.already_stored} of {read} documents already stored; adding {read - tally.already_stored}")
        build_search_structures(db)
    tally.warn_empty(stacklevel=4)
    seconds = time.perf_counter() - started
    return {"added": added, "already_stored": tally.already_stored, "skipped_empty": tally.empty,
            "seconds": round(seconds, 2)}
