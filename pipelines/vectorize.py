"""Word counts: a fixed vocabulary of frequent words and raw per-document counts over it.

The vocabulary is the ``max_words`` words found in the most documents (document frequency, not
total occurrences, so one long post repeating a word cannot push it in), which is what the
semantic-hashing autoencoder takes as input. A fitted :class:`WordCounter` is saved as plain JSON
through :meth:`WordCounter.to_dict` / :meth:`WordCounter.from_dict`, never pickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.utils.validation import check_is_fitted

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
        """Raw counts of the vocabulary words: float32, shape ``(n_texts, len(words_))``."""
        check_is_fitted(self, "words_")
        # Built per call (cheap next to tokenizing) so it can never go stale after set_params.
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


def empty_rows(counts: scipy.sparse.spmatrix | np.ndarray) -> np.ndarray:
    """Indices of the documents (rows) with no vocabulary word, which cannot be encoded."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return np.flatnonzero(totals == 0)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true/false are not counts


def _as_text_list(texts: Iterable[str]) -> list[str]:
    # A lone string is iterable too, and would silently be read as one text per character.
    if isinstance(texts, (str, bytes)):
        raise ValueError("expected an iterable of texts, got a single string")
    return list(texts)
