"""TextHasher: binary codes for raw texts (a WordCounter, then a SemanticHasher)."""

from __future__ import annotations

from collections.abc import Iterable

import scipy.sparse as sp

from semhash.estimator import MODEL_CLASSES
from semhash.hasher import SemanticHasher
from semhash.vectorize import WordCounter, _as_text_list


class TextHasher(SemanticHasher):
    """Learn ``n_bits``-bit binary codes for raw texts.

    ``fit(texts)`` chooses a vocabulary (:class:`~semhash.vectorize.WordCounter`, fitted
    as ``vectorizer_``) and trains a :class:`~semhash.hasher.SemanticHasher` on the
    texts' word counts; ``transform(texts)`` counts and encodes. Texts with no word of the
    vocabulary teach nothing, so ``fit`` leaves them out (``transform`` still encodes
    them, as "no evidence"). The same as
    ``make_pipeline(WordCounter(...), SemanticHasher(...))``, as one estimator whose
    model file (:meth:`save`) holds the vocabulary too.

    Parameters
    ----------
    n_bits, packed : as for :class:`~semhash.hasher.SemanticHasher`.
    max_words, min_df, max_df, stop_words, lowercase : the vocabulary, as for
        :class:`~semhash.vectorize.WordCounter`.

    The other parameters are described in :class:`~semhash.estimator.DeepCodeModel`,
    with the defaults of :class:`~semhash.hasher.SemanticHasher`.

    >>> hasher = TextHasher(n_bits=64).fit(train_texts)    # doctest: +SKIP
    >>> codes = hasher.transform(["a query text"])          # (1, 8) uint8, packed bits
    """

    def __init__(
        self,
        n_bits: int = 128,
        *,
        max_words: int = 2000,
        min_df: int = 2,
        max_df: float = 1.0,
        stop_words: str | Iterable[str] | None = "english",
        lowercase: bool = True,
        hidden_layers: tuple[int, ...] = (500, 500),
        pretrain_epochs: int = 5,
        pretrain_learning_rate: float = 0.5,
        finetune_epochs: int = 100,
        finetune_learning_rate: float = 3e-3,
        batch_size: int | str = "auto",
        code_noise: float = 4.0,
        neighbour_targets: int = 10,
        neighbour_weight: float = 0.5,
        neighbour_similarity: str = "auto",
        idf_target: bool = True,  # SemanticHasher's defaults, chosen there
        idf_input: bool | str = "auto",
        input_dropout: float = 0.5,
        pair_weight: float | str = "auto",
        pair_temperature: float = 0.2,
        validation_fraction: float = 0.1,
        patience: int = 5,
        tol: float = 5e-3,
        learning_rate_drops: int = 1,
        packed: bool = True,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self._keep_params(locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Texts, not a matrix: scikit-learn's estimator checks, written for 2-D numbers,
        # do not apply (as for its own CountVectorizer); tests/test_sklearn.py tests the API.
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.input_tags.sparse = False
        tags.input_tags.positive_only = False
        return tags

    def fit(self, X, y=None) -> "TextHasher":
        """Choose the vocabulary from the texts ``X`` and train the hasher on their counts."""
        texts = _as_text_list(X)
        self.vectorizer_ = WordCounter(
            max_words=self.max_words, min_df=self.min_df, max_df=self.max_df,
            stop_words=self.stop_words, lowercase=self.lowercase,
        ).fit(texts)
        return super().fit(texts, y)

    def _check_input(self, X, fitted: bool = False) -> sp.csr_matrix:
        """The texts' word counts over the vocabulary, validated as the hasher's input."""
        return super()._check_input(self.vectorizer_.transform(_as_text_list(X)), fitted)

    def _extra_config(self) -> dict:
        return {"vocabulary": self.vectorizer_.to_dict()}

    def _load_extra_config(self, config: dict) -> None:
        self.vectorizer_ = WordCounter.from_dict(config["vocabulary"])


MODEL_CLASSES["TextHasher"] = TextHasher
