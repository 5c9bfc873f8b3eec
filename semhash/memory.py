"""Willshaw associative memory: a binary, clipped-Hebbian hetero- or auto-associative net.

The Willshaw net (Willshaw, Buneman & Longuet-Higgins 1969; analysed by Palm 1980) stores
pairs of sparse binary patterns (question ``x`` with ``n_inputs`` units, answer ``y`` with
``n_outputs`` units) in a binary weight matrix by the clipped Hebb rule::

    w_ij = 1  iff  y_i x_j = 1 for at least one stored pair      (OR of outer products)

and retrieves in one step by thresholding the dendritic sums ``s_i = sum_j w_ij x_j``::

    y_i = 1  iff  s_i >= T

with the *hard* threshold ``T = |x|`` (number of ones in the question: a unit must be
connected to every active question unit) or the *soft* threshold ``T = max_i s_i`` (the
best-supported units win, which still answers when the question has wrong ones or the
hard threshold finds nothing). For auto-association (answer = question) the output can be
fed back until it stops changing.

With ``M_in`` / ``M_out`` ones per pattern and ``L`` stored pairs the fraction of ones in
the matrix (its *load*) is ``p1 = 1 - (1 - M_in M_out / (n_in n_out))^L``; a complete
question switches on a wrong output unit with probability ``p1^M_in``; the memory is
best used at ``p1 = 1/2``, which is reached at ``L = ln 2 * n_in n_out / (M_in M_out)``
pairs, and its patterns should be sparse: ``M ~ log2(n / 4)``.

Storage layout. The matrix is kept packed, one row per INPUT unit ``j``, holding the
(``numpy.packbits``-ordered) set of output units ``i`` it connects to, so its shape is
``(n_inputs, ceil(n_outputs / 8))`` uint8 -- the layout of :mod:`semhash.codes`. Sparse
questions then only touch their ``M`` active rows: the dendritic sums are the sum of those
rows unpacked, which is cheap when ``M`` is ~10, and a 100,000 x 100,000 memory takes
1.25 GB instead of 10 GB as bytes.

Dense binary codes (e.g. 64-bit semantic hashes) are not sparse; :class:`~semhash.sparse_codes.SparseCodeMap`
turns each group of ``block_bits`` code bits into a one-hot block of ``2^block_bits``
units, and :func:`~semhash.sparse_codes.sparse_address` gives each document id a random sparse address, so a
hetero-associative memory can map code patterns to document addresses::

    code_map = SparseCodeMap(64, block_bits=8)            # M = 8 ones in n = 2048 units
    addresses = sparse_address(doc_ids, 2048, 8, seed=0)
    memory = WillshawMemory(code_map.n_units, 2048)
    memory.store(code_map.encode(codes), addresses)
    found = memory.recall(code_map.encode(query_codes))
    rows, overlap = nearest_addresses(found.patterns, addresses)   # doc_ids[rows]

Patterns are accepted as a 2-D boolean (or 0/1 integer) array of shape
``(n_patterns, n_units)``, as a 2-D integer array of active indices (one row per pattern,
e.g. from :func:`sparse_address` or :meth:`SparseCodeMap.encode`), or as a list of 1-D
arrays of active indices (patterns of different sizes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semhash.codes import n_bytes, popcount
from semhash.patterns import _BATCH_BYTES, Patterns, _batches, _pack_sparse, _Sparse, _to_sparse

_FORMAT = "semhash.WillshawMemory"
_FORMAT_VERSION = 1

# Refuse matrices above this many packed bytes unless the caller raises the limit: a
# 1e6 x 1e6 memory (125 GB) would otherwise fail late, inside numpy, or swap the host.
DEFAULT_MAX_BYTES = 4 * 2**30

# Scratch bytes per (question unit, answer unit) bit in the bit-scatter store path
# (int64 unit indices, offsets and flat positions).
_SCATTER_BYTES_PER_BIT = 40


# --------------------------------------------------------------------------- theory


def willshaw_load(n_stored: float, n_inputs: int, n_outputs: int, m_in: float, m_out: float) -> float:
    """Expected fraction of ones after storing ``n_stored`` random pairs: ``1 - (1 - q)^L``.

    ``q = m_in m_out / (n_inputs n_outputs)`` is the chance one pair sets a given weight.
    """
    q = (m_in * m_out) / (n_inputs * n_outputs)
    return float(-np.expm1(n_stored * np.log1p(-q)))


def willshaw_capacity(n_inputs: int, n_outputs: int, m_in: float, m_out: float) -> float:
    """Pairs stored when the load reaches 1/2: ``ln 2 * n_in n_out / (m_in m_out)``."""
    return math.log(2) * n_inputs * n_outputs / (m_in * m_out)


def false_positive_rate(load: float, question_size: float) -> float:
    """Chance a given wrong output unit fires for a complete question: ``p1^M``.

    Each of the ``M`` weights from the question to a wrong unit is 1 with probability
    ``p1`` (the load), independently in the random-pattern approximation, and the hard
    threshold needs all ``M``. For a question with ``k`` of its ``M`` ones left, use
    ``question_size=k``.
    """
    return float(load**question_size)


# --------------------------------------------------------------------------- memory


@dataclass
class RecallResult:
    """What :meth:`WillshawMemory.recall` found for each question.

    Attributes:
        patterns: ``(n_questions, n_outputs)`` bool, the retrieved patterns.
        thresholds: ``(n_questions,)`` int, the threshold ``T`` used (at the last step).
        max_sums: ``(n_questions,)`` int, the largest dendritic sum (at the last step).
        question_sizes: ``(n_questions,)`` int, ones in the input of the last step.
        n_iterations: ``(n_questions,)`` int, retrieval steps performed.
        converged: for auto-association, ``(n_questions,)`` bool: the output reproduced
            the input of the last step (a fixed point). ``None`` for hetero-association.
    """

    patterns: np.ndarray
    thresholds: np.ndarray
    max_sums: np.ndarray
    question_sizes: np.ndarray
    n_iterations: np.ndarray
    converged: np.ndarray | None

    @property
    def confidence(self) -> np.ndarray:
        """``max dendritic sum / question size`` in [0, 1]; 0 for empty questions.

        1 means some output unit is connected to every active question unit, as the
        units of a stored answer are for a (part of a) stored question; lower values say
        the question is not (part of) anything stored and the soft threshold guessed.
        """
        sizes = np.maximum(self.question_sizes, 1)
        return np.where(self.question_sizes > 0, self.max_sums / sizes, 0.0)

    @property
    def n_active(self) -> np.ndarray:
        """Ones in each retrieved pattern."""
        return self.patterns.sum(axis=1)

    def indices(self) -> list[np.ndarray]:
        """The retrieved patterns as lists of active output units."""
        return [np.flatnonzero(row) for row in self.patterns]


class WillshawMemory:
    """Binary associative memory with clipped Hebbian storage and threshold retrieval.

    Args:
        n_inputs: units in a question pattern.
        n_outputs: units in an answer pattern; ``None`` makes an auto-associative memory
            (answers are the questions themselves, ``n_outputs = n_inputs``, and
            retrieval may be iterated).
        threshold: default retrieval threshold, ``"soft"`` (``T = max_i s_i``; never empty
            when the question touches stored data) or ``"hard"`` (``T`` = ones in the
            question; exact for complete or partial questions without wrong ones, and
            empty when nothing is connected to all of them).
        max_bytes: refuse weight matrices larger than this (packed bytes).

    Attributes:
        weights_: ``(n_inputs, ceil(n_outputs / 8))`` uint8, row ``j`` the packed set of
            output units that input unit ``j`` connects to.
        n_stored_: pairs stored so far (repeats included).
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int | None = None,
        threshold: str = "soft",
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.threshold = threshold
        self.max_bytes = max_bytes
        for name, value in (("n_inputs", n_inputs), ("n_outputs", self.n_output_units)):
            if int(value) != value or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        _check_threshold(threshold)
        size = self.n_inputs * n_bytes(self.n_output_units)
        if size > max_bytes:
            raise ValueError(
                f"a {self.n_inputs:,} x {self.n_output_units:,} Willshaw memory needs "
                f"{_human_bytes(size)} of packed weights, over the limit of "
                f"{_human_bytes(max_bytes)} (max_bytes={max_bytes}); use fewer units "
                f"or raise max_bytes"
            )
        # np.zeros maps zeroed pages lazily, so a large memory costs RAM only where
        # rows have been written to.
        self.weights_ = np.zeros((self.n_inputs, n_bytes(self.n_output_units)), dtype=np.uint8)
        self.n_stored_ = 0

    # -- shape ----------------------------------------------------------------------------

    @property
    def n_output_units(self) -> int:
        """Units in an answer (``n_inputs`` for an auto-associative memory)."""
        return self.n_inputs if self.n_outputs is None else self.n_outputs

    @property
    def is_auto_associative(self) -> bool:
        return self.n_outputs is None

    @property
    def nbytes(self) -> int:
        """Bytes of the packed weight matrix."""
        return self.weights_.nbytes

    def __repr__(self) -> str:
        return (
            f"WillshawMemory(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
            f"threshold={self.threshold!r}, n_stored_={self.n_stored_})"
        )

    # -- storage --------------------------------------------------------------------------

    def store(self, questions: Patterns, answers: Patterns | None = None) -> WillshawMemory:
        """Store question/answer pairs by the clipped Hebb rule (OR of outer products).

        Args:
            questions: patterns over ``n_inputs`` units (see module docstring for forms).
            answers: patterns over ``n_outputs`` units, one per question; must be ``None``
                for an auto-associative memory (each question is stored with itself).

        Returns:
            ``self``.
        """
        q = _to_sparse(questions, self.n_inputs, "questions")
        if answers is None:
            if not self.is_auto_associative:
                raise ValueError("a hetero-associative memory needs answers")
            a = q
        else:
            if self.is_auto_associative:
                raise ValueError(
                    "an auto-associative memory stores each pattern with itself; pass "
                    "answers=None (or build WillshawMemory(n, n) for a square hetero memory)"
                )
            a = _to_sparse(answers, self.n_output_units, "answers")
            if a.n_patterns != q.n_patterns:
                raise ValueError(f"{q.n_patterns} questions but {a.n_patterns} answers")
        row_bytes = self.weights_.shape[1]
        mean_answer = a.indices.size / max(1, a.n_patterns)
        # Two ways to OR in the outer products: set each (j, i) bit alone (cost ~ M_in M_out
        # per pair, best for sparse answers) or OR whole packed answer rows into the M_in
        # question rows (cost ~ M_in n_out / 8, best for dense answers).
        if mean_answer * _SCATTER_BYTES_PER_BIT < row_bytes:
            entry_bytes = int(max(1.0, mean_answer) * _SCATTER_BYTES_PER_BIT)
            store_batch = self._store_bits
        else:
            entry_bytes, store_batch = row_bytes, self._store_rows
        for start, stop in _batches(q, entry_bytes):
            store_batch(q.subset(start, stop), a.subset(start, stop))
        self.n_stored_ += q.n_patterns
        return self

    def _store_bits(self, q: _Sparse, a: _Sparse) -> None:
        # Every (question unit j, answer unit i) of each pair: j repeated over the answer,
        # i gathered from the answer's slice of a.indices.
        q_pattern = q.pattern_of_entries()
        lengths = a.sizes[q_pattern]
        total = int(lengths.sum())
        if total == 0:
            return
        firsts = np.repeat(a.indptr[q_pattern], lengths)
        within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        i = a.indices[firsts + within]
        j = np.repeat(q.indices, lengths)
        bits = (np.uint8(0x80) >> (i & 7).astype(np.uint8)).astype(np.uint8)
        # ufunc.at on a flat view: repeated positions are all applied (unlike fancy |=), and
        # a 1-D index is much faster in numpy than a (row, column) tuple.
        flat = self.weights_.reshape(-1)
        np.bitwise_or.at(flat, j * self.weights_.shape[1] + (i >> 3), bits)

    def _store_rows(self, q: _Sparse, a: _Sparse) -> None:
        # Row j of W gains the answers of every pair whose question has unit j on. Collect
        # (j, packed answer) for all active j, OR together the answers sharing a row, and
        # write each touched row once (fancy-index |= would drop repeated rows).
        packed_answers = _pack_sparse(a)
        rows = q.indices
        if rows.size == 0:
            return
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        values = packed_answers[q.pattern_of_entries()[order]]
        starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
        self.weights_[rows[starts]] |= np.bitwise_or.reduceat(values, starts, axis=0)

    # -- retrieval ------------------------------------------------------------------------

    def dendritic_sums(self, questions: Patterns) -> np.ndarray:
        """``s_i = sum_j w_ij x_j`` for each question, ``(n_questions, n_outputs)`` int32."""
        return self._sums(_to_sparse(questions, self.n_inputs, "questions"))

    def _sums(self, q: _Sparse) -> np.ndarray:
        n_out = self.n_output_units
        sums = np.zeros((q.n_patterns, n_out), dtype=np.int32)
        # Unpacked rows cost n_out bytes each; batch so they stay within the budget.
        for start, stop in _batches(q, n_out):
            batch = q.subset(start, stop)
            if batch.indices.size == 0:
                continue
            rows = np.unpackbits(self.weights_[batch.indices], axis=1, count=n_out)
            sizes = batch.sizes
            if (sizes == sizes[0]).all():  # the usual case: all questions have M ones
                sums[start:stop] = rows.reshape(len(sizes), sizes[0], n_out).sum(1, dtype=np.int32)
            else:
                nonempty = np.flatnonzero(sizes > 0)  # reduceat misreads empty groups
                sums[start + nonempty] = np.add.reduceat(
                    rows, batch.indptr[nonempty], axis=0, dtype=np.int32
                )
        return sums

    def recall(
        self,
        questions: Patterns,
        threshold: str | int | None = None,
        iterations: int = 1,
        feedback_threshold: str | int | None = None,
    ) -> RecallResult:
        """Retrieve the answer to each question by thresholding the dendritic sums.

        Args:
            questions: patterns over ``n_inputs`` units.
            threshold: ``"soft"``, ``"hard"``, a fixed integer ``T >= 1``, or ``None`` for
                the memory's default. ``T`` is never below 1, so units without any
                connection to the question never fire.
            iterations: retrieval steps for auto-association: the output is fed back as
                the next question until it reproduces its input (a fixed point) or this
                many steps were taken. Must be 1 for hetero-association.
            feedback_threshold: threshold for the steps after the first (default: the
                same as ``threshold``). A fed-back output holds the stored pattern plus
                any spurious units, and the hard or soft rule then asks for connections
                to the spurious units too, so retrieval tends to swing between the
                question's core and core + spurious units. A fixed threshold at the
                pattern activity ``M`` keeps the units well connected to the bulk of
                the pattern and drops the spurious ones (Schwenker, Sommer & Palm 1996).

        Returns:
            A :class:`RecallResult`.
        """
        threshold = self.threshold if threshold is None else threshold
        feedback_threshold = threshold if feedback_threshold is None else feedback_threshold
        _check_threshold(threshold)
        _check_threshold(feedback_threshold)
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations}")
        if iterations > 1 and not self.is_auto_associative:
            raise ValueError("iterated retrieval needs an auto-associative memory")
        q = _to_sparse(questions, self.n_inputs, "questions")
        k = q.n_patterns
        result = RecallResult(
            patterns=np.zeros((k, self.n_output_units), dtype=bool),
            thresholds=np.zeros(k, dtype=np.int64),
            max_sums=np.zeros(k, dtype=np.int64),
            question_sizes=np.zeros(k, dtype=np.int64),
            n_iterations=np.zeros(k, dtype=np.int64),
            converged=np.zeros(k, dtype=bool) if self.is_auto_associative else None,
        )
        pending = np.arange(k)  # questions still iterating
        current = q
        for step in range(int(iterations)):
            rule = threshold if step == 0 else feedback_threshold
            output, thresholds, max_sums = self._step(current, rule)
            result.patterns[pending] = output
            result.thresholds[pending] = thresholds
            result.max_sums[pending] = max_sums
            result.question_sizes[pending] = current.sizes
            result.n_iterations[pending] += 1
            if not self.is_auto_associative:
                break
            fixed = (output == current.to_dense()).all(axis=1)
            result.converged[pending] = fixed
            pending, output = pending[~fixed], output[~fixed]
            if pending.size == 0:
                break
            current = _Sparse.from_dense(output)
        return result

    def _step(self, q: _Sparse, threshold: str | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sums = self._sums(q)
        max_sums = sums.max(axis=1) if sums.shape[1] else np.zeros(len(sums), np.int32)
        if threshold == "soft":
            thresholds = max_sums
        elif threshold == "hard":
            thresholds = q.sizes
        else:
            thresholds = np.full(q.n_patterns, int(threshold))
        # T >= 1: with T = 0 (empty question, or soft threshold with no overlap) every
        # unit would fire, which is no answer at all.
        thresholds = np.maximum(thresholds, 1).astype(np.int64)
        return sums >= thresholds[:, None], thresholds, max_sums.astype(np.int64)

    # -- statistics -----------------------------------------------------------------------

    @property
    def load_(self) -> float:
        """Fraction of ones in the weight matrix (``p1``)."""
        total = 0
        step = max(1, _BATCH_BYTES // max(1, self.weights_.shape[1]))
        for start in range(0, self.n_inputs, step):  # chunks: popcount allocates
            total += int(popcount(self.weights_[start : start + step]).sum(dtype=np.int64))
        return total / (self.n_inputs * self.n_output_units)

    def expected_load(self, n_stored: float, m_in: float, m_out: float | None = None) -> float:
        """Load after ``n_stored`` random pairs with ``m_in`` / ``m_out`` ones (default equal).

        Exact in expectation for independent random hetero pairs. For auto-association the
        off-diagonal weights are set with probability ``M(M-1) / (n(n-1))`` per pattern
        (and the diagonal with ``M / n``), so this slightly overstates the load there.
        """
        m_out = m_in if m_out is None else m_out
        return willshaw_load(n_stored, self.n_inputs, self.n_output_units, m_in, m_out)

    def expected_capacity(self, m_in: float, m_out: float | None = None) -> float:
        """Random pairs the memory holds at load 1/2: ``ln 2 * n_in n_out / (m_in m_out)``."""
        m_out = m_in if m_out is None else m_out
        return willshaw_capacity(self.n_inputs, self.n_output_units, m_in, m_out)

    def false_positive_rate(self, question_size: float, load: float | None = None) -> float:
        """``p1^M``: chance a wrong output unit fires for a question of ``M`` correct ones.

        ``load`` defaults to the measured :attr:`load_`. Multiply by the number of wrong
        units (``n_outputs - m_out``) for the expected wrong ones per recall.
        """
        return false_positive_rate(self.load_ if load is None else load, question_size)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the memory to one ``.npz`` file (weights + JSON config, no pickle).

        Returns the path written (``.npz`` appended when missing).
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        config = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "threshold": self.threshold,
            "max_bytes": self.max_bytes,
            "n_stored_": self.n_stored_,
        }
        # Uncompressed: a half-loaded matrix is incompressible anyway, and zlib over a
        # gigabyte would take minutes.
        np.savez(path, weights=self.weights_, config=np.array(json.dumps(config)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> WillshawMemory:
        """Read a memory written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            config = json.loads(str(data["config"]))
            if config.get("format") != _FORMAT or config.get("version") != _FORMAT_VERSION:
                raise ValueError(
                    f"{path} is not a {_FORMAT} v{_FORMAT_VERSION} file "
                    f"(format={config.get('format')!r}, version={config.get('version')!r})"
                )
            memory = cls(
                config["n_inputs"],
                config["n_outputs"],
                threshold=config["threshold"],
                max_bytes=config["max_bytes"],
            )
            weights = data["weights"]
        if weights.shape != memory.weights_.shape or weights.dtype != np.uint8:
            raise ValueError(
                f"{path}: weights of shape {weights.shape} {weights.dtype}, expected "
                f"{memory.weights_.shape} uint8"
            )
        memory.weights_ = np.ascontiguousarray(weights)  # _store_bits writes via a flat view
        memory.n_stored_ = int(config["n_stored_"])
        return memory


def _check_threshold(threshold: str | int) -> None:
    if isinstance(threshold, str):
        if threshold not in ("soft", "hard"):
            raise ValueError(f"threshold must be 'soft', 'hard' or an integer, got {threshold!r}")
    elif isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, np.integer)):
        raise ValueError(f"threshold must be 'soft', 'hard' or an integer, got {threshold!r}")
    elif threshold < 1:
        raise ValueError(f"a fixed threshold must be at least 1, got {threshold}")


def _human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    raise AssertionError("unreachable")
