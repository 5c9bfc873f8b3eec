"""Content-addressable recall: a fragment of a document brings back the whole document.

A :class:`CodeMemory` is a hetero-associative Willshaw memory
(:class:`semhash.memory.WillshawMemory`) that stores, for every document, the pair

    sparse pattern of its binary code (+ its words)  ->  random sparse address of the document

* The code (``n_bits`` bits, from the database's ``"hasher"`` model) becomes a sparse
  pattern by :class:`semhash.memory.SparseCodeMap`: each block of ``block_bits`` bits is
  one active unit out of ``2^block_bits``, so ``n_bits / block_bits`` ones in
  ``n_bits / block_bits * 2^block_bits`` units.
* Word units (``n_words`` > 0, the default for a database): one more unit per vocabulary
  word, active when the document contains the word.
* The address is :func:`semhash.memory.sparse_address` of the document id:
  ``M_addr`` ones in ``n_addr`` units, where ``n_addr`` is sized so that the Willshaw
  capacity ``ln 2 * n_in * n_addr / (M_in * M_addr)`` (``M_in``: the stored patterns'
  mean number of ones) is ``capacity_ratio`` times the number of documents (load well
  under 1/2, few spurious connections).

Recall. A question -- the code of a text fragment and the fragment's words, or a
(damaged) code alone -- is turned into its sparse pattern and the memory's dendritic
sums ``s`` over the address units are computed. A document's score is the smallest sum
over its ``M_addr`` address units: the largest threshold at which the memory's output
still contains the document's whole address (a per-document hard threshold). Without
cross-talk it counts the code blocks the question shares with the document's code plus
the question's words the document contains. Documents are ranked by that score, then by
the sum over their address units (``-k`` results); a hit's confidence is the score over
the number of ones in the question (1: every unit of the question reaches the whole
address, e.g. a document's own code).

Why words. Semantic codes are made to be alike for documents on the same topic, so a
fragment's code lands among its topic's documents, not on its own document. The
fragment's words are a *subset* of the post's words -- exactly the partial question a
Willshaw memory completes -- so with word units the memory finds the post itself far
more often than Hamming search does, while a damaged code alone is recalled as well as
by Hamming search (``benchmarks/document_recall.py``; figures in
``benchmarks/results/document_recall.md``).

Why hetero-association (and not an auto-associative memory of codes followed by a
nearest-stored-code search): the answer is the document itself, with no second search
over the stored codes; the auto-associative clean-up measured much worse on validation,
as the soft threshold over a damaged, correlated code pattern lands on a mixture of
stored codes.

Block size, word weight and address space. Smaller blocks make the block-overlap score
closer to the Hamming similarity (``block_bits=1``: exactly ``n_bits`` minus the Hamming
distance), so damaged codes are recalled as Hamming search recalls them; larger blocks
are the classical sparse Willshaw regime but treat a block with one wrong bit as wholly
wrong. :data:`DEFAULT_BLOCK_BITS`, :data:`DEFAULT_UNITS_PER_WORD` and
:data:`DEFAULT_CAPACITY_RATIO` were chosen on a validation split of 20 Newsgroups
(``benchmarks/document_recall.py``): the best mean expected recall@1 over seven damage
levels among the memories that stay within 2.5 points of Hamming search at every level.
Two units per word score higher on fragments but cost damaged codes, so they are an
option (``units_per_word=2``), not the default at 128 bits. With 256-bit codes a damaged
code is further from other posts' codes, and the same rule chose 2-bit blocks with two
units a word (:data:`LONG_CODE_DEFAULTS`).

The price is size: the address space has tens of units per document, and the packed
matrix a few kB per document (``benchmarks/results/document_recall.md``).

The memory is a derived cache of the database's codes, saved as ``<db>.faiss/recall.npz``
with a JSON sidecar (code fingerprint, configuration, SHA-256), written atomically by
:mod:`semhash.index.cache`, and rebuilt whenever the codes or the configuration change.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from semhash.index.database import Database, UsesDatabase
from semhash.index.cache import CacheFile, cache_dir
from semhash.index.models import TEXT, load_vocabulary
from semhash.index.search import QueryError, SearchEngine, snippet
from semhash.codes import from_hex, hamming_distances
from semhash.memory import WillshawMemory
from semhash.sparse_codes import SparseCodeMap, sparse_address

DEFAULT_UNITS_PER_WORD = 1  # chosen on the validation split, see the module docstring
DEFAULT_BLOCK_BITS = 1  # chosen on the validation split, see the module docstring
# Codes of 256 bits and more leave more margin between a damaged code and other posts'
# codes, so the validation chose coarser blocks and heavier words there.
LONG_CODE_BITS = 256
LONG_CODE_DEFAULTS = {"block_bits": 2, "units_per_word": 2}
DEFAULT_ADDRESS_ACTIVE = 8
DEFAULT_CAPACITY_RATIO = 32.0
RECALL_FILE = "recall.npz"
_FORMAT = "semhash.DocumentMemory"
_FORMAT_VERSION = 1
# Scratch bytes for the per-document score gather during recall.
_SCORE_BATCH_BYTES = 64 * 2**20


class RecallFileError(RuntimeError):
    """A saved memory file is corrupt or does not match its sidecar."""


@dataclass(frozen=True)
class RecallHit:
    """One recalled document."""

    id: int
    external_id: str
    title: str | None
    label: str | None
    snippet: str
    confidence: float  # score / M_in: 1.0 = every query block is connected to the whole address
    score: int  # smallest dendritic sum over the document's address units
    hamming_distance: int  # between the query code and the document's stored code

    def to_dict(self) -> dict:
        return asdict(self)


def choose_block_bits(n_bits: int, preferred: int = DEFAULT_BLOCK_BITS) -> int:
    """The largest block size ``<= preferred`` that divides ``n_bits``."""
    for bits in range(min(preferred, n_bits), 0, -1):
        if n_bits % bits == 0:
            return bits
    return 1


def default_options(n_bits: int, words: bool = True) -> dict:
    """The validated :class:`CodeMemory` settings for ``n_bits``-bit codes (module docstring)."""
    if n_bits >= LONG_CODE_BITS and n_bits % LONG_CODE_DEFAULTS["block_bits"] == 0:
        options = dict(LONG_CODE_DEFAULTS)
    else:
        options = {"block_bits": choose_block_bits(n_bits), "units_per_word": DEFAULT_UNITS_PER_WORD}
    if not words:
        del options["units_per_word"]
    return options


def address_units(n_documents: int, n_inputs: int, m_in: int, m_addr: int, capacity_ratio: float) -> int:
    """Address units so that ``ln 2 n_in n_addr / (m_in m_addr) >= capacity_ratio * n_documents``.

    Rounded up to a multiple of 64, at least ``max(1024, 4 m_addr)``.
    """
    needed = capacity_ratio * max(1, n_documents) * m_in * m_addr / (math.log(2) * n_inputs)
    return int(max(1024, 4 * m_addr, 64 * math.ceil(needed / 64)))


class CodeMemory:
    """Willshaw memory from binary codes to document ids (no database involved).

    Args:
        n_bits: bits per code.
        block_bits: bits per one-hot block of the code pattern (must divide ``n_bits``).
        address_active: ones in each document address (``M_addr``).
        capacity_ratio: size the address space for this many times the documents stored.
        seed: seed of the document addresses.
        n_words: vocabulary size for word units (0: the pattern is the code alone). With
            words, a document's pattern is its code pattern followed by one unit per
            distinct vocabulary word it contains, and :meth:`fit`, :meth:`recall` and
            :meth:`scores` take the word counts beside the codes.
        units_per_word: units each word activates: a word then weighs as much as that
            many code blocks in a document's score.
    """

    def __init__(
        self,
        n_bits: int,
        block_bits: int = DEFAULT_BLOCK_BITS,
        address_active: int = DEFAULT_ADDRESS_ACTIVE,
        capacity_ratio: float = DEFAULT_CAPACITY_RATIO,
        seed: int = 0,
        n_words: int = 0,
        units_per_word: int = 1,
    ) -> None:
        self.code_map = SparseCodeMap(n_bits, block_bits)
        self.n_words = int(n_words)
        if self.n_words < 0:
            raise ValueError(f"n_words must be 0 or more, got {n_words}")
        self.units_per_word = int(units_per_word)
        if self.units_per_word < 1:
            raise ValueError(f"units_per_word must be at least 1, got {units_per_word}")
        self.n_bits = n_bits
        self.block_bits = block_bits
        self.address_active = int(address_active)
        self.capacity_ratio = float(capacity_ratio)
        self.seed = int(seed)
        if self.address_active < 1:
            raise ValueError(f"address_active must be at least 1, got {address_active}")
        if self.capacity_ratio <= 0:
            raise ValueError(f"capacity_ratio must be positive, got {capacity_ratio}")
        self.memory: WillshawMemory | None = None
        self.mean_active_ = float(self.code_map.n_active)  # mean ones in a stored pattern
        self.ids = np.zeros(0, dtype=np.int64)
        self.addresses = np.zeros((0, self.address_active), dtype=np.int64)

    # ----------------------------------------------------------------- building
    def config(self) -> dict:
        return {
            "n_bits": self.n_bits,
            "block_bits": self.block_bits,
            "address_active": self.address_active,
            "capacity_ratio": self.capacity_ratio,
            "seed": self.seed,
            "n_words": self.n_words,
            "units_per_word": self.units_per_word,
        }

    @property
    def n_input_units(self) -> int:
        return self.code_map.n_units + self.n_words * self.units_per_word

    @property
    def n_address_units(self) -> int:
        return 0 if self.memory is None else self.memory.n_output_units

    def fit(self, ids: np.ndarray, codes: np.ndarray, words=None) -> CodeMemory:
        """Store every ``(pattern, id)`` pair (replacing anything stored before).

        ``words``: ``(n, n_words)`` word counts of the documents (scipy sparse or dense),
        required when the memory has word units.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or len(codes) != len(ids):
            raise ValueError(f"need packed uint8 codes, one row per id; got {codes.dtype} {codes.shape} for {len(ids)} ids")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("document ids repeat")
        if self.n_words and words is None:
            raise ValueError(f"this memory has {self.n_words} word units: pass the documents' word counts")
        patterns = self.questions(codes, words)
        if patterns:
            self.mean_active_ = float(np.mean([len(p) for p in patterns]))
        n_addr = address_units(len(ids), self.n_input_units, self.mean_active_, self.address_active, self.capacity_ratio)
        self.memory = WillshawMemory(self.n_input_units, n_addr, threshold="soft")
        self.ids = ids
        self.addresses = sparse_address(ids, n_addr, self.address_active, seed=self.seed)
        if len(ids):
            self.memory.store(patterns, self.addresses)
        return self

    def questions(self, codes: np.ndarray, words=None) -> list[np.ndarray]:
        """The memory's input patterns (active units) of packed ``codes`` and their word
        counts; ``words=None`` is a query without words (a code alone)."""
        code_units = self.code_map.encode(codes)
        if words is None:
            return list(code_units)
        if not self.n_words:
            raise ValueError("this memory has no word units: pass codes only")
        words = sp.csr_matrix(words)
        if words.shape != (len(code_units), self.n_words):
            raise ValueError(f"word counts of shape {words.shape}, expected {(len(code_units), self.n_words)}")
        words.eliminate_zeros()
        # Word w owns units offset + w * r ... offset + w * r + r - 1.
        r = self.units_per_word
        word_units = self.code_map.n_units + (words.indices[:, None] * r + np.arange(r)).ravel()
        bounds = words.indptr * r
        return [np.concatenate([units, word_units[bounds[i] : bounds[i + 1]]]) for i, units in enumerate(code_units)]

    # ------------------------------------------------------------------ recall
    def recall(self, codes: np.ndarray, k: int = 1, words=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` best documents for each query code (and its word counts, see :meth:`fit`).

        Returns:
            ``(rows, scores, tie_sizes)``: ``rows`` ``(n, k)`` int64 rows into :attr:`ids`
            (best first; ties broken by the address sum, then the lower row), ``scores``
            ``(n, k)`` int64 per-document scores (smallest dendritic sum over the
            address), ``tie_sizes`` ``(n,)``: documents sharing the best (score, sum).
        """
        self._check_built()
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        patterns = self.questions(codes, words)
        n, n_docs = len(patterns), len(self.ids)
        k = min(int(k), n_docs)
        rows = np.zeros((n, k), dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.int64)
        ties = np.zeros(n, dtype=np.int64)
        if n_docs == 0:
            return rows, scores, ties
        for start, low, key in self._score_batches(patterns):
            if k < n_docs:
                top = np.argpartition(-key, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(n_docs), (len(key), n_docs))
            top_keys = np.take_along_axis(key, top, axis=1)
            order = np.lexsort((top, -top_keys), axis=1)
            best = np.take_along_axis(top, order, axis=1)
            rows[start : start + len(key)] = best
            scores[start : start + len(key)] = np.take_along_axis(low, best, axis=1)
            ties[start : start + len(key)] = (key == key.max(axis=1, keepdims=True)).sum(axis=1)
        return rows, scores, ties

    def scores(self, codes: np.ndarray, words=None) -> tuple[np.ndarray, np.ndarray]:
        """Every document's score for each query: ``(scores, keys)``, both ``(n, n_docs)`` int64.

        ``scores`` is the smallest dendritic sum over the document's address; ``keys``
        orders documents as :meth:`recall` does (score first, address sum second).
        """
        self._check_built()
        patterns = self.questions(codes, words)
        shape = (len(patterns), len(self.ids))
        scores, keys = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        for start, low, key in self._score_batches(patterns):
            scores[start : start + len(low)], keys[start : start + len(low)] = low, key
        return scores, keys

    def _score_batches(self, patterns: list[np.ndarray]):
        n_docs = len(self.ids)
        per_query = n_docs * self.address_active * 4 + self.n_address_units * 4
        step = max(1, _SCORE_BATCH_BYTES // per_query)
        for start in range(0, len(patterns), step):
            sums = self.memory.dendritic_sums(patterns[start : start + step])
            gathered = sums[:, self.addresses]  # (b, n_docs, M_addr)
            low = gathered.min(axis=2).astype(np.int64)
            total = gathered.sum(axis=2, dtype=np.int64)
            # One sortable key: score first, address sum second (sum < 2^31 per doc).
            yield start, low, low * (1 << 32) + total

    def confidence(self, scores: np.ndarray, codes: np.ndarray | None = None, words=None) -> np.ndarray:
        """``score / (ones in the question)`` in [0, 1]: ``scores`` has a row per query of
        ``codes`` (and ``words``); without them the questions are codes alone."""
        scores = np.asarray(scores, dtype=np.float64)
        if words is None:
            return scores / self.code_map.n_active
        # Ones in each question, without building it: one per code block, r per word.
        words = sp.csr_matrix(words)
        words.eliminate_zeros()
        sizes = self.code_map.n_active + self.units_per_word * np.diff(words.indptr)
        return scores / sizes.reshape(-1, *([1] * (scores.ndim - 1)))

    # ------------------------------------------------------------------ reports
    def stats(self) -> dict:
        """Size, load and capacity of the memory."""
        self._check_built()
        m_in, n_docs = self.mean_active_, len(self.ids)
        capacity = self.memory.expected_capacity(m_in, self.address_active)
        return {
            "documents": n_docs,
            "n_bits": self.n_bits,
            "block_bits": self.block_bits,
            "word_units": self.n_words * self.units_per_word,
            "units_per_word": self.units_per_word,
            "input_units": self.n_input_units,
            "input_active": round(float(m_in), 2),
            "address_units": self.n_address_units,
            "address_active": self.address_active,
            "load": round(self.memory.load_, 6),
            "expected_load_random_codes": round(self.memory.expected_load(n_docs, m_in, self.address_active), 6),
            "expected_capacity": int(capacity),
            "capacity_per_document": round(capacity / max(1, n_docs), 2),
            "bytes": self.memory.nbytes,
        }

    # ------------------------------------------------------------- persistence
    def to_bytes(self) -> bytes:
        self._check_built()
        buffer = io.BytesIO()
        config = {"format": _FORMAT, "version": _FORMAT_VERSION, **self.config(), "n_address_units": self.n_address_units,
                  "n_stored": self.memory.n_stored_, "mean_active": self.mean_active_}
        np.savez(buffer, weights=self.memory.weights_, ids=self.ids, config=np.array(json.dumps(config)))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CodeMemory:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            config = json.loads(str(arrays["config"]))
            if config.get("format") != _FORMAT or config.get("version") != _FORMAT_VERSION:
                raise RecallFileError(f"not a {_FORMAT} v{_FORMAT_VERSION} file")
            weights, ids = arrays["weights"], arrays["ids"].astype(np.int64)
        self = cls(config["n_bits"], config["block_bits"], config["address_active"], config["capacity_ratio"],
                   config["seed"], config.get("n_words", 0), config.get("units_per_word", 1))
        if config.get("mean_active") is not None:
            self.mean_active_ = float(config["mean_active"])
        n_addr = int(config["n_address_units"])
        self.memory = WillshawMemory(self.n_input_units, n_addr, threshold="soft")
        if weights.shape != self.memory.weights_.shape or weights.dtype != np.uint8:
            raise RecallFileError(f"weights of shape {weights.shape}, expected {self.memory.weights_.shape}")
        self.memory.weights_ = np.ascontiguousarray(weights)
        self.memory.n_stored_ = int(config["n_stored"])
        self.ids = ids
        self.addresses = sparse_address(ids, n_addr, self.address_active, seed=self.seed)
        return self

    def _check_built(self) -> None:
        if self.memory is None:
            raise RuntimeError("the memory is empty: call fit(ids, codes) first")


# --------------------------------------------------------------------------- files


def default_recall_path(db: Database) -> Path | None:
    """``<db file>.faiss/recall.npz``; None for a database that is not a file."""
    folder = cache_dir(db)
    return None if folder is None else folder / RECALL_FILE


def _dump_memory(memory: CodeMemory) -> tuple[bytes, dict]:
    return memory.to_bytes(), {"config": memory.config(), "documents": len(memory.ids)}


# The sidecar records the fingerprint and the configuration: a memory of another
# configuration is stale, like one of other codes.
MEMORY_CACHE: CacheFile[CodeMemory] = CacheFile("recall", _dump_memory, lambda data, meta: CodeMemory.from_bytes(data),
                                                required=("config",), error=RecallFileError)


def save_memory(memory: CodeMemory, path: Path, fingerprint: str) -> None:
    """Memory file first, sidecar (fingerprint, configuration, SHA-256) last, both atomic."""
    MEMORY_CACHE.save(memory, path, fingerprint)


def load_memory(path: Path, fingerprint: str | None = None, config: dict | None = None) -> CodeMemory | None:
    """A saved memory, or None when missing or stale (other fingerprint or configuration).

    A damaged file (checksum mismatch, unreadable) raises :class:`RecallFileError`.
    """
    return MEMORY_CACHE.load(path, fingerprint, config=config)


def load_or_build_memory(
    db: Database, model_name: str = TEXT.long, path: Path | None = None, *, words: bool = True, vocabulary=None,
    **options,
) -> CodeMemory:
    """The model's code memory: loaded from ``path`` if up to date, else rebuilt and saved.

    ``path`` defaults to ``<db>.faiss/recall.npz``; ``options`` go to :class:`CodeMemory`
    (``block_bits`` defaults to :data:`DEFAULT_BLOCK_BITS`, or :data:`LONG_CODE_DEFAULTS`
    for codes of :data:`LONG_CODE_BITS` bits or more, or the largest divisor of the
    code length below it). With ``words`` (the default), each document's pattern also has
    a unit per vocabulary word it contains (``vocabulary``: the model's
    :class:`~semhash.vectorize.WordCounter`, loaded from the database if not given).
    A memory database (no file) builds in memory every time.
    """
    model = db.get_model(model_name, with_weights=False)
    if model.kind != "binary":
        raise QueryError(f"model {model_name!r} has {model.kind} codes; recall needs binary codes")
    if words and vocabulary is None:
        vocabulary = load_vocabulary(db)
    options = default_options(model.n_dims, words) | options
    options["n_words"] = len(vocabulary.words_) if words else 0
    built = CodeMemory(model.n_dims, **options)
    # Fingerprint before codes: if codes change in between, the next load rebuilds.
    fingerprint = db.code_fingerprint(model.id)

    def build() -> CodeMemory:
        ids, codes = db.get_codes(model.id)
        counts = None
        if words:
            # missing_ok: a document deleted since its code was read (the next load rebuilds)
            texts = {doc.id: doc.text or "" for doc in db.get_documents(ids.tolist(), missing_ok=True)}
            counts = vocabulary.transform([texts.get(i, "") for i in ids.tolist()])
        return built.fit(ids, codes, counts)

    path = default_recall_path(db) if path is None else Path(path)
    return MEMORY_CACHE.load_or_build(path, fingerprint, build, name="recall memory", config=built.config())


# --------------------------------------------------------------------------- database


class DocumentMemory(UsesDatabase):
    """Content-addressable recall over one database's stored binary codes.

    >>> memory = DocumentMemory("news.db")                        # doctest: +SKIP
    >>> memory.recall_text("the shuttle launch was delayed", k=3)  # doctest: +SKIP
    >>> memory.recall_code("9f0c...")                              # doctest: +SKIP
    """

    def __init__(self, database: Database | str | os.PathLike, *, model_name: str = TEXT.long,
                 path: Path | None = None, words: bool = True, engine: SearchEngine | None = None,
                 **options) -> None:
        self.db = self._open(database)
        self.model_name = model_name
        # An open engine of the same database (a server's) lends its loaded models and vocabulary.
        self.engine = engine if engine is not None and engine.db is self.db else SearchEngine(self.db)
        vocabulary = self.engine.vocabulary if words else None
        self.memory = load_or_build_memory(self.db, model_name, path, words=words, vocabulary=vocabulary, **options)
        self.model_id = self.db.get_model(model_name, with_weights=False).id

    @property
    def n_bits(self) -> int:
        return self.memory.n_bits

    def recall_text(self, fragment: str, k: int = 1) -> list[RecallHit]:
        """Documents recalled by a piece of text (encoded with the stored vocabulary and model)."""
        code = self.engine.encode(fragment, "hamming")  # QueryError: empty, no known word
        return self._recall(code, k, self.engine.word_counts(fragment) if self.memory.n_words else None)

    def recall_code(self, hex_code: str, k: int = 1) -> list[RecallHit]:
        """Documents recalled by a (possibly damaged) code given in hex."""
        if not isinstance(hex_code, str) or not hex_code.strip():
            raise QueryError("the code is empty")
        try:
            code = from_hex(hex_code, self.n_bits)
        except ValueError as err:
            raise QueryError(str(err)) from None
        return self._recall(code, k)

    def stats(self) -> dict:
        """Size, load and capacity of the memory (see :meth:`CodeMemory.stats`)."""
        return self.memory.stats()

    def _recall(self, code: np.ndarray, k: int, words=None) -> list[RecallHit]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        if len(self.memory.ids) == 0:
            return []
        rows, scores, _ = self.memory.recall(code, k, words)
        ids = self.memory.ids[rows[0]]
        # missing_ok: a memory built before another process deleted documents may still hold them
        documents = {doc.id: doc for doc in self.db.get_documents(ids.tolist(), missing_ok=True)}
        code_ids, stored = self.db.get_codes(self.model_id, ids.tolist())
        distances = dict(zip(code_ids.tolist(), hamming_distances(code, stored)[0].tolist())) if len(code_ids) else {}
        confidences = self.memory.confidence(scores, code, words)[0]
        hits = []
        for doc_id, score, confidence in zip(ids.tolist(), scores[0].tolist(), confidences.tolist()):
            doc = documents.get(doc_id)
            if doc is None:
                continue
            hits.append(RecallHit(id=doc.id, external_id=doc.external_id, title=doc.title, label=doc.label,
                                  snippet=snippet(doc.text or ""), confidence=round(confidence, 4), score=int(score),
                                  hamming_distance=int(distances.get(doc_id, -1))))
        return hits
