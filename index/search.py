"""Answering queries over a stored collection, of documents or of images: one engine.

A query becomes codes under the collection's models (:mod:`semhash.index.models`), and the
codes are looked up in one of two spaces:

* ``space="hamming"``: the long binary codes, by Hamming distance;
* ``space="euclidean"``: the real map codes, by Euclidean distance.

In the Hamming space three strategies find the neighbours:

* ``mode="exhaustive"``: every code is compared (FAISS, exact);
* ``mode="address"``: semantic hashing proper: only the items whose short address code lies
  within ``radius`` bits of the query's are looked at, nearest addresses first, at most
  ``max_candidates`` of them, ranked by their long codes (:mod:`semhash.index.address`);
  exhaustive when the ball holds fewer than ``k``;
* ``mode="cells"``: the ``probes`` k-means cells of long codes nearest the query's
  (:mod:`semhash.index.cells`).

Text collections can also re-rank (``rerank=True``): the Hamming search is a fast filter
for ``candidates`` documents, which are then ordered by TF-IDF cosine (distance reported as
``1 - cosine``), the two stages of Salakhutdinov & Hinton (2009).

A query is free text (text collections), the model's input (word counts or pixels), a
stored item ("more like this", itself excluded), or a binary code in hex.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np

from semhash.baselines import TfidfCosine
from semhash.codes import from_hex
from semhash.index.address import DEFAULT_MAX_CANDIDATES, AddressResult, load_or_build_address
from semhash.index.cells import load_or_build_cells
from semhash.index.database import Database, DocumentRow, UsesDatabase
from semhash.index.document_store import NoSuchDocument
from semhash.index.faiss_index import load_or_build
from semhash.index.models import TEXT, Collection, StoredModel, collection_of, load_model, load_vocabulary
from semhash.index.pgvector_codes import database_index
from semhash.vectorize import without_empty_rows

SPACES = ("hamming", "euclidean")
MODES = ("exhaustive", "address", "cells")
MAX_RADIUS = 8  # a ball of radius 8 around a 24-bit address already holds 1.1 million addresses
SNIPPET_CHARS = 200
HIT_CACHE_SIZE = 100_000  # stored items' hits kept in memory (a few hundred bytes each)


class QueryError(ValueError):
    """A query that cannot be answered as asked (no known words, unknown space, ...)."""


@dataclass(frozen=True)
class SearchOptions:
    """How to search. ``radius=None`` takes the collection's own default."""

    k: int = 10
    space: str = "hamming"
    mode: str = "exhaustive"
    radius: int | None = None  # address: Hamming radius of the ball
    max_candidates: int | None = DEFAULT_MAX_CANDIDATES  # address: items looked at, None: the whole ball
    probes: int = 16  # cells: cells visited
    rerank: bool = False  # text: order the Hamming candidates by TF-IDF cosine
    candidates: int = 100  # rerank: how many Hamming candidates

    def __post_init__(self) -> None:
        if _bad_int(self.k) or self.k < 1:
            raise QueryError(f"k must be at least 1, got {self.k!r}")
        if self.space not in SPACES:
            raise QueryError(f"unknown search space {self.space!r}; choose from {SPACES}")
        if self.mode not in MODES:
            raise QueryError(f"unknown search mode {self.mode!r}; choose from {MODES}")
        if self.mode != "exhaustive" and self.space != "hamming":
            raise QueryError(f"{self.mode} search works in the hamming space only")
        if self.radius is not None and (_bad_int(self.radius) or not 0 <= self.radius <= MAX_RADIUS):
            raise QueryError(f"radius must be 0 to {MAX_RADIUS} bits, got {self.radius!r}")
        if self.max_candidates is not None and (_bad_int(self.max_candidates) or self.max_candidates < 1):
            raise QueryError(f"max_candidates must be a positive integer or None, got {self.max_candidates!r}")
        if _bad_int(self.probes) or self.probes < 1:
            raise QueryError(f"probes must be a positive integer, got {self.probes!r}")
        if _bad_int(self.candidates) or self.candidates < 1:
            raise QueryError(f"candidates must be a positive integer, got {self.candidates!r}")

    @classmethod
    def given(cls, options: SearchOptions | None = None, **overrides) -> SearchOptions:
        """``options`` (or the defaults) with the keyword ``overrides`` that are not None."""
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown search options {unknown}; known: {sorted(names)}")
        return replace(options or cls(), **{key: value for key, value in overrides.items() if value is not None})


def _bad_int(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class Hit:
    """One result: a stored document or image and its distance to the query."""

    id: int
    external_id: str
    distance: float  # Hamming distances are whole numbers
    title: str | None
    label: str | None
    source: str | None
    snippet: str  # the start of a document's text; empty for images

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in _HIT_FIELDS}  # asdict deep-copies: a tenth of a query

    def at(self, distance: float) -> Hit:
        """The same item at another distance."""
        return Hit(self.id, self.external_id, distance, self.title, self.label, self.source, self.snippet)


_HIT_FIELDS = tuple(field.name for field in fields(Hit))


class SearchEngine(UsesDatabase):
    """Search one database. Models and indexes are loaded on first use and kept."""

    def __init__(self, database: Database | str | os.PathLike, collection: Collection | None = None,
                 defaults: SearchOptions | None = None):
        self.db = self._open(database)
        self.collection = collection or collection_of(self.db)
        self.defaults = defaults or SearchOptions()
        self._models: dict[str, StoredModel] = {}
        self._indexes: dict[tuple, object] = {}
        self._hit_cache: dict[int, Hit] = {}
        # Candidates and fallback of the latest address search, for diagnostics.
        self.last_address_result: AddressResult | None = None

    # -------------------------------------------------------------- queries
    def search(self, text: str, k: int | None = None, options: SearchOptions | None = None, **overrides) -> list[Hit]:
        """The stored documents nearest to free ``text``."""
        (hits,) = self.search_many([text], k, options, **overrides)
        if isinstance(hits, QueryError):
            raise hits
        return hits

    def search_many(self, texts: list[str], k: int | None = None, options: SearchOptions | None = None,
                    **overrides) -> list[list[Hit] | QueryError]:
        """:meth:`search` of each text, in one pass: the texts are counted, encoded and looked
        up together (a server batches concurrent queries: most of a lone query's time is the
        fixed cost of each step). A text that cannot be searched (empty, no known word) gets
        its :class:`QueryError` in its place; options that cannot be used raise."""
        options = self._options(options, k=k, **overrides)
        results: list = [None] * len(texts)
        given = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                results[i] = QueryError("the query is empty")
            else:
                given.append(i)
        if not given:
            return results
        empty, known, counts = without_empty_rows(self.vocabulary.transform([texts[i] for i in given]))
        for row in empty:
            results[given[row]] = self._no_known_words()
        if len(known):
            codes = {name: self._model(name).model.transform(counts) for name in self._query_models(options)}
            for row, hits in zip(known, self._nearest(codes, options, query_counts=counts)):
                results[given[row]] = hits
        return results

    def search_input(self, inputs, k: int | None = None, options: SearchOptions | None = None,
                     **overrides) -> list[Hit]:
        """The stored items nearest to one query given as the models' input (counts or pixels)."""
        options = self._options(options, k=k, **overrides)
        codes = {name: self._model(name).model.transform(inputs) for name in self._query_models(options)}
        return self._nearest(codes, options, query_counts=inputs if options.rerank else None)[0]

    def similar(self, key: str | int, k: int | None = None, options: SearchOptions | None = None, **overrides) -> list[Hit]:
        """The stored items nearest to a stored one (by id or external id), itself excluded."""
        (hits,) = self.similar_many([key], k, options, **overrides)
        if isinstance(hits, Exception):
            raise hits
        return hits

    def similar_many(self, keys: list[str | int], k: int | None = None, options: SearchOptions | None = None,
                     **overrides) -> list[list[Hit] | NoSuchDocument | QueryError]:
        """:meth:`similar` of each key, in one pass (as :meth:`search_many`): a key that names
        no stored item gets its :class:`NoSuchDocument` (a ``KeyError``) in its place, one
        without a code its ``QueryError``."""
        options = self._options(options, k=k, **overrides)
        names = self._query_models(options)
        results: list = [None] * len(keys)
        found, codes = [], {name: [] for name in names}
        for i, (key, document) in enumerate(zip(keys, self.db.find_documents(keys))):
            if document is None:
                results[i] = NoSuchDocument(f"no document with id or external_id {key!r}")
                continue
            try:
                stored = {name: self._stored_code(name, document) for name in names}
            except QueryError as error:
                results[i] = error
                continue
            found.append((i, document))
            for name in names:
                codes[name].append(stored[name])
        if found:
            counts = (self.vocabulary.transform([document.text or "" for _, document in found])
                      if options.rerank else None)
            codes = {name: np.concatenate(rows) for name, rows in codes.items()}
            hits = self._nearest(codes, options, query_counts=counts, exclude=[document.id for _, document in found])
            for (i, _), each in zip(found, hits):
                results[i] = each
        return results

    def search_code(self, hex_code: str, k: int | None = None, options: SearchOptions | None = None, **overrides) -> list[Hit]:
        """The stored items nearest in Hamming distance to a long code given in hex."""
        options = self._options(options, k=k, **overrides)
        if options.space != "hamming" or options.mode == "address" or options.rerank:
            raise QueryError("a code given in hex is searched exhaustively or by cells, in the hamming space")
        code = from_hex(hex_code, self._model(self.collection.long).model.code_size)
        return self._nearest({self.collection.long: code}, options)[0]

    # ------------------------------------------------------------- encoding
    def word_counts(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the query is empty")
        counts = self.vocabulary.transform([text])
        if counts.nnz == 0:
            raise self._no_known_words()
        return counts

    def _no_known_words(self) -> QueryError:
        return QueryError("none of the query's words is in the collection's vocabulary "
                          f"({len(self.vocabulary.words_)} words); try other or more words")

    def encode(self, text: str, space: str = "hamming") -> np.ndarray:
        """The code of free text: packed bits (``hamming``) or a real vector (``euclidean``)."""
        name = self._space_model(SearchOptions(space=space))
        return self._model(name).model.transform(self.word_counts(text))

    def adopt_models(self, other: SearchEngine) -> None:
        """Take ``other``'s loaded models (and vocabulary) that are still the stored ones:
        an engine reloaded after documents were added needs new indexes, not new models."""
        for name, model in other._models.items():
            if name in self._stored_models and self._stored_models[name] == other._stored_models.get(name):
                self._models[name] = model
        if self.collection.long in self._models and self.collection.long in other._models:
            for name in ("vocabulary", "tfidf"):  # they change only with the models
                if name in other.__dict__:
                    self.__dict__[name] = other.__dict__[name]
            # The same models, so the same database: its stored items have not changed, and
            # a deleted one is not in this engine's indexes, so its kept hit is never asked
            # for. A copy: the other engine may still be answering.
            self._hit_cache = dict(other._hit_cache)

    def warm(self) -> SearchEngine:
        """Load now what the usual queries need (models, vocabulary, the exhaustive and address
        indexes), rather than on the first query that needs each: a server does this before it
        answers. Cell indexes (k-means, trained on first use) stay lazy."""
        self.build_indexes()
        for name in self.collection.code_models:
            if self.has_model(name):
                self._model(name)
        if self.collection.kind == TEXT.kind and self.has_model(self.collection.long):
            _ = self.tfidf
            self.encode(" ".join(self.vocabulary.words_[:3]))  # compiles the counting kernel
        return self

    def preload_hits(self, limit: int = HIT_CACHE_SIZE) -> int:
        """Read the hits of the first ``limit`` stored items (at most the cache's size) now,
        rather than on the first query that finds each: a server does this once at start
        (an engine reloaded with the same models keeps them). The number read."""
        read = 0
        for doc in itertools.islice(self.db.iter_documents(batch_size=2000), min(limit, HIT_CACHE_SIZE)):
            self._hit_cache[doc.id] = _hit(doc, 0)
            read += 1
        return read

    def build_indexes(self, keep: bool = True) -> SearchEngine:
        """Bring every search structure the usual queries use up to date with the database:
        local FAISS files and the address table, or the codes' copy in Milvus, or pgvector's
        table, whichever this engine searches (cells stay lazy). `index` and `add` end with
        it, so that the first query finds them ready; they pass ``keep=False``, so that only
        one structure is in memory at a time."""
        for name in self.collection.code_models:
            if self.has_model(name):
                what = "address" if name == self.collection.address else name
                self._index(what)
                if not keep:
                    del self._indexes[what]
        return self

    # ------------------------------------------------------------ internals
    def _options(self, options: SearchOptions | None, **overrides) -> SearchOptions:
        options = SearchOptions.given(options or self.defaults, **overrides)
        if options.rerank and self.collection.kind != TEXT.kind:
            raise QueryError("re-ranking by TF-IDF needs a text collection")
        return options

    def _query_models(self, options: SearchOptions) -> list[str]:
        """The models whose codes of the query the search needs."""
        names = [self._space_model(options)]
        if options.mode == "address":
            if not self.has_model(self.collection.address):
                raise QueryError("this database has no address model: re-index it with an address code "
                                 "(`semhash index ... --address-bits`, `semhash images index ... --retrain`)")
            names.append(self.collection.address)
        return names

    def _space_model(self, options: SearchOptions) -> str:
        name = self.collection.long if options.space == "hamming" else self.collection.map
        if not self.has_model(name):
            known = sorted(self._stored_models)
            raise QueryError(f"this database has no {name!r} model for {options.space} search (models: {known})")
        return name

    def _nearest(self, codes: dict[str, np.ndarray], options: SearchOptions, *, query_counts=None,
                 exclude: list[int] | None = None) -> list[list[Hit]]:
        """The hits of each query: ``codes`` holds one row per query under each model;
        ``exclude``, where the queries are stored items, their ids."""
        # Ask for one more when the query is a stored item: it finds itself.
        k = options.k + (exclude is not None)
        n = max(k, options.candidates) if options.rerank else k
        name = self._space_model(options)
        code = np.atleast_2d(codes[name])
        if options.mode == "address":
            radius = self.collection.radius if options.radius is None else options.radius
            address = np.atleast_2d(codes[self.collection.address])
            found = []
            for row in range(len(code)):  # the address table answers one query at a time
                result = self._index("address").search(address[row : row + 1], code[row : row + 1], n, radius,
                                                       max_candidates=options.max_candidates)
                self.last_address_result = result
                found.append((result.ids, result.distances))
        else:
            index = self._index("cells") if options.mode == "cells" else self._index(name)
            distances, ids = index.search(code, n, options.probes) if options.mode == "cells" else index.search(code, n)
            found = [(ids[row][ids[row] >= 0], distances[row][ids[row] >= 0]) for row in range(len(code))]
        whole = options.space == "hamming" and not options.rerank
        out = []
        for row, (ids, distances) in enumerate(found):
            distances = distances.astype(float)
            if exclude is not None:
                keep = ids != exclude[row]
                ids, distances = ids[keep], distances[keep]
            if options.rerank and len(ids):
                ids, distances = self._rerank_by_tfidf(query_counts[row], ids, options.k)
            ids, distances = ids[: options.k], distances[: options.k]
            out.append([hit.at(int(distance) if whole else round(float(distance), 4))
                        for hit, distance in zip(self._stored_hits(ids.tolist()), distances) if hit is not None])
        return out

    def _stored_code(self, name: str, document: DocumentRow) -> np.ndarray:
        """A stored item's code under model ``name``: from its loaded index when that holds
        it (no database round trip), else from the database."""
        index = self._indexes.get(name)
        if hasattr(index, "reconstruct"):
            try:
                return index.reconstruct(document.id).reshape(1, -1)
            except KeyError:
                pass  # stored after the index was loaded
        _, code = self.db.get_codes(self._model(name).id, [document.id])
        if len(code) == 0:
            raise QueryError(f"{document.external_id!r} has no {name!r} code: is it a "
                             f"{self.collection.kind}, and has `semhash add` encoded it?")
        return code

    def _stored_hits(self, ids: list[int]) -> list[Hit | None]:
        """The hits of stored items (distance 0; None for an id no longer stored), read from
        the database once each and kept: stored items never change (re-indexing makes a new
        database), and reading them was most of a query's time."""
        cache = self._hit_cache
        missing = [doc_id for doc_id in ids if doc_id not in cache]
        if missing:
            # missing_ok: an index loaded before another process deleted documents may still name them
            for doc in self.db.get_documents(missing, missing_ok=True):
                cache[doc.id] = _hit(doc, 0)
            while len(cache) > HIT_CACHE_SIZE:
                del cache[next(iter(cache))]  # the oldest: a bound, not a policy
        return [cache.get(doc_id) for doc_id in ids]

    def _rerank_by_tfidf(self, query_counts, ids: np.ndarray, k: int):
        """Order candidate documents by TF-IDF cosine to the query (the accurate ranker)."""
        documents = self.db.get_documents(ids.tolist())
        candidate_counts = self.vocabulary.transform([doc.text or "" for doc in documents])
        similarity = (self.tfidf.transform(candidate_counts) @ self.tfidf.transform(query_counts).T).toarray().ravel()
        order = np.lexsort((np.arange(len(ids)), -similarity))[:k]  # ties keep Hamming order
        return ids[order], 1.0 - similarity[order]

    def has_model(self, name: str) -> bool:
        """Whether the database holds a model of this name."""
        return name in self._stored_models

    @cached_property
    def _stored_models(self) -> dict[str, tuple]:
        """The database's models by name, as (id, created at), read once: a query would
        otherwise list them each time. A replaced model differs in both; a model of a
        rebuilt database file, which may reuse the id, in the time."""
        return {row.name: (row.id, row.created_at) for row in self.db.list_models()}

    def _model(self, name: str) -> StoredModel:
        if name not in self._models:
            self._models[name] = load_model(self.db, name)
        return self._models[name]

    def _index(self, what: str):
        """The search structure ``what``: "address", "cells", or a model's index. In Milvus
        when ``SEMHASH_CODES`` (``--codes``) names one (every model's codes and the address
        search: :mod:`semhash.index.milvus_codes`); else the long codes' (exhaustive and
        cells) are searched in the database where it can (PostgreSQL with pgvector), else
        from local FAISS files; the address table is local."""
        if what not in self._indexes:
            from semhash.index.milvus_codes import milvus_index

            long, address = self.collection.long, self.collection.address
            if (found := milvus_index(self.db, what, long=long, address=address)) is not None:
                self._indexes[what] = found
            elif what == "address":
                self._indexes[what] = load_or_build_address(self.db, address_model=address, long_model=long)
            elif what in ("cells", long) and (found := database_index(self.db, long, cells=what == "cells")) is not None:
                self._indexes[what] = found
            elif what == "cells":
                self._indexes[what] = load_or_build_cells(self.db, long)
            else:
                self._indexes[what] = load_or_build(self.db, what)
        return self._indexes[what]

    @cached_property
    def vocabulary(self):
        if self.collection.kind != TEXT.kind:
            raise QueryError("an image collection has no vocabulary: query it with an image")
        return load_vocabulary(self.db)

    @cached_property
    def tfidf(self) -> TfidfCosine:
        return TfidfCosine.from_document_frequency(
            self.vocabulary.document_frequency_, self.vocabulary.n_documents_
        )


def _hit(doc: DocumentRow, distance: float) -> Hit:
    return Hit(
        id=doc.id,
        external_id=doc.external_id,
        distance=distance,
        title=doc.title,
        label=doc.label,
        source=doc.source,
        snippet=snippet(doc.text or ""),
    )


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a document's body, on one line: news headers skipped when present."""
    lines = text.splitlines()
    # Skip an RFC-822 style header block ("Key: value" lines up to the first blank line).
    if lines and ":" in lines[0] and " " not in lines[0].split(":", 1)[0]:
        blank = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
        if blank < len(lines):
            lines = lines[blank + 1 :]
    body = " ".join(" ".join(lines).split())
    return body if len(body) <= limit else body[: limit - 1].rstrip() + "…"
