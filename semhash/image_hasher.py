"""ImageHasher: binary codes for small colour images (Krizhevsky & Hinton 2011).

"Using very deep autoencoders for content-based image retrieval" hashes 32x32 colour
images with a deep autoencoder pretrained as a stack of RBMs whose bottom layer has
Gaussian visible units over standardised pixels. Here the network is
``3072 -> hidden_layers -> n_bits`` (default 3072-1024-512-256), fine-tuned with a
linear output layer scored by squared error on the standardised pixels and noisy
logistic code units, as for documents (:class:`semhash.hasher.SemanticHasher`).

Input: an array ``(n, 3072)`` (or ``(n, 32, 32, 3)``) of 32x32 RGB pixels in
height-width-channel order, either ``uint8`` 0-255 or floats in [0, 1].
``fit`` learns the per-dimension mean and standard deviation of the training pixels
(``mean_``, ``std_``, saved with the model); the encoder sees, and the decoder must
reproduce, ``(pixels - mean_) / std_``.

Two-stage retrieval as in the paper: a short *address* code finds a Hamming ball of
candidates, which a long code re-ranks. The address code is simply a second, separately
trained hasher with few bits::

    long = ImageHasher(n_bits=256).fit(pixels)
    address = ImageHasher(n_bits=28).fit(pixels)   # or ImageHasher.address_model()

(28 bits is the paper's choice: 2^28 addresses is about one per image of a very large
collection, so a small Hamming ball around a query holds a useful candidate list).
"""

from __future__ import annotations

import numpy as np
import torch

from semhash.codes import pack_bits
from semhash.estimator import MODEL_CLASSES, DeepCodeModel

IMAGE_SIDE = 32
IMAGE_CHANNELS = 3
IMAGE_DIMS = IMAGE_SIDE * IMAGE_SIDE * IMAGE_CHANNELS  # 3072
ADDRESS_BITS = 28
# Floor of the per-pixel standard deviation (pixels in [0, 1]): a constant pixel
# (a border always black, say) must not blow up to huge standardised values.
MIN_PIXEL_STD = 1e-2


def check_pixels(X) -> np.ndarray:
    """Validate images and return float32 ``(n, 3072)`` pixels in [0, 1].

    Accepts ``(n, 3072)`` or ``(n, 32, 32, 3)`` arrays (or tensors); ``uint8`` is 0-255,
    floats must already be in [0, 1].
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim == 4 and X.shape[1:] == (IMAGE_SIDE, IMAGE_SIDE, IMAGE_CHANNELS):
        X = X.reshape(len(X), IMAGE_DIMS)
    if X.ndim != 2 or X.shape[1] != IMAGE_DIMS or X.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty array of 32x32 RGB images, shape (n, {IMAGE_DIMS}) or "
            f"(n, {IMAGE_SIDE}, {IMAGE_SIDE}, {IMAGE_CHANNELS}), got shape {X.shape}; "
            "resize images to 32x32 RGB first (semhash.pipelines.images.read_images does)"
        )
    if X.dtype == np.uint8:
        return X.astype(np.float32) / 255.0
    if not np.issubdtype(X.dtype, np.floating) and not np.issubdtype(X.dtype, np.integer):
        raise ValueError(f"pixels must be uint8 or floats in [0, 1], got dtype {X.dtype}")
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError("pixels must be finite")
    if X.min() < 0.0 or X.max() > 1.0 + 1e-6:
        raise ValueError(
            f"float pixels must lie in [0, 1] (got {X.min():.3g}..{X.max():.3g}); "
            "pass uint8 arrays for 0-255 values"
        )
    return X


class ImageInput:
    """The input side shared by the image models (:class:`ImageHasher`,
    :class:`~semhash.image_map.ImageMap`): pixels in, standardised with the training
    mean and std (saved with the weights), a Gaussian-visible bottom RBM with its own CD
    step, and a linear output scored by squared error. Mix it in before the estimator."""

    visible_units = "gaussian"
    output_units = "linear"

    def _fit_pixels(self, X, y=None):
        """The estimator's ``fit``, standardising the pixels once for input and target."""
        if self.neighbour_targets:
            raise ValueError("neighbour_targets is for word counts; use 0 for images")
        self._fitting = True
        try:
            return super().fit(X, y)
        finally:
            self._fitting = False
            self._last_input = None

    def standardise(self, X) -> np.ndarray:
        """``(pixels - mean_) / std_``, float32 ``(n, 3072)``: what the encoder sees."""
        if not hasattr(self, "mean_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit first")
        return self._encoder_input(self._check_input(X, fitted=True))

    def _check_input(self, X, fitted: bool = False) -> np.ndarray:
        return check_pixels(X)

    def _fit_input_statistics(self, X: np.ndarray) -> None:
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.mean_ = torch.from_numpy(mean.astype(np.float32))
        self.std_ = torch.from_numpy(np.maximum(std, MIN_PIXEL_STD).astype(np.float32))

    def _encoder_input(self, X: np.ndarray) -> np.ndarray:
        out = (X - self.mean_.numpy()) / self.std_.numpy()
        if getattr(self, "_fitting", False):
            self._last_input = (X, out)
        return out

    def _reconstruction_target(self, X: np.ndarray) -> np.ndarray:
        # The same standardised pixels (DeepCodeModel.fit calls both hooks; computing
        # it twice would double the memory of a large training set, so share it).
        cached = getattr(self, "_last_input", None)
        if cached is not None and cached[0] is X:
            return cached[1]
        return self._encoder_input(X)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean_, "std": self.std_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"mean", "std"}:
            raise RuntimeError(f"an image model file needs 'mean' and 'std' tensors, got {sorted(state)}")
        self.mean_ = state["mean"].to(torch.float32)
        self.std_ = state["std"].to(torch.float32)
        if self.mean_.shape != (IMAGE_DIMS,) or self.std_.shape != (IMAGE_DIMS,):
            raise RuntimeError(f"mean/std must have shape ({IMAGE_DIMS},)")

    # ------------------------------------------------------------ pretraining
    def _layer_learning_rate(self, bottom: bool, hidden: str) -> float:
        """The Gaussian bottom layer gets its own small CD step."""
        if bottom and self.gaussian_learning_rate is not None:
            return self.gaussian_learning_rate
        return super()._layer_learning_rate(bottom, hidden)

    def _batch_rate_scale(self, n_train: int) -> float:
        # The same CD step per example at any collection size: a Gaussian-visible layer
        # diverges with TopicMap's larger steps for small collections (90 images).
        return DeepCodeModel._batch_rate_scale(self, n_train)


class ImageHasher(ImageInput, DeepCodeModel):
    """Learn ``n_bits``-bit binary codes for 32x32 colour images.

    Parameters are those of :class:`~semhash.estimator.DeepCodeModel`, with image
    defaults, plus:

    gaussian_learning_rate : CD step of the bottom (Gaussian-visible) RBM, for batches
        of 100. Gaussian units on standardised pixels get large total inputs from 3072
        visibles, so they want a much smaller step than binary layers (Hinton's guide:
        one or two orders of magnitude); ``None`` falls back to the base rule
        (a tenth of ``pretrain_learning_rate``).

    ``neighbour_targets`` defaults to 0 (the neighbour smoothing of the base class is
    for TF-IDF of word counts).

    >>> hasher = ImageHasher(n_bits=256).fit(train_pixels)   # doctest: +SKIP
    >>> codes = hasher.transform(query_pixels)               # (n, 32) uint8, packed bits
    """

    code_units = "binary"

    def __init__(
        self,
        n_bits: int = 256,
        *,
        hidden_layers: tuple[int, ...] = (1024, 512),
        pretrain_epochs: int = 10,
        pretrain_learning_rate: float = 0.1,
        gaussian_learning_rate: float | None = 0.002,
        finetune_epochs: int = 30,
        finetune_learning_rate: float = 1e-3,
        neighbour_targets: int = 0,
        **kwargs,
    ):
        super().__init__(
            hidden_layers=hidden_layers,
            code_size=n_bits,
            pretrain_epochs=pretrain_epochs,
            pretrain_learning_rate=pretrain_learning_rate,
            finetune_epochs=finetune_epochs,
            finetune_learning_rate=finetune_learning_rate,
            neighbour_targets=neighbour_targets,
            **kwargs,
        )
        self.n_bits = n_bits
        self.gaussian_learning_rate = gaussian_learning_rate

    @classmethod
    def address_model(cls, n_bits: int = ADDRESS_BITS, **kwargs) -> "ImageHasher":
        """The short address-code hasher (28 bits by default) of two-stage retrieval."""
        return cls(n_bits=n_bits, **kwargs)

    def get_params(self) -> dict:
        params = super().get_params()
        params["n_bits"] = params.pop("code_size")
        params["gaussian_learning_rate"] = self.gaussian_learning_rate
        return params

    def fit(self, X, y=None) -> "ImageHasher":
        """Standardise the pixels, pretrain the RBM stack and fine-tune the autoencoder."""
        if not isinstance(self.n_bits, (int, np.integer)) or self.n_bits < 1:
            raise ValueError(f"n_bits must be a positive integer, got {self.n_bits!r}")
        self.code_size = int(self.n_bits)
        return self._fit_pixels(X, y)

    def transform(self, X) -> np.ndarray:
        """Packed binary codes ``(n, ceil(n_bits / 8))`` uint8, code units thresholded at 0.5."""
        return pack_bits(self.transform_real(X) > 0.5)

MODEL_CLASSES["ImageHasher"] = ImageHasher
