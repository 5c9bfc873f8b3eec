"""Content-addressable recall: a fragment of a document brings back the whole document.

A :class:`CodeMemory` is a hetero-associative Willshaw memory
(:class:`semhash.memory.WillshawMemory`) that stores, for every document, the pair

    sparse pattern of its binary code  ->  random sparse address of the document

* The code (``n_bits`` bits, from the database's ``"hasher"`` model) becomes a sparse
  pattern by :class:`semhash.memory.SparseCodeMap`: each block of ``block_bits`` bits is
  one active unit out of ``2^block_bits``, so ``M_in = n_bits / block_bits`` ones in
  ``n_in = M_in * 2^block_bits`` units.
* The address is :func:`semhash.memory.sparse_address` of the document id:
  ``M_addr`` ones in ``n_addr`` units, where ``n_addr`` is sized so that the Willshaw
  capacity ``ln 2 * n_in * n_addr / (M_in * M_addr)`` is ``capacity_ratio`` times the
  number of documents (load well under 1/2, few spurious connections).

Recall. A query code (a damaged code, or the code of a text fragment) is turned into its
sparse pattern and the memory's dendritic sums ``s`` over the address units are
computed. A document's score is the smallest sum over its ``M_addr`` address units: the
largest threshold at which the memory's output still contains the document's whole
address (a per-document hard threshold). Without cross-talk it counts the code blocks
the query shares with the document's code, and it is ``M_in`` -- confidence 1 -- for a
document's own, undamaged code. Documents are ranked by that score, then by the sum over
their address units (``-k`` results); the confidence of a hit is ``score / M_in``.

Why hetero-association (and not an auto-associative memory of codes followed by a
nearest-stored-code search): the answer is the document itself, with no second search
over the stored codes, and the measurement in ``benchmarks/document_recall.py``
(validation split) found the auto-associative clean-up much worse (mean expected recall@1
0.149 with 4-bit blocks, 0.144 with 8-bit blocks, against 0.391 for the hetero memory and
0.412 for plain Hamming search; ``benchmarks/results/document_recall.md``): the soft
threshold over a damaged, correlated code pattern lands on a mixture of stored codes.

Block size. Smaller blocks make the block-overlap score closer to the Hamming similarity
(``block_bits=1``: exactly ``n_bits`` minus the Hamming distance) and so recall from more
damaged codes, at the price of a denser question (``M_in = n_bits``) and a larger address
space for the same capacity; larger blocks are the classical sparse Willshaw regime but
treat a block with one wrong bit as entirely wrong. :data:`DEFAULT_BLOCK_BITS` = 2 was
chosen on a validation split of 20 Newsgroups (300 posts, 128-bit codes, mean expected
recall@1 over all damage levels: 2 bits 0.391, 4 bits 0.344, 8 bits 0.277, Hamming NN
0.412; ``benchmarks/document_recall.py``). For 128-bit codes that is ``M_in = 64`` ones
in ``n_in = 256`` units; at 32x capacity the address space then has ~92 units per
document and the packed matrix ~3 kB per document (33 MB for 11,314 posts; blocks of
4 bits halve that and cost 5 points of recall).

The memory is a derived cache of the database's codes, saved as ``<db>.faiss/recall.npz``
with a JSON sidecar (code fingerprint, configuration, SHA-256), written atomically with
the helpers of :mod:`index.faiss_index`, and rebuilt whenever the codes change.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from index.database import Database
from index.faiss_index import REBUILD_ADVICE, cache_dir, read_sidecar, read_verified, write_with_sidecar
from index.search import QueryError, SearchEngine, snippet
from pipelines.indexing import HASHER_MODEL
from semhash.codes import from_hex, hamming_distances
from semhash.memory import SparseCodeMap, WillshawMemory, sparse_address

DEFAULT_BLOCK_BITS = 2  # chosen on the validation split, see the module docstring
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
    """

    def __init__(
        self,
        n_bits: int,
        block_bits: int = DEFAULT_BLOCK_BITS,
        address_active: int = DEFAULT_ADDRESS_ACTIVE,
        capacity_ratio: float = DEFAULT_CAPACITY_RATIO,
        seed: int = 0,
    ) -> None:
        self.code_map = SparseCodeMap(n_bits, block_bits)
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
        }

    @property
    def n_address_units(self) -> int:
        return 0 if self.memory is None else self.memory.n_output_units

    def fit(self, ids: np.ndarray, codes: np.ndarray) -> CodeMemory:
        """Store every ``(code, id)`` pair (replacing anything stored before)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or len(codes) != len(ids):
            raise ValueError(f"need packed uint8 codes, one row per id; got {codes.dtype} {codes.shape} for {len(ids)} ids")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("document ids repeat")
        patterns = self.code_map.encode(codes)
        m_in = self.code_map.n_active
        n_addr = address_units(len(ids), self.code_map.n_units, m_in, self.address_active, self.capacity_ratio)
        self.memory = WillshawMemory(self.code_map.n_units, n_addr, threshold="soft")
        self.ids = ids
        self.addresses = sparse_address(ids, n_addr, self.address_active, seed=self.seed)
        if len(ids):
            self.memory.store(patterns, self.addresses)
        return self

    # ------------------------------------------------------------------ recall
    def recall(self, codes: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` best documents for each query code.

        Returns:
            ``(rows, scores, tie_sizes)``: ``rows`` ``(n, k)`` int64 rows into :attr:`ids`
            (best first; ties broken by the address sum, then the lower row), ``scores``
            ``(n, k)`` int64 per-document scores (smallest dendritic sum over the
            address), ``tie_sizes`` ``(n,)``: documents sharing the best (score, sum).
        """
        self._check_built()
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        patterns = self.code_map.encode(codes)
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

    def scores(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every document's score for each query: ``(scores, keys)``, both ``(n, n_docs)`` int64.

        ``scores`` is the smallest dendritic sum over the document's address; ``keys``
        orders documents as :meth:`recall` does (score first, address sum second).
        """
        self._check_built()
        patterns = self.code_map.encode(codes)
        shape = (len(patterns), len(self.ids))
        scores, keys = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        for start, low, key in self._score_batches(patterns):
            scores[start : start + len(low)], keys[start : start + len(low)] = low, key
        return scores, keys

    def _score_batches(self, patterns: np.ndarray):
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

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """``score / M_in`` in [0, 1]."""
        return np.asarray(scores, dtype=np.float64) / self.code_map.n_active

    # ------------------------------------------------------------------ reports
    def stats(self) -> dict:
        """Size, load and capacity of the memory."""
        self._check_built()
        m_in, n_docs = self.code_map.n_active, len(self.ids)
        capacity = self.memory.expected_capacity(m_in, self.address_active)
        return {
            "documents": n_docs,
            "n_bits": self.n_bits,
            "block_bits": self.block_bits,
            "input_units": self.code_map.n_units,
            "input_active": m_in,
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
                  "n_stored": self.memory.n_stored_}
        np.savez(buffer, weights=self.memory.weights_, ids=self.ids, config=np.array(json.dumps(config)))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CodeMemory:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            config = json.loads(str(arrays["config"]))
            if config.get("format") != _FORMAT or config.get("version") != _FORMAT_VERSION:
                raise RecallFileError(f"not a {_FORMAT} v{_FORMAT_VERSION} file")
            weights, ids = arrays["weights"], arrays["ids"].astype(np.int64)
        self = cls(config["n_bits"], config["block_bits"], config["address_active"], config["capacity_ratio"], config["seed"])
        n_addr = int(config["n_address_units"])
        self.memory = WillshawMemory(self.code_map.n_units, n_addr, threshold="soft")
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


def save_memory(memory: CodeMemory, path: Path, fingerprint: str) -> None:
    """Memory file first, sidecar (fingerprint, configuration, SHA-256) last, both atomic."""
    meta = {"format": 1, "fingerprint": fingerprint, "config": memory.config(), "documents": len(memory.ids)}
    write_with_sidecar(path, memory.to_bytes(), meta)


def load_memory(path: Path, fingerprint: str | None = None, config: dict | None = None) -> CodeMemory | None:
    """A saved memory, or None when missing or stale (other fingerprint or configuration).

    A damaged file (checksum mismatch, unreadable) raises :class:`RecallFileError`.
    """
    path = Path(path)
    meta = read_sidecar(path, "recall", required=("config",), error=RecallFileError)
    if meta is None:
        return None
    advice = REBUILD_ADVICE
    if fingerprint is not None and meta["fingerprint"] != fingerprint:
        return None
    if config is not None and meta["config"] != config:
        return None
    data = read_verified(path, meta, "recall", error=RecallFileError)
    try:
        return CodeMemory.from_bytes(data)
    except (ValueError, KeyError, OSError) as err:
        raise RecallFileError(f"recall file {path} is corrupt ({err}); {advice}") from err


def load_or_build_memory(db: Database, model_name: str = HASHER_MODEL, path: Path | None = None, **options) -> CodeMemory:
    """The model's code memory: loaded from ``path`` if up to date, else rebuilt and saved.

    ``path`` defaults to ``<db>.faiss/recall.npz``; ``options`` go to :class:`CodeMemory`
    (``block_bits`` defaults to :data:`DEFAULT_BLOCK_BITS` or the largest divisor of the
    code length below it). A memory database (no file) builds in memory every time.
    """
    model = db.get_model(model_name, with_weights=False)
    if model.kind != "binary":
        raise QueryError(f"model {model_name!r} has {model.kind} codes; recall needs binary codes")
    options.setdefault("block_bits", choose_block_bits(model.n_dims))
    built = CodeMemory(model.n_dims, **options)
    # Fingerprint before codes: if codes change in between, the next load rebuilds.
    fingerprint = db.code_fingerprint(model.id)
    path = default_recall_path(db) if path is None else Path(path)
    if path is not None:
        try:
            loaded = load_memory(path, fingerprint, built.config())
        except RecallFileError as err:
            warnings.warn(f"{err} -- rebuilding it now", RuntimeWarning, stacklevel=2)
            loaded = None
        if loaded is not None:
            return loaded
    ids, codes = db.get_codes(model.id)
    built.fit(ids, codes)
    if path is not None:
        try:
            save_memory(built, path, fingerprint)
        except OSError as err:
            warnings.warn(f"could not save the recall memory to {path} ({err}); it will be rebuilt next time",
                          RuntimeWarning, stacklevel=2)
    return built


# --------------------------------------------------------------------------- database


class DocumentMemory:
    """Content-addressable recall over one database's stored binary codes.

    >>> memory = DocumentMemory("news.db")                        # doctest: +SKIP
    >>> memory.recall_text("the shuttle launch was delayed", k=3)  # doctest: +SKIP
    >>> memory.recall_code("9f0c...")                              # doctest: +SKIP
    """

    def __init__(self, database: Database | str | os.PathLike, *, model_name: str = HASHER_MODEL,
                 path: Path | None = None, **options) -> None:
        self.db = database if isinstance(database, Database) else Database(database, create=False)
        self.model_name = model_name
        self.engine = SearchEngine(self.db)
        self.memory = load_or_build_memory(self.db, model_name, path, **options)
        self.model_id = self.db.get_model(model_name, with_weights=False).id

    @property
    def n_bits(self) -> int:
        return self.memory.n_bits

    def recall_text(self, fragment: str, k: int = 1) -> list[RecallHit]:
        """Documents recalled by a piece of text (encoded with the stored vocabulary and model)."""
        code = self.engine.encode(fragment, "hamming")  # QueryError: empty, no known word
        return self._recall(code, k)

    def recall_code(self, hex_code: str, k: int = 1) -> list[RecallHit]:
        """Documents recalled by a (possibly damaged) code given in hex."""
        if not isinstance(hex_code, str) or not hex_code.strip():
            raise QueryError("the code is empty")
        try:
            code = from_hex(hex_code, self.n_bits)
        except ValueError as err:
            raise QueryError(str(err)) from None
        return self._recall(code, k)

    def recall_codes(self, codes: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Batch form for packed codes: ``(document ids (n, k), confidences (n, k))``."""
        rows, scores, _ = self.memory.recall(codes, k)
        return self.memory.ids[rows], self.memory.confidence(scores)

    def stats(self) -> dict:
        """Size, load and capacity of the memory (see :meth:`CodeMemory.stats`)."""
        return self.memory.stats()

    def _recall(self, code: np.ndarray, k: int) -> list[RecallHit]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        if len(self.memory.ids) == 0:
            return []
        rows, scores, _ = self.memory.recall(code, k)
        ids = self.memory.ids[rows[0]]
        documents = {doc.id: doc for doc in self.db.get_documents(ids.tolist())}
        code_ids, stored = self.db.get_codes(self.model_id, ids.tolist())
        distances = dict(zip(code_ids.tolist(), hamming_distances(code, stored)[0].tolist())) if len(code_ids) else {}
        confidences = self.memory.confidence(scores[0])
        hits = []
        for doc_id, score, confidence in zip(ids.tolist(), scores[0].tolist(), confidences.tolist()):
            doc = documents[doc_id]
            hits.append(RecallHit(id=doc.id, external_id=doc.external_id, title=doc.title, label=doc.label,
                                  snippet=snippet(doc.text or ""), confidence=round(confidence, 4), score=int(score),
                                  hamming_distance=int(distances.get(doc_id, -1))))
        return hits
