"""ImageMap: a 2-D real-valued map of small colour images.

The image counterpart of :class:`~semhash.topic_map.TopicMap`: the input side of
:class:`~semhash.image_hasher.ImageHasher` (32x32 RGB pixels standardised with the
training mean and standard deviation, a Gaussian-visible bottom RBM, a linear output
layer scored by squared error) under TopicMap's linear 2-D code and its parametric t-SNE
stage. The t-SNE input affinities come from cosine neighbours in PCA-50 space of the
standardised pixels (for documents: TF-IDF, or LSA-50 for short ones).

>>> image_map = ImageMap().fit(pixels)          # doctest: +SKIP
>>> points = image_map.transform(pixels)        # (n, 2) float32, one encoder pass
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from semhash.estimator import MODEL_CLASSES
from semhash.image_hasher import ImageInput
from semhash.topic_map import TopicMap


class ImageMap(ImageInput, TopicMap):
    """Learn an ``n_components``-dimensional real code (default 2-D) of 32x32 colour images.

    The network is ``3072 -> hidden_layers -> n_components`` (default 3072-512-128-2,
    small enough to train on a CPU in minutes for a few thousand images). Parameters are
    those of :class:`~semhash.topic_map.TopicMap` (``objective``, ``perplexity``,
    ``tsne_epochs``, ``tsne_input_dropout``...) with image defaults, plus
    ``gaussian_learning_rate`` (the CD step of the Gaussian-visible bottom RBM, as for
    :class:`~semhash.image_hasher.ImageHasher`) and ``n_pca`` (dimensions of the PCA of
    the standardised pixels on which the t-SNE neighbours are found). As for
    ``ImageHasher``, ``neighbour_targets`` must be 0 and the word-count parameters do
    nothing.

    Input: ``(n, 3072)`` or ``(n, 32, 32, 3)`` pixels, ``uint8`` 0-255 or floats in [0, 1].
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        hidden_layers: tuple[int, ...] = (512, 128),
        pretrain_epochs: int = 10,
        pretrain_learning_rate: float = 0.1,
        gaussian_learning_rate: float | None = 0.002,
        finetune_epochs: int = 30,
        finetune_learning_rate: float = 1e-3,
        batch_size: int | str = "auto",
        code_noise: float = 0.0,
        neighbour_targets: int = 0,
        neighbour_weight: float = 0.5,
        neighbour_similarity: str = "auto",
        idf_target: bool = False,
        idf_input: bool = False,
        input_dropout: float = 0.0,
        pair_weight: float | str = "auto",
        pair_temperature: float = 0.1,
        validation_fraction: float = 0.1,
        patience: int = 5,
        tol: float = 0.0,
        learning_rate_drops: int = 0,
        objective: str = "tsne",
        perplexity: float = 30.0,
        tsne_epochs: int = 30,
        tsne_min_documents: int = 0,  # images keep the measured epochs (not yet chosen on images)
        tsne_input_dropout: float = 0.2,
        n_pca: int = 50,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self._keep_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        if not isinstance(self.n_pca, Integral) or self.n_pca < 2:
            raise ValueError(f"n_pca must be an integer >= 2, got {self.n_pca!r}")

    def fit(self, X, y=None) -> "ImageMap":
        """Standardise the pixels, pretrain and fine-tune the autoencoder, then the t-SNE stage."""
        return self._fit_pixels(X, y)

    # The t-SNE helper's feature hook (semhash.parametric_tsne.tsne_fine_tune_estimator).
    def _tsne_features(self, X: np.ndarray) -> np.ndarray:
        from semhash.parametric_tsne import pca_features

        return pca_features(self._encoder_input(X), self.n_pca, random_state=self.random_state)


MODEL_CLASSES["ImageMap"] = ImageMap
