"""Answering queries over an indexed collection.

Three ways to compare documents, all over codes stored in the database and searched
with FAISS:

* ``"hamming"``: binary codes of the semantic hasher, Hamming distance;
* ``"euclidean"``: real-valued codes of the topic map, Euclidean distance;
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

from index.database import Database, DocumentRow
from index.faiss_index import load_or_build
from pipelines.indexing import HASHER_MODEL, MAP_MODEL, load_model
from semhash.baselines import TfidfCosine
from semhash.codes import from_hex

SPACES = ("hamming", "euclidean")
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

    # -------------------------------------------------------------- queries
    def search(
        self, text: str, k: int = 10, *, space: str = "hamming", rerank: bool = False, candidates: int = 100
    ) -> list[Hit]:
        """The ``k`` stored documents nearest to free ``text``."""
        counts = self.word_counts(text)
        return self._search_counts(counts, k, space=space, rerank=rerank, candidates=candidates)

    def similar(
        self, key: str | int, k: int = 10, *, space: str = "hamming", rerank: bool = False, candidates: int = 100
    ) -> list[Hit]:
        """The ``k`` documents nearest to a stored one (by id or external id), itself excluded."""
        document = self.db.find_document(key)
        model_name = self._model_name(space)
        _, code = self.db.get_codes(self._model(model_name)[2], [document.id])
        if len(code) == 0:
            raise QueryError(f"document {document.external_id!r} has no {space} code yet: run `semhash add` to encode it")
        query_counts = self.word_counts(document.text or "", allow_empty=True) if rerank else None
        hits = self._nearest(model_name, code, k + 1, rerank, candidates, query_counts)
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
    def _search_counts(self, counts, k, *, space, rerank, candidates) -> list[Hit]:
        model_name = self._model_name(space)
        code = self._model(model_name)[0].transform(counts)
        return self._nearest(model_name, code, k, rerank, candidates, counts)

    def _nearest(self, model_name, code, k, rerank, candidates, query_counts=None) -> list[Hit]:
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        index = self._index(model_name)
        distances, ids = index.search(code, max(k, candidates) if rerank else k)
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
