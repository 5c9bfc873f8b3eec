"""Word counts: a fixed vocabulary of frequent words and raw per-document counts over it.

The vocabulary is the ``max_words`` words found in the most documents (document frequency, not
total occurrences, so one long post repeating a word cannot push it in), which is what the
semantic-hashing autoencoder takes as input. A fitted :class:`WordCounter` is saved as plain JSON
through :meth:`WordCounter.to_dict` / :meth:`WordCounter.from_dict`, never pickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real

import re

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.utils.validation import check_is_fitted

from semhash.kernels import compiled_kernel

__all__ = ["WordCounter", "empty_rows", "TOKEN_PATTERN"]

# Runs of two or more letters: numbers, punctuation and underscores never make a word.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"

_DICT_FORMAT = "semhash.WordCounter"
_DICT_VERSION = 1


class WordCounter(TransformerMixin, BaseEstimator):
    """Count the words of a vocabulary chosen by document frequency.

    Parameters
    ----------
    max_words:
        Vocabulary size: the words with the highest document frequency are kept, ties broken
        alphabetically so the vocabulary is deterministic.
    min_df:
        Drop words found in fewer than this many documents.
    max_df:
        Drop words found in more than this fraction of the documents (1.0 keeps all).
    stop_words:
        ``"english"`` for scikit-learn's English stop words, ``None`` for none, or a collection of words.
    lowercase:
        Lowercase texts before tokenizing.

    Attributes
    ----------
    words_: list[str]
        The vocabulary, by decreasing document frequency; column ``j`` of :meth:`transform`
        counts ``words_[j]``.
    document_frequency_: numpy.ndarray
        int64, the number of fit documents holding each word.
    n_documents_: int
        The number of fit documents.
    """

    def __init__(
        self,
        max_words: int = 2000,
        min_df: int = 2,
        max_df: float = 1.0,
        stop_words: str | Iterable[str] | None = "english",
        lowercase: bool = True,
    ) -> None:
        self.max_words = max_words
        self.min_df = min_df
        self.max_df = max_df
        self.stop_words = stop_words
        self.lowercase = lowercase

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Texts in, as for scikit-learn's CountVectorizer: its estimator checks (2-D
        # numbers) do not apply; tests/test_vectorize.py and tests/test_sklearn.py test the API.
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    # ------------------------------------------------------------------ fitting

    def fit(self, texts: Iterable[str], y=None) -> WordCounter:
        """Choose the vocabulary from ``texts``."""
        self._fit_all_word_counts(texts)
        return self

    def fit_transform(self, texts: Iterable[str], y=None) -> scipy.sparse.csr_matrix:
        """Fit, then count ``texts``, tokenizing them only once."""
        counts, kept_columns = self._fit_all_word_counts(texts)
        return counts[:, kept_columns].tocsr()

    def _fit_all_word_counts(self, texts: Iterable[str]) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
        """Fit; return the counts of every word seen and the columns of the vocabulary within them."""
        self._validate_params()
        texts = _as_text_list(texts)
        if not texts:
            raise ValueError("cannot fit a WordCounter on an empty corpus (no texts given)")
        vectorizer = self._count_vectorizer()
        try:
            all_counts = vectorizer.fit_transform(texts)
        except ValueError as error:
            if "empty vocabulary" not in str(error):
                raise
            reason = "no words left after stop-word removal" if self._stop_word_set() else "no words found"
            raise ValueError(
                f"cannot fit a WordCounter on {len(texts)} texts: {reason} "
                "(words are runs of at least 2 letters)"
            ) from error
        all_words = vectorizer.get_feature_names_out()
        # CountVectorizer stores one entry per (document, word), so entries per column = document frequency.
        document_frequency = np.bincount(all_counts.indices, minlength=len(all_words)).astype(np.int64)
        n_documents = len(texts)
        allowed = (document_frequency >= self.min_df) & (document_frequency <= self.max_df * n_documents)
        candidates = np.flatnonzero(allowed)
        if candidates.size == 0:
            raise ValueError(
                f"cannot fit a WordCounter on {n_documents} texts: no words left after "
                f"min_df={self.min_df} and max_df={self.max_df} "
                f"(the most frequent word is in {document_frequency.max()} documents)"
            )
        # all_words is alphabetical, so a stable sort by decreasing frequency breaks ties alphabetically.
        by_frequency = candidates[np.argsort(-document_frequency[candidates], kind="stable")]
        kept_columns = by_frequency[: self.max_words]

        self.words_ = [str(all_words[j]) for j in kept_columns]
        self.document_frequency_ = document_frequency[kept_columns]
        self.n_documents_ = n_documents
        return all_counts, kept_columns

    def _validate_params(self) -> None:
        if not isinstance(self.max_words, Integral) or self.max_words < 1:
            raise ValueError(f"max_words must be a positive integer, got {self.max_words!r}")
        if not isinstance(self.min_df, Integral) or self.min_df < 1:
            raise ValueError(f"min_df must be a positive number of documents, got {self.min_df!r}")
        if not isinstance(self.max_df, Real) or isinstance(self.max_df, bool) or not 0 < self.max_df <= 1:
            raise ValueError(f"max_df must be a fraction of the documents in (0, 1], got {self.max_df!r}")
        if isinstance(self.stop_words, str) and self.stop_words != "english":
            raise ValueError(
                f"stop_words must be 'english', None or a collection of words, got {self.stop_words!r}"
            )

    # ------------------------------------------------------------------ counting

    def transform(self, texts: Iterable[str]) -> scipy.sparse.csr_matrix:
        """Raw counts of the vocabulary words: float32, shape ``(n_texts, len(words_))``.

        Same counts as scikit-learn's ``CountVectorizer`` with :data:`TOKEN_PATTERN`, but
        tokenised with numpy over a whole batch at once (~10x faster; see :class:`_FastCounter`).
        """
        check_is_fitted(self, "words_")
        texts = _as_text_list(texts)
        # Rebuilt when the vocabulary or parameters change, so it can never go stale after set_params.
        stop_words = self._stop_word_set()
        key = (tuple(self.words_), bool(self.lowercase), stop_words)
        fast = getattr(self, "_fast_counter", None)
        if fast is None or fast.key != key:
            fast = self._fast_counter = _FastCounter(self.words_, stop_words, bool(self.lowercase), key)
        return fast.transform(texts)

    def _slow_transform(self, texts: Iterable[str]) -> scipy.sparse.csr_matrix:
        """:meth:`transform` through scikit-learn's ``CountVectorizer`` (the reference)."""
        check_is_fitted(self, "words_")
        return self._count_vectorizer(vocabulary=self.words_).transform(_as_text_list(texts)).tocsr()

    def idf(self) -> np.ndarray:
        """Smooth inverse document frequency ``log((1 + n) / (1 + df)) + 1`` per word, float32."""
        check_is_fitted(self, "words_")
        return (np.log((1 + self.n_documents_) / (1 + self.document_frequency_)) + 1).astype(np.float32)

    def _stop_word_set(self) -> frozenset[str]:
        if self.stop_words is None:
            return frozenset()
        if isinstance(self.stop_words, str):
            return ENGLISH_STOP_WORDS
        return frozenset(self.stop_words)

    def _count_vectorizer(self, vocabulary: list[str] | None = None) -> CountVectorizer:
        """The tokenizer and counter; without a vocabulary it counts every word (pruning is ours)."""
        stop_words = self._stop_word_set()
        return CountVectorizer(
            token_pattern=TOKEN_PATTERN,
            lowercase=self.lowercase,
            stop_words=sorted(stop_words) if stop_words else None,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict:
        """A JSON-serialisable description of the fitted counter (parameters and vocabulary)."""
        check_is_fitted(self, "words_")
        params = self.get_params()
        if params["stop_words"] is not None and not isinstance(params["stop_words"], str):
            params["stop_words"] = sorted(params["stop_words"])
        return {
            "format": _DICT_FORMAT,
            "version": _DICT_VERSION,
            "params": params,
            "words": list(self.words_),
            "document_frequency": self.document_frequency_.tolist(),
            "n_documents": int(self.n_documents_),
        }

    @classmethod
    def from_dict(cls, data: dict) -> WordCounter:
        """Rebuild a fitted counter from :meth:`to_dict`'s output; ValueError if ``data`` is malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a dict from WordCounter.to_dict, got {type(data).__name__}")
        if data.get("format") != _DICT_FORMAT or data.get("version") != _DICT_VERSION:
            raise ValueError(
                f"not a WordCounter dict: expected format {_DICT_FORMAT!r} version {_DICT_VERSION}, "
                f"got format {data.get('format')!r} version {data.get('version')!r}"
            )
        missing = {"params", "words", "document_frequency", "n_documents"} - data.keys()
        if missing:
            raise ValueError(f"WordCounter dict lacks {sorted(missing)}")
        params, words = data["params"], data["words"]
        frequencies, n_documents = data["document_frequency"], data["n_documents"]

        known = set(cls().get_params())
        if not isinstance(params, dict) or not set(params) <= known:
            raise ValueError(
                f"WordCounter dict 'params' must be a dict with keys among {sorted(known)}, got {params!r}"
            )
        counter = cls(**params)
        counter._validate_params()
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
            raise ValueError("WordCounter dict 'words' must be a non-empty list of non-empty strings")
        if len(set(words)) != len(words):
            raise ValueError("WordCounter dict 'words' holds duplicate words")
        if not _is_int(n_documents) or n_documents < 1:
            raise ValueError(
                f"WordCounter dict 'n_documents' must be a positive integer, got {n_documents!r}"
            )
        if (
            not isinstance(frequencies, list)
            or len(frequencies) != len(words)
            or not all(_is_int(f) and 1 <= f <= n_documents for f in frequencies)
        ):
            raise ValueError(
                "WordCounter dict 'document_frequency' must list one integer in "
                f"[1, n_documents={n_documents}] per word ({len(words)} words)"
            )
        counter.words_ = list(words)
        counter.document_frequency_ = np.asarray(frequencies, dtype=np.int64)
        counter.n_documents_ = n_documents
        return counter


class _FastCounter:
    """Vectorised counting of a fixed vocabulary's words, as ``CountVectorizer`` counts them.

    A batch of texts is joined with newlines (not word characters, so no token spans two
    texts), lowercased once and read as an array of code points. Each code point is
    classified once by the regular expression itself (cached per code point): not a word
    character, a word character that is not a letter (digit, underscore, ...), a letter. A
    :data:`TOKEN_PATTERN` token is then exactly a maximal run of word characters made of
    letters only, at least 2 long (``\\b`` needs a non-word character or the text's end on
    both sides). Tokens no longer than the longest vocabulary word are hashed (64-bit
    polynomial hash of the code points, seeded with the length) and looked up in the sorted
    hashes of the vocabulary; a false match needs a 64-bit collision between a token and a
    vocabulary word of the same length (probability ~1e-19 per pair). Stop words are never
    counted, as with ``CountVectorizer(stop_words=...)``.
    """

    _CHUNK_CHARS = 4_000_000  # texts per numpy pass, about this many characters
    _MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
    _classes = np.full(0x110000, 255, dtype=np.uint8)  # code point -> 0/1/2, 255 unknown (shared)
    _word_re = re.compile(r"\w")
    _letter_re = re.compile(r"[^\W\d_]")

    def __init__(self, words: list[str], stop_words: frozenset[str], lowercase: bool, key) -> None:
        self.key = key
        self.n_columns = len(words)
        columns = [j for j, word in enumerate(words) if word not in stop_words]
        points = [self._code_points(words[j]) for j in columns]
        self.max_length = max((len(p) for p in points), default=0)
        hashes = np.array([self._hash_one(p) for p in points], dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.columns = hashes[order], np.asarray(columns, dtype=np.int64)[order]
        self.lowercase = lowercase
        # Open-addressing table of the same hashes, for the compiled kernel.
        size = 1 << max(4, (4 * len(hashes)).bit_length())
        self.table_hashes = np.zeros(size, dtype=np.uint64)
        self.table_columns = np.full(size, -1, dtype=np.int64)
        with np.errstate(over="ignore"):
            for h, column in zip(hashes.tolist(), np.asarray(columns, dtype=np.int64).tolist()):
                slot = (h ^ (h >> 29)) & (size - 1)
                while self.table_columns[slot] >= 0 and int(self.table_hashes[slot]) != h:
                    slot = (slot + 1) & (size - 1)
                self.table_hashes[slot], self.table_columns[slot] = h, column
        self.engine = "numba" if _kernel() is not None else "numpy"
        self._classify(np.arange(128, dtype=np.uint32))  # ASCII classified up front

    @staticmethod
    def _code_points(text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    def _hash_one(self, points: np.ndarray) -> int:
        h = np.uint64(len(points))
        with np.errstate(over="ignore"):
            for c in points:
                h = h * self._MULTIPLIER + np.uint64(c) + np.uint64(1)
        return int(h)

    _lower = None  # code point -> its lowercase (one code point); shared, filled lazily
    _lower_known = None  # whether _lower[c] was computed (ASCII up front)
    _identity = None

    @classmethod
    def _identity_table(cls) -> np.ndarray:
        if cls._identity is None:
            cls._identity = np.arange(0x110000, dtype=np.uint32)
        return cls._identity

    @classmethod
    def _lower_table(cls, wide: np.ndarray) -> np.ndarray | None:
        """The lowercase table, with the non-ASCII code points ``wide`` filled in; None if
        one of them has no one-character, context-free lowercase (``str.lower`` then)."""
        if cls._lower is None:
            table = np.arange(0x110000, dtype=np.uint32)
            table[ord("A") : ord("Z") + 1] += 32
            known = np.zeros(0x110000, dtype=bool)
            known[:128] = True
            cls._lower, cls._lower_known = table, known
        new = wide[~cls._lower_known[wide]]
        for c in new.tolist():
            lowered = chr(c).lower()
            # Σ's lowercase depends on its neighbours (final sigma): never tabled.
            cls._lower[c] = ord(lowered) if len(lowered) == 1 and c != 0x03A3 else 0x110000 - 1
            cls._lower_known[c] = True
            if len(lowered) == 1:
                cls._classify(np.array([ord(lowered)], dtype=np.uint32))
        if len(wide) and (cls._lower[wide] == 0x110000 - 1).any():
            return None
        return cls._lower

    @classmethod
    def _classify(cls, points: np.ndarray) -> np.ndarray:
        classes = cls._classes[points]
        unknown = classes == 255
        if unknown.any():
            for c in np.unique(points[unknown]).tolist():
                char = chr(c)
                cls._classes[c] = 2 if cls._letter_re.match(char) else 1 if cls._word_re.match(char) else 0
            classes = cls._classes[points]
        return classes

    def transform(self, texts: list[str]) -> scipy.sparse.csr_matrix:
        parts, start, size = [], 0, 0
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts must be strings, got {type(text).__name__} at position {i}")
            size += len(text) + 1
            if size >= self._CHUNK_CHARS:
                parts.append(self._count(texts[start : i + 1]))
                start, size = i + 1, 0
        if start < len(texts) or not parts:
            parts.append(self._count(texts[start:]))
        counts = parts[0] if len(parts) == 1 else scipy.sparse.vstack(parts, format="csr")
        return counts

    def _count(self, texts: list[str]) -> scipy.sparse.csr_matrix:
        shape = (len(texts), self.n_columns)
        if not texts or self.max_length < 2:
            return scipy.sparse.csr_matrix(shape, dtype=np.float32)
        joined = "\n".join(texts)
        if self.engine == "numba":
            # The kernel lowercases through a per-code-point table, unless a character's
            # lowercase depends on context or is longer than one character (Σ, İ, ...).
            points = self._code_points(joined + "\n")
            lower = self._lower_table(np.unique(points[points >= 128])) if self.lowercase else self._identity_table()
            if lower is not None:
                return self._kernel_count(points, lower, _text_starts(len(t) for t in texts), shape)
        counted = texts
        if self.lowercase:  # Python lowercases: the numpy path, or text the table cannot do
            lowered = joined.lower()
            if len(lowered) != len(joined):  # some lengths changed ("İ" -> "i̇"): measure each text
                counted = [t.lower() for t in texts]
            joined = lowered
        points = self._code_points(joined + "\n")
        text_starts = _text_starts(len(t) for t in counted)
        if self.engine == "numba":
            return self._kernel_count(points, self._identity_table(), text_starts, shape)
        classes = self._classify(points)
        word = classes != 0
        not_letter = np.cumsum(classes == 1, dtype=np.int64)
        starts = np.flatnonzero(word[1:] & ~word[:-1]) + 1
        if word[0]:
            starts = np.r_[0, starts]
        ends = np.flatnonzero(~word[1:] & word[:-1]) + 1  # the text ends with a newline: every run ends
        lengths = ends - starts
        letters_only = not_letter[ends - 1] - np.where(starts > 0, not_letter[starts - 1], 0) == 0
        keep = letters_only & (lengths >= 2) & (lengths <= self.max_length)
        starts, lengths = starts[keep], lengths[keep]
        hashes = lengths.astype(np.uint64)
        values = points.astype(np.uint64) + np.uint64(1)
        collected: list = []
        with np.errstate(over="ignore"):
            for offset in range(self.max_length):
                active = lengths > offset
                if offset >= 2:  # tokens shorter than offset are hashed: look them up, drop them
                    done = ~active
                    if done.any():
                        self._collect(starts[done], hashes[done], collected)
                        starts, hashes, lengths = starts[active], hashes[active], lengths[active]
                        if not len(starts):
                            break
                    step = hashes * self._MULTIPLIER + values[starts + offset]
                    hashes = step
                else:  # every token has at least 2 characters
                    hashes = hashes * self._MULTIPLIER + values[starts + offset]
        if len(starts):
            self._collect(starts, hashes, collected)
        token_starts = np.concatenate([c[0] for c in collected]) if collected else np.empty(0, np.int64)
        columns = np.concatenate([c[1] for c in collected]) if collected else np.empty(0, np.int64)
        # Which text each token is in: each text starts after the newline joining it to the last.
        rows = np.searchsorted(text_starts, token_starts, side="right") - 1
        return self._matrix(rows, columns, shape)

    def _kernel_count(self, points, lower, text_starts, shape) -> scipy.sparse.csr_matrix:
        wide = np.unique(points[points >= 128])
        if len(wide):
            self._classify(wide)  # classify new code points into the shared table
        rows, columns = _kernel().count_tokens(points, lower, self._classes, text_starts, self.table_hashes,
                                               self.table_columns, self.max_length, self._MULTIPLIER)
        return self._matrix(rows, columns, shape)

    @staticmethod
    def _matrix(rows, columns, shape) -> scipy.sparse.csr_matrix:
        counts = scipy.sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=shape, dtype=np.float32
        )
        counts.sum_duplicates()
        return counts

    def _collect(self, starts, hashes, out: list) -> None:
        where = np.searchsorted(self.hashes, hashes)
        where[where == len(self.hashes)] = 0
        found = self.hashes[where] == hashes
        out.append((starts[found], self.columns[where[found]]))


def _text_starts(lengths) -> np.ndarray:
    """Offsets of texts joined with one separator each, from their lengths."""
    lengths = np.fromiter(lengths, dtype=np.int64)
    return np.r_[0, np.cumsum(lengths[:-1] + 1)].astype(np.int64)


def _kernel():
    """The compiled counting kernel module, or None without numba (numpy path then)."""
    return compiled_kernel("semhash._vectorize_kernel")


def empty_rows(counts: scipy.sparse.spmatrix | np.ndarray) -> np.ndarray:
    """Indices of the documents (rows) with no vocabulary word, which cannot be encoded."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return np.flatnonzero(totals == 0)


def without_empty_rows(counts):
    """``(empty, kept, counts of the kept rows)``: :func:`empty_rows`, the other rows' indices
    in order, and ``counts`` itself when no row is empty."""
    empty = empty_rows(counts)
    kept = np.setdiff1d(np.arange(counts.shape[0]), empty)
    return empty, kept, counts[kept] if len(empty) else counts


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true/false are not counts


def _as_text_list(texts: Iterable[str]) -> list[str]:
    # A lone string is iterable too, and would silently be read as one text per character.
    if isinstance(texts, (str, bytes)):
        raise ValueError("expected an iterable of texts, got a single string")
    return list(texts)
