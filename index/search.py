"""Answering queries over an indexed collection.

Three ways to compare documents, all over codes stored in the database and searched
with FAISS:

* ``"hamming"``: binary codes of the semantic hasher, Hamming distance;
* ``"euclidean"``: real-valued codes of the topic map, Euclidean distance;
* ``"hamming"`` with ``mode="address"``: semantic hashing proper: only the documents
  whose short address code lies within Hamming ``radius`` of the query's are looked at
  (nearest addresses first, at most ``index.address.DEFAULT_MAX_CANDIDATES`` of them, so
  a query costs microseconds whatever the collection's size), ranked by their long codes
  (see :mod:`index.address`); exhaustive when fewer than k;
* ``"hamming"`` with ``rerank=True``: the 2009 paper's two stages: the Hamming search
  is a fast filter for ``candidates`` documents, which are then ranked by TF-IDF cosine
  (distance reported as ``1 - cosine``).

Queries are free text (encoded with the stored vocabulary and model), a stored document
("more like this"), or a binary code given in hex.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from index.address import ADDRESS_MODEL, AddressResult, load_or_build_address
from index.database import Database, DocumentRow
from index.faiss_index import load_or_build
from pipelines.indexing import HASHER_MODEL, MAP_MODEL, load_model
from semhash.baselines import TfidfCosine
from semhash.codes import from_hex

SPACES = ("hamming", "euclidean")
MODES = ("exhaustive", "address")
SNIPPET_CHARS = 200


class QueryError(ValueError):
    """A query that cannot be answered as asked (no known words, unknown space, ...)."""


@dataclass(frozen=True)
class Hit:
    id: int
    external_id: str
    distance: float
    title: str | None
    label: str | None
    snippet: str

    def to_dict(self) -> dict:
        return asdict(self)


class SearchEngine:
    """Search one database. Models and indexes are loaded on first use and kept."""

    def __init__(self, database: Database | str | os.PathLike):
        self.db = database if isinstance(database, Database) else Database(database, create=False)
        self._models: dict[str, tuple] = {}
        self._indexes: dict[str, object] = {}
        # Candidates and fallback of the latest address search, for diagnostics.
        self.last_address_result: AddressResult | None = None

    # -------------------------------------------------------------- queries
    def search(
        self, text: str, k: int = 10, *, space: str = "hamming", rerank: bool = False, candidates: int = 100,
        mode: str = "exhaustive", radius: int = 2,
    ) -> list[Hit]:
        """The ``k`` stored documents nearest to free ``text``.

        ``mode="address"`` (Hamming space only) looks only at the documents whose address
        code is within ``radius`` bits of the query's (exhaustive if that finds < k).
        """
        counts = self.word_counts(text)
        return self._search_counts(counts, k, space=space, rerank=rerank, candidates=candidates, mode=mode, radius=radius)

    def similar(
        self, key: str | int, k: int = 10, *, space: str = "hamming", rerank: bool = False, candidates: int = 100,
        mode: str = "exhaustive", radius: int = 2,
    ) -> list[Hit]:
        """The ``k`` documents nearest to a stored one (by id or external id), itself excluded."""
        document = self.db.find_document(key)
        model_name = self._model_name(space)
        address = self._check_mode(mode, space)
        _, code = self.db.get_codes(self._model(model_name)[2], [document.id])
        address_code = self.db.get_codes(self._model(ADDRESS_MODEL)[2], [document.id])[1] if address else None
        if len(code) == 0 or (address and len(address_code) == 0):
            raise QueryError(f"document {document.external_id!r} has no {space} code yet: run `semhash add` to encode it")
        query_counts = self.word_counts(document.text or "", allow_empty=True) if rerank else None
        hits = self._nearest(model_name, code, k + 1, rerank, candidates, query_counts, address_code, radius)
        return [hit for hit in hits if hit.id != document.id][:k]

    def search_code(self, hex_code: str, k: int = 10) -> list[Hit]:
        """The ``k`` documents nearest in Hamming distance to a code given in hex."""
        model = self._model(HASHER_MODEL)[0]
        code = from_hex(hex_code, model.code_size)
        return self._nearest(HASHER_MODEL, code, k, rerank=False, candidates=k)

    # ------------------------------------------------------------- encoding
    def word_counts(self, text: str, *, allow_empty: bool = False):
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the query is empty")
        counts = self.vocabulary.transform([text])
        if counts.nnz == 0 and not allow_empty:
            raise QueryError(
                "none of the query's words is in the collection's vocabulary "
                f"({len(self.vocabulary.words_)} words); try other or more words"
            )
        return counts

    def encode(self, text: str, space: str = "hamming") -> np.ndarray:
        """The code of free text: packed bits (``hamming``) or a real vector (``euclidean``)."""
        model = self._model(self._model_name(space))[0]
        return model.transform(self.word_counts(text))

    # ------------------------------------------------------------ internals
    def _search_counts(self, counts, k, *, space, rerank, candidates, mode="exhaustive", radius=2) -> list[Hit]:
        model_name = self._model_name(space)
        address = self._check_mode(mode, space)
        code = self._model(model_name)[0].transform(counts)
        address_code = self._model(ADDRESS_MODEL)[0].transform(counts) if address else None
        return self._nearest(model_name, code, k, rerank, candidates, counts, address_code, radius)

    def _nearest(self, model_name, code, k, rerank, candidates, query_counts=None, address_code=None, radius=2) -> list[Hit]:
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        n = max(k, candidates) if rerank else k
        if address_code is not None:
            if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= 4:
                raise QueryError(f"radius must be 0 to 4 bits, got {radius!r}")
            self.last_address_result = self._address_index().search(address_code, code, n, radius)
            ids, distances = self.last_address_result.ids, self.last_address_result.distances.astype(float)
        else:
            distances, ids = self._index(model_name).search(code, n)
            ids, distances = ids[0], distances[0].astype(float)
        if rerank and len(ids):
            ids, distances = self._rerank_by_tfidf(query_counts, ids, k)
        documents = self.db.get_documents(ids.tolist())
        return [_hit(doc, distance) for doc, distance in zip(documents, distances)]

    def _rerank_by_tfidf(self, query_counts, ids: np.ndarray, k: int):
        """Order candidate documents by TF-IDF cosine to the query (the accurate ranker)."""
        documents = self.db.get_documents(ids.tolist())
        candidate_counts = self.vocabulary.transform([doc.text or "" for doc in documents])
        similarity = (self.tfidf.transform(candidate_counts) @ self.tfidf.transform(query_counts).T).toarray().ravel()
        order = np.lexsort((np.arange(len(ids)), -similarity))[:k]  # ties keep Hamming order
        return ids[order], 1.0 - similarity[order]

    def _model_name(self, space: str) -> str:
        if space not in SPACES:
            raise QueryError(f"unknown search space {space!r}; choose from {SPACES}")
        name = HASHER_MODEL if space == "hamming" else MAP_MODEL
        known = {row.name for row in self.db.list_models()}
        if name not in known:
            raise QueryError(f"this database has no {name!r} model for {space} search (models: {sorted(known)})")
        return name

    def _check_mode(self, mode: str, space: str) -> bool:
        """True for address search (after checking it is possible), False for exhaustive."""
        if mode not in MODES:
            raise QueryError(f"unknown search mode {mode!r}; choose from {MODES}")
        if mode == "exhaustive":
            return False
        if space != "hamming":
            raise QueryError("address search works in the hamming space only")
        if ADDRESS_MODEL not in {row.name for row in self.db.list_models()}:
            raise QueryError("this database has no address model: rebuild it with `semhash index` (--address-bits)")
        return True

    def _address_index(self):
        if ADDRESS_MODEL not in self._indexes:
            self._indexes[ADDRESS_MODEL] = load_or_build_address(self.db)
        return self._indexes[ADDRESS_MODEL]

    def _model(self, name: str):
        if name not in self._models:
            self._models[name] = load_model(self.db, name)
        return self._models[name]

    def _index(self, name: str):
        if name not in self._indexes:
            self._indexes[name] = load_or_build(self.db, name)
        return self._indexes[name]

    @cached_property
    def vocabulary(self):
        return self._model(HASHER_MODEL)[1]

    @cached_property
    def tfidf(self) -> TfidfCosine:
        return TfidfCosine.from_document_frequency(
            self.vocabulary.document_frequency_, self.vocabulary.n_documents_
        )


def _hit(doc: DocumentRow, distance: float) -> Hit:
    return Hit(
        id=doc.id,
        external_id=doc.external_id,
        distance=round(float(distance), 4),
        title=doc.title,
        label=doc.label,
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
